"""Entry point: registers the command modules and turns errors into one red line."""

from __future__ import annotations

import os
import sys
import time
import traceback

from gpubox.cli.app import app

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
    from gpubox import config

    try:
        log_dir = config.load().log_dir
    except Exception:  # the settings themselves may be what is broken
        import tempfile
        from pathlib import Path

        log_dir = Path(tempfile.gettempdir())
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    path.write_text("".join(traceback.format_exception(exc)))
    return str(path)


def run(argv: list[str] | None = None) -> None:
    from gpubox.errors import GpuboxError

    _register()
    try:
        app(args=argv, standalone_mode=True)
    except GpuboxError as exc:
        from gpubox.cli import render

        render.error(exc.message, exc.hint)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        from gpubox.cli import render

        render.error("interrupted", "nothing was left half-made that `gpubox status` does not show")
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as exc:  # a bug: short line, traceback to a log
        if os.environ.get("GPUBOX_DEBUG"):
            raise
        from gpubox.cli import render

        path = _log_bug(exc)
        render.error(
            f"internal error: {type(exc).__name__}: {exc}",
            f"this is a bug in gpubox; the traceback is in {path} (GPUBOX_DEBUG=1 shows it)",
        )
        sys.exit(70)


if __name__ == "__main__":
    run()
