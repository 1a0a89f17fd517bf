"""Steering around the scored decision: sticky tool loops and conversations, and tier capabilities."""

from __future__ import annotations

from typing import Any

from gateway.accounting import RequestOutcome
from gateway.capabilities import Capability, Needs, TierCapabilities, capabilities_of, describe, needs_of
from gateway.conversations.keys import answered_tool_calls, conversation_key, issued_tool_calls, tool_key
from gateway.conversations.pins import MemoryPinStore, PinStore
from gateway.decisions import RouteDecider
from gateway.errors import InvalidRequestError
from gateway.settings import Settings
from routers.base import TIERS, RouteDecision, Tier

NO_NEEDS = Needs()  # text only, and a prompt no tier's context limit applies to
# The request parameter a missing capability is about, for the 400's ``param``.
PARAMS: dict[Capability, str] = {"tools": "tools", "json_schema": "response_format", "vision": "messages",
                                 "context": "messages"}


def _tier(name: str | None) -> Tier | None:
    return next((tier for tier in TIERS if tier == name), None)


class Steering:
    """Decides a request's tier: a continued tool loop goes where the call came from (never re-scored);
    a pinned conversation stays on its tier unless a turn scores it up to large; then capabilities: a
    tier lacking what the request needs is never chosen, and naming one explicitly is a 400."""

    def __init__(self, settings: Settings, decider: RouteDecider, pins: PinStore | None = None) -> None:
        self.settings = settings.conversations
        self.decider = decider
        self.backends = decider.backends
        self.pins: PinStore = pins or MemoryPinStore(settings.conversations.max_entries)
        self.tiers = {tier: cfg for tier, cfg in settings.tiers.items() if tier in decider.backends}
        self._known: dict[Tier, TierCapabilities] = {}  # per tier, once its backend is ready (they do not change)
        self._unrestricted: bool | None = None  # every tier supports everything: known once all are ready

    async def decide(self, body: dict[str, Any], headers: dict[str, str], outcome: RequestOutcome,
                     pinned: Tier | None = None, forced: bool = False) -> RouteDecision:
        """``pinned``: the tier of the conversation this request continues (a Responses
        ``previous_response_id``), kept like a conversation pin; ``forced``: it must go there (that
        upstream holds the conversation)."""
        # Where every tier supports everything, no request can need more: skip working out what it needs.
        needs = NO_NEEDS if self.unrestricted() else needs_of(body, outcome.estimated_prompt_tokens or None)
        if self.decider.models.resolve(body["model"]).tier is not None:
            decision = await self.decider.decide(body, headers, outcome)
            self.require(decision.tier, needs, str(body["model"]))
            return decision
        if forced and pinned is not None and pinned in self.backends:
            self.require(pinned, needs, self.backends[pinned].model)
            return RouteDecision(pinned, "sticky")
        key = conversation_key(body, headers, self.settings)
        decision = await self._sticky_or_scored(body, headers, outcome, pinned, key)
        decision = self._capable(decision, needs)
        if key is not None:
            await self.pins.put(key, decision.tier, self.settings.ttl_s)
        return decision

    async def _sticky_or_scored(self, body: dict[str, Any], headers: dict[str, str], outcome: RequestOutcome,
                                pinned: Tier | None, key: str | None) -> RouteDecision:
        for call_id in answered_tool_calls(body.get("messages")):
            tier = _tier(await self.pins.get(tool_key(call_id)))
            if tier is not None and tier in self.backends:
                return RouteDecision(tier, "sticky")
        if key is not None:
            found = _tier(await self.pins.get(key))
            pinned = "large" if "large" in (found, pinned) else (found or pinned)
        if pinned == "large" and "large" in self.backends:
            return RouteDecision("large", "sticky")  # never back down: no need to score
        decision = await self.decider.decide(body, headers, outcome)
        if pinned is not None and pinned in self.backends and decision.reason != "score_above_threshold":
            return RouteDecision(pinned, "sticky", decision.score, decision.threshold)
        return decision

    def _capable(self, decision: RouteDecision, needs: Needs) -> RouteDecision:
        if not self.missing(decision.tier, needs):
            return decision
        for tier in self.tiers:
            if tier != decision.tier and not self.missing(tier, needs):
                return RouteDecision(tier, "capability", decision.score, decision.threshold)
        lacking = sorted({item for tier in self.tiers for item in self.missing(tier, needs)})
        raise InvalidRequestError(f"no configured tier supports {describe(lacking)}", param=PARAMS[lacking[0]],
                                  code="unsupported_capability")

    def capabilities(self, tier: Tier) -> TierCapabilities | None:
        """An in-process model's capabilities are known once it has loaded: kept from then on."""
        known = self._known.get(tier)
        if known is not None:
            return known
        cfg = self.tiers.get(tier)
        if cfg is None:
            return None
        backend = self.backends[tier]
        capabilities = capabilities_of(cfg, backend)
        if backend.ready():
            self._known[tier] = capabilities
        return capabilities

    def unrestricted(self) -> bool:
        """Every configured tier supports tools, JSON schemas and images, with no context limit (remote tiers
        by default); decided once every tier's backend is ready, since an in-process model's depend on it."""
        if self._unrestricted is None:
            capabilities = [self.capabilities(tier) for tier in self.tiers]
            if len(self._known) < len(self.tiers):
                return False  # not all known yet: ask again next time
            self._unrestricted = all(c is not None and c.complete() for c in capabilities)
        return self._unrestricted

    def missing(self, tier: Tier, needs: Needs) -> list[Capability]:
        caps = self.capabilities(tier)
        return caps.missing(needs) if caps is not None else []

    def require(self, tier: Tier, needs: Needs, model: str) -> None:
        """A 400 naming what the tier lacks (an explicitly named model cannot be routed around)."""
        lacking = self.missing(tier, needs)
        if lacking:
            raise InvalidRequestError(f"the model '{model}' does not support {describe(lacking)}",
                                      param=PARAMS[lacking[0]], code="unsupported_capability")

    def check_fallback(self, body: dict[str, Any], tier: Tier) -> None:
        """Raises when a fallback tier cannot serve the body either (given to gateway.backends.resilience)."""
        self.require(tier, needs_of(body), self.backends[tier].model)

    async def issued(self, answer: dict[str, Any], outcome: RequestOutcome) -> None:
        """Pin the tool calls in an answer (or one stream chunk) to the tier that answered."""
        if outcome.tier is None:
            return
        for call_id in issued_tool_calls(answer):
            await self.pin_tool_call(call_id, outcome.tier)

    async def pin_tool_call(self, call_id: str, tier: str) -> None:
        await self.pins.put(tool_key(call_id), tier, self.settings.ttl_s)
