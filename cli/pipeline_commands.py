"""``tl-advise predict`` and ``tl-advise schema``: the commands a pipeline runs around the advice.

Registered on the ``tl-advise`` group in ``cli/commands.py``; errors map onto its exit codes there
(2 for a bad model file, no images or bad options).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from tl_advise.advisor.defaults import DEFAULT_BATCH_SIZE, DEFAULT_DEVICE, DEVICE_CHOICES
from tl_advise.schema.errors import DatasetError

logger = logging.getLogger("tl_advise")


@click.command("predict", context_settings={"max_content_width": 100})
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(("csv", "json")), default="csv", show_default=True,
              help="Report format: one row per image, or the typed report (`tl-advise schema predictions`).")
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False),
              help="Write the predictions to this file instead of stdout.")
@click.option("--batch-size", type=click.IntRange(min=1), default=DEFAULT_BATCH_SIZE, show_default=True)
@click.option("--device", type=click.Choice(DEVICE_CHOICES), default=DEFAULT_DEVICE, show_default=True)
@click.option("--workers", type=click.IntRange(min=0), help="DataLoader workers for decoding [default: min(4, CPUs)].")
@click.option("--progress/--no-progress", default=None, help="A progress bar on stderr [default: on a terminal].")
@click.option("-v", "--verbose", count=True, help="More logging on stderr (-v: debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors on stderr.")
def predict_command(model: Path, images: tuple[Path, ...], fmt: str, output: Path | None, batch_size: int,
                    device: str, workers: int | None, progress: bool | None, verbose: int, quiet: bool) -> int:
    """Classify IMAGES with a MODEL trained by `tl-advise DATA --run`.

    MODEL is a model.pt, or a --run output folder (its recommended strategy's model). IMAGES are files
    or folders (searched recursively for images). Each image gets the predicted class, its confidence
    and every class's probability, computed batch-wise with the model's own preprocessing. An unreadable
    image is reported on stderr and as a row with an error; it does not stop the others.

    \b
    Exit codes: 0 predictions written; 2 bad model file, no images, or none readable; 3 internal error.
    """
    from tl_advise.advisor.predictions import render_predictions
    from tl_advise.cli.commands import configure_logging
    from tl_advise.runners.trained_model import image_files, predict_images

    configure_logging(verbose, quiet)
    if not image_files(images):
        raise DatasetError(f"no images found in {', '.join(str(p) for p in images)}")
    show_progress = progress if progress is not None else (sys.stderr.isatty() and not quiet)
    report = predict_images(model, images, batch_size=batch_size, device=device, num_workers=workers,
                            progress=show_progress)
    text = render_predictions(report, fmt)
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text)
    else:
        click.echo(text, nl=False)
    n_failed = len(report.failed)
    logger.info("%d image(s) predicted with %s, %d unreadable", len(report.predictions) - n_failed, report.model,
                n_failed)
    if n_failed == len(report.predictions):
        raise DatasetError(f"none of the {n_failed} image(s) could be read (reasons above)")
    return 0


SCHEMAS = ("advice", "predictions")


@click.command("schema")
@click.argument("kind", type=click.Choice(SCHEMAS), default="advice")
def schema_command(kind: str) -> int:
    """Print the JSON Schema of a report: `advice` (what --format json and metrics.json hold, --run results
    included) or `predictions` (tl-advise predict --format json)."""
    click.echo(json.dumps(report_schema(kind), indent=2))
    return 0


def report_schema(kind: str = "advice") -> dict[str, object]:
    """The JSON Schema (draft 2020-12) of the JSON output as the tool writes it: serialization mode, with
    every field required, because the output always holds every field (defaults and nulls included)."""
    from pydantic.json_schema import GenerateJsonSchema

    from tl_advise.advisor.predictions import PredictionReport
    from tl_advise.schema.models import SCHEMA_VERSION, AdviceResult

    class OutputSchema(GenerateJsonSchema):
        def field_is_required(self, field: Any, total: bool) -> bool:
            return not field.get("serialization_exclude")

    model = AdviceResult if kind == "advice" else PredictionReport
    schema = model.model_json_schema(mode="serialization", schema_generator=OutputSchema)
    return {"$schema": OutputSchema.schema_dialect,
            "$comment": f"tl-advise report schema_version {SCHEMA_VERSION}", **schema}
