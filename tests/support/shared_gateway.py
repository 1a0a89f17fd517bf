"""One fake upstream and one gateway shared by a test module, reset before each test.

Starting and stopping the pair costs about half a second; a module of twenty tests that only need the
default settings would spend most of its time on that. Modules override the ``fake_upstream`` fixture
with :func:`reset`, so tests keep the same fixture names whether they share the pair or not. Tests that
need other settings start their own gateway against the same fake.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from gateway.tools.fake_upstream import FakeUpstream, ServerThread
from tests.support.doubles import FixedRouter
from tests.support.gateway import running_gateway, upstream_settings

# A shared gateway must not carry one test's upstream failures into the next: no retries, no fallback,
# and a circuit breaker that never opens.
ISOLATED_RESILIENCE = {"retry": {"attempts": 1}, "fallback": {"failures": []}, "breaker": {"failure_threshold": 1_000_000}}


@dataclass
class SharedPair:
    fake: FakeUpstream
    gateway: ServerThread
    router: FixedRouter


@contextlib.contextmanager
def shared_pair(router: FixedRouter | None = None, **sections: Any) -> Iterator[SharedPair]:
    fake = FakeUpstream()
    chosen = router or FixedRouter(0.1)
    sections.setdefault("resilience", ISOLATED_RESILIENCE)
    with ServerThread(fake) as upstream:
        fake.url = upstream.url  # type: ignore[attr-defined]
        fake.port = upstream.port
        with running_gateway(upstream_settings(upstream.url, **sections), router=chosen) as server:
            yield SharedPair(fake, server, chosen)


def reset(pair: SharedPair) -> FakeUpstream:
    """Forget the previous test: its script, what the fake received and what the router saw."""
    pair.fake.script.clear()
    pair.fake.received.clear()
    pair.router.seen.clear()
    return pair.fake
