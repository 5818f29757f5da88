"""Local state: one SQLite file with a schema version and plain migrations.

It is a cache and a journal, never the only record: the cloud's tags are the
truth about what exists. Tables:
  boxes    the last seen Box of each name (what `status` shows at once)
  journal  what `up` was doing, so an interrupted `up` is found again
  tunnels  live SSH tunnels to a box's Jupyter
  forwards live port forwards to a box (`gpubox forward`), one per box port
  runs     when each box ran, for cost so far
  bench    benchmark results
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gpubox.providers.base import Box

MIGRATIONS: list[str] = [
    # 1
    """
    CREATE TABLE boxes (
        name TEXT PRIMARY KEY,
        provider TEXT NOT NULL,
        data TEXT NOT NULL,
        seen_at REAL NOT NULL
    );
    CREATE TABLE journal (
        name TEXT NOT NULL,
        step TEXT NOT NULL,
        data TEXT NOT NULL DEFAULT '{}',
        at REAL NOT NULL
    );
    CREATE TABLE tunnels (
        name TEXT PRIMARY KEY,
        local_port INTEGER NOT NULL,
        pid INTEGER NOT NULL,
        url TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE TABLE runs (
        name TEXT NOT NULL,
        type TEXT,
        price_per_hour REAL,
        started_at REAL NOT NULL,
        stopped_at REAL
    );
    CREATE TABLE bench (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        type TEXT,
        payload TEXT NOT NULL,
        result TEXT NOT NULL,
        at REAL NOT NULL
    );
    CREATE TABLE settings_seen (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # 2: `gpubox forward`: several forwards per box, one per port on the box
    """
    CREATE TABLE forwards (
        name TEXT NOT NULL,
        remote_port INTEGER NOT NULL,
        local_port INTEGER NOT NULL,
        pid INTEGER NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (name, remote_port)
    );
    """,
]


class State:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=10, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._migrate()

    def close(self) -> None:
        self._db.close()

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            with self.transaction():
                for statement in script.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {number}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # boxes -----------------------------------------------------------------
    def remember(self, box: Box) -> None:
        self._db.execute(
            "INSERT INTO boxes(name, provider, data, seen_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET provider=excluded.provider, "
            "data=excluded.data, seen_at=excluded.seen_at",
            (box.name, box.provider, json.dumps(box.to_dict()), time.time()),
        )

    def forget(self, name: str) -> None:
        self._db.execute("DELETE FROM boxes WHERE name = ?", (name,))

    def box(self, name: str) -> Box | None:
        row = self._db.execute("SELECT data FROM boxes WHERE name = ?", (name,)).fetchone()
        return Box.from_dict(json.loads(row["data"])) if row else None

    def boxes(self, provider: str | None = None) -> list[Box]:
        query = "SELECT data FROM boxes"
        args: tuple[Any, ...] = ()
        if provider:
            query += " WHERE provider = ?"
            args = (provider,)
        rows = self._db.execute(query + " ORDER BY name", args).fetchall()
        return [Box.from_dict(json.loads(r["data"])) for r in rows]

    def seen_at(self, name: str) -> float | None:
        row = self._db.execute("SELECT seen_at FROM boxes WHERE name = ?", (name,)).fetchone()
        return row["seen_at"] if row else None

    # journal ---------------------------------------------------------------
    def journal(self, name: str, step: str, **data: Any) -> None:
        self._db.execute(
            "INSERT INTO journal(name, step, data, at) VALUES (?, ?, ?, ?)",
            (name, step, json.dumps(data), time.time()),
        )

    def last_step(self, name: str) -> tuple[str, dict[str, Any]] | None:
        row = self._db.execute(
            "SELECT step, data FROM journal WHERE name = ? ORDER BY rowid DESC LIMIT 1", (name,)
        ).fetchone()
        return (row["step"], json.loads(row["data"])) if row else None

    # tunnels ---------------------------------------------------------------
    def save_tunnel(self, name: str, local_port: int, pid: int, url: str) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO tunnels(name, local_port, pid, url, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (name, local_port, pid, url, time.time()),
        )

    def tunnel(self, name: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT * FROM tunnels WHERE name = ?", (name,)).fetchone()
        return dict(row) if row else None

    def drop_tunnel(self, name: str) -> None:
        self._db.execute("DELETE FROM tunnels WHERE name = ?", (name,))

    # forwards (`gpubox forward`) --------------------------------------------
    def save_forward(self, name: str, remote_port: int, local_port: int, pid: int) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO forwards(name, remote_port, local_port, pid, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (name, remote_port, local_port, pid, time.time()),
        )

    def forwards(self, name: str) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT * FROM forwards WHERE name = ? ORDER BY remote_port", (name,)
        ).fetchall()
        return [dict(r) for r in rows]

    def drop_forward(self, name: str, remote_port: int) -> None:
        self._db.execute(
            "DELETE FROM forwards WHERE name = ? AND remote_port = ?", (name, remote_port)
        )

    # runs (cost history) ---------------------------------------------------
    def run_started(self, name: str, type_: str | None, price: float | None, at: float) -> None:
        open_run = self._db.execute(
            "SELECT rowid FROM runs WHERE name = ? AND stopped_at IS NULL", (name,)
        ).fetchone()
        if open_run is None:
            self._db.execute(
                "INSERT INTO runs(name, type, price_per_hour, started_at) VALUES (?, ?, ?, ?)",
                (name, type_, price, at),
            )

    def run_stopped(self, name: str, at: float) -> None:
        self._db.execute(
            "UPDATE runs SET stopped_at = ? WHERE name = ? AND stopped_at IS NULL", (at, name)
        )

    def runs(self, name: str | None = None) -> list[dict[str, Any]]:
        if name:
            rows = self._db.execute(
                "SELECT * FROM runs WHERE name = ? ORDER BY started_at", (name,)
            ).fetchall()
        else:
            rows = self._db.execute("SELECT * FROM runs ORDER BY started_at").fetchall()
        return [dict(r) for r in rows]

    # bench -----------------------------------------------------------------
    def save_bench(self, name: str, type_: str | None, payload: str, result: dict[str, Any]) -> None:
        self._db.execute(
            "INSERT INTO bench(name, type, payload, result, at) VALUES (?, ?, ?, ?, ?)",
            (name, type_, payload, json.dumps(result), time.time()),
        )

    def bench_results(self, payload: str | None = None) -> list[dict[str, Any]]:
        query = "SELECT * FROM bench"
        args: tuple[Any, ...] = ()
        if payload:
            query += " WHERE payload = ?"
            args = (payload,)
        rows = self._db.execute(query + " ORDER BY at", args).fetchall()
        out = []
        for r in rows:
            item = dict(r)
            item["result"] = json.loads(item["result"])
            out.append(item)
        return out

    # small key/value (e.g. regions gpubox has used) -------------------------
    def get(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM settings_seen WHERE key = ?", (key,)).fetchone()
        return row["value"] if row else None

    def put(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO settings_seen(key, value) VALUES (?, ?)", (key, value))


def open_state(path: Path) -> State:
    return State(path)
