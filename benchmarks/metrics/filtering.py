"""Filtering a generated set on its saved per-pair scores (``<set>/scores.jsonl``).

A rule is ``"<metric> <op> <value>"`` with ``op`` one of ``>= <= > < ==`` and ``value`` a number or
``pNN`` (the NN-th percentile, 0-100, of the set's own values of that metric, NaN left out); several
rules are AND-ed and a pair whose value is missing/NaN fails its rule. The filtered set has the same
format; its manifest keeps each pair's original record plus ``scores`` and ``filter`` (the rules,
the thresholds they resolved to and the source set), and ``scores.jsonl`` the kept pairs' lines.

Example:
    >>> from anobench.benchmarks.metrics.filtering import parse_rule
    >>> parse_rule("nn_distance <= p90")
    Rule(metric='nn_distance', op='<=', value=90.0, percentile=True, text='nn_distance <= p90')
"""

from __future__ import annotations

import json
import math
import operator
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from anobench.benchmarks.errors import UserError
from anobench.benchmarks.metrics.defaults import KEY_PAIR_ID, PER_PAIR_METRICS, SCORES_FILE
from anobench.benchmarks.metrics.pair_quality import read_scores
from anobench.generation.format import MANIFEST, RESERVED_DIRS, read_generated_set

OPERATORS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq}
RULE = re.compile(r"^\s*([a-z_0-9]+)\s*(>=|<=|==|>|<)\s*(p?)([-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?)\s*$")


@dataclass(frozen=True)
class Rule:
    """One parsed rule; ``value`` is a percentile (0-100) when ``percentile``."""

    metric: str
    op: str
    value: float
    percentile: bool
    text: str

    def threshold(self, values: Sequence[float]) -> float:
        """The rule's number on a set: ``value`` itself, or that percentile of ``values`` (NaN left out)."""
        if not self.percentile:
            return self.value
        kept = np.array([v for v in values if v is not None and not math.isnan(v)], dtype=float)
        if not kept.size:
            raise UserError(
                f"filter rule {self.text!r}: no pair has a {self.metric} value to take p{self.value:g} of"
            )
        return float(np.percentile(kept, self.value))


def parse_rule(text: str) -> Rule:
    """``"mask_adherence >= 0.8"`` -> :class:`Rule`; a one-line :class:`UserError` when malformed."""
    match = RULE.match(text.lower())
    if not match:
        raise UserError(
            f"filter rule {text!r}: expected '<metric> <op> <number or pNN>', e.g. 'mask_adherence >= 0.8' "
            f"or 'nn_distance <= p90' (op one of {' '.join(OPERATORS)})"
        )
    metric, op, pct, number = match.groups()
    if metric not in PER_PAIR_METRICS:
        raise UserError(
            f"filter rule {text!r}: unknown metric {metric!r}; choose from: {', '.join(PER_PAIR_METRICS)}"
        )
    value = float(number)
    if pct and not 0 <= value <= 100:
        raise UserError(f"filter rule {text!r}: percentile p{number} is outside 0-100")
    return Rule(metric, op, value, bool(pct), text.strip())


def parse_rules(rules: Sequence[str] | str) -> list[Rule]:
    """Parse a rule or a list of rules (the config form ``generation.filter.rules``); none is an error."""
    parsed = [parse_rule(r) for r in ([rules] if isinstance(rules, str) else rules)]
    if not parsed:
        raise UserError("filter: give at least one rule, e.g. --keep 'mask_adherence >= 0.8'")
    return parsed


def filter_generated_set(src: str | Path, dst: str | Path, rules: Sequence[str] | str) -> dict[str, Any]:
    """Write the pairs of ``src`` that pass every rule to ``dst`` (same format); return a summary.

    Raises:
        UserError: malformed rules, unknown metrics, no saved scores (run ``anobench metrics --pairs``),
            ``dst`` not empty, or rules that keep no pair.
    """
    src, dst = Path(src), Path(dst)
    parsed = parse_rules(rules)
    pairs = read_generated_set(src, validate=False)
    scores = read_scores(src)
    entries = [e for key in sorted(pairs) for e in pairs[key]]
    ids = [e.image.relative_to(src).as_posix() for e in entries]
    missing_scores = [i for i in ids if i not in scores]
    if missing_scores:
        raise UserError(
            f"{src / SCORES_FILE}: no scores for {len(missing_scores)} of {len(ids)} pairs "
            f"(e.g. {missing_scores[0]}); "
            f"compute them first: anobench metrics {src} --dataset DATA --pairs"
        )
    thresholds = {}
    for rule in parsed:
        values = [scores[i].get(rule.metric) for i in ids]
        if all(v is None for v in values):
            raise UserError(
                f"filter rule {rule.text!r}: {src / SCORES_FILE} has no {rule.metric}; "
                f"compute it first: anobench metrics {src} --dataset DATA --metrics {rule.metric}"
            )
        thresholds[rule.text] = rule.threshold([math.nan if v is None else v for v in values])

    def passes(record: dict[str, Any]) -> bool:
        for rule in parsed:
            value = record.get(rule.metric)
            if value is None or math.isnan(value) or not OPERATORS[rule.op](value, thresholds[rule.text]):
                return False
        return True

    kept = [(e, i) for e, i in zip(entries, ids, strict=True) if passes(scores[i])]
    if not kept:
        raise UserError(
            f"filter: the rules {', '.join(repr(r.text) for r in parsed)} keep none of the "
            f"{len(ids)} pairs of {src}"
        )
    if dst.exists() and any(dst.iterdir()):
        raise UserError(f"{dst}: output folder exists and is not empty; choose a new --out")
    manifest: dict[str, dict[str, Any]] = {}
    if (src / MANIFEST).exists():
        for line in (src / MANIFEST).read_text(encoding="utf-8").splitlines():
            if line.strip():
                record = json.loads(line)
                manifest[str(record["image"])] = record
    provenance = {"rules": [r.text for r in parsed], "thresholds": thresholds, "source": str(src)}
    lines, score_lines = [], []
    for entry, pair_id in kept:
        record = dict(
            manifest.get(pair_id, {"category": entry.category, "defect": entry.defect, "index": entry.index})
        )
        for field in ("image", "mask", "fg"):
            path = getattr(entry, field)
            if path is not None:
                rel = path.relative_to(src)
                (dst / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, dst / rel)
                record[field] = rel.as_posix()
        record["scores"] = {
            k: v for k, v in scores[pair_id].items() if k not in (KEY_PAIR_ID, "category", "defect", "index")
        }
        record["filter"] = provenance
        lines.append(json.dumps(record) + "\n")
        score_lines.append(json.dumps(scores[pair_id]) + "\n")
    for reserved in RESERVED_DIRS:
        if (src / reserved).is_dir():
            shutil.copytree(src / reserved, dst / reserved)
    (dst / MANIFEST).write_text("".join(lines), encoding="utf-8")
    (dst / SCORES_FILE).write_text("".join(score_lines), encoding="utf-8")
    per_type: dict[str, list[int]] = {}
    for entry in entries:
        per_type.setdefault(f"{entry.category}/{entry.defect}", [0, 0])[1] += 1
    for entry, _ in kept:
        per_type[f"{entry.category}/{entry.defect}"][0] += 1
    return {
        "source": str(src),
        "out": str(dst),
        "rules": [r.text for r in parsed],
        "thresholds": thresholds,
        "kept": len(kept),
        "total": len(ids),
        "per_type": {k: {"kept": v[0], "total": v[1]} for k, v in per_type.items()},
    }
