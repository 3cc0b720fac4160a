"""Reconciliation: the three layers cross-checked per hourly partition, reported, and the speed layer healed."""
