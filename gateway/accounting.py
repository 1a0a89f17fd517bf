"""One outcome record per request, written exactly once whatever happens, fanned out to the sinks."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from gateway.admission.auth import Principal
from routers.base import RouteDecision

if TYPE_CHECKING:
    from gateway.admission.limits import RateCharge
    from gateway.shared_state.budgets import Reservation

log = logging.getLogger("tiergate.accounting")

# How a request ended; a metric label.
OUTCOMES = ("success", "client_error", "upstream_error", "timeout", "client_disconnected", "rejected", "internal")


@dataclass(slots=True)
class RequestOutcome:
    """Everything known about one request when it ends. Filled in as the request progresses."""

    request_id: str
    started: float = field(default_factory=time.perf_counter)
    wall_time: float = field(default_factory=time.time)
    stream: bool = False
    requested_model: str | None = None
    decision: RouteDecision | None = None
    tier: str | None = None  # the tier that answered (after any fallback)
    backend: str | None = None
    model: str | None = None  # the configured model name of the backend that answered
    status: int = 200
    outcome: str = "success"
    error_kind: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    cost_usd: float = 0.0
    counterfactual_cost_usd: float = 0.0  # the same usage priced on the large tier's model
    routing_seconds: float = 0.0
    upstream_seconds: float = 0.0
    ttft_seconds: float | None = None
    duration_seconds: float = 0.0
    retries: int = 0
    fallback: bool = False
    prompt_text: str | None = None  # the routing text, kept only when the request log keeps prompts
    estimated_prompt_tokens: int = 0  # from the prompt's characters, at admission
    streamed_chars: int = 0  # content characters passed to the client in stream chunks
    usage_estimated: bool = False  # no usage came back: the token counts (and cost) are estimates
    principal: Principal | None = None  # the caller, once admitted
    rate_charge: RateCharge | None = None  # what admission charged the caller's rate limit, settled at the end
    reservation: Reservation | None = None  # the spend reserved against budgets, committed at the end
    counted: bool = False  # opened by Accountant.open: counted in flight until finished
    recorded: bool = False  # finished: handed to the sinks (exactly once)
    priced: bool = False  # the costs reflect the current token counts (a JSON answer is priced for its header)

    def routed_to(self, decision: RouteDecision, backend: str, model: str) -> None:
        """The tier being tried now (the first choice, then any fallback)."""
        self.decision = decision
        self.tier = decision.tier
        self.backend = backend
        self.model = model

    def set_usage(self, usage: Any) -> None:
        """Take token counts from an upstream ``usage`` object; values that are not counts are ignored."""
        if not isinstance(usage, dict):
            return
        self.prompt_tokens = _count(usage.get("prompt_tokens"))
        self.completion_tokens = _count(usage.get("completion_tokens"))
        details = usage.get("prompt_tokens_details")
        self.cached_prompt_tokens = _count(details.get("cached_tokens")) if isinstance(details, dict) else 0
        self.priced = False


    def note_chunk(self, chunk: Any) -> None:
        """Count the content characters of a stream chunk, for an estimate if the usage never comes."""
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") if isinstance(choice, dict) else None
            content = delta.get("content") if isinstance(delta, dict) else None
            if isinstance(content, str):
                self.streamed_chars += len(content)

    def estimate_missing_usage(self) -> None:
        """Never optimistic: a request the upstream received (and bills) but whose usage never arrived (the
        client left before the usage chunk, the stream broke, a backend does not report usage) is counted
        at its prompt estimate plus the content streamed so far, flagged as estimated."""
        if self.prompt_tokens or self.completion_tokens or self.tier is None:
            return
        if self.outcome not in ("success", "client_disconnected") and self.error_kind not in BILLED_FAILURES:
            return  # refused before the upstream did any work (an HTTP error status, no connection)
        self.prompt_tokens = self.estimated_prompt_tokens
        self.completion_tokens = -(-self.streamed_chars // CHARS_PER_TOKEN)
        self.usage_estimated = bool(self.prompt_tokens or self.completion_tokens)
        self.priced = False


# Failures after which the upstream may well have done (and billed) the work.
BILLED_FAILURES = frozenset({"timeout", "read", "protocol", "stream_error"})
# Rough characters per token for estimates before (or without) the upstream's own count.
CHARS_PER_TOKEN = 4


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


class OutcomeSink(Protocol):
    """Receives each finished request once: metrics, the JSONL request log."""

    def record(self, outcome: RequestOutcome) -> None: ...


class Pricer(Protocol):
    """Fills ``cost_usd`` and ``counterfactual_cost_usd`` from the usage (gateway.pricing.PriceTable)."""

    def price(self, outcome: RequestOutcome) -> None: ...


class Accountant:
    """Opens and finishes outcome records (exactly once), prices them, and hands them to every sink."""

    def __init__(self, sinks: list[OutcomeSink] | None = None, pricer: Pricer | None = None) -> None:
        self.sinks: list[OutcomeSink] = list(sinks or [])
        self.pricer = pricer
        self.in_flight = 0  # outcomes opened with open() and not yet finished; the event loop's own counter

    def open(self, request_id: str) -> RequestOutcome:
        """A new outcome counted as in flight until :meth:`finish`."""
        outcome = RequestOutcome(request_id=request_id, counted=True)
        self.in_flight += 1
        return outcome

    def price(self, outcome: RequestOutcome) -> None:
        """Fill the costs from the current token counts (once: again only after the counts change)."""
        if self.pricer is not None and not outcome.priced:
            self.pricer.price(outcome)
            outcome.priced = True

    def finish(self, outcome: RequestOutcome) -> None:
        if outcome.recorded:
            return
        outcome.recorded = True
        outcome.duration_seconds = time.perf_counter() - outcome.started
        if outcome.counted:
            self.in_flight -= 1
        outcome.estimate_missing_usage()
        self.price(outcome)
        for sink in self.sinks:
            try:
                sink.record(outcome)
            except Exception:  # a broken sink must not break the request or starve the other sinks
                log.exception("outcome sink %r failed", sink)
