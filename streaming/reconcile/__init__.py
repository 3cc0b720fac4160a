"""Reconciliation: cross-check the archive, the warehouse and the speed layer, say which layer lost or
duplicated which events, and heal the speed layer from batch truth.

The core (:mod:`model`, :mod:`engine`, :mod:`sequences`) is pure: it takes per-layer count tables and
returns verdicts. The adapters (:mod:`sources`) read the archive, the stream and Redis, the warehouse is
read through its seam (:mod:`streaming.warehouse`); :mod:`heal` writes Redis;
:mod:`report` renders Markdown and HTML. No Dagster imports here.
"""
