"""The documented metric families (name, type, labels, help, buckets) and their prometheus_client objects."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Literal, NamedTuple

from prometheus_client import Counter, Histogram
from prometheus_client.core import Metric

from gateway.telemetry.loop_values import LoopCounter, LoopHistogram

Kind = Literal["counter", "gauge", "histogram"]

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120)
ROUTING_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
SCORE_BUCKETS = tuple(round(i / 20, 2) for i in range(1, 21))


class Spec(NamedTuple):
    name: str
    kind: Kind
    labels: tuple[str, ...]
    help: str
    buckets: tuple[float, ...] = ()


# The documented families (deploy/README.md, the contract test). Gauges are computed at scrape time.
FAMILIES: tuple[Spec, ...] = (
    Spec("tiergate_requests_total", "counter", ("tier", "backend", "outcome", "stream"),
         "Chat requests finished, by the tier and backend that answered and how the request ended."),
    Spec("tiergate_request_duration_seconds", "histogram", ("tier", "stream"),
         "End-to-end request duration, from the first byte read to the last byte sent.", DURATION_BUCKETS),
    Spec("tiergate_time_to_first_token_seconds", "histogram", ("tier",),
         "Streamed requests: time from arrival to the first upstream chunk.", DURATION_BUCKETS),
    Spec("tiergate_routing_duration_seconds", "histogram", (),
         "Time spent scoring the request with the router (classification).", ROUTING_BUCKETS),
    Spec("tiergate_upstream_duration_seconds", "histogram", ("tier", "backend"),
         "Time spent in the backend call (a whole stream for streamed requests).", DURATION_BUCKETS),
    Spec("tiergate_routing_score", "histogram", (), "Router scores P(large needed) of routed requests.",
         SCORE_BUCKETS),
    Spec("tiergate_routing_decisions_total", "counter", ("tier", "reason"), "Routing decisions by tier and reason."),
    Spec("tiergate_prompt_tokens_total", "counter", ("tier", "model"), "Prompt tokens reported by the backends."),
    Spec("tiergate_cached_prompt_tokens_total", "counter", ("tier", "model"),
         "Prompt tokens the upstream served from its prompt cache (part of the prompt tokens)."),
    Spec("tiergate_completion_tokens_total", "counter", ("tier", "model"),
         "Completion tokens reported by the backends."),
    Spec("tiergate_cost_usd_total", "counter", ("tier", "model"), "Cost of the answered requests in USD."),
    Spec("tiergate_counterfactual_cost_usd_total", "counter", ("tier",),
         "What the same usage would have cost on the large tier's model, in USD."),
    Spec("tiergate_saved_usd_total", "counter", ("tier",),
         "USD saved against sending everything to the large tier (counterfactual minus cost, when positive)."),
    Spec("tiergate_upstream_errors_total", "counter", ("tier", "backend", "kind"),
         "Requests that failed upstream (after any retries and fallback), by error kind."),
    Spec("tiergate_retries_total", "counter", ("tier", "backend"), "Backend call retries."),
    Spec("tiergate_fallbacks_total", "counter", ("tier",), "Requests answered by the other tier after a failure."),
    Spec("tiergate_shadow_requests_total", "counter", ("outcome",),
         "Shadow requests to the tier that did not answer, by outcome (answered, failed, timeout, dropped, busy, "
         "over_budget)."),
    Spec("tiergate_judge_verdicts_total", "counter", ("verdict",),
         "Judged shadow pairs: small_as_good (within learning.judge.tie_margin) or large_better."),
    Spec("tiergate_judge_failures_total", "counter", ("kind",),
         "Judgements that failed and wait for a retry, by kind (error, timeout, garbage, over_budget)."),
    Spec("tiergate_learning_spend_usd_total", "counter", ("purpose",),
         "USD spent on learning from traffic: shadow answers and the judge."),
    Spec("tiergate_labels_stored_total", "counter", ("kind",),
         "Rows written to the label store, by kind (request, shadow, verdict, feedback)."),
    Spec("tiergate_label_store_errors_total", "counter", ("kind",),
         "Label store writes that failed (full, read-only, unreachable) or were dropped because too many waited."),
    Spec("tiergate_in_flight_requests", "gauge", (), "Chat requests being served now."),
    Spec("tiergate_backend_queue_depth", "gauge", ("tier", "backend"),
         "Requests waiting for a local model's generation slot."),
    Spec("tiergate_backend_in_flight_requests", "gauge", ("tier", "backend"),
         "Requests holding a local model's generation slot."),
    Spec("tiergate_classifier_queue_depth", "gauge", (), "Texts waiting in the classifier's batcher."),
    Spec("tiergate_large_share_realised", "gauge", (),
         "Share of routed requests sent to the large tier over the recent window (routing.share_window)."),
    Spec("tiergate_large_share_target", "gauge", (), "routing.target_large_share, when set."),
    Spec("tiergate_routing_threshold", "gauge", (), "The score threshold routing applies now."),
    Spec("tiergate_build_info", "gauge", ("version", "router", "classifier_checkpoint"),
         "Always 1; the labels name the running build and classifier checkpoint."),
)
SPECS = {spec.name: spec for spec in FAMILIES}


def counter(name: str, documentation: str, labels: Iterable[str] = ()) -> Counter:
    """A counter registered nowhere: its owner's collector yields it into the app's own registry."""
    return Counter(name, documentation, tuple(labels), registry=None)


def build(spec: Spec, loop_only: bool = False) -> Counter | Histogram:
    """``spec``'s counter or histogram, registered nowhere (see :func:`counter`). ``loop_only``: written only
    from the event loop's thread, so without a lock per update (gateway.telemetry.loop_values)."""
    if spec.kind == "counter":
        if loop_only:
            return LoopCounter(spec.name, spec.help, spec.labels, registry=None)
        return counter(spec.name, spec.help, spec.labels)
    if spec.kind == "histogram":
        kind = LoopHistogram if loop_only else Histogram
        return kind(spec.name, spec.help, spec.labels, registry=None, buckets=spec.buckets)
    raise ValueError(f"{spec.name} is a gauge: gauges are computed at scrape time")


def collected(metrics: Iterable[Counter | Histogram]) -> Iterator[Metric]:
    """Each metric's family without its ``_created`` series.

    prometheus_client adds a ``<name>_created`` gauge family per counter and histogram (the process start
    time again, which no dashboard reads and a multi-worker merge cannot sum); it can drop them only
    process-wide (``disable_created_metrics``), so a per-app collector drops them here, at scrape time.
    """
    for metric in metrics:
        for family in metric.collect():
            family.samples = [s for s in family.samples if not s.name.endswith("_created")]
            yield family


def value(child: Counter) -> float:
    """One counter child's current value (tests, logs; never on the request path)."""
    return sum(s.value for family in child.collect() for s in family.samples if s.name.endswith("_total"))
