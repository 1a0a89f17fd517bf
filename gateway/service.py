"""One chat request end to end: admission, the tier (steering, routing, spend caps), the resilient upstream call."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.accounting import RequestOutcome
from gateway.admission.auth import Principal
from gateway.admission.guard import Guard
from gateway.backends.base import Backend, ChatObject
from gateway.backends.resilience import Resilience, prime
from gateway.capabilities import describe, needs_of
from gateway.conversations.steering import Steering
from gateway.protocol import validate_chat
from gateway.settings import Settings
from gateway.shared_state.base import InsufficientQuotaError
from routers.base import RouteDecision, Tier
from routers.features import routing_text

if TYPE_CHECKING:
    from gateway.learning.loop import LearningLoop
    from gateway.shared_state.wiring import SharedState


@dataclass(slots=True)
class ChatAnswer:
    """A whole JSON answer; the outcome says which tier and model gave it."""

    body: ChatObject


@dataclass(slots=True)
class ChatStream:
    """An open stream whose first chunk has arrived (so early failures were real HTTP statuses)."""

    first: ChatObject
    chunks: AsyncIterator[ChatObject]
    include_usage: bool  # the client asked for the usage-only chunk


class ChatService:
    """Owns one chat request from its parsed body to the answer, each step once: admission (guard), the tier
    (steering around the router's decision, then spend caps), the upstream call (resilience), the usage."""

    def __init__(self, settings: Settings, guard: Guard, steering: Steering, resilience: Resilience,
                 shared: SharedState | None = None, learning: LearningLoop | None = None) -> None:
        self.settings = settings
        self.guard = guard
        self.steering = steering
        self.resilience = resilience
        self.shared = shared
        self.learning = learning

    async def handle(self, body: dict[str, Any], headers: dict[str, str], principal: Principal,
                     outcome: RequestOutcome) -> ChatAnswer | ChatStream:
        # Cheap checks (loaded, the key's model, size, depth, rate limit) before the full schema validation.
        await self.guard.admit(principal, body, outcome)
        chat = validate_chat(body)
        outcome.stream = bool(chat.stream)
        outcome.requested_model = chat.model
        if self.settings.request_log.include_prompts:  # the text the router scored, for re-training
            outcome.prompt_text = routing_text(body["messages"],
                                               include_system=self.settings.routing.include_system_prompt)
        decision = await self.route(body, headers, outcome)
        capture = self.learning.capture(body, headers, outcome, decision) if self.learning is not None else None
        started = time.perf_counter()
        if chat.stream:

            async def open_stream(backend: Backend) -> tuple[ChatObject, AsyncIterator[ChatObject]]:
                return await prime(aiter(backend.stream(body, headers)))

            try:
                first, chunks = await self.resilience.open_stream(body, decision, outcome, open_stream,
                                                                  principal.tiers)
            except BaseException:
                outcome.upstream_seconds = time.perf_counter() - started
                raise
            outcome.ttft_seconds = time.perf_counter() - outcome.started
            if capture is not None:  # the answer's text, for a shadow pair
                chunks = capture.follow(first, chunks)
            include_usage = bool(chat.stream_options and chat.stream_options.include_usage)
            return ChatStream(first, chunks, include_usage)

        async def complete(backend: Backend) -> ChatObject:
            return await backend.complete(body, headers)

        try:
            answer, _ = await self.resilience.run(body, decision, outcome, complete, principal.tiers)
        finally:
            outcome.upstream_seconds = time.perf_counter() - started
        outcome.set_usage(answer.get("usage"))
        await self.steering.issued(answer, outcome)  # a tool loop's next turn comes back to this tier
        if capture is not None:
            capture.answer(answer)
        return ChatAnswer(answer)

    async def route(self, body: dict[str, Any], headers: dict[str, str], outcome: RequestOutcome,
                    pinned: Tier | None = None, forced: bool = False) -> RouteDecision:
        """The tier: steering (sticky tool loops and conversations, capabilities) around the router's decision,
        then spend caps, which may downgrade it to small or refuse the request."""
        decision = await self.steering.decide(body, headers, outcome, pinned, forced)
        if self.shared is None:
            return decision
        decided = await self.shared.check_budget(body, outcome, decision)
        if decided.reason == "budget":  # downgraded after steering: the small tier must still serve the request
            lacking = self.steering.missing(decided.tier, needs_of(body))
            if lacking:
                raise InsufficientQuotaError(
                    f"You exceeded your current quota for the large tier, and the small tier does not support "
                    f"{describe(lacking)}: this request cannot be served until the budget renews.",
                    headers={"x-should-retry": "false"})
        return decided
