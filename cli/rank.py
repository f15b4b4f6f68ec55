"""``tl-advise rank-backbones DATA --candidates A,B,C``: which backbone to fine-tune on this data.

Registered on the ``tl-advise`` group in ``cli/__init__.py``; errors map onto its exit codes in
``commands.main`` (2 for bad input: fewer than two candidates, one named twice, an unknown name, weights that
cannot be had offline, a text dataset).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from tl_advise.advisor.defaults import (
    DEFAULT_BACKBONE,
    DEFAULT_DEVICE,
    DEFAULT_PER_CLASS,
    DEFAULT_SEED,
    DEFAULT_TOTAL,
    DEVICE_CHOICES,
    ENGINE_CHOICES,
    MAX_SEED,
)
from tl_advise.schema.errors import EXIT_OK

logger = logging.getLogger("tl_advise")

RANK_FORMATS = ("text", "json", "markdown")
SCORES = ("logreg_accuracy", "knn_accuracy", "logme")  # tl_advise.schema.ranking.SCORE_NAMES (kept import-free)


def _env(name: str) -> str:
    return f"TL_ADVISE_RANK_{name}"


def _weights_map(values: tuple[str, ...]) -> dict[str, Path]:
    pairs: dict[str, Path] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise click.BadParameter(f"{value!r}: write NAME=PATH, e.g. mobilenet_v2=weights/mobilenet_v2.pth")
        pairs[name.strip()] = Path(path.strip())
    return pairs


@click.command("rank-backbones", context_settings={"max_content_width": 100})
@click.argument("data", type=click.Path(path_type=Path))
@click.option("--candidates", required=True, envvar=_env("CANDIDATES"), metavar="A,B,C",
              help="Two or more backbones, comma-separated: efficientnet_lite0/1/2 (offline), any torchvision name "
                   "(mobilenet_v2:IMAGENET1K_V1, resnet50) or timm name (convnext_tiny, timm/resnet50).")
@click.option("--probe", default=DEFAULT_BACKBONE, show_default=True, envvar=_env("PROBE"),
              help="The backbone that measures the similarity (the calibrated one).")
@click.option("--weights", "weights", multiple=True, metavar="NAME=PATH", envvar=_env("WEIGHTS"),
              callback=lambda _ctx, _param, value: _weights_map(value),
              help="A local checkpoint (state_dict) for one candidate, loaded with weights_only=True; repeat for "
                   "more. NAME as in --candidates.")
@click.option("--score", type=click.Choice(SCORES), default="logreg_accuracy", show_default=True,
              envvar=_env("SCORE"), help="What ranks the candidates (the others are reported beside it).")
@click.option("--rules", "rules_file", type=click.Path(path_type=Path), envvar="TL_ADVISE_RULES",
              help="A rules file replacing the packaged defaults.")
@click.option("--format", "fmt", type=click.Choice(RANK_FORMATS), default="text", show_default=True,
              envvar=_env("FORMAT"), help="Report format.")
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), envvar=_env("OUTPUT"),
              help="Write the report to this file instead of stdout.")
@click.option("--html", "html_path", type=click.Path(path_type=Path, dir_okay=False), envvar=_env("HTML"),
              help="Also write a self-contained HTML page of the ranking.")
@click.option("--device", type=click.Choice(DEVICE_CHOICES), default=DEFAULT_DEVICE, show_default=True,
              envvar="TL_ADVISE_DEVICE")
@click.option("--engine", type=click.Choice(ENGINE_CHOICES), default="torch", show_default=True,
              envvar=_env("ENGINE"),
              help="What embeds the sample: torch by default here (exporting every candidate to ONNX costs more than "
                   "it saves on one sample).")
@click.option("--seed", type=click.IntRange(0, MAX_SEED), default=DEFAULT_SEED, show_default=True,
              envvar="TL_ADVISE_SEED")
@click.option("--per-class", type=click.IntRange(min=2), default=DEFAULT_PER_CLASS, show_default=True,
              envvar="TL_ADVISE_PER_CLASS", help="Sampled images per class.")
@click.option("--max-images", type=click.IntRange(min=2), default=DEFAULT_TOTAL, show_default=True,
              envvar="TL_ADVISE_MAX_IMAGES", help="Sampled images in all.")
@click.option("--cache-dir", type=click.Path(path_type=Path, file_okay=False), envvar="TL_ADVISE_CACHE_DIR")
@click.option("--no-cache", is_flag=True, envvar="TL_ADVISE_NO_CACHE", help="Neither read nor write the cache.")
@click.option("--progress/--no-progress", default=None, help="Progress bars on stderr [default: on a terminal].")
@click.option("-v", "--verbose", count=True, help="More logging on stderr (-v: debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors on stderr.")
def rank_command(data: Path, candidates: str, probe: str, weights: dict[str, Path], score: str,
                 rules_file: Path | None, fmt: str, output: Path | None, html_path: Path | None, device: str,
                 engine: str, seed: int, per_class: int, max_images: int, cache_dir: Path | None, no_cache: bool,
                 progress: bool | None, verbose: int, quiet: bool) -> int:
    """Rank candidate backbones for the image dataset DATA and recommend one, with its strategy.

    Each candidate embeds the same seeded sample; its frozen features are scored (cross-validated
    logistic-regression and k-NN accuracy, LogME) beside its cost (parameters, FLOPs, images/s measured here).
    Candidates within one standard error of the best are tied, and the cheapest of them is recommended, with
    the advice mapped onto its stages (train it with `tl-advise DATA --for NAME --run`).

    \b
    Exit codes: 0 ranking given; 2 bad usage or input; 3 internal error.
    """
    from tl_advise.advisor.measure.cache import ArrayCache, default_cache_dir
    from tl_advise.advisor.ranking import check_candidates, rank_backbones
    from tl_advise.advisor.report.ranking import render_html_page, render_ranking
    from tl_advise.advisor.writable import atomic_write_text
    from tl_advise.cli.commands import configure_logging

    configure_logging(verbose, quiet)
    # Before the scan: a typo costs nothing (names an earlier ranking checked are read from the cache, no torch).
    names = check_candidates(candidates, None if no_cache else ArrayCache(cache_dir or default_cache_dir()))
    show_progress = progress if progress is not None else (sys.stderr.isatty() and not quiet)
    result = rank_backbones(
        data, names, probe=probe, rules=rules_file, score=score, device=device,  # type: ignore[arg-type]
        engine=engine, seed=seed, per_class=per_class, max_images=max_images, cache_dir=cache_dir,
        use_cache=not no_cache, progress=show_progress, weights=weights,
        writes={"The report file (-o)": output, "The HTML report (--html)": html_path})
    report = render_ranking(result, fmt)
    if output:
        atomic_write_text(report, output)
        logger.info("report written to %s", output)
    else:
        click.echo(report, nl=False)
    if html_path:
        atomic_write_text(render_html_page(result), html_path)
        logger.info("HTML report written to %s", html_path)
    logger.info("recommended %s (%s, %s)", result.recommended.spec, result.recommended.recommendation.strategy,
                result.score_name)
    return EXIT_OK
