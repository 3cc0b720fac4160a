"""The raw archive: every stream record, valid or not, in S3 `raw/` with a manifest per shard batch.

``layout`` names the objects, ``batch`` turns records into objects and a manifest (pure), ``store``
talks to S3, ``processor`` is the stream-reader lifecycle around them. Loading committed objects into the
warehouse is the warehouse adapters' job (:mod:`streaming.warehouse`).
"""
