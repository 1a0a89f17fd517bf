"""The gate before routing: request ids, draining, authentication (ASGI middleware) and per-key admission."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.accounting import Accountant, RequestOutcome
from gateway.admission.auth import ANONYMOUS, Authenticator, Principal
from gateway.admission.limits import (
    MemoryRateLimiter,
    RateCharge,
    RateLimiter,
    Rule,
    check_request,
    estimate_tokens,
    rate_limited,
)
from gateway.errors import AuthenticationError, GatewayError
from gateway.http.json_response import error_response
from gateway.settings import Settings
from gateway.telemetry.log_context import REQUEST_ID, request_id

log = logging.getLogger("tiergate.guard")


class Guard:
    """Owns the authenticator, the rate limiter and the in-flight count; also an accounting sink that settles
    each request's real token usage against its key's budget."""

    def __init__(self, settings: Settings, limiter: RateLimiter | None = None, base_dir: Path | None = None) -> None:
        self.authenticator = Authenticator.from_settings(settings.auth, base_dir)
        if not self.authenticator.enabled and settings.server.host not in ("127.0.0.1", "localhost", "::1"):
            log.warning("no gateway API keys configured (auth.keys): any caller that reaches %s can spend on "
                        "the upstream accounts", settings.server.host)
        self.limits = settings.limits
        self.default_rule = Rule(self.limits.requests_per_minute, self.limits.tokens_per_minute)
        self.limiter: RateLimiter = limiter or MemoryRateLimiter()
        self.loaded = False  # the router and every backend have started
        self.draining = False
        self.inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def admit(self, principal: Principal, body: dict[str, Any], outcome: RequestOutcome) -> None:
        """Once per request, before any routing work: the models are loaded, the caller's key may use the
        model, the request's shape is within limits (a 400), and the key's rate limits allow it (a 429)."""
        if not self.loaded:
            raise GatewayError("the gateway is still loading its models; retry shortly", status=503,
                               code="model_loading", headers={"retry-after": "5"})
        outcome.principal = principal
        principal.check_model(str(body.get("model")))
        chars = check_request(body, self.limits)
        estimate = outcome.estimated_prompt_tokens = estimate_tokens(chars)
        rule = self.default_rule
        if principal.requests_per_minute or principal.tokens_per_minute:  # the key's own limits
            rule = Rule(principal.requests_per_minute or rule.requests_per_minute,
                        principal.tokens_per_minute or rule.tokens_per_minute)
        if rule.unlimited():
            return
        wait = await self.limiter.acquire(principal.name, rule, estimate)
        if wait > 0:
            raise rate_limited("requests or tokens per minute", wait)
        outcome.rate_charge = RateCharge(principal.name, rule, estimate)

    def record(self, outcome: RequestOutcome) -> None:
        """An accounting sink: settles the key's real token usage against what admission estimated."""
        charge = outcome.rate_charge
        if charge is not None:
            self.limiter.settle(charge.key, charge.rule,
                                outcome.prompt_tokens + outcome.completion_tokens - charge.estimate)

    def enter(self) -> None:
        self.inflight += 1
        self._idle.clear()

    def leave(self) -> None:
        self.inflight -= 1
        if self.inflight <= 0:
            self._idle.set()

    async def drain(self, timeout: float) -> bool:
        """Refuse new requests; wait up to ``timeout`` for in-flight ones. True when none is left."""
        self.draining = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            log.warning("shutdown: %d request(s) still in flight after %.1f s", self.inflight, timeout)
            return False
        return True


def principal_of(request: Request) -> Principal:
    """The caller the middleware authenticated (anonymous where no keys are configured or outside ``/v1/``)."""
    principal: Principal = request.scope.get("state", {}).get("principal", ANONYMOUS)
    return principal


class GuardMiddleware:
    """Pure ASGI (streams and disconnects pass straight through): sets the request id for logs, refuses
    ``/v1/`` calls while draining or without a valid key, and counts in-flight calls for shutdown."""

    def __init__(self, app: ASGIApp, guard: Guard, accountant: Accountant | None = None) -> None:
        self.app = app
        self.guard = guard
        self.accountant = accountant

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        authorization: str | None = None
        given = ""
        for key, value in scope["headers"]:  # ASGI header names are lower-case
            if key == b"authorization":
                authorization = value.decode("latin-1")
            elif key == b"x-request-id":
                given = value.decode("latin-1")
        rid = request_id(given)
        token = REQUEST_ID.set(rid)  # the request's id from here on: the logs' and the endpoint's
        try:
            if not scope["path"].startswith("/v1/"):
                await self.app(scope, receive, send)
                return
            guard = self.guard
            if guard.draining:
                error = GatewayError("the gateway is shutting down", status=503, code="shutting_down")
                await error_response(error, {"connection": "close", "retry-after": "1", "x-request-id": rid})(
                    scope, receive, send)
                return
            try:
                principal = guard.authenticator.authenticate(authorization,
                                                             scope.get("query_string", b"").decode("latin-1"))
            except AuthenticationError as error:
                log.warning("refused %s %s: %s", scope["method"], scope["path"], error.message)
                self._account(scope, rid, error)
                await error_response(error, {"x-request-id": rid})(scope, receive, send)
                return
            scope.setdefault("state", {})["principal"] = principal
            guard.enter()
            try:
                await self.app(scope, receive, send)
            finally:
                guard.leave()
        finally:
            REQUEST_ID.reset(token)

    def _account(self, scope: Scope, rid: str, error: GatewayError) -> None:
        """A refused chat request is still one finished request for accounting and metrics."""
        if self.accountant is None or not scope["path"].endswith("/chat/completions"):
            return
        self.accountant.finish(RequestOutcome(request_id=rid, status=error.status, outcome="client_error"))
