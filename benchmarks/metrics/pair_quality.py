"""Per-pair generation quality, offline: mask adherence, type fidelity, feature realism, their variants.

``compute_pair_quality`` scores every pair of a generated set (see the metric modules for each
definition), saves the per-pair scores next to the set in ``<set>/scores.jsonl`` (one line per pair,
keyed by its manifest ``image`` path; later runs update the same lines) and aggregates them per defect
type (mean over pairs; KID/FID/IC-LPIPS(a) per type), category (mean over types) and set (mean over
categories). Each aggregate has a ``reference``: the same computation on the split's held-out real
anomalies (mask adherence of the real test images; leave-one-out type fidelity and nn distance; KID,
FID and IC-LPIPS(a) of the few-shot real anomalies against the held-out ones).

Every set of a category is compared with the same detector and reference, so a process keeps both
(and the models) after the first set, keyed by the files' bytes and the settings: a further set costs
only its own pairs, with the same values (:func:`clear_caches` forgets them).

Example:
    >>> from anobench.benchmarks.metrics.pair_quality import compute_pair_quality  # doctest: +SKIP
    >>> r = compute_pair_quality("runs/q/generated/perlin", "data/mvtec", "nut")  # doctest: +SKIP
    >>> r["overall"]["mask_adherence"], r["reference"]["overall"]["mask_adherence"]  # doctest: +SKIP
    (0.71, 0.93)
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
from tqdm.auto import tqdm

from anobench.benchmarks.data.datasets import read_category
from anobench.benchmarks.data.splits import make_split
from anobench.benchmarks.errors import UserError
from anobench.benchmarks.metrics.api import aggregate, json_safe
from anobench.benchmarks.metrics.defaults import (
    IC_LPIPS_VARIANTS,
    KEY_FID_EFFNET,
    KEY_IC_LPIPS_ANOMALY,
    KEY_KID_EFFNET,
    KEY_KID_O2MAG,
    KEY_MASK_ADHERENCE,
    KEY_MASK_ADHERENCE_AP,
    KEY_N_GENERATED,
    KEY_NEAREST_TYPE,
    KEY_NN_DISTANCE,
    KEY_OVERALL,
    KEY_PAIR_ID,
    KEY_PER_CATEGORY,
    KEY_PER_PAIR,
    KEY_PER_TYPE,
    KEY_REFERENCE,
    KEY_SETTINGS,
    KEY_TYPE_FIDELITY,
    KEY_TYPE_FIDELITY_REGION,
    KEY_UNAVAILABLE,
    PAIR_DEFAULTS,
    PAIR_METRIC_NAMES,
    PER_PAIR_METRICS,
    SCORES_FILE,
)
from anobench.benchmarks.metrics.effnet_features import FEATURE_LAYER, EffNetLite0Features
from anobench.benchmarks.metrics.feature_realism import kid_fid, nn_distances
from anobench.benchmarks.metrics.ic_lpips import LPIPSDistance, type_rng
from anobench.benchmarks.metrics.ic_lpips_anomaly import ic_lpips_anomaly_type
from anobench.benchmarks.metrics.kid_o2mag import TorchvisionInception, kid_o2mag, resolve_o2mag_weights
from anobench.benchmarks.metrics.mask_adherence import CategoryDetector, detector_key
from anobench.benchmarks.metrics.type_fidelity import nearest_types, region_crops
from anobench.benchmarks.metrics.weights import WeightsUnavailableError, default_cache_dir, load_lpips
from anobench.downstream.unsupervised import DetectorConfig
from anobench.generation.format import GeneratedEntry, read_generated_set

Pairs = list[tuple[Path, Path]]
T = TypeVar("T")
FEATURE_METRICS = (KEY_TYPE_FIDELITY, KEY_NN_DISTANCE, KEY_KID_EFFNET, KEY_FID_EFFNET)


def parse_pair_metrics(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"mask_adherence,nn_distance"`` -> a tuple; None -> ``PAIR_DEFAULTS['metrics']``."""
    if text is None:
        return tuple(PAIR_DEFAULTS["metrics"])  # type: ignore[arg-type]
    names = [
        n.strip().lower().replace("-", "_") for n in (text.split(",") if isinstance(text, str) else text)
    ]
    unknown = [n for n in names if n not in PAIR_METRIC_NAMES]
    if unknown or not names:
        raise UserError(
            f"unknown pair metric(s) {', '.join(unknown) or '(none)'}; "
            f"choose from: {', '.join(PAIR_METRIC_NAMES)}"
        )
    return tuple(dict.fromkeys(names))


def default_detector_cache() -> Path:
    """Where fitted detectors are cached: next to the weights cache (``.../anobench/detectors``)."""
    return default_cache_dir().parent / "detectors"


def read_scores(root: str | Path) -> dict[str, dict[str, Any]]:
    """The per-pair scores saved next to a set, keyed by pair id (empty when none were saved)."""
    path = Path(root) / SCORES_FILE
    if not path.exists():
        return {}
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {str(rec[KEY_PAIR_ID]): rec for rec in lines}


def write_scores(root: str | Path, records: Sequence[dict[str, Any]]) -> Path:
    """Merge ``records`` into ``<root>/scores.jsonl`` (by pair id; new keys replace old ones), atomically."""
    path = Path(root) / SCORES_FILE
    merged = read_scores(root)
    for rec in records:
        merged[str(rec[KEY_PAIR_ID])] = {**merged.get(str(rec[KEY_PAIR_ID]), {}), **json_safe(rec)}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text("".join(json.dumps(merged[k]) + "\n" for k in sorted(merged)), encoding="utf-8")
    os.replace(tmp, path)
    return path


def score_summary(root: str | Path) -> list[dict[str, Any]]:
    """Per (category, defect): pairs scored and the mean of each per-pair metric in ``scores.jsonl``."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for rec in read_scores(root).values():
        groups.setdefault((str(rec["category"]), str(rec["defect"])), []).append(rec)
    return [
        {
            "category": cat,
            "defect": defect,
            "n_scored": len(recs),
            **{m: _mean([math.nan if r.get(m) is None else r[m] for r in recs]) for m in PER_PAIR_METRICS},
        }
        for (cat, defect), recs in sorted(groups.items())
    ]


def _mean(values: Sequence[float]) -> float:
    kept = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(kept)) if kept else math.nan


def _type_rows(
    records: Sequence[dict[str, Any]],
    names: Sequence[str],
    extra: dict[str, dict[str, float]],
    count_key: str = KEY_N_GENERATED,
) -> dict[str, dict[str, Any]]:
    """Per defect type: n, the mean of each per-pair metric, then the type-level values in ``extra``."""
    rows: dict[str, dict[str, Any]] = {}
    for defect in sorted({r["defect"] for r in records}):
        mine = [r for r in records if r["defect"] == defect]
        row: dict[str, Any] = {count_key: len(mine)}
        row.update({m: _mean([r[m] for r in mine]) for m in names if m in PER_PAIR_METRICS})
        row.update(extra.get(defect, {}))
        rows[defect] = row
    return rows


class _Memo(Generic[T]):
    """Values built once per key in this process; beyond ``size`` keys the least recently used goes."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._values: OrderedDict[Hashable, T] = OrderedDict()

    def get(self, key: Hashable, build: Callable[[], T]) -> T:
        """The value of ``key``, built by ``build()`` the first time."""
        if key in self._values:
            self._values.move_to_end(key)
            return self._values[key]
        value = self._values[key] = build()
        while len(self._values) > self.size:
            self._values.popitem(last=False)
        return value

    def clear(self) -> None:
        """Forget every value."""
        self._values.clear()


@dataclass
class _Reference:
    """A category's held-out real anomalies, scored once per process: what every set is compared with."""

    types: list[str]  # the defect type of each held-out anomaly, sorted by type
    features: np.ndarray | None  # their EfficientNet-Lite0 features (rows as ``types``)
    region_features: np.ndarray | None  # the same of their defect regions (``type_fidelity_region``)
    inception: dict[str, np.ndarray]  # per type: their torchvision Inception features (kid_o2mag)
    records: list[dict[str, Any]]  # their per-pair scores
    extra: dict[str, dict[str, float]]  # per type: the set-level values of the few-shot vs held-out ones


# Categories a process keeps (least recently used dropped): a run alternates categories per generator.
_DETECTORS: _Memo[CategoryDetector] = _Memo(16)
_REFERENCES: _Memo[_Reference] = _Memo(16)
_INCEPTIONS: _Memo[TorchvisionInception] = _Memo(1)


@functools.lru_cache(maxsize=2)
def _feature_model(size: int) -> EffNetLite0Features:
    return EffNetLite0Features(size, int(PAIR_DEFAULTS["feature_batch_size"]), "cpu")  # type: ignore[call-overload]


@functools.lru_cache(maxsize=2)
def _lpips_distance(net: str, size: int, weights_cache: str | Path | None) -> LPIPSDistance:
    return LPIPSDistance(load_lpips(net, weights_cache)[0], size, 8, "cpu")


def clear_caches() -> None:
    """Forget the detectors, references and models this process kept (the on-disk fits stay)."""
    for memo in (_DETECTORS, _REFERENCES, _INCEPTIONS):
        memo.clear()
    for builder in (_feature_model, _lpips_distance):
        builder.cache_clear()


def _file_digest(digest: Any, label: str, path: Path) -> None:
    digest.update(f"{label}\0{path.name}\0".encode())
    digest.update(hashlib.sha256(path.read_bytes()).digest())


class _Scorers:
    """The models shared by every category (built only for the requested metrics, kept per process)."""

    def __init__(
        self,
        names: Sequence[str],
        detector: DetectorConfig,
        feature_size: int,
        cache_dir: Path | None,
        weights_cache: str | Path | None,
        o2mag_weights: str | Path | None,
        explicit: bool,
        seed: int,
    ) -> None:
        self.names, self.detector, self.cache_dir, self.seed = list(names), detector, cache_dir, seed
        self.feature_size = feature_size
        self.unavailable: dict[str, str] = {}
        self.features = _feature_model(feature_size) if any(m in names for m in FEATURE_METRICS) else None
        self.region_size = int(PAIR_DEFAULTS["region_size"])  # type: ignore[call-overload]
        self.region_features = _feature_model(self.region_size) if KEY_TYPE_FIDELITY_REGION in names else None
        self.lpips: LPIPSDistance | None = None
        self.inception: TorchvisionInception | None = None
        self.inception_weights: str | None = None
        recipe = IC_LPIPS_VARIANTS[str(PAIR_DEFAULTS["ic_lpips_a_variant"])]
        self.max_per_cluster = recipe.max_per_cluster
        try:
            if KEY_IC_LPIPS_ANOMALY in names:
                self.lpips = _lpips_distance(recipe.net, recipe.size, weights_cache)
        except WeightsUnavailableError as exc:
            self._unavailable(KEY_IC_LPIPS_ANOMALY, exc, explicit)
        try:
            if KEY_KID_O2MAG in names:
                weights = resolve_o2mag_weights(o2mag_weights)
                stat = weights.stat()
                self.inception_weights = f"{weights.resolve()} {stat.st_size} {stat.st_mtime_ns}"
                self.inception = _INCEPTIONS.get(
                    self.inception_weights, lambda: TorchvisionInception(weights)
                )
        except WeightsUnavailableError as exc:
            self._unavailable(KEY_KID_O2MAG, exc, explicit and o2mag_weights is not None)

    def region_types(
        self, pairs: Pairs, records: list[dict[str, Any]], real: np.ndarray | None, real_types: list[str]
    ) -> np.ndarray | None:
        """Set each record's ``type_fidelity_region`` (rows as ``pairs``) and return the regions' features.

        ``real`` None: the pairs ARE the real anomalies, each compared with the others (leave-one-out).
        """
        if self.region_features is None:
            return None
        features = self.region_features.of_tensor(region_crops(pairs, self.region_size))
        loo = real is None
        if not loo or len(real_types) >= 2:
            found = nearest_types(features, features if loo else real, real_types, leave_one_out=loo)
            for rec, t in zip(records, found, strict=True):
                rec[KEY_TYPE_FIDELITY_REGION] = float(t == rec["defect"])
        return features

    def _unavailable(self, name: str, exc: WeightsUnavailableError, explicit: bool) -> None:
        if explicit:
            raise exc
        self.unavailable[name] = exc.problems[0]
        self.names.remove(name)

    def category_detector(self, category: str, train_good: Sequence[Path]) -> CategoryDetector:
        """The category's fitted detector: this process's, else the cached fit, else fitted now."""
        key = detector_key(self.detector, train_good, self.seed)
        config = self.detector
        return _DETECTORS.get(
            (key, category, config.device, config.batch_size, str(self.cache_dir)),
            lambda: CategoryDetector(config, category, train_good, self.cache_dir, seed=self.seed, key=key),
        )

    def ic_lpips_a(self, pairs: Pairs, centres: Pairs, rng_args: tuple[int, str, str]) -> float:
        """IC-LPIPS(a) of one type (the LPIPS feature cache emptied after: crops are temporary files)."""
        assert self.lpips is not None
        try:
            rng = type_rng(*rng_args)
            return ic_lpips_anomaly_type(pairs, centres, self.lpips, self.max_per_cluster, rng)
        finally:
            self.lpips.clear()

    def reference(
        self,
        category: str,
        held: dict[str, Pairs],
        fewshot: dict[str, Pairs],
        detector: CategoryDetector | None,
    ) -> _Reference:
        """The category's :class:`_Reference`, computed once per process per content and settings."""
        digest = hashlib.sha256()
        settings = {
            "category": category,
            "metrics": self.names,
            "feature_size": self.feature_size,
            "region": [PAIR_DEFAULTS[k] for k in ("region_margin", "region_min_side", "region_size")],
            "seed": self.seed,
            "detector": detector and [detector.key, self.detector.device, self.detector.batch_size],
            "inception": self.inception_weights,
        }
        digest.update(json.dumps(settings, sort_keys=True).encode())
        for label, samples in (("held", held), ("fewshot", fewshot)):
            for defect, pairs in sorted(samples.items()):
                for image, mask in pairs:
                    _file_digest(digest, f"{label}/{defect}/image", image)
                    _file_digest(digest, f"{label}/{defect}/mask", mask)
        build = functools.partial(self._compute_reference, category, held, fewshot, detector)
        return _REFERENCES.get(digest.hexdigest(), build)

    def _compute_reference(
        self,
        category: str,
        held: dict[str, Pairs],
        fewshot: dict[str, Pairs],
        detector: CategoryDetector | None,
    ) -> _Reference:
        names, seed = self.names, self.seed
        real_pairs = [(d, p) for d in sorted(held) for p in held[d]]
        types = [d for d, _ in real_pairs]
        records: list[dict[str, Any]] = [{"defect": d} for d in types]
        extra: dict[str, dict[str, float]] = {d: {} for d in held}
        if detector is not None:
            scores = detector.score_pairs([i for _, (i, _) in real_pairs], [m for _, (_, m) in real_pairs])
            for rec, score in zip(records, scores, strict=True):
                rec.update(score)
        region_f = self.region_types([p for _, p in real_pairs], records, None, types)
        real_f = None
        if self.features is not None:
            real_f = self.features.features([i for _, (i, _) in real_pairs])
            if KEY_TYPE_FIDELITY in names and len(types) >= 2:
                loo = nearest_types(real_f, real_f, types, leave_one_out=True)
                for rec, t in zip(records, loo, strict=True):
                    rec[KEY_TYPE_FIDELITY] = float(t == rec["defect"])
            type_array = np.array(types)
            few_f = {d: self.features.features([i for i, _ in fewshot[d]]) for d in held}
            for defect in held:
                mine_real = real_f[type_array == defect]
                if KEY_NN_DISTANCE in names:
                    dists = (
                        nn_distances(mine_real, mine_real, leave_one_out=True)
                        if len(mine_real) > 1
                        else [math.nan]
                    )
                    for i, dist in zip(np.flatnonzero(type_array == defect), dists, strict=False):
                        records[i][KEY_NN_DISTANCE] = float(dist)
                if KEY_KID_EFFNET in names or KEY_FID_EFFNET in names:
                    extra[defect].update(kid_fid(few_f[defect], mine_real, seed=seed))
        inception: dict[str, np.ndarray] = {}
        for defect in held:
            if self.lpips is not None:
                extra[defect][KEY_IC_LPIPS_ANOMALY] = self.ic_lpips_a(
                    held[defect], fewshot[defect], (seed, category, defect)
                )
            if self.inception is not None:
                inception[defect] = self.inception.features([i for i, _ in held[defect]])
                extra[defect][KEY_KID_O2MAG] = kid_o2mag(
                    self.inception.features([i for i, _ in fewshot[defect]]), inception[defect], seed
                )
        for rec in records:
            for m in PER_PAIR_METRICS:
                rec.setdefault(m, math.nan)
        return _Reference(types, real_f, region_f, inception, records, extra)


def _score_category(
    scorers: _Scorers,
    root: Path,
    dataset_root: Path,
    category: str,
    generated: dict[str, list[GeneratedEntry]],
    split_preset: str,
    dataset_options: dict[str, Any],
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Per-pair records, per-type rows and per-type reference rows of one category."""
    names, seed = scorers.names, scorers.seed
    data = read_category(dataset_root, category, validate=False, **dataset_options)
    split = make_split(data, split_preset)
    unknown = sorted(set(generated) - set(split.defects))
    if unknown:
        raise UserError(
            f"{root / category / unknown[0]}: defect type {unknown[0]!r} is not in {data.path}/test; "
            f"known: {', '.join(split.defects)}"
        )
    held: dict[str, Pairs] = {d: pairs for d, pairs in split.test_samples().items() if pairs}
    fewshot: dict[str, Pairs] = split.fewshot_samples()
    records = [
        {
            KEY_PAIR_ID: e.image.relative_to(root).as_posix(),
            "category": category,
            "defect": defect,
            "index": e.index,
        }
        for defect, entries in generated.items()
        for e in entries
    ]
    entries = [e for d in generated for e in generated[d]]
    type_extra: dict[str, dict[str, float]] = {d: {} for d in generated}

    detector = None
    if KEY_MASK_ADHERENCE in names or KEY_MASK_ADHERENCE_AP in names:
        detector = scorers.category_detector(category, [split.absolute(p) for p in split.train_good])
        scores = detector.score_pairs([e.image for e in entries], [e.mask for e in entries])
        for rec, score in zip(records, scores, strict=True):
            rec.update(score)
    reference = scorers.reference(category, held, fewshot, detector)
    if reference.region_features is not None:
        scorers.region_types(
            [(e.image, e.mask) for e in entries], records, reference.region_features, reference.types
        )

    if scorers.features is not None:
        assert reference.features is not None
        gen_f, real_f = scorers.features.features([e.image for e in entries]), reference.features
        if KEY_TYPE_FIDELITY in names:
            for rec, t in zip(records, nearest_types(gen_f, real_f, reference.types), strict=True):
                rec[KEY_NEAREST_TYPE], rec[KEY_TYPE_FIDELITY] = t, float(t == rec["defect"])
        types, gen_types = np.array(reference.types), np.array([r["defect"] for r in records])
        for defect in held:
            mine_real, mine_gen = real_f[types == defect], gen_f[gen_types == defect]
            if KEY_NN_DISTANCE in names:
                for i, dist in zip(
                    np.flatnonzero(gen_types == defect), nn_distances(mine_gen, mine_real), strict=True
                ):
                    records[i][KEY_NN_DISTANCE] = float(dist)
            if (KEY_KID_EFFNET in names or KEY_FID_EFFNET in names) and defect in type_extra:
                type_extra[defect].update(kid_fid(mine_gen, mine_real, seed=seed))

    for defect in held:
        if defect not in generated:
            continue
        if scorers.lpips is not None:
            type_extra[defect][KEY_IC_LPIPS_ANOMALY] = scorers.ic_lpips_a(
                [(e.image, e.mask) for e in generated[defect]], fewshot[defect], (seed, category, defect)
            )
        if scorers.inception is not None:
            type_extra[defect][KEY_KID_O2MAG] = kid_o2mag(
                scorers.inception.features([e.image for e in generated[defect]]),
                reference.inception[defect],
                seed,
            )
    return (
        records,
        _type_rows(records, names, type_extra),
        _type_rows(reference.records, names, reference.extra, "n_real"),
    )


def compute_pair_quality(
    generated_root: str | Path,
    dataset_root: str | Path,
    categories: str | Sequence[str] | None = None,
    *,
    metrics: Sequence[str] | None = None,
    split_preset: str = str(PAIR_DEFAULTS["split_preset"]),
    detector: DetectorConfig | None = None,
    feature_size: int = int(PAIR_DEFAULTS["feature_size"]),  # type: ignore[call-overload]
    seed: int = int(PAIR_DEFAULTS["seed"]),  # type: ignore[call-overload]
    cache_dir: str | Path | None = None,
    weights_cache: str | Path | None = None,
    o2mag_weights: str | Path | None = None,
    device: str = "auto",
    save: bool = True,
    progress: bool = True,
    format: str | None = None,
    resolution: str | int | None = None,
) -> dict[str, Any]:
    """Per-pair quality of a generated set, its aggregates and their references (see the module doc).

    Args:
        generated_root: a generated set (``<cat>/<defect>/{image,mask}/NNNN.png``).
        dataset_root: the dataset it was generated from (any registered format).
        categories: one, several, or None for every category of the set.
        metrics: names from ``PAIR_METRIC_NAMES``; None = ``PAIR_DEFAULTS['metrics']``, where metrics
            whose weights are missing (``kid_o2mag``, ``ic_lpips_a``) are reported unavailable.
        split_preset: which real anomalies are few-shot and which are held out.
        detector: the mask-adherence detector (default ``PAIR_DEFAULTS['detector']``).
        feature_size: input size of the EfficientNet-Lite0 features.
        seed: seeds the detector fit (coreset) and the KID subsets.
        cache_dir: fitted-detector cache (default ``~/.cache/anobench/detectors``).
        weights_cache: the anobench weights cache (LPIPS trunks for ``ic_lpips_a``).
        o2mag_weights: torchvision's ``inception_v3_google-0cc3c7bd.pth`` (else torch hub's folder).
        device: detector device (``auto``: CUDA when available).
        save: write the per-pair scores to ``<generated_root>/scores.jsonl``.
        progress: show a progress bar over the categories.
        format, resolution: the dataset's format (None: detected) and Real-IAD resolution.
    """
    explicit = metrics is not None
    names = parse_pair_metrics(metrics)
    root = Path(generated_root)
    detector = detector or DetectorConfig(**{**PAIR_DEFAULTS["detector"], "device": device})  # type: ignore[arg-type, dict-item]
    cache = Path(cache_dir) if cache_dir else default_detector_cache()
    scorers = _Scorers(names, detector, feature_size, cache, weights_cache, o2mag_weights, explicit, seed)
    pairs: dict[tuple[str, str], list[GeneratedEntry]] = {}
    for cat in [categories] if isinstance(categories, str) else categories or [None]:
        pairs.update(read_generated_set(root, cat, validate=False))
    by_category: dict[str, dict[str, list[GeneratedEntry]]] = {}
    for (cat, defect), entries in sorted(pairs.items()):
        by_category.setdefault(cat, {})[defect] = entries
    records: list[dict[str, Any]] = []
    per_type: dict[str, dict[str, dict[str, Any]]] = {}
    reference: dict[str, dict[str, dict[str, Any]]] = {}
    for cat, generated in tqdm(
        by_category.items(), desc="pair quality", unit="category", disable=not progress
    ):
        recs, per_type[cat], reference[cat] = _score_category(
            scorers,
            root,
            Path(dataset_root),
            cat,
            generated,
            split_preset,
            {"format": format, "resolution": resolution},
        )
        records += recs
    computed = scorers.names
    per_category, overall = aggregate(per_type, computed)
    ref_category, ref_overall = aggregate(reference, computed)
    if save:
        write_scores(root, records)
    return {
        KEY_SETTINGS: {
            "metrics": list(names),
            "generated_root": str(root),
            "dataset_root": str(dataset_root),
            "split_preset": split_preset,
            "seed": seed,
            "feature_layer": FEATURE_LAYER,
            "feature_size": feature_size,
            "detector": {
                "row": detector.row_name,
                "layers": detector.layers,
                "image_size": detector.image_size,
            },
            "scores_file": str(root / SCORES_FILE) if save else None,
        },
        KEY_UNAVAILABLE: scorers.unavailable,
        KEY_PER_PAIR: records,
        KEY_PER_TYPE: per_type,
        KEY_PER_CATEGORY: per_category,
        KEY_OVERALL: overall,
        KEY_REFERENCE: {KEY_PER_TYPE: reference, KEY_PER_CATEGORY: ref_category, KEY_OVERALL: ref_overall},
    }
