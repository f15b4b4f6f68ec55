"""The run's human outputs: a Markdown report and a PNG of the learning curves (``advisor.report.figures``)."""

from __future__ import annotations

from pathlib import Path

from tl_advise.advisor.report.common import margin_line, run_table
from tl_advise.advisor.report.common import pct as _pct
from tl_advise.advisor.report.figures import learning_curves, png_bytes
from tl_advise.schema.formatting import fmt_lr
from tl_advise.schema.models import AdviceResult, RunReport, StrategyRun, recipe_lines


def _settings_lines(run: StrategyRun) -> list[str]:
    s = run.settings
    if s is None:
        return []
    recipe = recipe_lines(s)
    lines = [f"### {run.strategy}", "",
             f"- unfrozen stages: {', '.join(s.unfreeze) if s.unfreeze else 'none (backbone frozen)'}"
             + ("" if s.pretrained else " — random initialisation"),
             f"- epochs: head {s.head_epochs}, fine-tune {s.finetune_epochs}; batch {s.batch_size}; "
             f"input {s.image_size} px; {s.optimizer}, weight decay {s.weight_decay:g}",
             f"- learning rates: head {fmt_lr(s.head_lr)}"
             + (f", backbone {fmt_lr(s.backbone_lr)}" if s.backbone_lr is not None else "")
             + (", per stage " + ", ".join(f"{k} {fmt_lr(v)}" for k, v in s.per_stage_lr.items())
                if s.per_stage_lr else ""),
             f"- augmentation: {', '.join(recipe.augmentation) or 'none'}",
             f"- regularisation: {', '.join(recipe.regularization)}",
             f"- learning-rate schedule: {recipe.lr_schedule}",
             f"- {s.n_train} training / {s.n_val} validation images"]
    if run.val is not None:
        lines.append("- per-class val accuracy: "
                     + ", ".join(f"{k} {_pct(v)}" for k, v in run.val.per_class_accuracy.items()))
    if run.checkpoint:
        lines.append(f"- best model: `{run.checkpoint}`")
    return [*lines, ""]


def markdown_report(result: AdviceResult, report: RunReport) -> str:
    rec = result.recommendation
    lines = [
        f"# tl-advise run: {result.dataset.root}", "",
        f"**Verdict: {report.verdict.status}** — {report.verdict.message}", "",
        f"- advice: **{rec.strategy}** (rule {rec.rule_id}); similarity {result.similarity.score:.2f} "
        f"({result.similarity.label})",
        f"- backbone: {result.backbone.name} ({result.backbone.weights})",
        f"- device: {report.device}",
        f"- validation: {report.validation}",
        f"- {margin_line(report)}",
        "- budget: " + (", ".join(f"{k}={v}" for k, v in report.budget.items() if v is not None) or "none"),
        "",
        *run_table(report, rec.strategy),
        "",
        "Time includes validation after each epoch (and, for feature extraction, embedding the images once).",
        "",
        "## Settings per strategy",
        "",
    ]
    for run in report.runs:
        lines.extend(_settings_lines(run))
    if "curves" in report.files:
        lines += ["## Learning curves", "", f"![learning curves]({report.files['curves']})", ""]
    return "\n".join(lines)


def plot_curves(runs: list[StrategyRun], path: Path) -> bool:
    """Loss and val accuracy per epoch, one column per strategy; False when nothing was trained."""
    fig = learning_curves(runs)
    if fig is None:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    tmp.write_bytes(png_bytes(fig))
    tmp.replace(path)
    return True
