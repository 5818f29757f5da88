"""Entry point: registers the command modules and turns errors into one red line."""

from __future__ import annotations

import os
import shlex
import signal
import sys
import time
import traceback

from gpubox.cli.app import command

# Each module adds its commands to `app` when imported. Keep them light.
COMMAND_MODULES = (
    "lifecycle",
    "catalog",
    "connect",
    "places",
    "money",
    "settings_cmd",
    "files",
    "keep",
    "volumes",
    "run",
    "bench",
    "selftest_cmd",
)


def _register() -> None:
    import importlib

    for module in COMMAND_MODULES:
        try:
            importlib.import_module(f"gpubox.cli.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"gpubox.cli.{module}":
                raise


def _log_bug(exc: BaseException) -> str:
    """Write the traceback to a log and say where; never fails itself (an unwritable HOME
    or a broken config is often what the bug is about)."""
    import tempfile
    from pathlib import Path

    text = "".join(traceback.format_exception(exc))
    name = f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    dirs: list[Path] = []
    try:
        from gpubox import config

        dirs.append(config.load().log_dir)
    except Exception:  # noqa: BLE001 - the settings themselves may be what is broken
        pass
    dirs.append(Path(tempfile.gettempdir()))
    for log_dir in dirs:
        try:
            from gpubox.localfiles import private_dir, write_private

            return str(write_private(private_dir(log_dir) / name, text))
        except Exception:  # noqa: BLE001 - OSError, or GpuboxError from localfiles: next folder
            continue
    return "nowhere (no writable folder for a log)"


def _cache_hint() -> str:
    try:
        from gpubox import config

        path = str(config.load().state_path)
    except Exception:  # noqa: BLE001 - the settings may be what is broken
        path = "state.sqlite in gpubox's data folder"
    return f"it is only a cache: move {path} aside and run the command again"


def _tell_interrupted(exc: BaseException) -> int:
    """Say what the interrupted command left (what exists, its $/h, how to finish or undo)."""
    from gpubox import inflight
    from gpubox.cli import render

    inflight.ignore_signals()
    if not isinstance(exc, inflight.Interrupted):
        exc = inflight.Interrupted(signal.SIGINT)
    try:
        render.error(inflight.headline(exc))
        for line in inflight.lines(found=_found_in_aws(inflight.current().box)):
            render.info(line)
    except Exception:  # noqa: BLE001 - the terminal may be gone; the exit code still tells
        pass
    return exc.exit_code


def _found_in_aws(box: str | None) -> list[str] | None:
    """What the interrupted command's AWS box owns there now (asked of AWS), or None."""
    if box is None:
        return None
    try:
        from gpubox import config
        from gpubox.providers.aws.resources import report_lines

        return report_lines(config.load(), box)
    except Exception:  # noqa: BLE001 - the report falls back to what this process saw
        return None


def run(argv: list[str] | None = None) -> None:
    from gpubox import inflight

    handlers = inflight.install_handlers()  # first: a signal while commands load is told too
    try:
        _run(argv)
    finally:
        if argv is None:  # the `gpubox` process: its command is over; a signal now (while
            inflight.ignore_signals()  # it exits) must not kill it with -15 after success
        else:  # called in-process (tests): the caller's handlers come back
            inflight.restore_handlers(handlers)


def _run(argv: list[str] | None) -> None:
    from gpubox import inflight
    from gpubox.errors import GpuboxError

    args = sys.argv[1:] if argv is None else argv
    inflight.command("gpubox " + shlex.join(args))
    try:
        _register()
        command()(args=argv, standalone_mode=True)
    except GpuboxError as exc:
        from gpubox.cli import render

        render.error(exc.message, exc.hint)
        sys.exit(exc.exit_code)
    except (inflight.Interrupted, KeyboardInterrupt) as exc:
        sys.exit(_tell_interrupted(exc))
    except SystemExit:
        raise
    except Exception as exc:  # a bug: short line, traceback to a log
        if os.environ.get("GPUBOX_DEBUG"):
            raise
        from gpubox.cli import render

        if type(exc).__module__ == "sqlite3":  # the cache failed mid-command (disk full ...)
            render.error(f"gpubox's local cache failed: {exc}", _cache_hint())
            sys.exit(1)

        path = _log_bug(exc)
        render.error(
            f"internal error: {type(exc).__name__}: {exc}",
            f"this is a bug in gpubox; the traceback is in {path} (GPUBOX_DEBUG=1 shows it)",
        )
        sys.exit(70)


if __name__ == "__main__":
    run()
