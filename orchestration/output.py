"""How `tally` commands print: stored data literally, whole lines when not on a terminal, and one
``--format`` vocabulary (``table`` for people, ``plain`` for grep and cron, ``json`` and ``csv`` for
programs) over any columns a command has.
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import click
from rich.console import Console, ConsoleDimensions
from rich.table import Table
from rich.text import Text

from streaming.literal import json_text, printable, printable_lines

F = TypeVar("F", bound=Callable[..., Any])

#: The width given to output that is not a terminal: a file or a pipe gets every line whole.
UNLIMITED_WIDTH = 1_000_000
FORMATS = ("table", "plain", "json", "csv")


class LiteralConsole(Console):
    """rich's Console with markup, emoji codes and highlighting off (a page path ``[/x]`` or
    ``:smile:`` is shown as it is, never interpreted), control characters escaped
    (:func:`streaming.literal.printable_lines`), and no width limit when it does not write to a
    terminal. Style comes from ``style=`` and :class:`rich.text.Text`, never from markup in strings."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(markup=False, emoji=False, highlight=False, **kwargs)

    def render_str(self, text: str, **kwargs: Any) -> Text:
        kwargs["markup"] = False
        kwargs["emoji"] = False
        return super().render_str(printable_lines(text), **kwargs)

    @property
    def size(self) -> ConsoleDimensions:
        dimensions = Console.size.fget(self)  # type: ignore[attr-defined]
        return dimensions if self.is_terminal else ConsoleDimensions(UNLIMITED_WIDTH, dimensions.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)  # type: ignore[attr-defined]


console = LiteralConsole()
err_console = LiteralConsole(stderr=True)


def stdout_is_terminal() -> bool:
    return console.is_terminal


def format_option(default: str | None = None, choices: Sequence[str] = ("table", "plain", "json")) -> Callable[[F], F]:
    """``--format``; unset = ``default``, or ``table`` on a terminal and ``plain`` otherwise."""
    return click.option(
        "--format", "fmt", type=click.Choice(list(choices)), default=default,
        help="Output: table (people), plain (one line per row, complete: grep, cron), json"
             + (", csv" if "csv" in choices else "") + "; default "
             + (default if default else "table on a terminal, plain otherwise") + ".")


def resolved(fmt: str | None) -> str:
    return fmt or ("table" if stdout_is_terminal() else "plain")


def echo_json(doc: Any) -> None:
    """JSON on stdout that decodes to ``doc`` exactly and holds nothing a terminal would act on."""
    click.echo(json_text(doc))


def plain_value(value: Any) -> str:
    """One value in a ``key=value`` line: quoted (JSON string syntax) when it holds a space, a quote,
    an ``=`` or anything :func:`printable` would escape, so every row stays on one line and parses back."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or hasattr(value, "tolist") and not isinstance(value, str):
        items = value.tolist() if hasattr(value, "tolist") else list(value)
        value = ",".join(str(v) for v in items)
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return json_text(printable(value), indent=None)  # not UTF-8: its escaped form, quoted
    text = str(value)
    if text and printable(text) == text and not any(c in text for c in ' "=\t'):
        return text
    return json_text(text, indent=None)


def plain_line(kind: str, row: Mapping[str, Any]) -> str:
    return " ".join([kind, *(f"{str(k).replace(' ', '_')}={plain_value(v)}" for k, v in row.items())])


def cell(value: Any) -> str:
    """A value in a table cell, literally (controls escaped; lists joined)."""
    if value is None:
        return ""
    if hasattr(value, "tolist") and not isinstance(value, str):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return ", ".join(printable(v) for v in value)
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return printable(value)


def print_rows(fmt: str, kind: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None,
               json_doc: Any = None) -> None:
    """Rows in the chosen format: a rich table, ``kind key=value ...`` lines, JSON records or CSV."""
    rows = list(rows)
    if fmt == "json":
        echo_json(json_doc if json_doc is not None else [dict(zip(columns, r, strict=True)) for r in rows])
    elif fmt == "csv":
        write_csv(columns, rows)
    elif fmt == "plain":
        for r in rows:
            click.echo(plain_line(kind, dict(zip(columns, r, strict=True))))
    else:
        table = Table(*columns, title=title)
        for r in rows:
            table.add_row(*(cell(v) for v in r))
        console.print(table)


def write_csv(columns: Sequence[str], rows: Iterable[Sequence[Any]], out: Any = None) -> None:
    """CSV with a header; text values escaped like :func:`printable` (a CSV is read by terminals too)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for r in rows:
        writer.writerow([plain_value(v) if isinstance(v, (list, tuple)) or hasattr(v, "tolist") and not isinstance(v, str)
                         else ("" if v is None else printable(v)) for v in r])
    (out or sys.stdout).write(buffer.getvalue())
