"""Anomaly image generation: generators that turn a few real anomalies into many image/mask pairs.

Example:
    >>> from anobench.generation import list_generators, create_generator
    >>> "real-fewshot" in list_generators()
    True
"""

from anobench.generation.base import FewShotSet, GeneratedPair, Generator
from anobench.generation.registry import create_generator, get_generator, list_generators, register_generator

__all__ = [
    "FewShotSet",
    "GeneratedPair",
    "Generator",
    "create_generator",
    "get_generator",
    "list_generators",
    "register_generator",
]
