"""What the privacy domain adds to the Definitions root: the forget job."""

from __future__ import annotations

from typing import TYPE_CHECKING

import dagster as dg

from assets.privacy.jobs import forget_job

if TYPE_CHECKING:
    from orchestration.environment import Environment


def defs(environment: Environment) -> dg.Definitions:
    return dg.Definitions(jobs=[forget_job])
