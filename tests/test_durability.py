"""Durability and concurrency: a full disk keeps the previous good file, SIGKILL mid-epoch resumes from the
last complete checkpoint, and processes sharing one cache stay correct."""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import make_class_folder

from tl_advise.advisor import writable
from tl_advise.advisor.api import advise
from tl_advise.advisor.measure.cache import ArrayCache
from tl_advise.cli.commands import main
from tl_advise.runners.checkpoint import atomic_save, atomic_write_text, load

pytestmark = pytest.mark.usefixtures("restore_tl_logging")


class _FullDisk(io.RawIOBase):
    """A file that takes ``room`` bytes, then fails like a full disk (``ENOSPC``) at the write call."""

    def __init__(self, real: Any, room: int) -> None:
        self.real, self.room = real, room

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        data = bytes(data)
        if len(data) > self.room:
            self.real.write(data[:self.room])
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return int(self.real.write(data))

    def fileno(self) -> int:
        return int(self.real.fileno())

    def flush(self) -> None:
        if not self.real.closed:
            self.real.flush()

    def close(self) -> None:
        if not self.closed:
            self.real.close()
            super().close()


def fill_the_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on every atomic write (cache entries, checkpoints, reports) hits a full disk after 100 bytes."""
    real_fdopen = os.fdopen

    def fdopen(fd: int, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        return _FullDisk(real_fdopen(fd, mode, *args, **kwargs), room=100)

    monkeypatch.setattr(writable.os, "fdopen", fdopen)


def _folder_names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_full_disk_while_writing_the_cache_keeps_the_previous_entry(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    cache = ArrayCache(tmp_path / "cache")
    cache.save("embeddings", "k", {"x": np.arange(1000)})
    cache.save_json("measurements", "k", {"n_images": 3})
    writes_before = {p: p.read_bytes() for p in (tmp_path / "cache").rglob("*") if p.is_file()}
    fill_the_disk(monkeypatch)
    cache.save("embeddings", "k", {"x": np.arange(5000)})
    cache.save_json("measurements", "k", {"n_images": 4, "pad": "x" * 500})
    after = {p: p.read_bytes() for p in (tmp_path / "cache").rglob("*") if p.is_file()}
    assert after == writes_before  # the previous entries, byte for byte, and no temporary file left
    assert np.array_equal(cache.load("embeddings", "k")["x"], np.arange(1000))  # type: ignore[index]
    assert cache.load_json("measurements", "k") == {"n_images": 3}
    assert "cannot write the cache" in caplog.text and "No space left on device" in caplog.text


def test_each_kind_of_cache_problem_warns_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture) -> None:
    cache = ArrayCache(tmp_path / "cache")
    cache.save("embeddings", "old", {"x": np.arange(3)})
    fill_the_disk(monkeypatch)
    for key in ("a", "b", "c"):  # a full disk fails every write alike: one warning, not one per entry
        cache.save("embeddings", key, {"x": np.arange(5000)})
    # A second, different problem in the same run is still heard.
    assert cache.read("embeddings", "old", lambda arrays: arrays["features"]) is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith("cannot write the cache") and "lacks the array 'features'" in warnings[1]


def test_full_disk_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "run" / "state.pt"
    atomic_save({"epoch": 1, "w": torch.ones(3)}, state)
    atomic_write_text('{"ok": 1}', tmp_path / "run" / "metrics.json")
    good = state.read_bytes()
    fill_the_disk(monkeypatch)
    with pytest.raises(OSError, match="No space left"):
        atomic_save({"epoch": 2, "w": torch.zeros(10_000)}, state)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_text('{"ok": 2, "pad": "' + "x" * 500 + '"}', tmp_path / "run" / "metrics.json")
    assert state.read_bytes() == good and load(state)["epoch"] == 1
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == {"ok": 1}
    assert _folder_names(tmp_path / "run") == ["metrics.json", "state.pt"]


@pytest.mark.slow
def test_a_checkpoint_from_other_settings_is_refused_as_stale(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from tl_advise.runners import train
    from tl_advise.schema.errors import ConfigError, StaleCheckpointError

    path = tmp_path / "state.pt"
    atomic_save({"format": train.STATE_FORMAT, "fingerprint": "old recipe", "epochs_run": 2}, path)
    job = SimpleNamespace(resume=True, state_path=path, fingerprint="new recipe", strategy="finetune_last_layers")
    with pytest.raises(StaleCheckpointError, match="other settings") as info:
        train._read_state(job)  # type: ignore[arg-type]
    assert isinstance(info.value, ConfigError)  # still exit 2 for a user's --resume
    same = SimpleNamespace(**{**vars(job), "fingerprint": "old recipe"})
    assert train._read_state(same)["epochs_run"] == 2  # type: ignore[arg-type, index]


def test_full_disk_at_the_report_file_is_exit_2_and_keeps_the_old_report(
        tmp_path: Path, synthetic_dataset: Path, session_cache_dir: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "out" / "report.json"
    assert main([str(synthetic_dataset), "--cache-dir", str(session_cache_dir), "--format", "json",
                 "-o", str(report)]) == 0
    good = report.read_bytes()
    fill_the_disk(monkeypatch)
    code = main([str(synthetic_dataset), "--cache-dir", str(session_cache_dir), "--format", "json",
                 "-o", str(report)])
    err = capsys.readouterr().err
    assert code == 2 and "No space left on device" in err and "Traceback" not in err
    assert report.read_bytes() == good and _folder_names(report.parent) == ["report.json"]


# --------------------------------------------------------------------------- processes


def _cli(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "tl_advise.cli", *(str(a) for a in args)]


def _comparable(report: dict[str, Any]) -> list[Any]:
    return [(r["strategy"], r["status"], r["best_epoch"], r["val"],
             [(c["phase"], c["epoch"], c["train_loss"], c["val_loss"]) for c in r["curves"]])
            for r in report["run"]["runs"]]


@pytest.fixture(scope="module")
def run_dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("durable")
    data = make_class_folder(base / "data", {"a": 8, "b": 8}, seed=21)
    cache = base / "cache"
    advise(data, cache_dir=cache, device="cpu")
    return data, cache


RUN_ARGS = ("--run", "--strategies", "finetune_last_layers", "--head-epochs", "1", "--finetune-epochs", "3",
            "--image-size", "32", "--batch-size", "2", "--workers", "0", "--format", "json", "-q")


@pytest.mark.slow
def test_sigkill_mid_epoch_resumes_from_the_last_complete_checkpoint(run_dataset: tuple[Path, Path],
                                                                    tmp_path: Path) -> None:
    data, cache = run_dataset
    straight = subprocess.run(_cli(data, "--cache-dir", cache, "--output-dir", tmp_path / "straight", *RUN_ARGS),
                              capture_output=True, text=True, check=False, timeout=900)
    assert straight.returncode == 0, straight.stderr

    out = tmp_path / "killed"
    state = out / "finetune_last_layers" / "state.pt"
    proc = subprocess.Popen(_cli(data, "--cache-dir", cache, "--output-dir", out, *RUN_ARGS),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        while not state.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        epochs_at_kill = load(state)["epochs_run"] if state.exists() else 0
        time.sleep(0.3)  # into the next epoch
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    saved = load(state)
    assert not saved["finished"] and saved["epochs_run"] >= epochs_at_kill >= 1  # a complete, loadable state

    resumed = subprocess.run(_cli(data, "--cache-dir", cache, "--output-dir", out, "--resume", *RUN_ARGS),
                             capture_output=True, text=True, check=False, timeout=900)
    assert resumed.returncode == 0, resumed.stderr
    assert _comparable(json.loads(resumed.stdout)) == _comparable(json.loads(straight.stdout))


@pytest.mark.slow
def test_two_advises_and_a_run_at_once_on_one_cache_stay_correct(tmp_path: Path) -> None:
    data = make_class_folder(tmp_path / "data", {"a": 6, "b": 6}, seed=22)
    cache = tmp_path / "cache"  # cold: all three compute and write the same entries at once
    common = ("--cache-dir", cache, "--format", "json", "-q", "--workers", "0")
    commands = [_cli(data, *common), _cli(data, *common),
                _cli(data, *common, "--run", "--strategies", "feature_extraction", "--head-epochs", "2",
                     "--output-dir", tmp_path / "runs")]
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in commands]
    outputs = [p.communicate(timeout=900) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err for _, err in outputs]
    reports = [json.loads(out) for out, _ in outputs]
    assert reports[0]["similarity"] == reports[1]["similarity"] == reports[2]["similarity"]
    assert reports[0]["recommendation"] == reports[1]["recommendation"] == reports[2]["recommendation"]
    assert reports[2]["run"]["runs"][0]["status"] == "completed"
    assert not [p for p in cache.rglob("*") if p.name.startswith(".") and p.is_file()]  # no temporary left
    warm = advise(data, cache_dir=cache)  # the cache they left is whole and valid
    assert warm.sample.forward_passes == 0 and warm.similarity.model_dump(mode="json") == reports[0]["similarity"]


def test_written_files_take_the_umask_or_the_old_files_mode_not_mkstemps_0600(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A report, a model or a shared cache entry is readable as any file the user writes, not owner-only."""
    monkeypatch.setattr(writable, "_UMASK", 0o022, raising=False)
    report = tmp_path / "report.json"
    atomic_write_text("{}", report)
    assert report.stat().st_mode & 0o777 == 0o644
    report.chmod(0o640)  # rewriting keeps the mode the user set
    atomic_write_text("{}", report)
    assert report.stat().st_mode & 0o777 == 0o640
