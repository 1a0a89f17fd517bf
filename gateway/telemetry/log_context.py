"""Log context: the request id on every log line (a contextvar), and upstream keys redacted from every record."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable
from contextvars import ContextVar

from gateway.settings import OpenAIBackend, Settings

REQUEST_ID: ContextVar[str] = ContextVar("tiergate_request_id", default="-")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
REDACTED = "[redacted]"


def request_id(given: str | None) -> str:
    """The client's ``x-request-id`` when it is short printable ASCII, else a new one."""
    if given and len(given) <= 128 and given.isascii() and given.isprintable():
        return given
    return f"{random.getrandbits(128):032x}"  # 128 random bits like uuid4's, without a system call per request


class RequestContextFilter(logging.Filter):
    """Adds ``record.request_id`` ("-" outside a request) and replaces known secrets in the message."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets: set[str] = set(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        if self.secrets:
            message = record.getMessage()
            if any(secret in message for secret in self.secrets):
                for secret in self.secrets:
                    message = message.replace(secret, REDACTED)
                record.msg, record.args = message, None
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:
                for secret in self.secrets:
                    record.exc_text = record.exc_text.replace(secret, REDACTED)
        return True


def install(secrets: Iterable[str] = (), logger: logging.Logger | None = None) -> RequestContextFilter:
    """Put one shared filter on every handler of ``logger`` (the root logger by default); adds ``secrets``."""
    target = logger or logging.getLogger()
    found: RequestContextFilter | None = None
    for handler in target.handlers:
        for existing in handler.filters:
            if isinstance(existing, RequestContextFilter):
                found = existing
    if found is None:
        found = RequestContextFilter()
    found.secrets.update(secrets)
    for handler in target.handlers:
        if found not in handler.filters:
            handler.addFilter(found)
    return found


def upstream_secrets(settings: Settings) -> list[str]:
    """The upstream keys this gateway holds (from its environment), to keep them out of errors and logs."""
    found = []
    for cfg in settings.tiers.values():
        value = cfg.api_key() if isinstance(cfg, OpenAIBackend) else ""  # as the backend sends it
        if len(value) >= 8:
            found.append(value)
    return found
