"""``advise()`` end to end on a small synthetic folder, its warm path, and the ``tl-advise`` command line:
streams, formats, exit codes, configuration precedence and the helper commands."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tomllib
from importlib import resources
from pathlib import Path

import pytest
from conftest import make_class_folder, snapshot_tree, truncated_png, write_image

from tl_advise.advisor import SCHEMA_VERSION, AdviceResult, advise
from tl_advise.advisor.api import tool_version
from tl_advise.advisor.data.images.layout import EXPECTED_LAYOUT
from tl_advise.advisor.report import FORMATTERS, OutputFormat, render
from tl_advise.cli.commands import main, parse_budget
from tl_advise.rules import default_rules_text
from tl_advise.rules.warnings import REGISTRY as WARNINGS
from tl_advise.schema.errors import ConfigError, DatasetError

pytestmark = pytest.mark.usefixtures("restore_tl_logging", "one_blas_thread", "clean_environment")

REQUIRED_KEYS = {"schema_version", "tool_version", "device", "dataset", "backbone", "sample", "similarity",
                 "recommendation", "timings"}



@pytest.fixture(scope="module")
def cold(synthetic_dataset: Path, session_cache_dir: Path) -> AdviceResult:
    return advise(synthetic_dataset, cache_dir=session_cache_dir, device="cpu")


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 classes × 2 images: for the cold runs that only need to reach the end."""
    return make_class_folder(tmp_path_factory.mktemp("tiny") / "data", {"cat": 2, "dog": 2}, seed=1)


@pytest.fixture
def warm(cold: AdviceResult, synthetic_dataset: Path, session_cache_dir: Path) -> AdviceResult:
    return advise(synthetic_dataset, cache_dir=session_cache_dir)


def cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "Traceback" not in out
    return code, out, err


def advise_cli(capsys: pytest.CaptureFixture[str], data: Path, cache: Path, *args: str | Path) -> tuple[int, str, str]:
    return cli(capsys, data, "--cache-dir", cache, *args)


def quiet_rules(path: Path) -> Path:
    """A rules file that extends the default and switches every warning off."""
    lines = ['extends = "default"']
    lines += [f"[warnings.{warning_id}]\nenabled = false" for warning_id in WARNINGS]
    path.write_text("\n".join(lines) + "\n")
    return path


# --------------------------------------------------------------------------- advise()


@pytest.mark.slow
def test_advice_result_round_trips_and_has_every_part(cold: AdviceResult, synthetic_dataset: Path) -> None:
    again = AdviceResult.model_validate_json(cold.model_dump_json())
    assert again == cold
    assert cold.schema_version == SCHEMA_VERSION
    assert cold.tool_version == tool_version()
    ds = cold.dataset
    assert Path(ds.root) == synthetic_dataset.resolve()
    assert ds.n_images == 18 and ds.class_counts == {"cat": 6, "dog": 6, "fox": 6}
    assert ds.layout == "flat" and ds.skipped == []
    assert cold.backbone.name == "efficientnet_lite0" and cold.backbone.feature_dim == 1280
    assert cold.sample.n_images == 18 and cold.sample.seed == 0
    assert cold.sample.forward_passes + cold.sample.cache_hits == 18
    sim = cold.similarity
    assert 0.0 <= sim.score <= 1.0 and sim.label in ("similar", "different")
    assert sim.bn_shift is not None and sim.bn_shift.n_layers == 49
    assert sim.separability is not None and sim.separability.n_images == 18
    assert sim.components and all(0 <= c.score <= 1 for c in sim.components)
    rec = cold.recommendation
    assert rec.rule_id and rec.why and all(isinstance(w, str) and w for w in rec.why)
    assert "tiny_images" in {w.id for w in rec.warnings}  # 40×32 px against a 224 px backbone
    assert all(a.strategy != rec.strategy for a in rec.alternatives)
    assert set(cold.timings) >= {"scan", "measure", "rules", "total"}
    assert all(v >= 0 for v in cold.timings.values())


def test_second_advice_is_warm(cold: AdviceResult, warm: AdviceResult) -> None:
    assert warm.sample.forward_passes == 0 and warm.sample.cache_hits == 18
    assert warm.device != cold.device and "cache" in warm.device  # no device was needed
    assert "embed" not in warm.timings and "load_backbone" not in warm.timings
    assert warm.similarity == cold.similarity
    assert warm.recommendation == cold.recommendation


@pytest.mark.slow
def test_warm_path_never_imports_torch(cold: AdviceResult, synthetic_dataset: Path, session_cache_dir: Path) -> None:
    code = (
        "import sys; from tl_advise.advisor import advise; "
        f"r = advise({str(synthetic_dataset)!r}, cache_dir={str(session_cache_dir)!r}); "
        "print(r.sample.forward_passes, 'torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "False"], done.stdout


@pytest.mark.slow
def test_advice_reports_undecodable_and_unreadable_files(tmp_path: Path, session_cache_dir: Path) -> None:
    data = make_class_folder(tmp_path / "data", {"a": 3, "b": 3})
    (data / "a" / "empty.png").write_bytes(b"")
    good = write_image(tmp_path / "whole.png", seed=3).read_bytes()
    (data / "b" / "cut.png").write_bytes(good[: len(good) // 2])  # no end marker: the scan catches it
    result = advise(data, cache_dir=session_cache_dir, device="cpu")
    skipped = {s.path: s.reason for s in result.dataset.skipped}
    assert set(skipped) == {"a/empty.png", "b/cut.png"}
    assert all(reason for reason in skipped.values())
    assert result.dataset.n_images == 6 and result.sample.n_images == 6
    assert "skipped_files" in {w.id for w in result.recommendation.warnings}
    rendered = json.loads(render(result, "json"))
    assert {"path": "a/empty.png", "reason": skipped["a/empty.png"]} in rendered["dataset"]["skipped"]


@pytest.mark.slow
def test_advice_with_an_undecodable_file_is_never_trusted_from_the_cache(tmp_path: Path,
                                                                          session_cache_dir: Path) -> None:
    """A file whose header is fine but whose data is not: reported as skipped, and re-tried every run."""
    data = make_class_folder(tmp_path / "data", {"a": 3, "b": 3}, seed=2)
    truncated_png(data / "b" / "img_0001_bad.png")
    for run in range(2):
        result = advise(data, cache_dir=session_cache_dir, device="cpu")
        reasons = {s.path: s.reason for s in result.dataset.skipped}
        assert list(reasons) == ["b/img_0001_bad.png"] and "cannot decode" in reasons["b/img_0001_bad.png"]
        assert result.sample.n_images == 6
        assert "skipped_files" in {w.id for w in result.recommendation.warnings}
        # The first run embeds all 7; the second reuses the 6 good rows and tries the bad file again.
        assert result.sample.forward_passes == (7 if run == 0 else 1)


@pytest.mark.slow
def test_the_advice_never_samples_the_test_split(tmp_path: Path, session_cache_dir: Path) -> None:
    """The test split is what --run judges on: an advice measured on its labels would have seen the answer."""
    make_class_folder(tmp_path / "data" / "train", {"a": 3, "b": 3}, seed=1)
    make_class_folder(tmp_path / "data" / "test", {"a": 20, "b": 20}, seed=2)
    result = advise(tmp_path / "data", cache_dir=session_cache_dir, device="cpu", per_class=16)
    assert result.dataset.n_images == 46
    assert result.sample.n_images == 6  # every training image, none of the 40 test images
    # A folder that is nothing but a test split is still advised on (there is nothing else to sample).
    result = advise(tmp_path / "data" / "test", cache_dir=session_cache_dir, device="cpu", per_class=4)
    assert result.sample.n_images == 8


@pytest.mark.slow
def test_advice_reads_the_headers_of_its_sample_and_says_how_many_it_read(
        tmp_path: Path, session_cache_dir: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """With a 1-file audit share (a large dataset, in miniature) the sample is still read before it is
    embedded: a cut file in it leaves the scan, the sample is drawn again, and every format says how many
    headers were read."""
    monkeypatch.setattr("tl_advise.advisor.data.images.scan.AUDIT_FILES", 1)
    data = make_class_folder(tmp_path / "data", {"a": 6, "b": 3}, seed=4)
    good = write_image(tmp_path / "whole.png", seed=3).read_bytes()
    (data / "b" / "cut.png").write_bytes(good[: len(good) // 2])  # b has 4 files: all of them are sampled

    result = advise(data, cache_dir=session_cache_dir, device="cpu", per_class=4)

    assert {s.path: s.reason for s in result.dataset.skipped} == {"b/cut.png": "truncated image data"}
    assert result.sample.n_images == 7 and result.dataset.n_images == 9
    audit = result.dataset.audit
    assert audit is not None and audit.mode == "sample" and audit.n_unreadable == 1
    assert audit.n_not_audited >= 1 and audit.n_audited + audit.n_not_audited == 10
    text, markdown = render(result, "text"), render(result, "markdown")
    assert "Image files:" not in text  # the evidence: under --explain, in markdown and JSON
    text = render(result, "text", explain=True)
    assert f"Image files: {audit.n_audited} opened and checked (a seeded share, seed 0, and the sample)" in text
    assert f"{audit.n_not_audited} counted from name and size only (--audit all opens every one)" in text
    assert f"Image files: {audit.n_audited} opened and checked" in markdown
    assert json.loads(render(result, "json"))["dataset"]["audit"]["n_audited"] == audit.n_audited

    code, out, _ = advise_cli(capsys, data, session_cache_dir, "--audit", "all", "--per-class", "4", "-q",
                              "--explain")
    assert code == 0 and "Image files: all 10 opened and checked; 1 of them unreadable" in out


def test_advice_on_missing_folder_raises_dataset_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        advise(tmp_path / "nowhere", cache_dir=tmp_path / "cache")


@pytest.mark.slow
def test_advice_without_a_cache(tiny_dataset: Path) -> None:
    result = advise(tiny_dataset, use_cache=False, device="cpu")
    assert result.sample.forward_passes == 4


# --------------------------------------------------------------------------- formats


@pytest.mark.parametrize("fmt", list(OutputFormat))
def test_every_format_renders_the_strategy(cold: AdviceResult, fmt: OutputFormat) -> None:
    assert fmt in FORMATTERS
    text = render(cold, fmt)
    assert text.strip() and cold.recommendation.strategy in text
    assert render(cold, fmt.value) == text


def test_json_format_is_the_model(cold: AdviceResult) -> None:
    assert AdviceResult.model_validate_json(render(cold, OutputFormat.JSON)) == cold


@pytest.mark.parametrize(("text", "expected"), [
    ("3ep", (3, None)), ("10m", (None, 600.0)), ("3ep,90s", (3, 90.0)), ("1h", (None, 3600.0)),
    ("2 epochs, 30 sec", (2, 30.0)), ("", (None, None)), (None, (None, None)),
])
def test_parse_budget(text: str | None, expected: tuple[int | None, float | None]) -> None:
    assert parse_budget(text) == expected


@pytest.mark.parametrize("text", ["3", "ten minutes", "3ep,", "5d", "-1m"])
def test_parse_budget_refuses_nonsense(text: str) -> None:
    with pytest.raises(ConfigError, match="--budget"):
        parse_budget(text)


# --------------------------------------------------------------------------- the command line: advise


def test_cli_text_report_on_stdout_logs_on_stderr(capsys: pytest.CaptureFixture[str], cold: AdviceResult,
                                                  synthetic_dataset: Path, session_cache_dir: Path) -> None:
    code, out, err = advise_cli(capsys, synthetic_dataset, session_cache_dir)
    assert code == 0
    assert out.startswith("tl-advise ") and "Recommendation: " + cold.recommendation.strategy in out
    assert not any(line.startswith("tl-advise: ") for line in out.splitlines()), "a log line on stdout"
    assert "tl-advise: " in err and cold.recommendation.rule_id in err
    assert "Recommendation:" not in err


def test_cli_default_command_is_advise(capsys: pytest.CaptureFixture[str], cold: AdviceResult,
                                       synthetic_dataset: Path, session_cache_dir: Path) -> None:
    short = advise_cli(capsys, synthetic_dataset, session_cache_dir, "--format", "json", "-q")
    long = cli(capsys, "advise", synthetic_dataset, "--cache-dir", session_cache_dir, "--format", "json", "-q")
    assert short[0] == long[0] == 0
    assert json.loads(short[1])["recommendation"] == json.loads(long[1])["recommendation"]
    assert short[2] == "" and long[2] == ""  # -q: nothing below a warning


def test_cli_json(capsys: pytest.CaptureFixture[str], cold: AdviceResult, synthetic_dataset: Path,
                  session_cache_dir: Path) -> None:
    code, out, _ = advise_cli(capsys, synthetic_dataset, session_cache_dir, "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert set(data) >= REQUIRED_KEYS
    assert data["recommendation"]["strategy"] == cold.recommendation.strategy
    assert data["sample"]["forward_passes"] == 0  # warm
    AdviceResult.model_validate(data)


def test_cli_markdown(capsys: pytest.CaptureFixture[str], cold: AdviceResult, synthetic_dataset: Path,
                      session_cache_dir: Path) -> None:
    code, out, _ = advise_cli(capsys, synthetic_dataset, session_cache_dir, "--format", "markdown")
    assert code == 0
    assert out.startswith(f"# tl-advise: `{cold.recommendation.strategy}`")
    assert "## Why" in out and "## Warnings" in out


def test_cli_output_file(capsys: pytest.CaptureFixture[str], cold: AdviceResult, synthetic_dataset: Path,
                         session_cache_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "reports" / "nested" / "advice.json"
    code, out, err = advise_cli(capsys, synthetic_dataset, session_cache_dir, "--format", "json", "-o", target)
    assert code == 0 and out == ""
    assert json.loads(target.read_text())["recommendation"]["rule_id"] == cold.recommendation.rule_id
    assert str(target) in err


def test_cli_fail_on_warning(capsys: pytest.CaptureFixture[str], cold: AdviceResult, synthetic_dataset: Path,
                             session_cache_dir: Path, tmp_path: Path) -> None:
    assert cold.recommendation.warnings
    assert advise_cli(capsys, synthetic_dataset, session_cache_dir, "-q")[0] == 0
    assert advise_cli(capsys, synthetic_dataset, session_cache_dir, "--fail-on", "warning", "-q")[0] == 1
    rules = quiet_rules(tmp_path / "quiet.toml")
    code, out, _ = advise_cli(capsys, synthetic_dataset, session_cache_dir, "--rules", rules,
                              "--fail-on", "warning", "--format", "json", "-q")
    assert json.loads(out)["recommendation"]["warnings"] == []
    assert code == 0
    # "refuted" only concerns --run: advice alone never trips it.
    assert advise_cli(capsys, synthetic_dataset, session_cache_dir, "--fail-on", "refuted", "-q")[0] == 0


@pytest.mark.slow
def test_cli_never_writes_into_the_dataset(capsys: pytest.CaptureFixture[str], tiny_dataset: Path,
                                           tmp_path: Path) -> None:
    before = snapshot_tree(tiny_dataset)
    cache = tmp_path / "cache"
    for args in ([], ["--format", "json"], ["--format", "markdown", "-o", tmp_path / "r.md"]):  # cold, then warm
        assert advise_cli(capsys, tiny_dataset, cache, *args)[0] == 0
    assert snapshot_tree(tiny_dataset) == before
    assert list(cache.rglob("*.json")) and list(cache.rglob("*.npz")), "the cache went to its own folder"


@pytest.mark.slow
def test_cli_no_cache(capsys: pytest.CaptureFixture[str], tiny_dataset: Path) -> None:
    code, out, _ = cli(capsys, tiny_dataset, "--no-cache", "-q")
    assert code == 0 and "Recommendation:" in out


# --------------------------------------------------------------------------- bad input: exit 2, one message


def _dataset_error(capsys: pytest.CaptureFixture[str], path: Path, cache: Path) -> str:
    code, out, err = advise_cli(capsys, path, cache)
    assert code == 2 and out == ""
    assert str(path) in err and EXPECTED_LAYOUT in err
    return err


def test_cli_missing_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert "does not exist" in _dataset_error(capsys, tmp_path / "missing", tmp_path / "cache")


def test_cli_empty_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert "no class folders" in _dataset_error(capsys, tmp_path / "empty", tmp_path / "cache")


def test_cli_file_instead_of_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write_image(tmp_path / "one.png")
    assert "not a folder" in _dataset_error(capsys, path, tmp_path / "cache")


def test_cli_one_class_only(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data = make_class_folder(tmp_path / "data", {"cat": 3})
    assert "one class" in _dataset_error(capsys, data, tmp_path / "cache")


def test_cli_bad_format(capsys: pytest.CaptureFixture[str], synthetic_dataset: Path, tmp_path: Path) -> None:
    code, out, err = advise_cli(capsys, synthetic_dataset, tmp_path / "cache", "--format", "xml")
    assert code == 2 and out == ""
    assert "--format" in err and "xml" in err


def test_cli_bad_rules_file(capsys: pytest.CaptureFixture[str], synthetic_dataset: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad_rules.toml"
    bad.write_text('extends = "default"\n[similarity]\nthreshold = "high"\n')
    code, out, err = advise_cli(capsys, synthetic_dataset, tmp_path / "cache", "--rules", bad)
    assert code == 2 and out == "" and str(bad) in err and "threshold" in err
    missing = tmp_path / "missing.toml"
    code, out, err = advise_cli(capsys, synthetic_dataset, tmp_path / "cache", "--rules", missing)
    assert code == 2 and str(missing) in err and "not found" in err
    bad.write_text("this is = = not toml")
    code, _, err = advise_cli(capsys, synthetic_dataset, tmp_path / "cache", "--rules", bad)
    assert code == 2 and "TOML" in err


def test_cli_unknown_backbone(capsys: pytest.CaptureFixture[str], synthetic_dataset: Path, tmp_path: Path) -> None:
    code, out, err = advise_cli(capsys, synthetic_dataset, tmp_path / "cache", "--backbone", "no_such_net")
    assert code == 2 and out == "" and "no_such_net" in err and "tl-advise backbones" in err


def test_cli_run_options_need_run(capsys: pytest.CaptureFixture[str], synthetic_dataset: Path,
                                  tmp_path: Path) -> None:
    code, _, err = advise_cli(capsys, synthetic_dataset, tmp_path / "cache", "--compare")
    assert code == 2 and "--run" in err


def test_cli_bad_option_values(capsys: pytest.CaptureFixture[str], synthetic_dataset: Path, tmp_path: Path) -> None:
    for args in (["--per-class", "1"], ["--device", "tpu"], ["--seed", "many"], ["--no-such-flag"]):
        code, out, err = advise_cli(capsys, synthetic_dataset, tmp_path / "cache", *args)
        assert code == 2 and out == "" and err, args


# --------------------------------------------------------------------------- configuration precedence


def test_env_var_sets_the_format_and_the_command_line_wins(capsys: pytest.CaptureFixture[str], cold: AdviceResult,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           synthetic_dataset: Path, session_cache_dir: Path) -> None:
    monkeypatch.setenv("TL_ADVISE_FORMAT", "json")
    code, out, _ = advise_cli(capsys, synthetic_dataset, session_cache_dir, "-q")
    assert code == 0 and json.loads(out)["schema_version"] == SCHEMA_VERSION
    code, out, _ = advise_cli(capsys, synthetic_dataset, session_cache_dir, "--format", "text", "-q")
    assert code == 0 and out.startswith("tl-advise ")


def test_pyproject_then_env_then_command_line(capsys: pytest.CaptureFixture[str], cold: AdviceResult,
                                              monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                              synthetic_dataset: Path, session_cache_dir: Path) -> None:
    """Where the report goes (-o / TL_ADVISE_OUTPUT / output =) shows which source won."""
    project = tmp_path / "project"
    (project / "sub").mkdir(parents=True)
    from_pyproject = project / "from_pyproject.txt"
    (project / "pyproject.toml").write_text(
        f'[project]\nname = "x"\n\n[tool.tl-advise]\noutput = "{from_pyproject}"\nquiet = true\n')
    monkeypatch.chdir(project / "sub")  # found from a subfolder too
    code, out, err = advise_cli(capsys, synthetic_dataset, session_cache_dir)
    assert code == 0 and out == "" and err == ""  # quiet = true, and the report went to the file
    assert from_pyproject.read_text().startswith("tl-advise ")
    monkeypatch.setenv("TL_ADVISE_OUTPUT", str(project / "from_env.txt"))
    assert advise_cli(capsys, synthetic_dataset, session_cache_dir)[0] == 0
    assert (project / "from_env.txt").is_file()
    assert advise_cli(capsys, synthetic_dataset, session_cache_dir, "-o", project / "from_cli.txt")[0] == 0
    assert (project / "from_cli.txt").is_file()
    assert sorted(p.name for p in project.glob("from_*.txt")) == ["from_cli.txt", "from_env.txt", "from_pyproject.txt"]




def test_pyproject_format_then_env_then_command_line(capsys: pytest.CaptureFixture[str], cold: AdviceResult,
                                                     monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                     synthetic_dataset: Path, session_cache_dir: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.tl-advise]\nformat = "json"\n')
    monkeypatch.chdir(tmp_path)
    code, out, err = advise_cli(capsys, synthetic_dataset, session_cache_dir, "-q")
    assert code == 0, err
    assert set(json.loads(out)) >= REQUIRED_KEYS
    monkeypatch.setenv("TL_ADVISE_FORMAT", "markdown")
    code, out, _ = advise_cli(capsys, synthetic_dataset, session_cache_dir, "-q")
    assert code == 0 and out.startswith("# tl-advise:")
    code, out, _ = advise_cli(capsys, synthetic_dataset, session_cache_dir, "--format", "text", "-q")
    assert code == 0 and out.startswith("tl-advise ")


def test_pyproject_unknown_key_is_an_error(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path, synthetic_dataset: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.tl-advise]\nquiet = true\ncolour = "blue"\n')
    monkeypatch.chdir(tmp_path)
    code, out, err = advise_cli(capsys, synthetic_dataset, tmp_path / "cache")
    assert code == 2 and out == ""
    assert "colour" in err and str(tmp_path / "pyproject.toml") in err


def test_a_bad_configured_value_names_where_it_was_set(capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                       synthetic_dataset: Path) -> None:
    """click's message named only the flag, which the user never typed."""
    (tmp_path / "pyproject.toml").write_text('[tool.tl-advise]\nformat = "html"\n')
    monkeypatch.chdir(tmp_path)
    code, out, err = advise_cli(capsys, synthetic_dataset, tmp_path / "cache")
    assert code == 2 and out == ""
    assert err.startswith(f"tl-advise: error: {tmp_path / 'pyproject.toml'}'s [tool.tl-advise]: Invalid value for "
                          "'--format': 'html' is not one of 'text', 'json', 'markdown'; correct it there, or give "
                          "--format on the command line")
    monkeypatch.setenv("TL_ADVISE_PER_CLASS", "1")
    code, _, err = advise_cli(capsys, synthetic_dataset, tmp_path / "cache", "--format", "json")
    assert code == 2 and err.startswith("tl-advise: error: TL_ADVISE_PER_CLASS=1: Invalid value for '--per-class'")
    code, _, err = advise_cli(capsys, synthetic_dataset, tmp_path / "cache", "--format", "json", "--per-class", "1")
    assert code == 2 and "Error: Invalid value for '--per-class'" in err  # typed: click's own message


@pytest.mark.parametrize(("content", "expected"), [
    (b"[tool.tl-advise]\n# \xff\n", "cannot read"),                # not UTF-8
    (b'tool = "x"\n', "must be a table"),
    (b"[tool.tl-advise]\nseed = [1, 2]\n", "seed = [1, 2]: expected one value"),
    (b"[tool.tl-advise]\nseed = {a = 1}\n", "expected one value"),
    (b"[tool.tl-advise]\nfail-on = [{a = 1}]\n", "expected a value or a list of values"),
])
def test_a_pyproject_value_of_the_wrong_shape_is_bad_input_for_every_command(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        synthetic_dataset: Path, content: bytes, expected: str) -> None:
    (tmp_path / "pyproject.toml").write_bytes(content)
    monkeypatch.chdir(tmp_path)
    for args in ([synthetic_dataset, "--cache-dir", tmp_path / "cache"], ["--version"], ["cache", "info"]):
        code, out, err = cli(capsys, *args)
        assert code == 2 and out == "" and expected in err and str(tmp_path / "pyproject.toml") in err


def test_pyproject_numbers_and_booleans_reach_click_as_the_command_line_would_give_them(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.tl-advise]\ndata = 5\nper-class = "x"\n')
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(capsys)
    assert code == 2 and "per-class" in err and "'x' is not a valid integer" in err
    (tmp_path / "pyproject.toml").write_text('[tool.tl-advise]\ndata = 5\n')
    code, out, err = cli(capsys, "--cache-dir", tmp_path / "cache")
    assert code == 2 and "5" in err and "does not exist" in err
    (tmp_path / "pyproject.toml").write_text('[tool.tl-advise]\ncache-dir = 5\n')
    code, out, err = cli(capsys, "cache", "info")
    assert code == 0 and out == "5: empty\n"  # a folder named 5, as `--cache-dir 5` would be


def test_pyproject_with_hyphenated_keys(capsys: pytest.CaptureFixture[str], cold: AdviceResult,
                                        monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                        synthetic_dataset: Path, session_cache_dir: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        f'[tool.tl-advise]\ncache-dir = "{session_cache_dir}"\nfail-on = ["warning"]\nquiet = true\nexplain = true\n')
    monkeypatch.chdir(tmp_path)
    code, out, _ = cli(capsys, synthetic_dataset)
    assert "no forward pass" in out  # the cache dir came from the file (the sample line: explain from it too)
    assert code == 1  # and so did --fail-on warning


# --------------------------------------------------------------------------- other commands


def test_rules_show(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "rules", "show")
    assert code == 0
    data = json.loads(out)
    assert data["schema_version"] == 1 and data["decision"] and "strategies" in data
    code, out, _ = cli(capsys, "rules", "show", "--toml")
    assert code == 0 and out == default_rules_text()
    assert tomllib.loads(out)["schema_version"] == 1


def test_rules_show_with_an_override(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rules = quiet_rules(tmp_path / "quiet.toml")
    code, out, _ = cli(capsys, "rules", "show", "--rules", rules)
    assert code == 0
    assert all(not w["enabled"] for w in json.loads(out)["warnings"].values())


def test_rules_validate(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with resources.as_file(resources.files("tl_advise.rules") / "default_rules.toml") as default:
        code, out, _ = cli(capsys, "rules", "validate", default)
    assert code == 0 and "valid" in out
    bad = tmp_path / "bad.toml"
    bad.write_text("schema_version = 7\n")
    code, out, err = cli(capsys, "rules", "validate", bad)
    assert code == 2 and out == "" and str(bad) in err


def test_rules_validate_and_show_read_text_rules_too(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A text rules file (its rows name text strategies) is checked against the text schema, not refused for
    lacking the image table's keys; `rules show --modality text` prints the text table."""
    from tl_advise.rules.text_schema import default_text_rules_text

    text_rules = tmp_path / "text_rules.toml"
    text_rules.write_text(default_text_rules_text(), encoding="utf-8")
    code, out, _ = cli(capsys, "rules", "validate", text_rules)
    assert code == 0 and out.startswith(f"{text_rules}: valid text rules (")
    code, _, err = cli(capsys, "rules", "validate", text_rules, "--modality", "image")
    assert code == 2 and "Extra inputs are not permitted" in err  # what it said before, asked for images
    broken = tmp_path / "broken.toml"
    broken.write_text('schema_version = 1\n[[decision]]\nid = "x"\nstrategy = "text_full_finetune"\n')
    code, out, err = cli(capsys, "rules", "validate", broken)
    assert code == 2 and out == "" and "tfidf_bar: Field required" in err and "Traceback" not in err
    code, out, _ = cli(capsys, "rules", "show", "--modality", "text", "--toml")
    assert code == 0 and out == default_text_rules_text()
    code, out, _ = cli(capsys, "rules", "show", "--modality", "text")
    assert code == 0 and {row["strategy"] for row in json.loads(out)["decision"]} <= {
        "text_feature_extraction", "text_finetune_top", "text_full_finetune", "tfidf_linear"}


def test_backbones_command(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "backbones")
    assert code == 0 and out.splitlines()[0].startswith("efficientnet_lite0")
    code, out, _ = cli(capsys, "backbones", "--all")
    names = {line.split()[0] for line in out.splitlines() if line.strip()}
    assert code == 0 and {"efficientnet_lite0", "resnet50", "mobilenet_v2"} <= names


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "--version")
    assert code == 0 and tool_version() in out and "tl-advise" in out


@pytest.mark.slow
def test_sample_data(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target = tmp_path / "digits"
    code, out, _ = cli(capsys, "sample-data", target)
    assert code == 0 and str(target) in out
    assert sorted(p.name for p in target.iterdir()) == [str(d) for d in range(10)]
    assert len(list(target.glob("*/*.png"))) == 1797
    before = snapshot_tree(target)
    assert cli(capsys, "sample-data", target)[0] == 0  # re-running the quick start is fine
    assert snapshot_tree(target) == before
    other = tmp_path / "busy"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    code, out, err = cli(capsys, "sample-data", other)
    assert code == 2 and str(other) in err and "not empty" in err
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]


def test_the_command_line_and_the_api_share_their_defaults() -> None:
    import inspect

    from tl_advise.advisor.api import advise
    from tl_advise.advisor.measure.images.backbones import built_in_backbones
    from tl_advise.cli.commands import advise_command

    api = inspect.signature(advise).parameters
    options = {p.name: p.default for p in advise_command.params}
    for option, parameter in {"backbone": "backbone", "device": "device", "seed": "seed", "per_class": "per_class",
                              "max_images": "max_images", "embed_batch_size": "batch_size", "engine": "engine"}.items():
        assert options[option] == api[parameter].default, option
    assert options["backbone"] in built_in_backbones()


def test_the_advice_under_a_training_cap_is_for_what_trains(tmp_path: Path, session_cache_dir: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """--run --max-train-per-class 6 trains 6 images per class: the size axis must say so (few band), not
    the 20 per class on disk (tiny band)."""
    data = make_class_folder(tmp_path / "data", {"cat": 20, "dog": 20}, seed=4)
    # Mean-colour images: raw pixels carry them, so the pixel rule would decide; the table's row is wanted here.
    rules = tmp_path / "rules.toml"
    rules.write_text('extends = "default"\n[pixel_baseline]\nenabled = false\n', encoding="utf-8")
    whole = advise(data, cache_dir=session_cache_dir, rules=rules)
    capped = advise(data, cache_dir=session_cache_dir, rules=rules, max_train_per_class=6)
    assert (whole.dataset.images_per_class, whole.dataset.train_cap) == (20, None)
    assert (capped.dataset.images_per_class, capped.dataset.min_images_per_class) == (6, 6)
    assert capped.dataset.class_counts == whole.dataset.class_counts == {"cat": 20, "dog": 20}
    assert whole.recommendation.rule_id == "tiny-different"
    assert capped.recommendation.rule_id == "few-different"  # mean-colour images score far from ImageNet
    code, out, _ = advise_cli(capsys, data, session_cache_dir, "--rules", rules, "--run", "--max-train-per-class", "6",
                              "--budget", "1ep", "--image-size", "32", "--strategies", "feature_extraction",
                              "--output-dir", tmp_path / "runs", "--format", "json")
    report = json.loads(out)
    assert code == 0 and report["recommendation"]["rule_id"] == "few-different"
    assert report["dataset"]["train_cap"] == 6


def test_the_cli_leaves_the_library_logging_as_it_found_it(tmp_path: Path) -> None:
    """In-process (a pipeline calling ``main``, click's CliRunner) the CLI's stderr handler lives as long as the
    command: afterwards the library's logging neither prints nor writes to a stream its caller may have closed."""
    logger = logging.getLogger("tl_advise")
    before = (logger.handlers[:], logger.level, logger.propagate)
    assert main(["sample-data", str(tmp_path / "digits")]) == 0
    assert (logger.handlers, logger.level, logger.propagate) == before
