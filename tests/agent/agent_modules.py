"""The idle agent's modules, imported the way the box runs them (its folder on sys.path)."""

from __future__ import annotations

import importlib
from pathlib import Path

# Importing idle.py puts the agent's folder on sys.path, as running it on a box does.
idle = importlib.import_module("gpubox.remote.agent.idle")
decision = importlib.import_module("idle_decision")
signals = importlib.import_module("idle_signals")
schedule = importlib.import_module("idle_schedule")

AGENT_DIR = Path(idle.__file__).parent
SCRIPT = AGENT_DIR / "idle.py"
