"""Which threshold routing applies: the configured one, else the checkpoint's recommendation, else 0.5."""

from __future__ import annotations

from typing import Any

from gateway.decisions import RouteDecider
from tests.support.doubles import FixedRouter
from tests.support.gateway import upstream_settings


class CalibratedRouter(FixedRouter):
    """A router whose trained checkpoint recommends a threshold."""

    @property
    def recommended_threshold(self) -> float | None:  # a property, as on routers.batcher.BatchingRouter
        return 0.16


def service(router: Any, **routing: Any) -> RouteDecider:
    return RouteDecider(upstream_settings("http://127.0.0.1:9", routing=routing), {}, router)


def test_checkpoint_threshold_applies_when_none_is_configured() -> None:
    assert service(CalibratedRouter()).base_threshold() == 0.16


def test_configured_threshold_wins_over_the_checkpoint() -> None:
    assert service(CalibratedRouter(), threshold=0.42).base_threshold() == 0.42


def test_routers_without_a_recommendation_use_one_half() -> None:
    assert service(FixedRouter()).base_threshold() == 0.5
