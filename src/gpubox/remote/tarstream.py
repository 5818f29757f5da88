"""The tar stream: files to and from a box when rsync is missing on either end.

Sends everything each time (no resume); the same ssh as rsync (Far.shell). Plain
`tar -cf -`/`-xf -` and `cat`, so a macOS tar here and GNU tar on the box both do.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from collections.abc import Sequence
from typing import Protocol


class Far(Protocol):
    """The box's side as this module needs it (transfer.Far is one); a protocol, so
    the tar stream sits below transfer.py and imports nothing of it."""

    def shell(self, command: str) -> list[str]: ...

    def check(self, code: int, stderr: str, what: str) -> None: ...


def pipe(first: list[str], second: list[str], *, input: bytes | None = None) -> tuple[int, int, str]:
    """first | second; both exit codes and their stderr."""
    with tempfile.TemporaryFile() as errors:
        one = subprocess.Popen(first, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=errors)
        two = subprocess.Popen(second, stdin=one.stdout, stdout=subprocess.DEVNULL, stderr=errors)
        assert one.stdout is not None
        one.stdout.close()
        try:
            if input is not None:
                assert one.stdin is not None
                one.stdin.write(input)
                one.stdin.close()
            codes = one.wait(), two.wait()
        except BaseException:
            for proc in (one, two):
                proc.terminate()
                proc.wait()
            raise
        errors.seek(0)
        return codes[0], codes[1], errors.read().decode(errors="replace")


def tar_copy(far: Far, upload: bool, kind: str, source: str, target: str) -> None:
    q = shlex.quote
    if upload and kind == "dir":
        first = ["tar", "-C", source, "-cf", "-", "."]
        second = far.shell(f"mkdir -p {q(target)} && tar -C {q(target)} -xf -")
    elif upload:
        first = ["cat", "--", source]
        name = q(os.path.basename(source))
        second = far.shell(f'p={q(target)}; [ -d "$p" ] && p="$p"/{name}; '
                           'mkdir -p "$(dirname "$p")" && cat > "$p"')
    elif kind == "dir":
        os.makedirs(target, exist_ok=True)
        first = far.shell(f"tar -C {q(source)} -cf - .")
        second = ["tar", "-C", target, "-xf", "-"]
    else:
        if os.path.isdir(target):
            target = os.path.join(target, os.path.basename(source))
        os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
        first = far.shell(f"cat -- {q(source)}")
        second = ["sh", "-c", 'cat > "$0"', target]
    codes = pipe(first, second)
    _check_pipe(far, codes, "the tar copy")


def _check_pipe(far: Far, codes: tuple[int, int, str], what: str) -> None:
    one, two, stderr = codes
    far.check(one or two, stderr, what)


def send_list(far: Far, root: str, names: Sequence[str], target: str) -> None:
    """Send these files (relative to the local `root`) into `target` on the box with tar."""
    q = shlex.quote
    data = b"".join(os.fsencode(n) + b"\0" for n in names)
    second = far.shell(f"mkdir -p {q(target)} && tar -C {q(target)} -xf -")
    codes = pipe(["tar", "-C", root, "--null", "-T", "-", "-cf", "-"], second, input=data)
    _check_pipe(far, codes, "the tar copy")


def fetch_list(far: Far, root: str, names: Sequence[str], target: str) -> None:
    """Fetch these files (relative to `root` on the box) into the local folder `target`."""
    os.makedirs(target, exist_ok=True)
    listed = " ".join(shlex.quote(n) for n in names)
    first = far.shell(f"cd {shlex.quote(root)} && tar -cf - -- {listed}")
    codes = pipe(first, ["tar", "-C", target, "-xf", "-"])
    _check_pipe(far, codes, "the tar copy")
