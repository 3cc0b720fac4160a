"""`tally` subcommands of reconciliation: reconcile, heal."""

from __future__ import annotations

import click


def register(main: click.Group) -> None:
    """Add this domain's commands to the `tally` group."""
