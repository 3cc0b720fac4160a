"""Capacity and monthly cost of a tally deployment, from tally's own measured figures.

``load`` says what is planned for (events a day, peak, tenants, ...) and holds the presets; ``figures``
reads the measured figures (``bench/results.json``: Redis bytes per key family, per-process throughput,
dbt build time) and ``prices`` the dated price table; ``memory`` predicts Redis memory per key family;
``capacity`` sizes and prices each component; ``render`` prints the plan (text, JSON, HTML) and
``params`` writes the CloudFormation parameter file of ``deploy/tally.yaml``. Pure Python: no AWS calls,
no Dagster.
"""
