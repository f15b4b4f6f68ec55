#!/usr/bin/env bash
# The advice-quality grid of issue #10: every size band the shared data reach, both similarity labels,
# repeat seeds, at 10 epochs per image-level phase. Resumable: each step skips the cases already in the
# results file, so re-running this script after an interruption continues where it stopped.
# Runtime plan and measured progress: benchmarks/README.md, "The 10-epoch grid".
#
#   nohup bash benchmarks/grid_10ep.sh > benchmarks/results/grid_10ep.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA=${TL_ADVISE_SHARED:-$(cd .. && pwd)/shared}/data
OUT=${OUT:-benchmarks/results/advice_quality_10ep}
COMMON=(--max-epochs 10 --out "$OUT" --work-dir "${WORK_DIR:-/tmp/aq/grid}")
# From scratch is skipped below the large band: it trailed every pretrained strategy in every case measured
# so far (advice_quality_10ep{,_seed1}.json: 6-16 pp behind at 600 and 1,214 per class, 30-90 pp in the tiny
# band) and costs as much as the other five strategies together.
SKIP=(--skip from_scratch --skip-why "trailed every pretrained strategy in every tiny/small/medium case \
measured (advice_quality_10ep.json, seeds 0 and 1: 6-16 pp behind at 600 and 1,214 per class) and costs \
as much as the other five strategies together")
step() { echo "== $(date -u +%FT%TZ) $*"; "$PY" benchmarks/advice_quality.py "$@" "${COMMON[@]}"; }

# 0. The in-between set's seed 0 at every level first (seventh session): a dataset no rule was fitted on,
#    the first out-of-sample judge of the few/tiny split.
step "$DATA/sign_digits" --levels 10,40,100,full --seeds 0 --no-lr-sweep "${SKIP[@]}"
# 1. Small and medium bands on both sides of the threshold, two seeds, LR sweeps deferred.
step "$DATA/flowers5" --levels full --seeds 0 --no-lr-sweep "${SKIP[@]}"                 # small, close
step "$DATA/eurosat_medium" --levels 1000 --seeds 0 --no-lr-sweep "${SKIP[@]}"           # medium, far
# 1b. The tiny band's second seed where only one was measured: minutes per case, where one flowers5 or
#     eurosat_medium case takes most of a session (moved up in the third session).
step "$DATA/pneumoniamnist" "$DATA/lfw_faces_vs_nonfaces" "$DATA/hymenoptera" "$DATA/eurosat_small" \
  "$DATA/flowers5_small" --levels 10,40,100 --seeds 1 --no-lr-sweep
step "$DATA/flowers5" --levels full --seeds 1 --no-lr-sweep "${SKIP[@]}"
step "$DATA/eurosat_medium" --levels 1000 --seeds 1 --no-lr-sweep "${SKIP[@]}"
step "$DATA/eurosat_medium" --levels full --seeds 0,1 --no-lr-sweep "${SKIP[@]}"          # medium, far, 1,500
# 1c. The sweeps that the few band's rescore deferred (seventh session: the tiny band's recommendation moved
#     to tuning the last stages), minutes per case.
step "$DATA/hymenoptera" "$DATA/flowers5_small" "$DATA/lfw_faces_vs_nonfaces" "$DATA/eurosat_small" \
  --levels 10,40,100,full --seeds 0
# 2. The deferred LR sweeps (seed 0 only).
step "$DATA/flowers5" "$DATA/eurosat_medium" --levels 1000,full --seeds 0
# 3. A third seed where it is affordable.
step "$DATA/flowers5" --levels full --seeds 2 --no-lr-sweep "${SKIP[@]}"
step "$DATA/pneumoniamnist" --levels 600,full --seeds 2 --no-lr-sweep "${SKIP[@]}"
step "$DATA/eurosat_medium" --levels 1000,full --seeds 2 --no-lr-sweep "${SKIP[@]}"
# 4. The tiny band: the new in-between set at every level, then repeat seeds for the small sets (cheap).
step "$DATA/sign_digits" --levels 10,40,100,full --seeds 1,2 --no-lr-sweep "${SKIP[@]}"
step "$DATA/hymenoptera" "$DATA/flowers5_small" "$DATA/lfw_faces_vs_nonfaces" "$DATA/eurosat_small" \
  "$DATA/pneumoniamnist" --levels 10,40,100,full --seeds 1,2 --no-lr-sweep
echo "== $(date -u +%FT%TZ) grid done"
