"""``anobench report``: render every table and figure of a run and a Markdown page linking them."""

from __future__ import annotations

from pathlib import Path

from anobench.benchmarks.metrics.catalogue import GROUPS, Metric, grouped
from anobench.benchmarks.report.collect import collect_results, select_run
from anobench.benchmarks.report.figures import category_bars, curve_figures, ratio_figure
from anobench.benchmarks.report.tables import (
    BEST_ON_TEST_MARK,
    markdown_cell,
    markdown_row,
    metric_table,
    paper_table,
    summary_table,
    to_markdown,
    write_table,
)
from anobench.generation.errors import GenerationInputError
from anobench.generation.format import read_generated_set
from anobench.generation.quality import quality_figure


def sample_grids(folders: list[Path], out_dir: Path, per_defect: int = 2) -> list[tuple[str, Path]]:
    """One sample grid per generated set (named after its folder)."""
    grids = []
    for folder in folders:
        try:
            pairs = read_generated_set(folder, validate=False)
        except GenerationInputError:
            continue  # an interrupted, still empty set
        path = quality_figure(pairs, out_dir / f"samples_{folder.name}.png", per_defect, title=folder.name)
        grids.append((folder.name, path))
    return grids


def glossary(metrics: list[Metric]) -> list[str]:
    """Markdown lines of a table describing ``metrics`` as the catalogue does."""
    lines = [
        "## Metrics",
        "",
        markdown_row(["key", "name", "better", "gated", "note"]),
        "|---|---|---|---|---|",
    ]
    for entry in metrics:
        gated = "yes" if entry.gated else "no (descriptive)"
        lines.append(markdown_row([f"`{entry.key}`", entry.label, entry.direction, gated, entry.note]))
    return [*lines, ""]


def render_report(
    run_dir: str | Path, out_dir: str | Path | None = None, run_config: str | None = None
) -> Path:
    """Write ``<out>/report.md`` plus ``tables/`` (md, csv, tex) and ``figures/``; return the page path.

    ``run_config``: the run configuration to report (see :func:`select_run`; None: the last run).
    """
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir else run_dir / "report"
    selection = select_run(run_dir, run_config)
    frame = collect_results(run_dir, run_config)
    lines = [
        f"# Benchmark report: {markdown_cell(run_dir.name)}",
        "",
        f"Results: {selection.describe()}.",
        "",
        f"Rendered from {frame['path'].nunique()} raw result files under `{run_dir / 'raw'}`. "
        f"Cells are mean ± std over seeds; `Average` averages over categories within each seed first. "
        f"{BEST_ON_TEST_MARK} marks results whose checkpoint was selected on the test set (`best-on-test`, "
        f"reproduction only).",
        "",
        "## Summary (averaged over categories)",
        "",
        to_markdown(summary_table(frame)),
        "",
    ]
    write_table(summary_table(frame), out / "tables" / "summary", "Summary over categories")
    groups = grouped(frame["metric"])
    for group, metrics in groups.items():
        lines += [f"## {GROUPS[group]}", ""]
        for entry in metrics:
            shown, _ = metric_table(frame, entry.key)
            caption = f"{entry.label} ({entry.key}) per category"
            write_table(shown, out / "tables" / f"{group}_{entry.key}", caption)
            figure = category_bars(frame, entry.key, out / "figures" / f"bars_{entry.key}.png")
            lines += [f"### {entry.label} (`{entry.key}`)", "", to_markdown(shown), ""]
            if figure:
                lines += [f"![{entry.label} per category]({figure.relative_to(out).as_posix()})", ""]
    ratio = ratio_figure(frame, out / "figures" / "ratio.png")
    if ratio:
        lines += ["## Metrics against the generated share (`downstream.normal_fractions`)", ""]
        lines += [f"![ratio]({ratio.relative_to(out).as_posix()})", ""]
    curves = curve_figures(frame, out / "figures")
    if curves:
        lines += ["## ROC and PR curves (image level and pixel level; AUC in the legend)", ""]
        lines += [f"![{p.stem}]({p.relative_to(out).as_posix()})" for p in curves] + [""]
    grids = sample_grids(selection.generated, out / "figures")
    if grids:
        lines += ["## Generated samples (image | mask | overlay)", ""]
        lines += [f"![{name}]({path.relative_to(out).as_posix()})" for name, path in grids] + [""]
    paper = paper_table()
    write_table(
        paper, out / "tables" / "paper_reported", "Published numbers (benchmarks/report/paper_reported.csv)"
    )
    lines += [
        "## Published numbers (MVTec AD, side by side)",
        "",
        "From `benchmarks/report/paper_reported.csv`, each value with its source and a trust mark there. "
        "Compare only with runs on MVTec AD under the same protocol.",
        "",
        to_markdown(paper),
        "",
    ]
    lines += glossary([entry for metrics in groups.values() for entry in metrics])
    page = out / "report.md"
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text("\n".join(lines))
    return page
