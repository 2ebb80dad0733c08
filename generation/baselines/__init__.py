"""Baseline generators; importing this package registers them."""

from generation.baselines import real_fewshot  # noqa: F401  (registers "real-fewshot")
