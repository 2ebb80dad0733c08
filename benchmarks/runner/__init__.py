"""The benchmark runner: jobs (keyed, idempotent), the grid that expands a config, and backends."""
