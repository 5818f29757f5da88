"""The SSH layer imports in one direction: shared pieces below, runner and tunnel above."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import gpubox.remote

REMOTE = Path(gpubox.remote.__file__).parent


def _module_name(path: Path) -> str:
    rel = path.relative_to(REMOTE.parent.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(REMOTE.rglob("*.py"))}


def _imports(path: Path, known: set[str]) -> set[str]:
    """Every gpubox.remote module `path` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        found |= {name for name in names if name in known}
    return found


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_remote_package_has_no_import_cycle():
    modules = _modules()
    graph = {name: _imports(path, set(modules)) - {name} for name, path in modules.items()}
    assert "gpubox.remote.ssh_options" in graph
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize(
    "module", ["hostkeys", "ssh", "ssh_config", "ssh_errors", "ssh_options", "tunnel", "runner"]
)
def test_each_ssh_module_imports_alone_in_a_fresh_interpreter(module):
    proc = subprocess.run(
        [sys.executable, "-c", f"import gpubox.remote.{module}"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


def test_public_names_stay_where_callers_import_them():
    from gpubox.remote import hostkeys, ssh, ssh_errors, ssh_options

    assert ssh.base_options is ssh_options.base_options
    assert ssh.classify_failure is ssh_errors.classify_failure
    assert hostkeys.host_key_alias("box1") == ssh_options.host_key_alias("box1") == "gpubox-box1"
