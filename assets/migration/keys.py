"""The migration domain's asset keys and group, the one place they are spelled."""

import dagster as dg

GROUP = "migration"
REPORT_KEY = dg.AssetKey(["migration", "parallel_run_report"])
