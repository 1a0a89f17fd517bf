"""One outcome record per request, written exactly once whatever happens, fanned out to the sinks."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from routers.base import RouteDecision

log = logging.getLogger("tiergate.accounting")

# How a request ended; a metric label.
OUTCOMES = ("success", "client_error", "upstream_error", "timeout", "client_disconnected", "rejected")


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
    prompt_text: str | None = None  # only kept when the request log is told to keep prompts
    extra: dict[str, Any] = field(default_factory=dict)

    def set_usage(self, usage: Any) -> None:
        """Take token counts from an upstream ``usage`` object; values that are not counts are ignored."""
        if not isinstance(usage, dict):
            return
        self.prompt_tokens = _count(usage.get("prompt_tokens"))
        self.completion_tokens = _count(usage.get("completion_tokens"))
        details = usage.get("prompt_tokens_details")
        self.cached_prompt_tokens = _count(details.get("cached_tokens")) if isinstance(details, dict) else 0


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
        outcome = RequestOutcome(request_id=request_id)
        outcome.extra["_open"] = True
        self.in_flight += 1
        return outcome

    def price(self, outcome: RequestOutcome) -> None:
        if self.pricer is not None:
            self.pricer.price(outcome)

    def finish(self, outcome: RequestOutcome) -> None:
        if outcome.extra.get("_recorded"):
            return
        outcome.extra["_recorded"] = True
        outcome.duration_seconds = time.perf_counter() - outcome.started
        if outcome.extra.get("_open"):
            self.in_flight -= 1
        self.price(outcome)
        for sink in self.sinks:
            try:
                sink.record(outcome)
            except Exception:  # a broken sink must not break the request or starve the other sinks
                log.exception("outcome sink %r failed", sink)
