"""`tally` subcommand groups, one module per domain; each exposes ``register(main)``."""
