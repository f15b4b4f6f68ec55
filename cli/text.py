"""``tl-advise DATA`` for a text dataset: the advice (and with ``--run`` the measurement) of the text modality,
reached from the advise command once DATA is read as text (``--modality``, or detected)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource
from pydantic import ValidationError

from tl_advise.advisor.defaults import DEFAULT_BACKBONE
from tl_advise.schema.errors import EXIT_FINDING, EXIT_OK, ConfigError
from tl_advise.schema.text import TEXT_STRATEGY_IDS, TextRunOptions

logger = logging.getLogger("tl_advise.cli")

# Options of the image modality: typed for a text dataset they would be silently ignored, so they are refused.
IMAGE_ONLY = ("image_root", "path_column", "target", "engine", "per_class", "max_images", "all_images", "audit",
              "embed_batch_size", "workers", "image_size", "head_lr", "backbone_lr", "nproc_per_node")


def _flag(name: str) -> str:
    return "--" + {"html_path": "html", "target": "for"}.get(name, name).replace("_", "-")


def check_text_options(opts: dict[str, Any]) -> None:
    """Image options refused; run options without --run refused as for images; a tracker asked for but not
    installed, or a tracking store MLflow refuses, refused: all before any work."""
    from tl_advise.cli.commands import RUN_ONLY_OPTIONS, check_run_only, check_typed_together, typed_on_command_line

    typed = typed_on_command_line(IMAGE_ONLY)
    if typed:
        one = len(typed) == 1
        raise ConfigError(f"{', '.join(_flag(n) for n in typed)} {'applies' if one else 'apply'} to image datasets, "
                          f"and {opts['data']} is read as text: leave {'it' if one else 'them'} out (or say "
                          "--modality image)")
    check_run_only(opts, [n for n in RUN_ONLY_OPTIONS if n not in IMAGE_ONLY])
    check_typed_together()
    if opts["run_"]:  # the runners import torch: a warm advice without --run never loads them
        from tl_advise.runners.tracking import check_available, check_tracking_store

        check_available(tensorboard=opts["tensorboard"], mlflow=opts["mlflow"])
        check_tracking_store(mlflow=opts["mlflow"])


def check_not_an_image_backbone(backbone: str, weights: str | Path | None, data: object) -> None:
    """Refuse an image backbone's name for texts in the words the user set it with (the API refuses it too)."""
    from tl_advise.advisor.text_api import DEFAULT_TEXT_BACKBONE, names_an_image_backbone

    if names_an_image_backbone(backbone, weights):
        given = _where_set("backbone", backbone)
        fix = "leave --backbone out" if given.startswith("--") else f"say --backbone {DEFAULT_TEXT_BACKBONE}"
        raise ConfigError(f"{given} is an image backbone, and {data} is read as text: for the embedded "
                          f"{DEFAULT_TEXT_BACKBONE} (offline) {fix}, or name a text encoder (a Hugging Face id such "
                          "as bert-base-uncased, or a model folder)")


def _where_set(name: str, value: str) -> str:
    """How an option's value reached the command, in the words the user set it with: the flag, the
    environment variable or pyproject's [tool.tl-advise] key."""
    ctx = click.get_current_context()
    source = ctx.get_parameter_source(name)
    param = next((p for p in ctx.command.params if p.name == name), None)
    if source is ParameterSource.ENVIRONMENT and param is not None and isinstance(param.envvar, str):
        return f"{param.envvar}={value}"
    if source is ParameterSource.DEFAULT_MAP:
        return f"{name.replace('_', '-')} = \"{value}\" in pyproject.toml's [tool.tl-advise]"
    return f"--{name.replace('_', '-')} {value}"


def _run_options(opts: dict[str, Any], progress: bool) -> TextRunOptions:
    """The options of a text ``--run``, checked (strategies, budget, margin, the output folder) before any work."""
    from tl_advise.advisor.writable import check_can_create
    from tl_advise.cli.commands import parse_budget, parse_margin, parse_strategies
    from tl_advise.runners.options import check_output_dir

    epochs, seconds = parse_budget(opts["budget"])
    strategies = parse_strategies(opts["strategies"], TEXT_STRATEGY_IDS, "text")
    try:
        options = TextRunOptions(
            output_dir=opts["output_dir"], compare=opts["compare"], strategies=strategies, max_epochs=epochs,
            time_budget_s=seconds, head_epochs=opts["head_epochs"], finetune_epochs=opts["finetune_epochs"],
            batch_size=opts["batch_size"], max_train_per_class=opts["max_train_per_class"],
            margin=parse_margin(opts["margin"]), device=opts["device"], seed=opts["seed"], resume=opts["resume"],
            progress=progress, tensorboard=opts["tensorboard"], mlflow=opts["mlflow"],
            mlflow_experiment=opts["mlflow_experiment"])
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise ConfigError(f"text run options: {problems} (text strategies: {', '.join(TEXT_STRATEGY_IDS)})") \
            from None
    check_output_dir(options.output_dir, opts["data"], "The output folder (--output-dir)")
    check_can_create(options.output_dir, "The output folder (--output-dir)")
    return options


def advise_text_command(opts: dict[str, Any], progress: bool) -> int:
    """The text advice of ``opts['data']``, rendered; with ``--run``, trained and judged."""
    from tl_advise.advisor.data.text.reading import TextReadOptions
    from tl_advise.advisor.report.text_advice import render_text_advice
    from tl_advise.advisor.text_api import DEFAULT_TEXT_BACKBONE, advise_text_session
    from tl_advise.advisor.writable import atomic_write_text

    check_text_options(opts)
    from tl_advise.advisor.writable import check_can_create, check_write_path

    for path, what in ((opts["output"], "The report file (-o)"), (opts["html_path"], "The HTML report (--html)")):
        if path:  # nothing is ever written inside the dataset
            check_write_path(path, opts["data"], what)
            check_can_create(path, what)
    if opts["cache_dir"] and not opts["no_cache"]:
        check_write_path(opts["cache_dir"], opts["data"], "The cache folder (--cache-dir)")
    options = _run_options(opts, progress) if opts["run_"] else None  # before the dataset is read and measured
    # The image default stands for "not given"; named by the user (flag, environment, pyproject) it is refused.
    unset = click.get_current_context().get_parameter_source("backbone") is ParameterSource.DEFAULT
    backbone = DEFAULT_TEXT_BACKBONE if unset and opts["backbone"] == DEFAULT_BACKBONE else opts["backbone"]
    check_not_an_image_backbone(backbone, opts["weights"], opts["data"])
    session = advise_text_session(
        opts["data"], backbone=backbone, weights=opts["weights"], device=opts["device"], seed=opts["seed"],
        cache_dir=opts["cache_dir"], use_cache=not opts["no_cache"], keep_backbone=opts["run_"],
        max_train_per_class=opts["max_train_per_class"] if opts["run_"] else None,
        read_options=TextReadOptions(text_column=opts["text_column"], label_column=opts["label_column"],
                                     split_column=opts["split_column"]))
    result = session.result
    if options is not None:
        from tl_advise.runners.text import run_text_advice

        run = run_text_advice(session, options)
        result = result.model_copy(update={"run": run})
    report = render_text_advice(result, opts["fmt"], explain=opts["explain"] or opts["verbose"] > 0)
    if opts["output"]:
        atomic_write_text(report, opts["output"])
        logger.info("report written to %s", opts["output"])
    else:
        click.echo(report, nl=False)
    if opts["html_path"]:
        from tl_advise.advisor.report.html import write_html
        from tl_advise.advisor.report.text_html import page_data, render_text_html

        page = render_text_html(result, page_data(session))
        logger.info("HTML report written to %s", write_html(page, opts["html_path"], result.source.root))
    rec = result.recommendation
    logger.info("%s (rule %s, similarity %.2f %s)", rec.strategy, rec.rule_id, result.similarity.score,
                result.similarity.label)
    fail_on = set(opts["fail_on"])
    if "warning" in fail_on and (rec.warnings or result.findings):
        return EXIT_FINDING
    if "refuted" in fail_on and result.run is not None and result.run.verdict.status == "refuted":
        return EXIT_FINDING
    return EXIT_OK
