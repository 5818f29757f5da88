"""Keeping a box from its idle auto-stop, from the laptop: `gpubox keep NAME 3h|off`.

On the box the same is `gpubox-keep` (remote/agent/keep.py), which this runs through
a Runner, so both write the same kind of keep the agent reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from gpubox.errors import InvalidInput
from gpubox.idle import AGENT_DIR_ON_HOST, OFF_WORDS, agent_json, ensure_agent, parse_idle_limit

if TYPE_CHECKING:
    from gpubox.remote.runner import Runner

KEEP_ON_HOST = f"{AGENT_DIR_ON_HOST}/keep.py"
KEEP_HINT = "write it like 3h, 90m or 1d (at most a week), or off"


@dataclass(frozen=True)
class KeepAnswer:
    message: str
    until: float | None = None
    keeps: tuple[str, ...] = ()


def parse_keep(text: str) -> int | None:
    """'3h' -> 180 minutes; 'off' -> None."""
    if text.strip().lower() in OFF_WORDS:
        return None
    try:
        return parse_idle_limit(text)
    except InvalidInput:
        raise InvalidInput(f"'{text}' is not a time to keep the box for", hint=KEEP_HINT) from None


def keep_box(runner: Runner, text: str | None) -> KeepAnswer:
    """Keep the box up for a while (`3h`), end every keep (`off`), or, with None, ask what keeps it."""
    args = "--json"
    if text is not None:
        minutes = parse_keep(text)
        args = ("off" if minutes is None else f"{minutes}m") + " --json"
    ensure_agent(runner)
    data = agent_json(runner, args, KEEP_ON_HOST, "gpubox-keep", "on the box: gpubox-keep --help")
    return KeepAnswer(str(data.get("message", "")), data.get("until"), tuple(data.get("keeps") or ()))
