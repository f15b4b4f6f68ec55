"""``tl-advise DATA --run --compare`` on a text dataset of N texts, as a user runs it: wall time and peak memory
of the process, and each strategy's training time (issue #24's target: a 1,000-text run on the CPU < 15 min).

    python benchmarks/bench_text_run.py ../shared/text/sst2 --texts 1000 --work-dir /tmp/text_run

The dataset is a seeded, stratified ``--texts`` of DATA's training split, written as one ``text,label`` table
into ``--work-dir`` (never into DATA): what a user with 1,000 labelled texts has. The tool then carves its own
validation split from it as it would for them. The command is one process (``tl-advise SUBSET --run --compare
--format json``, an empty cache folder: cold), timed from start to end; the peak memory is its ``ru_maxrss``.
Results: ``--out``.json/.md with the command, commit and machine (load average at the start and end).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _provenance import provenance

ENTRY = "import sys, tl_advise.cli.commands as c; sys.exit(c.console_main())"


def write_subset(data: str, texts: int, seed: int, into: Path) -> dict[str, int]:
    """A stratified ``texts`` of DATA's training split as ``into``/train.csv; returns the count per class."""
    from tl_advise.advisor.data.text.reading import read_text_dataset

    dataset = read_text_dataset(data)
    pool = dataset.subset(dataset.train_split)
    by_class: dict[str, list[Any]] = defaultdict(list)
    for example in pool:
        by_class[example.label].append(example)
    rng = random.Random(seed)
    chosen: list[Any] = []
    # Balanced as far as the classes allow: a small class gives all it has, the rest share what is left.
    remaining, classes = texts, sorted(by_class, key=lambda c: len(by_class[c]))
    for i, label in enumerate(classes):
        take = min(len(by_class[label]), remaining // (len(classes) - i))
        chosen += rng.sample(by_class[label], take)
        remaining -= take
    rng.shuffle(chosen)
    into.mkdir(parents=True, exist_ok=True)
    with open(into / "train.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows([e.text, e.label] for e in chosen)
    counts: dict[str, int] = defaultdict(int)
    for e in chosen:
        counts[e.label] += 1
    return dict(sorted(counts.items()))


def run_tool(subset: Path, work: Path, extra: list[str]) -> dict[str, Any]:
    report = work / "report.json"
    command = [sys.executable, "-c", ENTRY, str(subset), "--run", "--compare", "--format", "json", "-o", str(report),
               "--output-dir", str(work / "run"), "--cache-dir", str(work / "cache"), "--no-progress", *extra]
    start = time.perf_counter()
    with open(work / "stderr.log", "wb") as log:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"tl-advise ended with {code}; see {work / 'stderr.log'}")
    result = json.loads(report.read_text(encoding="utf-8"))
    run = result["run"]
    return {
        "wall_s": round(wall, 1),
        "maxrss_mb": round(usage.ru_maxrss / 1024),
        "advice_s": result["timings"].get("total"),
        "recommended": result["recommendation"]["strategy"],
        "verdict": run["verdict"]["status"],
        "judged_on": run["verdict"]["judged_on"],
        "runs": [{"strategy": r["strategy"], "status": r["status"], "train_time_s": round(r["train_time_s"], 1),
                  "epochs_run": r["epochs_run"],
                  "val_accuracy": (r["val"] or {}).get("accuracy"),
                  "test_accuracy": (r["test"] or {}).get("accuracy")} for r in run["runs"]],
    }


def markdown(record: dict[str, Any]) -> str:
    m = record["measurement"]
    lines = [
        f"# `tl-advise --run --compare` on {record['texts']} texts",
        "",
        f"- `{record['provenance']['command']}` at commit `{record['provenance']['commit'][:10]}`"
        f"{' (dirty)' if record['provenance']['dirty'] else ''}, {record['provenance']['date']}",
        f"- {record['data']}: {record['per_class']} (seed {record['seed']}); load average "
        f"{record['load_before']} before, {record['load_after']} after; {record['provenance']['machine']['cpu_count']}"
        " CPUs",
        "",
        f"**{m['wall_s'] / 60:.1f} min wall, peak {m['maxrss_mb']} MB** (target < 15 min); advice "
        f"{m['advice_s']} s; recommended {m['recommended']}, verdict {m['verdict']} (judged on {m['judged_on']}).",
        "",
        "| strategy | status | epochs | train s | val acc | test acc |",
        "|---|---|---|---|---|---|",
    ]
    for r in m["runs"]:
        acc = [f"{a:.3f}" if a is not None else "–" for a in (r["val_accuracy"], r["test_accuracy"])]
        lines.append(f"| {r['strategy']} | {r['status']} | {r['epochs_run']} | {r['train_time_s']} | {acc[0]} | "
                     f"{acc[1]} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="a text dataset (its training split is sampled)")
    parser.add_argument("--texts", type=int, default=1000, help="texts in the subset, all classes together")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", type=Path, required=True, help="the subset, the run and the cache (emptied)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "text_run_speed")
    parser.add_argument("extra", nargs="*", help="more tl-advise options, after --")
    args = parser.parse_args()
    shutil.rmtree(args.work_dir, ignore_errors=True)
    record: dict[str, Any] = {"provenance": provenance(__file__), "data": args.data, "texts": args.texts,
                              "seed": args.seed, "load_before": [round(x, 2) for x in os.getloadavg()]}
    record["per_class"] = write_subset(args.data, args.texts, args.seed, args.work_dir / "data")
    record["measurement"] = run_tool(args.work_dir / "data", args.work_dir, args.extra)
    record["load_after"] = [round(x, 2) for x in os.getloadavg()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    args.out.with_suffix(".md").write_text(markdown(record), encoding="utf-8")
    print(markdown(record))


if __name__ == "__main__":
    main()
