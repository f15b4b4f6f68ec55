"""Rendering results: one formatter per output format, all rendering the same ``AdviceResult``; the HTML
page, the ranking, the predictions and the text advice in their own modules."""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

from tl_advise.advisor.report import json_format, markdown, text
from tl_advise.schema.models import AdviceResult


class OutputFormat(StrEnum):
    TEXT = "text"
    JSON = "json"
    MARKDOWN = "markdown"


class Formatter(Protocol):
    def __call__(self, result: AdviceResult, *, explain: bool = ...) -> str: ...


# ``explain``: the evidence too. The text format leaves it out by default (one screen); the others always carry it.
FORMATTERS: dict[OutputFormat, Formatter] = {
    OutputFormat.TEXT: text.render,
    OutputFormat.JSON: json_format.render,
    OutputFormat.MARKDOWN: markdown.render,
}


def render(result: AdviceResult, fmt: OutputFormat | str = OutputFormat.TEXT, *, explain: bool = False) -> str:
    return FORMATTERS[OutputFormat(fmt)](result, explain=explain)


__all__ = ["FORMATTERS", "OutputFormat", "render"]
