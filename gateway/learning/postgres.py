"""The shared label store for several replicas: PostgreSQL by URL, through psycopg 3."""

from __future__ import annotations

import re
from typing import Any

from gateway.learning.store import SQLStore, StoreError


class PostgresStore(SQLStore):
    """``postgresql://user:password@host:port/db``; the password never appears in logs or errors."""

    placeholder = "%s"
    skip_locked = " FOR UPDATE SKIP LOCKED"
    migration_lock = ("SELECT pg_advisory_xact_lock(7270001)",)  # held until the migration commits

    def __init__(self, url: str, connect_timeout: float = 10.0) -> None:
        super().__init__(url)
        self.connect_timeout = connect_timeout

    def redacted(self) -> str:
        return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", self.url)

    def connect(self) -> Any:
        try:
            import psycopg
        except ImportError as exc:  # an optional dependency: only this store needs it
            raise StoreError("a postgresql:// label store needs psycopg: pip install 'psycopg[binary]'") from exc
        return psycopg.connect(self.url, connect_timeout=max(1, int(self.connect_timeout)))

    def translate(self, exc: Exception) -> StoreError:
        return StoreError(f"label store {self.redacted()}: {str(exc).replace(self.url, self.redacted())}")
