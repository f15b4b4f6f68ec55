#!/usr/bin/env bash
# The CUDA path, for real (issue #13 part 3). On a machine with an NVIDIA GPU, in one go:
#   1. tl-advise on hymenoptera with --device cuda, cold then warm (the forward pass on the GPU);
#   2. --run --compare --budget 3ep there (autocast, GradScaler, channels_last, pin_memory: every strategy);
#   3. a data-parallel run when more than one GPU is visible and this build has --nproc-per-node;
#   4. benchmarks/bench_gpu.py: img/s for embedding and training against a plain torchvision loop on the same GPU;
# and records everything (GPU model, driver, versions, commands, exit codes, numbers) in
# $OUT (when set) or benchmarks/results: gpu_check.json, gpu_check.md, and the raw files of each step.
#
#   bash benchmarks/gpu_check.sh                      # DATA=../shared/data/hymenoptera PYTHON=.venv/bin/python
#
# Without a visible CUDA device it stops at once, exit code 2, and says why. A step that fails is recorded
# with its exit code and the log tail; the others still run; the script then exits 1.
set -uo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
SHARED=${TL_ADVISE_SHARED:-../shared}
DATA=${DATA:-$SHARED/data/hymenoptera}
RESULTS=${OUT:-benchmarks/results}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tl-advise-gpu-check-XXXXXX")
trap 'rm -rf "$WORK"' EXIT
trap 'echo "gpu_check: interrupted" >&2; exit 130' INT TERM

fail_fast() { echo "gpu_check: $*" >&2; exit 2; }

[ -x "$PYTHON" ] || command -v "$PYTHON" >/dev/null 2>&1 \
    || fail_fast "no Python at $PYTHON; set PYTHON=/path/to/venv/bin/python (with tl-advise installed)"
[ -d "$DATA/train" ] && [ -d "$DATA/val" ] \
    || fail_fast "$DATA has no train/ and val/ folders; set DATA=/path/to/hymenoptera or TL_ADVISE_SHARED"
if ! cuda_report=$("$PYTHON" - <<'EOF' 2>&1
import sys
import torch
if torch.cuda.is_available() and torch.cuda.device_count() > 0:
    print(torch.cuda.device_count())
    sys.exit(0)
print(f"torch {torch.__version__} (built for CUDA {torch.version.cuda}) sees no CUDA device")
sys.exit(1)
EOF
); then
    smi="nvidia-smi not found"
    command -v nvidia-smi >/dev/null 2>&1 && smi=$(nvidia-smi -L 2>&1 | head -3 | tr '\n' ' ')
    fail_fast "no CUDA device is visible: ${cuda_report##*$'\n'}; nvidia-smi: ${smi}. Run this on a machine with an NVIDIA GPU and a CUDA build of torch (check CUDA_VISIBLE_DEVICES)."
fi
GPUS=${cuda_report##*$'\n'}
mkdir -p "$RESULTS"
STEPS="$WORK/steps.tsv"
: > "$STEPS"

# step NAME CMD...: run, time, keep stdout/stderr under $WORK/NAME.{out,err}, record "name rc seconds command".
step() {
    local name=$1; shift
    echo "gpu_check: $name: $*" >&2
    local start rc
    start=$(date +%s%N)
    "$@" > "$WORK/$name.out" 2> "$WORK/$name.err"
    rc=$?
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$(( ($(date +%s%N) - start) / 1000000 ))" "$*" >> "$STEPS"
    [ "$rc" -eq 0 ] || { echo "gpu_check: $name exited $rc:" >&2; tail -n 20 "$WORK/$name.err" >&2; }
    return 0
}

TL=("$PYTHON" -m tl_advise.cli)
step advise_cold "${TL[@]}" "$DATA" --device cuda --format json --cache-dir "$WORK/cache"
step advise_warm "${TL[@]}" "$DATA" --device cuda --format json --cache-dir "$WORK/cache"
step run_compare "${TL[@]}" "$DATA" --device cuda --run --compare --budget 3ep --format json \
    --cache-dir "$WORK/cache" --output-dir "$WORK/runs"
if [ "$GPUS" -gt 1 ] && "${TL[@]}" advise --help 2>/dev/null | grep -q -- "--nproc-per-node"; then
    step run_ddp "${TL[@]}" "$DATA" --device cuda --run --budget 3ep --nproc-per-node "$GPUS" --format json \
        --cache-dir "$WORK/cache" --output-dir "$WORK/runs_ddp"
fi
step bench_gpu "$PYTHON" benchmarks/bench_gpu.py --data "$DATA" --device cuda --out "$WORK/bench_gpu.json"
for f in "$WORK"/*.out "$WORK"/*.err; do cp "$f" "$RESULTS/gpu_check_$(basename "$f")"; done

"$PYTHON" - "$WORK" "$RESULTS" "$GPUS" <<'EOF'
"""Collect the steps into gpu_check.json and gpu_check.md."""
import datetime as dt
import json
import platform
import subprocess
import sys
from pathlib import Path

import torch
import torchvision

work, results, gpus = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])


def load(name):
    try:
        return json.loads((work / name).read_text())
    except (OSError, ValueError):
        return None


def tail(name):
    try:
        return (work / f"{name}.err").read_text()[-2000:]
    except OSError:
        return ""


steps = []
for line in (work / "steps.tsv").read_text().splitlines():
    name, rc, millis, command = line.split("\t", 3)
    steps.append({"step": name, "exit_code": int(rc), "seconds": round(int(millis) / 1000, 2), "command": command,
                  **({"stderr_tail": tail(name)} if rc != "0" else {})})
smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                     capture_output=True, text=True, check=False).stdout.strip().splitlines()
commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False).stdout.strip()
cold, warm, run = load("advise_cold.out"), load("advise_warm.out"), load("run_compare.out")
out = {
    "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "git_commit": commit,
    "machine": {"gpus": [torch.cuda.get_device_name(i) for i in range(gpus)], "nvidia_smi": smi,
                "torch": torch.__version__, "torch_cuda": torch.version.cuda, "torchvision": torchvision.__version__,
                "cudnn": torch.backends.cudnn.version(), "python": platform.python_version(),
                "platform": platform.platform()},
    "steps": steps,
    "advise": {k: ({"device": r["device"], "strategy": r["recommendation"]["strategy"], "timings": r["timings"],
                    "forward_passes": r["sample"]["forward_passes"]} if r else None)
               for k, r in (("cold", cold), ("warm", warm))},
    "run_compare": ({"device": run["run"]["device"], "verdict": run["run"]["verdict"]["status"],
                     "runs": [{k: s.get(k) for k in ("strategy", "status", "epochs_run", "train_time_s", "images_per_s",
                                                     "error")} | {"val_accuracy": (s.get("val") or {}).get("accuracy")}
                              for s in run["run"]["runs"]]} if run and run.get("run") else None),
    "bench_gpu": load("bench_gpu.json"),
}
(results / "gpu_check.json").write_text(json.dumps(out, indent=2) + "\n")

md = [f"## GPU check — {', '.join(out['machine']['gpus'])}, {out['date'][:10]}", "",
      f"torch {torch.__version__} (CUDA {torch.version.cuda}, cuDNN {out['machine']['cudnn']}), commit `{commit}`; "
      f"nvidia-smi: {'; '.join(smi)}", "", "| step | exit | seconds |", "|---|---:|---:|"]
md += [f"| {s['step']} | {s['exit_code']} | {s['seconds']:.1f} |" for s in steps]
if out["advise"]["cold"]:
    md += ["", f"Advice on {out['advise']['cold']['device']}: `{out['advise']['cold']['strategy']}`; timings cold "
           f"{out['advise']['cold']['timings']}, warm {out['advise']['warm'] and out['advise']['warm']['timings']}"]
if out["run_compare"]:
    md += ["", f"--run --compare --budget 3ep: verdict **{out['run_compare']['verdict']}**", "",
           "| strategy | status | epochs | val acc | train s | img/s |", "|---|---|---:|---:|---:|---:|"]
    md += [f"| {r['strategy']} | {r['status']} | {r['epochs_run']} | {r['val_accuracy']} | {r['train_time_s']} | "
           f"{r['images_per_s']} |" for r in out["run_compare"]["runs"]]
bench = out["bench_gpu"]
if bench:
    if "embedding" in bench:
        e = bench["embedding"]
        md += ["", f"Embedding {e['images']} images, img/s: plain loop {e['images_per_s']['plain']}, tl-advise "
               f"{e['images_per_s']['tl_advise']} ({e['ratio']}×)"]
    if "training" in bench:
        t = bench["training"]
        md += [f"Training (full fine-tune, {t['plain']['epochs']} epochs), img/s: plain fp32 loop "
               f"{t['plain']['images_per_s']}, tl-advise {t['tl_advise']['images_per_s']} ({t['ratio']}×)"]
(results / "gpu_check.md").write_text("\n".join(md) + "\n")
print("\n".join(md))
EOF
if awk -F'\t' '$2 != 0 {bad=1} END {exit bad ? 0 : 1}' "$STEPS"; then
    echo "gpu_check: some steps failed; see $RESULTS/gpu_check.json" >&2
    exit 1
fi
echo "gpu_check: done; results in $RESULTS/gpu_check.{json,md}" >&2
