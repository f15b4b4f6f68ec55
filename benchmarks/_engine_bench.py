"""The inference-engine parts of ``bench_advise.py`` (issue #15): a child process's peak memory, the
exported graph, signals torch vs ONNX Runtime, ONNX Runtime vs OpenVINO, decode options and imports.

Kept apart from ``bench_advise.py`` only for size; every function here is called from its ``run_all``.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger("bench_advise")

# Every shared dataset the signals and decode sections read (those present are used).
SIGNAL_DATASETS = ("hymenoptera", "flowers5_small", "eurosat_small", "pneumoniamnist", "lfw_faces_vs_nonfaces",
                   "flowers5", "eurosat_medium", "sign_digits")
QUICK_SIGNAL_DATASETS = ("hymenoptera", "flowers5_small")
TARGET_SCORE_DELTA = 0.01
RUNTIME_BATCH = 32
RUNTIME_REPEATS = 3
DECODE_IMAGES = 64
QUICK_DECODE_IMAGES = 32
REDUCING_GAPS = (2.0, 3.0)
# Top-level packages whose import time the imports section reports (torch must not be among those loaded).
IMPORT_PACKAGES = ("tl_advise", "sklearn", "scipy", "numpy", "PIL", "pydantic", "onnxruntime", "torch")
TORCH_PACKAGES = ("torch", "torchvision", "timm")


# --------------------------------------------------------------------------- a child process, measured


@dataclass
class Child:
    """A finished subprocess: its output, wall time, and its own rusage from ``wait4``."""

    returncode: int
    stdout: str
    stderr: str
    wall_s: float
    cpu_s: float  # user + system of the child and of its reaped descendants (DataLoader workers)
    peak_rss_mb: float  # ru_maxrss: the largest peak of the child or any one reaped descendant, not a sum


# A small interpreter that starts the measured command and reaps it with wait4. Why not wait4 from here:
# a process forked (or vforked) from this one and then exec'd inherits this process's memory high-water
# mark in its ru_maxrss (Linux records the old address space's peak at exec), and this process holds
# torch — every child would report ≥ 1.5 GB. Forked from this small launcher, the command's peak is its own.
_LAUNCHER = r"""
import json, os, signal, subprocess, sys, time
start = time.perf_counter()
proc = subprocess.Popen(sys.argv[3:])
signal.signal(signal.SIGALRM, lambda *_: proc.kill())  # the time limit
signal.alarm(int(sys.argv[2]))
_, status, usage = os.wait4(proc.pid, 0)
wall = time.perf_counter() - start
proc.returncode = os.waitstatus_to_exitcode(status)
with open(sys.argv[1], "w") as fh:
    json.dump({"returncode": proc.returncode, "wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
               "maxrss_kib": usage.ru_maxrss}, fh)
sys.exit(0)
"""


def run_child(cmd: Sequence[str], *, cwd: Path, env: dict[str, str], timeout_s: float = 600.0) -> Child:
    """Run ``cmd`` with stdout/stderr in temporary files; its wall time, CPU and peak RSS from ``os.wait4``.

    Linux fills wait4's rusage with the child's usage *and* that of the descendants it reaped: CPU time
    is summed over them, but ``ru_maxrss`` is the maximum over the processes, never their sum. So for
    the PyTorch engine, whose DataLoader workers are separate (forked) processes, it is the peak of the
    CLI process or of the largest worker, whichever is larger — a lower bound of the total footprint.
    The command runs under ``_LAUNCHER`` (see there why); wall time is measured around the command alone.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r", suffix=".json") as usage_file:
        proc = subprocess.Popen([sys.executable, "-c", _LAUNCHER, usage_file.name, str(int(timeout_s)), *cmd],
                                stdout=out, stderr=err, cwd=cwd, env=env)
        proc.wait()  # the launcher kills the command at timeout_s
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
        text = Path(usage_file.name).read_text()
    if proc.returncode != 0 or not text:
        raise RuntimeError(f"the launcher of {' '.join(cmd)} failed ({proc.returncode}): {stderr[-2000:]}")
    usage = json.loads(text)
    return Child(returncode=usage["returncode"], stdout=stdout, stderr=stderr, wall_s=round(usage["wall_s"], 3),
                 cpu_s=round(usage["cpu_s"], 3), peak_rss_mb=round(usage["maxrss_kib"] / 1024, 1))  # KiB on Linux


# --------------------------------------------------------------------------- the exported graph


@dataclass
class ExportedGraph:
    """The default backbone exported once (untimed here) into a cache folder of its own."""

    cache_dir: Path  # holds only v<N>/graphs
    onnx_path: Path
    export_s: float
    engine: Any  # OnnxEngine over that graph
    max_error: dict[str, float]

    @property
    def graphs_dir(self) -> Path:
        return self.onnx_path.parent


def export_default_graph(tmp: Path) -> ExportedGraph:
    """Export the default backbone the way ``--engine onnx`` does on a fresh cache; in this process."""
    from tl_advise.advisor.defaults import DEFAULT_BACKBONE
    from tl_advise.advisor.measure.cache import ArrayCache
    from tl_advise.advisor.measure.images.engines import open_engine
    from tl_advise.advisor.timing import StepTimer

    cache_dir = Path(tempfile.mkdtemp(prefix="graph-", dir=tmp))
    timer = StepTimer()
    opened = open_engine("onnx", DEFAULT_BACKBONE, None, device="cpu", cache=ArrayCache(cache_dir), progress=False,
                         timer=timer)
    engine = opened.engine
    onnx_files = sorted(cache_dir.rglob("*.onnx"))
    if engine.name != "onnxruntime" or len(onnx_files) != 1:
        raise RuntimeError(f"exporting {DEFAULT_BACKBONE} gave engine {engine.name} and {len(onnx_files)} graphs")
    logger.info("exported %s to %s in %.1f s", DEFAULT_BACKBONE, onnx_files[0], timer.timings.get("export", 0.0))
    return ExportedGraph(cache_dir=cache_dir, onnx_path=onnx_files[0], export_s=timer.timings.get("export", 0.0),
                         engine=engine, max_error=dict(engine.record.max_error))


def graph_only_cache(graphs_dir: Path, tmp: Path, prefix: str) -> Path:
    """A fresh cache folder that holds the exported graph and nothing else (no embeddings, no results)."""
    from tl_advise.advisor.measure.cache import CACHE_FORMAT

    cache_dir = Path(tempfile.mkdtemp(prefix=prefix, dir=tmp))
    shutil.copytree(graphs_dir, cache_dir / f"v{CACHE_FORMAT}" / graphs_dir.name)
    return cache_dir


# --------------------------------------------------------------------------- signals: torch vs onnx


@dataclass
class EngineAdvice:
    engine: str  # what ran, from the report
    score: float
    label: str
    strategy: str
    warnings: list[str]
    seconds: float


@dataclass
class SignalCheck:
    dataset: str
    torch: EngineAdvice
    onnx: EngineAdvice

    @property
    def score_delta(self) -> float:
        return abs(self.torch.score - self.onnx.score)

    @property
    def unchanged(self) -> bool:
        return (self.score_delta < TARGET_SCORE_DELTA and self.torch.label == self.onnx.label
                and self.torch.strategy == self.onnx.strategy and self.torch.warnings == self.onnx.warnings)


def advise_with(data: Path, engine: str, cache_dir: Path) -> EngineAdvice:
    from tl_advise.advisor.api import advise

    start = time.perf_counter()
    result = advise(data, engine=engine, cache_dir=cache_dir, device="cpu")
    return EngineAdvice(engine=result.sample.engine or "?", score=result.similarity.score,
                        label=result.similarity.label, strategy=result.recommendation.strategy,
                        warnings=sorted(w.id for w in result.recommendation.warnings),
                        seconds=round(time.perf_counter() - start, 2))


def signal_checks(datasets: Sequence[tuple[str, Path]], graph: ExportedGraph, tmp: Path) -> list[SignalCheck]:
    """Each dataset advised in this process with ``engine="torch"`` and ``engine="onnx"``, each on a fresh
    cache (the ONNX one seeded with the exported graph only, so it does not export again per dataset)."""
    checks = []
    for name, data in datasets:
        torch_run = advise_with(data, "torch", Path(tempfile.mkdtemp(prefix=f"sig-torch-{name}-", dir=tmp)))
        onnx_run = advise_with(data, "onnx", graph_only_cache(graph.graphs_dir, tmp, f"sig-onnx-{name}-"))
        if onnx_run.engine != "onnxruntime" or torch_run.engine != "torch":
            raise RuntimeError(f"{name}: engines ran were {torch_run.engine} and {onnx_run.engine}")
        check = SignalCheck(dataset=name, torch=torch_run, onnx=onnx_run)
        logger.info("%s: score torch %.4f, onnx %.4f (|Δ| %.1e); %s / %s; %s", name, torch_run.score,
                    onnx_run.score, check.score_delta, torch_run.strategy, onnx_run.strategy,
                    "unchanged" if check.unchanged else "CHANGED")
        checks.append(check)
    return checks


def signals_table(checks: Sequence[SignalCheck]) -> list[str]:
    lines = ["| dataset | score torch | score onnx | \\|Δscore\\| | label | strategy | warnings | unchanged |",
             "|---|---:|---:|---:|---|---|---|---|"]

    def pair(a: object, b: object) -> str:
        return f"{a}" if a == b else f"{a} → **{b}**"

    for c in checks:
        warnings = pair(", ".join(c.torch.warnings) or "—", ", ".join(c.onnx.warnings) or "—")
        lines.append(f"| {c.dataset} | {c.torch.score:.4f} | {c.onnx.score:.4f} | {c.score_delta:.1e} | "
                     f"{pair(c.torch.label, c.onnx.label)} | {pair(c.torch.strategy, c.onnx.strategy)} | "
                     f"{warnings} | {'yes' if c.unchanged else '**no**'} |")
    return lines


# --------------------------------------------------------------------------- ONNX Runtime vs OpenVINO

# Run in a fresh interpreter per runtime: import, session/compile, then forward passes on one batch.
_RUNTIME_CHILD = r'''
import json, sys, time
t0 = time.perf_counter()
runtime, graph, batch_file, out_file, threads = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
repeats = int(sys.argv[6])
import numpy as np
x = np.load(batch_file)
t0 = time.perf_counter()
if runtime.startswith("onnxruntime"):
    import onnxruntime as ort
    imported = time.perf_counter()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    if runtime == "onnxruntime_no_arena":
        options.enable_cpu_mem_arena = False
    session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    forward = lambda: session.run(names, {"images": x})
    version = ort.__version__
else:
    import openvino as ov
    imported = time.perf_counter()
    core = ov.Core()
    model = core.read_model(graph)
    if runtime == "openvino_static":
        model.reshape({"images": list(x.shape)})
    config = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
    compiled = core.compile_model(model, "CPU", config)
    request = compiled.create_infer_request()
    def forward():
        result = request.infer({"images": x})
        return [result[port] for port in compiled.outputs]
    version = (ov.__version__ if hasattr(ov, "__version__") else ov.get_version()).split("-")[0]
created = time.perf_counter()
outputs = forward()  # warm-up
warm = time.perf_counter()
times = []
for _ in range(repeats):
    start = time.perf_counter()
    forward()
    times.append(time.perf_counter() - start)
np.savez(out_file, *[np.asarray(o) for o in outputs])
print(json.dumps({"version": str(version), "import_s": imported - t0, "create_s": created - imported,
                  "warmup_s": warm - created, "forward_s": times}))
'''


# What each measured variant is; only those marked usable run the advice's batches as they come (the last
# batch of a sample is smaller: a graph compiled for one batch shape would need a compile per shape).
RUNTIME_VARIANTS = {
    "onnxruntime": ("ONNX Runtime, as the engine opens it", True),
    "onnxruntime_no_arena": ("ONNX Runtime, CPU memory arena off", True),
    "openvino": ("OpenVINO, dynamic batch as exported", True),
    "openvino_static": ("OpenVINO, reshaped to the batch shape", False),
}
ADVICE_IMAGES = 128  # hymenoptera's sample: the cold-advice estimate below runs this many images


@dataclass
class RuntimeTiming:
    runtime: str  # a key of RUNTIME_VARIANTS
    version: str
    import_s: float
    create_s: float  # session creation / read + compile
    warmup_s: float
    forward_s: list[float]
    batch: int
    threads: int
    peak_rss_mb: float
    wall_s: float
    max_rel_diff_vs_onnxruntime: float | None = None  # max over outputs of |Δ| / (1 + max |ORT|)

    @property
    def images_per_s(self) -> float:
        return self.batch / min(self.forward_s)

    @property
    def usable(self) -> bool:
        return RUNTIME_VARIANTS[self.runtime][1]

    @property
    def cold_advice_s(self) -> float:
        """What a cold advice of ``ADVICE_IMAGES`` images pays this runtime: import, session, the first batch
        (one-time setup included), then the other batches at the best measured rate."""
        rest = max(ADVICE_IMAGES - self.batch, 0) / self.images_per_s
        return self.import_s + self.create_s + self.warmup_s + rest


@dataclass
class RuntimeComparison:
    graph: str
    runtimes: list[RuntimeTiming]
    skipped: list[str] = field(default_factory=list)  # why a runtime was not measured

    @property
    def pick(self) -> str | None:
        """Of the variants usable as-is whose outputs match ONNX Runtime's within 1e-3: the lowest
        estimated cold-advice time (``RuntimeTiming.cold_advice_s``)."""
        ok = [r for r in self.runtimes if r.usable and (r.max_rel_diff_vs_onnxruntime or 0.0) <= 1e-3]
        return min(ok, key=lambda r: r.cold_advice_s).runtime if ok else None


def runtime_batch(records: Sequence[Any], pre: Any, out: Path, n: int = RUNTIME_BATCH) -> Path:
    """``n`` real images as the network sees them, saved once so every runtime gets the same array."""
    from tl_advise.advisor.measure.images.preprocess import load_for_network

    x = np.stack([load_for_network(str(r.path), pre)[0] for r in list(records)[:n]])
    if len(x) < n:  # a dataset smaller than a batch: repeat it
        x = np.concatenate([x] * math.ceil(n / len(x)))[:n]
    np.save(out, np.ascontiguousarray(x, dtype=np.float32))
    return out


def compare_runtimes(graph: ExportedGraph, batch_file: Path, tmp: Path, *, env: dict[str, str],
                     settle: Callable[[], float]) -> RuntimeComparison:
    from tl_advise.advisor.measure.images.engines.onnx_engine import cpu_threads

    comparison = RuntimeComparison(graph=graph.onnx_path.name, runtimes=[])
    wanted = ["onnxruntime", "onnxruntime_no_arena"]
    probe = subprocess.run([sys.executable, "-c", "import openvino"], env=env, capture_output=True, text=True,
                           check=False)
    if probe.returncode == 0:
        wanted += ["openvino", "openvino_static"]
    else:
        comparison.skipped.append("openvino: not importable (pip install openvino): "
                                  + (probe.stderr.strip().splitlines() or ["?"])[-1])
    threads = cpu_threads()
    outputs: dict[str, list[np.ndarray]] = {}
    for runtime in wanted:
        out_file = tmp / f"runtime-{runtime}.npz"
        settle()
        child = run_child([sys.executable, "-c", _RUNTIME_CHILD, runtime, str(graph.onnx_path), str(batch_file),
                           str(out_file), str(threads), str(RUNTIME_REPEATS)], cwd=tmp, env=env)
        if child.returncode != 0:
            comparison.skipped.append(f"{runtime}: exited {child.returncode}: {child.stderr.strip()[-300:]}")
            logger.warning("%s failed: %s", runtime, child.stderr.strip()[-2000:])
            continue
        facts = json.loads(child.stdout.strip().splitlines()[-1])
        with np.load(out_file) as saved:
            outputs[runtime] = [saved[f"arr_{i}"] for i in range(len(saved.files))]
        timing = RuntimeTiming(
            runtime=runtime, version=facts["version"], import_s=round(facts["import_s"], 3),
            create_s=round(facts["create_s"], 3), warmup_s=round(facts["warmup_s"], 3),
            forward_s=[round(t, 4) for t in facts["forward_s"]], batch=RUNTIME_BATCH, threads=threads,
            peak_rss_mb=child.peak_rss_mb, wall_s=child.wall_s)
        if runtime != "onnxruntime" and "onnxruntime" in outputs:  # the reference
            timing.max_rel_diff_vs_onnxruntime = max_rel_diff(outputs[runtime], outputs["onnxruntime"])
        logger.info("%s %s: import %.2f s, create %.2f s, %.1f images/s, peak RSS %.0f MB", runtime,
                    timing.version, timing.import_s, timing.create_s, timing.images_per_s, timing.peak_rss_mb)
        comparison.runtimes.append(timing)
    return comparison


def max_rel_diff(outputs: list[np.ndarray], reference: list[np.ndarray]) -> float:
    if len(outputs) != len(reference):
        return math.inf
    return float(max(np.abs(o.astype(np.float64) - r).max() / (1.0 + np.abs(r).max())
                     for o, r in zip(outputs, reference, strict=True)))


def runtimes_table(c: RuntimeComparison) -> list[str]:
    lines = [f"| runtime | version | import (s) | session / compile (s) | first batch (s) | images/s (batch "
             f"{RUNTIME_BATCH}, best of {RUNTIME_REPEATS}) | cold advice of {ADVICE_IMAGES} images, est. (s) "
             "| peak RSS (MB) | max rel. diff vs ORT |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in c.runtimes:
        diff = "reference" if r.max_rel_diff_vs_onnxruntime is None else f"{r.max_rel_diff_vs_onnxruntime:.1e}"
        name = f"{r.runtime}: {RUNTIME_VARIANTS[r.runtime][0]}" + ("" if r.usable else " (not usable as-is)")
        lines.append(f"| {name} | {r.version} | {r.import_s:.2f} | {r.create_s:.2f} | {r.warmup_s:.2f} | "
                     f"{r.images_per_s:.1f} | {r.cold_advice_s:.2f} | {r.peak_rss_mb:.0f} | {diff} |")
    return lines


# --------------------------------------------------------------------------- decode options


def _resize_shorter(img: Any, size: int, resample: Any, reducing_gap: float | None) -> Any:
    """``preprocess._resize_shorter_side`` with Pillow's ``reducing_gap`` (same output size)."""
    width, height = img.size
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
    if (new_w, new_h) == (width, height):
        return img
    return img.resize((new_w, new_h), resample, reducing_gap=reducing_gap)


def reduce_factor(size: tuple[int, int], resize_size: int) -> int:
    """The largest integer k with the shorter side / k still ≥ ``resize_size`` (1: no reduction)."""
    return max(1, min(size) // resize_size)


def decode_variants(pre: Any) -> dict[str, Callable[[str], tuple[np.ndarray, np.ndarray]]]:
    """The current ``load_for_network`` and the Pillow options, each returning (network input, pixels)."""
    from tl_advise.advisor.data.images.decode import open_rgb
    from tl_advise.advisor.measure.images import preprocess as pp

    resample = pp.RESAMPLING[pre.interpolation]

    def finish(img: Any, resized: Any) -> tuple[np.ndarray, np.ndarray]:
        cropped = pp._center_crop(resized, pre.input_size)  # the same steps as pp.network_input
        return pp.normalised(cropped, pre), pp.pixel_baseline(img)

    def with_gap(gap: float) -> Callable[[str], tuple[np.ndarray, np.ndarray]]:
        def load(path: str) -> tuple[np.ndarray, np.ndarray]:
            img = open_rgb(path, draft_size=pre.resize_size)
            return finish(img, _resize_shorter(img, pre.resize_size, resample, gap))
        return load

    def with_reduce(path: str) -> tuple[np.ndarray, np.ndarray]:
        img = open_rgb(path, draft_size=pre.resize_size)
        k = reduce_factor(img.size, pre.resize_size)
        small = img.reduce(k) if k > 1 else img
        return finish(img, _resize_shorter(small, pre.resize_size, resample, None))

    variants: dict[str, Callable[[str], tuple[np.ndarray, np.ndarray]]] = {
        "current": lambda path: pp.load_for_network(path, pre)}
    for gap in REDUCING_GAPS:
        variants[f"reducing_gap_{gap:g}"] = with_gap(gap)
    variants["reduce_k"] = with_reduce
    return variants


@dataclass
class DecodeResult:
    dataset: str
    n_images: int
    median_side: int  # median shorter side of the files as stored
    median_side_decoded: int  # … as decoded by the current path (JPEG draft mode), what the options resize
    ms_per_image: dict[str, float]  # best of the rounds, per variant
    max_abs_diff: dict[str, float]  # network input vs the current path, normalised units
    changed_images: dict[str, int]  # images whose network input differs from the current path at all


def decode_sample(data: Path, n: int, seed: int) -> list[str]:
    """Up to ``n`` seeded images of the dataset, as the advisor's scan finds them."""
    from tl_advise.advisor.data.images.scan import scan_dataset

    records = scan_dataset(data).records
    rng = random.Random(seed)
    chosen = rng.sample(records, min(n, len(records)))
    return [str(r.path) for r in chosen]


def _decodes(load: Callable[[str], Any], path: str) -> bool:
    try:
        load(path)
    except Exception as exc:  # a file the advice would skip as undecodable: not a decode-speed sample
        logger.info("decode: %s does not decode (%s); left out", path, exc)
        return False
    return True


def decode_options(datasets: Sequence[tuple[str, Path]], pre: Any, *, n: int, seed: int, rounds: int,
                   settle: Callable[[], float]) -> list[DecodeResult]:
    """Per dataset, serially in this process: ms/image of each variant (interleaved rounds, best kept)."""
    from PIL import Image

    from tl_advise.advisor.data.images.decode import open_rgb

    variants = decode_variants(pre)
    results = []
    for name, data in datasets:
        paths = [p for p in decode_sample(data, n, seed) if _decodes(variants["current"], p)]
        sides, decoded_sides = [], []
        for path in paths:
            with Image.open(path) as img:
                sides.append(min(img.size))
            decoded_sides.append(min(open_rgb(path, draft_size=pre.resize_size).size))
        reference = [variants["current"](p)[0] for p in paths]  # untimed: also warms the page cache
        best: dict[str, float] = {}
        outputs: dict[str, list[np.ndarray]] = {}
        keys = list(variants)
        for round_ in range(rounds):
            settle()
            for key in keys[round_ % len(keys):] + keys[:round_ % len(keys)]:  # a new order each round
                load = variants[key]
                start = time.perf_counter()
                outputs[key] = [load(p)[0] for p in paths]
                ms = 1000 * (time.perf_counter() - start) / len(paths)
                best[key] = min(best.get(key, math.inf), ms)
        diffs = {key: [float(np.abs(o - r).max()) for o, r in zip(out, reference, strict=True)]
                 for key, out in outputs.items()}
        result = DecodeResult(dataset=name, n_images=len(paths), median_side=int(np.median(sides)),
                              median_side_decoded=int(np.median(decoded_sides)),
                              ms_per_image={k: round(v, 2) for k, v in best.items()},
                              max_abs_diff={k: round(max(d), 4) for k, d in diffs.items()},
                              changed_images={k: sum(v > 0 for v in d) for k, d in diffs.items()})
        logger.info("decode %s: %s", name, ", ".join(f"{k} {v:.1f} ms" for k, v in result.ms_per_image.items()))
        results.append(result)
    return results


def decode_table(results: Sequence[DecodeResult]) -> list[str]:
    if not results:
        return []
    keys = list(results[0].ms_per_image)
    head = " | ".join(f"{k} ms/img" for k in keys)
    diff_keys = [k for k in keys if k != "current"]
    lines = [f"| dataset | images | median shorter side: stored → decoded | {head} | "
             + " | ".join(f"{k} max \\|Δ\\| (changed)" for k in diff_keys) + " |",
             "|---|---:|---:|" + "---:|" * (len(keys) + len(diff_keys))]
    for r in results:
        cur = r.ms_per_image["current"]
        cells = [f"{r.ms_per_image[k]:.2f}" + ("" if k == "current" else f" ({r.ms_per_image[k] / cur:.2f}×)")
                 for k in keys]
        diffs = [f"{r.max_abs_diff[k]:.3f} ({r.changed_images[k]})" for k in diff_keys]
        lines.append(f"| {r.dataset} | {r.n_images} | {r.median_side} → {r.median_side_decoded} | "
                     + " | ".join(cells + diffs) + " |")
    return lines


# --------------------------------------------------------------------------- imports

_IMPORT_LINE = re.compile(r"^import time:\s*(\d+)\s*\|\s*(\d+)\s*\|(\s*)(\S+)\s*$")


@dataclass
class ImportReport:
    wall_s: float
    total_import_s: float  # sum of the cumulative times of the outermost imports
    package_s: dict[str, float]  # package → cumulative seconds of its imports entered from outside it
    outermost_s: dict[str, float]  # package → summed cumulative seconds of its modules imported at top level
    nested_in: dict[str, str]  # package → the outermost import it was first loaded under ("" at top level)
    torch_loaded: list[str]  # of TORCH_PACKAGES, those imported at all
    engine: str
    returncode: int


@dataclass
class _ImportLog:
    total: float = 0.0
    package: dict[str, float] = field(default_factory=dict)
    outermost: dict[str, float] = field(default_factory=dict)
    nested: dict[str, str] = field(default_factory=dict)


def parse_importtime(stderr: str) -> _ImportLog:
    """``-X importtime`` lines → per top-level package: the cumulative time of every import of one of its
    modules made from outside the package (so its dependencies loaded on the way are included, as is
    usual for "the import time of numpy"), and the time of those made at the top level. The top-level
    times partition the total; the package times overlap (sklearn's includes the scipy it loads).

    The lines are written as each import finishes, so a parent follows its children; read in reverse
    they are in pre-order, and a line's parent is the last one seen at the depth above it."""
    entries = []
    for line in stderr.splitlines():
        match = _IMPORT_LINE.match(line)
        if match is not None:
            entries.append(((len(match.group(3)) - 1) // 2, match.group(4), int(match.group(2)) / 1e6))
    log = _ImportLog()
    ancestors: list[str] = []  # module names by depth, along the current path
    for depth, module, cumulative_s in reversed(entries):
        del ancestors[depth:]
        ancestors.append(module)
        root = module.split(".")[0]
        parent_root = ancestors[depth - 1].split(".")[0] if depth > 0 else None
        if depth == 0:
            log.total += cumulative_s
            log.outermost[root] = log.outermost.get(root, 0.0) + cumulative_s
        if parent_root != root:  # an entry into the package
            log.package[root] = log.package.get(root, 0.0) + cumulative_s
            # Outermost imports run one after another, so the last entry seen here (in reverse) is the earliest.
            log.nested[root] = "" if depth == 0 else ancestors[0]
    return log


def import_times(data: Path, graphs_dir: Path, tmp: Path, env: dict[str, str]) -> ImportReport:
    """A cold advice (exported graph cached, nothing else) under ``python -X importtime``."""
    cache_dir = graph_only_cache(graphs_dir, tmp, "imports-")
    cmd = [sys.executable, "-X", "importtime", "-m", "tl_advise.cli", str(data), "--format", "json", "-q",
           "--cache-dir", str(cache_dir)]
    child = run_child(cmd, cwd=tmp, env=env)
    if child.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(cmd)} exited {child.returncode}: {child.stderr.strip()[-2000:]}")
    log = parse_importtime(child.stderr)
    report = json.loads(child.stdout)
    return ImportReport(
        wall_s=child.wall_s, total_import_s=round(log.total, 3),
        package_s={p: round(log.package[p], 3) for p in IMPORT_PACKAGES if p in log.package},
        outermost_s={p: round(log.outermost.get(p, 0.0), 3) for p in IMPORT_PACKAGES if p in log.package},
        nested_in={p: log.nested[p] for p in IMPORT_PACKAGES if p in log.package},
        torch_loaded=[p for p in TORCH_PACKAGES if p in log.package],
        engine=str(report["sample"]["engine"]), returncode=child.returncode)


def imports_table(r: ImportReport) -> list[str]:
    lines = ["| package | import time, cumulative (s) | first imported under | of which at the top level (s) |",
             "|---|---:|---|---:|"]
    for name, seconds in sorted(r.package_s.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {name} | {seconds:.3f} | {r.nested_in.get(name) or '(top level)'} | "
                     f"{r.outermost_s.get(name, 0.0):.3f} |")
    return lines


# --------------------------------------------------------------------------- throughput: where the time goes


def time_per_item(items: Sequence[Any], fn: Callable[[Any], Any]) -> tuple[float, list[Any]]:
    """Milliseconds per item of ``fn`` run serially in this process, and its outputs."""
    start = time.perf_counter()
    out = [fn(item) for item in items]
    return 1000 * (time.perf_counter() - start) / max(len(items), 1), out


def time_forward(batches: Sequence[Any], forward: Callable[[Any], Any]) -> float:
    """Milliseconds per image of ``forward`` over ``batches`` (after one untimed warm-up batch)."""
    import torch

    with torch.inference_mode():
        forward(batches[0])
        start = time.perf_counter()
        for batch in batches:
            forward(batch)
        elapsed = time.perf_counter() - start
    return 1000 * elapsed / sum(len(b) for b in batches)


def breakdown(plain_model: Any, plain_tf: Any, ours_net: Any, onnx_engine: Any, paths: list[str],
              batch_size: int) -> dict[str, float]:
    """Serial (one process) decode+transform cost and batched forward cost: the plain loop, the PyTorch
    engine (channels_last, without and with its BN-statistics hooks) and ONNX Runtime (all outputs)."""
    import torch
    from torchvision.datasets.folder import default_loader

    from tl_advise.advisor.measure.images.engines.torch_engine import (
        _BNRecorder,  # the hooks that collect BN statistics
    )
    from tl_advise.advisor.measure.images.preprocess import load_for_network

    pre = ours_net.preprocessing
    ms: dict[str, float] = {}
    ms["plain_decode_transform"], plain_x = time_per_item(paths, lambda p: plain_tf(default_loader(p)))
    # Both engines decode with load_for_network: JPEG draft mode, numpy transform, 32×32 pixel baseline.
    ms["ours_decode_transform"], ours_x = time_per_item(paths, lambda p: load_for_network(p, pre)[0])
    plain_batches = [torch.stack(plain_x[i:i + batch_size]) for i in range(0, len(plain_x), batch_size)]
    ours_arrays = [np.stack(ours_x[i:i + batch_size]) for i in range(0, len(ours_x), batch_size)]
    ours_batches = [torch.from_numpy(a).contiguous(memory_format=torch.channels_last) for a in ours_arrays]
    ms["plain_forward"] = time_forward(plain_batches, plain_model)
    ours_net.eval().body.to(memory_format=torch.channels_last)
    ms["ours_forward_no_bn_hooks"] = time_forward(ours_batches, lambda x: ours_net.head(ours_net.body(x)))
    recorder = _BNRecorder(ours_net.batchnorm_layers())
    try:
        ms["ours_forward_with_bn_hooks"] = time_forward(ours_batches, lambda x: ours_net.head(ours_net.body(x)))
    finally:
        recorder.remove()
    session, outputs = onnx_engine.session, onnx_engine.outputs
    ms["onnx_forward_all_outputs"] = time_forward(ours_arrays, lambda x: session.run(outputs, {"images": x}))
    ms["onnx_forward_features_logits"] = time_forward(ours_arrays,
                                                      lambda x: session.run(outputs[:2], {"images": x}))
    return {k: round(v, 2) for k, v in ms.items()}


def breakdown_table(b: dict[str, float], n_images: int) -> list[str]:
    if not b:
        return []
    return [
        "",
        f"Where the time goes (ms per image, one process, first {n_images} images; "
        "forward in batches of 32):",
        "",
        "| step | plain loop | tl-advise, PyTorch engine | tl-advise, ONNX Runtime engine |",
        "|---|---:|---:|---:|",
        f"| decode + resize/crop/normalise | {b['plain_decode_transform']:.1f} | "
        f"{b['ours_decode_transform']:.1f} | {b['ours_decode_transform']:.1f} (the same `load_for_network`: "
        "JPEG draft mode, numpy transform) |",
        f"| forward (body + head) | {b['plain_forward']:.1f} | {b['ours_forward_no_bn_hooks']:.1f} "
        f"(channels_last) | {b['onnx_forward_features_logits']:.1f} (features + logits only) |",
        f"| forward + BN-input statistics | — | {b['ours_forward_with_bn_hooks']:.1f} (hooks) | "
        f"{b['onnx_forward_all_outputs']:.1f} (all outputs of the graph) |",
    ]



# --------------------------------------------------------------------------- report sections


def markdown_sections(results: dict[str, Any]) -> list[str]:
    """The Markdown of the signals, runtimes, decode and imports parts that ran."""
    out: list[str] = []
    checks: list[SignalCheck] = results.get("signals") or []
    if checks:
        out += ["### Signals: PyTorch engine vs ONNX Runtime", "",
                "In-process `advise(DATA, engine=\"torch\")` and `advise(DATA, engine=\"onnx\")`, each on a fresh "
                "cache (the ONNX one holds the exported graph only). Warnings compared by id.", "",
                *signals_table(checks), ""]
    rc: RuntimeComparison | None = results.get("runtimes")
    if rc is not None:
        out += ["### ONNX Runtime vs OpenVINO on the exported graph", "",
                f"`{rc.graph}` (all outputs: features, logits, BN-input moments) on {RUNTIME_BATCH} real "
                "hymenoptera images, each runtime in a fresh interpreter: import, session creation (OpenVINO: read "
                "+ compile, f32 precision, latency hint, same thread count), one warm-up batch, then best of "
                f"{RUNTIME_REPEATS}. Peak RSS from `wait4`. Max rel. diff = max over outputs of |Δ| / (1 + max "
                f"|ORT|). Cold advice est. = import + session + first batch + the other "
                f"{ADVICE_IMAGES - RUNTIME_BATCH} images at the measured rate: what a cold advice of hymenoptera's "
                "sample pays the runtime.", "",
                *runtimes_table(rc), "",
                "Pick (of the variants usable as-is whose outputs match ORT within 1e-3, the lowest cold-advice "
                f"estimate): **{rc.pick or '—'}**."
                + (" Not measured: " + "; ".join(rc.skipped) if rc.skipped else ""), ""]
    decode: list[DecodeResult] = results.get("decode") or []
    if decode:
        out += ["### Decode: current `load_for_network` vs Pillow's reduce-on-load options", "",
                "Serially in one process, the same seeded images per dataset, best of "
                f"{results['settings']['decode_rounds']} interleaved rounds (ms per image: decode, resize/crop/"
                "normalise, pixel baseline). All variants decode JPEGs in draft mode first. "
                "`reducing_gap_G`: `img.resize(..., reducing_gap=G)` in the shorter-side resize; `reduce_k`: "
                "`img.reduce(k)` first, k the largest integer keeping the shorter side ≥ resize size. "
                "Max |Δ| of the network input (normalised units) vs the current path; (changed) = images whose "
                "input differs at all. Report only: advisor/measure/images/preprocess.py is unchanged.", "",
                *decode_table(decode), ""]
    imports: ImportReport | None = results.get("imports")
    if imports is not None:
        out += ["### Imports of a cold advice (exported graph cached)", "",
                "`python -X importtime -m tl_advise.cli hymenoptera --format json -q --cache-dir <graph-only cache>`"
                f": wall {imports.wall_s:.2f} s, engine {imports.engine}, imports {imports.total_import_s:.2f} s "
                "in all (the outermost imports' cumulative times). torch / torchvision / timm imported: "
                f"**{', '.join(imports.torch_loaded) or 'none'}**.", "", *imports_table(imports), ""]
    return out


def json_sections(results: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    checks: list[SignalCheck] = results.get("signals") or []
    if checks:
        out["signals"] = [{**asdict(c), "score_delta": c.score_delta, "unchanged": c.unchanged} for c in checks]
    rc: RuntimeComparison | None = results.get("runtimes")
    if rc is not None:
        out["runtimes"] = {**asdict(rc), "pick": rc.pick,
                           "images_per_s": {r.runtime: round(r.images_per_s, 2) for r in rc.runtimes},
                           "cold_advice_s": {r.runtime: round(r.cold_advice_s, 2) for r in rc.runtimes}}
    if results.get("decode"):
        out["decode"] = [asdict(d) for d in results["decode"]]
    if results.get("imports") is not None:
        out["imports"] = asdict(results["imports"])
    if results.get("graph") is not None:
        out["graph"] = results["graph"]
    return out
