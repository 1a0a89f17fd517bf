"""``POST /v1/responses`` and ``GET /v1/responses/{id}``: routed like chat, forwarded or translated per tier."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Collection
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.responses import Response

from gateway.accounting import RequestOutcome
from gateway.admission.guard import principal_of
from gateway.backends.base import Backend, close_iterator
from gateway.backends.forwarding import Forwarding
from gateway.backends.resilience import prime
from gateway.errors import GatewayError, InvalidRequestError
from gateway.http.api import (
    JSONCall,
    cost_headers,
    decision_headers,
    internal_error,
    json_endpoint,
    outcome_from_error,
)
from gateway.http.json_response import json_response
from gateway.http.sse import SSEResponse
from gateway.responses.events import ChatToEvents, encode
from gateway.responses.store import ResponseStore, StoredResponse
from gateway.responses.translate import (
    chat_usage,
    from_chat,
    input_messages,
    new_id,
    output_messages,
    skeleton,
    to_chat,
)
from gateway.settings import OpenAIBackend
from gateway.state import GatewayState
from routers.base import TIERS, RouteDecision, Tier
from routers.features import routing_text

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {
    "description": "No such stored response",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}}
PATH = "/responses"
FINAL = ("response.completed", "response.incomplete", "response.failed")
Mode = Literal["forwarded", "translated"]


class ResponsesRequest(BaseModel):
    """The fields the gateway itself reads; everything else passes through (or is translated) as sent."""

    model_config = ConfigDict(extra="allow", strict=True)
    model: str = Field(min_length=1)
    input: str | list[dict[str, Any]] = []
    instructions: str | list[dict[str, Any]] | None = None
    stream: bool | None = None
    store: bool | None = None
    previous_response_id: str | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    tools: list[dict[str, Any]] | None = None
    text: dict[str, Any] | None = None


def validate(body: dict[str, Any]) -> ResponsesRequest:
    try:
        return ResponsesRequest.model_validate(body)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        param = ".".join(str(part) for part in first["loc"] if part not in ("str", "list[dict[str,any]]"))
        raise InvalidRequestError(f"invalid value for '{param}': {first['msg']}", param=param) from None


def chat_to_items(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chat messages -> Responses input items (a translated conversation continued on a Responses upstream)."""
    items: list[dict[str, Any]] = []
    for message in messages:
        if message.get("role") == "tool":
            items.append({"type": "function_call_output", "call_id": message.get("tool_call_id"),
                          "output": message.get("content") or ""})
            continue
        if message.get("content"):
            items.append({"type": "message", "role": message.get("role"), "content": message["content"]})
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            items.append({"type": "function_call", "call_id": call.get("id"), "name": function.get("name"),
                          "arguments": function.get("arguments")})
    return items


class ResponsesEndpoint:
    """One app's Responses API: its response store, and the per-tier choice of forwarding or translating."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state
        settings = state.settings.responses
        self.store = ResponseStore(settings.store_ttl_s, settings.max_stored)
        self.tier_of = {id(backend): tier for tier, backend in state.backends.items()}

    def speaks_responses(self, backend: Backend) -> bool:
        cfg = self.state.settings.tiers.get(self.tier_of.get(id(backend), "small"))
        return isinstance(cfg, OpenAIBackend) and cfg.responses_api and isinstance(backend, Forwarding)

    async def create(self, request: Request) -> Response:
        return await json_endpoint(request, self.respond)

    async def respond(self, json_call: JSONCall) -> Response:
        state, body, headers, outcome = self.state, json_call.body, json_call.headers, json_call.outcome
        rid = json_call.rid
        wire = validate(body)
        outcome.stream = bool(wire.stream)
        outcome.requested_model = wire.model
        if wire.store and not self.store.enabled:
            raise InvalidRequestError("this gateway keeps no responses (responses.store_ttl_s is 0); send "
                                      "store: false", param="store", code="store_disabled")
        previous = None
        if wire.previous_response_id is not None:
            if not self.store.enabled:
                raise InvalidRequestError("previous_response_id needs stored responses, and this gateway "
                                          "keeps none (responses.store_ttl_s is 0); send the whole "
                                          "conversation as input", param="previous_response_id")
            previous = self.store.get(wire.previous_response_id)
        history = previous.messages if previous is not None and previous.messages is not None else []
        scored = to_chat(body, history, strict=False)
        if state.settings.request_log.include_prompts:
            outcome.prompt_text = routing_text(scored["messages"],
                                               include_system=state.settings.routing.include_system_prompt)
        principal = principal_of(json_call.request)
        await state.guard.admit(principal, scored, outcome)
        pinned = next((tier for tier in TIERS if previous is not None and tier == previous.tier), None)
        decision = await state.service.route(scored, headers, outcome, pinned,
                                             forced=previous is not None and previous.messages is None)
        call = Call(self, body, wire, previous, history, headers)
        if wire.stream:
            events = await self.open_stream(call, scored, outcome, decision, principal.tiers)
            return SSEResponse(events, decision_headers(outcome.decision or decision, outcome.model or "", rid))
        started = time.perf_counter()
        try:
            answer, _ = await state.service.resilience.run(scored, decision, outcome, call.complete,
                                                           principal.tiers)
        finally:
            outcome.upstream_seconds = time.perf_counter() - started
        await self.finished(call, answer, outcome)
        out_headers = decision_headers(outcome.decision or decision, outcome.model or "", rid)
        out_headers.update(cost_headers(state.accountant, outcome))
        return json_response(answer, headers=out_headers)

    async def finished(self, call: Call, response: dict[str, Any], outcome: RequestOutcome) -> None:
        """Account the usage, pin the tool calls to the tier that issued them, keep the response."""
        outcome.set_usage(chat_usage(response.get("usage")))
        tier = outcome.tier or "small"
        for item in response.get("output") or []:
            if isinstance(item, dict) and item.get("type") == "function_call" and item.get("call_id"):
                await self.state.steering.pin_tool_call(str(item["call_id"]), tier)
        response_id = response.get("id")
        if not isinstance(response_id, str) or response.get("status") == "failed":
            return
        if call.mode == "forwarded":  # the upstream keeps the conversation: remember only where it lives
            self.store.put(response_id, StoredResponse(tier, None, None))
        elif response.get("store"):
            messages = call.conversation + output_messages(response.get("output") or [])
            self.store.put(response_id, StoredResponse(tier, messages, response))

    async def open_stream(self, call: Call, scored: dict[str, Any], outcome: RequestOutcome,
                          decision: RouteDecision, tiers: Collection[Tier] | None) -> AsyncIterator[bytes]:
        """Open the upstream stream and await its first event (retries and fallback before the 200)."""
        started = time.perf_counter()
        try:
            first, chunks = await self.state.service.resilience.open_stream(scored, decision, outcome, call.stream,
                                                                            tiers)
        except BaseException:
            outcome.upstream_seconds = time.perf_counter() - started
            raise
        outcome.ttft_seconds = time.perf_counter() - outcome.started
        return self.stream_events(call, first, chunks, outcome)

    async def stream_events(self, call: Call, first: dict[str, Any], chunks: AsyncIterator[dict[str, Any]],
                            outcome: RequestOutcome) -> AsyncIterator[bytes]:
        translator: ChatToEvents | None = None
        if call.mode == "translated":
            model = str(first.get("model") or outcome.model or call.wire.model)
            translator = ChatToEvents(skeleton(call.body, call.response_id, model, call.stored))
        try:
            if translator is not None:
                for event in translator.start():
                    yield encode(event)
            item: dict[str, Any] | None = first
            while item is not None:
                if translator is None:
                    if item.get("type") in FINAL and isinstance(item.get("response"), dict):
                        await self.finished(call, item["response"], outcome)
                    yield encode(item)
                else:
                    for event in translator.feed(item):
                        yield encode(event)
                item = await anext(chunks, None)
            if translator is not None:
                for event in translator.end():
                    yield encode(event)
                await self.finished(call, translator.response, outcome)
        except GatewayError as error:
            outcome_from_error(outcome, error)
            if translator is None:
                translator = ChatToEvents(skeleton(call.body, call.response_id, outcome.model or "", False))
            for event in translator.fail(error):
                yield encode(event)
        except (asyncio.CancelledError, GeneratorExit):
            outcome.outcome, outcome.status = "client_disconnected", 499
            raise
        except Exception as exc:  # the 200 is out: a bug here still ends the stream with an error event
            crash = internal_error(exc, outcome.request_id)
            outcome_from_error(outcome, crash)
            for event in ChatToEvents(skeleton(call.body, call.response_id, "", False)).fail(crash):
                yield encode(event)
        finally:
            outcome.upstream_seconds = time.perf_counter() - outcome.started - outcome.routing_seconds
            await close_iterator(chunks)
            self.state.accountant.finish(outcome)

    def get(self, response_id: str) -> Response:
        stored = self.store.get(response_id)
        if stored is None or stored.response is None:
            raise GatewayError(f"No response with id '{response_id}' found (responses are kept "
                               f"{self.store.ttl_s:g} s, and only those sent with store)", status=404,
                               code="not_found", param="response_id")
        return json_response(stored.response)


class Call:
    """One request's backend call, for whichever tier resilience picks: forwarded or translated."""

    def __init__(self, endpoint: ResponsesEndpoint, body: dict[str, Any], wire: ResponsesRequest,
                 previous: StoredResponse | None, history: list[dict[str, Any]], headers: dict[str, str]) -> None:
        self.endpoint = endpoint
        self.body = body
        self.wire = wire
        self.previous = previous
        self.history = history
        self.headers = headers
        self.mode: Mode = "translated"
        self.response_id = new_id("resp")
        self.stored = endpoint.store.enabled and wire.store is not False
        self.conversation: list[dict[str, Any]] = []

    def forwarded_body(self) -> dict[str, Any]:
        """As sent; only a conversation the gateway kept (translated turns) is spelled out as input items."""
        if self.previous is None or self.previous.messages is None:
            return self.body
        body = {key: value for key, value in self.body.items() if key != "previous_response_id"}
        given = body.get("input")
        body["input"] = chat_to_items(self.history) + (
            [{"type": "message", "role": "user", "content": given}] if isinstance(given, str) else list(given or []))
        return body

    def chat_body(self) -> dict[str, Any]:
        if self.wire.previous_response_id is not None and self.previous is None:
            raise InvalidRequestError(f"previous_response_id '{self.wire.previous_response_id}' is unknown or "
                                      f"expired (this gateway keeps responses {self.endpoint.store.ttl_s:g} s)",
                                      param="previous_response_id", code="previous_response_not_found")
        chat = to_chat(self.body, self.history, strict=True)
        self.conversation = self.history + input_messages(self.body.get("input", []), strict=True)
        return chat

    async def complete(self, backend: Backend) -> dict[str, Any]:
        if self.endpoint.speaks_responses(backend):
            assert isinstance(backend, Forwarding)
            self.mode = "forwarded"
            return await backend.post_json(PATH, self.forwarded_body(), self.headers)
        self.mode = "translated"
        answer = await backend.complete(self.chat_body(), self.headers)
        return from_chat(self.body, answer, self.response_id, self.stored)

    async def stream(self, backend: Backend) -> tuple[dict[str, Any], AsyncIterator[dict[str, Any]]]:
        if self.endpoint.speaks_responses(backend):
            assert isinstance(backend, Forwarding)
            self.mode = "forwarded"
            chunks = aiter(backend.post_stream(PATH, self.forwarded_body(), self.headers))
        else:
            self.mode = "translated"
            chunks = aiter(backend.stream(self.chat_body(), self.headers))
        return await prime(chunks)


def build_responses_api(state: GatewayState) -> APIRouter:
    api = APIRouter()
    endpoint = ResponsesEndpoint(state)
    # A plain route, like chat: the handler reads and validates its body itself.
    api.add_route("/v1/responses", endpoint.create, methods=["POST"])

    @api.get("/v1/responses/{response_id}", responses=NOT_FOUND)
    async def get_response(response_id: str) -> Response:
        return endpoint.get(response_id)

    return api
