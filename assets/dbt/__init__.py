"""dbt models and tests as Dagster assets and asset checks."""
