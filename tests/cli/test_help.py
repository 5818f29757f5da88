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


def test_no_command_imports_pydantic(tmp_path):
    """typer 0.29 imports pydantic while building a command's parameters (~150 ms a command);
    pyproject pins below it. `status` in an empty HOME builds the same parameters as any
    command, so `-X importtime` shows whether pydantic comes back (an import test, not a timing)."""
    env = {
        k: v for k, v in __import__("os").environ.items() if not k.startswith(("GPUBOX_", "AWS_"))
    }
    env.update(HOME=str(tmp_path), AWS_EC2_METADATA_DISABLED="true",
               GPUBOX_HOME=str(tmp_path / "gpubox"))
    for args in (["--help"], ["status"], ["up", "--help"]):
        out = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "gpubox", *args],
            capture_output=True, text=True, env=env, timeout=60,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        imported = [line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines()
                    if line.startswith("import time:")]
        assert "typer" in imported  # the probe sees imports at all
        assert [m for m in imported if m.split(".")[0] in ("pydantic", "pydantic_core")] == []
        # No AWS credentials configured: nothing to ask AWS with, so boto3 stays unloaded.
        assert "boto3" not in imported and "botocore" not in imported, args
