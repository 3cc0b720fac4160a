"""Adapters that read each layer into the core's count tables (no Dagster imports)."""
