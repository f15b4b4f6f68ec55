"""A warm text advice: everything it measures read back from the cache, no model loaded, torch and transformers
never imported, and the same answer as the cold one; the cache invalidated by a different seed, sample size,
backbone or dataset content."""

from __future__ import annotations

import csv
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from text_fixtures import NEGATIVE, POSITIVE, sentence, tiny_backbone

TRAIN_PER_CLASS = 20


def _write_dataset(folder: Path, *, edit_test_text: bool = False) -> Path:
    """A CSV manifest (text, label, split) of short synthetic sentences; ``edit_test_text`` changes one text of
    the test split only (never sampled: only the scan's token counts see it)."""
    rng = random.Random(0)
    rows: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    for split, n in (("train", TRAIN_PER_CLASS), ("test", 4)):
        for label in ("negative", "positive"):
            made = 0
            while made < n:
                text = sentence(rng, label)
                if text not in seen:
                    seen.add(text)
                    rows.append((text, label, split))
                    made += 1
    if edit_test_text:
        text, label, split = rows[-1]
        rows[-1] = (f"{text} {POSITIVE[0]} {NEGATIVE[0]} and the film", label, split)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "data.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label", "split"])
        writer.writerows(rows)
    return folder


def _backbone_folder(folder: Path, *, seed: int = 0) -> Path:
    """The tiny test backbone saved as a Hugging Face folder (loaded by path, like ``--backbone DIR``)."""
    import torch

    backbone = tiny_backbone()
    if seed:
        torch.manual_seed(seed)
        for p in backbone.model.parameters():
            torch.nn.init.normal_(p, std=0.1)
    backbone.tokenizer.save_pretrained(folder)
    backbone.model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def backbones(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("text-backbones")
    return _backbone_folder(root / "tiny-a"), _backbone_folder(root / "tiny-b", seed=7)


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every model the advice loads (by spec)."""
    from tl_advise.advisor import text_api as advice

    calls: list[str] = []
    real = advice.load_text_backbone

    def counting(spec: str, **kwargs: Any) -> Any:
        calls.append(spec)
        return real(spec, **kwargs)

    monkeypatch.setattr(advice, "load_text_backbone", counting)
    return calls


def _advise(data: Path, backbone: Path, cache: Path, **kwargs: Any) -> Any:
    from tl_advise.advisor.text_api import advise_text_session

    return advise_text_session(data, backbone=str(backbone), cache_dir=cache,
                               sample_size=kwargs.pop("sample_size", 16), **kwargs)


def _without_timings(result: Any) -> str:
    from tl_advise.advisor.report.text_advice import render_text_advice

    return render_text_advice(result.model_copy(update={"timings": {}}), "json")


@pytest.mark.slow
def test_warm_text_advice_loads_no_model_and_gives_the_same_json(tmp_path: Path, backbones: tuple[Path, Path],
                                                                   loads: list[str]) -> None:
    data, cache = _write_dataset(tmp_path / "data"), tmp_path / "cache"
    cold = _advise(data, backbones[0], cache)
    assert loads == [str(backbones[0])] and cold.backbone_loaded
    warm = _advise(data, backbones[0], cache)
    assert loads == [str(backbones[0])] and not warm.backbone_loaded  # nothing loaded for the advice
    assert _without_timings(warm.result) == _without_timings(cold.result)
    assert warm.result.similarity.signals.separability is not None and warm.result.lengths.unit == "tokens"
    assert warm.backbone.info == cold.result.backbone  # the session loads it when asked (the runners do)
    assert len(loads) == 2


@pytest.mark.slow
@pytest.mark.parametrize("change", ["seed", "sample_size", "backbone", "dataset", "no_cache"])
def test_text_measurements_are_measured_again_when_what_they_depend_on_changes(
        change: str, tmp_path: Path, backbones: tuple[Path, Path], loads: list[str]) -> None:
    data, cache = _write_dataset(tmp_path / "data"), tmp_path / "cache"
    first = _advise(data, backbones[0], cache).result
    kwargs: dict[str, Any] = {"seed": 1} if change == "seed" else {"sample_size": 12} if change == "sample_size" \
        else {"use_cache": False} if change == "no_cache" else {}
    backbone = backbones[1] if change == "backbone" else backbones[0]
    if change == "dataset":
        _write_dataset(data, edit_test_text=True)
    second = _advise(data, backbone, cache, **kwargs).result
    assert len(loads) == 2, change  # measured again, with the model
    if change == "dataset":
        assert second.lengths.max > first.lengths.max  # the edited text's tokens are counted
    if change == "sample_size":
        assert second.sample.n_texts == 12 != first.sample.n_texts
    if change == "backbone":
        assert second.similarity.signals.separability != first.similarity.signals.separability
    third = _advise(data, backbone, cache, **kwargs).result  # and the new measurements are cached in turn
    assert len(loads) == (3 if change == "no_cache" else 2)
    if change != "no_cache":  # measured again, the signals' own seconds differ
        assert _without_timings(third) == _without_timings(second)


@pytest.mark.slow
def test_warm_text_advice_never_imports_torch_or_transformers(tmp_path: Path, backbones: tuple[Path, Path]) -> None:
    data, cache = _write_dataset(tmp_path / "data"), tmp_path / "cache"
    cold = _advise(data, backbones[0], cache, sample_size=256, device="auto")  # the CLI's defaults
    code = ("import sys; from tl_advise.cli.commands import main; "
            f"code = main([{str(data)!r}, '--modality', 'text', '--backbone', {str(backbones[0])!r}, "
            f"'--cache-dir', {str(cache)!r}, '--format', 'json', '-q']); "
            "print(code, sorted(m for m in ('torch', 'transformers', 'sklearn') if m in sys.modules), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "0 []", done.stderr
    import json

    warm = json.loads(done.stdout)
    expected = json.loads(_without_timings(cold.result))
    warm["timings"] = {}
    assert warm == expected


@pytest.mark.slow
def test_importing_the_text_advice_imports_no_deep_learning_stack() -> None:
    code = ("import sys, tl_advise.advisor.text_api, tl_advise.advisor.measure.text.similarity; "
            "print(sorted(m for m in ('torch', 'transformers', 'sklearn') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.slow
def test_console_entry_ends_without_teardown_but_flushes_and_keeps_the_exit_code(tmp_path: Path) -> None:
    """With torch loaded, ``tl-advise`` ends by ``os._exit`` (torch's teardown raised the peak memory): its output
    and exit code must be those of ``main()``."""
    code = ("import sys, atexit, torch; atexit.register(lambda: print('atexit ran', file=sys.stderr)); "
            "from tl_advise.cli.commands import console_main; console_main()")
    version = subprocess.run([sys.executable, "-c", code, "--version"], capture_output=True, text=True, timeout=120,
                             check=False, cwd=tmp_path)
    assert version.returncode == 0 and "tl-advise" in version.stdout and "atexit ran" in version.stderr
    missing = subprocess.run([sys.executable, "-c", code, str(tmp_path / "absent")], capture_output=True, text=True,
                             timeout=120, check=False, cwd=tmp_path)
    assert missing.returncode == 2 and "error" in missing.stderr and "atexit ran" in missing.stderr
