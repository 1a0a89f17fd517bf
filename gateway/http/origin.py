"""Requests a web page could forge: a Host check (DNS rebinding) and ``application/json`` only for chat."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import GatewayError, UnsupportedMediaTypeError
from gateway.http.json_response import error_response
from gateway.settings import Settings

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


def allowed_hosts(settings: Settings, auth_enabled: bool) -> frozenset[str]:
    """The Host names to accept; empty = any. By default only a keyless gateway bound to loopback checks:
    there, any page a local browser opens could otherwise rebind its own name to 127.0.0.1 and spend."""
    configured = settings.server.allowed_hosts
    if configured is not None:
        return frozenset(name.lower() for name in configured)
    if settings.server.host in LOOPBACK_HOSTS and not auth_enabled:
        return frozenset(LOOPBACK_NAMES)
    return frozenset()


def host_name(value: str) -> str:
    """``Host`` without its port: ``example.com:8000`` -> ``example.com``, ``[::1]:80`` -> ``[::1]``."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[: value.find("]") + 1] if "]" in value else value
    name, _, port = value.rpartition(":")
    return name if name and port.isdigit() else value


def require_json(content_type: str | None) -> None:
    """A chat request must say it is JSON (a form or ``text/plain`` post is what a foreign page can send)."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media != "application/json":
        raise UnsupportedMediaTypeError(
            f"Content-Type must be application/json, got {content_type or 'none'!r}", param="content-type")


class HostCheckMiddleware:
    """Pure ASGI: answers 400 ``invalid_host`` to a request whose Host header is not allowed."""

    def __init__(self, app: ASGIApp, allowed: frozenset[str]) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host = next((v for k, v in scope["headers"] if k == b"host"), None)
            if host is not None and host_name(host.decode("latin-1")) not in self.allowed:
                error = GatewayError("this gateway does not serve that Host", status=400, code="invalid_host")
                error.type = "invalid_request_error"
                await error_response(error)(scope, receive, send)
                return
        await self.app(scope, receive, send)
