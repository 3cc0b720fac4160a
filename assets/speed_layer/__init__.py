"""The speed layer's Redis counters, as an external asset fed by the same stream."""
