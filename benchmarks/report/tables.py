"""Tables in the papers' shape, rendered from the collected raw results.

* per metric: rows are categories plus ``Average``, columns are generators, cells ``mean ± std``
  over seeds (the average row first averages over categories within a seed);
* a summary: rows are generators, columns the metrics averaged over categories;
* the published numbers from ``paper_reported.csv`` (shipped with the package), side by side, labelled.

Metrics are ordered, grouped and formatted as the metric catalogue
(:mod:`anobench.benchmarks.metrics.catalogue`) says; metrics it does not know are left out.

Results selected with ``best-on-test`` carry a dagger (``†``) in every table; rows of a smoke-size
stand-in (offline DualAnoDiff: small models trained in minutes instead of Stable Diffusion) read
``<generator> (smoke-size)`` in every table and in the run's printed summary.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd

from anobench.benchmarks.metrics.catalogue import Metric, metric, ordered

BEST_ON_TEST_MARK = "†"
#: Appended to the row label of a generator whose config is a smoke-size stand-in
#: (:attr:`anobench.generation.base.GeneratorConfig.smoke_size`).
SMOKE_SIZE_MARK = " (smoke-size)"
AVERAGE = "Average"
PAPER_CSV = Path(__file__).with_name("paper_reported.csv")


# Reference rows get their role in the label: `perlin` uses no anomaly data at all.
ROW_LABELS = {"perlin": "perlin (no-anomaly)"}


def row_label(generator: str, smoke_size: bool = False, best_on_test: bool = False) -> str:
    """A generator's row label: its role (:data:`ROW_LABELS`), then its marks.

    Example:
        >>> row_label("dualanodiff", smoke_size=True)
        'dualanodiff (smoke-size)'
    """
    marks = (SMOKE_SIZE_MARK if smoke_size else "") + (BEST_ON_TEST_MARK if best_on_test else "")
    return ROW_LABELS.get(generator, generator) + marks


def _label_generators(frame: pd.DataFrame) -> pd.DataFrame:
    best = set(frame.loc[frame["selection"] == "best-on-test", "generator"])
    smoke = set(frame.loc[frame["smoke_size"].astype(bool), "generator"])
    frame = frame.copy()
    frame["generator"] = [row_label(g, g in smoke, g in best) for g in frame["generator"]]
    return frame


def _mean_std(values: pd.Series) -> tuple[float, float, int]:
    arr = values.to_numpy(dtype=float)
    std = float(np.std(arr, ddof=1)) if len(arr) > 1 else 0.0
    return float(np.mean(arr)), std, len(arr)


def _format(entry: Metric, mean: float, std: float, n: int) -> str:
    """``mean`` (``mean ± std`` over several seeds) in the metric's display format."""
    return entry.format(mean) if n < 2 else f"{entry.format(mean)} ± {entry.format(std)}"


def metric_table(frame: pd.DataFrame, key: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(display table of "mean ± std" strings, numeric table of means) for one catalogued metric."""
    entry = metric(key)
    data = _label_generators(frame[frame["metric"] == key])
    if data.empty:
        return pd.DataFrame(), pd.DataFrame()
    generators = list(dict.fromkeys(data["generator"]))
    categories = sorted(data["category"].unique())
    shown = pd.DataFrame(index=[*categories, AVERAGE], columns=generators, dtype=object)
    means = pd.DataFrame(index=[*categories, AVERAGE], columns=generators, dtype=float)
    for generator, rows in data.groupby("generator", sort=False):
        for category, cell in rows.groupby("category"):
            m, s, n = _mean_std(cell["value"])
            shown.loc[category, generator], means.loc[category, generator] = _format(entry, m, s, n), m
        per_seed = rows.groupby("seed")["value"].mean()  # average over categories within each seed
        m, s, n = _mean_std(per_seed)
        shown.loc[AVERAGE, generator], means.loc[AVERAGE, generator] = _format(entry, m, s, n), m
    return shown.fillna("-"), means


def summary_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Generators x metrics (catalogue order), each averaged over categories (mean ± std over seeds)."""
    data = _label_generators(frame)
    metrics = ordered(data["metric"])
    out = pd.DataFrame(index=list(dict.fromkeys(data["generator"])), columns=metrics, dtype=object)
    for (generator, key), rows in data[data["metric"].isin(metrics)].groupby(["generator", "metric"]):
        m, s, n = _mean_std(rows.groupby("seed")["value"].mean())
        out.loc[generator, key] = _format(metric(key), m, s, n)
    return out.fillna("-")


def paper_table(path: str | Path = PAPER_CSV) -> pd.DataFrame:
    """Published averages (category ``mean``), methods x metrics, with sources kept in the CSV."""
    paper = pd.read_csv(path)
    averages = paper[paper["category"] == "mean"]
    table = averages.pivot_table(index=["method", "dataset", "reported_by"], columns="metric", values="value",
                                 aggfunc="first")  # fmt: skip
    return table[ordered(table.columns)].apply(lambda column: column.map(metric(column.name).format))


# LaTeX's special characters, and the ones its default (OT1) font encoding prints as other glyphs.
LATEX_ESCAPES = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}",
}  # fmt: skip


def markdown_cell(value: object) -> str:
    r"""``value`` as text that stays inside one Markdown table cell and shows as typed.

    HTML is escaped (a name like ``<i>x</i>`` is shown, not rendered) and ``|`` cannot end the cell.

    Example:
        >>> markdown_cell("a|b <i>x</i>")
        'a\\|b &lt;i&gt;x&lt;/i&gt;'
    """
    text = html.escape(str(value), quote=False)
    return " ".join(text.replace("|", "\\|").splitlines())


def markdown_row(cells: list[object]) -> str:
    """One Markdown table row, every cell through :func:`markdown_cell`."""
    return "| " + " | ".join(map(markdown_cell, cells)) + " |"


def latex_text(value: object) -> str:
    r"""``value`` as LaTeX text: its special characters escaped.

    Example:
        >>> latex_text("g_1 & 50% <b>")
        'g\\_1 \\& 50\\% \\textless{}b\\textgreater{}'
    """
    return "".join(LATEX_ESCAPES.get(char, char) for char in str(value))


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (index first), cells through :func:`markdown_cell`."""
    index_name = " / ".join(str(n) for n in table.index.names if n) or ""
    lines = [
        markdown_row([index_name, *table.columns]),
        "|" + "|".join(["---"] + ["---:"] * len(table.columns)) + "|",
    ]
    for idx, row in table.iterrows():
        label = " / ".join(map(str, idx)) if isinstance(idx, tuple) else str(idx)
        lines.append(markdown_row([label, *row.tolist()]))
    return "\n".join(lines)


def to_latex(table: pd.DataFrame, caption: str) -> str:
    """A LaTeX table; index, header, cells and caption escaped by :func:`latex_text`."""
    escaped = table.map(latex_text).rename(index=latex_text, columns=latex_text)
    escaped.index.names = [None if n is None else latex_text(n) for n in table.index.names]
    escaped.columns.name = None if table.columns.name is None else latex_text(table.columns.name)
    return escaped.to_latex(caption=latex_text(caption), escape=False)


def write_table(table: pd.DataFrame, stem: Path, caption: str) -> list[Path]:
    """Write ``table`` as Markdown, CSV (quoted by the csv module) and LaTeX next to each other."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".md"), stem.with_suffix(".csv"), stem.with_suffix(".tex")]
    paths[0].write_text(f"**{markdown_cell(caption)}**\n\n{to_markdown(table)}\n")
    table.to_csv(paths[1])
    paths[2].write_text(to_latex(table, caption))
    return paths
