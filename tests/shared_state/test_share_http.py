"""Two gateways on one Redis with routing.target_large_share: both steer on one shared window."""

from __future__ import annotations

import time

import httpx

from gateway.shared_state.share import SharedShareController
from gateway.tools.fake_upstream import FakeUpstream
from tests.support.doubles import FixedRouter
from tests.support.gateway import running_gateway, upstream_settings
from tests.support.prom import sample
from tests.support.redis_server import RedisServer

BODY = {"model": "tiergate-auto", "messages": [{"role": "user", "content": "hello"}]}


def test_replicas_report_one_realised_share_from_the_shared_window(
        fake_upstream: FakeUpstream, redis_server: RedisServer) -> None:
    settings = upstream_settings(fake_upstream.url,  # type: ignore[attr-defined]
                                 routing={"target_large_share": 0.5, "share_window": 100},
                                 state={"backend": "redis", "redis_url": redis_server.url, "share_sync_s": 0.1})
    with running_gateway(settings, router=FixedRouter(0.9)) as high, \
            running_gateway(settings, router=FixedRouter(0.1)) as low:
        for gateway in (high, low):
            assert isinstance(gateway.app.state.gateway.decider.share_controller,  # type: ignore[attr-defined]
                              SharedShareController)
        tiers = [httpx.post(high.url + "/v1/chat/completions", json=BODY).headers["x-tiergate-tier"]
                 for _ in range(20)]
        time.sleep(0.4)
        tiers += [httpx.post(low.url + "/v1/chat/completions", json=BODY).headers["x-tiergate-tier"]
                  for _ in range(20)]
        time.sleep(0.4)
        shares = [sample(httpx.get(g.url + "/metrics").text, "tiergate_large_share_realised") for g in (high, low)]
    # Every routed request of both replicas is in one window: the share both report is the share of all 40.
    assert shares[0] == shares[1] == tiers.count("large") / 40
