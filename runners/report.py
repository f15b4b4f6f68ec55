"""The run's human outputs: a Markdown report and a PNG of the learning curves (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path

from tl_advise.advisor.formats.common import margin_line, run_table
from tl_advise.advisor.formats.common import pct as _pct
from tl_advise.advisor.models import AdviceResult, RunReport, StrategyRun


def _settings_lines(run: StrategyRun) -> list[str]:
    s = run.settings
    if s is None:
        return []
    lines = [f"### {run.strategy}", "",
             f"- unfrozen stages: {', '.join(s.unfreeze) if s.unfreeze else 'none (backbone frozen)'}"
             + ("" if s.pretrained else " — random initialisation"),
             f"- epochs: head {s.head_epochs}, fine-tune {s.finetune_epochs}; batch {s.batch_size}; "
             f"input {s.image_size} px; {s.optimizer}, weight decay {s.weight_decay:g}",
             f"- learning rates: head {s.head_lr:g}"
             + (f", backbone {s.backbone_lr:g}" if s.backbone_lr is not None else "")
             + (", per stage " + ", ".join(f"{k} {v:g}" for k, v in s.per_stage_lr.items())
                if s.per_stage_lr else ""),
             f"- augmentation: {', '.join(s.augmentation) if s.augmentation else 'none'}"
             + (f" (not applied: {', '.join(s.augmentation_skipped)})" if s.augmentation_skipped else ""),
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
    trained = [r for r in runs if r.curves]
    if not trained:
        return False
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(trained), figsize=(4 * len(trained), 6), squeeze=False)
    for col, run in enumerate(trained):
        epochs = [c.epoch for c in run.curves]
        loss_ax, acc_ax = axes[0][col], axes[1][col]
        loss_ax.plot(epochs, [c.train_loss for c in run.curves], marker="o", label="train loss")
        loss_ax.plot(epochs, [c.val_loss for c in run.curves], marker="o", label="val loss")
        acc_ax.plot(epochs, [c.val_accuracy for c in run.curves], marker="o", color="tab:green")
        # A dotted line where the schedule moves from the head phase to fine-tuning.
        for prev, cur in zip(run.curves, run.curves[1:], strict=False):
            if prev.phase != cur.phase:
                for ax in (loss_ax, acc_ax):
                    ax.axvline(cur.epoch - 0.5, color="grey", linestyle=":")
        if run.best_epoch:
            acc_ax.axvline(run.best_epoch, color="tab:red", linestyle="--", linewidth=0.8)
        loss_ax.set_title(run.strategy, fontsize=9)
        loss_ax.legend(fontsize=7)
        acc_ax.set_xlabel("epoch")
        acc_ax.set_ylabel("val accuracy")
        acc_ax.set_ylim(0, 1)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return True
