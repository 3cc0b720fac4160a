"""The parallel run beside a legacy pipeline: a report per day and its schedule."""
