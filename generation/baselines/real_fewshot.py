"""``real-fewshot``: the few real training anomalies themselves, cycled (the reference row).

It shows what the downstream models reach with only the real few-shot data, i.e. the bar
every generator has to clear.
"""

from __future__ import annotations

from collections.abc import Iterator

from anobench.generation.base import FewShotSet, GeneratedPair, Generator, load_mask, load_rgb, pair_seed
from anobench.generation.registry import register_generator


@register_generator("real-fewshot")
class RealFewShot(Generator):
    """Yields the few-shot anomalies in order, cycling when ``n`` exceeds their number."""

    def fit(self, fewshot: FewShotSet) -> None:
        """Remember the few-shot set; nothing is learned."""
        self.fewshot = fewshot

    def sample(self, defect: str, n: int, seed: int) -> Iterator[GeneratedPair]:
        """Yield ``n`` copies of the real anomalies of ``defect`` (deterministic, seed unused)."""
        pairs = self._check_defect(defect)
        size = self.config.image_size
        for i in range(n):
            image, mask = pairs[i % len(pairs)]
            yield GeneratedPair(
                image=load_rgb(image, size), mask=load_mask(mask, size), seed=pair_seed(seed, defect, i)
            )
