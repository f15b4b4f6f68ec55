"""How fast is ``tl-advise``? Cold vs warm runs, embedding throughput vs a plain loop, and scaling.

Every speed claim is a ratio against a baseline measured in the same run on the same machine:

a. cold vs warm: ``python -m tl_advise.cli DATA --format json -q --cache-dir <fresh>`` in a fresh
   subprocess (the import time a user pays is included), then the same command again (warm).
b. embedding throughput: the same images and the same efficientnet_lite0 through a plain torchvision
   ``ImageFolder`` + ``DataLoader(batch_size=32)`` + ``model(x)`` loop, and through ``embed()``.
c. advise time vs dataset size: hymenoptera replicated 1×, 4×, 16× (distinct bytes, same pixels).

Run ``.venv/bin/python benchmarks/bench_advise.py`` (about 6–8 min on 2 cores) or add ``--quick``
(about 2 min). Results go to ``benchmarks/results/advise_speed{,_quick}.{json,md}``; the Markdown table
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


# --------------------------------------------------------------------------- result records


@dataclass
class CliRun:
    """One ``tl-advise`` subprocess: wall time as the user sees it, plus what the JSON report says."""

    wall_s: float
    cpu_s: float  # user + system of the CLI and its DataLoader workers
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
    """``repeats`` pairs (fresh cache, then the same cache); the fastest cold and warm run are reported."""

    dataset: str
    colds: list[CliRun]
    warms: list[CliRun]

    @property
    def cold(self) -> CliRun:
        return min(self.colds, key=lambda r: r.wall_s)

    @property
    def warm(self) -> CliRun:
        return min(self.warms, key=lambda r: r.wall_s)

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
    top1_agreement: float  # ours vs baseline ImageNet argmax, same images
    embed_cache: str
    breakdown_ms_per_image: dict[str, float] = field(default_factory=dict)
    breakdown_images: int = 0

    @property
    def ratio(self) -> float:
        return self.pipelines["ours"].images_per_s / self.pipelines[self.fair_baseline].images_per_s

    @property
    def cpu_ratio(self) -> float:
        return self.pipelines["ours"].images_per_cpu_s / self.pipelines[self.fair_baseline].images_per_cpu_s


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


def advise_command(data: Path, cache_dir: Path) -> list[str]:
    return [sys.executable, "-m", "tl_advise.cli", str(data), "--format", "json", "-q",
            "--cache-dir", str(cache_dir)]


def run_cli(data: Path, cache_dir: Path, workdir: Path) -> CliRun:
    """Run tl-advise in a fresh interpreter (cwd without a pyproject.toml) and parse its JSON report."""
    cmd = advise_command(data, cache_dir)
    load = settle()
    with stopwatch() as elapsed, cpu_watch() as cpu:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir, env=clean_env(), timeout=600,
                              check=False)
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    if proc.stderr.strip():
        logger.debug("tl-advise stderr: %s", proc.stderr.strip())
    report = json.loads(proc.stdout)
    return CliRun(
        wall_s=round(elapsed(), 3), cpu_s=round(cpu(), 3), timings=report["timings"],
        n_images=report["dataset"]["n_images"],
        sampled=report["sample"]["n_images"], forward_passes=report["sample"]["forward_passes"],
        cache_hits=report["sample"]["cache_hits"], duplicate_groups=len(report["dataset"]["duplicates"]),
        skipped=len(report["dataset"]["skipped"]), strategy=report["recommendation"]["strategy"],
        other_load=load,
    )


def prime_imports(workdir: Path) -> None:
    """Load the heavy libraries once (untimed) so the first cold run does not also pay a cold OS page cache."""
    code = "import torch, torchvision, timm, sklearn, tl_advise.advisor.embed, tl_advise.advisor.similarity"
    subprocess.run([sys.executable, "-c", code], cwd=workdir, env=clean_env(), check=True, timeout=300)


def cold_warm(name: str, data: Path, tmp: Path, repeats: int) -> ColdWarm:
    result = ColdWarm(dataset=name, colds=[], warms=[])
    for _ in range(repeats):
        cache_dir = Path(tempfile.mkdtemp(prefix=f"cache-{name}-", dir=tmp))
        cold = run_cli(data, cache_dir, tmp)
        warm = run_cli(data, cache_dir, tmp)
        logger.info("%s: cold %.2f s (in-process %.2f s, %d forward passes), warm %.2f s (%d cache hits)",
                    name, cold.wall_s, cold.timings["total"], cold.forward_passes, warm.wall_s, warm.cache_hits)
        result.colds.append(cold)
        result.warms.append(warm)
    return result


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

    from tl_advise.advisor.sampling import stratified_sample, without_duplicates
    from tl_advise.advisor.scan import scan_dataset

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


def run_plain(model: Any, dataset: Any, workers: int) -> tuple[float, float, list[int]]:
    """The loop a user would write; returns (seconds, CPU seconds, ImageNet argmax per image in order)."""
    import torch
    from torch.utils.data import DataLoader

    top1: list[int] = []
    with stopwatch() as elapsed, cpu_watch() as cpu, torch.inference_mode():
        for x, _ in DataLoader(dataset, batch_size=BATCH_SIZE, num_workers=workers):
            top1.extend(model(x).argmax(-1).tolist())
    return elapsed(), cpu(), top1


def disabled_cache_works() -> bool:
    """Whether ``ArrayCache(None)`` accepts writes (a disabled cache must ignore them, not raise)."""
    from tl_advise.advisor.cache import ArrayCache

    try:
        ArrayCache(None).save("probe", "probe", {})
    except (AssertionError, TypeError) as exc:
        logger.warning("ArrayCache(None).save raises %s (it also breaks `tl-advise --no-cache`); timing embed() "
                       "with an empty cache in a fresh temporary folder instead", type(exc).__name__)
        return False
    return True


def empty_cache(tmp: Path) -> Any:
    """No cached rows: ``ArrayCache(None)`` if it works, else a fresh, empty cache folder (writes included)."""
    from tl_advise.advisor.cache import ArrayCache

    return ArrayCache(None) if disabled_cache_works() else ArrayCache(Path(tempfile.mkdtemp(prefix="embed-", dir=tmp)))


def run_ours(backbone: Any, inputs: ThroughputInputs, tmp: Path) -> tuple[float, float, dict[str, int]]:
    """``embed()`` with no cached rows and BN statistics: what a cold advise pays for the forward pass."""
    import torch

    from tl_advise.advisor.embed import embed

    cache = empty_cache(tmp)
    with stopwatch() as elapsed, cpu_watch() as cpu:
        emb = embed(backbone, inputs.records, root=inputs.root, device=torch.device("cpu"),
                    cache=cache, collect_bn=True, batch_size=BATCH_SIZE)
    if emb.failed or emb.bn is None:
        raise RuntimeError(f"embed() failed on {len(emb.failed)} images or gave no BN statistics")
    return elapsed(), cpu(), {os.path.abspath(r.path): int(t) for r, t in zip(emb.records, emb.top1, strict=True)}


def sample_paths(dataset: Any) -> list[str]:
    return [os.path.abspath(path) for part in dataset.datasets for path, _ in part.samples]


def throughput(data: Path, tmp: Path, *, sample_only: bool, rounds: int, breakdown_n: int) -> Throughput:
    from torch import nn

    from tl_advise.advisor.backbones import load_backbone

    inputs = throughput_inputs(data, sample_only)
    plain_net = load_backbone("efficientnet_lite0").eval()
    plain_model = nn.Sequential(plain_net.body, plain_net.head).eval()
    ours_net = load_backbone("efficientnet_lite0")  # a second copy: embed() makes its body channels_last
    dataset = plain_dataset(inputs, plain_transform(plain_net.preprocessing))
    if len(dataset) != len(inputs.records):
        raise RuntimeError(f"ImageFolder found {len(dataset)} images, the advisor {len(inputs.records)}")

    pipelines = {name: PipelineTiming(name, [], len(dataset)) for name in ("plain_w0", "plain_w2", "ours")}
    plain_top1: list[int] = []
    ours_top1: dict[str, int] = {}
    for round_ in range(rounds):  # interleaved, so drift in machine load hits every pipeline alike
        for workers in (0, 2):
            pipelines[f"plain_w{workers}"].other_load.append(settle())
            seconds, cpu_s, plain_top1 = run_plain(plain_model, dataset, workers)
            pipelines[f"plain_w{workers}"].seconds.append(round(seconds, 3))
            pipelines[f"plain_w{workers}"].cpu_seconds.append(round(cpu_s, 3))
        pipelines["ours"].other_load.append(settle())
        seconds, cpu_s, ours_top1 = run_ours(ours_net, inputs, tmp)
        pipelines["ours"].seconds.append(round(seconds, 3))
        pipelines["ours"].cpu_seconds.append(round(cpu_s, 3))
        logger.info("throughput round %d: %s", round_ + 1,
                    ", ".join(f"{p.name} {p.seconds[-1]:.2f} s" for p in pipelines.values()))

    paths = sample_paths(dataset)
    agreement = sum(ours_top1[p] == t for p, t in zip(paths, plain_top1, strict=True)) / len(paths)
    fair = "plain_w2" if pipelines["plain_w2"].best_s <= pipelines["plain_w0"].best_s else "plain_w0"
    result = Throughput(dataset=data.name, n_images=len(dataset), rounds=rounds, pipelines=pipelines,
                        fair_baseline=fair, top1_agreement=round(agreement, 4),
                        embed_cache="ArrayCache(None)" if disabled_cache_works()
                        else "a fresh, empty cache folder (ArrayCache(None).save raises)")
    if breakdown_n > 0:
        settle()
        result.breakdown_images = min(breakdown_n, len(dataset))
        result.breakdown_ms_per_image = breakdown(plain_model, ours_net, dataset, paths[:result.breakdown_images])
    return result


# --------------------------------------------------------------------------- b'. where the time goes


def time_per_item(items: Sequence[Any], fn: Callable[[Any], Any]) -> tuple[float, list[Any]]:
    """Milliseconds per item of ``fn`` run serially in this process, and its outputs."""
    with stopwatch() as elapsed:
        out = [fn(item) for item in items]
    return 1000 * elapsed() / max(len(items), 1), out


def time_forward(batches: Sequence[Any], forward: Callable[[Any], Any]) -> float:
    """Milliseconds per image of ``forward`` over ``batches`` (after one untimed warm-up batch)."""
    import torch

    with torch.inference_mode():
        forward(batches[0])
        with stopwatch() as elapsed:
            for batch in batches:
                forward(batch)
    return 1000 * elapsed() / sum(len(b) for b in batches)


def breakdown(plain_model: Any, ours_net: Any, dataset: Any, paths: list[str]) -> dict[str, float]:
    """Serial (one process) decode+transform cost and batched forward cost, ours vs the plain loop."""
    import torch
    from torchvision.datasets.folder import default_loader

    from tl_advise.advisor.embed import _BNRecorder  # the hooks embed() installs to collect BN statistics
    from tl_advise.advisor.imaging import eval_transform, open_rgb, pixel_baseline

    pre = ours_net.preprocessing
    ours_tf, plain_tf = eval_transform(pre), plain_transform(pre)

    def ours_decode(path: str) -> Any:
        img = open_rgb(path, draft_size=pre.resize_size)  # JPEG DCT-domain downscale
        pixel_baseline(img)
        return ours_tf(img)

    ms: dict[str, float] = {}
    ms["plain_decode_transform"], plain_x = time_per_item(paths, lambda p: plain_tf(default_loader(p)))
    ms["ours_decode_transform"], ours_x = time_per_item(paths, ours_decode)
    plain_batches = [torch.stack(plain_x[i:i + BATCH_SIZE]) for i in range(0, len(plain_x), BATCH_SIZE)]
    ours_batches = [torch.stack(ours_x[i:i + BATCH_SIZE]).contiguous(memory_format=torch.channels_last)
                    for i in range(0, len(ours_x), BATCH_SIZE)]
    ms["plain_forward"] = time_forward(plain_batches, plain_model)
    ms["ours_forward_no_bn_hooks"] = time_forward(ours_batches, lambda x: ours_net.head(ours_net.body(x)))
    recorder = _BNRecorder(ours_net.batchnorm_layers())
    try:
        ms["ours_forward_with_bn_hooks"] = time_forward(ours_batches, lambda x: ours_net.head(ours_net.body(x)))
    finally:
        recorder.remove()
    del dataset
    return {k: round(v, 2) for k, v in ms.items()}


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


def scaling(src: Path, factors: Sequence[int], tmp: Path, seed: int, repeats: int) -> list[ScalePoint]:
    pool = tmp / "replicas"
    with stopwatch() as elapsed:
        folders = build_replicas(src, pool, max(factors), seed)
    logger.info("built %d distinct replicas of %s in %.1f s", len(folders), src.name, elapsed())
    points = []
    for factor in factors:
        data = assemble(folders[:factor], tmp / f"{src.name}_x{factor}")
        point = ScalePoint(factor=factor, runs=[])
        for _ in range(repeats):
            cache_dir = Path(tempfile.mkdtemp(prefix=f"cache-x{factor}-", dir=tmp))
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
        "| dataset | images | sampled | cold wall (s) | cold CPU (s) | cold in-process (s) | embed (s) "
        "| warm wall (s) | warm in-process (s) | cold / warm |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.dataset} | {r.cold.n_images} | {r.cold.sampled} | {r.cold.wall_s:.2f} | {r.cold.cpu_s:.1f} | "
            f"{r.cold.timings['total']:.2f} | {r.cold.timings.get('embed', 0.0):.2f} | {r.warm.wall_s:.2f} | "
            f"{r.warm.timings['total']:.2f} | {r.speedup:.1f}× |")
    return lines


def throughput_table(t: Throughput) -> list[str]:
    labels = {
        "plain_w0": "plain ImageFolder + DataLoader(batch 32), num_workers=0",
        "plain_w2": "plain ImageFolder + DataLoader(batch 32), num_workers=2",
        "ours": "tl-advise `embed()` (no cache, BN statistics)",
    }
    fair = t.pipelines[t.fair_baseline]
    lines = [f"| pipeline | best of {t.rounds} (s) | images/s | vs fair baseline | CPU s | images/CPU-s |",
             "|---|---:|---:|---:|---:|---:|"]
    for key, p in t.pipelines.items():
        mark = " (fair baseline)" if key == t.fair_baseline else ""
        lines.append(f"| {labels[key]}{mark} | {p.best_s:.2f} | {p.images_per_s:.1f} | "
                     f"{p.images_per_s / fair.images_per_s:.2f}× | {min(p.cpu_seconds):.1f} | "
                     f"{p.images_per_cpu_s:.1f} |")
    return lines


def breakdown_table(t: Throughput) -> list[str]:
    b = t.breakdown_ms_per_image
    if not b:
        return []
    return [
        "",
        f"Where the time goes (ms per image, one process, first {t.breakdown_images} images; "
        "forward in batches of 32):",
        "",
        "| step | plain loop | tl-advise |",
        "|---|---:|---:|",
        f"| decode + resize/crop/normalise | {b['plain_decode_transform']:.1f} | "
        f"{b['ours_decode_transform']:.1f} (JPEG draft mode, + 32×32 pixel baseline) |",
        f"| forward (body + head) | {b['plain_forward']:.1f} | {b['ours_forward_no_bn_hooks']:.1f} "
        f"(channels_last); {b['ours_forward_with_bn_hooks']:.1f} with BN-statistics hooks |",
    ]


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
    hym = next((r for r in results["cold_warm"] if r.dataset == "hymenoptera"), None)
    if hym is not None:
        lines.append(f"- cold hymenoptera < {TARGET_COLD_S:.0f} s: {hym.cold.wall_s:.1f} s — "
                     f"{verdict(hym.cold.wall_s < TARGET_COLD_S)}")
        lines.append(f"- warm hymenoptera < {TARGET_WARM_S:.0f} s: {hym.warm.wall_s:.2f} s — "
                     f"{verdict(hym.warm.wall_s < TARGET_WARM_S)}")
    t: Throughput | None = results.get("throughput")
    if t is not None:
        lines.append(f"- embedding throughput ≥ {TARGET_THROUGHPUT_RATIO}× the fair plain loop "
                     f"({t.fair_baseline}): {t.ratio:.2f}× — {verdict(t.ratio >= TARGET_THROUGHPUT_RATIO)} "
                     f"(per CPU-second: {t.cpu_ratio:.2f}×)")
    points: list[ScalePoint] = results.get("scaling") or []
    if len(points) > 1:
        ratio = points[-1].run.timings["total"] / points[0].run.timings["total"]
        lines.append(f"- advise total {points[-1].factor}× / 1× ≤ {TARGET_SCALE_RATIO} (nearly flat): "
                     f"{ratio:.2f}× — {verdict(ratio <= TARGET_SCALE_RATIO)}")
    return lines


def load_note(results: dict[str, Any]) -> str:
    loads = [r.other_load for cw in results["cold_warm"] for r in (*cw.colds, *cw.warms)]
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
        out += ["### Cold vs warm advise", "",
                "`python -m tl_advise.cli DATA --format json -q --cache-dir <fresh dir>` in a fresh "
                "subprocess (wall includes interpreter start and imports), then the same command again (warm); "
                f"fastest of {repeats}. In-process = the report's `timings.total`.",
                "", *cold_warm_table(results["cold_warm"]), ""]
    t: Throughput | None = results.get("throughput")
    if t is not None:
        out += [f"### Embedding throughput — {t.n_images} images of {t.dataset}, efficientnet_lite0, CPU", "",
                *throughput_table(t), "",
                f"Fair baseline = the faster plain loop ({t.fair_baseline}); best of {t.rounds} interleaved rounds; "
                f"`embed()` ran with {t.embed_cache}. ImageNet top-1 agreement, tl-advise vs plain loop: "
                f"{100 * t.top1_agreement:.1f}% (JPEG draft mode decodes at reduced scale, so pixels differ "
                "slightly).",
                *breakdown_table(t), ""]
    if results.get("scaling"):
        out += [f"### Advise time vs dataset size — {SCALE_DATASET} replicated (distinct bytes, same pixels), "
                f"fresh cache, fastest of {repeats}", "", *scaling_table(results["scaling"]), ""]
    out += ["### Targets", "", *targets(results), "", load_note(results), ""]
    return "\n".join(out)


def to_json(results: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"machine": results["machine"], "settings": results["settings"]}
    out["cold_warm"] = [{**asdict(r), "best_cold_wall_s": r.cold.wall_s, "best_warm_wall_s": r.warm.wall_s,
                         "cold_over_warm": round(r.speedup, 2)} for r in results["cold_warm"]]
    t: Throughput | None = results.get("throughput")
    if t is not None:
        out["throughput"] = {
            **asdict(t), "ratio_ours_over_fair_baseline": round(t.ratio, 3),
            "cpu_ratio_ours_over_fair_baseline": round(t.cpu_ratio, 3),
            "images_per_s": {k: round(p.images_per_s, 2) for k, p in t.pipelines.items()},
            "images_per_cpu_s": {k: round(p.images_per_cpu_s, 2) for k, p in t.pipelines.items()},
        }
    points: list[ScalePoint] = results.get("scaling") or []
    out["scaling"] = [{**asdict(p), "best_total_s": p.run.timings["total"], "best_scan_s": p.run.timings["scan"],
                       "best_wall_s": p.run.wall_s} for p in points]
    if len(points) > 1:
        out["scaling_ratio_total"] = round(points[-1].run.timings["total"] / points[0].run.timings["total"], 3)
        out["scaling_ratio_wall"] = round(points[-1].run.wall_s / points[0].run.wall_s, 3)
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
                        help="~2 min: hymenoptera only, throughput on the 128-image sample, sizes 1× and 4×")
    parser.add_argument("--rounds", type=int, default=2, help="throughput rounds per pipeline (best is kept)")
    parser.add_argument("--repeats", type=int,
                        help="cold/warm pairs per dataset and cold runs per size, best kept (default 2; quick 1)")
    parser.add_argument("--sizes", type=int, nargs="+", help="replication factors (default 1 4 16; quick 1 4)")
    parser.add_argument("--skip", nargs="+", choices=("coldwarm", "throughput", "scaling"), default=[],
                        help="parts to leave out")
    parser.add_argument("--breakdown-images", type=int, default=64,
                        help="images for the decode/forward breakdown (0: none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                        help="before each measurement wait up to this long for other processes to go idle")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser.parse_args(argv)


def select_datasets(shared: Path, args: argparse.Namespace) -> list[str]:
    wanted = args.datasets or (QUICK_DATASETS if args.quick else ALL_DATASETS)
    present = [n for n in wanted if dataset_path(shared, n).is_dir()]
    for name in sorted(set(wanted) - set(present)):
        logger.warning("dataset %s is absent under %s; skipped", name, shared / "data")
    return present


def run_all(args: argparse.Namespace, shared: Path, names: list[str], tmp: Path) -> dict[str, Any]:
    sizes = sorted(set(args.sizes or ([1, 4] if args.quick else [1, 4, 16])))
    repeats = args.repeats or (1 if args.quick else 2)
    results: dict[str, Any] = {
        "machine": machine_facts(),
        "provenance": provenance(__file__),
        "settings": {"quick": args.quick, "datasets": names, "rounds": args.rounds, "sizes": sizes, "repeats": repeats,
                     "shared": str(shared), "batch_size": BATCH_SIZE, "seed": args.seed,
                     "wait_quiet_s": args.wait_quiet,
                     "cold_means": "fresh subprocess + fresh --cache-dir; OS page cache warm (imports primed)"},
        "cold_warm": [],
    }
    prime_imports(tmp)
    if "coldwarm" not in args.skip:
        results["cold_warm"] = [cold_warm(n, dataset_path(shared, n), tmp, repeats) for n in names]
    hym = dataset_path(shared, THROUGHPUT_DATASET)
    if "throughput" not in args.skip and hym.is_dir():
        results["throughput"] = throughput(hym, tmp, sample_only=args.quick, rounds=args.rounds,
                                           breakdown_n=args.breakdown_images)
    if "scaling" not in args.skip and hym.is_dir():
        results["scaling"] = scaling(hym, sizes, tmp, args.seed, repeats)
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
