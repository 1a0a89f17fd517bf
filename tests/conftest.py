"""Shared fixtures: a scriptable fake OpenAI upstream and a gateway, both on real loopback TCP."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.tools.fake_upstream import FakeUpstream, ServerThread
from tests.support.doubles import FixedRouter
from tests.support.shared_gateway import SharedPair, reset

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see gateway.cli.main
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data" / "routing"


@pytest.fixture
def fake_upstream(request: pytest.FixtureRequest) -> Iterator[FakeUpstream]:
    """A scriptable upstream; ``fake_upstream.url`` is its base URL (without ``/v1``).

    In a module that defines a module-scoped ``pair`` fixture (see tests.support.shared_gateway) this is the
    module's shared fake, reset for the test; elsewhere a fresh one.
    """
    if hasattr(request.module, "pair"):
        yield reset(request.getfixturevalue("pair"))
        return
    fake = FakeUpstream()
    with ServerThread(fake) as server:
        fake.url = server.url  # type: ignore[attr-defined]
        fake.port = server.port
        yield fake


@pytest.fixture
def gateway(request: pytest.FixtureRequest, fake_upstream: FakeUpstream) -> ServerThread:
    """The module's shared gateway (modules with a ``pair`` fixture)."""
    pair: SharedPair = request.getfixturevalue("pair")
    return pair.gateway


@pytest.fixture
def router(request: pytest.FixtureRequest, fake_upstream: FakeUpstream) -> FixedRouter:
    """The router double of the module's shared gateway (modules with a ``pair`` fixture)."""
    pair: SharedPair = request.getfixturevalue("pair")
    return pair.router


@pytest.fixture
def client(gateway: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=10) as http:
        yield http


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL server for this test session (Debian's binaries or any initdb on $PATH)."""
    from tests.support.postgres import find_bin_dir, postgres_server

    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl): apt-get install postgresql to run these tests")
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install 'psycopg[binary]')")
    with postgres_server(bin_dir) as url:
        yield url


@pytest.fixture
def fresh_postgres(postgres_url: str) -> Iterator[str]:
    """The session's server with an empty database of its own for this test."""
    import uuid

    import psycopg

    name = "t" + uuid.uuid4().hex[:12]
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield postgres_url.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")
