"""``POST /v1/embeddings`` and ``/v1/completions``: forwarded to the tier configured for them, not routed."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Collection
from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import Response

from gateway.accounting import RequestOutcome
from gateway.admission.guard import principal_of
from gateway.backends.base import Backend
from gateway.backends.forwarding import Forwarding
from gateway.backends.resilience import prime
from gateway.errors import GatewayError, InvalidRequestError, ModelNotFoundError
from gateway.http.api import JSONCall, cost_headers, decision_headers, json_endpoint, stream_events
from gateway.http.json_response import json_response
from gateway.http.sse import SSEResponse
from gateway.settings import OpenAIBackend
from gateway.state import GatewayState
from routers.base import RouteDecision, Tier

Kind = Literal["embeddings", "completions"]


class ForwardedEndpoint:
    """One endpoint served by one tier's upstream: the body goes as sent (a client naming that tier's
    model gets its upstream name), with auth, limits, retries, accounting and metrics like chat."""

    def __init__(self, state: GatewayState, kind: Kind) -> None:
        self.state = state
        self.kind = kind
        self.path = "/" + kind
        self.tier: Tier | None = next(
            (tier for tier, cfg in state.settings.tiers.items()
             if isinstance(cfg, OpenAIBackend) and (cfg.embeddings if kind == "embeddings" else cfg.completions)
             and tier in state.backends), None)

    def _upstream_model(self, model: str) -> str | None:
        """The name sent upstream: a configured tier model's upstream name, else what the client sent."""
        for cfg in self.state.settings.tiers.values():
            if isinstance(cfg, OpenAIBackend) and cfg.model == model:
                return cfg.upstream_model or cfg.model
        return model

    async def handle(self, request: Request) -> Response:
        return await json_endpoint(request, self.respond)

    async def respond(self, call: JSONCall) -> Response:
        state, body, headers, outcome, rid = self.state, call.body, call.headers, call.outcome, call.rid
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise InvalidRequestError("'model' must be a non-empty string", param="model")
        outcome.requested_model = model
        stream = body.get("stream") is True
        outcome.stream = stream
        if self.tier is None:
            raise ModelNotFoundError(f"this gateway serves no {self.kind} (no tier sets "
                                     f"tiers.<tier>.{self.kind}: true)", param="model")
        principal = principal_of(call.request)
        await state.guard.admit(principal, body, outcome)
        decision = RouteDecision(self.tier, "explicit_model")
        upstream_model = self._upstream_model(model)
        if stream and self.kind == "completions":
            events = await self._open_stream(body, headers, outcome, decision, upstream_model, principal.tiers)
            return SSEResponse(events, decision_headers(decision, model, rid))

        async def forward(backend: Backend) -> dict[str, Any]:
            return await _forwarding(backend).post_json(self.path, body, headers, upstream_model)

        started = time.perf_counter()
        try:
            answer, _ = await state.service.resilience.run(body, decision, outcome, forward, principal.tiers)
        finally:
            outcome.upstream_seconds = time.perf_counter() - started
            outcome.model = model  # priced and counted under the model the client asked for
        outcome.set_usage(answer.get("usage"))
        out_headers = decision_headers(decision, model, rid)
        out_headers.update(cost_headers(state.accountant, outcome))
        return json_response(answer, headers=out_headers)

    async def _open_stream(self, body: dict[str, Any], headers: dict[str, str], outcome: RequestOutcome,
                           decision: RouteDecision, upstream_model: str | None,
                           tiers: Collection[Tier] | None) -> AsyncIterator[bytes]:
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        sent = {**body, "stream_options": {**(options if isinstance(options, dict) else {}), "include_usage": True}}

        async def call(backend: Backend) -> tuple[dict[str, Any], AsyncIterator[dict[str, Any]]]:
            return await prime(aiter(_forwarding(backend).post_stream(self.path, sent, headers, upstream_model)))

        try:
            first, chunks = await self.state.service.resilience.open_stream(body, decision, outcome, call, tiers)
        finally:
            outcome.model = str(body["model"])  # priced and counted under the model the client asked for
        outcome.ttft_seconds = time.perf_counter() - outcome.started
        return stream_events(self.state, outcome, first, chunks, include_usage)


def _forwarding(backend: Backend) -> Forwarding:
    if not isinstance(backend, Forwarding):
        raise GatewayError(f"backend {backend.name} cannot forward requests", status=500)
    return backend
