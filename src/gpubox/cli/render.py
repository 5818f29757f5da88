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
    from rich.table import Table

    t = Table(title=title, header_style="bold", box=None, pad_edge=False)
    for column in columns:
        justify = "right" if column.startswith(("$", "#", "vCPU", "RAM", "GPU mem", "ms")) else "left"
        # On a narrow terminal a long value folds onto the next line; never "…".
        t.add_column(column, justify=justify, overflow="fold")
    for row in rows:
        t.add_row(*("" if v is None else _escape(str(v)) for v in row))
    console().print(t)


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
