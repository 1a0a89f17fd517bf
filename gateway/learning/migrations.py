"""Versioned schema of the label store: numbered steps, applied in order, each recorded in ``schema_version``.

The SQL is the common subset of SQLite and PostgreSQL. Never edit a released step: add the next one.
"""

from __future__ import annotations

MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (1, (
        """CREATE TABLE requests (
            request_id TEXT PRIMARY KEY,
            created_at DOUBLE PRECISION NOT NULL,
            key_id TEXT NOT NULL,
            text_hash TEXT NOT NULL,
            routing_text TEXT,
            decision_tier TEXT,
            reason TEXT,
            score DOUBLE PRECISION,
            threshold DOUBLE PRECISION,
            tier TEXT NOT NULL,
            model TEXT NOT NULL,
            prompt_tokens BIGINT NOT NULL DEFAULT 0,
            completion_tokens BIGINT NOT NULL DEFAULT 0,
            cost_usd DOUBLE PRECISION NOT NULL DEFAULT 0,
            shadow_tier TEXT,
            shadow_model TEXT,
            shadow_status TEXT,
            shadow_error TEXT,
            shadow_prompt_tokens BIGINT,
            shadow_completion_tokens BIGINT,
            shadow_cost_usd DOUBLE PRECISION,
            shadow_at DOUBLE PRECISION,
            small_score DOUBLE PRECISION,
            large_score DOUBLE PRECISION,
            judge_mode TEXT,
            judge_model TEXT,
            judge_agreement INTEGER,
            judge_cost_usd DOUBLE PRECISION,
            judged_at DOUBLE PRECISION
        )""",
        "CREATE INDEX requests_created_at ON requests (created_at)",
        """CREATE TABLE feedback (
            id BIGINT,
            request_id TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            key_id TEXT NOT NULL,
            score DOUBLE PRECISION NOT NULL
        )""",
        "CREATE INDEX feedback_request_id ON feedback (request_id)",
        """CREATE TABLE judge_queue (
            request_id TEXT PRIMARY KEY,
            payload TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_at DOUBLE PRECISION NOT NULL,
            last_error TEXT
        )""",
        "CREATE INDEX judge_queue_next_at ON judge_queue (next_at)",
    )),
)

LATEST = MIGRATIONS[-1][0]
