"""The warehouse seam: the :class:`~streaming.warehouse.base.Warehouse` protocol and its two adapters,
DuckDB (local) and Snowflake (production), the only Python code that knows either SQL dialect."""
