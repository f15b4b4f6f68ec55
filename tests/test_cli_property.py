"""Property-based trials of the command line (Hypothesis): for every drawn combination of option values and
dataset contents, the exit code is 0, 1, 2 or 130 (never 3, an internal error), stderr holds no traceback
(no -v), and the dataset tree is byte-for-byte what it was.

The fast test draws entries that the scan leaves out, so every example finds its measurements in a warm
cache (a fraction of a second each); the slow one also draws images that need a forward pass or fail only
when decoded, and trains a head.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import make_class_folder
from corpus import KINDS, ODD_NAMES, add_entry, tree_digest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tl_advise.advisor.api import advise
from tl_advise.cli.commands import main

pytestmark = pytest.mark.usefixtures("restore_tl_logging")

ALLOWED_EXITS = {0, 1, 2, 130}
# Entries the scan leaves out without decoding pixels: the sample, and so the cached measurements, stay.
SCAN_SKIPPED_KINDS = ("zero_byte", "not_an_image", "text_file", "truncated_jpeg", "garbage_png", "bomb_header",
                      "dangling_symlink", "symlink_loop_file", "symlink_loop_dir", "empty_class", "hidden")


class Workspace:
    """A dataset rebuilt at one fixed path for every example (the cache is keyed by path and mtime), a
    warm cache, and a folder for reports and runs outside the dataset."""

    def __init__(self, base: Path) -> None:
        self.pristine = make_class_folder(base / "pristine", {"cat": 3, "dog": 3}, seed=11)
        self.data = base / "data"
        self.cache = base / "cache"
        self.outside = base / "outside"
        self.reset()
        advise(self.data, cache_dir=self.cache, device="cpu")

    def reset(self) -> None:
        shutil.rmtree(self.data, ignore_errors=True)
        shutil.copytree(self.pristine, self.data, copy_function=shutil.copy2)  # same mtimes: cache stays warm
        shutil.rmtree(self.outside, ignore_errors=True)
        self.outside.mkdir()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    return Workspace(tmp_path_factory.mktemp("property"))


def _odd_junk(root: Path, key: str, class_name: str) -> None:
    """An odd name (not UTF-8, a newline, an escape …) on a file that is not an image: the scan lists it."""
    os.makedirs(os.fsencode(root / class_name), exist_ok=True)
    with open(os.path.join(os.fsencode(root / class_name), b"junk-" + ODD_NAMES[key] + b".jpg"), "wb") as fh:
        fh.write(b"\x00\x01 not an image")


def _where(workspace: Workspace, place: str, name: str) -> str:
    return str({"outside": workspace.outside / name, "inside": workspace.data / "cat" / name,
                "dataset": workspace.data}[place])


@st.composite
def cli_arguments(draw: st.DrawFn, workspace: Workspace, *, trains: bool) -> list[str]:
    """Option values, each drawn from its good values, or (in about half the examples) from good and bad."""
    wild = draw(st.booleans())

    def option(flag: str, good: list[str], bad: list[str]) -> list[str]:
        pool = good + bad if wild else good
        if not pool or draw(st.integers(0, 3)) != 0:  # each option in about a quarter of the examples
            return []
        return [flag, draw(st.sampled_from(pool))]

    inside, dataset = str(workspace.data / "cat" / "x"), str(workspace.data)
    report = [str(workspace.outside / "report.json"), str(workspace.outside / os.fsdecode(b"r\xe9port\n.txt")),
              str(workspace.outside / "sub" / "dir" / "r.md")]
    args: list[str] = [str(workspace.data), *(option("--cache-dir", [str(workspace.cache)], [inside])
                                              or ["--cache-dir", str(workspace.cache)])]
    args += option("--format", ["text", "json", "markdown"], ["yaml", ""])
    args += option("-o", report, [inside, dataset])
    args += option("--fail-on", ["warning", "refuted"], ["error"])
    args += option("--device", ["auto", "cpu"], ["cuda", "tpu"])
    args += option("--per-class", ["3", "64", "200"], ["1", "0", "-3"])  # a cap of 3 or more keeps the sample
    args += option("--max-images", ["6", "1000"], ["0", "-1", "many"])
    args += option("--seed", ["0"], ["x", ""])
    args += option("--weights", [], [str(workspace.outside / "missing.pt"), str(workspace.outside),
                                     str(workspace.data / "cat" / "img_0000.png")])
    args += option("--rules", [], [str(workspace.outside / "none.toml"), str(workspace.data / "cat" / "img_0000.png")])
    args += option("--backbone", ["efficientnet_lite0"], ["no_such_net", "efficientnet_lite0:V9", ":", "resnet18:NO"])
    run = trains and draw(st.booleans())
    if run:
        args += ["--run", "--strategies", "feature_extraction"]
    # Run-only options: refused without --run, validated with it.
    run_good = run or not wild
    args += option("--budget", ["1ep", "2ep,30s"] if run_good else [],
                   ["0ep", "0s", "0.5ep", "3xyz", "", "1ep,1ep"])
    args += option("--head-epochs", ["1", "2"] if run_good else [], ["0", "-1"])
    args += option("--image-size", ["16", "32"] if run_good else [], ["0", "8"])
    args += option("--output-dir", [str(workspace.outside / "runs")] if run_good else [], [inside, dataset])
    args += option("--head-lr", ["0.01"] if run_good else [], ["0", "-1", "nan", "inf"])
    args += option("--batch-size", ["2", "4"] if run_good else [], ["0", "1"])
    # Output and tracking options: the HTML page, TensorBoard, MLflow (its store drawn in tracking_environment).
    args += option("--html", [str(workspace.outside / "report.html")], [inside, dataset, str(workspace.outside)])
    args += option("--mlflow-experiment", ["tl-prop", "tl advise/\u00e9"] if run_good else [], [""])
    for flags in (["--tensorboard", "--no-tensorboard"], ["--mlflow", "--no-mlflow"]):
        if draw(st.integers(0, 3)) == 0 and (run_good or wild):
            args.append(draw(st.sampled_from(flags)))
    return args


@st.composite
def tracking_environment(draw: st.DrawFn, workspace: Workspace) -> dict[str, str]:
    """MLFLOW_TRACKING_URI (and MLFLOW_ALLOW_FILE_STORE): a store MLflow opens, refuses or does not know."""
    if draw(st.integers(0, 2)) != 0:
        return {}
    uri = draw(st.sampled_from([f"sqlite:///{workspace.outside}/mlflow.db", f"file:{workspace.outside}/mlruns",
                                f"{workspace.outside}/mlruns", "bogus://nowhere", ""]))
    env = {"MLFLOW_TRACKING_URI": uri}
    if draw(st.booleans()):
        env["MLFLOW_ALLOW_FILE_STORE"] = "true"
    return env


def _run_cli(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    return code, out.getvalue(), err.getvalue()


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _check(workspace: Workspace, args: list[str], env: dict[str, str] | None = None, *, drawn: bool = True) -> int:
    before = tree_digest(workspace.data)
    with _environment(env or {}):
        code, out, err = _run_cli(args)
    if drawn:
        event(f"exit {code}")
    assert code in ALLOWED_EXITS, (code, args, env, err)
    assert "Traceback" not in err and "Traceback" not in out, (args, err)
    assert "internal error" not in err, (args, err)
    assert tree_digest(workspace.data) == before, args
    fmt = args[args.index("--format") + 1] if "--format" in args else "text"
    if code in (0, 1) and "-o" in args and fmt == "json":  # the report file is complete, valid JSON
        json.loads(Path(args[args.index("-o") + 1]).read_text(encoding="utf-8"))
    return code


@st.composite
def dataset_entries(draw: st.DrawFn, kinds: tuple[str, ...]) -> list[tuple[str, str]]:
    return draw(st.lists(st.tuples(st.sampled_from(kinds), st.sampled_from(["cat", "dog"])), max_size=4))


@pytest.mark.slow
def test_cli_never_crashes_or_writes_into_the_dataset(workspace: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workspace.outside.parent)  # MLflow's default artifact root is relative to the working folder
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_ALLOW_FILE_STORE", "TL_ADVISE_MLFLOW", "TL_ADVISE_TENSORBOARD"):
        monkeypatch.delenv(name, raising=False)
    odd = tuple(f"odd:{key}" for key in ODD_NAMES)
    exits: list[int] = []

    @settings(max_examples=40, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(entries=dataset_entries((*SCAN_SKIPPED_KINDS, *odd)), data=st.data())
    def trial(entries: list[tuple[str, str]], data: st.DataObject) -> None:
        workspace.reset()
        for i, (kind, class_name) in enumerate(entries):
            if kind.startswith("odd:"):
                _odd_junk(workspace.data, kind.removeprefix("odd:"), class_name)
            else:
                add_entry(workspace.data, kind, class_name, seed=100 + i)
        exits.append(_check(workspace, data.draw(cli_arguments(workspace, trains=False)),
                            data.draw(tracking_environment(workspace))))

    trial()
    # Not vacuous: the draws reach advice given (0 or 1) as well as refusals (2).
    assert {0, 2} <= set(exits) or {1, 2} <= set(exits), exits
    print("exit codes:", sorted(exits))


@pytest.mark.slow
def test_cli_never_crashes_on_images_that_need_decoding_and_short_runs(workspace: Workspace,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workspace.outside.parent)
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_ALLOW_FILE_STORE", "TL_ADVISE_MLFLOW", "TL_ADVISE_TENSORBOARD"):
        monkeypatch.delenv(name, raising=False)
    @settings(max_examples=6, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(entries=dataset_entries(KINDS), data=st.data())
    def trial(entries: list[tuple[str, str]], data: st.DataObject) -> None:
        workspace.reset()
        for i, (kind, class_name) in enumerate(entries):
            add_entry(workspace.data, kind, class_name, seed=200 + i)
        _check(workspace, data.draw(cli_arguments(workspace, trains=True)), data.draw(tracking_environment(workspace)))

    trial()


# --------------------------------------------------------------------------- permissions


def _setpriv() -> list[str]:
    """A prefix that runs a command as root without the capabilities that bypass file permissions."""
    if os.geteuid() != 0:
        return []  # permissions apply already
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root, which ignores file permissions, and setpriv is absent to drop that")
    caps = "-dac_override,-dac_read_search"
    probe = subprocess.run([setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}", "true"], check=False)
    if probe.returncode != 0:
        pytest.skip("running as root and cannot drop CAP_DAC_OVERRIDE here (setpriv refused)")
    return [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}"]


@pytest.mark.slow
def test_unreadable_files_and_folders_are_skipped_with_the_reason(tmp_path: Path) -> None:
    prefix = _setpriv()
    data = make_class_folder(tmp_path / "data", {"cat": 3, "dog": 3}, seed=12)
    cache = tmp_path / "cache"
    advise(data, cache_dir=cache, device="cpu")  # per-image embeddings warm: no forward pass below
    secret = data / "cat" / "secret.png"
    shutil.copy2(data / "cat" / "img_0000.png", secret)
    locked = data / "dog" / "locked"
    locked.mkdir()
    shutil.copy2(data / "dog" / "img_0000.png", locked / "inside.png")
    secret.chmod(0)
    locked.chmod(0)
    try:
        before = tree_digest(data)
        proc = subprocess.run([*prefix, sys.executable, "-m", "tl_advise.cli", str(data), "--cache-dir",
                               str(cache), "--format", "json"], capture_output=True, text=True, check=False,
                              timeout=600)
        assert proc.returncode == 0, proc.stderr
        assert "Traceback" not in proc.stderr
        skipped = {s["path"]: s["reason"] for s in json.loads(proc.stdout)["dataset"]["skipped"]}
        assert "Permission denied" in skipped["cat/secret.png"]
        assert "Permission denied" in skipped["dog/locked"]
        assert tree_digest(data) == before
    finally:
        secret.chmod(0o644)
        locked.chmod(0o755)


@pytest.mark.slow
def test_every_tracking_store_and_output_option_value_is_a_clear_exit(workspace: Workspace,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Each MLflow store, tracking flag and output option once with a short --run (the drawn trials above
    reach a --run only now and then): exit 0, 1 or 2, never 3, and never a half-run refusal."""
    monkeypatch.chdir(workspace.outside.parent)
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_ALLOW_FILE_STORE", "TL_ADVISE_MLFLOW", "TL_ADVISE_TENSORBOARD"):
        monkeypatch.delenv(name, raising=False)
    run = [str(workspace.data), "--cache-dir", str(workspace.cache), "--run", "--strategies", "feature_extraction",
           "--head-epochs", "1", "--image-size", "16", "--workers", "0", "-q"]
    outside = workspace.outside
    trials: list[tuple[list[str], dict[str, str], int]] = [
        (["--mlflow"], {"MLFLOW_TRACKING_URI": f"file:{outside}/mlruns"}, 2),
        ([], {"MLFLOW_TRACKING_URI": f"{outside}/mlruns"}, 2),
        ([], {"MLFLOW_TRACKING_URI": f"file:{outside}/mlruns", "MLFLOW_ALLOW_FILE_STORE": "true"}, 0),
        ([], {"MLFLOW_TRACKING_URI": "bogus://nowhere"}, 2),
        (["--no-mlflow"], {"MLFLOW_TRACKING_URI": "bogus://nowhere"}, 0),
        (["--mlflow-experiment", "tl-prop"], {"MLFLOW_TRACKING_URI": f"sqlite:///{outside}/mlflow.db"}, 0),
        (["--mlflow-experiment", ""], {"MLFLOW_TRACKING_URI": f"sqlite:///{outside}/mlflow.db"}, 2),
        (["--tensorboard", "--html", str(outside / "r.html"), "--format", "markdown"], {}, 0),
        (["--html", str(workspace.data / "cat" / "r.html")], {}, 2),
        (["--html", str(outside)], {}, 2),
    ]
    for extra, env, expected in trials:
        workspace.reset()
        code = _check(workspace, [*run, "--output-dir", str(workspace.outside / "runs"), *extra], env, drawn=False)
        assert code == expected, (extra, env, code)
        if expected == 2:  # refused before anything trained
            assert not (workspace.outside / "runs").exists(), (extra, env)
