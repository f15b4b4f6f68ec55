"""``tl-advise cache info|clear``: what the cache folder holds (embeddings, measurements, exported graphs),
and removing it — all of it, one kind, or only the formats this version no longer reads."""

from __future__ import annotations

from pathlib import Path

import click

from tl_advise.advisor.defaults import CACHE_KINDS
from tl_advise.schema.models import CacheUsage

CACHE_DIR_OPTION = click.option(
    "--cache-dir", type=click.Path(path_type=Path, file_okay=False), envvar="TL_ADVISE_CACHE_DIR",
    help="The cache folder [default: the user cache dir, as for the advice].")


def megabytes(n_bytes: int) -> str:
    return f"{n_bytes / 1e6:.1f} MB"


def entries(n: int) -> str:
    return f"{n} entr{'y' if n == 1 else 'ies'}"


def render_usage(usage: CacheUsage) -> str:
    if not usage.groups:
        return f"{usage.folder}: empty\n"
    lines = [f"{usage.folder}: {megabytes(usage.total_bytes)} in {entries(sum(g.entries for g in usage.groups))}"]
    for g in usage.groups:
        note = "" if g.current else "  an older format, never read"
        lines.append(f"  {f'v{g.version}/{g.kind}':20s} {g.entries:6d} {megabytes(g.bytes):>10s}{note}")
    if not all(g.current for g in usage.groups):
        lines.append("Remove the older formats with: tl-advise cache clear --stale")
    return "\n".join(lines) + "\n"


def _folder(cache_dir: Path | None) -> Path:
    from tl_advise.advisor.measure.cache import default_cache_dir

    return cache_dir or default_cache_dir()


@click.group("cache")
def cache_group() -> None:
    """Show or clear the cache: per-image and per-text embeddings, measurements, exported graphs and extracted
    text models."""


@cache_group.command("info")
@CACHE_DIR_OPTION
@click.option("--format", "fmt", type=click.Choice(("text", "json")), default="text", show_default=True)
def cache_info(cache_dir: Path | None, fmt: str) -> int:
    """What the cache holds, per format version and kind of entry."""
    from tl_advise.advisor.measure.cache import cache_usage

    usage = cache_usage(_folder(cache_dir))
    click.echo(usage.model_dump_json(indent=2) if fmt == "json" else render_usage(usage), nl=fmt == "json")
    return 0


@cache_group.command("clear")
@CACHE_DIR_OPTION
@click.option("--kind", "kinds", multiple=True, type=click.Choice(CACHE_KINDS),
              help="Only this kind of entry (repeatable).")
@click.option("--stale", is_flag=True, help="Only the entries of older formats, which this version never reads.")
def cache_clear(cache_dir: Path | None, kinds: tuple[str, ...], stale: bool) -> int:
    """Remove cached entries (all of them by default); the next advice computes what it needs again."""
    from tl_advise.advisor.measure.cache import clear_cache

    removed = clear_cache(_folder(cache_dir), kinds=kinds, stale_only=stale)
    click.echo(f"{removed.folder}: removed {entries(sum(g.entries for g in removed.groups))} "
               f"({megabytes(removed.total_bytes)})"
               + "".join(f"\n  v{g.version}/{g.kind}: {g.entries}" for g in removed.groups))
    return 0
