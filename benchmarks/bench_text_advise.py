"""Cold and warm ``tl-advise`` on a text dataset: wall time and peak memory of each process (issue #24's targets:
cold < 30 s, warm < 1 s, peak RSS < 1 GB).

    python benchmarks/bench_text_advise.py ../shared/text/sst2 --warm 3
    python benchmarks/bench_text_advise.py ../shared/text/sst2 --checkout /tmp/base   # another commit's code too

Each advice is its own process, as a user runs it (``tl-advise DATA --cache-dir DIR -q --format json``): cold
with an empty cache folder, then ``--warm`` times with the same folder. The peak memory is the process's
``ru_maxrss`` (``os.wait4``: what ``/usr/bin/time -f %M`` prints), the wall time includes the interpreter's start
and end; Python writes its bytecode as on a user's machine (``PYTHONDONTWRITEBYTECODE`` is dropped). ``--checkout
DIR`` also measures the code of another checkout of the repository (``git archive COMMIT | tar -x -C DIR``) with
the same interpreter and packages, in the same run, their warm advices taken in turn (A B A B …): before
and after under the same drift of the machine's speed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

PACKAGES = ("schema", "rules", "advisor", "runners", "cli")
# The installed script's entry, or the plain main() of a checkout that has no console_main.
ENTRY = ("import sys, tl_advise.cli.commands as c; f = getattr(c, 'console_main', None); "
         "sys.exit(f() if f else c.main())")


def _package_folder(checkout: Path, into: Path) -> Path:
    """``tl_advise`` as the checkout's folders (links), found before the installed editable package."""
    package = into / "tl_advise"
    package.mkdir(parents=True)
    for name in PACKAGES:
        (package / name).symlink_to(checkout.resolve() / name, target_is_directory=True)
    return into


def run_once(data: str, cache: Path, pythonpath: Path | None) -> dict[str, float]:
    env = dict(os.environ)
    # A user's install has its bytecode (pip compiles it; an editable one writes it on first import): without
    # this, a machine that sets PYTHONDONTWRITEBYTECODE compiles every module of the package on each run.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(pythonpath), *filter(None, [env.get("PYTHONPATH")])])
    command = [sys.executable, "-c", ENTRY, data, "--cache-dir", str(cache), "-q", "--format", "json"]
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert process.stdout is not None
    out = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} ended with {process.returncode}")
    timings = json.loads(out)["timings"]
    return {"wall_s": round(wall, 2), "maxrss_mb": round(usage.ru_maxrss / 1024), "advice_s": timings["total"]}


@dataclass
class CodeRuns:
    code: str
    cold: dict[str, float]
    warm: list[dict[str, float]] = field(default_factory=list)

    def line(self) -> str:
        walls = sorted(w["wall_s"] for w in self.warm)
        median = f" (median {walls[len(walls) // 2]:.2f} s)" if walls else ""
        return (f"{self.code:>10}: cold {self.cold['wall_s']:6.2f} s, peak {self.cold['maxrss_mb']:5.0f} MB | warm "
                + ", ".join(f"{w['wall_s']:.2f} s" for w in self.warm) + median
                + f", peak {max((w['maxrss_mb'] for w in self.warm), default=0):.0f} MB")


def measure(codes: dict[str, Path | None], data: str, warm: int) -> list[CodeRuns]:
    """Each code's cold advice, then its warm ones interleaved with the others' (A B A B …): this VM's speed
    drifts by a third from one minute to the next, and interleaving gives every code the same drift."""
    with tempfile.TemporaryDirectory(prefix="tl-advise-bench-") as folder:
        caches = {code: Path(folder) / f"cache-{i}" for i, code in enumerate(codes)}
        runs = {code: CodeRuns(code, run_once(data, caches[code], path)) for code, path in codes.items()}
        for _ in range(warm):
            for code, path in codes.items():
                runs[code].warm.append(run_once(data, caches[code], path))
    for r in runs.values():
        print(r.line(), flush=True)
    return list(runs.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--warm", type=int, default=3, help="warm advices after the cold one")
    parser.add_argument("--checkout", type=Path, help="another checkout's code, measured in turn with this one")
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tl-advise-code-") as links:
        codes: dict[str, Path | None] = {}
        if args.checkout is not None:
            codes[args.checkout.name] = _package_folder(args.checkout, Path(links))
        codes["this"] = None
        rows = measure(codes, args.data, args.warm)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
