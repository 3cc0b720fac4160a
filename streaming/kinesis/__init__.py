"""Reading Kinesis: shard discovery, leases with fencing, checkpoints, and the processor lifecycle."""
