"""Regressions from an adversarial trial of the CLI (issue 11): each case on a real, small broken input.

Every CLI call goes through ``main`` and checks what a user sees: the exit code, one clear message, no
traceback, and a dataset that was not written to.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_class_folder, truncated_png, write_image
from corpus import add_entry, exif_rotated_jpeg, huge_header_png, tree_digest
from PIL import Image

from tl_advise.advisor.api import advise, advise_session
from tl_advise.advisor.data.images.exif import upright
from tl_advise.advisor.data.images.scan import scan_dataset
from tl_advise.advisor.measure.images.imaging import open_rgb
from tl_advise.cli.commands import main, parse_budget
from tl_advise.runners import RunOptions, run_advice
from tl_advise.runners.train import PhasePlan, PreparedPhase, TrainingJob, fit
from tl_advise.schema.errors import BackboneError, ConfigError
from tl_advise.schema.models import printable

pytestmark = pytest.mark.usefixtures("restore_tl_logging", "one_blas_thread", "clean_environment")



def cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "Traceback" not in out
    return code, out, err


@pytest.fixture(scope="module")
def session_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This module's own cache: warming the shared one here would make other modules' cold runs warm."""
    return tmp_path_factory.mktemp("adversarial-cache")


@pytest.fixture(scope="module")
def warm_dataset(synthetic_dataset: Path, session_cache_dir: Path) -> Path:
    """The shared synthetic dataset with its measurements in this module's cache."""
    advise(synthetic_dataset, cache_dir=session_cache_dir, device="cpu")
    return synthetic_dataset


NON_UTF8 = os.fsdecode(b"bad\xff.jpg")


@pytest.fixture(scope="module")
def odd_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Good images plus what the trial tripped on: a non-UTF-8 and a newline name (both not images), a PNG
    that decodes to nothing (header fine), a huge-dimension header, an image filed under two classes, an
    empty class folder and an EXIF-rotated photo."""
    root = make_class_folder(tmp_path_factory.mktemp("odd") / "data", {"cat": 4, "dog": 4}, seed=3)
    (root / "cat" / NON_UTF8).write_bytes(b"not an image")
    (root / "cat" / "two\nlines.jpg").write_bytes(b"not an image either")
    truncated_png(root / "dog" / "half.png")
    (root / "dog" / "huge.png").write_bytes(huge_header_png(12_000, 9_000))
    twin = root / "cat" / "img_0000.png"
    (root / "dog" / "cat_twin.png").write_bytes(twin.read_bytes())
    (root / "dog" / "rotated.jpg").write_bytes(exif_rotated_jpeg(7))
    (root / "bird").mkdir()
    return root


@pytest.fixture(scope="module")
def odd_json(odd_dataset: Path, tmp_path_factory: pytest.TempPathFactory, session_cache_dir: Path
             ) -> tuple[dict[str, object], str, str, Path]:
    """One cold CLI run on the odd dataset, the JSON report written with -o (the trial's exit 3)."""
    out = tmp_path_factory.mktemp("reports") / f"report-{NON_UTF8}.json"
    before = tree_digest(odd_dataset)
    err = io.StringIO()  # a module-scoped fixture cannot use capsys
    with contextlib.redirect_stderr(err):
        code = main([str(odd_dataset), "--cache-dir", str(session_cache_dir), "--format", "json", "-o", str(out)])
    assert code == 0, err.getvalue()
    assert tree_digest(odd_dataset) == before
    return json.loads(out.read_text(encoding="utf-8")), err.getvalue(), out.read_text(encoding="utf-8"), out


# --------------------------------------------------------------------------- 1. names that are not text


def test_printable_escapes_what_cannot_be_written_and_is_idempotent() -> None:
    assert printable(NON_UTF8) == "bad\\xff.jpg"
    assert printable("two\nlines\t\x1b[31m\u2028.png") == "two\\nlines\\t\\x1b[31m\\u2028.png"
    assert printable("ünïcødé 写真.png") == "ünïcødé 写真.png"
    assert printable(printable(NON_UTF8)) == printable(NON_UTF8)


@pytest.mark.slow
def test_non_utf8_and_newline_names_in_a_json_report_and_output_file(odd_json: tuple) -> None:
    report, _, text, out = odd_json
    assert out.is_file()  # -o with a non-UTF-8 name of its own
    skipped = {s["path"]: s["reason"] for s in report["dataset"]["skipped"]}
    assert "cat/bad\\xff.jpg" in skipped and "cat/two\\nlines.jpg" in skipped
    text.encode("utf-8")  # strict: no surrogate survived


@pytest.mark.slow
def test_every_format_keeps_one_line_per_skipped_file(odd_dataset: Path, odd_json: tuple,
                                                      session_cache_dir: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, odd_dataset, "--cache-dir", session_cache_dir)
    assert code == 0 and "Skipped 4 files (-v lists them)" in out  # the one-screen report counts them
    code, out, _ = cli(capsys, odd_dataset, "--cache-dir", session_cache_dir, "--explain")
    assert code == 0
    listed = [line for line in out.splitlines() if line.startswith("  - cat/") or line.startswith("  - dog/")]
    assert "  - cat/two\\nlines.jpg: not an image (cannot identify image file)" in listed
    assert "  - cat/bad\\xff.jpg: not an image (cannot identify image file)" in listed
    assert not any(line.startswith("lines.jpg") for line in out.splitlines())


# --------------------------------------------------------------------------- decode failures, bombs, labels


def test_undecodable_file_is_skipped_and_not_counted(odd_json: tuple) -> None:
    dataset = odd_json[0]["dataset"]
    skipped = {s["path"]: s["reason"] for s in dataset["skipped"]}
    assert skipped["dog/half.png"].startswith("cannot decode image")
    assert skipped["dog/huge.png"].startswith("cannot decode image")
    # dog: 4 good + the twin + the rotated photo; the two undecodable files are not counted.
    assert dataset["class_counts"] == {"cat": 4, "dog": 6}
    assert dataset["n_images"] == 10


def test_decompression_bomb_warning_names_the_file(odd_json: tuple) -> None:
    err = odd_json[1]
    assert "DecompressionBombWarning" not in err
    assert "huge.png is 12000 x 9000 px" in err


def test_cross_class_duplicate_is_a_label_conflict(odd_json: tuple) -> None:
    warnings = {w["id"]: w["message"] for w in odd_json[0]["recommendation"]["warnings"]}
    assert "label_conflict" in warnings and "duplicates_within_split" not in warnings
    assert "cat/img_0000.png = dog/cat_twin.png (labelled cat, dog)" in warnings["label_conflict"]


def test_empty_class_folder_is_not_a_skipped_file(odd_json: tuple) -> None:
    report = odd_json[0]
    assert report["dataset"]["empty_class_folders"] == ["bird/"]
    assert "bird/" not in {s["path"] for s in report["dataset"]["skipped"]}
    warnings = {w["id"]: w["message"] for w in report["recommendation"]["warnings"]}
    assert "bird/" in warnings["empty_classes"]
    # two names, two undecodable: no folder
    assert re.match(r"skipped 4 files, e\.g\. \S+ \(.+\)$", warnings["skipped_files"])  # the example says why


# --------------------------------------------------------------------------- EXIF orientation


@pytest.mark.slow
def test_exif_orientation_is_honoured_when_decoding_and_scanning(tmp_path: Path) -> None:
    # Orientation 6: the viewer turns the stored pixels 90° clockwise. Store the upright picture turned
    # back, so that decoding upright must give the original.
    original = np.zeros((48, 32, 3), np.uint8)  # 32 wide, 48 tall: a tall picture
    original[:12, :, 0] = 255  # red band at the top
    stored = Image.fromarray(original).transpose(Image.Transpose.ROTATE_90)  # 48 wide, 32 tall
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "data" / "a" / "phone.png"
    path.parent.mkdir(parents=True)
    stored.save(path, exif=exif.tobytes())
    decoded = np.asarray(open_rgb(str(path)))
    assert decoded.shape == (48, 32, 3)
    assert decoded[:12, :, 0].mean() == 255 and decoded[-12:, :, 0].mean() == 0
    make_class_folder(tmp_path / "data", {"b": 2})
    write_image(tmp_path / "data" / "a" / "plain.png")
    record = next(r for r in scan_dataset(tmp_path / "data").records if r.path.name == "phone.png")
    assert (record.width, record.height) == (32, 48)
    with Image.open(path) as img:
        assert upright(img).size == (32, 48)


# --------------------------------------------------------------------------- 2 and 3: epochs and budgets


def _tiny_job(tmp_path: Path, phases: list[PhasePlan]) -> TrainingJob:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    x, y = torch.randn(8, 4), torch.tensor([0, 1] * 4)

    def prepare(_phase: PhasePlan) -> PreparedPhase:
        return PreparedPhase(torch.optim.SGD(model.parameters(), lr=0.1), [])

    return TrainingJob(strategy="toy", model=model, phases=phases, prepare_phase=prepare,
                       train_batches=lambda epoch: [(x, y)], n_train_batches=1, val_batches=lambda: [(x, y)],
                       device=torch.device("cpu"), state_path=tmp_path / "state.pt", fingerprint="toy",
                       progress=False)


def test_a_zero_epoch_phase_hands_over_instead_of_spinning(tmp_path: Path) -> None:
    result = fit(_tiny_job(tmp_path, [PhasePlan("head", 0, []), PhasePlan("finetune", 2, [])]))
    assert result.epochs_run == 2 and [c.phase for c in result.curves] == ["finetune", "finetune"]
    with pytest.raises(ConfigError, match="no epoch was trained"):
        fit(_tiny_job(tmp_path / "none", [PhasePlan("head", 0, [])]))


@pytest.mark.parametrize(("args", "message"), [
    (["--head-epochs", "0"], "feature_extraction has no epoch to train"),
    (["--head-epochs", "0", "--finetune-epochs", "0"], "--head-epochs 0 and --finetune-epochs 0"),
    (["--budget", "0ep"], "whole number of at least 1"),
    (["--budget", "0.5ep"], "whole number of at least 1"),
    (["--budget", "0s"], "time limit must be more than 0"),
    (["--budget", "0m,2ep"], "time limit must be more than 0"),
    (["--strategies", "from_scratch", "--finetune-epochs", "0"], "from_scratch has no epoch to train"),
])
@pytest.mark.slow
def test_zero_epochs_and_budgets_are_refused_before_training(capsys: pytest.CaptureFixture[str], warm_dataset: Path,
                                                           session_cache_dir: Path, tmp_path: Path,
                                                           args: list[str], message: str) -> None:
    out_dir = tmp_path / "runs"
    code, _, err = cli(capsys, warm_dataset, "--cache-dir", session_cache_dir, "--run", "--output-dir", out_dir,
                       "--strategies", "feature_extraction", *args)
    assert code == 2 and message in err
    assert not out_dir.exists()  # refused before anything was written


def test_parse_budget_refuses_zero_and_fractions() -> None:
    for text in ("0ep", "0.5ep", "0s", "0h", "1ep,0m"):
        with pytest.raises(ConfigError):
            parse_budget(text)
    assert parse_budget("1ep,0.5s") == (1, 0.5)


def test_run_options_errors_are_config_errors() -> None:
    from tl_advise.runners.options import run_options

    with pytest.raises(ConfigError, match="--batch-size: input should be greater than or equal to 2"):
        run_options({"output_dir": Path("x"), "batch_size": 1}, {"batch_size": "--batch-size"})


# --------------------------------------------------------------------------- 4 and the weights message


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tl_advise.advisor.measure.images.backbones.efficientnet_lite0 import create_model

    folder = tmp_path_factory.mktemp("weights")
    state = create_model().state_dict()
    files = {"random": folder / "random.pt", "nan": folder / "nan.pt", "inf": folder / "inf.pt",
             "pickle": folder / "pickle.pt"}
    torch.save(state, files["random"])
    torch.save({k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in state.items()},
               files["nan"])
    inf_state = dict(state)
    inf_state["conv_stem.weight"] = torch.full_like(state["conv_stem.weight"], float("inf"))
    torch.save(inf_state, files["inf"])
    torch.save({"model": Path("not a tensor")}, files["pickle"])
    return files


@pytest.mark.parametrize("kind", ["nan", "inf"])
@pytest.mark.slow
def test_non_finite_weights_are_one_clear_message(capsys: pytest.CaptureFixture[str], warm_dataset: Path,
                                                  weight_files: dict[str, Path], tmp_path: Path, kind: str) -> None:
    code, out, err = cli(capsys, warm_dataset, "--cache-dir", tmp_path / "cache", "--weights", weight_files[kind])
    assert code == 2 and out == ""
    assert "NaN or infinite values" in err and str(weight_files[kind]) in err
    assert "sklearn" not in err and len(err.strip().splitlines()) <= 3


@pytest.mark.slow
def test_non_finite_embeddings_are_refused_before_the_cache(synthetic_dataset: Path, tmp_path: Path) -> None:
    from tl_advise.advisor.measure.cache import ArrayCache
    from tl_advise.advisor.measure.images.backbones import load_backbone
    from tl_advise.advisor.measure.images.embed import embed

    backbone = load_backbone()
    backbone.batchnorm_layers()[0][1].running_var.fill_(-1.0)  # sqrt of a negative variance: NaN
    records = scan_dataset(synthetic_dataset).records[:4]
    cache = ArrayCache(tmp_path / "cache")
    with pytest.raises(BackboneError, match="NaN or infinite features for 4 of 4 images"):
        embed(backbone, records, root=synthetic_dataset, device=torch.device("cpu"), cache=cache,
              collect_bn=False, num_workers=0)
    assert not list((tmp_path / "cache").rglob("*.npz"))


def test_unsafe_weights_message_says_what_a_safe_checkpoint_is(capsys: pytest.CaptureFixture[str],
                                                               warm_dataset: Path, weight_files: dict[str, Path],
                                                               tmp_path: Path) -> None:
    code, _, err = cli(capsys, warm_dataset, "--cache-dir", tmp_path / "cache", "--weights", weight_files["pickle"])
    assert code == 2
    assert "weights_only=False" not in err and "\x1b[" not in err
    assert "state_dict of tensors saved with torch.save" in err and "pathlib" in err


# --------------------------------------------------------------------------- 6. user weights are uncalibrated


@pytest.mark.slow
def test_user_weights_are_reported_uncalibrated(tmp_path: Path, weight_files: dict[str, Path]) -> None:
    data = make_class_folder(tmp_path / "data", {"a": 2, "b": 2}, seed=4)
    result = advise(data, weights=weight_files["random"], use_cache=False, device="cpu")
    assert result.backbone.source == "file" and result.backbone.calibrated is False
    warnings = {w.id: w.message for w in result.recommendation.warnings}
    assert "uncalibrated_backbone" in warnings and str(weight_files["random"].resolve()) in warnings[
        "uncalibrated_backbone"]
    assert any("published weights" in note for note in result.similarity.notes)


# --------------------------------------------------------------------------- 7. nothing written into the dataset


@pytest.mark.parametrize("option", ["--cache-dir", "-o", "--output-dir", "--cache-dir via link", "-o via link"])
def test_every_write_path_inside_the_dataset_is_refused(capsys: pytest.CaptureFixture[str], warm_dataset: Path,
                                                        session_cache_dir: Path, tmp_path: Path,
                                                        option: str) -> None:
    flag, _, via = option.partition(" ")
    target: Path = warm_dataset / "cat" / ("cache" if flag == "--cache-dir" else "out")
    if via:  # a link outside the dataset that points into it
        link = tmp_path / "link"
        link.symlink_to(warm_dataset / "cat")
        target = link / "inside"
    args: list[str | Path] = [flag, target]
    if flag != "--cache-dir":
        args += ["--cache-dir", session_cache_dir]
    if flag == "--output-dir":
        args.append("--run")
    before = tree_digest(warm_dataset)
    code, out, err = cli(capsys, warm_dataset, *args)
    assert code == 2 and out == "" and "inside the dataset" in err
    assert "scanned" not in err  # refused before the scan
    assert tree_digest(warm_dataset) == before


@pytest.mark.parametrize("flag", ["-o", "--html", "--cache-dir"])
def test_a_manifest_datasets_image_folder_is_refused_as_a_write_path(capsys: pytest.CaptureFixture[str],
                                                                      tmp_path: Path, flag: str) -> None:
    """The dataset of a manifest is the folder its images are in, which the manifest need not share: known
    only once the scan has read it, and refused then, before anything is embedded or written."""
    images = make_class_folder(tmp_path / "images", {"a": 3, "b": 3})
    manifest = tmp_path / "labels.csv"
    manifest.write_text("path,label\n" + "".join(f"{p.relative_to(tmp_path).as_posix()},{p.parent.name}\n"
                                                 for p in sorted(images.rglob("*.png"))))
    target = images / ("cache" if flag == "--cache-dir" else "report.txt")
    args: list[str | Path] = [flag, target] + ([] if flag == "--cache-dir" else ["--cache-dir", tmp_path / "cache"])
    before = tree_digest(images)
    code, out, err = cli(capsys, manifest, *args)
    assert code == 2 and out == "" and "inside the dataset" in err and str(images) in err
    assert "embedding" not in err and not (tmp_path / "cache").exists()
    assert tree_digest(images) == before


@pytest.mark.parametrize("target", ["file/report.txt", "file"])
def test_a_report_path_that_cannot_be_created_is_refused_before_the_scan(
        capsys: pytest.CaptureFixture[str], synthetic_dataset: Path, tmp_path: Path, target: str) -> None:
    (tmp_path / "file").write_text("a file, not a folder")
    code, out, err = cli(capsys, synthetic_dataset, "--html", tmp_path / "x.html", "-o", tmp_path / target / "r.txt")
    assert code == 2 and out == "" and "The report file (-o)" in err and "is a file, not a folder" in err
    assert "scanned" not in err


@pytest.mark.parametrize("seed", ["-1", str(2**32), "99999999999999999999"])
def test_a_seed_out_of_numpys_range_is_refused(capsys: pytest.CaptureFixture[str], synthetic_dataset: Path,
                                               seed: str) -> None:
    code, out, err = cli(capsys, synthetic_dataset, "--seed", seed)
    assert code == 2 and out == "" and "--seed" in err and "0<=x<=4294967295" in err
    with pytest.raises(ConfigError, match="out of range"):
        advise(synthetic_dataset, seed=int(seed))


def test_a_torchrun_world_size_that_is_not_a_number_is_bad_input(capsys: pytest.CaptureFixture[str],
                                                                 synthetic_dataset: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "abc")
    code, out, err = cli(capsys, synthetic_dataset)
    assert out == ""
    assert code == 2 and "WORLD_SIZE='abc'" in err and "unset it" in err


def test_the_api_refuses_a_cache_inside_the_dataset(synthetic_dataset: Path) -> None:
    with pytest.raises(ConfigError, match="inside the dataset"):
        advise(synthetic_dataset, cache_dir=synthetic_dataset / ".cache")


# --------------------------------------------------------------------------- 8. the device, whatever the cache


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_refused_warm_or_cold(capsys: pytest.CaptureFixture[str], warm_dataset: Path,
                                                   session_cache_dir: Path, tmp_path: Path) -> None:
    for cache in (session_cache_dir, tmp_path / "cold-cache"):
        code, out, err = cli(capsys, warm_dataset, "--cache-dir", cache, "--device", "cuda")
        assert code == 2 and out == "" and "CUDA is not available" in err and "scanned" not in err


# --------------------------------------------------------------------------- options and cheap checks first


def test_run_only_options_without_run_are_refused(capsys: pytest.CaptureFixture[str], warm_dataset: Path,
                                                  session_cache_dir: Path) -> None:
    code, out, err = cli(capsys, warm_dataset, "--cache-dir", session_cache_dir, "--budget", "3ep",
                         "--image-size", "32", "--output-dir", "x", "--head-lr", "0.1")
    assert code == 2 and out == ""
    assert "--budget, --output-dir, --image-size, --head-lr only work with --run" in err
    assert "scanned" not in err


@pytest.mark.parametrize(("args", "message"), [
    (["-v", "-q"], "-v asks for more logging and -q for less: give one of them"),
    (["--all-images", "--per-class", "5"], "--all-images embeds every image, and --per-class limits the sample"),
    (["--all-images", "--per-class", "5", "--max-images", "9"], "and --per-class and --max-images limit the sample"),
])
def test_options_typed_together_that_contradict_are_refused_before_the_scan(
        capsys: pytest.CaptureFixture[str], warm_dataset: Path, session_cache_dir: Path, args: list[str],
        message: str) -> None:
    code, out, err = cli(capsys, warm_dataset, "--cache-dir", session_cache_dir, *args)
    assert code == 2 and out == "" and message in err and "scanned" not in err


def test_compare_beside_strategies_is_refused_before_the_scan(capsys: pytest.CaptureFixture[str],
                                                               warm_dataset: Path, tmp_path: Path) -> None:
    """The explicit list would win and --compare be dropped without a word."""
    code, out, err = cli(capsys, warm_dataset, "--run", "--compare", "--strategies", "feature_extraction",
                         "--output-dir", tmp_path / "out")
    assert code == 2 and out == "" and "scanned" not in err
    assert "--compare trains the recommendation's alternatives and --strategies exactly the strategies it lists: " \
           "give one of them" in err
    assert not (tmp_path / "out").exists()


def test_run_only_defaults_from_the_environment_do_not_block_an_advice(capsys: pytest.CaptureFixture[str],
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      warm_dataset: Path,
                                                                      session_cache_dir: Path) -> None:
    monkeypatch.setenv("TL_ADVISE_IMAGE_SIZE", "32")  # a default for runs, set once for a project
    code, _, _ = cli(capsys, warm_dataset, "--cache-dir", session_cache_dir, "--format", "json")
    assert code == 0


def test_missing_weights_file_is_reported_before_the_scan(capsys: pytest.CaptureFixture[str], warm_dataset: Path,
                                                          session_cache_dir: Path, tmp_path: Path) -> None:
    code, _, err = cli(capsys, warm_dataset, "--cache-dir", session_cache_dir, "--weights", tmp_path / "no.pt")
    assert code == 2 and "does not exist" in err and "scanned" not in err


# --------------------------------------------------------------------------- 5. cache state and seeded runs


@pytest.mark.slow
def test_seeded_run_is_identical_with_a_cold_cache_a_warm_cache_and_no_cache(tmp_path: Path) -> None:
    data = make_class_folder(tmp_path / "data", {"a": 5, "b": 5}, seed=9)
    options = {"strategies": ["feature_extraction", "finetune_last_layers"], "head_epochs": 1,
               "finetune_epochs": 1, "image_size": 32, "progress": False, "num_workers": 0, "patience": 5}
    cache = tmp_path / "cache"
    results = []
    for name, kwargs in (("none", {"use_cache": False}), ("cold", {"cache_dir": cache}),
                         ("warm", {"cache_dir": cache})):
        session = advise_session(data, device="cpu", **kwargs)  # type: ignore[arg-type]
        assert (session.result.sample.forward_passes == 0) == (name == "warm")
        report = run_advice(session, RunOptions(output_dir=tmp_path / name, **options))
        results.append([(r.strategy, r.status, [(c.train_loss, c.val_loss) for c in r.curves], r.val)
                        for r in report.runs])
    assert results[0] == results[1] == results[2]
    assert all(status == "completed" for _, status, _, _ in results[0])


@pytest.mark.slow
def test_embedding_leaves_the_global_rng_alone(synthetic_dataset: Path) -> None:
    from tl_advise.advisor.measure.images.backbones import load_backbone
    from tl_advise.advisor.measure.images.embed import embed

    backbone = load_backbone()
    records = scan_dataset(synthetic_dataset).records[:3]
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    embed(backbone, records, root=synthetic_dataset, device=torch.device("cpu"), collect_bn=False, num_workers=0)
    assert torch.equal(torch.rand(3), expected)


def test_corpus_entries_exist_for_every_kind(tmp_path: Path) -> None:
    """The builder itself: every kind writes something the file system holds (links included)."""
    from corpus import KINDS

    for i, kind in enumerate(KINDS):
        add_entry(tmp_path / "data", kind, "cat", seed=i)
    names = os.listdir(os.fsencode(tmp_path / "data" / "cat"))
    assert b"0_empty.png" in names and any(b"\xff" in n for n in names) and any(b"\n" in n for n in names)
    assert os.path.islink(tmp_path / "data" / "cat" / f"{KINDS.index('dangling_symlink')}_dangling.png")
