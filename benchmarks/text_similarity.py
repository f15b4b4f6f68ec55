"""Which text similarity signals separate datasets close to a text backbone's source domain from far ones.

    .venv/bin/python benchmarks/text_similarity.py [--n 400] [--seed 0] [--write-reference]

On a seeded sample of each shared text set (../shared/text, TL_ADVISE_SHARED) it computes every candidate
signal of ``advisor/measure/text/similarity.py`` with the default backbone (all-MiniLM-L6-v2) and writes
``benchmarks/results/text_similarity.{json,md}``: the raw signals, and per signal whether every close set
lies on the close side of every far set and by what margin. The direction of each signal (does a larger
value mean farther?) is fixed by its definition before measuring, never fitted.

A person's label comes from ../shared/text/README.md: general English (sst2, amazon_reviews_small, sms_spam)
is "close", scientific and biomedical text (scicite, chemprot) "far".

The hidden-state reference: ``--write-reference`` computes the backbone's reference moments on a seeded
sample of sst2's *train* split (seed 1000, disjoint from nothing else: it is the reference dataset) and
writes them to ``advisor/measure/text/references/<backbone>.npz``, which ships with the package. sst2 is therefore
left out of judging the reference-based signals (its row is shown, marked).

It also times the embedding against a plain sentence-transformers ``encode`` loop on the same texts.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _provenance import provenance

from tl_advise.advisor.data.text.reading import read_text_dataset
from tl_advise.advisor.measure.text.backbone import DEFAULT_TEXT_BACKBONE, load_text_backbone
from tl_advise.advisor.measure.text.similarity import (
    build_reference,
    load_reference,
    reference_path,
    sample_examples,
    text_similarity_signals,
)

REPO = Path(__file__).resolve().parents[1]
PERSON_LABEL = {"sst2": "close", "amazon_reviews_small": "close", "sms_spam": "close", "scicite": "far",
                "chemprot": "far"}
REFERENCE_DATASET = "sst2"
REFERENCE_SEED = 1000
REFERENCE_N = 500
# (name, path into the signals, True when a larger value means farther from the source domain); the
# direction follows from what each signal measures.
SIGNALS: list[tuple[str, tuple[str, str], bool]] = [
    ("fertility", ("tokenizer", "fertility"), True),
    ("split_share", ("tokenizer", "split_share"), True),
    ("unk_rate", ("tokenizer", "unk_rate"), True),
    ("chars_lost", ("tokenizer", "chars_lost"), True),
    ("hidden_early_w2", ("hidden", "early"), True),
    ("hidden_middle_w2", ("hidden", "middle"), True),
    ("hidden_late_w2", ("hidden", "late"), True),
    ("centroid_cosine", ("hidden", "centroid_cosine"), False),
    ("logreg_accuracy", ("separability", "logreg_accuracy"), False),
    ("tfidf_accuracy", ("separability", "tfidf_accuracy"), False),
    ("logreg_gain_over_tfidf", ("separability", "logreg_gain"), False),
    ("knn_gain_over_tfidf", ("separability", "knn_gain"), False),
    ("logme", ("separability", "logme"), False),
]
REFERENCE_BASED = {"hidden"}


def _value(signals: dict[str, Any], path: tuple[str, str]) -> float | None:
    group = signals.get(path[0])
    return None if group is None else group.get(path[1])


def judge(rows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per signal: close and far values, whether they separate and the margin (the gap between the nearest
    close and far sets, positive when every close set is on the close side), and the gap over the spread."""
    out = []
    for name, path, farther_when_larger in SIGNALS:
        skip_reference = path[0] in REFERENCE_BASED
        values = {d: _value(r["signals"], path) for d, r in rows.items()
                  if not (skip_reference and d == REFERENCE_DATASET)}
        close = [v for d, v in values.items() if v is not None and PERSON_LABEL[d] == "close"]
        far = [v for d, v in values.items() if v is not None and PERSON_LABEL[d] == "far"]
        if not close or not far:
            continue
        margin = min(far) - max(close) if farther_when_larger else min(close) - max(far)
        spread = max(close + far) - min(close + far)
        out.append({"signal": name, "farther_when_larger": farther_when_larger, "close": close, "far": far,
                    "separates": margin > 0, "margin": round(margin, 4),
                    "margin_over_range": round(margin / spread, 3) if spread else 0.0,
                    "judged_on": sorted(d for d, v in values.items() if v is not None)})
    return out


def throughput(backbone: Any, texts: list[str], rounds: int = 3) -> dict[str, Any]:
    """Texts per second: ours (length-sorted batches of 64) against SentenceTransformer.encode (batch 32, its
    default) on the same texts and torch threads, alternating for ``rounds`` rounds after a warm-up; the best
    round of each counts (this machine is shared: the best is the least disturbed)."""
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(backbone.folder), device="cpu")
    st.encode(texts[:8])
    backbone.encode(texts[:8])
    ours, theirs = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        backbone.encode(texts)
        ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        st.encode(texts, show_progress_bar=False)
        theirs.append(time.perf_counter() - start)
    return {"n_texts": len(texts), "rounds": rounds, "ours_seconds": [round(v, 2) for v in ours],
            "sentence_transformers_seconds": [round(v, 2) for v in theirs],
            "ours_texts_per_s": round(len(texts) / min(ours), 1),
            "sentence_transformers_texts_per_s": round(len(texts) / min(theirs), 1),
            "ratio": round(min(theirs) / min(ours), 3)}


def markdown(result: dict[str, Any]) -> str:
    lines = [f"# Text similarity signals ({result['backbone']})", "",
             f"`{result['provenance']['command']}` at commit `{result['provenance']['commit'][:10]}`"
             f"{' (uncommitted changes)' if result['provenance']['dirty'] else ''}, "
             f"{result['n']} training texts per dataset (seed {result['seed']}).", "",
             f"Reference moments: {result['reference']} ({REFERENCE_DATASET} is left out of judging the "
             "hidden-state signals).", "",
             "| dataset | person | fertility | split share | UNK | chars lost | W2 early | W2 middle | W2 late "
             "| centroid cos | logreg | TF-IDF | gain | k-NN gain | LogME |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, row in result["datasets"].items():
        s = row["signals"]
        t, h, sep = s["tokenizer"], s.get("hidden") or {}, s.get("separability") or {}
        ref = " (ref)" if name == REFERENCE_DATASET else ""

        def f(d: dict[str, Any], key: str, digits: int = 3) -> str:
            value = d.get(key)
            return "–" if value is None else f"{value:.{digits}f}"

        lines.append(f"| {name}{ref} | {PERSON_LABEL[name]} | {f(t, 'fertility')} | {f(t, 'split_share')} | "
                     f"{f(t, 'unk_rate', 4)} | {f(t, 'chars_lost', 4)} | {f(h, 'early')} | {f(h, 'middle')} | "
                     f"{f(h, 'late')} | {f(h, 'centroid_cosine')} | {f(sep, 'logreg_accuracy')} | "
                     f"{f(sep, 'tfidf_accuracy')} | {f(sep, 'logreg_gain')} | {f(sep, 'knn_gain')} | "
                     f"{f(sep, 'logme')} |")
    lines += ["", "## Which signals separate close from far", "",
              "Margin: the gap between the nearest close and far sets in the signal's own units, positive when "
              "every close set lies on the close side of every far set; over range: the margin divided by the "
              "spread of all judged values.", "",
              "| signal | larger means | separates | margin | margin / range | close | far |",
              "|---|---|---|---|---|---|---|"]
    for j in result["judgement"]:
        lines.append(f"| {j['signal']} | {'farther' if j['farther_when_larger'] else 'closer'} | "
                     f"{'yes' if j['separates'] else 'no'} | {j['margin']:+z.4f} | {j['margin_over_range']:+z.2f} | "
                     f"{', '.join(f'{v:.3f}' for v in j['close'])} | {', '.join(f'{v:.3f}' for v in j['far'])} |")
    tp = result.get("throughput")
    if tp:
        lines += ["", f"Throughput on {tp['n_texts']} texts (amazon_reviews_small, best of {tp['rounds']} alternating "
                      f"rounds): {tp['ours_texts_per_s']} texts/s against {tp['sentence_transformers_texts_per_s']} "
                      f"for SentenceTransformer.encode (×{tp['ratio']}; seconds per round: ours "
                      f"{tp['ours_seconds']}, sentence-transformers {tp['sentence_transformers_seconds']})."]
    lines += ["", "Seconds per dataset (tokenizer statistics / forward pass / cross-validation): " + "; ".join(
        f"{n} {r['signals']['seconds'].get('tokenizer', 0):.2f}/{r['signals']['seconds'].get('embed', 0):.1f}/"
        f"{r['signals']['seconds'].get('separability', 0):.1f}" for n, r in result["datasets"].items())]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path,
                        default=Path(os.environ.get("TL_ADVISE_SHARED", REPO.parent / "shared")))
    parser.add_argument("--n", type=int, default=400, help="training texts sampled per dataset")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write-reference", action="store_true",
                        help=f"recompute the reference moments from {REFERENCE_DATASET}'s train split first")
    parser.add_argument("--no-throughput", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "text_similarity")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    text_dir = args.shared / "text"
    if not text_dir.is_dir():
        print(f"{text_dir} is absent: set TL_ADVISE_SHARED to the folder holding text/", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory() as tmp:
        backbone = load_text_backbone(DEFAULT_TEXT_BACKBONE, cache_dir=Path(tmp))
        if args.write_reference:
            dataset = read_text_dataset(text_dir / REFERENCE_DATASET)
            texts = [e.text for e in sample_examples(dataset, total=REFERENCE_N, seed=REFERENCE_SEED)]
            reference = build_reference(
                backbone, texts, f"{len(texts)} sentences of {REFERENCE_DATASET}'s train split (seed {REFERENCE_SEED})")
            reference.save(reference_path(backbone.name))
        reference = load_reference(backbone.name)
        rows: dict[str, dict[str, Any]] = {}
        for name in PERSON_LABEL:
            dataset = read_text_dataset(text_dir / name)
            sample = sample_examples(dataset, total=args.n, seed=args.seed)
            signals = text_similarity_signals(backbone, sample, seed=args.seed, reference=reference)
            rows[name] = {"person": PERSON_LABEL[name], "signals": signals.model_dump()}
            print(f"{name}: done in {sum(signals.seconds.values()):.1f} s", file=sys.stderr)
        texts = [e.text for e in sample_examples(read_text_dataset(text_dir / "amazon_reviews_small"),
                                                 total=args.n, seed=args.seed)]
        result = {
            "provenance": provenance(__file__, argv), "backbone": backbone.name, "n": args.n, "seed": args.seed,
            "reference": reference.description if reference else None, "datasets": rows,
            "judgement": judge(rows),
            "throughput": None if args.no_throughput else throughput(backbone, texts),
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
