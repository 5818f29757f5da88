"""Files to and from a box: rsync over gpubox's pinned ssh, else a tar stream.

Both ways go through the box's SshEndpoint with the same options as every other
connection (base_options: the pinned known_hosts, StrictHostKeyChecking=yes, batch
mode, the shared master connection). With rsync on both ends a copy is
`rsync -a --partial`: it sends only what changed and resumes an interrupted file.
Without it, a tar stream over ssh sends everything each time.

What a copy means (like `cp -r`, and the same on every run): DST becomes the copy of
SRC; a DST that ends in `/` (or is `.`, `..`, `~`) gets SRC inside it under SRC's name.
"""

from __future__ import annotations

import os
import posixpath
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gpubox.errors import GpuboxError, InvalidInput, NotFound
from gpubox.remote.runner import tail

if TYPE_CHECKING:
    from gpubox.config import Settings
    from gpubox.providers.base import SshEndpoint

# NAME:PATH, NAME being a box name (box.NAME_RE); `./a:b` or `/a:b` is a local path.
REMOTE_RE = re.compile(r"^([a-z0-9][a-z0-9-]{0,38}):(.*)$")
# rsync --info=progress2: "  1,234,567  45%   1.23MB/s    0:00:01 (xfr#1, to-chk=0/1)"
PROGRESS_RE = re.compile(r"^\s*([\d,]+)\s+(\d+)%\s+(\S+/s)")
SENT = "::sent "  # --out-format prefix of a file rsync sent
VANISHED = 24  # rsync's exit code for "some files vanished before they could be sent"

OnProgress = Callable[[int, int, str], None]  # (bytes so far, percent, rate)


@dataclass(frozen=True)
class Location:
    path: str
    box: str | None = None

    def __str__(self) -> str:
        return f"{self.box}:{self.path}" if self.box else self.path


def parse_location(text: str) -> Location:
    """`box1:~/data` is on box1; anything else (`./a:b`, `/x`, `data`) is here."""
    match = REMOTE_RE.match(text)
    if match:
        return Location(match.group(2) or "~", match.group(1))
    return Location(text)


@dataclass
class Copied:
    method: str  # "rsync" or "tar"
    target: str  # where the copy is, on the receiving side
    sent: list[str] = field(default_factory=list)  # files rsync sent (empty for tar)
    reason: str = ""  # why tar, when tar


@dataclass
class Far:
    """The box's side: its shell, its home, whether it has rsync."""

    endpoint: SshEndpoint
    settings: Settings
    name: str
    home: str = ""
    has_rsync: bool = False
    _runner: Any = field(default=None, repr=False)

    def shell(self, command: str) -> list[str]:
        """argv that runs a bash command on the box (this machine for a local box)."""
        if self.endpoint.local:
            return ["bash", "-c", command]
        if self._runner is None:
            from gpubox.remote.ssh import SshRunner

            self._runner = SshRunner(self.endpoint, self.settings, self.name)
        return self._runner.argv(command)  # pins the host key on first use

    def rsync_shell(self) -> list[str]:
        if self.endpoint.local:
            return []
        from gpubox.remote.ssh import base_options

        opts = base_options(self.endpoint, self.settings, self.name)
        return ["-e", shlex.join(["ssh", *opts, "-l", self.endpoint.user])]

    def rsync_arg(self, path: str) -> str:
        if self.endpoint.local:
            return path
        host = self.endpoint.host
        return f"[{host}]:{path}" if ":" in host else f"{host}:{path}"  # IPv6 in brackets

    def absolute(self, path: str) -> str:
        if path == "~" or path.startswith("~/"):
            path = self.home + path[1:]
        return path if path.startswith("/") else posixpath.join(self.home, path)

    def check(self, code: int, stderr: str, what: str) -> None:
        """Raise the gpubox error for a failed command: ssh's own (exit 255), else `what`."""
        if code == 0:
            return
        if code == 255 and not self.endpoint.local:
            from gpubox.remote.ssh_errors import classify_failure

            error = classify_failure(stderr, self.endpoint, self.settings, self.name)
            if error is not None:
                raise error
        raise GpuboxError(f"{what} failed on '{self.name}' (exit {code})",
                          hint=tail(stderr, 5) or None)

    def run(self, command: str, input: str | None = None) -> str:
        proc = subprocess.run(self.shell(command), input=input, capture_output=True, text=True,
                              stdin=None if input is not None else subprocess.DEVNULL)
        self.check(proc.returncode, proc.stderr, command)
        return proc.stdout

    def probe(self, path: str | None = None) -> str:
        """Learn $HOME and rsync; the kind of `path` there: dir, file or missing."""
        from gpubox.remote.ssh import remote_path

        check = ""
        if path is not None:
            if not path.startswith(("/", "~")):
                path = "~/" + path  # relative to the home, as for rsync and scp
            check = (f"p={remote_path(path)}; if [ -d \"$p\" ]; then echo dir; "
                     'elif [ -e "$p" ]; then echo file; else echo missing; fi')
        out = self.run('printf "%s\\n" "$HOME"; '
                       "command -v rsync >/dev/null 2>&1 && echo rsync || echo none; " + check)
        lines = out.splitlines()
        self.home, self.has_rsync = lines[0], lines[1] == "rsync"
        return lines[2] if path is not None else ""


def _local_kind(path: str) -> str:
    return "dir" if os.path.isdir(path) else "file" if os.path.exists(path) else "missing"


def _base(path: str) -> str:
    return posixpath.basename(posixpath.normpath(path)) or "root"


def target_path(src: str, dst: str) -> str:
    """Where SRC's copy goes: DST itself, or inside DST when it ends in / (or is . .. ~)."""
    if dst.endswith("/") or posixpath.basename(dst) in ("", ".", "..", "~"):
        return posixpath.join(dst, _base(src))
    return dst


def copy(
    far: Far,
    src: Location,
    dst: Location,
    *,
    on_progress: OnProgress | None = None,
    filters: Sequence[str] = (),
    bwlimit: int | None = None,
    use_rsync: bool = True,
) -> Copied:
    """Copy SRC to DST, exactly one of them on `far`'s box; rsync when both ends have it."""
    if (src.box is None) == (dst.box is None):
        raise InvalidInput(
            "one side must be a box and the other this machine",
            hint="write the box side as NAME:PATH, e.g. `gpubox cp ./data box1:~/data`",
        )
    upload = dst.box is not None
    local_src = os.path.abspath(os.path.expanduser(src.path))
    if upload and _local_kind(local_src) == "missing":
        raise NotFound(f"{src.path} does not exist here", hint="check the path (ls it)")
    remote_kind = far.probe(None if upload else src.path)
    if upload:
        kind = _local_kind(local_src)
        target = far.absolute(target_path(local_src, dst.path))
        source = local_src
    else:
        kind = remote_kind
        if kind == "missing":
            raise NotFound(f"{src} does not exist on the box",
                           hint=f"look with `gpubox ssh {far.name} -- ls -la {posixpath.dirname(src.path) or '~'}`")
        source = far.absolute(src.path)
        target = os.path.abspath(os.path.expanduser(target_path(source, dst.path)))
    reason = ""
    if not use_rsync:
        reason = "asked for tar"
    elif shutil.which("rsync") is None:
        reason = "rsync is not installed on this machine"
    elif not far.has_rsync:
        reason = f"rsync is not installed on '{far.name}'"
    if reason:
        from gpubox.remote.tarstream import tar_copy

        tar_copy(far, upload, kind, source, target)
        return Copied("tar", target, reason=reason)
    _mkdir_parent(far, upload, target)
    slash = "/" if kind == "dir" else ""
    src_arg = source + slash if upload else far.rsync_arg(source + slash)
    dst_arg = far.rsync_arg(target + slash) if upload else target + slash
    sent = rsync(far, [src_arg, dst_arg], on_progress=on_progress, filters=filters,
                 bwlimit=bwlimit)
    return Copied("rsync", target, sent=sent)


def _mkdir_parent(far: Far, upload: bool, target: str) -> None:
    parent = posixpath.dirname(target.rstrip("/")) or "/"
    if upload:
        far.run(f"mkdir -p {shlex.quote(parent)}")
    else:
        os.makedirs(parent, exist_ok=True)


def rsync(
    far: Far,
    args: Sequence[str],
    *,
    on_progress: OnProgress | None = None,
    filters: Sequence[str] = (),
    bwlimit: int | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """Run rsync -a --partial over the box's ssh; the names of the files it sent."""
    argv = ["rsync", "-a", "--partial", "-s", f"--out-format={SENT}%n", *far.rsync_shell()]
    if on_progress is not None:
        argv += ["--info=progress2", "--no-inc-recursive"]
    if bwlimit:
        argv.append(f"--bwlimit={bwlimit}")
    argv += [*(f"--filter={f}" for f in filters), *extra, "--", *args]
    sent: list[str] = []
    with tempfile.TemporaryFile("w+") as errors:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=errors)
        assert proc.stdout is not None
        try:
            pending = b""
            while chunk := os.read(proc.stdout.fileno(), 65536):
                *parts, pending = re.split(rb"[\r\n]", pending + chunk)
                for raw in parts:
                    _line(raw.decode(errors="replace"), sent, on_progress)
            _line(pending.decode(errors="replace"), sent, on_progress)
            code = proc.wait()
        except BaseException:  # Ctrl-C: rsync keeps the part it has (--partial)
            proc.terminate()
            proc.wait()
            raise
        finally:
            proc.stdout.close()
        errors.seek(0)
        # 24: some source files vanished while rsync ran (a training run writing): not an error
        far.check(0 if code == VANISHED else code, errors.read(), "rsync")
    return sent


def _line(line: str, sent: list[str], on_progress: OnProgress | None) -> None:
    if line.startswith(SENT):
        name = line[len(SENT):]
        if name and not name.endswith("/"):
            sent.append(name)
    elif on_progress is not None and (match := PROGRESS_RE.match(line)):
        on_progress(int(match.group(1).replace(",", "")), int(match.group(2)), match.group(3))
