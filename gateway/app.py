"""The application factory: ``create_app(settings)``; the lifespan opens and closes everything it owns."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp

from gateway.accounting import Accountant, OutcomeSink
from gateway.admin import build_admin_api, install_sighup
from gateway.admission.guard import Guard, GuardMiddleware
from gateway.backends.base import Backend
from gateway.backends.factory import build_backend
from gateway.backends.requirements import check_backend_requirements
from gateway.backends.resilience import Resilience
from gateway.conversations.steering import Steering
from gateway.decisions import RouteDecider
from gateway.errors import GatewayError, InvalidRequestError
from gateway.http.api import ChatCompletions, build_api, chat_route
from gateway.http.fast_path import TiergateApp
from gateway.http.json_response import error_response
from gateway.http.openapi import install_openapi
from gateway.http.origin import HostCheckMiddleware, allowed_hosts
from gateway.http.surface import build_surface_api
from gateway.learning.feedback import feedback_api
from gateway.learning.loop import build_learning
from gateway.service import ChatService
from gateway.settings import Settings
from gateway.shared_state.wiring import SharedState
from gateway.state import GatewayState
from gateway.telemetry import log_context
from gateway.telemetry.observability import Observability
from routers.base import Router, Tier
from routers.threshold import share_controller_from

log = logging.getLogger("tiergate")


def default_router(settings: Settings) -> Router:
    from routers.registry import build_router

    routing = settings.routing
    return build_router(routing.router, seed=routing.seed, **routing.classifier.model_dump())


def _log_load_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("loading the router or a backend failed; /readyz stays 503", exc_info=task.exception())


def create_app(
    settings: Settings,
    *,
    router: Router | None = None,
    backends: dict[Tier, Backend] | None = None,
    sinks: list[OutcomeSink] | None = None,
) -> FastAPI:
    """Build the app. ``router``, ``backends`` and ``sinks`` can be injected (tests); else built from settings."""
    chosen_router = router or default_router(settings)
    if backends is None:
        check_backend_requirements(settings)  # a missing key or model directory stops the start, named
    chosen_backends = backends or {tier: build_backend(tier, cfg) for tier, cfg in settings.tiers.items()}
    shared = SharedState(settings)  # per-key limits, budgets, pins, share window: in memory or in Redis
    routing = settings.routing
    share = shared.share_controller() or share_controller_from(  # in Redis, else in-process, else None
        routing.target_large_share, routing.share_window, routing.threshold)
    decider = RouteDecider(settings, chosen_backends, chosen_router, share)
    steering = Steering(settings, decider, shared.pins)
    # A fallback must not hand a request to a tier that cannot serve it either.
    resilience = Resilience(settings, chosen_backends, fallback_check=steering.check_fallback)
    guard = Guard(settings, limiter=shared.limiter)
    # Sinks in order: injected ones, the guard (settles each key's token usage), then what observability adds
    # (prices, metrics, the request log), spend against budgets, the learning loop (it stores each cost).
    accountant = Accountant([*(sinks or []), guard])
    observability = Observability(settings, accountant, decider)
    accountant.sinks.append(shared)
    observability.metrics.registry.register(shared.metrics)
    learning = build_learning(settings, chosen_backends, observability.prices, observability.metrics.families)
    if learning is not None:
        accountant.sinks.append(learning)
    service = ChatService(settings, guard, steering, resilience, shared, learning)
    state = GatewayState(settings, chosen_backends, chosen_router, decider, steering, service, accountant, guard,
                         shared, learning)

    async def load() -> None:
        # One at a time, classifier first: torch models loaded concurrently in threads can corrupt each other.
        await chosen_router.start()
        for backend in chosen_backends.values():
            await backend.start()
        guard.loaded = True
        # Startup left hundreds of thousands of long-lived objects (torch, transformers, FastAPI): keep them out
        # of every later full collection, which otherwise stalls all requests for ~300 ms now and then.
        gc.freeze()
        log.info("tiergate ready: router=%s tiers=%s", chosen_router.name,
                 {tier: b.model for tier, b in chosen_backends.items()})

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loading: asyncio.Task[None] | None = None
        if settings.server.load_before_serving:
            await load()
        else:  # serve /healthz and a 503 /readyz while the models load
            loading = asyncio.create_task(load())
            loading.add_done_callback(_log_load_failure)
        observability.start()
        shared.start()
        if learning is not None:
            await learning.start()
        remove_sighup = install_sighup(state)
        try:
            yield
        finally:
            remove_sighup()
            # The server has stopped accepting and waited for open connections; refuse stragglers and
            # give in-flight streams what is left of the grace period before closing what they use.
            if loading is not None and not loading.done():
                loading.cancel()
                await asyncio.gather(loading, return_exceptions=True)
            await guard.drain(settings.server.shutdown_grace_s)
            if learning is not None:
                await learning.close()  # before the backends its shadow calls use
            observability.close()
            await shared.aclose()
            await chosen_router.aclose()
            await asyncio.gather(*(b.aclose() for b in chosen_backends.values()), return_exceptions=True)

    # The chat endpoint's own chain: the same guard and host check the full stack below gets.
    hosts = allowed_hosts(settings, guard.authenticator.enabled)
    chat: ASGIApp = GuardMiddleware(ChatCompletions(), guard, accountant)
    if hosts:
        chat = HostCheckMiddleware(chat, hosts)
    # FastAPI's own OpenTelemetry hooks are off: Prometheus metrics and request logs cover each request, and the
    # hooks cost a tracer lookup per request even with no tracer configured.
    app = TiergateApp(chat, title="Tiergate", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                      telemetry={"tracing": False, "metrics": False, "logs": False})
    app.state.gateway = state
    app.state.metrics_registry = observability.metrics.registry  # the worker supervisor exports it
    app.add_middleware(GuardMiddleware, guard=guard, accountant=accountant)
    if hosts:  # outside the guard: a forged Host is refused before authentication
        app.add_middleware(HostCheckMiddleware, allowed=hosts)
    log_context.install(log_context.upstream_secrets(settings))  # request ids on log lines; upstream keys redacted
    app.router.routes.insert(0, chat_route())  # TiergateApp serves its POSTs; here it answers other methods 405
    app.include_router(build_api())
    app.include_router(observability.api)
    app.include_router(shared.api())
    app.include_router(feedback_api())
    app.include_router(build_admin_api())
    app.include_router(build_surface_api(state))  # last: it answers unknown /v1 paths
    install_error_handlers(app)
    install_openapi(app)
    return app


def install_error_handlers(app: FastAPI) -> None:
    """Every error leaves in OpenAI's shape, including the framework's own 404/405 and crashes."""

    async def gateway_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, GatewayError)
        return error_response(exc)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = "not_found" if exc.status_code == 404 else None
        error = GatewayError(str(exc.detail), status=exc.status_code, code=code)
        error.type = "invalid_request_error"
        return error_response(error, dict(exc.headers or {}))

    async def validation_error(request: Request, exc: Exception) -> Response:
        return error_response(InvalidRequestError(str(exc)))

    async def crash(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(GatewayError("internal error in the gateway"))

    app.add_exception_handler(GatewayError, gateway_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, crash)
