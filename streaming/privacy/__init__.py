"""Privacy: deletion requests across every layer, the suppression list, the audit log (no Dagster imports)."""
