"""What kind of failure an error is, when an upstream says to retry, and the circuit breaker they feed."""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Callable

from gateway.errors import BackendOverloadedError, UpstreamError, UpstreamStatusError, UpstreamTimeoutError
from gateway.settings import BreakerSettings

log = logging.getLogger("tiergate.resilience")


def failure_category(error: BaseException) -> str | None:
    """What kind of failure an error is, for the retry, breaker and fallback rules; None = the client's fault."""
    if isinstance(error, BackendOverloadedError):
        return "overloaded"
    if isinstance(error, UpstreamStatusError):
        status = error.upstream_status
        if status == 429:
            return "rate_limit"
        if status == 408:
            return "timeout"
        return "server_error" if status >= 500 or status < 400 else None
    if isinstance(error, UpstreamTimeoutError):
        return "timeout"
    if isinstance(error, UpstreamError):
        if error.kind in ("connect", "circuit_open"):
            return error.kind
        return "server_error"
    return None


# Failures that say the backend is unhealthy (a 429 or a full queue says it is busy, not broken).
BREAKER_CATEGORIES = frozenset({"connect", "timeout", "server_error"})


def retry_after_seconds(headers: dict[str, str]) -> float | None:
    """An upstream's ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date), if it sent one."""
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        if "retry-after-ms" in lowered:
            return max(0.0, float(lowered["retry-after-ms"]) / 1000)
        if "retry-after" in lowered:
            value = lowered["retry-after"].strip()
            try:
                return max(0.0, float(value))
            except ValueError:
                when = email.utils.parsedate_to_datetime(value)
                return max(0.0, when.timestamp() - time.time())
    except (ValueError, TypeError, OverflowError):
        return None
    return None


class CircuitBreaker:
    """Closed -> open after ``failure_threshold`` consecutive failures; after ``reset_after_s`` one trial call
    goes through (half-open): its success closes the circuit, its failure opens it again."""

    def __init__(self, name: str, settings: BreakerSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.threshold = settings.failure_threshold
        self.reset_after = settings.reset_after_s
        self.clock = clock
        self.failures = 0
        self.opened_at: float | None = None
        self.trial = False  # a half-open trial call is in flight

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half_open" if self.clock() - self.opened_at >= self.reset_after else "open"

    def allow(self) -> bool:
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self.trial:
            self.trial = True
            return True
        return False

    def retry_in(self) -> float:
        if self.opened_at is None:
            return 0.0
        return max(0.0, self.reset_after - (self.clock() - self.opened_at))

    def success(self) -> None:
        if self.opened_at is not None:
            log.info("circuit %s closed", self.name)
        self.failures = 0
        self.opened_at = None
        self.trial = False

    def failure(self) -> None:
        self.failures += 1
        if self.trial or (self.opened_at is None and self.failures >= self.threshold):
            if self.opened_at is None:
                log.warning("circuit %s opened after %d consecutive failures", self.name, self.failures)
            self.opened_at = self.clock()
        self.trial = False

    def release(self) -> None:
        """The trial call ended with neither verdict (the client's own error): let another one try."""
        self.trial = False
