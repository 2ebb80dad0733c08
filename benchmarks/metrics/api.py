"""``compute_generation_metrics``: IS, IC-LPIPS, KID (and FID) per defect type, category and overall.

Averaging as the reference: type -> category = mean over the category's defect types -> overall =
mean over categories (NaN entries, e.g. IC-LPIPS of a type whose clusters all have < 2 members, are
left out of the means and stay visible in ``per_type``).

Example:
    >>> from anobench.benchmarks.metrics.api import compute_generation_metrics  # doctest: +SKIP
    >>> r = compute_generation_metrics("runs/q/generated/real-fewshot", "data/mvtec", "nut")  # doctest: +SKIP
    >>> r["overall"]["ic_lpips"], r["settings"]["ic_lpips_variant"]["name"]  # doctest: +SKIP
    (0.31, 'anomalydiffusion')
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from anobench.benchmarks.data.mvtec import read_category
from anobench.benchmarks.data.splits import make_split
from anobench.benchmarks.errors import UserError
from anobench.benchmarks.metrics.defaults import (
    DEFAULTS,
    IC_LPIPS_VARIANTS,
    KEY_FID,
    KEY_IC_LPIPS,
    KEY_IC_LPIPS_CLUSTER_SCORES,
    KEY_IC_LPIPS_CLUSTER_SIZES,
    KEY_IS,
    KEY_KID,
    KEY_N_GENERATED,
    KEY_N_REAL_REFERENCE,
    KEY_OVERALL,
    KEY_PER_CATEGORY,
    KEY_PER_TYPE,
    KEY_SETTINGS,
    KEY_UNAVAILABLE,
    KEY_WEIGHTS,
    METRIC_NAMES,
)
from anobench.benchmarks.metrics.ic_lpips import LPIPSDistance, ic_lpips_type, type_rng
from anobench.benchmarks.metrics.inception import inception_metrics
from anobench.benchmarks.metrics.weights import WeightsUnavailableError, load_lpips, resolve_inception
from anobench.generation.format import read_generated_set

INCEPTION_METRICS = (KEY_IS, KEY_KID, KEY_FID)
KID_REFERENCES = ("all", "test")


def _nanmean(values: Sequence[float]) -> float:
    kept = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(kept)) if kept else math.nan


def aggregate(per_type: dict[str, dict[str, dict[str, Any]]], metrics: Sequence[str]) -> tuple[dict, dict]:
    """Per-category means over defect types, then the overall mean over categories (NaN left out).

    Example:
        >>> per_type = {"a": {"x": {"is": 1.0}, "y": {"is": 3.0}}, "b": {"z": {"is": 4.0}}}
        >>> aggregate(per_type, ["is"])
        ({'a': {'is': 2.0}, 'b': {'is': 4.0}}, {'is': 3.0})
    """
    per_category = {
        cat: {m: _nanmean([row[m] for row in types.values() if m in row]) for m in metrics}
        for cat, types in per_type.items()
    }
    overall = {m: _nanmean([row[m] for row in per_category.values()]) for m in metrics}
    return per_category, overall


def json_safe(value: Any) -> Any:
    """NaN -> None, recursively (JSON has no NaN)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def parse_metrics(text: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """``"is,kid"`` -> ``("is", "kid")``; None stays None (the default set)."""
    if text is None:
        return None
    names = [
        n.strip().lower().replace("-", "_") for n in (text.split(",") if isinstance(text, str) else text)
    ]
    unknown = [n for n in names if n not in METRIC_NAMES]
    if unknown or not names:
        raise UserError(
            f"unknown metric(s) {', '.join(unknown) or '(none)'}; choose from: {', '.join(METRIC_NAMES)}"
        )
    return tuple(dict.fromkeys(names))


def compute_generation_metrics(
    generated_root: str | Path,
    dataset_root: str | Path,
    categories: str | Sequence[str] | None = None,
    split_preset: str = str(DEFAULTS["split_preset"]),
    metrics: Sequence[str] | None = None,
    variant: str = str(DEFAULTS["ic_lpips_variant"]),
    seed: int = int(DEFAULTS["seed"]),
    inception_weights: str | Path | None = None,
    weights_cache: str | Path | None = None,
    *,
    is_resize: int = int(DEFAULTS["is_resize"]),
    kid_reference: str = str(DEFAULTS["kid_reference"]),
    batch_size: int = int(DEFAULTS["batch_size"]),
    download: bool = True,
    progress: bool = True,
    format: str | None = None,
    resolution: str | int | None = None,
) -> dict[str, Any]:
    """Generation-quality metrics of a generated set against the real anomalies of each defect type.

    Args:
        generated_root: a generated set (``<cat>/<defect>/image/*.png``), ours or imported.
        dataset_root: the dataset the set was generated from (any registered format).
        categories: one category, several, or None for every category of the generated set.
        split_preset: which few-shot images are the IC-LPIPS cluster centres (``strict``: first N//3).
        metrics: names from ``METRIC_NAMES``; None = ``DEFAULT_METRICS``, where Inception metrics whose
            weights are missing are reported as unavailable instead of failing.
        variant: IC-LPIPS recipe (``anomalydiffusion``, ``dfmgan``, ``seas``).
        seed: seeds the IC-LPIPS subsampling; the same seed gives the same number.
        inception_weights: torch-fidelity's Inception file; else cache, torch hub cache, download.
        weights_cache: the anobench weights cache (default ``~/.cache/anobench/weights``).
        is_resize: 0 = raw files (DualAnoDiff); 256 = SeaS's resize before IS (also used for KID/FID).
        kid_reference: ``all`` real anomalies of the type, or only the ``test`` split's.
        batch_size: LPIPS batch size.
        download: allow torch-fidelity's download of the Inception weights.
        progress: show a progress bar over the defect types.
        format, resolution: the dataset's format (None: detected) and Real-IAD resolution.

    Raises:
        WeightsUnavailableError: weights of an explicitly requested metric are missing.
        UserError: unknown variant/metric, or a generated defect type the dataset does not have.
    """
    explicit = metrics is not None
    names = parse_metrics(metrics) or tuple(DEFAULTS["metrics"])  # type: ignore[arg-type]
    if variant not in IC_LPIPS_VARIANTS:
        raise UserError(
            f"unknown IC-LPIPS variant {variant!r}; choose one of: {', '.join(IC_LPIPS_VARIANTS)}"
        )
    if kid_reference not in KID_REFERENCES:
        raise UserError(
            f"unknown KID reference {kid_reference!r}; choose one of: {', '.join(KID_REFERENCES)}"
        )
    recipe = IC_LPIPS_VARIANTS[variant]
    category_list = [categories] if isinstance(categories, str) else categories
    pairs: dict[tuple[str, str], list] = {}
    for cat in category_list or [None]:
        pairs.update(read_generated_set(generated_root, cat, validate=False))

    weights: dict[str, dict[str, Any]] = {}
    unavailable: dict[str, str] = {}
    inception_path = None
    if any(m in names for m in INCEPTION_METRICS):
        try:
            info = resolve_inception(inception_weights, weights_cache, download=download)
            weights[info.name] = info.to_dict()
            inception_path = info.path
        except WeightsUnavailableError as exc:
            if explicit:
                raise
            for m in INCEPTION_METRICS:
                if m in names:
                    unavailable[m] = exc.problems[0]
    distance = None
    if KEY_IC_LPIPS in names:
        model, infos = load_lpips(recipe.net, weights_cache)
        weights.update({i.name: i.to_dict() for i in infos})
        device = "cuda" if torch.cuda.is_available() else "cpu"
        distance = LPIPSDistance(model, recipe.size, batch_size, device)

    per_type: dict[str, dict[str, dict[str, Any]]] = {}
    splits = {}
    for (cat, defect), entries in tqdm(
        sorted(pairs.items()), desc="generation metrics", unit="type", disable=not progress
    ):
        if cat not in splits:
            category_data = read_category(
                dataset_root, cat, validate=False, format=format, resolution=resolution
            )
            splits[cat] = (category_data, make_split(category_data, split_preset))
        data, split = splits[cat]
        if defect not in split.defects:
            raise UserError(
                f"{Path(generated_root) / cat / defect}: defect type {defect!r} is not in {data.path}/test; "
                f"known: {', '.join(split.defects)}"
            )
        row: dict[str, Any] = {KEY_N_GENERATED: len(entries)}
        images = [e.image for e in entries]
        if inception_path is not None:
            real = (
                [s.image for s in data.defects[defect]]
                if kid_reference == "all"
                else [p for p, _ in split.test_samples()[defect]]
            )
            row.update(inception_metrics(images[0].parent, inception_path, names, real, resize=is_resize))
            if KEY_KID in names or KEY_FID in names:
                row[KEY_N_REAL_REFERENCE] = len(real)
        if distance is not None:
            centres = [p for p, _ in split.fewshot_samples()[defect]]
            result = ic_lpips_type(
                images, centres, distance, recipe.max_per_cluster, type_rng(seed, cat, defect)
            )
            row[KEY_IC_LPIPS] = result["score"]
            row[KEY_IC_LPIPS_CLUSTER_SCORES] = result["cluster_scores"]
            row[KEY_IC_LPIPS_CLUSTER_SIZES] = result["cluster_sizes"]
            distance.clear()  # the next type has other images
        per_type.setdefault(cat, {})[defect] = row

    computed = [m for m in names if m not in unavailable]
    per_category, overall = aggregate(per_type, computed)
    return {
        KEY_SETTINGS: {
            "metrics": list(names),
            "generated_root": str(generated_root),
            "dataset_root": str(dataset_root),
            "split_preset": split_preset,
            "seed": seed,
            "ic_lpips_variant": dataclasses.asdict(recipe),
            "is_resize": is_resize,
            "is_splits": 10,
            "kid_reference": kid_reference,
            "kid_subsets": DEFAULTS["kid_subsets"],
            "weights_by_metric": {
                m: [w for w in weights if (m == KEY_IC_LPIPS) == w.startswith("lpips")]
                for m in names
                if m not in unavailable
            },
            "versions": {p: importlib.metadata.version(p) for p in ("torch-fidelity", "lpips", "torch")},
        },
        KEY_WEIGHTS: weights,
        KEY_UNAVAILABLE: unavailable,
        KEY_PER_TYPE: per_type,
        KEY_PER_CATEGORY: per_category,
        KEY_OVERALL: overall,
    }
