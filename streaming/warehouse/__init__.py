"""The production warehouse (Snowflake): connection from settings, loading the archive, reading marts.

The local warehouse (DuckDB) lives with the archive (:mod:`streaming.archive.loader`) and the
reconciliation sources; these modules are the Snowflake side of the same interfaces.
"""
