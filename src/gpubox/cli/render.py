"""Rendering with rich: tables, one-line messages, progress. Output only, no logic."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any

_console = None
_err_console = None

# Without a terminal (a pipe, a file, a CI log) nothing wraps or cuts: a table prints at
# its natural width, however wide, so every ID, name, address and amount survives.
NO_TERMINAL_WIDTH = 100_000


def _make_console(stderr: bool):
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else NO_TERMINAL_WIDTH
    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=width)


def console():
    global _console
    if _console is None:
        _console = _make_console(stderr=False)
    return _console


def err_console():
    global _err_console
    if _err_console is None:
        _err_console = _make_console(stderr=True)
    return _err_console


def error(message: str, hint: str | None = None) -> None:
    c = err_console()
    first, *rest = message.splitlines() or [""]
    c.print(f"[bold red]error:[/] {_escape(first)}")
    for line in rest:
        c.print(f"       {_escape(line)}")
    if hint:
        c.print(f"[yellow]hint:[/]  {_escape(hint)}")


def info(message: str) -> None:
    err_console().print(_escape(message))


def say(message: str) -> None:
    console().print(_escape(message))


def ok(message: str) -> None:
    err_console().print(f"[green]✓[/] {_escape(message)}")


def warn(message: str) -> None:
    err_console().print(f"[yellow]![/] {_escape(message)}")


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None) -> None:
    """A table; on a terminal it wraps between words only, never inside one (an ID, a
    path, AWS_SECRET_ACCESS_KEY): columns get at least their longest word, and when the
    longest words together are wider than the terminal, each row is printed as a block
    of `column: value` lines instead. In a pipe nothing wraps (NO_TERMINAL_WIDTH)."""
    from rich.table import Table

    cells = [["" if v is None else str(v) for v in row] for row in rows]
    c = console()
    if title:
        c.print(_escape(title))  # its own line: a path in it is never wrapped by the table
    widths = _fitted_widths(columns, cells, c.width)
    if widths == "blocks":
        _blocks(columns, cells, c.width)
        return
    t = Table(header_style="bold", box=None, pad_edge=False)
    for i, column in enumerate(columns):
        justify = "right" if column.startswith(("$", "#", "vCPU", "RAM", "GPU mem", "ms")) else "left"
        # A value wider than the whole terminal (one long word) folds; never "…".
        t.add_column(column, justify=justify, overflow="fold",
                     width=widths[i] if widths else None)  # fmt: skip
    for row in cells:
        t.add_row(*(_escape(v) for v in row))
    c.print(t)


TABLE_GAP = 2  # rich's padding between two columns (none at the edges: pad_edge=False)


def _fitted_widths(columns: Sequence[str], cells: list[list[str]], width: int):
    """None: the table fits as it is. A width per column, each at least its longest word,
    the room left shared by how much more each column wants. "blocks": even the longest
    words side by side do not fit."""
    from rich.cells import cell_len

    def words(text: str) -> list[str]:
        return text.split() or [""]

    shortest, longest = [], []
    for i, column in enumerate(columns):
        texts = [column, *(row[i] for row in cells if i < len(row))]
        shortest.append(max(cell_len(w) for t in texts for w in words(t)))
        longest.append(max(cell_len(line) for t in texts for line in (t.splitlines() or [""])))
    room = width - TABLE_GAP * (len(columns) - 1)
    if sum(longest) <= room:
        return None
    if sum(shortest) > room:
        return "blocks"
    widths = list(shortest)
    spare = room - sum(widths)
    wants = [hi - lo for lo, hi in zip(shortest, longest, strict=True)]
    total = sum(wants)
    for i, want in enumerate(wants):
        widths[i] += spare * want // total
    leftover = room - sum(widths)
    for i in sorted(range(len(widths)), key=lambda i: wants[i], reverse=True):
        if leftover <= 0:
            break
        if widths[i] < longest[i]:
            widths[i] += 1
            leftover -= 1
    return widths


def _blocks(columns: Sequence[str], cells: list[list[str]], width: int) -> None:
    """Each row as its first value, then `column: value` lines wrapped between words."""
    import textwrap

    c = console()
    labels = list(columns[1:])
    pad = max((len(label) for label in labels), default=0) + 4
    for row in cells:
        first, *rest = row or [""]
        c.print(f"[bold]{_escape(first)}[/]")
        for label, value in zip(labels, rest, strict=False):
            if not value:
                continue
            lines = textwrap.wrap(value, width=max(width - pad, 20), break_long_words=False,
                                  break_on_hyphens=False) or [""]  # fmt: skip
            c.print(_escape(f"  {label + ':':<{pad - 3}} {lines[0]}"))
            for line in lines[1:]:
                c.print(_escape(" " * pad + line))


def money(value: float | None, unit: str = "/h") -> str:
    if value is None:
        return "?"
    if value < 0.01 and value != 0:
        return f"${value:.4f}{unit}"
    return f"${value:,.2f}{unit}"


def duration(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return ""
    seconds = int(seconds)
    days, rem = divmod(seconds, 86400)
    hours, rem = divmod(rem, 3600)
    minutes, _ = divmod(rem, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m"


def since(epoch: float | None) -> str:
    return duration(time.time() - epoch) if epoch else ""


def can_ask() -> bool:
    """Whether there is a person at a terminal to answer a question."""
    return sys.stdin.isatty()


def confirm(question: str) -> bool:
    """Ask yes/no on the terminal; False when there is no terminal to ask."""
    if not sys.stdin.isatty():
        return False
    from rich.prompt import Confirm

    return Confirm.ask(question, console=err_console(), default=False)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def guard_report(name: str, status: Any) -> None:
    """What a box's guard (the idle agent) says: watching or not, what it saw, its stops."""
    say(f"{name}: {status.summary()}")
    shown = {"say": say, "warn": warn, "error": error}
    for level, line in status.report():
        shown[level](line)
