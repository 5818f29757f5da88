"""One family of errors, each with a message a person can act on.

The CLI prints `error: <message>` and, when there is one, `hint:  <hint>`, and
exits with `exit_code`. Anything that is not a GpuboxError is a bug.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class GpuboxError(Exception):
    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class NotFound(GpuboxError):
    """A box, image, type or region that does not exist."""


class InvalidInput(GpuboxError):
    """A flag or argument that cannot be right (bad duration, bad CIDR ...)."""

    exit_code = 2


class NotSupported(GpuboxError):
    """A capability this provider does not have ("the ssh provider cannot stop a host")."""


class QuotaExceeded(GpuboxError):
    """The account's vCPU quota cannot hold the box."""


class CapacityError(GpuboxError):
    """AWS has no capacity for the type in that place right now."""


class CredentialsError(GpuboxError):
    """No usable cloud credentials."""


class HostUnreachable(GpuboxError):
    """The host cannot be reached over SSH (network, port, DNS)."""


class AuthenticationFailed(GpuboxError):
    """The host answered but refused our key, or its host key changed."""


class ConfirmationRequired(GpuboxError):
    """A destructive action was asked for without a yes, and there is nobody to ask."""


class RemoteCommandFailed(GpuboxError):
    """A command on a host exited non-zero; carries its tail of output."""

    def __init__(
        self,
        command: str,
        exit_code: int,
        output_tail: str = "",
        hint: str | None = None,
    ) -> None:
        tail = output_tail.strip()
        message = f"`{command}` exited with {exit_code}"
        if tail:
            message += "\n" + tail
        super().__init__(message, hint)
        self.command = command
        self.returncode = exit_code
        self.output_tail = output_tail


class SetupFailed(GpuboxError):
    """A bootstrap step failed; carries the step, its log tail and the log's path on the host."""

    def __init__(self, step: str, log_tail: str, log_path: str) -> None:
        tail = log_tail.strip()
        message = f"setup step '{step}' failed"
        if tail:
            message += "\n" + tail
        super().__init__(
            message,
            hint=f"full log on the host: {log_path}; fix the cause and run `gpubox up` again "
            "(done steps are skipped)",
        )
        self.step = step
        self.log_tail = log_tail
        self.log_path = log_path


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """A hint naming the closest of `choices` to `word`, or None."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None


def refuse_node(name: str, box: str, rank: int, nodes: int, command: str) -> InvalidInput:
    """The error for a node's name given where a box is meant: a node is a part of its
    box, never a box, and the message says which box and the command for all of it."""
    what = {"down": f"removes all {nodes} nodes", "stop": f"stops all {nodes} nodes",
            "start": f"starts all {nodes} nodes", "up": f"uses all {nodes} nodes",
            "resize": "is refused too (a box of several nodes is not resized)"}.get(
        command, "acts on the whole box")  # fmt: skip
    flags = " --yes" if command == "down" else ""
    return InvalidInput(
        f"'{name}' is node {rank} of box '{box}'; `gpubox {command}` acts on whole boxes, "
        "never on one node: nothing was changed",
        hint=f"`gpubox {command} {box}{flags}` {what}",
    )
