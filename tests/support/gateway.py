"""Fixtures' building blocks: settings pointing at a fake upstream, and a gateway running on loopback."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from gateway.app import create_app
from gateway.http.connection_limits import server_options
from gateway.settings import Settings
from gateway.tools.fake_upstream import ServerThread
from tests.support.doubles import FixedRouter

SMALL_MODEL = "gpt-4o-mini"
LARGE_MODEL = "gpt-4o"


def upstream_settings(upstream_url: str, **sections: Any) -> Settings:
    """Both tiers on the fake upstream; ``sections`` replace top-level settings sections (dicts)."""
    tiers: dict[str, Any] = {
        "small": {"kind": "openai", "model": SMALL_MODEL, "base_url": upstream_url + "/v1",
                  "timeout": {"connect": 2, "read": 2, "write": 2, "pool": 2}},
        "large": {"kind": "openai", "model": LARGE_MODEL, "base_url": upstream_url + "/v1",
                  "timeout": {"connect": 2, "read": 2, "write": 2, "pool": 2}},
    }
    for tier, extra in sections.pop("tier_overrides", {}).items():
        tiers[tier].update(extra)
    # Tests talk to the gateway as soon as it accepts connections: load (instant doubles) before serving.
    server = {"load_before_serving": True, **sections.pop("server", {})}
    return Settings(tiers=tiers, server=server, **sections)


@contextlib.contextmanager
def running_gateway(settings: Settings, router: Any = None, **app_kwargs: Any) -> Iterator[ServerThread]:
    """The gateway app on a loopback port, in a thread; ``.url`` is its base URL, ``.app`` the FastAPI app."""
    app = create_app(settings, router=router if router is not None else FixedRouter(0.1), **app_kwargs)
    with ServerThread(app, **server_options(settings.server)) as server:
        server.app = app  # type: ignore[attr-defined]
        yield server
