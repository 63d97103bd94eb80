"""The report's figures as inline SVG strings (matplotlib, Agg backend; no files, no external assets)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # the Agg backend is chosen first

from payfm.evaluation.evaluate import EvaluationResult

COLORS = ("#1f6feb", "#d1242f", "#1a7f37", "#8250df", "#bf8700", "#0a7ea4", "#cf222e", "#57606a")
plt.rcParams.update(
    {"svg.fonttype": "none", "font.size": 9, "axes.spines.top": False, "axes.spines.right": False}
)


def _svg(fig: Any) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]


def _color(i: int) -> str:
    return COLORS[i % len(COLORS)]


def pr_and_roc(results: Sequence[EvaluationResult]) -> str:
    """Precision-recall (left) and ROC with a log false-positive axis (right), one line per model."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for i, r in enumerate(results):
        ax1.step(
            r.curves.pr.x,
            r.curves.pr.y,
            where="post",
            color=_color(i),
            label=f"{r.name} (AP {r.average_precision:.3f})",
        )
        fpr = [max(x, 1e-5) for x in r.curves.roc.x]
        ax2.plot(fpr, r.curves.roc.y, color=_color(i), label=f"{r.name} (AUC {r.roc_auc:.3f})")
    base = results[0].base_rate
    ax1.axhline(base, color="#8c959f", lw=0.8, ls=":", label=f"base rate {base:.2%}")
    ax1.set(xlabel="recall", ylabel="precision", title="Precision-recall", xlim=(0, 1), ylim=(0, 1.02))
    ax2.set_xscale("log")
    ax2.set(
        xlabel="false-positive rate (log)",
        ylabel="recall (true-positive rate)",
        title="ROC",
        xlim=(1e-5, 1),
        ylim=(0, 1.02),
    )
    for x in (0.001, 0.01):
        ax2.axvline(x, color="#8c959f", lw=0.8, ls=":")
    ax1.legend(loc="upper right", fontsize=8, frameon=False)
    ax2.legend(loc="lower right", fontsize=8, frameon=False)
    return _svg(fig)


def score_distributions(results: Sequence[EvaluationResult]) -> str:
    """Score densities of fraudulent vs legitimate charges, one panel per model (log density axis)."""
    n = len(results)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.6 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.set_visible(False)
            continue
        h = results[i].curves.histogram
        ax.stairs(h.legit, h.edges, fill=True, alpha=0.45, color="#57606a", label="legitimate")
        ax.stairs(h.fraud, h.edges, fill=True, alpha=0.45, color="#d1242f", label="fraud")
        ax.set_yscale("symlog", linthresh=0.1)
        ax.set(title=results[i].name, xlabel="score", xlim=(0, 1))
        if i == 0:
            ax.set_ylabel("density")
            ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return _svg(fig)


def reliability(results: Sequence[EvaluationResult]) -> str:
    """Reliability: observed fraud rate against mean score per bin; the diagonal is perfect calibration."""
    fig, ax = plt.subplots(figsize=(4.6, 4))
    ax.plot([0, 1], [0, 1], color="#8c959f", lw=0.8, ls=":")
    for i, r in enumerate(results):
        rel = r.curves.reliability
        ax.plot(
            rel.mean_predicted,
            rel.fraction_positive,
            marker="o",
            ms=3,
            color=_color(i),
            label=f"{r.name} (ECE {r.ece:.4f})",
        )
    ax.set(
        xlabel="mean score in bin",
        ylabel="observed fraud rate",
        title="Reliability",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    ax.legend(fontsize=8, frameon=False, loc="upper left")
    return _svg(fig)


def scenario_recall(results: Sequence[EvaluationResult]) -> str:
    """Recall per fraud scenario at each model's slice threshold, with bootstrap intervals as error bars."""
    groups = [row.group for row in results[0].slices["scenario"] if row.fraud > 0]
    fig, ax = plt.subplots(figsize=(10, 0.5 + 0.32 * max(len(groups), 1) * max(len(results), 1)))
    height = 0.8 / max(len(results), 1)
    for i, r in enumerate(results):
        by = {row.group: row for row in r.slices["scenario"]}
        ys, xs, lo, hi = [], [], [], []
        for j, g in enumerate(groups):
            row = by.get(g)
            if row is None or row.fraud == 0:
                continue
            ys.append(j + i * height)
            xs.append(row.recall)
            lo.append(max(row.recall - row.recall_low, 0.0) if row.recall_low == row.recall_low else 0.0)
            hi.append(max(row.recall_high - row.recall, 0.0) if row.recall_high == row.recall_high else 0.0)
        ax.barh(
            ys,
            xs,
            height=height,
            xerr=[lo, hi],
            color=_color(i),
            alpha=0.85,
            ecolor="#24292f",
            capsize=2,
            label=f"{r.name} @ {r.slice_threshold.preset.name}",
        )
    ax.set_yticks([j + height * (len(results) - 1) / 2 for j in range(len(groups))], groups)
    ax.invert_yaxis()
    ax.set(xlabel="recall (95% bootstrap interval)", xlim=(0, 1), title="Recall per fraud scenario")
    # below the axes, so the legend never hides a bar
    ax.legend(
        fontsize=8, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=min(len(results), 3)
    )
    return _svg(fig)


def dollars(results: Sequence[EvaluationResult]) -> str:
    """Cost curve: share of fraud dollars caught against legitimate dollars blocked, over thresholds."""
    fig, ax = plt.subplots(figsize=(5.4, 4))
    for i, r in enumerate(results):
        d = r.curves.dollars
        caught = [x / d.fraud_total_usd if d.fraud_total_usd else 0.0 for x in d.fraud_caught_usd]
        ax.plot([max(x, 1.0) for x in d.legit_blocked_usd], caught, color=_color(i), label=r.name)
        for tp in r.operating_points:
            if tp.point.flagged > 0 and d.fraud_total_usd:
                ax.plot(
                    max(tp.legit_blocked_usd, 1.0),
                    tp.fraud_caught_usd / d.fraud_total_usd,
                    marker="o",
                    ms=4,
                    color=_color(i),
                )
    ax.set_xscale("log")
    ax.set(
        xlabel="legitimate volume blocked (USD, log)",
        ylabel="share of fraud dollars caught",
        title="Dollars: fraud caught vs good volume blocked",
        ylim=(0, 1.02),
    )
    ax.legend(fontsize=8, frameon=False, loc="upper left")
    return _svg(fig)
