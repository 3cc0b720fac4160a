"""Privacy domain: the forget job (deletion requests run through Dagster)."""
