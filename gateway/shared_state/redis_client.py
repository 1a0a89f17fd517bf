"""The redis-py asyncio client built from ``state:`` settings (password from the environment, no hidden retries)."""

from __future__ import annotations

import os

from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from gateway.settings import ConfigError, StateSettings


def redis_password(settings: StateSettings) -> str | None:
    if settings.redis_password_env is None:
        return None
    password = os.environ.get(settings.redis_password_env)
    if not password:
        raise ConfigError(f"state.redis_password_env names {settings.redis_password_env}, which is not set")
    return password


def connect(settings: StateSettings) -> Redis:
    """A lazily connecting client; every call is also bounded by the shield's timeout (gateway.shared_state.base)."""
    # redis-py would otherwise retry a failed command itself; the shield and its breaker decide instead.
    return Redis.from_url(
        settings.redis_url,
        password=redis_password(settings),
        socket_timeout=settings.timeout_s,
        socket_connect_timeout=settings.timeout_s,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
        decode_responses=True,
    )
