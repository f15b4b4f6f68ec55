"""The report's charts as matplotlib figures (object API, Agg canvas: no display, no global pyplot state).

Every number drawn comes from the ``AdviceResult``; nothing here measures anything.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LinearSegmentedColormap
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from tl_advise.schema.models import BNShift, Metrics, SignalScore, SimilarityReport, StrategyRun
from tl_advise.schema.text import TextStrategyRun

SIMILAR, DIFFERENT, NEUTRAL = "#2e7d32", "#c62828", "#607d8b"
_RAMP = LinearSegmentedColormap.from_list("ramp", [DIFFERENT, "#f9a825", SIMILAR])
DPI = 100


def png_bytes(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return buffer.getvalue()


def bn_profile(bn: BNShift, band: tuple[float, float] | None, band_label: str) -> Figure:
    """Per-layer BN shift against depth, the early/middle/late means, and the natural-photo band."""
    fig = Figure(figsize=(9, 3.6))
    ax = fig.add_subplot()
    depth = [p.depth for p in bn.profile]
    w2 = [p.w2 for p in bn.profile]
    if band is not None:
        ax.axhspan(band[0], band[1], color=SIMILAR, alpha=0.13, label=band_label)
    ax.plot(depth, w2, marker="o", markersize=3, linewidth=1.2, color="#1565c0", label="this dataset, per BN layer")
    # The three thirds of the BN layers the advice averages (np.array_split over the layer order).
    for name, value, layers in zip(("early", "middle", "late"), (bn.early, bn.middle, bn.late),
                                   np.array_split(np.arange(len(depth)), 3), strict=True):
        if len(layers) == 0:
            continue
        lo, hi = depth[layers[0]], depth[layers[-1]]
        ax.hlines(value, lo, hi, colors="#0d47a1", linewidth=3, alpha=0.8)
        ax.annotate(f"{name} {value:.2f}", ((lo + hi) / 2, value), textcoords="offset points", xytext=(0, 7),
                    ha="center", fontsize=9, color="#0d47a1", fontweight="bold",
                    bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.85})
    ax.set_xlabel("depth (0 = first BN layer, 1 = last)")
    ax.set_ylabel("BN shift (normalised W2)")
    ax.set_xlim(-0.02, 1.02)
    top = max([*w2, band[1] if band else 0.0, 0.5])
    ax.set_ylim(0, top * 1.18)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8, framealpha=0.9)
    fig.tight_layout()
    return fig


def _ramp_row(ax: Axes, component: SignalScore) -> None:
    lo_end, hi_end = sorted((component.different_at, component.similar_at))
    span = hi_end - lo_end or 1.0
    left = min(lo_end, component.value) - 0.25 * span
    right = max(hi_end, component.value) + 0.25 * span
    similar_on_right = component.similar_at > component.different_at
    gradient = np.linspace(0, 1, 256)[None, :] if similar_on_right else np.linspace(1, 0, 256)[None, :]
    voting = component.weight > 0
    alpha = 0.85 if voting else 0.3
    ax.imshow(gradient, extent=(lo_end, hi_end, 0, 1), aspect="auto", cmap=_RAMP, alpha=alpha)
    ax.axvspan(left, lo_end, 0, 1, color=SIMILAR if not similar_on_right else DIFFERENT, alpha=alpha)
    ax.axvspan(hi_end, right, 0, 1, color=SIMILAR if similar_on_right else DIFFERENT, alpha=alpha)
    ax.axvline(component.value, color="black", linewidth=2.5)
    ax.set_xlim(left, right)
    ax.set_ylim(0, 1)
    ax.set_yticks([])
    ax.set_xticks(sorted({component.different_at, component.similar_at}))
    ax.tick_params(axis="x", labelsize=8)
    name = component.signal + ("" if voting else " (reported, no vote)")
    ax.set_title(f"{name}: {component.value:.3f} → score {component.score:.2f}, weight {component.weight:g}",
                 fontsize=9, loc="left", color="black" if voting else NEUTRAL)


def signal_ramps(sim: SimilarityReport) -> Figure:
    """One ramp per signal (different → similar) with the dataset's value, then the combined score and
    its threshold."""
    rows = len(sim.components) + 1
    fig = Figure(figsize=(9, 0.82 * rows + 0.3))
    axes = fig.subplots(rows, 1, squeeze=False)[:, 0]
    for ax, component in zip(axes, sim.components, strict=False):
        _ramp_row(ax, component)
    ax = axes[-1]
    ax.imshow(np.linspace(0, 1, 256)[None, :], extent=(0, 1, 0, 1), aspect="auto", cmap=_RAMP, alpha=0.85)
    ax.axvline(sim.threshold, color="white", linewidth=2, linestyle="--")
    ax.axvline(sim.score, color="black", linewidth=3)
    ax.set_xlim(0, 1)
    ax.set_yticks([])
    ax.set_xticks([0, sim.threshold, 1])
    ax.tick_params(axis="x", labelsize=8)
    ax.set_title(f"combined score {sim.score:.2f} → {sim.label} (threshold {sim.threshold:.2f}, dashed)",
                 fontsize=10, loc="left", fontweight="bold")
    fig.tight_layout(h_pad=0.6)
    return fig


def learning_curves(runs: Sequence[StrategyRun] | Sequence[TextStrategyRun]) -> Figure | None:
    """Loss and val accuracy per epoch, one column per trained strategy; None when nothing trained."""
    trained = [r for r in runs if r.curves]
    if not trained:
        return None
    fig = Figure(figsize=(4 * len(trained), 6))
    axes = fig.subplots(2, len(trained), squeeze=False)
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
        for ax in (loss_ax, acc_ax):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    fig.tight_layout()
    return fig


def length_histogram(counts: Sequence[int], unit: str, max_length: int | None) -> Figure:
    """How long the texts are (in the backbone's tokens, or words), with the backbone's max length marked: the
    texts right of the red line are cut."""
    fig = Figure(figsize=(7, 2.8))
    ax = fig.subplots()
    values = np.asarray(counts or [0])
    top = max(int(values.max()), max_length or 0)
    ax.hist(values, bins=min(50, max(top, 1)), range=(0, top + 1), color="#3f7cac")
    if max_length:
        over = int((values > max_length).sum())
        ax.axvline(max_length, color="tab:red", linestyle="--", linewidth=1.2)
        ax.text(max_length, ax.get_ylim()[1] * 0.92, f" max length {max_length} ({over} over)", color="tab:red",
                fontsize=8, va="top")
    ax.set_xlabel(f"length ({unit})")
    ax.set_ylabel("texts")
    fig.tight_layout()
    return fig


def confusion_matrix(metrics: Metrics, class_names: Sequence[str], title: str) -> Figure:
    """Rows = true class, columns = predicted; colour = share of the row, the count written in the cell."""
    matrix = np.asarray(metrics.confusion_matrix, dtype=float)
    n = len(class_names)
    size = min(1.8 + 0.3 * n, 7.0)
    fig = Figure(figsize=(size, size))
    ax = fig.add_subplot()
    rows = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{int(matrix[i, j])}", ha="center", va="center", fontsize=8,
                        color="white" if shares[i, j] > 0.6 else "black")
    labels = [name if len(name) <= 14 else name[:13] + "…" for name in class_names]
    ax.set_xticks(range(n), labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig
