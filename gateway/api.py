"""Thin HTTP endpoints: read and validate, hand to the service, answer JSON or SSE, record the outcome once."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from gateway.accounting import RequestOutcome
from gateway.backends.base import ChatObject
from gateway.errors import ClientDisconnectedError, GatewayError, PayloadTooLargeError, UpstreamError
from gateway.http.origin import require_json
from gateway.log_context import request_id
from gateway.protocol import parse_body, validate_chat
from gateway.resilience import close_iterator
from gateway.sse import DONE, SSEResponse, error_events, event
from gateway.state import GatewayState
from routers.base import RouteDecision
from routers.features import routing_text

JSON = "application/json"
log = logging.getLogger("tiergate")


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload), status_code=status, headers=headers, media_type=JSON)


def error_response(error: GatewayError, headers: dict[str, str] | None = None) -> Response:
    return Response(error.json(), status_code=error.status, headers={**error.headers, **(headers or {})},
                    media_type=JSON)


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


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"request body exceeds {limit} bytes")
    chunks = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLargeError(f"request body exceeds {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise ClientDisconnectedError("the client disconnected while sending its request") from None
    return b"".join(chunks)


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


def build_api() -> APIRouter:
    api = APIRouter()

    async def chat_completions(request: Request) -> Response:
        state: GatewayState = request.app.state.gateway
        headers = {k.lower(): v for k, v in request.headers.items()}
        rid = request_id(headers)
        outcome = state.accountant.open(rid)  # counted in flight until finished

        async def respond() -> Response:
            require_json(headers.get("content-type"))
            body = parse_body(await read_body(request, state.settings.server.max_body_bytes))
            if not state.loaded:
                raise GatewayError("the gateway is still loading its models; retry shortly", status=503,
                                   code="model_loading", headers={"retry-after": "5"})
            # Cheap checks (size, message count, depth, the key's rate limit) before the full schema validation.
            await state.admit(request, body, outcome)
            chat = validate_chat(body)
            outcome.stream = bool(chat.stream)
            outcome.requested_model = chat.model
            if state.settings.request_log.include_prompts:  # the text the router scored, for re-training
                outcome.prompt_text = routing_text(
                    body["messages"], include_system=state.settings.routing.include_system_prompt)
            decision = await state.check_budget(body, outcome, await state.steering.decide(body, headers, outcome))
            capture = state.learning.capture(body, headers, outcome, decision) if state.learning else None
            if chat.stream:
                first, chunks = await state.service.open_stream(body, headers, outcome, decision)
                if capture is not None:  # the answer's text, for a shadow pair
                    chunks = capture.follow(first, chunks)
                include_usage = bool(chat.stream_options and chat.stream_options.include_usage)
                events = stream_events(state, outcome, first, chunks, include_usage)
                return SSEResponse(events, decision_headers(outcome.decision or decision, outcome.model or "", rid))
            answer = await state.service.complete(body, headers, outcome, decision)
            await state.steering.issued(answer, outcome)  # a tool loop's next turn comes back to this tier
            if capture is not None:
                capture.answer(answer)
            out_headers = decision_headers(outcome.decision or decision, outcome.model or "", rid)
            out_headers.update(state.answer_headers(outcome))
            return json_response(answer, headers=out_headers)

        return await one_outcome(state, outcome, rid, respond)

    # A plain Starlette route: FastAPI's parameter and dependency machinery costs about a quarter of the
    # gateway's CPU per request, and this endpoint reads its body itself. Its schema is in gateway.openapi.
    api.add_route("/v1/chat/completions", chat_completions, methods=["POST"])

    @api.get("/v1/models")
    async def list_models(request: Request) -> Response:
        state: GatewayState = request.app.state.gateway
        created = int(state.started_at)
        data = [{"id": name, "object": "model", "created": created, "owned_by": "tiergate"}
                for name in state.service.models.names()]
        return json_response({"object": "list", "data": data})

    @api.get("/healthz")
    async def healthz() -> Response:
        return json_response({"status": "ok"})

    @api.get("/readyz")
    async def readyz(request: Request) -> Response:
        state: GatewayState = request.app.state.gateway
        checks = state.readiness()
        ready = all(checks.values())
        return json_response({"status": "ready" if ready else "loading", "checks": checks}, 200 if ready else 503)

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

