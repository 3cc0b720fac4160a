"""tally's own alerts, for what Prometheus cannot see: loss verdicts, stale layers, failed runs and checks.

:mod:`notify` sends through apprise (``TALLY_ALERT_URLS``); :mod:`incidents` keeps one record per
incident in S3 so each is announced once and resolved once; :mod:`loss` turns a reconciliation report into
incidents. The Dagster sensors in ``orchestration/alerting.py`` drive them. No Dagster import here.
"""
