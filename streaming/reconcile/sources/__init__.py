"""Adapters that read the archive, the stream and the speed layer into the core's count tables (the
warehouse's adapters are :mod:`streaming.warehouse`; no Dagster imports)."""
