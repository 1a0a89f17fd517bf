"""The label store interface and its SQL implementation shared by SQLite and PostgreSQL (DB-API, one connection).

Calls are blocking: the gateway runs them on one worker thread (:class:`gateway.learning.runner.StoreRunner`),
so the event loop never waits on the disk or the network, and the commands call them directly.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any, Protocol

import orjson

from gateway.learning.migrations import MIGRATIONS
from gateway.learning.records import (
    Feedback,
    LabelledRow,
    PendingJudgement,
    RequestRow,
    ShadowRow,
    Stats,
    Verdict,
)

log = logging.getLogger("tiergate.learning")


class StoreError(Exception):
    """The store cannot be opened or written (full, read-only, unreachable); the message says which."""


class LabelStore(Protocol):
    """Where labels live. Every method is blocking and thread-safe enough for one worker thread."""

    url: str

    def open(self) -> None:
        """Connect and bring the schema up to date."""
        ...

    def close(self) -> None: ...

    def schema_version(self) -> int: ...

    def record_request(self, row: RequestRow) -> None: ...

    def record_requests(self, rows: Sequence[RequestRow]) -> None:
        """Several rows in one transaction (the gateway's writer batches them)."""
        ...

    def record_shadow(self, row: ShadowRow, pending: PendingJudgement | None) -> None:
        """The shadow answer, and (in the same transaction) the pair queued for the judge."""
        ...

    def record_verdict(self, verdict: Verdict) -> None:
        """The scores; removes the pair from the judge queue."""
        ...

    def claim_judgements(self, now: float, limit: int, lease_s: float) -> list[PendingJudgement]:
        """Due pairs, leased for ``lease_s`` so another worker or replica does not take them too."""
        ...

    def postpone_judgement(self, request_id: str, next_at: float, error: str) -> None: ...

    def owner(self, request_id: str) -> str | None:
        """The key id that made the request, or None when the store has no such request."""
        ...

    def add_feedback(self, feedback: Feedback) -> None: ...

    def spent_since(self, since: float) -> tuple[float, float]:
        """USD spent on shadow answers and on the judge since ``since`` (for the daily caps after a restart)."""
        ...

    def stats(self, tie_margin: float) -> Stats: ...

    def labelled(self, since: float | None = None) -> list[LabelledRow]: ...


class SQLStore:
    """The SQL both databases share. Subclasses connect and say how parameters are written."""

    placeholder = "?"
    skip_locked = ""  # PostgreSQL: claimed rows are locked so replicas do not judge one pair twice
    migration_lock: tuple[str, ...] = ()  # statements that serialise migrations between processes

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn: Any = None
        self.lock = threading.Lock()

    def connect(self) -> Any:
        raise NotImplementedError

    def begin(self, cur: Any) -> None:
        """Start a transaction (PostgreSQL's driver starts one by itself)."""

    def translate(self, exc: Exception) -> StoreError:
        return StoreError(f"label store {self.redacted()}: {exc}")

    def redacted(self) -> str:
        return self.url

    def sql(self, statement: str) -> str:
        return statement if self.placeholder == "?" else statement.replace("?", self.placeholder)

    def run(self, statements: list[tuple[str, tuple[Any, ...]]], fetch: bool = False) -> list[Any]:
        """Statements in one transaction; the rows of the last one when ``fetch``."""
        with self.lock:
            if self.conn is None:
                raise StoreError(f"label store {self.redacted()} is not open")
            rows: list[Any] = []
            try:
                cur = self.conn.cursor()
                try:
                    self.begin(cur)
                    for statement, params in statements:
                        cur.execute(self.sql(statement), params)
                    if fetch:
                        rows = list(cur.fetchall())
                finally:
                    cur.close()
                self.conn.commit()
            except Exception as exc:
                self._rollback()
                if isinstance(exc, StoreError):
                    raise
                raise self.translate(exc) from exc
            return rows

    def _rollback(self) -> None:
        try:
            self.conn.rollback()
        except Exception:  # the connection itself may be gone; the next call reports it
            log.debug("rollback failed", exc_info=True)

    # -- lifecycle and schema

    def open(self) -> None:
        try:
            self.conn = self.connect()
        except Exception as exc:
            raise self.translate(exc) from exc
        try:
            self.migrate()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        with self.lock:
            if self.conn is not None:
                try:
                    self.conn.close()
                finally:
                    self.conn = None

    def schema_version(self) -> int:
        rows = self.run([("SELECT MAX(version) FROM schema_version", ())], fetch=True)
        return int(rows[0][0] or 0)

    def migrate(self) -> None:
        """Apply the missing steps in one transaction (PostgreSQL: under a lock, so replicas starting
        together do not race)."""
        with self.lock:
            cur = self.conn.cursor()
            try:
                self.begin(cur)
                for statement in self.migration_lock:
                    cur.execute(statement)
                cur.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
                            "applied_at DOUBLE PRECISION NOT NULL)")
                cur.execute("SELECT MAX(version) FROM schema_version")
                current = int(cur.fetchone()[0] or 0)
                for version, statements in MIGRATIONS:
                    if version > current:
                        for statement in statements:
                            cur.execute(statement)
                        cur.execute(self.sql("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)"),
                                    (version, time.time()))
                        log.info("label store %s: schema migrated to version %d", self.redacted(), version)
                cur.close()
                self.conn.commit()
            except Exception as exc:
                self._rollback()
                raise self.translate(exc) from exc

    # -- writes

    def record_request(self, row: RequestRow) -> None:
        self.record_requests([row])

    def record_requests(self, rows: Sequence[RequestRow]) -> None:
        self.run([("""INSERT INTO requests (request_id, created_at, key_id, text_hash, routing_text, decision_tier,
                      reason, score, threshold, tier, model, prompt_tokens, completion_tokens, cost_usd)
                      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                      ON CONFLICT (request_id) DO NOTHING""",
                   (row.request_id, row.created_at, row.key_id, row.text_hash, row.routing_text, row.decision_tier,
                    row.reason, row.score, row.threshold, row.tier, row.model, row.prompt_tokens,
                    row.completion_tokens, row.cost_usd)) for row in rows])

    def record_shadow(self, row: ShadowRow, pending: PendingJudgement | None) -> None:
        steps: list[tuple[str, tuple[Any, ...]]] = [(
            """UPDATE requests SET shadow_tier = ?, shadow_model = ?, shadow_status = ?, shadow_error = ?,
               shadow_prompt_tokens = ?, shadow_completion_tokens = ?, shadow_cost_usd = ?, shadow_at = ?
               WHERE request_id = ?""",
            (row.tier, row.model, row.status, row.error, row.prompt_tokens, row.completion_tokens, row.cost_usd,
             time.time(), row.request_id))]
        if pending is not None:
            payload = orjson.dumps({"question": pending.question, "small": pending.small_answer,
                                    "large": pending.large_answer}).decode()
            steps.append(("""INSERT INTO judge_queue (request_id, payload, attempts, next_at) VALUES (?, ?, 0, ?)
                             ON CONFLICT (request_id) DO NOTHING""", (pending.request_id, payload, 0.0)))
        self.run(steps)

    def record_verdict(self, verdict: Verdict) -> None:
        agreement = None if verdict.agreement is None else int(verdict.agreement)
        self.run([
            ("""UPDATE requests SET small_score = ?, large_score = ?, judge_mode = ?, judge_model = ?,
                judge_agreement = ?, judge_cost_usd = ?, judged_at = ? WHERE request_id = ?""",
             (verdict.small_score, verdict.large_score, verdict.mode, verdict.judge_model, agreement,
              verdict.cost_usd, time.time(), verdict.request_id)),
            ("DELETE FROM judge_queue WHERE request_id = ?", (verdict.request_id,)),
        ])

    def claim_judgements(self, now: float, limit: int, lease_s: float) -> list[PendingJudgement]:
        rows = self.run([(f"""UPDATE judge_queue SET next_at = ?, attempts = attempts + 1 WHERE request_id IN (
                              SELECT request_id FROM judge_queue WHERE next_at <= ? ORDER BY next_at
                              LIMIT ?{self.skip_locked}) RETURNING request_id, payload, attempts""",
                           (now + lease_s, now, limit))], fetch=True)
        claimed = []
        for request_id, payload, attempts in rows:
            data = orjson.loads(payload)
            claimed.append(PendingJudgement(request_id, data["question"], data["small"], data["large"], attempts))
        return claimed

    def postpone_judgement(self, request_id: str, next_at: float, error: str) -> None:
        self.run([("UPDATE judge_queue SET next_at = ?, last_error = ? WHERE request_id = ?",
                   (next_at, error[:500], request_id))])

    def owner(self, request_id: str) -> str | None:
        rows = self.run([("SELECT key_id FROM requests WHERE request_id = ?", (request_id,))], fetch=True)
        return str(rows[0][0]) if rows else None

    def add_feedback(self, feedback: Feedback) -> None:
        self.run([("INSERT INTO feedback (id, request_id, created_at, key_id, score) VALUES (?, ?, ?, ?, ?)",
                   (time.time_ns(), feedback.request_id, feedback.created_at, feedback.key_id, feedback.score))])

    # -- reads

    def spent_since(self, since: float) -> tuple[float, float]:
        rows = self.run([("""SELECT COALESCE(SUM(CASE WHEN shadow_at >= ? THEN shadow_cost_usd END), 0),
                                    COALESCE(SUM(CASE WHEN judged_at >= ? THEN judge_cost_usd END), 0)
                             FROM requests WHERE shadow_at >= ? OR judged_at >= ?""",
                           (since, since, since, since))], fetch=True)
        return float(rows[0][0]), float(rows[0][1])

    def stats(self, tie_margin: float) -> Stats:
        rows = self.run([("""SELECT COUNT(*),
                SUM(CASE WHEN shadow_status = 'answered' THEN 1 ELSE 0 END),
                SUM(CASE WHEN shadow_status = 'failed' THEN 1 ELSE 0 END),
                SUM(CASE WHEN small_score IS NOT NULL THEN 1 ELSE 0 END),
                SUM(CASE WHEN small_score IS NOT NULL AND small_score + ? >= large_score THEN 1 ELSE 0 END),
                AVG(judge_agreement * 1.0),
                AVG(CASE WHEN small_score IS NOT NULL THEN
                    CASE WHEN tier = 'small' THEN small_score ELSE large_score END END),
                AVG(large_score),
                COALESCE(SUM(shadow_cost_usd), 0), COALESCE(SUM(judge_cost_usd), 0)
            FROM requests""", (tie_margin,))], fetch=True)
        (requests, shadowed, failed, judged, as_good, agreement, routed, all_large, shadow_cost,
         judge_cost) = rows[0]
        stats = Stats(requests=int(requests or 0), shadowed=int(shadowed or 0), shadow_failed=int(failed or 0),
                      judged=int(judged or 0), small_as_good=int(as_good or 0),
                      agreement=None if agreement is None else float(agreement),
                      routed_quality=None if routed is None else float(routed),
                      all_large_quality=None if all_large is None else float(all_large),
                      shadow_cost_usd=float(shadow_cost), judge_cost_usd=float(judge_cost))
        stats.pending = int(self.run([("SELECT COUNT(*) FROM judge_queue", ())], fetch=True)[0][0])
        count, mean = self.run([("SELECT COUNT(*), AVG(score) FROM feedback", ())], fetch=True)[0]
        stats.feedback, stats.feedback_mean = int(count), None if mean is None else float(mean)
        for tier, n in self.run([("SELECT tier, COUNT(*) FROM requests GROUP BY tier", ())], fetch=True):
            stats.by_tier[str(tier)] = int(n)
        return stats

    def labelled(self, since: float | None = None) -> list[LabelledRow]:
        rows = self.run([("""SELECT request_id, created_at, routing_text, small_score, large_score, tier
                             FROM requests WHERE small_score IS NOT NULL AND created_at >= ?
                             ORDER BY created_at""", (since or 0.0,))], fetch=True)
        return [LabelledRow(str(r[0]), float(r[1]), r[2], float(r[3]), float(r[4]), str(r[5])) for r in rows]
