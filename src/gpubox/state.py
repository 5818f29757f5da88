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

import contextlib
import json
import os
import sqlite3
import sys
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
    # 3: a tunnel's URL is kept without its Jupyter token (the token lives in its 0600 file)
    "UPDATE tunnels SET url = substr(url, 1, instr(url, '?') - 1) WHERE instr(url, '?') > 0",
    # 4: which box of several nodes a run was a node of (cost keeps a `down`ed one as one)
    "ALTER TABLE runs ADD COLUMN cluster TEXT",
]

# How the cache says it is not being kept (once per process); the CLI's stderr by default.
_said: set[str] = set()


def _tell(message: str) -> None:
    if message not in _said:
        _said.add(message)
        sys.stderr.write(f"note: {message}\n")


class State:
    """The cache. It never blocks a command: a corrupt file is moved aside and started
    afresh, and one that cannot be written (read-only file or folder, unwritable HOME)
    gives way to a cache in memory for this command, said once on stderr."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.in_memory = False
        self._db = self._open()

    def _open(self) -> sqlite3.Connection:
        from gpubox.errors import GpuboxError
        from gpubox.localfiles import private_file, tighten

        for _ in range(2):
            try:
                # 0600 before SQLite opens it: its -wal and -shm files take its mode.
                private_file(self.path)
                for tail in ("-wal", "-shm"):  # left wider by an older gpubox
                    tighten(self.path.with_name(self.path.name + tail))
                db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
                db.row_factory = sqlite3.Row
                try:
                    db.execute("PRAGMA journal_mode=WAL")
                    _migrate(db)
                except BaseException:
                    db.close()
                    raise
                return db
            except GpuboxError as exc:  # the folder cannot be made
                return self._in_memory(exc.message)
            except sqlite3.DatabaseError as exc:
                text = str(exc).lower()
                if "not a database" in text or "malformed" in text:
                    self._move_aside()
                    continue
                if "locked" in text or "busy" in text:
                    raise GpuboxError(
                        f"the local cache {self.path} stayed locked for 10 s",
                        hint="another gpubox command is holding it; try again when it ends",
                    ) from None
                return self._in_memory(f"{self.path} cannot be written ({exc})")
        return self._in_memory(f"{self.path} is damaged and could not be moved aside")

    def _move_aside(self) -> None:
        aside = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        try:
            os.replace(self.path, aside)
        except FileNotFoundError:  # another gpubox moved it just now
            return
        except OSError:
            return
        for tail in ("-wal", "-shm"):
            with contextlib.suppress(OSError):
                os.replace(f"{self.path}{tail}", f"{aside}{tail}")
        _tell(f"{self.path} was damaged; it is kept as {aside.name} and gpubox starts a new "
              "cache (your boxes are found again in the cloud)")  # fmt: skip

    def _in_memory(self, why: str) -> sqlite3.Connection:
        """A cache for this command only, seeded with what the file holds if it can be read."""
        db = sqlite3.connect(":memory:", isolation_level=None)
        db.row_factory = sqlite3.Row
        for flags in ("mode=ro", "immutable=1"):  # immutable: a WAL file it cannot share
            with contextlib.suppress(sqlite3.Error, OSError):
                source = sqlite3.connect(f"{self.path.as_uri()}?{flags}", uri=True)
                try:
                    source.backup(db)
                    break
                finally:
                    source.close()
        try:
            _migrate(db)
        except sqlite3.Error:  # what was read is unusable: start empty
            db.close()
            db = sqlite3.connect(":memory:", isolation_level=None)
            db.row_factory = sqlite3.Row
            _migrate(db)
        self.in_memory = True
        _tell(f"{why}; the local cache is read-only: gpubox works from the cloud and keeps "
              f"nothing new this time (fix: make {self.path.parent} writable by you)")  # fmt: skip
        return db

    def close(self) -> None:
        self._db.close()

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
        """The URL is kept without its query (the Jupyter token): the token stays in its
        0600 file, never in this database."""
        self._db.execute(
            "INSERT OR REPLACE INTO tunnels(name, local_port, pid, url, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (name, local_port, pid, url.split("?", 1)[0], time.time()),
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
    def run_started(
        self, name: str, type_: str | None, price: float | None, at: float,
        cluster: str | None = None,
    ) -> None:
        open_run = self._db.execute(
            "SELECT rowid FROM runs WHERE name = ? AND stopped_at IS NULL", (name,)
        ).fetchone()
        if open_run is None:
            self._db.execute(
                "INSERT INTO runs(name, type, price_per_hour, started_at, cluster) "
                "VALUES (?, ?, ?, ?, ?)",
                (name, type_, price, at, cluster),
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


def _migrate(db: sqlite3.Connection) -> None:
    """Bring the schema up to date under the database's write lock, reading the version
    again inside it: several gpubox commands started at once on a new HOME all succeed."""
    if db.execute("PRAGMA user_version").fetchone()[0] >= len(MIGRATIONS):
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            for statement in script.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {number}")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def open_state(path: Path) -> State:
    return State(path)
