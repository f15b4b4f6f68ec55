"""JSON: the pydantic model itself, so the output and ``AdviceResult.model_json_schema()`` agree."""

from __future__ import annotations

from tl_advise.schema.models import AdviceResult


def render(result: AdviceResult, *, explain: bool = True) -> str:
    """Every field, evidence included, whatever ``explain`` says."""
    return result.model_dump_json(indent=2) + "\n"
