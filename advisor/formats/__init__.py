"""One formatter per output format, all rendering the same ``AdviceResult``."""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

from tl_advise.advisor.formats import json_format, markdown, text
from tl_advise.schema.models import AdviceResult


class OutputFormat(StrEnum):
    TEXT = "text"
    JSON = "json"
    MARKDOWN = "markdown"


FORMATTERS: dict[OutputFormat, Callable[[AdviceResult], str]] = {
    OutputFormat.TEXT: text.render,
    OutputFormat.JSON: json_format.render,
    OutputFormat.MARKDOWN: markdown.render,
}


def render(result: AdviceResult, fmt: OutputFormat | str = OutputFormat.TEXT) -> str:
    return FORMATTERS[OutputFormat(fmt)](result)


__all__ = ["FORMATTERS", "OutputFormat", "render"]
