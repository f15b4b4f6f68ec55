"""The ``tl-advise`` command line.

``tl-advise DATA`` is short for ``tl-advise advise DATA``; ``predict`` and ``schema`` live in
``cli/pipeline_commands.py``. The report goes to stdout (or ``-o``); logs and
progress go to stderr. Exit codes: 0 advice given, 1 a ``--fail-on`` condition held, 2 bad usage or input
(or missing weights), 3 an internal error (a bug), 130 interrupted.
"""

from __future__ import annotations

import logging
import math
import os
import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from tl_advise.advisor.data.modality import MODALITIES, detect_modality
from tl_advise.advisor.defaults import (
    DEFAULT_BACKBONE,
    DEFAULT_DEVICE,
    DEFAULT_ENGINE,
    DEFAULT_PER_CLASS,
    DEFAULT_RUN_DIR,
    DEFAULT_SEED,
    DEFAULT_TOTAL,
    DEVICE_CHOICES,
    ENGINE_CHOICES,
    MAX_SEED,
)
from tl_advise.advisor.report import OutputFormat
from tl_advise.cli.cache_commands import cache_group
from tl_advise.cli.pipeline_commands import predict_command, schema_command
from tl_advise.schema.errors import (
    EXIT_BAD_INPUT,
    EXIT_FINDING,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    ConfigError,
    TLAdviseError,
)
from tl_advise.schema.formatting import counted
from tl_advise.schema.models import AUDIT_MODES, STRATEGY_IDS, printable
from tl_advise.schema.run_options import RunOptions

logger = logging.getLogger("tl_advise")

FORMATS = tuple(f.value for f in OutputFormat)
FAIL_ON = ("warning", "refuted")
RUN_DEFAULTS = {name: field.default for name, field in RunOptions.model_fields.items()}
_BUDGET_PART = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ep|epochs?|s|sec|m|min|h)\s*$", re.IGNORECASE)
_SECONDS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}


def parse_budget(text: str | None) -> tuple[int | None, float | None]:
    """``"3ep,10m"`` → (3 epochs per phase, 600 s per strategy); either part may be left out."""
    if not text:
        return None, None
    epochs: int | None = None
    seconds: float | None = None
    for part in text.split(","):
        match = _BUDGET_PART.match(part)
        if not match:
            raise ConfigError(f"--budget {text!r}: each part must look like 3ep, 90s, 10m or 1h")
        value, unit = float(match.group(1)), match.group(2).lower()
        if unit.startswith("ep"):
            if value < 1 or value != int(value):
                raise ConfigError(f"--budget {text!r}: the epoch limit must be a whole number of at least 1")
            epochs = int(value)
        else:
            if value <= 0:
                raise ConfigError(f"--budget {text!r}: the time limit must be more than 0")
            seconds = value * _SECONDS[unit]
    return epochs, seconds


def parse_strategies(text: str | None, known: Sequence[str], modality: str = "") -> list[str] | None:
    """``--strategies a,b`` or ``all`` (every one of ``known``); None when not given."""
    if not text:
        return None
    names = [s.strip() for s in text.split(",") if s.strip()]
    strategies = list(known) if names == ["all"] else names
    unknown = sorted(set(strategies) - set(known))
    if unknown or not strategies:
        raise ConfigError(f"--strategies: unknown {', '.join(unknown) or 'empty list'}"
                          f"{f' for a {modality} dataset' if modality else ''}; choose from {', '.join(known)} "
                          "or 'all'")
    return strategies


def parse_margin(text: str) -> float | str:
    """``--margin``: 'auto' (one s.e. of the paired gap to the best, ``tl_advise.rules.statistics``) or a fixed
    accuracy gap in [0, 1]."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value <= 1:
        raise ConfigError(f"--margin {text!r}: use 'auto' or an accuracy gap between 0 and 1, e.g. 0.01")
    return value


def configure_logging(verbose: int, quiet: bool) -> None:
    """Logs of the ``tl_advise`` loggers to stderr for as long as the running command: called in-process (click's
    CliRunner, a pipeline calling ``cli.main``), the library's logging is as it was once the command returns, not
    bound to a stream the caller may have closed."""
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("tl-advise: %(levelname)s: %(message)s" if verbose
                                           else "tl-advise: %(message)s"))
    root = logging.getLogger("tl_advise")
    before = (root.handlers[:], root.level, root.propagate)
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.call_on_close(lambda: _restore_logging(root, *before))


def _restore_logging(logger: logging.Logger, handlers: list[logging.Handler], level: int, propagate: bool) -> None:
    logger.handlers[:] = handlers
    logger.setLevel(level)
    logger.propagate = propagate


def env(name: str) -> str:
    return f"TL_ADVISE_{name}"


class _AdviseByDefault(click.Group):
    """``tl-advise ./data`` runs the ``advise`` command; the other commands keep their names."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] != "--version"):
            args = ["advise", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_AdviseByDefault)
@click.version_option(package_name="tl-advise", prog_name="tl-advise")
def cli() -> None:
    """Measured transfer-learning advice for an image or text classification dataset."""


_EPILOG = """\b
Other commands:
  tl-advise rules show [--toml]     the effective decision rules
  tl-advise rules validate FILE     check a rules file
  tl-advise backbones [--all]       the backbones you can name with --backbone
  tl-advise sample-data DIR         write scikit-learn's digits as an image folder
  tl-advise rank-backbones DATA     which backbone to fine-tune (--candidates A,B,C)
  tl-advise predict MODEL INPUTS…   classify images or texts with a model trained by --run
  tl-advise schema [KIND]           the JSON Schema of a report: advice, text-advice, predictions, …
  tl-advise cache info|clear        what the cache holds (embeddings, exported graphs); remove it

Every option can also be set with an environment variable TL_ADVISE_<OPTION> (e.g. TL_ADVISE_FORMAT=json)
or in [tool.tl-advise] of a pyproject.toml; the command line wins.
\b
Exit codes: 0 advice given; 1 a --fail-on condition held; 2 bad usage or input; 3 internal error."""


@cli.command("advise", epilog=_EPILOG, context_settings={"max_content_width": 100})
@click.argument("data", type=click.Path(path_type=Path), envvar=env("DATA"))
@click.option("--image-root", type=click.Path(path_type=Path, file_okay=False), envvar=env("IMAGE_ROOT"),
              help="For a label manifest: the folder its relative paths start from [default: the manifest's].")
@click.option("--path-column", envvar=env("PATH_COLUMN"),
              help="For a label manifest: the column with the image paths [default: detected].")
@click.option("--label-column", envvar=env("LABEL_COLUMN"),
              help="For a label manifest: the column with the labels [default: detected].")
@click.option("--split-column", envvar=env("SPLIT_COLUMN"),
              help="For a label manifest: the column with train/val/test [default: detected].")
@click.option("--modality", type=click.Choice(MODALITIES), default="auto", show_default=True, envvar=env("MODALITY"),
              help="Read DATA as images or as texts; auto: from its layout (tables' columns, files' suffixes).")
@click.option("--text-column", envvar=env("TEXT_COLUMN"),
              help="Texts: the table's text column (default: detected, e.g. text, sentence, review).")
@click.option("--backbone", default=DEFAULT_BACKBONE, show_default=True, envvar=env("BACKBONE"),
              help="efficientnet_lite0 (embedded, offline) or any torchvision model, e.g. resnet50 or "
                   "mobilenet_v2:IMAGENET1K_V1.")
@click.option("--weights", type=click.Path(path_type=Path), envvar=env("WEIGHTS"),
              help="A local checkpoint (state_dict) for --backbone, loaded with weights_only=True.")
@click.option("--for", "target", metavar="BACKBONE", envvar=env("FOR"),
              help="Advise for this backbone (any --backbone name, timm's too): --backbone measures the similarity, "
                   "the recipe is mapped onto BACKBONE's stages and preprocessing, --weights and --run are BACKBONE's.")
@click.option("--rules", "rules_file", type=click.Path(path_type=Path), envvar=env("RULES"),
              help="A rules file overriding the packaged decision table (see `tl-advise rules show --toml`).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=OutputFormat.TEXT.value, show_default=True,
              envvar=env("FORMAT"), help="Report format.")
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), envvar=env("OUTPUT"),
              help="Write the report to this file instead of stdout.")
@click.option("--html", "html_path", type=click.Path(path_type=Path, dir_okay=False), envvar=env("HTML"),
              help="Also write a self-contained HTML report (charts, sample images) to this file.")
@click.option("--fail-on", type=click.Choice(FAIL_ON), multiple=True, envvar=env("FAIL_ON"),
              help="Exit 1 when a warning fired / when --run refutes the advice. Repeatable.")
@click.option("--device", type=click.Choice(DEVICE_CHOICES), default=DEFAULT_DEVICE, show_default=True,
              envvar=env("DEVICE"))
@click.option("--engine", type=click.Choice(ENGINE_CHOICES), default=DEFAULT_ENGINE, show_default=True,
              envvar=env("ENGINE"),
              help="What runs the advice's forward pass: onnx (ONNX Runtime on the CPU; the backbone is exported "
                   "once into the cache, and a cold advice then never imports torch), torch, or auto (onnx "
                   "where it can, else torch with one log line). Training always uses torch.")
@click.option("--seed", type=click.IntRange(0, MAX_SEED), default=DEFAULT_SEED, show_default=True, envvar=env("SEED"),
              help="Seed for the sample, the cross-validation folds and training.")
@click.option("--per-class", type=click.IntRange(min=2), default=DEFAULT_PER_CLASS, show_default=True,
              envvar=env("PER_CLASS"), help="At most this many images per class are embedded.")
@click.option("--max-images", type=click.IntRange(min=2), default=DEFAULT_TOTAL, show_default=True,
              envvar=env("MAX_IMAGES"), help="At most this many images are embedded in all.")
@click.option("--all-images", is_flag=True, envvar=env("ALL_IMAGES"),
              help="Embed every image (no per-class or total cap).")
@click.option("--audit", type=click.Choice(AUDIT_MODES), envvar=env("AUDIT"),
              help="Image headers to read: 'all', or 'sample' (a seeded share of 10,000 files plus the embedded "
                   "sample; every file in a smaller dataset). Listing, sizes and duplicates always cover every "
                   "file. [default: sample; all with --run, which decodes every file anyway]")
@click.option("--cache-dir", type=click.Path(path_type=Path, file_okay=False), envvar=env("CACHE_DIR"),
              help="Where embeddings are cached [default: the user cache dir].")
@click.option("--no-cache", is_flag=True, envvar=env("NO_CACHE"), help="Neither read nor write the cache.")
@click.option("--embed-batch-size", type=click.IntRange(min=1), default=None, envvar=env("EMBED_BATCH_SIZE"),
              help="Images per forward pass while embedding [default: 8 with ONNX Runtime, whose memory grows "
                   "with it, 32 with PyTorch].")
@click.option("--workers", type=click.IntRange(min=0), envvar=env("WORKERS"),
              help="Images decoded in parallel while embedding: threads (ONNX Runtime engine) or DataLoader "
                   "processes (PyTorch) [default: min(4, CPUs)].")
@click.option("--run", "run_", is_flag=True, envvar=env("RUN"),
              help="Also train the recommended strategy and report whether the result confirms it.")
@click.option("--compare", is_flag=True, envvar=env("COMPARE"),
              help="With --run: also train the recommendation's alternatives under the same budget.")
@click.option("--strategies", envvar=env("STRATEGIES"),
              help="With --run: train exactly these (comma-separated ids, or 'all').")
@click.option("--budget", envvar=env("BUDGET"),
              help="With --run: per-strategy limits, e.g. '3ep' (epochs per phase), '10m', or '3ep,10m'.")
@click.option("--output-dir", type=click.Path(path_type=Path, file_okay=False), default=DEFAULT_RUN_DIR,
              show_default=True, envvar=env("OUTPUT_DIR"), help="With --run: where models, metrics and reports go.")
@click.option("--resume", is_flag=True, envvar=env("RESUME"), help="With --run: continue an interrupted run.")
@click.option("--image-size", type=click.IntRange(min=16), envvar=env("IMAGE_SIZE"),
              help="With --run: train at this input size instead of the backbone's (faster on a CPU).")
@click.option("--head-epochs", type=click.IntRange(min=0), envvar=env("HEAD_EPOCHS"))
@click.option("--finetune-epochs", type=click.IntRange(min=0), envvar=env("FINETUNE_EPOCHS"))
@click.option("--head-lr", type=click.FloatRange(min=0, min_open=True), envvar=env("HEAD_LR"))
@click.option("--backbone-lr", type=click.FloatRange(min=0, min_open=True), envvar=env("BACKBONE_LR"))
@click.option("--batch-size", type=click.IntRange(min=1), envvar=env("BATCH_SIZE"),
              help="With --run: training batch size instead of the recommended one.")
@click.option("--max-train-per-class", type=click.IntRange(min=1), envvar=env("MAX_TRAIN_PER_CLASS"),
              help="With --run: train on at most this many images per class (seeded).")
@click.option("--margin", default=RUN_DEFAULTS["margin"], show_default=True, envvar=env("MARGIN"),
              help="With --run: within this accuracy of the best counts as confirmed; 'auto' is one standard "
                   "error of the gap to the best, paired image by image on the judging split (the benchmark's tie).")
@click.option("--tensorboard/--no-tensorboard", default=None, envvar=env("TENSORBOARD"),
              help="With --run: TensorBoard scalars in OUTPUT_DIR/tensorboard [default: when installed].")
@click.option("--mlflow/--no-mlflow", default=None, envvar=env("MLFLOW"),
              help="With --run: track the run in MLflow (MLFLOW_TRACKING_URI, else MLflow's default store) "
                   "[default: when MLFLOW_TRACKING_URI is set].")
@click.option("--mlflow-experiment", default=RUN_DEFAULTS["mlflow_experiment"], show_default=True,
              envvar=[env("MLFLOW_EXPERIMENT"), "MLFLOW_EXPERIMENT_NAME"], help="With --run: the MLflow experiment.")
@click.option("--progress/--no-progress", default=None, envvar=env("PROGRESS"),
              help="Progress bars on stderr [default: when stderr is a terminal].")
@click.option("--nproc-per-node", type=click.IntRange(min=1), default=1, show_default=True,
              envvar=env("NPROC_PER_NODE"),
              help="With --run: train data-parallel in this many processes (one per GPU; gloo on the CPU), "
                   "launched as torchrun would. Under torchrun itself, leave it out.")
@click.option("--explain", is_flag=True, envvar=env("EXPLAIN"),
              help="The text report with its evidence: the similarity signals, every rule that fired, each "
                   "alternative's reason, the sample and timings (-v too). Other formats always carry it.")
@click.option("-v", "--verbose", count=True, help="More logging on stderr (-v: debug) and --explain.")
@click.option("-q", "--quiet", is_flag=True, envvar=env("QUIET"), help="Only warnings and errors on stderr.")
def advise_command(**opts: Any) -> int:
    """Recommend how to transfer a pretrained backbone to the dataset DATA.

    DATA is an image folder laid out as DATA/<class>/<images> or DATA/{train,val,test}/<class>/<images>,
    or a label manifest (.csv, .tsv, .jsonl, .parquet) with an image path column, a label column and
    optionally a split column; a folder with a Hugging Face metadata.csv beside its images is read as one.

    Texts: a table with a text column and a label column, a folder of split tables (train.csv,
    validation.csv, test.csv) or class folders of .txt files; the modality is detected (--modality).
    """
    configure_logging(opts["verbose"], opts["quiet"])
    progress = opts["progress"] if opts["progress"] is not None else (sys.stderr.isatty() and not opts["quiet"])
    modality = opts["modality"] if opts["modality"] != "auto" else detect_modality(
        opts["data"], text_column=opts["text_column"], path_column=opts["path_column"])
    if modality == "text":
        from tl_advise.cli.text import advise_text_command

        return advise_text_command(opts, progress)
    if opts["text_column"]:
        raise ConfigError(f"--text-column applies to text datasets, and {opts['data']} is read as images: leave it "
                          "out (or say --modality text)")
    run_options = _checked_options(opts, progress)  # everything cheap, before the scan and the embedding
    if _torchrun_processes(opts, run_options is not None) > 1:
        world = _join_process_group(opts["device"])
    elif opts["nproc_per_node"] > 1:  # this process launches the workers (torchrun's way) and waits for them
        from tl_advise.runners.launch import launch_local

        return launch_local(opts["nproc_per_node"], (click.get_current_context().obj or {}).get("argv", sys.argv[1:]))
    else:
        world = None
    main_process = world is None or world.is_main
    from tl_advise.advisor.api import advise_session
    from tl_advise.advisor.report import render

    def session_of_the_advice() -> Any:
        return advise_session(
            opts["data"], backbone=opts["backbone"], weights=opts["weights"], rules=opts["rules_file"],
            device=opts["device"], engine=opts["engine"], seed=opts["seed"],
            per_class=None if opts["all_images"] else opts["per_class"],
            max_images=None if opts["all_images"] else opts["max_images"],
            cache_dir=opts["cache_dir"], use_cache=not opts["no_cache"], batch_size=opts["embed_batch_size"],
            num_workers=opts["workers"], progress=progress and main_process, manifest=_manifest_options(opts),
            audit=opts["audit"] or ("all" if run_options is not None else "sample"),
            target=opts["target"],
            max_train_per_class=run_options.max_train_images_per_class if run_options else None,
            writes={"The report file (-o)": opts["output"], "The HTML report (--html)": opts["html_path"],
                    "The output folder (--output-dir)": run_options.output_dir if run_options else None},
        )

    if world is not None:  # the advice once, on rank 0; every rank trains the same recommendation
        from tl_advise.runners.launch import shared_session

        session = shared_session(session_of_the_advice)
    else:
        session = session_of_the_advice()
    result = session.result
    if run_options is not None:
        from tl_advise.runners import run_advice

        report_of_run = run_advice(session, run_options.model_copy(update={"progress": progress and main_process}))
        result = session.result.model_copy(update={"run": report_of_run})
    if not main_process:
        return EXIT_OK  # rank 0 reports for the whole distributed run
    report = render(result, opts["fmt"], explain=opts["explain"] or opts["verbose"] > 0)
    if opts["output"]:
        from tl_advise.advisor.writable import atomic_write_text

        atomic_write_text(report, opts["output"])  # a failed write keeps the previous report
        logger.info("report written to %s", opts["output"])
    else:
        click.echo(report, nl=False)
    if opts["html_path"]:
        _write_html(session, result, opts["html_path"])
    rec = result.recommendation
    logger.info("%s (rule %s, similarity %.2f %s, %s)", rec.strategy, rec.rule_id,
                result.similarity.score, result.similarity.label, counted(len(rec.warnings), "warning"))
    return _exit_code(result, set(opts["fail_on"]))


def _torchrun_processes(opts: dict[str, Any], run: bool) -> int:
    """How many processes torchrun started this one among (1 outside torchrun), read from its environment
    without importing torch; several processes (torchrun or --nproc-per-node) need --run."""
    world_size = os.environ.get("WORLD_SIZE", "1") or "1"
    if not world_size.isdigit():
        raise ConfigError(f"WORLD_SIZE={world_size!r} in the environment is not a number of processes: torchrun "
                          "sets it; outside torchrun unset it")
    launched = int(world_size)
    if (launched > 1 or opts["nproc_per_node"] > 1) and not run:
        raise ConfigError("several processes (torchrun or --nproc-per-node) only help --run: add --run, or "
                          "advise in one process")
    return launched


def _join_process_group(device: str) -> Any:
    """Join torchrun's process group until the command ends; this process's ``World`` (rank, size)."""
    from tl_advise.runners.distributed import launched_world, process_group
    from tl_advise.runners.launch import quiet_unless_main

    quiet_unless_main(launched_world())
    return click.get_current_context().with_resource(process_group(device))


def _manifest_options(opts: dict[str, Any]) -> Any:
    from tl_advise.advisor.data.images.manifest import ManifestOptions

    return ManifestOptions(image_root=opts["image_root"], path_column=opts["path_column"],
                           label_column=opts["label_column"], split_column=opts["split_column"])


# Options that only mean something with --run. On the command line without --run they are refused (as
# click refuses conflicting options); from TL_ADVISE_* or pyproject.toml they are defaults for runs.
RUN_ONLY_OPTIONS = ("compare", "strategies", "budget", "output_dir", "resume", "image_size", "head_epochs",
                    "finetune_epochs", "head_lr", "backbone_lr", "batch_size", "max_train_per_class", "margin",
                    "tensorboard", "mlflow", "mlflow_experiment", "nproc_per_node")
# RunOptions field -> the option that sets it, for messages.
RUN_OPTION_FLAGS = {
    "output_dir": "--output-dir", "strategies": "--strategies", "max_epochs": "--budget",
    "time_budget_s": "--budget", "head_epochs": "--head-epochs", "finetune_epochs": "--finetune-epochs",
    "head_lr": "--head-lr", "backbone_lr": "--backbone-lr", "batch_size": "--batch-size",
    "image_size": "--image-size", "max_train_images_per_class": "--max-train-per-class", "margin": "--margin",
    "num_workers": "--workers", "seed": "--seed",
}


def _flag(name: str) -> str:
    param = next(p for p in advise_command.params if p.name == name)
    return max(param.opts, key=len)


def typed_on_command_line(names: Sequence[str]) -> list[str]:
    """Those of ``names`` (parameter names) given on the command line, not by the environment, pyproject.toml or
    a default."""
    from click.core import ParameterSource

    ctx = click.get_current_context()
    return [name for name in names if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE]


def check_run_only(opts: dict[str, Any], names: Sequence[str] = RUN_ONLY_OPTIONS) -> None:
    """Refuse the options of ``names`` typed on the command line without --run (from the environment or
    pyproject.toml they are defaults for runs)."""
    typed = typed_on_command_line(names)
    if typed and not opts["run_"]:
        one = len(typed) == 1
        raise ConfigError(f"{', '.join(_flag(n) for n in typed)} only {'works' if one else 'work'} with --run: "
                          f"add --run, or leave {'it' if one else 'them'} out")


def check_typed_together() -> None:
    """Refuse options typed together that contradict each other (one of them would be silently dropped).
    (--fail-on refuted without --run is allowed: one pipeline line serves runs and plain advice.)"""
    typed = set(typed_on_command_line(("verbose", "quiet", "all_images", "per_class", "max_images", "compare",
                                       "strategies")))
    if {"verbose", "quiet"} <= typed:
        raise ConfigError("-v asks for more logging and -q for less: give one of them")
    limits = [_flag(n) for n in ("per_class", "max_images") if n in typed]
    if "all_images" in typed and limits:
        raise ConfigError(f"--all-images embeds every image, and {' and '.join(limits)} "
                          f"{'limits' if len(limits) == 1 else 'limit'} the sample: give one of them")
    if {"compare", "strategies"} <= typed:  # the list would silently win
        raise ConfigError("--compare trains the recommendation's alternatives and --strategies exactly the strategies "
                          "it lists: give one of them (to compare strategies of your choice, list them all in "
                          "--strategies)")


def _checked_options(opts: dict[str, Any], progress: bool) -> Any:
    """Refuse bad options and write paths before any heavy work; the run's options when --run is given."""
    from tl_advise.advisor.writable import check_can_create, check_write_path

    check_run_only(opts)
    check_typed_together()
    data = opts["data"]
    for path, what in ((opts["output"], "The report file (-o)"), (opts["html_path"], "The HTML report (--html)")):
        if path:
            check_write_path(path, data, what)
            check_can_create(path, what)
    if opts["cache_dir"] and not opts["no_cache"]:
        check_write_path(opts["cache_dir"], data, "The cache folder (--cache-dir)")
    if not opts["run_"]:
        return None
    from tl_advise.runners.options import check_output_dir, run_options

    epochs, seconds = parse_budget(opts["budget"])
    strategies = parse_strategies(opts["strategies"], STRATEGY_IDS)
    options = run_options(dict(
        output_dir=opts["output_dir"], compare=opts["compare"], strategies=strategies, max_epochs=epochs,
        time_budget_s=seconds, head_epochs=opts["head_epochs"], finetune_epochs=opts["finetune_epochs"],
        head_lr=opts["head_lr"], backbone_lr=opts["backbone_lr"], batch_size=opts["batch_size"],
        image_size=opts["image_size"], max_train_images_per_class=opts["max_train_per_class"],
        margin=parse_margin(opts["margin"]), device=opts["device"], seed=opts["seed"], resume=opts["resume"],
        progress=progress, num_workers=opts["workers"], tensorboard=opts["tensorboard"], mlflow=opts["mlflow"],
        mlflow_experiment=opts["mlflow_experiment"],
    ), RUN_OPTION_FLAGS)
    check_output_dir(options.output_dir, data, "The output folder (--output-dir)")
    check_can_create(options.output_dir, "The output folder (--output-dir)")
    # A tracker asked for but not installed, or a tracking store MLflow refuses, fails now: before the advice.
    from tl_advise.runners.tracking import check_available, check_tracking_store

    check_available(tensorboard=options.tensorboard, mlflow=options.mlflow)
    check_tracking_store(mlflow=options.mlflow)
    return options


def _write_html(session: Any, result: Any, path: Path) -> None:
    from tl_advise.advisor.report.html import render_html, write_html
    from tl_advise.advisor.report.thumbnails import class_thumbnails

    page = render_html(result, class_thumbnails(session.scan, seed=result.sample.seed))
    logger.info("HTML report written to %s", write_html(page, path, session.scan.root))


def _exit_code(result: Any, fail_on: set[str]) -> int:
    if "warning" in fail_on and result.recommendation.warnings:
        return EXIT_FINDING
    run = getattr(result, "run", None)
    if "refuted" in fail_on and run is not None and run.verdict.status == "refuted":
        return EXIT_FINDING
    return EXIT_OK


@cli.group("rules")
def rules_group() -> None:
    """Show or check the decision rules."""


@rules_group.command("show")
@click.option("--rules", "rules_file", type=click.Path(path_type=Path), envvar=env("RULES"),
              help="Show this rules file (merged onto the default) instead of the packaged one.")
@click.option("--toml", "as_toml", is_flag=True, help="Print the packaged default rules file, with its comments.")
@click.option("--modality", type=click.Choice(("image", "text")), default="image", show_default=True,
              help="Which packaged rules: the image decision table or the text one.")
def rules_show(rules_file: Path | None, as_toml: bool, modality: str) -> int:
    """Print the effective rules (JSON), or the packaged TOML to start an override from."""
    from tl_advise.rules import default_rules_text, dump_rules, load_rules
    from tl_advise.rules.text_schema import default_text_rules_text, load_text_rules

    if modality == "text":
        text = default_text_rules_text() if as_toml else load_text_rules(rules_file).model_dump_json(indent=2)
    else:
        text = default_rules_text() if as_toml else dump_rules(load_rules(rules_file))
    click.echo(text, nl=not as_toml)
    return EXIT_OK


@rules_group.command("validate")
@click.argument("rules_file", type=click.Path(path_type=Path))
@click.option("--modality", type=click.Choice(("auto", "image", "text")), default="auto", show_default=True,
              help="Check it as image or text rules; auto: text when its rows or strategies are text strategies.")
def rules_validate(rules_file: Path, modality: str) -> int:
    """Check RULES_FILE: exit 0 when valid, 2 with every problem and its location otherwise."""
    from tl_advise.rules import load_rules
    from tl_advise.rules.text_schema import is_text_rules_file, load_text_rules

    if modality == "text" or (modality == "auto" and is_text_rules_file(rules_file)):
        text_rules = load_text_rules(rules_file)
        click.echo(f"{rules_file}: valid text rules ({len(text_rules.decision)} decision rows, "
                   f"{len(text_rules.strategies)} strategies)")
        return EXIT_OK
    rules = load_rules(rules_file)
    click.echo(f"{rules_file}: valid ({len(rules.decision)} decision rows, {len(rules.strategies)} strategies)")
    return EXIT_OK


@cli.command("backbones")
@click.option("--all", "show_all", is_flag=True, help="Also list every torchvision classification model.")
def backbones_command(show_all: bool) -> int:
    """List the backbones --backbone accepts."""
    from tl_advise.advisor.measure.images.backbones import built_in_backbones

    for name, entry in built_in_backbones().items():
        click.echo(f"{name:24s} {entry.description}")
    if show_all:
        from tl_advise.advisor.measure.images.backbones.torchvision_models import classification_models

        for name in classification_models():
            click.echo(f"{name:24s} torchvision (weights from the torch hub cache or a download)")
    else:
        click.echo("…and every torchvision classification model by name (tl-advise backbones --all)")
    return EXIT_OK


@cli.command("sample-data")
@click.argument("target", type=click.Path(path_type=Path, file_okay=False))
@click.option("--name", type=click.Choice(("digits",)), default="digits", show_default=True)
def sample_data_command(target: Path, name: str) -> int:
    """Write a small sample dataset (scikit-learn's handwritten digits) to TARGET/<class>/<image>.png."""
    from tl_advise.advisor.data.images.sample_data import write_digits

    configure_logging(0, False)
    write_digits(target)
    click.echo(f"{target}: sample dataset '{name}' ready; next: tl-advise {target}")
    return EXIT_OK


cli.add_command(predict_command)
cli.add_command(schema_command)
cli.add_command(cache_group)


def _long_option_names() -> dict[str, str]:
    """``{"format": "fmt", "per-class": "per_class", …}``: what a pyproject key may be called."""
    names: dict[str, str] = {}
    for param in advise_command.params:
        if isinstance(param, click.Option) and param.name:
            names.update({opt[2:]: param.name for opt in param.opts if opt.startswith("--")})
        elif param.name:  # the DATA argument
            names[param.name] = param.name
    return names


def _multiple_value_options() -> set[str]:
    return {param.name for param in advise_command.params if param.multiple and param.name}


def _another_process_stopped(exc: Exception) -> bool:
    from tl_advise.runners.launch import peer_stopped

    return peer_stopped(exc)


def _set_by_configuration(param: click.Parameter, args: Sequence[str]) -> str | None:
    """Where a bad value came from when the command line did not give it: the TL_ADVISE_* variable or the
    pyproject.toml that set it (click's message names only the flag). None: typed, or not known."""
    from tl_advise.cli.config import TABLE, find_pyproject

    if any(a == o or a.startswith(f"{o}=") for a in args for o in param.opts):
        return None
    envvar = param.envvar if isinstance(param.envvar, str) else None
    if envvar and envvar in os.environ:
        return f"{envvar}={os.environ[envvar]}"
    pyproject = find_pyproject()
    return f"{pyproject}'s [tool.{TABLE}]" if pyproject is not None else None


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: maps every outcome onto a documented exit code, never a traceback."""
    from tl_advise.cli.config import pyproject_defaults

    args = list(sys.argv[1:] if argv is None else argv)
    # Very large images are named in our own warning (scan); Pillow's bare one would only repeat it.
    from PIL import Image

    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    try:
        advise_defaults = pyproject_defaults(_long_option_names(), lists=_multiple_value_options())
        default_map: dict[str, Any] = {"advise": advise_defaults}
        if "cache_dir" in advise_defaults:  # the cache commands look where the advice caches
            folder = {"cache_dir": advise_defaults["cache_dir"]}
            default_map["cache"] = {"info": folder, "clear": folder}
        code = cli.main(args=args, prog_name="tl-advise", standalone_mode=False, default_map=default_map,
                        obj={"argv": args})  # --nproc-per-node hands the same arguments to its workers
        return int(code or 0)
    except click.exceptions.Exit as exc:  # --help, --version
        return int(exc.exit_code)
    except click.BadParameter as exc:
        where = _set_by_configuration(exc.param, args) if exc.param is not None else None
        if exc.param is None or where is None:
            exc.show()
        else:
            click.echo(f"tl-advise: error: {where}: {exc.format_message().rstrip('.')}; correct it there, or give "
                       f"{max(exc.param.opts, key=len)} on the command line", err=True)
        return EXIT_BAD_INPUT
    except click.UsageError as exc:
        exc.show()
        return EXIT_BAD_INPUT
    except click.ClickException as exc:
        exc.show()
        return EXIT_BAD_INPUT
    except TLAdviseError as exc:
        click.echo(f"tl-advise: error: {exc}", err=True)
        return EXIT_BAD_INPUT
    except OSError as exc:  # the environment, not a bug: a full disk, a read-only folder, a vanished file
        where = f" ({printable(os.fsdecode(exc.filename))})" if exc.filename else ""
        click.echo(f"tl-advise: error: {exc.strerror or exc}{where}", err=True)
        logger.debug("traceback", exc_info=True)
        return EXIT_BAD_INPUT
    except (KeyboardInterrupt, click.exceptions.Abort):
        click.echo("tl-advise: interrupted (a --run keeps every finished epoch: run again with --resume)",
                   err=True)
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug: say so plainly, the traceback only with -v
        if os.environ.get("WORLD_SIZE") and _another_process_stopped(exc):
            click.echo(f"tl-advise: stopped: another process of this distributed run stopped ({exc}); a --run "
                       "keeps every finished epoch: run again with --resume", err=True)
            return EXIT_INTERRUPTED
        click.echo(f"tl-advise: internal error: {exc.__class__.__name__}: {exc} "
                   "(run with -v for the traceback, and please report it)", err=True)
        logger.debug("traceback", exc_info=True)
        return EXIT_INTERNAL


def console_main() -> None:  # pragma: no cover (what the installed `tl-advise` script runs)
    """``main()`` as a process: with torch loaded, the process ends without the interpreter's teardown. Unloading
    torch's libraries (their static destructors touch pages never touched before) raised the peak memory of a
    cold advice by about 120 MB, above everything it measured, and took a tenth of a second. Output is flushed
    and the ``atexit`` functions run first; a worker of a distributed run (``WORLD_SIZE``) ends normally."""
    code = main()
    if "torch" not in sys.modules or os.environ.get("WORLD_SIZE"):
        sys.exit(code)
    import atexit

    run_exitfuncs = getattr(atexit, "_run_exitfuncs", None)
    if run_exitfuncs is None:  # not CPython: the normal ending
        sys.exit(code)
    run_exitfuncs()  # logging.shutdown is one of them
    import contextlib

    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe (tl-advise ... | head): nothing to add
            stream.flush()
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
