"""The embedded label store: one SQLite file in WAL mode (durable across restarts and crashes)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from gateway.learning.store import SQLStore


class SQLiteStore(SQLStore):
    """``sqlite:///abs/path.db`` or a plain path. WAL with ``synchronous=FULL``: a committed row survives a
    kill -9 and a power cut; a crash mid-write loses only that transaction."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        super().__init__(f"sqlite:///{self.path}")

    def connect(self) -> Any:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # check_same_thread off: the store is used from one worker thread at a time, guarded by self.lock.
        conn = sqlite3.connect(self.path, timeout=10, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=10000")
        return conn

    def begin(self, cur: Any) -> None:
        # Autocommit connection, explicit transactions: a migration's DDL and its version row commit together.
        cur.execute("BEGIN IMMEDIATE")

    def pragma(self, statement: str) -> Any:
        """Run one PRAGMA (tests simulate a full or read-only database with ``max_page_count``/``query_only``)."""
        with self.lock:
            return self.conn.execute(statement).fetchall()
