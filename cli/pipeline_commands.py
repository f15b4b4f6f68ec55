"""``tl-advise predict`` and ``tl-advise schema``: the commands a pipeline runs around the advice.

Registered on the ``tl-advise`` group in ``cli/commands.py``; errors map onto its exit codes there
(2 for a bad model file, no images or bad options).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from tl_advise.advisor.defaults import DEFAULT_BATCH_SIZE, DEFAULT_DEVICE, DEVICE_CHOICES
from tl_advise.schema.errors import ConfigError, DatasetError
from tl_advise.schema.formatting import counted

logger = logging.getLogger("tl_advise")


@click.command("predict", context_settings={"max_content_width": 100})
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("inputs", nargs=-1, metavar="IMAGES_OR_TEXTS...")
@click.option("--file", "text_file", type=click.Path(path_type=Path, dir_okay=False),
              help="Text models: the texts to classify, one per line (.txt), or a table (.csv, .tsv, .jsonl, "
                   ".parquet) with a text column.")
@click.option("--text-column", help="Text models: the column of --file holding the texts [default: found by name].")
@click.option("--top-k", type=click.IntRange(min=1), default=3, show_default=True,
              help="How many of the most probable classes each row lists.")
@click.option("--format", "fmt", type=click.Choice(("csv", "json")), default="csv", show_default=True,
              help="Report format: one row per image or text, or the typed report (`tl-advise schema predictions`, "
                   "`tl-advise schema text-predictions`).")
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False),
              help="Write the predictions to this file instead of stdout.")
@click.option("--batch-size", type=click.IntRange(min=1), default=DEFAULT_BATCH_SIZE, show_default=True)
@click.option("--device", type=click.Choice(DEVICE_CHOICES), default=DEFAULT_DEVICE, show_default=True)
@click.option("--workers", type=click.IntRange(min=0), help="DataLoader workers for decoding [default: min(4, CPUs)].")
@click.option("--progress/--no-progress", default=None, help="A progress bar on stderr [default: on a terminal].")
@click.option("-v", "--verbose", count=True, help="More logging on stderr (-v: debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors on stderr.")
def predict_command(model: Path, inputs: tuple[str, ...], text_file: Path | None, text_column: str | None,
                    top_k: int, fmt: str, output: Path | None, batch_size: int, device: str, workers: int | None,
                    progress: bool | None, verbose: int, quiet: bool) -> int:
    """Classify images or texts with a MODEL trained by `tl-advise DATA --run`.

    MODEL is a model.pt, or a --run output folder (its recommended strategy's model); what it was trained
    on decides what it classifies. An image model takes IMAGES, files or folders (searched recursively for
    images): each gets the predicted class, its confidence and every class's probability, computed
    batch-wise with the model's own preprocessing; an unreadable image is reported on stderr and as a row
    with an error, and does not stop the others. A text model takes texts as arguments, `-` for one text
    per line on stdin, or --file (a folder as an argument is refused; a file's name is classified as a text).

    \b
    Exit codes: 0 predictions written; 2 bad model file, no images or texts, or none readable; 3 internal error.
    """
    from tl_advise.advisor.report.predictions import render_predictions
    from tl_advise.advisor.writable import atomic_write_text
    from tl_advise.cli.commands import configure_logging
    from tl_advise.runners.trained_model import resolve_model_file

    configure_logging(verbose, quiet)
    if output:
        check_output_outside_inputs(output, inputs, text_file)
    model_file = resolve_model_file(model)
    saved = _text_model(model_file)
    if saved is not None:
        report: Any = _predict_texts(saved, model_file, inputs, text_file=text_file, text_column=text_column,
                                     top_k=top_k, batch_size=batch_size, device=device, workers=workers)
    else:
        report = _predict_images(model_file, inputs, text_file=text_file, text_column=text_column, top_k=top_k,
                                 batch_size=batch_size, device=device, workers=workers, progress=progress,
                                 quiet=quiet)
    text = render_predictions(report, fmt)
    if output:
        atomic_write_text(text, output)  # an interrupted or failed write keeps the previous file, never half a file
    else:
        click.echo(text, nl=False)
    if saved is not None:
        logger.info("%s predicted with %s (%s)", counted(len(report.predictions), "text"), report.model,
                    report.strategy)
        return 0
    n_failed = len(report.failed)
    logger.info("%s predicted with %s, %d unreadable", counted(len(report.predictions) - n_failed, "image"),
                report.model, n_failed)
    if n_failed == len(report.predictions):
        raise DatasetError("the image could not be read (the reason above)" if n_failed == 1
                           else f"none of the {n_failed} images could be read (reasons above)")
    return 0


def check_output_outside_inputs(output: Path, inputs: tuple[str, ...], text_file: Path | None) -> None:
    """Refuse ``-o`` inside any folder or file predict reads (the dataset being classified), with the advice's
    own check, or where it could never be created, before the model is loaded. A text argument that is no path
    names nothing to protect."""
    from tl_advise.advisor.writable import check_can_create, check_write_path

    sources = [*(item for item in inputs if item != "-"), *([str(text_file)] if text_file is not None else [])]
    for source in sources:
        if os.path.exists(source):  # False, not an error, for a text too long to be a file name
            check_write_path(output, source, "The predictions file (-o)")
    check_can_create(output, "The predictions file (-o)")  # before predicting, not after


def _text_model(model_file: Path) -> dict[str, Any] | None:
    """The saved text model, or None for anything else (an image model, or a file the image path will refuse
    with its own message)."""
    import torch

    from tl_advise.runners.text.trained_model import is_text_model

    try:  # memory-mapped: an image model is looked at, not read twice
        saved = torch.load(model_file, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a checkpoint (or not one torch can map): the image loader says why, as it always has
        return None
    return saved if isinstance(saved, dict) and is_text_model(saved) else None


def _predict_images(model_file: Path, inputs: tuple[str, ...], *, text_file: Path | None, text_column: str | None,
                    top_k: int, batch_size: int, device: str, workers: int | None, progress: bool | None,
                    quiet: bool) -> Any:
    from tl_advise.runners.trained_model import image_files, predict_images

    if text_file is not None or text_column is not None or "-" in inputs:
        given = "--file" if text_file is not None else "--text-column" if text_column is not None else "-"
        raise ConfigError(f"{model_file} is an image model: it classifies images, not texts ({given}); give it "
                          "image files or folders, or a model trained on a text dataset")
    paths = [Path(p) for p in inputs]
    if not image_files(paths):
        raise DatasetError(f"no images found in {', '.join(inputs)}" if inputs else
                           f"no images given: {model_file} is an image model; name image files or folders after it")
    show_progress = progress if progress is not None else (sys.stderr.isatty() and not quiet)
    return predict_images(model_file, paths, batch_size=batch_size, device=device, num_workers=workers,
                          progress=show_progress, top_k=top_k)


def _predict_texts(saved: dict[str, Any], model_file: Path, inputs: tuple[str, ...], *, text_file: Path | None,
                   text_column: str | None, top_k: int, batch_size: int, device: str, workers: int | None) -> Any:
    from PIL import Image

    from tl_advise.advisor.data.text.reading import read_texts
    from tl_advise.advisor.measure.device import resolve_device
    from tl_advise.runners.text.trained_model import predict_texts

    if workers is not None:
        raise ConfigError(f"--workers decodes images, and {model_file} is a text model: leave it out")
    if text_column is not None and text_file is None:
        raise ConfigError("--text-column names a column of --file: give --file too, or leave it out")
    images = [p for p in inputs if Path(p).suffix.lower() in Image.registered_extensions() and os.path.isfile(p)]
    if inputs and len(images) == len(inputs):
        raise ConfigError(f"{model_file} is a text model: it classifies texts, and {images[0]} is an image file; "
                          "give the texts themselves, - for stdin, or --file texts.txt")
    # os.path, not Path: a text longer than a file name may be is no file, not an OSError
    folder = next((p for p in inputs if p != "-" and os.path.isdir(p)), None)
    if folder is not None:
        raise ConfigError(f"{folder} is a folder; pass texts as arguments, or a file of texts with --file")
    texts: list[str] = []
    for item in inputs:
        if item == "-":
            stdin = sys.stdin.read()
            texts += [line for line in stdin.splitlines() if line.strip()]
        else:
            if os.path.isfile(item):  # still a text, classified as given: what an argument always is
                logger.warning("%s is a file: classifying those words as a text, not the file's texts; to classify "
                               "its texts, use --file %s", item, item)
            texts.append(item)
    if text_file is not None:
        texts += read_texts(text_file, text_column=text_column)
    if not texts:
        raise DatasetError(f"no texts given to {model_file}: pass them as arguments, - for one per line on stdin, "
                           "or --file texts.txt (one per line) or a .csv/.jsonl with a text column")
    return predict_texts(saved, model_file, texts, device=resolve_device(device), batch_size=batch_size,
                         top_k=top_k)


SCHEMAS = ("advice", "text-advice", "predictions", "text-predictions")


@click.command("schema")
@click.argument("kind", type=click.Choice(SCHEMAS), default="advice")
def schema_command(kind: str) -> int:
    """Print the JSON Schema of a report: `advice` (what --format json and metrics.json hold for an image
    dataset, --run results included), `text-advice` (the same for a text dataset: schema_version text-*),
    `predictions` or `text-predictions` (tl-advise predict --format json, image or text model)."""
    click.echo(json.dumps(report_schema(kind), indent=2))
    return 0


def report_schema(kind: str = "advice") -> dict[str, object]:
    """The JSON Schema (draft 2020-12) of the JSON output as the tool writes it: serialization mode, with
    every field required, because the output always holds every field (defaults and nulls included)."""
    from pydantic import BaseModel
    from pydantic.json_schema import GenerateJsonSchema

    from tl_advise.advisor.report.predictions import PredictionReport, TextPredictionReport
    from tl_advise.schema.models import SCHEMA_VERSION, AdviceResult
    from tl_advise.schema.text import TEXT_SCHEMA_VERSION, TextAdviceResult

    class OutputSchema(GenerateJsonSchema):
        def field_is_required(self, field: Any, total: bool) -> bool:
            return not field.get("serialization_exclude")

    # kind -> (model, the schema_version its reports carry): a text advice is its own document, not an AdviceResult
    models: dict[str, tuple[type[BaseModel], str]] = {
        "advice": (AdviceResult, SCHEMA_VERSION), "text-advice": (TextAdviceResult, TEXT_SCHEMA_VERSION),
        "predictions": (PredictionReport, SCHEMA_VERSION), "text-predictions": (TextPredictionReport, SCHEMA_VERSION)}
    model, version = models[kind]
    schema = model.model_json_schema(mode="serialization", schema_generator=OutputSchema)
    return {"$schema": OutputSchema.schema_dialect,
            "$comment": f"tl-advise report schema_version {version}", **schema}
