"""JSON answers as ASGI responses: every endpoint's body and every OpenAI-shaped error, the guard's and the host
check's refusals included."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from gateway.errors import GatewayError


class JSONResponse(Response):
    """A JSON body with the given headers, set up directly: Starlette's ``Response.__init__`` works out
    its content length and type the general way (about 1.5% of the gateway's CPU per chat request)."""

    def __init__(self, body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self.status_code = status
        self.body = body
        self.background = None
        self.raw_headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
        self.raw_headers += [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(orjson.dumps(payload), status, headers)


def error_response(error: GatewayError, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(error.json(), error.status, {**error.headers, **(headers or {})})
