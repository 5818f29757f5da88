"""Every command and flag has help; `gpubox --help` is fast because it imports nothing heavy."""

from __future__ import annotations

import subprocess
import sys

import typer.main

from gpubox.cli.app import app
from gpubox.cli.main import _register


def _commands():
    _register()
    root = typer.main.get_command(app)
    stack = [((), root)]
    while stack:
        path, command = stack.pop()
        yield path, command
        # typer vendors its own click: recognise groups and parameters by what they have.
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                stack.append(((*path, name), sub))


def test_every_command_and_flag_has_help():
    commands = [path for path, _ in _commands()]
    assert ("up",) in commands and ("quota", "request") in commands  # the walk reaches them
    missing = []
    for path, command in _commands():
        if not path:
            continue
        if not (command.help or "").strip():
            missing.append(" ".join(path))
        for param in command.params:
            kind = param.param_type_name
            if kind == "option" and not (param.help or "").strip():
                missing.append(f"{' '.join(path)} {param.opts[0]}")
            if kind == "argument" and not getattr(param, "help", None):
                missing.append(f"{' '.join(path)} <{param.name}>")
    assert missing == []


def test_every_command_has_an_example():
    lacking = [
        " ".join(path)
        for path, command in _commands()
        if path and not hasattr(command, "commands") and "Example:" not in (command.help or "")
    ]
    assert lacking == []


def test_help_does_not_import_boto3_or_rich():
    code = (
        "import sys\n"
        "from gpubox.cli.main import run\n"
        "try:\n    run(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('boto3', 'botocore', 'jupyter_server', 'requests') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr


def test_unknown_command_is_one_clear_line_not_a_traceback():
    out = subprocess.run(
        [sys.executable, "-m", "gpubox", "stauts"], capture_output=True, text=True
    )
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert "No such command" in out.stderr


def test_every_command_in_the_readme_exists():
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    paths = {p for p, _ in _commands()}
    named = set()
    for words in re.findall(r"`gpubox ([a-z][a-z-]*(?: [a-z][a-z-]*)?)", readme):
        parts = tuple(words.split())
        # "image rm" is a sub-command; "up NAME" has an argument after the command.
        named.add(parts if parts in paths else parts[:1])
    missing = sorted(" ".join(p) for p in named if p not in paths)
    assert missing == []
