"""One error tree, each rendered as OpenAI's ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

from typing import Any

import orjson


class GatewayError(Exception):
    """Base of every error the gateway answers with; carries the HTTP status and OpenAI error fields."""

    status: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.headers: dict[str, str] = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def json(self) -> bytes:
        return orjson.dumps(self.body())


class InvalidRequestError(GatewayError):
    status = 400
    type = "invalid_request_error"


class AuthenticationError(GatewayError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class PermissionDeniedError(GatewayError):
    status = 403
    type = "invalid_request_error"
    code = "model_not_allowed"


class ModelNotFoundError(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class PayloadTooLargeError(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class UnsupportedMediaTypeError(GatewayError):
    status = 415
    type = "invalid_request_error"
    code = "unsupported_media_type"


class ClientDisconnectedError(GatewayError):
    """The client hung up before its request was read; nobody reads the answer (499, nginx's convention)."""

    status = 499
    type = "invalid_request_error"
    code = "client_disconnected"


class RateLimitError(GatewayError):
    status = 429
    type = "rate_limit_exceeded"
    code = "rate_limit_exceeded"


class UpstreamError(GatewayError):
    """The backend failed: a connection error, a broken stream, or a 5xx. ``kind`` is a metric label."""

    status = 502
    type = "upstream_error"
    code: str | None = "upstream_error"

    def __init__(self, message: str, *, kind: str = "connect", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.kind = kind


class UpstreamTimeoutError(UpstreamError):
    status = 504
    type = "upstream_timeout"
    code = "upstream_timeout"

    def __init__(self, message: str, **kwargs: Any) -> None:
        super().__init__(message, kind="timeout", **kwargs)


class UpstreamStatusError(UpstreamError):
    """The upstream answered an HTTP error. A 4xx (the client's own mistake, or a rate limit) passes through
    with its status and OpenAI-shaped body; anything else is the upstream failing: 502 Bad Gateway."""

    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        found = body.get("error")
        error: dict[str, Any] = found if isinstance(found, dict) else {}
        message = str(error.get("message") or f"upstream returned HTTP {status}")
        passed = status if 400 <= status < 500 else 502
        super().__init__(message, kind=f"http_{status // 100}xx", status=passed, headers=headers)
        self.upstream_status = status
        self.upstream_body = body
        self.type = str(error.get("type") or ("server_error" if status >= 500 else "invalid_request_error"))
        self.param = error.get("param")
        self.code = error.get("code")


class BackendOverloadedError(RateLimitError):
    """A local backend's wait queue is full."""

    code = "backend_overloaded"
