"""The backup engine: plain Python, no Dagster import.

Everything the CLI needs lives here, so disaster recovery works while Dagster is down.
"""
