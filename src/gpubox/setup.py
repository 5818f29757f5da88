"""Drive the bootstrap on a host: probe it, plan the framework, run bootstrap.sh, read its markers.

The script (gpubox/remote/scripts/bootstrap.sh) does the work on the host and is
idempotent; this side decides *what* it installs (gpubox.frameworks, from the
driver's CUDA version the probe finds) and turns its marker lines into
`StepEvent`s for a progress display. A failed step becomes `SetupFailed` with the
step's name, the last lines of its log on the host and the log's path.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from gpubox import frameworks
from gpubox.config import Settings
from gpubox.errors import GpuboxError, SetupFailed
from gpubox.remote.runner import Runner

# The bootstrap's steps in order: the one list. bootstrap.sh's STEPS=(...) must match
# (tests/test_setup.py parses the script to check it).
STEPS: tuple[str, ...] = (
    "packages",
    "driver",
    "python",
    "framework",
    "device",
    "d2l",
    "notebooks",
    "jupyter",
    "agent",
)
STATUSES = ("start", "done", "skip", "fail")

REMOTE_DIR = "~/.gpubox"
# The box's framework environment (bootstrap.sh's VENV; tests/test_setup.py compares
# them): what `gpubox run` puts first on PATH, so `torchrun` and `python` are the box's.
BOX_ENV = "$HOME/.gpubox/venv"
BOX_ENV_ON_PATH = f'if [ -d "{BOX_ENV}/bin" ]; then export PATH="{BOX_ENV}/bin:$PATH"; fi'
LOG_TAIL_LINES = 30
_MARKER = re.compile(
    r"^::gpubox step=(?P<step>\S+) status=(?P<status>\S+) seconds=(?P<seconds>[0-9.]+)"
    r"(?: msg=(?P<msg>.*))?$"
)
# The jupyter step's own line: the port Jupyter listens on, on the host.
_JUPYTER_PORT = re.compile(r"^::gpubox jupyter_port=(?P<port>[0-9]+)$")
DEFAULT_JUPYTER_PORT = 8888
# One shell line: what the client must know before it can choose a framework build.
PROBE_COMMAND = (
    'echo "::probe home=$HOME"; '
    "echo \"::probe python=$(python3 -c 'import sys; print(sys.version.split()[0])' 2>/dev/null)\"; "
    'if [ "$(id -u)" = 0 ] || sudo -n true 2>/dev/null; then echo "::probe root=1"; '
    'else echo "::probe root=0"; fi; '
    'echo "::probe disk_free_kb=$(df -Pk "$HOME" 2>/dev/null | awk \'NR==2 {print $4}\')"; '
    "nvidia-smi 2>/dev/null || true"
)


@dataclass(frozen=True)
class StepEvent:
    """One marker from the bootstrap: a step started, was done, was skipped or failed."""

    step: str
    status: str  # start | done | skip | fail
    seconds: float
    msg: str = ""


@dataclass(frozen=True)
class HostFacts:
    home: str
    python: str | None  # "3.12.3", None when the host has no python3
    root: bool  # root, or sudo without a password
    disk_free_gb: float | None
    cuda: str | None  # the CUDA version the driver supports; None: no NVIDIA driver

    @property
    def gpu(self) -> bool:
        return self.cuda is not None


@dataclass(frozen=True)
class SetupResult:
    host: HostFacts
    plan: frameworks.InstallPlan
    events: tuple[StepEvent, ...]
    device: dict[str, Any] = field(default_factory=dict)  # ~/.gpubox/state/device.json
    jupyter_port: int = DEFAULT_JUPYTER_PORT  # on the host: the setting's, or the one chosen
    notebook_dir: str = "~/d2l"
    seconds: float = 0.0

    def finished(self, step: str) -> StepEvent | None:
        """The done/skip/fail event of `step`, if it got that far."""
        ends = [e for e in self.events if e.step == step and e.status != "start"]
        return ends[-1] if ends else None

    @property
    def skipped_all(self) -> bool:
        return all((e := self.finished(s)) is not None and e.status == "skip" for s in STEPS)


def parse_marker(line: str) -> StepEvent | None:
    """A StepEvent from a `::gpubox step=...` line, or None for any other line."""
    match = _MARKER.match(line.strip())
    if not match or match["status"] not in STATUSES:
        return None
    return StepEvent(match["step"], match["status"], float(match["seconds"]), match["msg"] or "")


def probe(runner: Runner) -> HostFacts:
    """What the host has: home, python3, root, free disk and the driver's CUDA version."""
    out = runner.run(PROBE_COMMAND, check=False, timeout=60).stdout
    facts = dict(re.findall(r"^::probe (\w+)=(.*)$", out, flags=re.MULTILINE))
    free_kb = facts.get("disk_free_kb", "").strip()
    return HostFacts(
        home=facts.get("home", "").strip() or "~",
        python=facts.get("python", "").strip() or None,
        root=facts.get("root") == "1",
        disk_free_gb=int(free_kb) / 1024 / 1024 if free_kb.isdigit() else None,
        cuda=frameworks.parse_cuda_version(out),
    )


def jupyter_token(settings: Settings, name: str) -> str:
    """The box's Jupyter token, kept on the client (engineer B's gpubox.jupyter owns it)."""
    try:
        from gpubox.jupyter import token_for
    except ImportError:  # jupyter.py not there yet: the same file, the same way
        path = settings.data_dir / "tokens" / name
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(24))
        return path.read_text().strip()
    return token_for(settings, name, create=True)


def script_env(
    settings: Settings, plan: frameworks.InstallPlan, token: str
) -> dict[str, str]:
    """The environment bootstrap.sh reads: its only parameters."""
    env = {
        "GPUBOX_FRAMEWORK": plan.framework,
        "GPUBOX_FRAMEWORK_TAG": plan.tag,
        "GPUBOX_FRAMEWORK_PACKAGES": " ".join(plan.packages),
        "GPUBOX_INDEX_URL": plan.index_url or "",
        "GPUBOX_DEFAULT_INDEX_URL": plan.default_index_url or "",
        "GPUBOX_FIND_LINKS": plan.find_links or "",
        "GPUBOX_NOTEBOOKS_URL": settings.notebooks_url,
        # A port pins it; "auto": 8888 (or the last one), or a free one when it is taken.
        "GPUBOX_JUPYTER_PORT": str(settings.jupyter_port) if settings.jupyter_port else "auto",
        "GPUBOX_JUPYTER_TOKEN": token,
        "GPUBOX_INSTALL_DRIVER": "1" if settings.install_driver else "0",
        # 0 (or less) turns the idle agent's auto-stop off.
        "GPUBOX_IDLE_MINUTES": str(settings.idle_stop_minutes)
        if settings.idle_stop_minutes > 0
        else "off",
        "GPUBOX_PYTHON_ENV": settings.python_env,
        # The guard's other settings (the AWS guard from boot already has them).
        "GPUBOX_MAX_HOURS": f"{settings.max_hours:g}" if settings.max_hours else "off",
        "GPUBOX_PRE_STOP": settings.pre_stop or "",
        "GPUBOX_PRE_STOP_SECONDS": str(settings.pre_stop_minutes * 60),
        "GPUBOX_IDLE_STOP_COMMAND": settings.idle_stop_command or "",
    }
    return env


def _package_files() -> list[tuple[Any, str, int]]:
    """(resource, remote path, mode) of everything the host needs from this package."""
    root = resources.files("gpubox")
    files = [
        (root.joinpath("remote", "scripts", "bootstrap.sh"), f"{REMOTE_DIR}/bootstrap.sh", 0o755),
        (root.joinpath("data", "getting-started.ipynb"), f"{REMOTE_DIR}/getting-started.ipynb", 0o644),
    ]
    agent = root.joinpath("remote", "agent")
    if agent.is_dir():
        for item in sorted(agent.iterdir(), key=lambda r: r.name):
            if item.is_file() and item.name.endswith(".py"):
                files.append((item, f"{REMOTE_DIR}/agent/{item.name}", 0o644))
    return files


def copy_files(runner: Runner, settings: Settings, token: str, env: Mapping[str, str]) -> None:
    """The script, the notebook, the agent and the script's environment file onto the host."""
    for resource, remote, mode in _package_files():
        with resources.as_file(resource) as local:
            runner.put(Path(local), remote, mode)
    # The environment travels as a file readable only by the user: the Jupyter token
    # never appears on a command line (visible in `ps` to every user of the host).
    lines = "".join(f"export {k}={_sh_quote(v)}\n" for k, v in env.items())
    fd, tmp = tempfile.mkstemp(prefix="gpubox-env-")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(lines)
        runner.put(Path(tmp), f"{REMOTE_DIR}/bootstrap.env", 0o600)
    finally:
        os.unlink(tmp)


def _sh_quote(value: str) -> str:
    import shlex

    return shlex.quote(value)


def run_setup(
    runner: Runner,
    settings: Settings,
    *,
    box_name: str,
    framework: str | None = None,
    on_event: Callable[[StepEvent], None] | None = None,
    timeout: float | None = None,
    spot: bool = False,
    node_rank: int = 0,
) -> SetupResult:
    """Set the host up as a D2L workstation; every step already done is skipped.
    node_rank: a node 1.. of a box of several gets everything but Jupyter (node 0's).

    Raises SetupFailed (step, log tail, log path) when a step fails, and the
    frameworks table's errors (NotSupported, InvalidInput) before touching the host
    when no build fits its driver.
    """
    started = time.monotonic()
    host = probe(runner)
    if host.python is None:
        # The script itself installs python3 where it may (packages step); say early
        # when it cannot, so the failure names the fix.
        if not host.root:
            raise GpuboxError(
                "the host has no python3, and gpubox cannot install it (no root or passwordless sudo)",
                hint="install python3 and python3-venv on the host (sudo apt-get install -y "
                "python3 python3-venv), then run `gpubox up` again",
            )
    plan = frameworks.install_plan(framework or settings.framework, host.cuda, settings)
    token = jupyter_token(settings, box_name)
    env = script_env(settings, plan, token)
    # A spot box also runs the interruption watcher (agent/spot_watch.py).
    env["GPUBOX_SPOT"] = "1" if spot else "0"
    env["GPUBOX_BOX_NAME"] = box_name  # the idle warning names it: `gpubox keep NAME 2h`
    env["GPUBOX_NODE_RANK"] = str(int(node_rank))
    copy_files(runner, settings, token, env)

    events: list[StepEvent] = []
    other_lines: list[str] = []
    ports: list[int] = []

    def on_line(line: str) -> None:
        event = parse_marker(line)
        port = _JUPYTER_PORT.match(line.strip())
        if port is not None:
            ports.append(int(port["port"]))
            return
        if event is None:
            other_lines.append(line)
            del other_lines[:-LOG_TAIL_LINES]
            return
        events.append(event)
        if on_event is not None:
            on_event(event)

    command = f"set -a; . {REMOTE_DIR}/bootstrap.env; set +a; bash {REMOTE_DIR}/bootstrap.sh"
    command = command.replace("~", "$HOME")
    exit_code = runner.stream(command, on_line, timeout=timeout)
    failed = [e for e in events if e.status == "fail"]
    if failed or exit_code != 0:
        raise _failure(runner, host, failed[-1] if failed else None, other_lines, exit_code)
    device = _read_device(runner)
    return SetupResult(
        host=host,
        plan=plan,
        events=tuple(events),
        device=device,
        jupyter_port=ports[-1] if ports else settings.jupyter_port or DEFAULT_JUPYTER_PORT,
        notebook_dir=f"{host.home}/d2l",
        seconds=time.monotonic() - started,
    )


def _read_device(runner: Runner) -> dict[str, Any]:
    out = runner.run(f"cat {REMOTE_DIR}/state/device.json".replace("~", "$HOME"), check=False)
    try:
        return json.loads(out.stdout) if out.ok else {}
    except ValueError:
        return {}


def _failure(
    runner: Runner, host: HostFacts, event: StepEvent | None, lines: list[str], exit_code: int
) -> SetupFailed:
    if event is None:  # the script died outside any step (a copy or shell problem)
        return SetupFailed("bootstrap", "\n".join(lines) or f"exit status {exit_code}",
                           f"{host.home}/.gpubox/bootstrap.sh")
    log_path = f"{host.home}/.gpubox/logs/{event.step}.log"
    tail = runner.run(f"tail -n {LOG_TAIL_LINES} '{log_path}'", check=False).stdout
    # The marker's message is the one line a person reads first; the log tail follows:
    # this run's lines only (the log keeps every run's), without the message again.
    error = SetupFailed(event.step, f"{event.msg}\n{_this_run(tail, event.msg)}".strip(),
                        log_path)
    if "No space left on device" in tail or "disk is full" in event.msg:
        error.hint = (
            f"the host's disk is full ({_gb(host.disk_free_gb)} free before setup): free space "
            f"or use a bigger disk (--disk-gb); full log on the host: {log_path}"
        )
    return error


def _this_run(tail: str, msg: str) -> str:
    """The log's lines since its last `=== <time> step NAME` header, bar `error: <msg>`."""
    lines = tail.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("=== ")]
    lines = lines[starts[-1] + 1:] if starts else lines
    return "\n".join(line for line in lines if not (msg and line.strip() == f"error: {msg}"))


def _gb(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.1f} GB"


@contextlib.contextmanager
def failure_noted(state: Any, name: str) -> Iterator[None]:
    """A setup (or its Jupyter) that fails leaves its step and first line in the box's
    journal, for `status` to show (failure_of); the journal's step stays what it was."""
    try:
        yield
    except GpuboxError as exc:
        last = state.last_step(name)
        where = last[0] if last else "setup"
        step = exc.step if isinstance(exc, SetupFailed) else where
        first = (exc.log_tail if isinstance(exc, SetupFailed) else exc.message).strip()
        state.journal(name, where, failed=step, why=first.splitlines()[0] if first else "")
        raise


def failure_of(state: Any, name: str) -> str | None:
    """'failed at step jupyter: port 8888 …' when the box's last setup failed, else None
    (a later `up` that gets through, or `down`, writes a newer journal entry)."""
    last = state.last_step(name)
    if last is None or "failed" not in last[1]:
        return None
    why = last[1].get("why") or ""
    return f"failed at step {last[1]['failed']}" + (f": {why}" if why else "")


def stop_services(runner: Runner) -> bool:
    """End what setup started on the host (Jupyter, the idle agent); keep everything else.

    For hosts gpubox only forgets (ssh, local). False when gpubox never set the host up.
    """
    script = f"{REMOTE_DIR}/bootstrap.sh".replace("~", "$HOME")
    result = runner.run(
        f'if [ -f "{script}" ]; then bash "{script}" stop; else echo absent; fi', check=False
    )
    if result.stdout.strip() == "absent":
        return False
    if not result.ok:
        from gpubox.remote.runner import tail

        raise GpuboxError(
            "could not stop the services gpubox started on the host",
            hint=tail(result.stdout + result.stderr, 5),
        )
    return True
