"""``tl-advise cache info|clear``: what the cache folder holds per format version and kind, and removing
all of it, one kind, or only the formats this version never reads — nothing outside ``v<N>/<kind>/``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tl_advise.advisor.measure.cache import CACHE_FORMAT, ArrayCache, cache_usage
from tl_advise.cli.commands import main

pytestmark = pytest.mark.usefixtures("restore_tl_logging", "clean_environment")

OLD = CACHE_FORMAT - 1


def _write(path: Path, n_bytes: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * n_bytes)


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    """A cache with current entries of three kinds, an older format's, a write in flight and foreign files."""
    folder = tmp_path / "cache"
    real = ArrayCache(folder)
    real.save_json("measurements", "m1", {"a": 1})
    real.save_json("measurements", "m2", {"a": 2})
    graphs = folder / f"v{CACHE_FORMAT}" / "graphs"
    for suffix, size in ((".onnx", 3000), (".npz", 200), (".json", 100)):  # one graph = three files, one key
        _write(graphs / f"g1{suffix}", size)
    _write(graphs / ".g2.onnx.abc.tmp", 50)  # another process still writing: bytes yes, entry no
    _write(folder / f"v{CACHE_FORMAT}" / "embeddings" / "e1.npz", 1000)
    _write(folder / f"v{OLD}" / "embeddings" / "old.npz", 4000)
    _write(folder / "notes.txt", 10)  # not tl-advise's: never listed, never removed
    _write(folder / "vendor" / "keep.bin", 10)
    return folder


def _info(folder: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    assert main(["cache", "info", "--cache-dir", str(folder), "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_info_counts_entries_and_bytes_per_version_and_kind(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _info(cache, capsys)
    groups = {(g["version"], g["kind"]): g for g in data["groups"]}  # type: ignore[attr-defined]
    assert set(groups) == {(CACHE_FORMAT, "measurements"), (CACHE_FORMAT, "graphs"), (CACHE_FORMAT, "embeddings"),
                           (OLD, "embeddings")}
    assert groups[(CACHE_FORMAT, "graphs")]["entries"] == 1 and groups[(CACHE_FORMAT, "graphs")]["bytes"] == 3350
    assert groups[(CACHE_FORMAT, "measurements")]["entries"] == 2
    assert groups[(OLD, "embeddings")]["current"] is False and groups[(CACHE_FORMAT, "embeddings")]["current"] is True

    assert main(["cache", "info", "--cache-dir", str(cache)]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"{cache}: ") and "0.0 MB in 5 entries" in text
    assert f"v{OLD}/embeddings" in text and "an older format, never read" in text
    assert "tl-advise cache clear --stale" in text


def test_clear_stale_removes_only_older_formats(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cache", "clear", "--cache-dir", str(cache), "--stale"]) == 0
    assert "removed 1 entry (0.0 MB)" in capsys.readouterr().out
    assert not (cache / f"v{OLD}").exists()
    assert all(g.current for g in cache_usage(cache).groups) and len(cache_usage(cache).groups) == 3


def test_clear_one_kind_then_everything_leaves_foreign_files(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cache", "clear", "--cache-dir", str(cache), "--kind", "graphs"]) == 0
    out = capsys.readouterr().out
    assert "removed 1 entry" in out and f"v{CACHE_FORMAT}/graphs: 1" in out
    assert {g.kind for g in cache_usage(cache).groups} == {"measurements", "embeddings"}

    assert main(["cache", "clear", "--cache-dir", str(cache)]) == 0
    assert "removed 4 entries" in capsys.readouterr().out
    assert cache_usage(cache).groups == []
    assert sorted(p.relative_to(cache).as_posix() for p in cache.rglob("*")) == ["notes.txt", "vendor",
                                                                                 "vendor/keep.bin"]
    # The advice's cache works again at once.
    ArrayCache(cache).save_json("measurements", "m3", {"a": 3})
    assert ArrayCache(cache).load_json("measurements", "m3") == {"a": 3}


def test_a_mistyped_kind_is_refused_and_removes_nothing(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = cache_usage(cache)
    assert main(["cache", "clear", "--cache-dir", str(cache), "--kind", "graph"]) == 2
    err = capsys.readouterr().err
    assert "'graph' is not one of" in err and "'graphs'" in err
    assert cache_usage(cache) == before


def test_a_missing_folder_is_empty(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "never-made"
    assert main(["cache", "info", "--cache-dir", str(folder)]) == 0
    assert capsys.readouterr().out == f"{folder}: empty\n"
    assert main(["cache", "clear", "--cache-dir", str(folder)]) == 0
    assert "removed 0 entries" in capsys.readouterr().out and not folder.exists()


def test_the_folder_comes_from_the_environment_or_pyproject_like_the_advice(
        cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TL_ADVISE_CACHE_DIR", str(cache))
    assert main(["cache", "info"]) == 0
    assert capsys.readouterr().out.startswith(f"{cache}: ")
    monkeypatch.delenv("TL_ADVISE_CACHE_DIR")
    (Path.cwd() / "pyproject.toml").write_text(f'[tool.tl-advise]\ncache-dir = "{cache}"\n')
    assert main(["cache", "info"]) == 0
    assert capsys.readouterr().out.startswith(f"{cache}: ")


def test_the_text_kinds_are_counted_and_cleared_by_kind(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The extracted text model is a folder: info said 'models 0 entries, 0.0 MB' beside its 90 MB, and
    --kind named only the image kinds, so the text entries could not be cleared alone."""
    folder = tmp_path / "cache"
    version = folder / f"v{CACHE_FORMAT}"
    _write(version / "models" / "all-minilm-l6-v2-0.1.2" / "model.safetensors", 2000)
    _write(version / "models" / "all-minilm-l6-v2-0.1.2" / "1_Pooling" / "config.json", 100)
    _write(version / "text_measurements" / "t1.json", 10)
    _write(version / "embeddings" / "e1.npz", 1000)
    groups = {g["kind"]: g for g in _info(folder, capsys)["groups"]}  # type: ignore[attr-defined]
    assert (groups["models"]["entries"], groups["models"]["bytes"]) == (1, 2100)
    assert main(["cache", "info", "--cache-dir", str(folder)]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    assert len({line.index(" MB") for line in lines}) == 1, lines  # the columns line up, long kinds too
    assert main(["cache", "clear", "--cache-dir", str(folder), "--kind", "models", "--kind", "text_measurements"]) == 0
    assert "removed 2 entries" in capsys.readouterr().out
    assert {g.kind for g in cache_usage(folder).groups} == {"embeddings"}
