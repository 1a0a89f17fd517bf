"""Operator endpoints: ``POST /admin/router`` (admin keys only) and SIGHUP promote a classifier checkpoint live."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from gateway.admission.auth import require_admin
from gateway.errors import GatewayError, InvalidRequestError
from gateway.http.json_response import json_response
from gateway.state import GatewayState
from routers.errors import ClassifierError
from routers.swap import Promotion, SwappableRouter

log = logging.getLogger("tiergate.admin")


async def promote(state: GatewayState, path: str) -> Promotion:
    """Load ``path`` beside the serving checkpoint and swap it in, keeping the same large share of traffic."""
    router = state.decider.router
    if not isinstance(router, SwappableRouter):
        raise InvalidRequestError(f"the router is {router.name!r}; only the classifier can be promoted")
    try:
        result = await router.promote(path, state.decider.base_threshold())
    except ClassifierError as exc:
        log.warning("promotion of %s refused, still serving %s: %s", path, router.checkpoint, exc)
        raise GatewayError(f"checkpoint refused, still serving {router.checkpoint}: {exc}", status=422,
                           code="checkpoint_refused") from exc
    log.info("router promoted: %s -> %s (threshold %s for large share %s over %d recent requests)",
             result.old, result.new, result.threshold, result.large_share, result.recent_texts)
    return result


def build_admin_api() -> APIRouter:
    api = APIRouter()

    @api.post("/admin/router", include_in_schema=False)
    async def promote_router(request: Request) -> Response:
        state: GatewayState = request.app.state.gateway
        assert state.guard is not None
        require_admin(state.guard.authenticator, request.headers.get("authorization"),
                      request.url.query)
        try:
            body: Any = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("path"), str) or not body["path"]:
            raise InvalidRequestError('send {"path": "<checkpoint directory or builtin>"}', param="path")
        return json_response({"promoted": asdict(await promote(state, body["path"]))})

    return api


def install_sighup(state: GatewayState) -> Callable[[], None]:
    """On SIGHUP, reload the serving checkpoint's directory (replace its files, then signal); returns the remover."""
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[Promotion]] = set()

    def reload() -> None:
        router = state.decider.router
        if isinstance(router, SwappableRouter):
            task = loop.create_task(promote(state, router.path))
            tasks.add(task)
            task.add_done_callback(_finished(tasks))

    try:
        loop.add_signal_handler(signal.SIGHUP, reload)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no SIGHUP here
        return lambda: None

    def remove() -> None:
        loop.remove_signal_handler(signal.SIGHUP)

    return remove


def _finished(tasks: set[asyncio.Task[Promotion]]) -> Callable[[asyncio.Task[Promotion]], None]:
    def done(task: asyncio.Task[Promotion]) -> None:
        tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("SIGHUP reload failed: %s", task.exception())

    return done
