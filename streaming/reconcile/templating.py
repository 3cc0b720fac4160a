"""The Jinja2 environment of the reconciliation's HTML: the report page and its SVG charts.

Templates are files in ``streaming/reconcile/templates/``; autoescape is on for all of them (every value
a tenant can influence, from tenant ids to event ids, is escaped by Jinja, not by hand), and an
undefined name is an error rather than an empty string.
"""

from __future__ import annotations

from functools import cache

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup


@cache
def environment() -> Environment:
    return Environment(loader=PackageLoader("streaming.reconcile", "templates"), autoescape=True,
                       undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)


def render(name: str, **context: object) -> Markup:
    """``templates/<name>`` rendered with ``context``; Markup, so a page that embeds it does not escape it
    a second time."""
    return Markup(environment().get_template(name).render(**context))
