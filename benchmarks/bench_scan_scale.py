"""Does the scan keep up with a million files? Synthetic trees of small images, timed in fresh processes.

For each size (default 1,000 / 10,000 / 100,000 files; add 1,000,000 with ``--sizes``) it

1. builds ``<tmp>/train|val/<class>/<shard>/<n>.jpg|png`` under the system temp dir: valid tiny JPEG and
   PNG files, every one with distinct bytes (a comment segment / tEXt chunk carries its index and a
   variable-length padding, so byte sizes spread like real files and most files share their size with
   others), a byte-identical copy every ``DUPLICATE_EVERY`` files, some of them across splits;
2. drops the OS page cache (root only: ``sync; echo 3 > /proc/sys/vm/drop_caches``; when that is refused
   the results say "warm page cache"), re-reads the Python libraries untimed so only the dataset is cold;
3. times ``scan_dataset`` alone in a fresh interpreter (wall, CPU, peak RSS of that child, per-step timers);
4. drops the cache again and times the whole advice: ``python -m tl_advise.cli DATA --format json
   -q --cache-dir <fresh>`` (wall, CPU, peak RSS, the report's timings and how many headers it audited);
5. deletes the tree before building the next one, so the disk holds one tree at a time.

``--profile N`` also runs cProfile over the scan of the N-file tree and records the top functions.
Trees live in a temporary folder that is removed at the end, on an error and on Ctrl-C / SIGTERM.

    nice -n 10 .venv/bin/python benchmarks/bench_scan_scale.py --profile 100000
    nice -n 10 .venv/bin/python benchmarks/bench_scan_scale.py --sizes 1000 10000 100000 1000000

Results: ``benchmarks/results/scan_scale.{json,md}`` (``--out``), with the command, git commit and machine.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import logging
import os
import platform
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
from PIL import Image

logger = logging.getLogger("bench_scan_scale")

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SIZES = (1_000, 10_000, 100_000)
# 2 classes: the default sample is 2 × 64 images, as on hymenoptera, so the size-independent part of the
# advice (imports, the forward pass over the sample) is the one the README's speed table measures.
CLASSES = ("class_a", "class_b")
VAL_EVERY = 10  # every 10th file goes to val/
FILES_PER_SHARD = 1_000  # sub-folders per class, as large datasets are stored (nested folders count)
DUPLICATE_EVERY = 5_000  # a byte-identical copy of the previous file
TEMPLATES_PER_CLASS = 8
TEMPLATE_SIDE = 32
# ext4 gives every file at least one 4 KiB block and an inode; keep 10 % spare on top.
BYTES_PER_FILE_ON_DISK = 4096 + 512
DISK_MARGIN = 1.10
CHILD_TIMEOUT_S = 1800

# Targets (issue #13), on the 2-core development machine.
TARGET_ADVISE_S = {100_000: 30.0, 1_000_000: 180.0}
TARGET_RSS_GROWTH_MB = 500.0
RSS_BASE_SIZE = 1_000
RSS_TOP_SIZE = 1_000_000

# The scan in a fresh interpreter: prints one JSON line with its own timings (stdout), nothing else.
SCAN_PROBE = """
import json, sys, time
start = time.perf_counter()
from tl_advise.advisor.data.images.scan import scan_dataset
imported = time.perf_counter()
scan = scan_dataset(sys.argv[1], audit=sys.argv[2])
done = time.perf_counter()
s = scan.summary
print(json.dumps({"import_s": imported - start, "scan_s": done - imported, "steps": scan.step_timings,
                  "n_images": s.n_images, "n_audited": s.audit.n_audited, "skipped": len(s.skipped),
                  "duplicate_groups": len(s.duplicates)}))
"""

# cProfile sees one thread: the probe runs the scan's thread pools serially, with the plugins imported first.
PROFILE_PROBE = """
import cProfile, io, json, pstats, sys
from PIL import Image
import tl_advise.advisor.data.images.scan as scan_module
from tl_advise.advisor.data.images.scan import scan_dataset

class SerialPool:
    def __init__(self, max_workers=None): pass
    def __enter__(self): return self
    def __exit__(self, *exc): return False
    def map(self, fn, items): return map(fn, items)

scan_module.ThreadPoolExecutor = SerialPool
Image.registered_extensions()
profiler = cProfile.Profile()
profiler.enable()
scan_dataset(sys.argv[1], audit=sys.argv[2])
profiler.disable()
stats = pstats.Stats(profiler)
total = stats.total_tt
rows = []
for (filename, line, name), (cc, nc, tt, ct, callers) in stats.stats.items():
    rows.append({"function": f"{filename.rsplit('/', 2)[-1] if '/' in filename else filename}:{line}({name})",
                 "calls": nc, "tottime_s": round(tt, 3), "cumtime_s": round(ct, 3)})
print(json.dumps({"total_s": round(total, 3),
                  "by_tottime": sorted(rows, key=lambda r: -r["tottime_s"])[:15],
                  "by_cumtime": sorted(rows, key=lambda r: -r["cumtime_s"])[:25]}))
"""


# --------------------------------------------------------------------------- synthetic tree


def _jpeg_with_comment(template: bytes, payload: bytes) -> bytes:
    """``template`` with a COM segment right after SOI: still a valid JPEG, with different bytes."""
    return template[:2] + b"\xff\xfe" + struct.pack(">H", len(payload) + 2) + payload + template[2:]


def _png_with_text(template: bytes, payload: bytes) -> bytes:
    """``template`` with a tEXt chunk after IHDR (signature 8 + IHDR 25 bytes): a valid PNG."""
    data = b"Comment\x00" + payload
    chunk = struct.pack(">I", len(data)) + b"tEXt" + data + struct.pack(">I", zlib.crc32(b"tEXt" + data))
    return template[:33] + chunk + template[33:]


def _templates(seed: int) -> dict[str, list[tuple[str, bytes]]]:
    """Per class, a few small noisy images around the class colour (6 JPEG, 1 PNG, 1 greyscale JPEG)."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[tuple[str, bytes]]] = {}
    for k, name in enumerate(CLASSES):
        colour = np.array([(k * 97) % 256, (k * 53 + 80) % 256, (k * 151 + 160) % 256], dtype=np.float32)
        items = []
        for t in range(TEMPLATES_PER_CLASS):
            arr = np.clip(colour + rng.normal(0, 30, (TEMPLATE_SIDE, TEMPLATE_SIDE, 3)), 0, 255).astype(np.uint8)
            img = Image.fromarray(arr)
            buf = io.BytesIO()
            if t == TEMPLATES_PER_CLASS - 1:
                img.save(buf, format="PNG")
                items.append((".png", buf.getvalue()))
            else:
                (img.convert("L") if t == 0 else img).save(buf, format="JPEG", quality=85)
                items.append((".jpg", buf.getvalue()))
        out[name] = items
    return out


def file_bytes(index: int, templates: dict[str, list[tuple[str, bytes]]]) -> tuple[str, str, bytes]:
    """(class, extension, content) of synthetic file ``index``; distinct for every index."""
    name = CLASSES[index % len(CLASSES)]
    ext, template = templates[name][(index // len(CLASSES)) % TEMPLATES_PER_CLASS]
    payload = b"tl-advise synthetic %d " % index + b"." * (index * 7919 % 613)
    if ext == ".png":
        return name, ext, _png_with_text(template, payload)
    return name, ext, _jpeg_with_comment(template, payload)


def build_tree(root: Path, n_files: int, seed: int = 0) -> dict[str, int]:
    """Write ``n_files`` files under ``root``; returns counts (files, duplicates, bytes)."""
    templates = _templates(seed)
    made_dirs: set[Path] = set()
    previous: bytes = b""
    total_bytes = duplicates = 0
    for index in range(n_files):
        name, ext, content = file_bytes(index, templates)
        if index and index % DUPLICATE_EVERY == 0:
            content = previous  # a byte-identical copy (the previous file may sit in another split or class)
            duplicates += 1
        split = "val" if (index // len(CLASSES)) % VAL_EVERY == VAL_EVERY - 1 else "train"
        folder = root / split / name / f"shard_{index // (FILES_PER_SHARD * len(CLASSES)):04d}"
        if folder not in made_dirs:
            folder.mkdir(parents=True, exist_ok=True)
            made_dirs.add(folder)
        fd = os.open(folder / f"{index:07d}{ext}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, content)
        finally:
            os.close(fd)
        previous = content
        total_bytes += len(content)
    return {"files": n_files, "duplicate_copies": duplicates, "bytes": total_bytes}


def disk_room(where: Path, n_files: int) -> tuple[bool, str]:
    """Whether ``where`` has the blocks and inodes for ``n_files`` (with margin), and what ``df`` said."""
    st = os.statvfs(where)
    free_bytes = st.f_bavail * st.f_frsize
    need_bytes = int(n_files * BYTES_PER_FILE_ON_DISK * DISK_MARGIN)
    need_inodes = int(n_files * DISK_MARGIN)
    ok = free_bytes >= need_bytes and (st.f_favail == 0 or st.f_favail >= need_inodes)
    facts = (f"{free_bytes / 2**30:.1f} GiB and {st.f_favail:,} inodes free at {where}, "
             f"{need_bytes / 2**30:.1f} GiB and {need_inodes:,} inodes needed")
    return ok, facts


# --------------------------------------------------------------------------- measuring


def drop_page_cache() -> bool:
    """Flush dirty pages and drop the OS page cache; False where not allowed (not root, a container)."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as exc:
        logger.info("cannot drop the page cache (%s): timings are with a warm page cache", exc)
        return False
    return True


def warm_libraries() -> None:
    """Read the libraries back in, untimed: only the dataset should be cold for the timed runs."""
    code = ("import torch, torchvision, timm, sklearn, tl_advise.advisor.measure.images.embed, "
            "tl_advise.advisor.measure.images.similarity")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=600, env=clean_env())


def clean_env() -> dict[str, str]:
    """No TL_ADVISE_* overrides: the built-in defaults apply."""
    return {k: v for k, v in os.environ.items() if not k.startswith("TL_ADVISE_")}


def other_runnable() -> float:
    """Mean number of other runnable processes over half a second (Linux /proc/loadavg), 0 where unknown."""
    values = []
    for _ in range(5):
        try:
            values.append(max(int(Path("/proc/loadavg").read_text().split()[3].split("/")[0]) - 1, 0))
        except (OSError, IndexError, ValueError):
            values.append(0)
        time.sleep(0.1)
    return round(sum(values) / len(values), 2)


@dataclass
class ChildRun:
    """One fresh interpreter: what it printed, its wall and CPU time and its peak resident memory."""

    command: list[str]
    returncode: int
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    other_load: float
    stdout: str = field(repr=False)
    stderr_tail: str = field(default="", repr=False)


def run_child(cmd: list[str], cwd: Path) -> ChildRun:
    """Run ``cmd`` and read its own rusage (``wait4``): peak RSS and CPU of that child alone."""
    load = other_runnable()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=cwd, env=clean_env())
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode(errors="replace")
    return ChildRun(command=cmd, returncode=proc.returncode, wall_s=round(wall, 3),
                    cpu_s=round(usage.ru_utime + usage.ru_stime, 3),
                    peak_rss_mb=round(usage.ru_maxrss / 1024, 1),  # Linux reports KiB
                    other_load=load, stdout=stdout, stderr_tail=stderr[-3000:])


def advise_command(data: Path, cache_dir: Path, audit: str) -> list[str]:
    return [sys.executable, "-m", "tl_advise.cli", str(data), "--format", "json", "-q",
            "--cache-dir", str(cache_dir), "--audit", audit]


@dataclass
class SizePoint:
    n_files: int
    tree: dict[str, int]
    build_s: float
    page_cache: str  # "cold" or "warm"
    scan_wall_s: float | None = None
    scan_in_process_s: float | None = None
    scan_cpu_s: float | None = None
    scan_peak_rss_mb: float | None = None
    scan_steps: dict[str, float] = field(default_factory=dict)
    scan_other_load: float | None = None
    advise_wall_s: float | None = None
    advise_cpu_s: float | None = None
    advise_peak_rss_mb: float | None = None
    advise_timings: dict[str, float] = field(default_factory=dict)
    advise_other_load: float | None = None
    n_images: int | None = None
    n_audited: int | None = None
    duplicate_groups: int | None = None
    skipped: int | None = None
    strategy: str | None = None


def cold(page_cache_ok: bool) -> None:
    if page_cache_ok:
        drop_page_cache()
        warm_libraries()


def measure_size(n_files: int, work: Path, audit: str, page_cache_ok: bool, skip_advise: bool) -> SizePoint:
    root = work / f"tree_{n_files}"
    logger.info("building %s files under %s", f"{n_files:,}", root)
    start = time.perf_counter()
    tree = build_tree(root, n_files)
    point = SizePoint(n_files=n_files, tree=tree, build_s=round(time.perf_counter() - start, 1),
                      page_cache="cold" if page_cache_ok else "warm")
    logger.info("built in %.1f s (%.0f MB of image bytes)", point.build_s, tree["bytes"] / 1e6)

    cold(page_cache_ok)
    scan = run_child([sys.executable, "-c", SCAN_PROBE, str(root), audit], cwd=work)
    if scan.returncode != 0:
        raise RuntimeError(f"scan probe exited {scan.returncode}: {scan.stderr_tail}")
    probe = json.loads(scan.stdout)
    point.scan_wall_s, point.scan_cpu_s, point.scan_peak_rss_mb = scan.wall_s, scan.cpu_s, scan.peak_rss_mb
    point.scan_in_process_s = round(probe["scan_s"], 3)
    point.scan_steps = probe["steps"]
    point.scan_other_load = scan.other_load
    point.n_images, point.n_audited = probe["n_images"], probe["n_audited"]
    point.duplicate_groups, point.skipped = probe["duplicate_groups"], probe["skipped"]
    logger.info("scan %s files: %.2f s in-process (%.2f s wall), peak RSS %.0f MB, steps %s",
                f"{n_files:,}", point.scan_in_process_s, scan.wall_s, scan.peak_rss_mb, probe["steps"])

    if not skip_advise:
        cold(page_cache_ok)
        cache_dir = Path(tempfile.mkdtemp(prefix="cache-", dir=work))
        advice = run_child(advise_command(root, cache_dir, audit), cwd=work)
        if advice.returncode not in (0, 1):
            raise RuntimeError(f"tl-advise exited {advice.returncode}: {advice.stderr_tail}")
        report = json.loads(advice.stdout)
        point.advise_wall_s, point.advise_cpu_s = advice.wall_s, advice.cpu_s
        point.advise_peak_rss_mb, point.advise_other_load = advice.peak_rss_mb, advice.other_load
        point.advise_timings = report["timings"]
        point.strategy = report["recommendation"]["strategy"]
        logger.info("advise %s files: %.2f s wall, peak RSS %.0f MB, timings %s",
                    f"{n_files:,}", advice.wall_s, advice.peak_rss_mb, report["timings"])
        shutil.rmtree(cache_dir, ignore_errors=True)
    return point


def profile_scan(n_files: int, work: Path, audit: str) -> dict[str, Any]:
    root = work / f"tree_{n_files}"
    if not root.is_dir():
        build_tree(root, n_files)
    run = run_child([sys.executable, "-c", PROFILE_PROBE, str(root), audit], cwd=work)
    if run.returncode != 0:
        raise RuntimeError(f"profile probe exited {run.returncode}: {run.stderr_tail}")
    return {"n_files": n_files, **json.loads(run.stdout)}


# --------------------------------------------------------------------------- cleanup


@dataclass
class WorkDir:
    """A temporary folder removed on exit, on an exception, and on SIGINT / SIGTERM."""

    path: Path

    def __enter__(self) -> Path:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._interrupted)
        return self.path

    def _interrupted(self, signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    def __exit__(self, *exc: object) -> None:
        logger.info("removing %s", self.path)
        shutil.rmtree(self.path, ignore_errors=True)


# --------------------------------------------------------------------------- report


def git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


def machine_facts(work: Path) -> dict[str, Any]:
    import PIL

    cpu_model = ""
    with contextlib.suppress(OSError, StopIteration):
        cpu_model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                         if line.startswith("model name"))
    mem_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    fs = subprocess.run(["df", "-hT", str(work)], capture_output=True, text=True, check=False).stdout.strip()
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(), "cpu_model": cpu_model, "memory_gib": mem_gib,
        "platform": platform.platform(), "python": platform.python_version(), "pillow": PIL.__version__,
        "work_dir_filesystem": fs.splitlines()[-1] if fs else "",
        "load_average_at_start": list(os.getloadavg()),
    }


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "—" if value is None else format(value, spec)


def targets(points: Sequence[SizePoint]) -> list[str]:
    by_size = {p.n_files: p for p in points}
    lines = []
    for size, limit in TARGET_ADVISE_S.items():
        p = by_size.get(size)
        if p is None or p.advise_wall_s is None:
            lines.append(f"- advice at {size:,} files < {limit:.0f} s: not measured")
        else:
            met = "met" if p.advise_wall_s < limit else "MISSED"
            lines.append(f"- advice at {size:,} files < {limit:.0f} s: {p.advise_wall_s:.1f} s — {met}")
    base, top = by_size.get(RSS_BASE_SIZE), by_size.get(RSS_TOP_SIZE)
    if base and top and base.advise_peak_rss_mb and top.advise_peak_rss_mb:
        growth = top.advise_peak_rss_mb - base.advise_peak_rss_mb
        met = "met" if growth < TARGET_RSS_GROWTH_MB else "MISSED"
        lines.append(f"- peak RSS growth {RSS_BASE_SIZE:,} → {RSS_TOP_SIZE:,} files < {TARGET_RSS_GROWTH_MB:.0f} MB: "
                     f"{growth:.0f} MB — {met}")
    else:
        lines.append(f"- peak RSS growth {RSS_BASE_SIZE:,} → {RSS_TOP_SIZE:,} files < {TARGET_RSS_GROWTH_MB:.0f} MB: "
                     "not measured")
    return lines


def markdown(results: dict[str, Any]) -> str:
    points = [SizePoint(**p) for p in results["points"]]
    m = results["machine"]
    cache = "cold page cache (dropped before every timed run)" if points and points[0].page_cache == "cold" \
        else "warm page cache (dropping it was refused)"
    out = [f"## Scan at scale — {m['cpu_count']} CPU cores, {m['cpu_model']}, {m['date'][:10]}", "",
           f"`{results['command']}` at commit `{results['git_commit']}`; {cache}; audit `{results['audit']}`. "
           f"Synthetic trees: {len(CLASSES)} classes, train/val, 1,000 files per sub-folder, tiny JPEG/PNG files "
           "with distinct bytes. Each run is a fresh interpreter; peak RSS is that child's own (`wait4`).", "",
           "| files | audited | scan (s) | scan wall (s) | scan peak RSS (MB) | advice wall (s) | advice CPU (s) "
           "| advice peak RSS (MB) | advice scan step (s) | embed (s) | other load |",
           "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for p in points:
        load = max(x for x in (p.scan_other_load, p.advise_other_load, 0.0) if x is not None)
        out.append(
            f"| {p.n_files:,} | {_fmt(p.n_audited, ',')} | {_fmt(p.scan_in_process_s)} | {_fmt(p.scan_wall_s)} "
            f"| {_fmt(p.scan_peak_rss_mb, '.0f')} | {_fmt(p.advise_wall_s)} | {_fmt(p.advise_cpu_s, '.1f')} "
            f"| {_fmt(p.advise_peak_rss_mb, '.0f')} | {_fmt(p.advise_timings.get('scan'))} "
            f"| {_fmt(p.advise_timings.get('embed'))} | {load:.1f} |")
    out += ["", "Where the scan's time goes (seconds per step, scan alone):", ""]
    steps = sorted({k for p in points for k in p.scan_steps}, key=lambda k: list(points[-1].scan_steps).index(k)
                   if k in points[-1].scan_steps else 99)
    out.append("| files | " + " | ".join(steps) + " |")
    out.append("|---:|" + "---:|" * len(steps))
    for p in points:
        out.append(f"| {p.n_files:,} | " + " | ".join(_fmt(p.scan_steps.get(k)) for k in steps) + " |")
    if results.get("profile"):
        prof = results["profile"]
        out += ["", f"cProfile of the scan at {prof['n_files']:,} files ({prof['total_s']:.1f} s under the "
                "profiler, thread pools run serially, warm page cache), top functions by own time:", "",
                "| function | calls | own (s) | cumulative (s) |",
                "|---|---:|---:|---:|"]
        out += [f"| `{r['function']}` | {r['calls']:,} | {r['tottime_s']:.2f} | {r['cumtime_s']:.2f} |"
                for r in prof["by_tottime"][:10]]
    out += ["", "### Targets", "", *targets(points), ""]
    if results.get("skipped_sizes"):
        out += ["Skipped: " + "; ".join(results["skipped_sizes"]), ""]
    out.append(f"Other runnable processes before the runs: up to {results['max_other_load']:.1f} on "
               f"{m['cpu_count']} cores (timings are inflated when that is above 0).")
    return "\n".join(out) + "\n"


def plot(results: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.info("matplotlib is not installed: no plot")
        return False
    points = [p for p in results["points"] if p["advise_wall_s"] is not None]
    if not points:
        return False
    sizes = [p["n_files"] for p in points]
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(9, 3.4))
    ax_t.loglog(sizes, [p["advise_wall_s"] for p in points], "o-", label="whole advice (wall)")
    ax_t.loglog(sizes, [p["scan_in_process_s"] for p in points], "s-", label="scan alone")
    for size, limit in TARGET_ADVISE_S.items():
        ax_t.plot([size], [limit], "rv", label="target" if size == min(TARGET_ADVISE_S) else None)
    ax_t.set_xlabel("files")
    ax_t.set_ylabel("seconds")
    ax_t.legend(fontsize=8)
    ax_t.grid(True, which="both", alpha=0.3)
    ax_m.semilogx(sizes, [p["advise_peak_rss_mb"] for p in points], "o-", label="whole advice")
    ax_m.semilogx(sizes, [p["scan_peak_rss_mb"] for p in points], "s-", label="scan alone")
    ax_m.set_xlabel("files")
    ax_m.set_ylabel("peak RSS (MB)")
    ax_m.legend(fontsize=8)
    ax_m.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"tl-advise scan at scale ({results['machine']['cpu_count']} CPU cores)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    p.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES), help="files per tree")
    p.add_argument("--audit", default="sample", choices=("sample", "all"), help="tl-advise's --audit setting")
    p.add_argument("--profile", type=int, metavar="N", help="also cProfile the scan of the N-file tree")
    p.add_argument("--skip-advise", action="store_true", help="time the scan only")
    p.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()),
                   help="where the temporary trees go (default: the system temp dir)")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "scan_scale",
                   help="results prefix: writes <out>.json, <out>.md and <out>.png")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    command = "python " + " ".join([Path(sys.argv[0]).as_posix(), *(argv if argv is not None else sys.argv[1:])])
    work_parent = args.work_dir.resolve()
    with WorkDir(Path(tempfile.mkdtemp(prefix="tl-advise-scan-scale-", dir=work_parent))) as work:
        page_cache_ok = drop_page_cache()
        results: dict[str, Any] = {
            "command": command, "git_commit": git_commit(), "machine": machine_facts(work), "audit": args.audit,
            "page_cache": "cold" if page_cache_ok else "warm", "points": [], "skipped_sizes": [],
        }
        for n in sorted(args.sizes):
            ok, facts = disk_room(work, n)
            if not ok:
                message = f"{n:,} files: not enough disk ({facts})"
                logger.warning("skipping %s", message)
                results["skipped_sizes"].append(message)
                continue
            logger.info("disk: %s", facts)
            point = measure_size(n, work, args.audit, page_cache_ok, args.skip_advise)
            if args.profile == n:
                results["profile"] = profile_scan(n, work, args.audit)
            shutil.rmtree(work / f"tree_{n}", ignore_errors=True)
            results["points"].append(asdict(point))
        if args.profile and "profile" not in results and args.profile not in args.sizes:
            results["profile"] = profile_scan(args.profile, work, args.audit)
    loads = [p[k] for p in results["points"] for k in ("scan_other_load", "advise_other_load") if p[k] is not None]
    results["max_other_load"] = max(loads, default=0.0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    text = markdown(results)
    if plot(results, args.out.with_suffix(".png")):
        text += f"\n![scan at scale]({args.out.with_suffix('.png').name})\n"
    args.out.with_suffix(".md").write_text(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
