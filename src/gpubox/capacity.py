"""Waiting for capacity: try again with backoff, up to a bound, saying each try.

`gpubox start NAME --wait [--max-wait 30m]` and `gpubox up ... --retry-until-up
[--max-wait 2h]` use it when AWS answers InsufficientInstanceCapacity. The clock and
the sleep come in, so tests run an hour of waiting in no time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from gpubox.errors import CapacityError, InvalidInput
from gpubox.providers.base import Progress

T = TypeVar("T")
FIRST_DELAY_SECONDS = 15.0
MAX_DELAY_SECONDS = 300.0
MAX_WAIT_LIMIT_SECONDS = 24 * 3600.0


@dataclass(frozen=True)
class Waiting:
    """How long to keep trying, and the clock to do it by."""

    max_wait: float  # seconds
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    first_delay: float = FIRST_DELAY_SECONDS
    max_delay: float = MAX_DELAY_SECONDS


def parse_max_wait(text: str) -> float:
    """'30m', '2h', '1h30m', '90s' or a bare number of minutes -> seconds (at most a day)."""
    import re

    raw = text.strip().lower().replace(" ", "")
    units = {"s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+)([smh])", raw)
    if raw.isdigit():
        seconds = int(raw) * 60.0
    elif parts and "".join(n + u for n, u in parts) == raw:
        seconds = float(sum(int(n) * units[u] for n, u in parts))
    else:
        raise InvalidInput(f"--max-wait '{text}' is not a duration", hint="e.g. 30m, 2h, 1h30m")
    if not 0 < seconds <= MAX_WAIT_LIMIT_SECONDS:
        raise InvalidInput(f"--max-wait '{text}' must be more than 0 and at most 24h")
    return seconds


def _span(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{max(minutes, 1)}m"


def retry_on_capacity(action: Callable[[], T], waiting: Waiting, say: Progress) -> T:
    """action() until it does not raise CapacityError, or until max_wait has passed (then
    the last CapacityError, saying how long and how often it was tried)."""
    started = waiting.clock()
    delay = waiting.first_delay
    tries = 0
    while True:
        tries += 1
        try:
            return action()
        except CapacityError as exc:
            left = started + waiting.max_wait - waiting.clock()
            if left <= 0:
                raise CapacityError(
                    f"{exc.message}; still none after {tries} tries over "
                    f"{_span(waiting.clock() - started)}",
                    hint=exc.hint,
                ) from exc
            pause = min(delay, left)
            say(f"no capacity yet (try {tries}); trying again in {pause:.0f}s, "
                f"for up to {_span(left)} more")  # fmt: skip
            waiting.sleep(pause)
            delay = min(delay * 2, waiting.max_delay)
