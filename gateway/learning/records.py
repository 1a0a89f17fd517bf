"""The rows the label store keeps: one per answered request, plus its shadow answer, verdict and feedback."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class RequestRow:
    """One answered chat request. ``routing_text`` is only set when prompts may be stored (consent)."""

    request_id: str
    created_at: float  # unix seconds
    key_id: str
    text_hash: str  # sha256 of the routing text: joins repeats without keeping the text
    routing_text: str | None
    decision_tier: str | None
    reason: str | None
    score: float | None
    threshold: float | None
    tier: str  # the tier that answered (after any fallback)
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float


@dataclass(slots=True)
class ShadowRow:
    """The other tier's answer to the same request, fetched in the background."""

    request_id: str
    tier: str
    model: str
    status: str  # "answered" or "failed"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    error: str | None = None


@dataclass(slots=True)
class Verdict:
    """The judge's scores in [0, 1] for the two tiers' answers to one request."""

    request_id: str
    small_score: float
    large_score: float
    mode: str  # "pairwise" or "single"
    judge_model: str
    agreement: bool | None  # pairwise: both orders preferred the same answer (None: single mode)
    cost_usd: float = 0.0


@dataclass(slots=True)
class PendingJudgement:
    """A shadow pair waiting for (or retrying) the judge; kept in the store until a verdict exists."""

    request_id: str
    question: str
    small_answer: str
    large_answer: str
    attempts: int = 0


@dataclass(slots=True)
class Feedback:
    request_id: str
    created_at: float
    key_id: str
    score: float  # 0 = thumbs down, 1 = thumbs up, or anything between


@dataclass(slots=True)
class Stats:
    """What ``tiergate labels stats`` prints."""

    requests: int = 0
    shadowed: int = 0
    shadow_failed: int = 0
    judged: int = 0
    pending: int = 0
    feedback: int = 0
    feedback_mean: float | None = None
    small_as_good: int = 0  # judged rows where the small answer scored within the tie margin of the large one
    agreement: float | None = None  # pairwise: share of verdicts where both orders agreed
    routed_quality: float | None = None  # mean judged quality of the tier that answered
    all_large_quality: float | None = None  # mean judged quality of the large answers
    shadow_cost_usd: float = 0.0
    judge_cost_usd: float = 0.0
    by_tier: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class LabelledRow:
    """One judged request as ``tiergate labels export`` writes it."""

    request_id: str
    created_at: float
    routing_text: str | None
    small_score: float
    large_score: float
    tier: str
