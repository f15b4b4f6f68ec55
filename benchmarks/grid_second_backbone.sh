#!/usr/bin/env bash
# Does the strategy advice transfer across backbones? (issue #26, item 3b) The held-out grid's tiny band again, on
# MobileNetV2 (torchvision's IMAGENET1K_V1 weights, offline from <shared>/weights): the advice is made `--for` it
# (the probe, EfficientNet-Lite0, measures the similarity; the rules' recipe is mapped onto MobileNetV2's stages),
# every strategy trains on it at the grid's image sizes, and the same rules' regret is judged on the test splits.
# Budget as grid_heldout.sh: 10 epochs per image-level phase, from_scratch skipped, no LR sweeps; seeds 0 and 1.
# Resumable: re-run to continue where it stopped (a case is written when it finishes; one cut short resumes from
# the runners' epoch checkpoints in WORK_DIR).
#
# Runtime plan (benchmarks/README.md, "The held-out grid on a second backbone"): 30 cases, ~1.2-1.8 h on 2 quiet
# cores (the held-out and 10-epoch grids' case times for EfficientNet-Lite0 scaled by MobileNetV2's FLOPs at the
# training size, 0.78x), about twice that beside another job: step 1 ~15-20 min, step 2 ~40-50 min, step 3
# ~15-35 min.
#
#   WORK_DIR=/work/grid/aq_mobilenet nohup bash benchmarks/grid_second_backbone.sh \
#       > benchmarks/results/grid_second_backbone.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SHARED=${TL_ADVISE_SHARED:-$(cd .. && pwd)/shared}
DATA=$SHARED/data
WORK=${WORK_DIR:-/tmp/aq/mobilenet_v2}
OUT=${OUT:-benchmarks/results/advice_quality_mobilenet_v2}
TARGET=${TARGET:-mobilenet_v2:IMAGENET1K_V1}
COMMON=(--for "$TARGET" --shared "$SHARED" --judge test --max-epochs 10 --no-lr-sweep --out "$OUT" --work-dir "$WORK")
SKIP=(--skip from_scratch --skip-why "trailed every pretrained strategy in every tiny/small/medium case \
measured (advice_quality_10ep.json, seeds 0 and 1: 6-16 pp behind at 600 and 1,214 per class, 30-90 pp in the \
tiny band) and costs as much as the other five strategies together")
step() { echo "== $(date -u +%FT%TZ) $*"; "$PY" benchmarks/advice_quality.py "$@" "${COMMON[@]}" "${SKIP[@]}"; }

# 1. Close data (the frozen head's and the top layers' cells): hymenoptera (its 153 val images judge) and flowers5
#    (a carved test split of ~500 images); seeds are the outer loop, so every level has seed 0 before seed 1.
step "$DATA/hymenoptera" "$DATA/flowers5" --levels 10,40,100 --seeds 0,1
# 2. Far and in-between data (the far-tiny split): sign_digits (~600 carved test images) and eurosat_medium (1,500).
step "$DATA/sign_digits" "$DATA/eurosat_medium" --levels 10,40,100 --seeds 0,1
# 3. The pixel-baseline rule's dataset: pneumoniamnist (its 468 test X-rays judge).
step "$DATA/pneumoniamnist" --levels 10,40,100 --seeds 0,1
echo "== $(date -u +%FT%TZ) grid done"
