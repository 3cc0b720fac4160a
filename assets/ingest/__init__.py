"""The stream and the raw archive: assets that exist outside Dagster and are observed by it."""
