"""Terminal output shared by the commands: rich tables, JSON, human-readable sizes and progress.

A console is created per call so that whatever ``sys.stdout`` is at that moment (a terminal, a pipe,
click's test runner) receives the output. Off a terminal, tables use a wide fixed width so that names
are never folded.

Example:
    >>> print_table("Formats", ["name", "bits"], [["int4", "4"]])  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

__all__ = ["echo", "get_console", "human_bytes", "print_json", "print_table", "progress", "styled", "warn"]

_OFF_TERMINAL_WIDTH = 200


def get_console(*, stderr: bool = False) -> Console:
    """A rich console bound to the current ``sys.stdout`` (or ``sys.stderr``)."""
    stream = sys.stderr if stderr else sys.stdout
    isatty = bool(getattr(stream, "isatty", lambda: False)())
    width = None if isatty or "COLUMNS" in os.environ else _OFF_TERMINAL_WIDTH
    return Console(file=stream, width=width, highlight=False, soft_wrap=False)


def print_table(
    title: str | None,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    caption: str | None = None,
    right_align: Sequence[str] = (),
) -> None:
    """Print ``rows`` under ``columns`` as a rich table.

    Cells are shown literally (``str`` of the value; square brackets in error messages are not markup);
    pass :func:`styled` cells for color.

    Args:
        title: shown above the table.
        columns: column headers.
        rows: one sequence of cells per row.
        caption: shown below the table.
        right_align: headers of numeric columns to right-align.
    """
    table = Table(title=title, caption=caption, show_lines=False, header_style="bold")
    for name in columns:
        table.add_column(name, justify="right" if name in right_align else "left", overflow="fold")
    for row in rows:
        table.add_row(*(cell if isinstance(cell, Text) else Text("" if cell is None else str(cell)) for cell in row))
    get_console().print(table)


def styled(text: object, style: str) -> Text:
    """A table cell or message shown in ``style`` (e.g. ``"green"``), never parsed as markup.

    Example:
        >>> styled("loaded", "green").plain
        'loaded'
    """
    return Text(str(text), style=style)


def echo(message: str | Text, *, stderr: bool = False) -> None:
    """Print one message literally (no markup parsing), wrapped to the console width."""
    get_console(stderr=stderr).print(message if isinstance(message, Text) else Text(message))


def warn(message: str) -> None:
    """Print ``warning: <message>`` on stderr, the prefix in yellow."""
    echo(Text.assemble(("warning:", "yellow"), " ", message), stderr=True)


def print_json(data: Any) -> None:
    """Print ``data`` as indented JSON on stdout (plain text, no colors)."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()


def human_bytes(n: float) -> str:
    """``1536`` → ``"1.5 KiB"``.

    Example:
        >>> human_bytes(3 * 1024**2)
        '3.0 MiB'
    """
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


@contextmanager
def progress(description: str, total: int) -> Iterator[Any]:
    """A progress bar on stderr; yields a callable ``advance(label)`` for each finished step.

    Example:
        >>> with progress("quantizing", total=2) as advance:  # doctest: +SKIP
        ...     advance("layer 1"); advance("layer 2")
    """
    console = get_console(stderr=True)
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task(description, total=total)

        def advance(label: str | None = None) -> None:
            bar.update(task, advance=1, description=f"{description} {label}" if label else description)

        yield advance
