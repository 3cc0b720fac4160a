"""The speed layer: Kinesis records to exactly-once real-time counters, uniques, top pages and segments in Redis.

``aggregate`` is the pure core (records to per-tenant deltas), ``store`` applies one tenant's deltas and
its applied-sequence marker in one Lua call, ``consumer`` is the RecordProcessor shell around both.
"""
