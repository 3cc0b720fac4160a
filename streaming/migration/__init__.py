"""The parallel run beside a legacy pipeline: forwarding is in the collector; this package compares and reports."""
