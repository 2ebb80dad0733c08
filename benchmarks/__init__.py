"""anobench application: datasets, presets, the benchmark runner, reports and the CLI."""

__version__ = "0.1.0"
