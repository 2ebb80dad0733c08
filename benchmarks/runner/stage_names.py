"""The names of the runner's stages (``JobKey.stage``, the ``raw/<stage>/`` folders), importable cheaply.

``generate`` writes the generated set (``filter``: a filtered copy of one); ``downstream``
(segmenter), ``classify`` (defect-type classifier), ``detector`` (unsupervised rows) and
``genmetrics`` (generation quality) write metrics, catalogued in
:mod:`anobench.benchmarks.metrics.catalogue`.
"""

GENERATE, DOWNSTREAM, CLASSIFY, DETECTOR, GENMETRICS = (
    "generate", "downstream", "classify", "detector", "genmetrics",
)  # fmt: skip
# ``filter`` scores a generated set's pairs and writes the pairs passing ``generation.filters`` rules.
FILTER = "filter"
