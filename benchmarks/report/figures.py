"""Figures rendered from the collected results (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def category_bars(frame: pd.DataFrame, metric: str, out: Path) -> Path | None:
    """Grouped bars: one group per category, one bar per generator, error bars = std over seeds."""
    data = frame[frame["metric"] == metric]
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
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per category (mean ± std over seeds)")
    if metric not in ("is", "kid"):
        ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7, ncol=min(4, len(generators)), loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
