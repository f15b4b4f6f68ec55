"""How fast is ``tl-advise``? Cold vs warm runs per engine, embedding throughput vs a plain loop, scaling,
and the evidence behind the ONNX Runtime engine (issue #15).

Every speed claim is a ratio against a baseline measured in the same run on the same machine:

a. cold vs warm per engine: ``python -m tl_advise.cli DATA --format json -q --cache-dir D --engine E`` in a
   fresh subprocess (imports included): ``auto`` (ONNX Runtime) first-ever (fresh D, the export included),
   cold (fresh D holding only the exported graph) and warm (D again); ``torch`` cold and warm. Wall, CPU,
   in-process timings and the CLI process's peak RSS (``wait4``).
b. embedding throughput: the same images and the same efficientnet_lite0 through plain torchvision
   ``ImageFolder`` + ``DataLoader(batch_size=32)`` + ``model(x)`` loops (the tuned one: 2 workers and
   channels_last), through ``embed()`` (PyTorch engine) and through ``embed_sample`` on ONNX Runtime.
c. advise time vs dataset size: hymenoptera replicated 1×, 4×, 16× (distinct bytes, same pixels).
d. signals unchanged: ``advise(engine="torch")`` vs ``advise(engine="onnx")`` on every shared dataset.
e. ONNX Runtime vs OpenVINO on the same exported graph (fresh interpreter each).
f. decode: ``load_for_network`` vs Pillow's ``reducing_gap`` and ``Image.reduce`` on each shared dataset.
g. imports of a cold advice with the graph cached (``python -X importtime``): torch must not load.

Run ``.venv/bin/python benchmarks/bench_advise.py`` (about 10 min on 2 quiet cores) or add ``--quick``
(about 6 min). Results go to ``benchmarks/results/advise_speed{,_quick}.{json,md}``; the Markdown table
is also printed on stdout. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import _engine_bench as eb
from _provenance import machine, provenance

logger = logging.getLogger("bench_advise")

REPO_ROOT = Path(__file__).resolve().parents[1]
ALL_DATASETS = ("hymenoptera", "flowers5_small", "eurosat_small", "pneumoniamnist", "lfw_faces_vs_nonfaces")
QUICK_DATASETS = ("hymenoptera",)
SCALE_DATASET = "hymenoptera"
THROUGHPUT_DATASET = "hymenoptera"
BATCH_SIZE = 32
EXIT_NO_DATA = 2

# Targets (issue #2). The scaling bound is this benchmark's own reading of "nearly flat".
TARGET_COLD_S = 30.0
TARGET_WARM_S = 3.0
TARGET_THROUGHPUT_RATIO = 1.5
TARGET_SCALE_RATIO = 1.5
# Targets (issue #15): cold advice with the exported graph cached, first-ever run, engine throughput vs the
# tuned plain loop, peak RSS of a cold advice.
TARGET_ENGINE_COLD_S = 6.0
TARGET_FIRST_RUN_S = 20.0
TARGET_ENGINE_THROUGHPUT_RATIO = 2.0
TARGET_COLD_RSS_MB = 600.0
ENGINES = ("auto", "torch")  # auto: ONNX Runtime here (the JSON report says which ran)
PLAIN_PIPELINES = ("plain_w0", "plain_w2", "plain_w2_cl")
SECTIONS = ("coldwarm", "throughput", "scaling", "signals", "runtimes", "decode", "imports")


# --------------------------------------------------------------------------- result records


@dataclass
class CliRun:
    """One ``tl-advise`` subprocess: wall time as the user sees it, plus what the JSON report says."""

    wall_s: float
    cpu_s: float  # user + system of the CLI and its DataLoader workers
    peak_rss_mb: float  # wait4 ru_maxrss: the CLI process's peak (or a worker's, if larger), not a sum
    engine: str  # what ran the forward pass, from the report (None → "cached": no forward pass needed it)
    device: str
    timings: dict[str, float]
    n_images: int
    sampled: int
    forward_passes: int
    cache_hits: int
    duplicate_groups: int
    skipped: int
    strategy: str
    other_load: float  # other runnable processes just before the run (0: the machine was ours)


@dataclass
class ColdWarm:
    """One dataset and ``--engine``: ``repeats`` rounds; the fastest run of each kind is reported.

    ``firsts`` (auto only): a fresh cache, so the run exports the graph. ``colds``: a fresh cache — for
    auto one that holds only the graph the first run exported. ``warms``: the cold run's cache again."""

    dataset: str
    engine: str
    colds: list[CliRun]
    warms: list[CliRun]
    firsts: list[CliRun] = field(default_factory=list)

    @property
    def cold(self) -> CliRun:
        return min(self.colds, key=lambda r: r.wall_s)

    @property
    def warm(self) -> CliRun:
        return min(self.warms, key=lambda r: r.wall_s)

    @property
    def first(self) -> CliRun | None:
        return min(self.firsts, key=lambda r: r.wall_s) if self.firsts else None

    @property
    def speedup(self) -> float:
        return self.cold.wall_s / self.warm.wall_s


@dataclass
class PipelineTiming:
    name: str
    seconds: list[float]  # one per round
    n_images: int
    other_load: list[float] = field(default_factory=list)  # per round, as in CliRun
    cpu_seconds: list[float] = field(default_factory=list)  # per round: this process + DataLoader workers

    @property
    def images_per_cpu_s(self) -> float:
        return self.n_images / min(self.cpu_seconds)

    @property
    def best_s(self) -> float:
        return min(self.seconds)

    @property
    def images_per_s(self) -> float:
        return self.n_images / self.best_s


@dataclass
class Throughput:
    dataset: str
    n_images: int
    rounds: int
    pipelines: dict[str, PipelineTiming]
    fair_baseline: str
    top1_agreement: float  # ours_onnx vs plain loop ImageNet argmax, same images
    top1_agreement_torch: float  # ours_torch vs plain loop
    embed_cache: str
    onnx_threads: int = 0
    breakdown_ms_per_image: dict[str, float] = field(default_factory=dict)
    breakdown_images: int = 0

    def ratio_of(self, name: str) -> float:
        return self.pipelines[name].images_per_s / self.pipelines[self.fair_baseline].images_per_s

    def cpu_ratio_of(self, name: str) -> float:
        return self.pipelines[name].images_per_cpu_s / self.pipelines[self.fair_baseline].images_per_cpu_s

    @property
    def ratio(self) -> float:
        return self.ratio_of("ours_onnx")

    @property
    def cpu_ratio(self) -> float:
        return self.cpu_ratio_of("ours_onnx")


@dataclass
class ScalePoint:
    factor: int
    runs: list[CliRun]  # each with a fresh cache

    @property
    def run(self) -> CliRun:
        return min(self.runs, key=lambda r: r.timings["total"])


# --------------------------------------------------------------------------- small helpers

QUIET_WAIT_S = 0.0  # --wait-quiet: how long to wait for other processes to go idle before each measurement


def other_runnable() -> int:
    """Processes runnable right now besides this one (Linux /proc/loadavg), 0 where unknown."""
    try:
        running = Path("/proc/loadavg").read_text().split()[3].split("/")[0]
    except (OSError, IndexError):
        return 0
    return max(int(running) - 1, 0)


def other_load(samples: int = 5, interval_s: float = 0.1) -> float:
    """Mean number of other runnable processes over a short window (the machine has os.cpu_count() cores)."""
    values = []
    for _ in range(samples):
        values.append(other_runnable())
        time.sleep(interval_s)
    return round(sum(values) / samples, 2)


def settle() -> float:
    """Wait (up to QUIET_WAIT_S) until no other process competes for the CPU; returns the load then seen."""
    deadline = time.monotonic() + QUIET_WAIT_S
    load = other_load()
    while load > 0 and time.monotonic() < deadline:
        time.sleep(1.0)
        load = other_load()
    if load > 0:
        logger.info("%.1f other runnable processes on %d cores: timings are inflated", load, os.cpu_count() or 1)
    return load


def cpu_clock() -> float:
    """CPU seconds (user + system) of this process and of its finished, reaped descendants (workers, CLIs)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


@contextmanager
def cpu_watch() -> Iterator[Callable[[], float]]:
    """Like ``stopwatch`` for CPU time: less sensitive than wall time to other processes on the machine."""
    start = cpu_clock()
    end: list[float] = []
    try:
        yield lambda: (end[0] if end else cpu_clock()) - start
    finally:
        end.append(cpu_clock())


@contextmanager
def stopwatch() -> Iterator[Callable[[], float]]:
    """``with stopwatch() as elapsed: ...`` then ``elapsed()`` gives the seconds spent inside."""
    start = time.perf_counter()
    end: list[float] = []
    try:
        yield lambda: (end[0] if end else time.perf_counter()) - start
    finally:
        end.append(time.perf_counter())


def shared_dir(cli_value: str | None) -> Path:
    """``--shared``, else ``$TL_ADVISE_SHARED``, else ``../shared`` beside the checkout."""
    return Path(cli_value or os.environ.get("TL_ADVISE_SHARED") or REPO_ROOT.parent / "shared").resolve()


def dataset_path(shared: Path, name: str) -> Path:
    return shared / "data" / name


def clean_env() -> dict[str, str]:
    """The user's environment without TL_ADVISE_* overrides, so every run uses the built-in defaults."""
    return {k: v for k, v in os.environ.items() if not k.startswith("TL_ADVISE_")}


def machine_facts() -> dict[str, Any]:
    facts = machine()
    return {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), **facts,
            "load_average_at_start": facts.pop("load_average")}


# --------------------------------------------------------------------------- a. cold vs warm (subprocess)


def advise_command(data: Path, cache_dir: Path, engine: str | None = None) -> list[str]:
    return [sys.executable, "-m", "tl_advise.cli", str(data), "--format", "json", "-q",
            "--cache-dir", str(cache_dir), *(["--engine", engine] if engine else [])]


def run_cli(data: Path, cache_dir: Path, workdir: Path, engine: str | None = None) -> CliRun:
    """Run tl-advise in a fresh interpreter (cwd without a pyproject.toml) and parse its JSON report."""
    cmd = advise_command(data, cache_dir, engine)
    load = settle()
    proc = eb.run_child(cmd, cwd=workdir, env=clean_env())
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    if proc.stderr.strip():
        logger.debug("tl-advise stderr: %s", proc.stderr.strip())
    report = json.loads(proc.stdout)
    return CliRun(
        wall_s=proc.wall_s, cpu_s=proc.cpu_s, peak_rss_mb=proc.peak_rss_mb,
        engine=report["sample"].get("engine") or "cached", device=report["device"], timings=report["timings"],
        n_images=report["dataset"]["n_images"],
        sampled=report["sample"]["n_images"], forward_passes=report["sample"]["forward_passes"],
        cache_hits=report["sample"]["cache_hits"], duplicate_groups=len(report["dataset"]["duplicates"]),
        skipped=len(report["dataset"]["skipped"]), strategy=report["recommendation"]["strategy"],
        other_load=load,
    )


def prime_imports(workdir: Path) -> None:
    """Load the heavy libraries once (untimed) so the first cold run does not also pay a cold OS page cache."""
    code = ("import torch, torchvision, timm, sklearn, onnxruntime, tl_advise.advisor.measure.images.embed, "
            "tl_advise.advisor.measure.images.similarity")
    subprocess.run([sys.executable, "-c", code], cwd=workdir, env=clean_env(), check=True, timeout=300)


def graphs_of(cache_dir: Path) -> Path:
    from tl_advise.advisor.measure.cache import CACHE_FORMAT

    return cache_dir / f"v{CACHE_FORMAT}" / "graphs"


def cold_warm(name: str, data: Path, tmp: Path, repeats: int) -> list[ColdWarm]:
    """Per repeat, interleaved: auto first-ever, cold (graph only), warm; then torch cold, warm."""
    results = {engine: ColdWarm(dataset=name, engine=engine, colds=[], warms=[]) for engine in ENGINES}
    for _ in range(repeats):
        for engine, result in results.items():
            if engine == "auto":
                first_dir = Path(tempfile.mkdtemp(prefix=f"cache-{name}-first-", dir=tmp))
                first = run_cli(data, first_dir, tmp, engine)
                result.firsts.append(first)
                if not graphs_of(first_dir).is_dir():
                    raise RuntimeError(f"--engine auto left no exported graph in {graphs_of(first_dir)}")
                cache_dir = eb.graph_only_cache(graphs_of(first_dir), tmp, f"cache-{name}-auto-")
            else:
                first = None
                cache_dir = Path(tempfile.mkdtemp(prefix=f"cache-{name}-{engine}-", dir=tmp))
            cold = run_cli(data, cache_dir, tmp, engine)
            warm = run_cli(data, cache_dir, tmp, engine)
            logger.info("%s --engine %s (%s): %scold %.2f s (in-process %.2f s, %d forward passes, peak RSS %.0f MB), "
                        "warm %.2f s (%d cache hits)", name, engine, cold.engine,
                        f"first {first.wall_s:.2f} s, " if first else "", cold.wall_s, cold.timings["total"],
                        cold.forward_passes, cold.peak_rss_mb, warm.wall_s, warm.cache_hits)
            result.colds.append(cold)
            result.warms.append(warm)
    return list(results.values())


# --------------------------------------------------------------------------- b. embedding throughput


@dataclass
class ThroughputInputs:
    """The images both pipelines see, and how the plain ImageFolder loop finds exactly those."""

    records: list[Any]  # tl_advise ImageRecord
    root: Path
    containers: list[Path]  # folders that hold class folders (ImageFolder roots)
    selected: set[str]


def throughput_inputs(data: Path, sample_only: bool) -> ThroughputInputs:
    """All images torchvision's ImageFolder would read (or the advisor's stratified sample of them)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    from tl_advise.advisor.data.images.sampling import stratified_sample, without_duplicates
    from tl_advise.advisor.data.images.scan import scan_dataset

    scan = scan_dataset(data)
    records = [r for r in scan.records if r.path.suffix.lower() in IMG_EXTENSIONS]
    if sample_only:
        records = stratified_sample(without_duplicates(records, scan.root, scan.summary.duplicates))
    if scan.summary.layout == "splits":
        containers = sorted({scan.root / r.path.relative_to(scan.root).parts[0] for r in records})
    else:
        containers = [scan.root]
    return ThroughputInputs(records=records, root=scan.root, containers=containers,
                            selected={os.path.abspath(r.path) for r in records})


def plain_transform(pre: Any) -> Any:
    """The backbone's own eval transform, written out as a user would from the model card."""
    from torchvision import transforms as T

    return T.Compose([
        T.Resize(pre.resize_size, interpolation=T.InterpolationMode.BICUBIC),
        T.CenterCrop(pre.input_size),
        T.ToTensor(),
        T.Normalize(pre.mean, pre.std),
    ])


def plain_dataset(inputs: ThroughputInputs, transform: Any) -> Any:
    from torch.utils.data import ConcatDataset
    from torchvision.datasets import ImageFolder

    def wanted(path: str) -> bool:
        return os.path.abspath(path) in inputs.selected

    parts = [ImageFolder(str(c), transform=transform, is_valid_file=wanted, allow_empty=True)
             for c in inputs.containers]
    return ConcatDataset(parts)


def run_plain(model: Any, dataset: Any, workers: int, channels_last: bool = False) -> tuple[float, float, list[int]]:
    """The loop a user would write; returns (seconds, CPU seconds, ImageNet argmax per image in order).
    ``channels_last``: the tuned loop, whose ``model`` is already channels_last; the input is converted too."""
    import torch
    from torch.utils.data import DataLoader

    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    top1: list[int] = []
    with stopwatch() as elapsed, cpu_watch() as cpu, torch.inference_mode():
        for x, _ in DataLoader(dataset, batch_size=BATCH_SIZE, num_workers=workers):
            top1.extend(model(x.contiguous(memory_format=memory_format)).argmax(-1).tolist())
    return elapsed(), cpu(), top1


def disabled_cache_works() -> bool:
    """Whether ``ArrayCache(None)`` accepts writes (a disabled cache must ignore them, not raise)."""
    from tl_advise.advisor.measure.cache import ArrayCache

    try:
        ArrayCache(None).save("probe", "probe", {})
    except (AssertionError, TypeError) as exc:
        logger.warning("ArrayCache(None).save raises %s (it also breaks `tl-advise --no-cache`); timing embed() "
                       "with an empty cache in a fresh temporary folder instead", type(exc).__name__)
        return False
    return True


def empty_cache(tmp: Path) -> Any:
    """No cached rows: ``ArrayCache(None)`` if it works, else a fresh, empty cache folder (writes included)."""
    from tl_advise.advisor.measure.cache import ArrayCache

    return ArrayCache(None) if disabled_cache_works() else ArrayCache(Path(tempfile.mkdtemp(prefix="embed-", dir=tmp)))


def run_ours(engine: Any, inputs: ThroughputInputs, tmp: Path) -> tuple[float, float, dict[str, int]]:
    """``embed_sample(engine)`` with no cached rows and BN statistics, the advice's default workers: what a
    cold advise pays for the forward pass. ``embed(backbone)`` is this with a ``TorchEngine``."""
    from tl_advise.advisor.measure.images.embedding import embed_sample

    cache = empty_cache(tmp)
    with stopwatch() as elapsed, cpu_watch() as cpu:
        emb = embed_sample(engine, inputs.records, root=inputs.root, cache=cache, collect_bn=True,
                           batch_size=BATCH_SIZE)
    if emb.failed or emb.bn is None:
        raise RuntimeError(f"{engine.name}: embedding failed on {len(emb.failed)} images or gave no BN statistics")
    return elapsed(), cpu(), {os.path.abspath(r.path): int(t) for r, t in zip(emb.records, emb.top1, strict=True)}


def sample_paths(dataset: Any) -> list[str]:
    return [os.path.abspath(path) for part in dataset.datasets for path, _ in part.samples]


def throughput(data: Path, tmp: Path, graph: eb.ExportedGraph, *, sample_only: bool, rounds: int,
               breakdown_n: int) -> Throughput:
    import torch
    from torch import nn

    from tl_advise.advisor.measure.images.backbones import load_backbone
    from tl_advise.advisor.measure.images.engines.torch_engine import TorchEngine

    inputs = throughput_inputs(data, sample_only)
    plain_net = load_backbone("efficientnet_lite0").eval()
    plain_model = nn.Sequential(plain_net.body, plain_net.head).eval()
    tuned_net = load_backbone("efficientnet_lite0").eval()  # its own copy: made channels_last
    tuned_model = nn.Sequential(tuned_net.body, tuned_net.head).eval().to(memory_format=torch.channels_last)
    ours_net = load_backbone("efficientnet_lite0")  # a third copy: TorchEngine makes its body channels_last
    engines = {"ours_torch": TorchEngine(ours_net, torch.device("cpu")), "ours_onnx": graph.engine}
    dataset = plain_dataset(inputs, plain_transform(plain_net.preprocessing))
    if len(dataset) != len(inputs.records):
        raise RuntimeError(f"ImageFolder found {len(dataset)} images, the advisor {len(inputs.records)}")

    plain_runs = {"plain_w0": (plain_model, 0, False), "plain_w2": (plain_model, 2, False),
                  "plain_w2_cl": (tuned_model, 2, True)}
    pipelines = {name: PipelineTiming(name, [], len(dataset)) for name in (*plain_runs, *engines)}
    plain_top1: list[int] = []
    ours_top1: dict[str, dict[str, int]] = {}
    for round_ in range(rounds):  # interleaved, so drift in machine load hits every pipeline alike
        for name, (model, workers, channels_last) in plain_runs.items():
            pipelines[name].other_load.append(settle())
            seconds, cpu_s, plain_top1 = run_plain(model, dataset, workers, channels_last)
            pipelines[name].seconds.append(round(seconds, 3))
            pipelines[name].cpu_seconds.append(round(cpu_s, 3))
        for name, engine in engines.items():
            pipelines[name].other_load.append(settle())
            seconds, cpu_s, ours_top1[name] = run_ours(engine, inputs, tmp)
            pipelines[name].seconds.append(round(seconds, 3))
            pipelines[name].cpu_seconds.append(round(cpu_s, 3))
        logger.info("throughput round %d: %s", round_ + 1,
                    ", ".join(f"{p.name} {p.seconds[-1]:.2f} s" for p in pipelines.values()))

    paths = sample_paths(dataset)

    def agreement(top1: dict[str, int]) -> float:
        return round(sum(top1[p] == t for p, t in zip(paths, plain_top1, strict=True)) / len(paths), 4)

    fair = min(PLAIN_PIPELINES, key=lambda name: pipelines[name].best_s)  # the fastest plain loop
    result = Throughput(dataset=data.name, n_images=len(dataset), rounds=rounds, pipelines=pipelines,
                        fair_baseline=fair, top1_agreement=agreement(ours_top1["ours_onnx"]),
                        top1_agreement_torch=agreement(ours_top1["ours_torch"]),
                        embed_cache="ArrayCache(None)" if disabled_cache_works()
                        else "a fresh, empty cache folder (ArrayCache(None).save raises)",
                        onnx_threads=graph.engine.threads)
    if breakdown_n > 0:
        settle()
        result.breakdown_images = min(breakdown_n, len(dataset))
        result.breakdown_ms_per_image = eb.breakdown(plain_model, plain_transform(plain_net.preprocessing), ours_net,
                                                     graph.engine, paths[:result.breakdown_images], BATCH_SIZE)
    return result


# --------------------------------------------------------------------------- c. advise time vs size


def distinct_copy(src: Path, dest: Path, replica: int, rng: random.Random) -> None:
    """Copy ``src`` with ``replica + 1`` random bytes appended after its end marker.

    Decoders stop at the JPEG EOI / PNG IEND / GIF trailer, so the pixels are unchanged, but the bytes
    (and the size) differ: the advisor's duplicate detection sees distinct files, as in a real dataset.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(src.read_bytes() + rng.randbytes(replica + 1))
    shutil.copystat(src, dest)


def link_or_copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        try:
            dest.symlink_to(src)
        except OSError:
            shutil.copy2(src, dest)


def dataset_files(root: Path) -> list[Path]:
    return sorted(Path(d) / f for d, _, files in os.walk(root) for f in files if not f.startswith("."))


def build_replicas(src: Path, pool: Path, replicas: int, seed: int) -> list[Path]:
    """``pool/r<i>/...``: ``replicas`` distinct-bytes copies of the dataset; returns their folders."""
    rng = random.Random(seed)
    files = dataset_files(src)
    folders = []
    for r in range(replicas):
        folder = pool / f"r{r}"
        for path in files:
            distinct_copy(path, folder / path.relative_to(src), r, rng)
        folders.append(folder)
    return folders


def assemble(replica_folders: Sequence[Path], dest: Path) -> Path:
    """A dataset whose every class folder holds the files of all ``replica_folders``, renamed apart."""
    for r, folder in enumerate(replica_folders):
        for path in dataset_files(folder):
            rel = path.relative_to(folder)
            link_or_copy(path, dest / rel.parent / f"r{r}_{rel.name}")
    return dest


def scaling(src: Path, factors: Sequence[int], tmp: Path, seed: int, repeats: int,
            graphs_dir: Path | None) -> list[ScalePoint]:
    """Cold advice per size: a fresh cache, holding the exported graph where there is one (the export is
    a one-time cost that does not depend on the dataset's size)."""
    pool = tmp / "replicas"
    with stopwatch() as elapsed:
        folders = build_replicas(src, pool, max(factors), seed)
    logger.info("built %d distinct replicas of %s in %.1f s", len(folders), src.name, elapsed())
    points = []
    for factor in factors:
        data = assemble(folders[:factor], tmp / f"{src.name}_x{factor}")
        point = ScalePoint(factor=factor, runs=[])
        for _ in range(repeats):
            cache_dir = (eb.graph_only_cache(graphs_dir, tmp, f"cache-x{factor}-") if graphs_dir is not None
                         else Path(tempfile.mkdtemp(prefix=f"cache-x{factor}-", dir=tmp)))
            run = run_cli(data, cache_dir, tmp)
            logger.info("%d×: %d images, scan %.2f s, total %.2f s, wall %.2f s", factor, run.n_images,
                        run.timings["scan"], run.timings["total"], run.wall_s)
            point.runs.append(run)
        points.append(point)
        shutil.rmtree(data, ignore_errors=True)
    return points


# --------------------------------------------------------------------------- report


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def cold_warm_table(rows: Sequence[ColdWarm]) -> list[str]:
    lines = [
        "| dataset | --engine (ran) | images | sampled | run | wall (s) | CPU (s) | in-process (s) | embed (s) "
        "| export (s) | peak RSS (MB) |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        runs = [("first-ever (export)", r.first)] if r.first else []
        runs += [("cold" + (" (graph cached)" if r.engine == "auto" else ""), r.cold), ("warm", r.warm)]
        for kind, run in runs:
            assert run is not None
            lines.append(
                f"| {r.dataset} | {r.engine} ({r.cold.engine}) | {run.n_images} | {run.sampled} | {kind} | "
                f"{run.wall_s:.2f} | {run.cpu_s:.1f} | {run.timings['total']:.2f} | "
                f"{run.timings.get('embed', 0.0):.2f} | {run.timings.get('export', 0.0):.2f} | {run.peak_rss_mb:.0f} |")
    return lines


def engine_summary(rows: Sequence[ColdWarm]) -> list[str]:
    """Per dataset: cold wall of ONNX Runtime (graph cached) against the PyTorch engine's, and memory."""
    by_key = {(r.dataset, r.engine): r for r in rows}
    lines = ["| dataset | cold torch (s) | cold auto (s) | torch / auto | first-ever auto (s) | cold/warm auto "
             "| peak RSS torch → auto (MB) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for dataset in dict.fromkeys(r.dataset for r in rows):
        auto, torch_ = by_key.get((dataset, "auto")), by_key.get((dataset, "torch"))
        if auto is None or torch_ is None or auto.first is None:
            continue
        lines.append(f"| {dataset} | {torch_.cold.wall_s:.2f} | {auto.cold.wall_s:.2f} | "
                     f"{torch_.cold.wall_s / auto.cold.wall_s:.1f}× | {auto.first.wall_s:.2f} | "
                     f"{auto.speedup:.1f}× | {torch_.cold.peak_rss_mb:.0f} → {auto.cold.peak_rss_mb:.0f} |")
    return lines


def throughput_table(t: Throughput) -> list[str]:
    labels = {
        "plain_w0": "plain ImageFolder + DataLoader(batch 32), num_workers=0",
        "plain_w2": "plain ImageFolder + DataLoader(batch 32), num_workers=2",
        "plain_w2_cl": "tuned plain loop: num_workers=2, model and input channels_last",
        "ours_torch": "tl-advise `embed()` = `embed_sample(TorchEngine)` (no cache, BN statistics)",
        "ours_onnx": f"tl-advise `embed_sample(OnnxEngine)` ({t.onnx_threads} threads; no cache, BN statistics)",
    }
    fair = t.pipelines[t.fair_baseline]
    lines = [f"| pipeline | best of {t.rounds} (s) | images/s | vs fair baseline | CPU s | images/CPU-s "
             "| per CPU-s vs fair |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for key, p in t.pipelines.items():
        mark = " (fair baseline)" if key == t.fair_baseline else ""
        lines.append(f"| {labels[key]}{mark} | {p.best_s:.2f} | {p.images_per_s:.1f} | "
                     f"{p.images_per_s / fair.images_per_s:.2f}× | {min(p.cpu_seconds):.1f} | "
                     f"{p.images_per_cpu_s:.1f} | {p.images_per_cpu_s / fair.images_per_cpu_s:.2f}× |")
    return lines


def scaling_table(points: Sequence[ScalePoint]) -> list[str]:
    base = points[0].run
    lines = ["| size | images | sampled | scan (s) | in-process total (s) | wall (s) | CPU (s) | total / 1× "
             "| wall / 1× |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for p in points:
        r = p.run
        lines.append(f"| {p.factor}× | {r.n_images} | {r.sampled} | {r.timings['scan']:.2f} | "
                     f"{r.timings['total']:.2f} | {r.wall_s:.2f} | {r.cpu_s:.1f} | "
                     f"{r.timings['total'] / base.timings['total']:.2f}× | {r.wall_s / base.wall_s:.2f}× |")
    return lines


def targets(results: dict[str, Any]) -> list[str]:
    lines = []
    rows: list[ColdWarm] = results["cold_warm"]
    auto = next((r for r in rows if r.dataset == "hymenoptera" and r.engine == "auto"), None)
    if auto is not None and auto.first is not None:
        lines.append(f"- #15: cold hymenoptera, exported graph cached, < {TARGET_ENGINE_COLD_S:.0f} s wall: "
                     f"{auto.cold.wall_s:.2f} s ({auto.cold.engine}) — "
                     f"{verdict(auto.cold.wall_s < TARGET_ENGINE_COLD_S)}")
        lines.append(f"- #15: first-ever run (export included) < {TARGET_FIRST_RUN_S:.0f} s: "
                     f"{auto.first.wall_s:.2f} s "
                     f"(export {auto.first.timings.get('export', 0.0):.1f} s) — "
                     f"{verdict(auto.first.wall_s < TARGET_FIRST_RUN_S)}")
        worst = max(rows, key=lambda r: r.cold.peak_rss_mb if r.engine == "auto" else 0.0)
        lines.append(f"- #15: peak RSS of a cold advice < {TARGET_COLD_RSS_MB:.0f} MB: hymenoptera "
                     f"{auto.cold.peak_rss_mb:.0f} MB, largest over datasets {worst.cold.peak_rss_mb:.0f} MB "
                     f"({worst.dataset}) — {verdict(worst.cold.peak_rss_mb < TARGET_COLD_RSS_MB)}")
    t: Throughput | None = results.get("throughput")
    if t is not None:
        lines.append(f"- #15: embedding throughput ≥ {TARGET_ENGINE_THROUGHPUT_RATIO:.0f}× the tuned plain loop "
                     f"(fastest plain loop: {t.fair_baseline}): ONNX Runtime {t.ratio:.2f}× — "
                     f"{verdict(t.ratio >= TARGET_ENGINE_THROUGHPUT_RATIO)} (per CPU-second: {t.cpu_ratio:.2f}×)")
    checks: list[eb.SignalCheck] = results.get("signals") or []
    if checks:
        changed = [c.dataset for c in checks if not c.unchanged]
        lines.append(f"- #15: signals unchanged (|Δscore| < {eb.TARGET_SCORE_DELTA}, same label, strategy and "
                     f"warnings) on all {len(checks)} datasets: largest |Δscore| "
                     f"{max(c.score_delta for c in checks):.1e}"
                     + (f", changed: {', '.join(changed)}" if changed else "") + f" — {verdict(not changed)}")
    imports: eb.ImportReport | None = results.get("imports")
    if imports is not None:
        lines.append(f"- #15: no torch/torchvision/timm import in a cold advice with the graph cached: "
                     f"{', '.join(imports.torch_loaded) or 'none imported'} — {verdict(not imports.torch_loaded)}")
    hym = next((r for r in rows if r.dataset == "hymenoptera" and r.engine == "auto"), None)
    if hym is not None:
        first = hym.first or hym.cold
        lines.append(f"- #2: cold hymenoptera (fresh cache, export included) < {TARGET_COLD_S:.0f} s: "
                     f"{first.wall_s:.1f} s — {verdict(first.wall_s < TARGET_COLD_S)}")
        lines.append(f"- #2: warm hymenoptera < {TARGET_WARM_S:.0f} s: {hym.warm.wall_s:.2f} s — "
                     f"{verdict(hym.warm.wall_s < TARGET_WARM_S)}")
    if t is not None:
        torch_ratio = t.ratio_of("ours_torch")
        lines.append(f"- #2: embedding throughput ≥ {TARGET_THROUGHPUT_RATIO}× the fair plain loop "
                     f"({t.fair_baseline}): PyTorch engine {torch_ratio:.2f}×, ONNX Runtime {t.ratio:.2f}× — "
                     f"{verdict(t.ratio >= TARGET_THROUGHPUT_RATIO)}")
    points: list[ScalePoint] = results.get("scaling") or []
    if len(points) > 1:
        ratio = points[-1].run.timings["total"] / points[0].run.timings["total"]
        lines.append(f"- #2: advise total {points[-1].factor}× / 1× ≤ {TARGET_SCALE_RATIO} (nearly flat): "
                     f"{ratio:.2f}× — {verdict(ratio <= TARGET_SCALE_RATIO)}")
    return lines


def load_note(results: dict[str, Any]) -> str:
    loads = [r.other_load for cw in results["cold_warm"] for r in (*cw.firsts, *cw.colds, *cw.warms)]
    t: Throughput | None = results.get("throughput")
    if t is not None:
        loads += [v for p in t.pipelines.values() for v in p.other_load]
    loads += [r.other_load for p in results.get("scaling") or [] for r in p.runs]
    worst = max(loads, default=0.0)
    state = "a quiet machine" if worst < 0.5 else "a shared, busy machine: absolute times inflated, ratios less so"
    return (f"Other runnable processes just before each measurement: at most {worst:.1f} on "
            f"{results['machine']['cpu_count']} cores ({state}).")


def markdown(results: dict[str, Any]) -> str:
    facts, repeats = results["machine"], results["settings"]["repeats"]
    out = [f"## tl-advise speed — {facts['cpu_count']} CPU cores, no GPU, torch {facts['torch']}, "
           f"{facts['date'][:10]}", ""]
    if results["cold_warm"]:
        out += ["### Cold vs warm advise, per engine", "",
                "`python -m tl_advise.cli DATA --format json -q --cache-dir D --engine E` in a fresh subprocess "
                "(wall includes interpreter start and imports). `auto` (ONNX Runtime here): first-ever = fresh D, "
                "so the run exports the graph; cold = a fresh D holding only that exported graph; warm = the "
                "same D again. `torch`: cold = fresh D, then warm. Fastest of "
                f"{repeats}. In-process = the report's `timings.total`. Peak RSS = `ru_maxrss` of the CLI "
                "process from `wait4`: the PyTorch engine's DataLoader workers are separate processes and are "
                "not summed in (the value is the largest single process).",
                "", *cold_warm_table(results["cold_warm"]), "", *engine_summary(results["cold_warm"]), ""]
    t: Throughput | None = results.get("throughput")
    if t is not None:
        out += [f"### Embedding throughput — {t.n_images} images of {t.dataset}, efficientnet_lite0, CPU", "",
                *throughput_table(t), "",
                f"Fair baseline = the fastest plain loop ({t.fair_baseline}); best of {t.rounds} interleaved "
                f"rounds; both engines ran with {t.embed_cache} and the advice's default DataLoader workers / "
                "decode threads; the ONNX graph was exported before, untimed. ImageNet top-1 agreement with the "
                f"plain loop: ONNX Runtime {100 * t.top1_agreement:.1f}%, PyTorch engine "
                f"{100 * t.top1_agreement_torch:.1f}% (JPEG draft mode decodes at reduced scale, so pixels "
                "differ slightly).",
                *eb.breakdown_table(t.breakdown_ms_per_image, t.breakdown_images), ""]
    out += eb.markdown_sections(results)
    if results.get("scaling"):
        out += [f"### Advise time vs dataset size — {SCALE_DATASET} replicated (distinct bytes, same pixels), "
                f"fresh cache holding the exported graph, fastest of {repeats}", "",
                *scaling_table(results["scaling"]), ""]
    out += ["### Targets", "", *targets(results), "", load_note(results), ""]
    return "\n".join(out)


def to_json(results: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"provenance": results["provenance"], "machine": results["machine"],
                           "settings": results["settings"]}
    out["cold_warm"] = [{**asdict(r), "best_cold_wall_s": r.cold.wall_s, "best_warm_wall_s": r.warm.wall_s,
                         "best_first_wall_s": r.first.wall_s if r.first else None,
                         "cold_peak_rss_mb": r.cold.peak_rss_mb, "cold_over_warm": round(r.speedup, 2)}
                        for r in results["cold_warm"]]
    t: Throughput | None = results.get("throughput")
    if t is not None:
        out["throughput"] = {
            **asdict(t), "ratio_ours_over_fair_baseline": round(t.ratio, 3),
            "cpu_ratio_ours_over_fair_baseline": round(t.cpu_ratio, 3),
            "ratio_over_fair_baseline": {k: round(t.ratio_of(k), 3) for k in t.pipelines},
            "cpu_ratio_over_fair_baseline": {k: round(t.cpu_ratio_of(k), 3) for k in t.pipelines},
            "images_per_s": {k: round(p.images_per_s, 2) for k, p in t.pipelines.items()},
            "images_per_cpu_s": {k: round(p.images_per_cpu_s, 2) for k, p in t.pipelines.items()},
        }
    points: list[ScalePoint] = results.get("scaling") or []
    out["scaling"] = [{**asdict(p), "best_total_s": p.run.timings["total"], "best_scan_s": p.run.timings["scan"],
                       "best_wall_s": p.run.wall_s} for p in points]
    if len(points) > 1:
        out["scaling_ratio_total"] = round(points[-1].run.timings["total"] / points[0].run.timings["total"], 3)
        out["scaling_ratio_wall"] = round(points[-1].run.wall_s / points[0].run.wall_s, 3)
    out.update(eb.json_sections(results))
    out["targets"] = targets(results)
    out["elapsed_s"] = results["elapsed_s"]
    return out


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--datasets", nargs="+", metavar="NAME",
                        help=f"shared datasets for cold/warm (default: all present of {', '.join(ALL_DATASETS)})")
    parser.add_argument("--shared", help="folder holding data/ ($TL_ADVISE_SHARED, default ../shared)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results", help="results folder")
    parser.add_argument("--quick", action="store_true",
                        help="~6 min: hymenoptera only (signals and decode: two datasets, 32 images), throughput on "
                             "the 128-image sample, sizes 1× and 4×")
    parser.add_argument("--rounds", type=int, default=2, help="throughput rounds per pipeline (best is kept)")
    parser.add_argument("--repeats", type=int,
                        help="cold/warm pairs per dataset and cold runs per size, best kept (default 2; quick 1)")
    parser.add_argument("--sizes", type=int, nargs="+", help="replication factors (default 1 4 16; quick 1 4)")
    parser.add_argument("--skip", nargs="+", choices=SECTIONS, default=[], help="parts to leave out")
    parser.add_argument("--signal-datasets", nargs="+", metavar="NAME",
                        help="datasets for the signals and decode parts (default: all present of "
                             f"{', '.join(eb.SIGNAL_DATASETS)}; quick: {', '.join(eb.QUICK_SIGNAL_DATASETS)})")
    parser.add_argument("--breakdown-images", type=int, default=64,
                        help="images for the decode/forward breakdown (0: none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                        help="before each measurement wait up to this long for other processes to go idle")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser.parse_args(argv)


def select_datasets(shared: Path, args: argparse.Namespace, signals: bool = False) -> list[str]:
    if signals:
        wanted = args.signal_datasets or (eb.QUICK_SIGNAL_DATASETS if args.quick else eb.SIGNAL_DATASETS)
    else:
        wanted = args.datasets or (QUICK_DATASETS if args.quick else ALL_DATASETS)
    present = [n for n in wanted if dataset_path(shared, n).is_dir()]
    for name in sorted(set(wanted) - set(present)):
        logger.warning("dataset %s is absent under %s; skipped", name, shared / "data")
    return present


def run_all(args: argparse.Namespace, shared: Path, names: list[str], tmp: Path) -> dict[str, Any]:
    sizes = sorted(set(args.sizes or ([1, 4] if args.quick else [1, 4, 16])))
    repeats = args.repeats or (1 if args.quick else 2)
    signal_names = select_datasets(shared, args, signals=True)
    decode_images = eb.QUICK_DECODE_IMAGES if args.quick else eb.DECODE_IMAGES
    results: dict[str, Any] = {
        "machine": machine_facts(),
        "provenance": provenance(__file__),
        "settings": {"quick": args.quick, "datasets": names, "rounds": args.rounds, "sizes": sizes, "repeats": repeats,
                     "shared": str(shared), "batch_size": BATCH_SIZE, "seed": args.seed,
                     "wait_quiet_s": args.wait_quiet, "signal_datasets": signal_names,
                     "decode_images": decode_images, "decode_rounds": args.rounds, "skip": args.skip,
                     "cold_means": "fresh subprocess + fresh --cache-dir; OS page cache warm (imports primed)"},
        "cold_warm": [],
    }
    prime_imports(tmp)
    if "coldwarm" not in args.skip:
        results["cold_warm"] = [row for n in names for row in cold_warm(n, dataset_path(shared, n), tmp, repeats)]
    hym = dataset_path(shared, THROUGHPUT_DATASET)
    needs_graph = {"throughput", "scaling", "signals", "runtimes", "imports"} - set(args.skip)
    graph = eb.export_default_graph(tmp) if needs_graph and hym.is_dir() else None
    if graph is not None:
        results["graph"] = {"file": graph.onnx_path.name, "export_s_in_process": graph.export_s,
                            "max_error_vs_eager": graph.max_error}
    if "throughput" not in args.skip and graph is not None:
        results["throughput"] = throughput(hym, tmp, graph, sample_only=args.quick, rounds=args.rounds,
                                           breakdown_n=args.breakdown_images)
    if "scaling" not in args.skip and hym.is_dir():
        results["scaling"] = scaling(hym, sizes, tmp, args.seed, repeats, graph.graphs_dir if graph else None)
    signal_sets = [(n, dataset_path(shared, n)) for n in signal_names]
    if "signals" not in args.skip and graph is not None:
        results["signals"] = eb.signal_checks(signal_sets, graph, tmp)
    if "runtimes" not in args.skip and graph is not None:
        inputs = throughput_inputs(hym, sample_only=True)
        batch = eb.runtime_batch(inputs.records, graph.engine.info.preprocessing, tmp / "runtime-batch.npy")
        results["runtimes"] = eb.compare_runtimes(graph, batch, tmp, env=clean_env(), settle=settle)
    if "decode" not in args.skip and signal_sets:
        from tl_advise.advisor.measure.images.backbones import load_backbone

        pre = (graph.engine.info if graph is not None else load_backbone("efficientnet_lite0")).preprocessing
        results["decode"] = eb.decode_options(signal_sets, pre, n=decode_images, seed=args.seed, rounds=args.rounds,
                                              settle=settle)
    if "imports" not in args.skip and graph is not None:
        results["imports"] = eb.import_times(hym, graph.graphs_dir, tmp, clean_env())
    results["machine"]["load_average_at_end"] = list(os.getloadavg())
    return results


def write_results(results: dict[str, Any], out: Path, quick: bool) -> str:
    out.mkdir(parents=True, exist_ok=True)
    stem = "advise_speed_quick" if quick else "advise_speed"
    table = markdown(results)
    (out / f"{stem}.json").write_text(json.dumps(to_json(results), indent=2) + "\n")
    (out / f"{stem}.md").write_text(table)
    logger.info("wrote %s and %s", out / f"{stem}.json", out / f"{stem}.md")
    return table


def main(argv: Sequence[str] | None = None) -> int:
    global QUIET_WAIT_S
    args = parse_args(argv)
    QUIET_WAIT_S = args.wait_quiet
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("tl_advise").setLevel(logging.WARNING)
    shared = shared_dir(args.shared)
    if not (shared / "data").is_dir():
        logger.error("shared datasets not found: %s does not exist. Pass --shared or set TL_ADVISE_SHARED "
                     "to the folder that holds data/<dataset>/", shared / "data")
        return EXIT_NO_DATA
    names = select_datasets(shared, args)
    if not names and not dataset_path(shared, THROUGHPUT_DATASET).is_dir():
        logger.error("none of the requested datasets is present under %s", shared / "data")
        return EXIT_NO_DATA
    with stopwatch() as elapsed, tempfile.TemporaryDirectory(prefix="tl-advise-bench-") as tmp:
        results = run_all(args, shared, names, Path(tmp))
        results["elapsed_s"] = round(elapsed(), 1)
    table = write_results(results, args.out, args.quick)
    print(table)
    logger.info("benchmark took %.0f s", results["elapsed_s"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
