"""The Dagster layer: one folder per capability, each thin over the engine."""
