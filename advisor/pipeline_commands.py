"""``tl-advise predict``: the commands a pipeline runs around the advice.

Registered on the ``tl-advise`` group in ``advisor/cli.py``; errors map onto its exit codes there
(2 for a bad model file, no images or bad options).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from tl_advise.advisor.errors import DatasetError

logger = logging.getLogger("tl_advise")


@click.command("predict", context_settings={"max_content_width": 100})
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(("csv", "json")), default="csv", show_default=True,
              help="Report format: one row per image, or the typed report.")
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False),
              help="Write the predictions to this file instead of stdout.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--device", type=click.Choice(("auto", "cpu", "cuda")), default="auto", show_default=True)
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
    from tl_advise.advisor.cli import configure_logging
    from tl_advise.advisor.predictions import render_predictions
    from tl_advise.runners.predict import image_files, predict_images

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
