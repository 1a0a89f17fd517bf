"""Picks the label store a URL names: ``postgresql://`` or ``postgres://``, else SQLite (a path or sqlite:///)."""

from __future__ import annotations

import os
from pathlib import Path

from gateway.learning.postgres import PostgresStore
from gateway.learning.sqlite import SQLiteStore
from gateway.learning.store import LabelStore

CACHE_ENV = "TIERGATE_CACHE_DIR"


def default_store_path() -> Path:
    """``$TIERGATE_CACHE_DIR/learning/labels.sqlite3``, else ``~/.cache/tiergate/learning/labels.sqlite3``."""
    root = os.environ.get(CACHE_ENV)
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "tiergate"
    return base / "learning" / "labels.sqlite3"


def open_store(url: str | None) -> LabelStore:
    """An unopened store for ``url`` (None: the default SQLite file)."""
    if not url:
        return SQLiteStore(default_store_path())
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresStore(url)
    if url.startswith("sqlite:///"):
        return SQLiteStore(url[len("sqlite:///"):])  # sqlite:///relative.db, sqlite:////absolute.db
    return SQLiteStore(url)
