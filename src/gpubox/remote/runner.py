"""Run commands on a host: one API, a local runner here and an SSH runner in ssh.py.

Like invoke's Runner / fabric's Remote: `run(cmd) -> Result`, and a failed command
raises RemoteCommandFailed with the command, its exit code and its last lines.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from gpubox.errors import RemoteCommandFailed

TAIL_LINES = 20


@dataclass(frozen=True)
class Result:
    command: str
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


def tail(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


class Runner(Protocol):
    """Runs shell commands (bash) on one host."""

    def run(
        self,
        command: str,
        *,
        check: bool = True,
        timeout: float | None = None,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Result: ...

    def stream(
        self,
        command: str,
        on_line: Callable[[str], None],
        *,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> int:
        """Run, calling on_line for each line of stdout and stderr as it comes; the exit code."""
        ...

    def put(self, local: Path, remote: str, mode: int | None = None) -> None:
        """Copy one local file to the host."""
        ...


def env_prefix(env: Mapping[str, str] | None) -> str:
    """`export K='v';` for each variable, shell-quoted, to run on any host."""
    import shlex

    if not env:
        return ""
    return "".join(f"export {k}={shlex.quote(v)}; " for k, v in env.items())


class LocalRunner:
    """This machine. Commands run in bash, like on a remote host."""

    def __init__(self, cwd: Path | None = None) -> None:
        self.cwd = cwd

    def run(self, command, *, check=True, timeout=None, input=None, env=None) -> Result:
        full_env = {**os.environ, **(env or {})}
        proc = subprocess.run(
            ["bash", "-c", command],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=full_env,
            cwd=self.cwd,
        )
        result = Result(command, proc.returncode, proc.stdout, proc.stderr)
        if check and not result.ok:
            raise RemoteCommandFailed(command, result.exit_code, tail(result.stdout + result.stderr))
        return result

    def stream(self, command, on_line, *, env=None, timeout=None) -> int:
        full_env = {**os.environ, **(env or {})}
        proc = subprocess.Popen(
            ["bash", "-c", command],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env=full_env,
            cwd=self.cwd,
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            on_line(line.rstrip("\n"))
        return proc.wait(timeout=timeout)

    def put(self, local: Path, remote: str, mode: int | None = None) -> None:
        target = Path(os.path.expanduser(remote))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, target)
        if mode is not None:
            target.chmod(mode)
