"""Run configuration: YAML presets validated into dataclasses.

A preset is a YAML file under ``benchmarks/configs/`` (``quick``, ``paper-mvtec``) or any path.
Unknown keys, wrong types and missing paths raise :class:`~anobench.benchmarks.errors.ConfigError` naming
the key. Overrides use dotted keys: ``segmenter.epochs=2``.

Example:
    >>> from anobench.benchmarks.config import load_config
    >>> cfg = load_config("quick", overrides=["segmenter.epochs=1"])
    >>> cfg.segmenter.epochs
    1
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pydantic
import yaml

from anobench.benchmarks.errors import ConfigError
from anobench.benchmarks.metrics.defaults import DEFAULTS as METRIC_DEFAULTS
from anobench.benchmarks.metrics.defaults import (
    IC_LPIPS_VARIANTS,
    METRIC_NAMES,
    PAIR_DEFAULTS,
    PAIR_METRIC_NAMES,
)
from anobench.downstream.classifier import ClassifierConfig
from anobench.downstream.metrics import F1_MODES
from anobench.downstream.segmenters import DEFAULT_SEGMENTER, create_segmenter
from anobench.downstream.training import PROTOCOLS, SegmenterConfig
from anobench.downstream.unsupervised import DetectorConfig
from anobench.generation.registry import get_generator, list_generators

PRESET_DIR = Path(__file__).parent / "configs"
T = TypeVar("T")


def _list_problems(key: str, values: list[Any], minimum: int | None = None) -> list[str]:
    """Problems of a list that must hold unique values (and ints at least ``minimum``)."""
    shown = f"{key}={values}"
    problems = [
        f"{shown}: {v} is listed twice" for v in dict.fromkeys(v for v in values if values.count(v) > 1)
    ]
    if minimum is not None and any(v < minimum for v in values):
        problems.append(f"{shown}: {key} must be >= {minimum}")
    return problems


@dataclass
class DataConfig:
    """Which dataset and how it is split."""

    root: str | None = None  # None: the embedded synthetic dataset
    categories: list[str] | None = None  # None: every category found
    split: str = "strict"  # strict | dualanodiff-official | dualanodiff-bcm-official
    synthetic_seed: int = 0
    cache_dir: str = "~/.cache/anobench"
    format: str | None = None  # dataset layout (`anobench data formats`); None: detected from the folder
    resolution: int | str | None = None  # Real-IAD's image folder (realiad_<resolution>); None: the largest

    def __post_init__(self) -> None:
        if self.categories is None:
            return
        if not self.categories:
            raise ConfigError("data.categories=[]: list at least one category, or null for all of them")
        if problems := _list_problems("data.categories", self.categories):
            raise ConfigError(*problems)

    def options(self) -> dict[str, Any]:
        """The keyword arguments the dataset readers take (``format``, ``resolution``)."""
        return {"format": self.format, "resolution": self.resolution}


@dataclass
class GenerationConfig:
    """Which generators run and how many pairs each writes."""

    generators: list[str] = field(default_factory=list)
    # Reference rows every table carries (run first; see README "Reference rows").
    reference: list[str] = field(default_factory=lambda: ["real-fewshot", "perlin"])
    n_per_defect: int = 500
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-generator config fields
    filters: list[FilterConfig] = field(default_factory=list)  # filtered rows, see FilterConfig

    def __post_init__(self) -> None:
        if self.n_per_defect < 1:
            raise ConfigError(f"generation.n_per_defect={self.n_per_defect}: must be at least 1")
        known = {*self.generators, *self.reference}
        unknown = [f.generator for f in self.filters if f.generator not in known]
        if unknown:
            raise ValueError(f"generation.filters: generator(s) {unknown} are not in this run's generators")
        rows = [f.row for f in self.filters]
        if len(set(rows)) < len(rows):
            raise ValueError("generation.filters: one filter per generator (its row is <generator>+filtered)")


@dataclass
class FilterConfig:
    """A filtered copy of one generator's sets: its own row ``<generator>+filtered`` in every table.

    ``keep``: rules ``"<metric> <op> <number|pNN>"`` (``anobench filter``), all of them must hold.
    """

    generator: str
    keep: list[str]

    def __post_init__(self) -> None:
        from anobench.benchmarks.errors import UserError
        from anobench.benchmarks.metrics.filtering import parse_rules

        try:
            parse_rules(self.keep)
        except UserError as exc:
            raise ValueError(f"generation.filters ({self.generator}).keep: {exc}") from None

    @property
    def row(self) -> str:
        """The row (generator name) of the filtered sets."""
        return f"{self.generator}+filtered"


@dataclass
class DownstreamConfig:
    """Which inspection models are trained on every generated set (``anobench segmenters``)."""

    segmenters: list[str] = field(default_factory=lambda: [DEFAULT_SEGMENTER])
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-segmenter config fields
    # named recipe (downstream.training.PROTOCOLS): its segmenter.* values unless set explicitly
    protocol: str = "anomalydiffusion"
    # grid axis: one downstream job per value of segmenter.normal_fraction (empty: that field alone)
    normal_fractions: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.segmenters:
            raise ValueError("downstream.segmenters=[]: list at least one segmenter (`anobench segmenters`)")
        for name in dict.fromkeys([*self.segmenters, *self.options]):
            try:
                create_segmenter(name, **self.options.get(name, {}))
            except ValueError as exc:
                raise ValueError(f"downstream: {exc}") from None
        bad = [f for f in self.normal_fractions if not 0.0 <= f <= 1.0]
        if bad:
            raise ValueError(f"downstream.normal_fractions: {bad} not in [0, 1]")


@dataclass
class EvaluationConfig:
    """How downstream results are scored and which extra rows are computed."""

    pixel_f1: str = "exact"  # exact | grid-0.05 (the reference scripts' threshold grid)
    classify: bool = True  # train the defect-type classifier (categories with one defect type are skipped)
    detectors: list[DetectorConfig] = field(default_factory=list)  # unsupervised rows (patchcore, padim)
    save_scores: bool = True  # write scores.npz (image scores, a pixel sample, the PRO curve) per cell

    def __post_init__(self) -> None:
        if self.pixel_f1 not in F1_MODES:
            raise ValueError(f"evaluation.pixel_f1={self.pixel_f1!r}: choose one of {', '.join(F1_MODES)}")


_DETECTOR = typing.cast(dict[str, Any], PAIR_DEFAULTS["detector"])


@dataclass
class PairQualityConfig:
    """Per-pair quality of every generated set (``genmetrics.pair_quality``; ``anobench metrics --pairs``).

    Defaults are the library's ``PAIR_DEFAULTS``; one detector fit per category, cached under
    ``data.cache_dir``/``detectors`` and reused by every generator's set.
    """

    enabled: bool = False
    metrics: list[str] | None = None  # None: PAIR_DEFAULTS' list, metrics without local weights unavailable
    detector_image_size: int = int(_DETECTOR["image_size"])
    coreset_sampling_ratio: float = float(_DETECTOR["coreset_sampling_ratio"])
    feature_size: int = int(PAIR_DEFAULTS["feature_size"])  # type: ignore[call-overload]

    def __post_init__(self) -> None:
        unknown = [m for m in self.metrics or [] if m not in PAIR_METRIC_NAMES]
        if unknown or self.metrics == []:
            what = f"unknown {unknown}" if unknown else "empty (set enabled=false to skip them)"
            raise ValueError(
                f"genmetrics.pair_quality.metrics: {what}; choose from {', '.join(PAIR_METRIC_NAMES)}"
            )

    def detector(self) -> DetectorConfig:
        """The mask-adherence detector these settings describe."""
        return DetectorConfig(**{**_DETECTOR, "image_size": self.detector_image_size,
                                 "coreset_sampling_ratio": self.coreset_sampling_ratio})  # fmt: skip


@dataclass
class GenMetricsConfig:
    """Generation quality of every generated set (the ``genmetrics`` jobs; ``anobench metrics``)."""

    enabled: bool = True
    # None: IS, IC-LPIPS and KID, Inception metrics reported `unavailable` when their weights are
    # missing; an explicit list fails the job instead.
    metrics: list[str] | None = None
    ic_lpips_variant: str = str(METRIC_DEFAULTS["ic_lpips_variant"])
    is_resize: int = int(METRIC_DEFAULTS["is_resize"])  # 256: SeaS
    kid_reference: str = str(METRIC_DEFAULTS["kid_reference"])
    inception_weights: str | None = None  # None: the weights cache or torch hub cache, never a download
    mask_quality: bool = True  # mask area, components, empty fraction, fraction on the object
    pair_quality: PairQualityConfig = field(default_factory=PairQualityConfig)

    def __post_init__(self) -> None:
        if self.is_resize < 0:
            raise ValueError(f"genmetrics.is_resize={self.is_resize}: must be >= 0 (0: the raw files)")
        if self.ic_lpips_variant not in IC_LPIPS_VARIANTS:
            choices = ", ".join(IC_LPIPS_VARIANTS)
            raise ValueError(
                f"genmetrics.ic_lpips_variant={self.ic_lpips_variant!r}: choose one of {choices}"
            )
        if self.metrics is not None and not self.metrics:
            raise ValueError(
                "genmetrics.metrics=[]: list at least one metric, "
                "or set genmetrics.enabled=false to skip them"
            )
        unknown = [m for m in self.metrics or [] if m not in METRIC_NAMES]
        if unknown:
            raise ValueError(f"genmetrics.metrics: unknown {unknown}; choose from {', '.join(METRIC_NAMES)}")


@dataclass
class RunnerConfig:
    """Where the jobs run."""

    backend: str = "serial"  # serial | dask
    scheduler: str | None = None  # dask scheduler address; None starts a LocalCluster
    n_workers: int | None = None  # LocalCluster workers; None: one per GPU, else per CPU slot

    def __post_init__(self) -> None:
        if self.n_workers is not None and self.n_workers < 1:
            raise ConfigError(f"runner.n_workers={self.n_workers}: must be at least 1")


@dataclass
class RunConfig:
    """One benchmark run: a grid of categories x generators x seeds."""

    name: str = "run"
    output_dir: str = "runs"
    seeds: list[int] = field(default_factory=lambda: [0])
    data: DataConfig = field(default_factory=DataConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    downstream: DownstreamConfig = field(default_factory=DownstreamConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    genmetrics: GenMetricsConfig = field(default_factory=GenMetricsConfig)
    runner: RunnerConfig = field(default_factory=RunnerConfig)

    def __post_init__(self) -> None:
        if not self.seeds:
            raise ConfigError("seeds=[]: list at least one seed, e.g. seeds=[0]")
        if problems := _list_problems("seeds", self.seeds, minimum=0):
            raise ConfigError(*problems)
        generation = self.generation
        if not (generation.generators or generation.reference or self.evaluation.detectors):
            raise ConfigError(
                "the grid has 0 jobs: generation.generators, generation.reference and evaluation.detectors "
                "are all empty; set generation.reference=[real-fewshot] or name a generator or detector"
            )


def list_presets() -> list[str]:
    """Names of the bundled presets."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


class _Loader(yaml.SafeLoader):
    """YAML with 1.2 floats: ``3e-4`` (no dot) is a float, not the string YAML 1.1 makes of it."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?\d+[eE][-+]?\d+$"), list("-+0123456789")
)


@functools.cache
def _adapter(cls: type) -> pydantic.TypeAdapter:
    return pydantic.TypeAdapter(cls)


def _validate(cls: type[T], values: Any, prefix: str = "") -> T:
    """``values`` (YAML data) as a ``cls`` dataclass; a ConfigError names the first bad key.

    Strict JSON-mode validation: nothing is coerced (``true`` or ``"3"`` is no int), an int is a
    valid float, a list a valid tuple, and unknown keys are rejected.
    """
    try:
        payload = json.dumps(values, default=str)
        return _adapter(cls).validate_json(payload, strict=True, extra="forbid")
    except pydantic.ValidationError as exc:
        error = exc.errors()[0]
    key = prefix + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"])
    key = key.lstrip(".")
    if error["type"] == "unexpected_keyword_argument":
        known = ", ".join(sorted(_fields_at(cls, error["loc"][:-1])))
        where = key.rpartition(".")[0] or "the top level"
        raise ConfigError(f"unknown config key {key}; known keys under {where}: {known}")
    if error["type"] == "value_error":  # the dataclass's own __post_init__ checks
        problems = getattr(error["ctx"]["error"], "problems", [str(error["ctx"]["error"])])
        raise ConfigError("; ".join(_name_key(line, key) for line in problems))
    raise ConfigError(f"{key}: {error['msg']} (got {error['input']!r})")


def _fields_at(cls: type, loc: tuple[str | int, ...]) -> list[str]:
    """Field names of the dataclass found at ``loc`` (a validation error's location) inside ``cls``."""
    for part in loc:
        if isinstance(part, str):
            cls = typing.get_type_hints(cls)[part]
        cls = next((a for a in (cls, *typing.get_args(cls)) if dataclasses.is_dataclass(a)), cls)
    return [f.name for f in dataclasses.fields(cls)]


def _name_key(problem: str, key: str) -> str:
    """A ``__post_init__`` problem line with the dotted config key in front (``field=value: ...``)."""
    if not key or problem.startswith(key):  # the downstream configs name their section already
        return problem
    return f"{key}.{problem}" if re.match(r"\w+[=:]", problem) else f"{key}: {problem}"


def validate_generators(config: RunConfig) -> None:
    """Every generator named under ``generation`` is registered and accepts its options.

    Example:
        >>> validate_generators(load_config("quick", ["generation.options.nsa.tries=0"]))
        Traceback (most recent call last):
        ...
        anobench.benchmarks.errors.ConfigError: generation.options.nsa.tries=0: must be at least 1
    """
    registered = list_generators()
    gen = config.generation
    named = [
        *(("generation.generators", name) for name in gen.generators),
        *(("generation.reference", name) for name in gen.reference),
        *((f"generation.options.{name}", name) for name in gen.options),
    ]
    for key, name in named:
        if name not in registered:
            raise ConfigError(f"{key}: no generator named {name}; registered: {', '.join(registered)}")
    for name, options in gen.options.items():
        _validate(get_generator(name).Config, options, f"generation.options.{name}")


def _apply_override(raw: dict[str, Any], override: str) -> None:
    if "=" not in override:
        raise ConfigError(f"override {override!r}: expected KEY=VALUE, e.g. segmenter.epochs=2")
    key, text = override.split("=", 1)
    node = raw
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {override!r}: {part} is not a mapping")
    node[parts[-1]] = yaml.load(text, _Loader)


def resolve_preset(name_or_path: str | Path) -> Path:
    """A preset name (``quick``) or a YAML path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        return path
    candidate = PRESET_DIR / f"{name_or_path}.yaml"
    if not candidate.is_file():
        raise ConfigError(f"unknown preset {name_or_path!r}; bundled presets: {', '.join(list_presets())}")
    return candidate


def load_config(name_or_path: str | Path = "quick", overrides: list[str] | None = None) -> RunConfig:
    """Load, override and validate a run configuration."""
    path = resolve_preset(name_or_path)
    try:
        raw = yaml.load(path.read_text(), _Loader) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc.__class__.__name__})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    for override in overrides or []:
        _apply_override(raw, override)
    _apply_protocol(raw)
    config = _validate(RunConfig, raw)
    validate_generators(config)
    validate_paths(config)
    return config


def _apply_protocol(raw: dict[str, Any]) -> None:
    """Fill the ``segmenter`` fields the named ``downstream.protocol`` sets, unless given explicitly."""
    downstream, segmenter = raw.get("downstream") or {}, raw.setdefault("segmenter", {})
    if not isinstance(downstream, dict) or not isinstance(segmenter, dict):
        return  # reported by the type check
    protocol = downstream.get("protocol", DownstreamConfig.protocol)
    if protocol not in PROTOCOLS:
        raise ConfigError(f"downstream.protocol={protocol!r}: choose one of {', '.join(PROTOCOLS)}")
    for key, value in PROTOCOLS[protocol].items():
        segmenter.setdefault(key, value)


def validate_paths(config: RunConfig) -> None:
    """Paths named by the config must exist (``$VARS`` and ``~`` are expanded first)."""
    weights = config.genmetrics.inception_weights
    if weights is not None and not Path(weights).expanduser().is_file():
        raise ConfigError(
            f"genmetrics.inception_weights: {weights} is not a file; give torch-fidelity's "
            "weights-inception-2015-12-05-6726825d.pth or leave it unset"
        )
    if config.data.format is not None:
        from anobench.benchmarks.data.datasets import list_datasets

        if config.data.format not in list_datasets():
            raise ConfigError(
                f"data.format: unknown dataset format {config.data.format!r}; "
                f"registered: {', '.join(list_datasets())}"
            )
    root = config.data.root
    if root is None:
        return
    expanded = os.path.expanduser(os.path.expandvars(root))
    if "$" in expanded:
        raise ConfigError(
            f"data.root: {root} names an unset environment variable; export it or pass --dataset DIR"
        )
    if not Path(expanded).is_dir():
        raise ConfigError(
            f"data.root: {root} does not exist; point it at a dataset folder (`anobench data formats`)"
        )
    config.data.root = expanded


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """A dataclass config as a flat ``{"a.b": value}`` dict (recorded with every result)."""
    out: dict[str, Any] = {}
    items = dataclasses.asdict(config).items() if dataclasses.is_dataclass(config) else config.items()
    for key, value in items:
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and value:
            out.update(flatten(value, name))
        else:
            out[name] = list(value) if isinstance(value, tuple) else value
    return out
