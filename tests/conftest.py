"""Shared fixtures: a scriptable fake OpenAI upstream and a gateway, both on real loopback TCP."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

from gateway.fake_upstream import FakeUpstream, ServerThread

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data" / "routing"


@pytest.fixture
def fake_upstream() -> Iterator[FakeUpstream]:
    """A fresh scriptable upstream; ``fake_upstream.url`` is its base URL (without ``/v1``)."""
    fake = FakeUpstream()
    with ServerThread(fake) as server:
        fake.url = server.url  # type: ignore[attr-defined]
        fake.port = server.port
        yield fake
