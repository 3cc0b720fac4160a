"""The one Jinja2 set-up of tally's HTML pages and SVG charts (reconciliation report, parallel-run report,
capacity plan).

Templates are files in ``<package>/templates/``; autoescape is on for all of them (every value a tenant
can influence, from tenant ids to event ids, is escaped by Jinja, not by hand), and an undefined name is
an error rather than an empty string. Geometry and labels are computed in Python; only markup is in the
templates.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup


@cache
def environment(package: str) -> Environment:
    """The environment of ``<package>/templates`` (one per package, built once)."""
    return Environment(loader=PackageLoader(package, "templates"), autoescape=True,
                       undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)


def render(package: str, name: str, filters: dict[str, Callable[..., Any]] | None = None, **context: object) -> Markup:
    """``<package>/templates/<name>`` rendered with ``context`` (and ``filters`` given to the template);
    Markup, so a page that embeds it does not escape it a second time."""
    env = environment(package)
    if filters:
        env = env.overlay()
        env.filters.update(filters)
    return Markup(env.get_template(name).render(**context))
