"""Figures rendered from the collected results (matplotlib, Agg backend)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from anobench.benchmarks.io import safe_name  # noqa: E402
from anobench.benchmarks.metrics.catalogue import metric  # noqa: E402
from anobench.benchmarks.runner.stage_names import DOWNSTREAM  # noqa: E402


def category_bars(frame: pd.DataFrame, key: str, out: Path) -> Path | None:
    """Grouped bars: one group per category, one bar per generator, error bars = std over seeds."""
    data = frame[frame["metric"] == key]
    if data.empty:
        return None
    stats = data.groupby(["category", "generator"], sort=True)["value"].agg(["mean", "std"]).fillna(0.0)
    categories = sorted(data["category"].unique())
    generators = list(dict.fromkeys(data["generator"]))
    width = 0.8 / len(generators)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(categories) * max(1, len(generators) / 3)), 3.4))
    x = np.arange(len(categories))
    for i, generator in enumerate(generators):
        means = [stats["mean"].get((c, generator), np.nan) for c in categories]
        stds = [stats["std"].get((c, generator), 0.0) for c in categories]
        ax.bar(
            x + (i - (len(generators) - 1) / 2) * width, means, width, yerr=stds, label=generator, capsize=2
        )
    ax.set_xticks(x, categories)
    label = metric(key).label
    ax.set_ylabel(label)
    ax.set_title(f"{label} per category (mean ± std over seeds)")
    if data["value"].between(0.0, 1.0).all():
        ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7, ncol=min(4, len(generators)), loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _scores_file(result_path: str) -> Path | None:
    """The job's ``scores.npz``, stored relative to the run folder (absolute in older runs)."""
    payload = json.loads(Path(result_path).read_text())
    scores = payload.get("scores_file")
    if not scores:
        return None
    path = Path(result_path).parents[2] / scores  # an absolute path stays as it is
    return path if path.is_file() else None


RATIO_METRICS = ("image_auroc", "pixel_ap", "pixel_aupro", "pixel_miou")


def ratio_figure(frame: pd.DataFrame, out: Path) -> Path | None:
    """Downstream metrics against the generated share of the training samples, one line per generator.

    Drawn when the run swept ``downstream.normal_fractions``; points are means over categories and seeds.
    """
    data = frame[(frame["stage"] == DOWNSTREAM) & frame["metric"].isin(RATIO_METRICS)]
    data = data.dropna(subset=["generated_fraction"])
    if data["generated_fraction"].nunique() < 2:
        return None
    keys = [k for k in RATIO_METRICS if k in set(data["metric"])]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.4), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        rows = data[data["metric"] == key]
        line_of = rows["generator_name"] + rows["segmenter"].fillna("").map(lambda s: f" [{s}]" if s else "")
        for line, cell in rows.groupby(line_of, sort=True):
            curve = cell.groupby("generated_fraction")["value"].mean()
            ax.plot(curve.index, curve.to_numpy(), marker="o", label=line, lw=1.2)
        label = metric(key).label
        ax.set(xlabel="generated share of the training samples", ylabel=label, title=label)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def curve_figures(frame: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Per category: image ROC, image PR, pixel ROC and pixel PR of every generator's segmenter.

    Curves come from the ``scores.npz`` files the downstream jobs wrote (the pixel curves from their
    seeded pixel sample); one seed per generator (the lowest), as in the papers' figures.
    """
    from sklearn.metrics import auc, precision_recall_curve, roc_curve

    downstream = frame[frame["stage"] == DOWNSTREAM]
    paths = []
    for category, rows in downstream.groupby("category", sort=True):
        curves = {}
        for generator, cell in rows.groupby("generator", sort=False):
            first = cell.sort_values("seed").iloc[0]
            scores = _scores_file(first["path"])
            if scores is not None:
                curves[generator] = (int(first["seed"]), np.load(scores))
        if not curves:
            continue
        fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
        panels = (("image", "image_scores", "image_labels"), ("pixel", "pixel_scores", "pixel_labels"))
        for col, (level, score_key, label_key) in enumerate(panels):
            roc_ax, pr_ax = axes[2 * col], axes[2 * col + 1]
            for generator, (_, data) in curves.items():
                labels, scores = data[label_key].astype(bool).ravel(), data[score_key].ravel()
                if labels.all() or not labels.any():
                    continue
                fpr, tpr, _ = roc_curve(labels, scores)
                precision, recall, _ = precision_recall_curve(labels, scores)
                roc_ax.plot(fpr, tpr, label=f"{generator} ({auc(fpr, tpr):.3f})", lw=1.2)
                pr_ax.plot(recall, precision, label=f"{generator} ({auc(recall, precision):.3f})", lw=1.2)
            roc_ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
            roc_ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"{level} ROC")
            pr_ax.set(xlabel="recall", ylabel="precision", title=f"{level} PR")
            for ax in (roc_ax, pr_ax):
                ax.set_xlim(0, 1)
                ax.set_ylim(0, 1.02)
                ax.legend(fontsize=6, loc="lower left" if ax is pr_ax else "lower right")
                ax.grid(alpha=0.3)
        seeds = sorted({seed for seed, _ in curves.values()})
        fig.suptitle(f"{category}: the segmenter trained on each generator's pairs (seed {seeds})")
        fig.tight_layout()
        path = out_dir / f"curves_{safe_name(category)}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths
