"""tally's streaming side: event contract, producer, consumers, Redis layout, archiver, local stack.

Nothing here imports Dagster: these modules run in workers, Lambda handlers and the CLI.
"""
