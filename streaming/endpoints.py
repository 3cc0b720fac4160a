"""Where the services are: the resolved endpoints every client is built from, and the rule that
resolves them from the settings' variables and, locally, from what a stack recorded it started.

Only the places that choose the environment resolve (``orchestration/environment.py`` for Dagster and
the CLI, with the local stack's record; a process entry point from its variables, which whoever
started it sets); everything else takes :class:`Endpoints` as a parameter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from streaming.settings import AWS_SERVICES, Settings


class StackNotRunning(RuntimeError):
    pass


class Recorded(Protocol):
    """A service a local stack started (``streaming.stack.manager.Component``)."""

    url: str
    started_by_tally: bool

    def alive(self) -> bool: ...


@dataclass(frozen=True)
class Endpoints:
    """Where the services are: what every command and the Dagster resources connect to.

    Resolved once (:func:`resolve_endpoints`); a component that is needed but not running raises
    :class:`StackNotRunning` only when it is asked for, so a command that needs only Redis runs while
    the AWS emulator is down, and the other way round.
    """

    aws: Mapping[str, str | None]
    redis: str | None
    #: Where each value came from: the variable, or ``tally stack up`` (``.tally/stack.json``).
    sources: Mapping[str, str] = field(default_factory=dict)
    missing: Mapping[str, str] = field(default_factory=dict)

    def aws_url(self, service: str) -> str | None:
        """``service``'s endpoint (None = AWS's own, from the SDK's default chain)."""
        if service in self.missing:
            raise StackNotRunning(self.missing[service])
        return self.aws[service]

    @property
    def aws_endpoint_url(self) -> str | None:
        """The endpoint shared by the services without an endpoint of their own (the emulator locally)."""
        if "aws" in self.missing:
            raise StackNotRunning(self.missing["aws"])
        return self.aws.get("*")

    @property
    def redis_url(self) -> str:
        if self.redis is None:
            raise StackNotRunning(self.missing["redis"])
        return self.redis

    def client(self, service: str, region: str, max_pool: int = 32) -> Any:
        """A boto3 client for ``service`` at its endpoint."""
        from streaming.aws import aws_client

        return aws_client(service, region, self.aws_url(service), max_pool)


NO_EMULATOR = "The local AWS emulator is not running. Fix: run `tally stack up` (or `make demo`)."
NO_REDIS = "No Redis is running for tally. Fix: run `tally stack up`, or set TALLY_REDIS_URL."


def resolve(settings: Settings, recorded: Mapping[str, Recorded] | None = None,
            require_running: bool = True) -> Endpoints:
    """The one rule that says where each service is: variables first (see
    :func:`streaming.settings.endpoint_variables`), then ``recorded`` (what a local stack started,
    ``aws-emulator`` and ``redis``; none: variables only). ``require_running=False`` takes what was
    recorded even when it is not running now."""
    state = dict(recorded or {})
    aws: dict[str, str | None] = {}
    sources: dict[str, str] = {}
    missing: dict[str, str] = {}
    given_general = settings.aws_endpoints.get("*")
    general = given_general.url if given_general else None
    general_source = given_general.variable if given_general else ""
    if general is None and settings.is_local:
        emulator = state.get("aws-emulator")
        if emulator is not None and (not require_running or emulator.alive()):
            general, general_source = emulator.url, "tally stack up (stack.json)"
        else:
            missing["aws"] = NO_EMULATOR
    elif general is None:
        general_source = "AWS default endpoint"
    aws["*"], sources["aws"] = general, general_source
    for service in AWS_SERVICES:
        given = settings.aws_endpoints.get(service)
        if given is not None and given.variable != general_source:
            aws[service], sources[service] = given.url, given.variable
        else:
            aws[service], sources[service] = general, general_source
            if "aws" in missing:
                missing[service] = missing["aws"]
    redis_url = settings.redis_url
    sources["redis"] = "TALLY_REDIS_URL"
    if redis_url is None:
        component = state.get("redis")
        if component is not None and component.started_by_tally and (not require_running or component.alive()):
            redis_url, sources["redis"] = component.url, "tally stack up (stack.json)"
        else:
            missing["redis"] = NO_REDIS
    return Endpoints(aws, redis_url, sources, missing)


def from_variables(settings: Settings, require_running: bool = True) -> Endpoints:
    """The endpoints the settings' variables give (a process entry point: whoever started it set them)."""
    return resolve(settings, None, require_running)
