#!/usr/bin/env bash
# The held-out grid of issue #23: every strategy judged on the largest held-out split (the dataset's test/, else
# its val/ with early stopping on a hold-out of train/, else a test split carved out per seed), per-image
# correctness recorded for paired statistics, three seeds, 10 epochs per image-level phase (the frozen head's own
# 10 head epochs: every phase under the same cap). Resumable: re-run to continue where it stopped.
# Runtime plan and measured progress: benchmarks/README.md, "The held-out grid".
#
#   nohup bash benchmarks/grid_heldout.sh > benchmarks/results/grid_heldout.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA=${TL_ADVISE_SHARED:-$(cd .. && pwd)/shared}/data
WORK=${WORK_DIR:-/tmp/aq/heldout}
OUT=${OUT:-benchmarks/results/advice_quality_heldout}
COMMON=(--judge test --max-epochs 10 --no-lr-sweep --out "$OUT" --work-dir "$WORK")
SKIP=(--skip from_scratch --skip-why "trailed every pretrained strategy in every tiny/small/medium case \
measured (advice_quality_10ep.json, seeds 0 and 1: 6-16 pp behind at 600 and 1,214 per class, 30-90 pp in the \
tiny band) and costs as much as the other five strategies together")
step() { echo "== $(date -u +%FT%TZ) $*"; "$PY" benchmarks/advice_quality.py "$@" "${COMMON[@]}" "${SKIP[@]}"; }

# scikit-learn's 8x8 digits (`tl-advise sample-data digits`): a third dataset where raw pixels rival frozen features.
DIGITS="$WORK/sources/digits"
[ -d "$DIGITS" ] || "$PY" -m tl_advise.cli sample-data "$DIGITS"

# 1. Far and in-between tiny data (item 5: the far-tiny split, the pixel rule's cut-off) at 10, 40 and 100 per
#    class; seeds are the outer loop, so every level has a first seed before any has a third (1,500 and ~600 test
#    images judge).
step "$DATA/sign_digits" "$DATA/eurosat_medium" --levels 10,40,100 --seeds 0,1,2
# 2. The pixel-baseline rule's datasets (raw pixels as good as frozen features), three seeds.
step "$DATA/pneumoniamnist" "$DATA/lfw_faces_vs_nonfaces" "$DIGITS" --levels 10,40,100 --seeds 0,1,2
# 3. Close data in the tiny band: hymenoptera (its 153 val images judge) and flowers5 (a carved test split of
#    ~800 images) first, three seeds; then the 30-per-class subsets, whose carved splits are small (flowers5_small
#    is a subset of flowers5's source, eurosat_small of eurosat_medium's: each is left out with its source).
step "$DATA/hymenoptera" "$DATA/flowers5" --levels 10,40,100 --seeds 0,1,2
step "$DATA/flowers5_small" "$DATA/eurosat_small" --levels 10,40,100 --seeds 0,1,2
echo "== $(date -u +%FT%TZ) grid done"
