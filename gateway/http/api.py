"""Thin HTTP endpoints: read and validate, hand to the service, answer JSON or SSE, record the outcome once."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from gateway.accounting import Accountant, RequestOutcome
from gateway.admission.guard import principal_of
from gateway.backends.base import ChatObject, close_iterator
from gateway.errors import ClientDisconnectedError, GatewayError, PayloadTooLargeError, UpstreamError
from gateway.http.json_response import error_response, json_response
from gateway.http.origin import require_json
from gateway.http.sse import DONE, SSEResponse, error_events, event
from gateway.pricing import format_usd
from gateway.protocol import parse_body
from gateway.service import ChatStream
from gateway.state import GatewayState
from gateway.telemetry.log_context import REQUEST_ID
from routers.base import RouteDecision

COST_HEADER = "x-tiergate-cost-usd"
log = logging.getLogger("tiergate")


def cost_headers(accountant: Accountant, outcome: RequestOutcome) -> dict[str, str]:
    """Headers that need the finished outcome of a JSON answer: its cost, priced from the real usage."""
    accountant.price(outcome)
    return {COST_HEADER: format_usd(outcome.cost_usd)}


ROUTER_HEADER = "x-tiergate-router"  # the classifier checkpoint that scored the request


def decision_headers(decision: RouteDecision, model: str, rid: str) -> dict[str, str]:
    return {
        "x-tiergate-tier": decision.tier,
        "x-tiergate-model": model,
        "x-tiergate-score": "" if decision.score is None else f"{decision.score:.4f}",
        "x-tiergate-threshold": "" if decision.threshold is None else f"{decision.threshold:.4f}",
        "x-tiergate-reason": decision.reason,
        "x-request-id": rid,
    } | ({ROUTER_HEADER: decision.router} if decision.router else {})


async def read_body(request: Request, limit: int, declared: str | None = None) -> bytes:
    """The request's body, at most ``limit`` bytes (else a 413); ``declared``: its content-length header where
    the caller has read the headers already (Starlette's ``request.headers`` builds a new mapping)."""
    if declared is None:
        declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"request body exceeds {limit} bytes")
    chunks = []
    size = 0
    while True:  # the ASGI messages themselves: Starlette's request.stream() adds a generator per request
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnectedError("the client disconnected while sending its request")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"request body exceeds {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def outcome_from_error(outcome: RequestOutcome, error: GatewayError) -> None:
    outcome.status = error.status
    if isinstance(error, UpstreamError):
        outcome.outcome = "timeout" if error.status == 504 else "upstream_error"
        outcome.error_kind = error.kind
    elif error.status == 429:
        outcome.outcome = "rejected"
    elif error.status == 499:
        outcome.outcome = "client_disconnected"
    elif error.status == 500:
        outcome.outcome = "internal"
    else:
        outcome.outcome = "client_error"


def internal_error(exc: Exception, rid: str) -> GatewayError:
    """One error line with the request id; the traceback only at debug level."""
    log.error("request %s failed inside the gateway: %s: %s", rid, type(exc).__name__, exc)
    log.debug("traceback of request %s", rid, exc_info=exc)
    return GatewayError("internal error in the gateway", code="internal_error")


async def one_outcome(state: GatewayState, outcome: RequestOutcome, rid: str,
                      respond: Callable[[], Awaitable[Response]]) -> Response:
    """Runs a handler so that every exception ends in exactly one outcome: a gateway error is its OpenAI-shaped
    status, a client gone is a 499, anything else a 500 ``internal``. The outcome is finished here, unless the
    answer is a stream (the stream finishes it when it ends)."""
    response: Response | None = None
    try:
        response = await respond()
        return response
    except GatewayError as error:
        outcome_from_error(outcome, error)
        return error_response(error, state.error_headers(outcome, error, rid))
    except asyncio.CancelledError:
        outcome.outcome, outcome.status = "client_disconnected", 499
        raise
    except Exception as exc:  # a bug: still one outcome, one log line, an OpenAI-shaped 500
        crash = internal_error(exc, rid)
        outcome_from_error(outcome, crash)
        return error_response(crash, state.error_headers(outcome, crash, rid))
    finally:
        if not isinstance(response, SSEResponse):
            state.accountant.finish(outcome)


class ChatCompletions:
    """``POST /v1/chat/completions`` as a bare ASGI endpoint: Starlette wraps plain functions in a per-request
    exception handler, which would repeat what :func:`one_outcome` does."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await json_endpoint(Request(scope, receive), answer_chat)
        await response(scope, receive, send)


@dataclass(frozen=True, slots=True)
class JSONCall:
    """One JSON POST, read: its parsed body, lower-case headers, request id, and the outcome it will end in."""

    request: Request
    state: GatewayState
    body: dict[str, Any]
    headers: dict[str, str]
    rid: str
    outcome: RequestOutcome


async def json_endpoint(request: Request, respond: Callable[[JSONCall], Awaitable[Response]]) -> Response:
    """The frame of every JSON POST endpoint: the outcome opened (in flight until finished), the content type
    checked, the body read under its size cap and parsed, then ``respond`` run under :func:`one_outcome`."""
    state: GatewayState = request.app.state.gateway
    # ASGI header names are lower-case already; a repeated header keeps its last value.
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in request.scope["headers"]}
    rid = REQUEST_ID.get()  # the guard's (GuardMiddleware wraps every endpoint): the logs' id too
    outcome = state.accountant.open(rid)

    async def run() -> Response:
        require_json(headers.get("content-type"))
        body = parse_body(await read_body(request, state.settings.server.max_body_bytes,
                                          headers.get("content-length")))
        return await respond(JSONCall(request, state, body, headers, rid, outcome))

    return await one_outcome(state, outcome, rid, run)


async def answer_chat(call: JSONCall) -> Response:
    """Hand the body to the chat service, encode its JSON or SSE."""
    state, outcome = call.state, call.outcome
    result = await state.service.handle(call.body, call.headers, principal_of(call.request), outcome)
    assert outcome.decision is not None  # set by the upstream call
    out_headers = decision_headers(outcome.decision, outcome.model or "", call.rid)
    if isinstance(result, ChatStream):
        return SSEResponse(stream_events(state, outcome, result.first, result.chunks, result.include_usage),
                           out_headers)
    out_headers.update(cost_headers(state.accountant, outcome))
    return json_response(result.body, headers=out_headers)


async def list_models(request: Request) -> Response:
    state: GatewayState = request.app.state.gateway
    created = int(state.started_at)
    data = [{"id": name, "object": "model", "created": created, "owned_by": "tiergate"}
            for name in state.decider.models.names()]
    return json_response({"object": "list", "data": data})


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    state: GatewayState = request.app.state.gateway
    checks = state.readiness()
    ready = all(checks.values())
    return json_response({"status": "ready" if ready else "loading", "checks": checks}, 200 if ready else 503)


def chat_route() -> Route:
    """The chat path in the app's routes, as a plain Starlette route (FastAPI's parameter machinery would cost
    about a quarter of the gateway's CPU per request). ``TiergateApp`` sends its POSTs down the short chain
    before routing; through the full stack, the route answers other methods with a 405. Its schema is in
    gateway.http.openapi."""
    return Route("/v1/chat/completions", ChatCompletions(), methods=["POST"])


def build_api() -> APIRouter:
    api = APIRouter()
    api.add_api_route("/v1/models", list_models, methods=["GET"])
    api.add_api_route("/healthz", healthz, methods=["GET"])
    api.add_api_route("/readyz", readyz, methods=["GET"])
    return api


async def stream_events(state: GatewayState, outcome: RequestOutcome, first: ChatObject,
                        chunks: AsyncIterator[ChatObject], include_usage: bool) -> AsyncIterator[bytes]:
    """Upstream chunks -> SSE bytes; usage is recorded, and the usage-only chunk hidden unless asked for."""
    try:
        chunk: ChatObject | None = first
        while chunk is not None:
            if chunk.get("usage"):
                outcome.set_usage(chunk["usage"])
            elif chunk.get("choices"):
                await state.steering.issued(chunk, outcome)
            outcome.note_chunk(chunk)
            if include_usage or chunk.get("choices") or not chunk.get("usage"):
                if chunk:
                    yield event(chunk)
            chunk = await anext(chunks, None)
        yield DONE
    except GatewayError as error:
        outcome_from_error(outcome, error)
        yield error_events(error)
    except (asyncio.CancelledError, GeneratorExit):
        outcome.outcome, outcome.status = "client_disconnected", 499
        raise
    except Exception as exc:  # a bug here must not cut the stream off: the 200 is out, so it too travels in-band
        crash = internal_error(exc, outcome.request_id)
        outcome_from_error(outcome, crash)
        yield error_events(crash)
    finally:
        outcome.upstream_seconds = time.perf_counter() - outcome.started - outcome.routing_seconds
        await close_iterator(chunks)
        state.accountant.finish(outcome)

