"""``POST /v1/feedback``: a user's score for one answer, by its ``x-request-id``, authenticated like chat."""

from __future__ import annotations

import math
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from gateway.admission.guard import principal_of
from gateway.errors import GatewayError, InvalidRequestError
from gateway.learning.loop import UnknownRequestError
from gateway.learning.store import StoreError

MAX_BODY = 64 * 1024
class NotFoundError(GatewayError):
    status = 404
    type = "invalid_request_error"


THUMBS = {"up": 1.0, "thumbs_up": 1.0, "+1": 1.0, "down": 0.0, "thumbs_down": 0.0, "-1": 0.0}


def parse_score(body: dict[str, Any]) -> float:
    """``score``: a number in [0, 1] or "up"/"down" (also ``thumbs``: "up"/"down")."""
    value = body.get("score", body.get("thumbs"))
    param = "score" if "score" in body or "thumbs" not in body else "thumbs"
    if isinstance(value, str) and value.strip().lower() in THUMBS:
        return THUMBS[value.strip().lower()]
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and 0 <= value <= 1:
        return float(value)
    raise InvalidRequestError(f"'{param}' must be a number between 0 and 1, or \"up\" / \"down\"; got {value!r}",
                              param=param, code="invalid_score")


def feedback_api() -> APIRouter:
    api = APIRouter()

    async def feedback(request: Request) -> Response:
        from gateway.http.api import read_body  # the chat endpoint's own body reader
        from gateway.http.json_response import json_response
        from gateway.protocol import parse_body

        state = request.app.state.gateway
        learning = state.learning
        if learning is None:
            raise NotFoundError("feedback is off on this gateway (learning.enabled is false)",
                                code="feedback_disabled")
        body = parse_body(await read_body(request, MAX_BODY))
        request_id = body.get("request_id", request.headers.get("x-request-id"))
        if not isinstance(request_id, str) or not request_id:
            raise InvalidRequestError("'request_id' (the x-request-id of an answer) is required", param="request_id")
        score = parse_score(body)
        principal = principal_of(request)
        try:
            await learning.feedback(request_id, principal.name, score)
        except UnknownRequestError:
            raise NotFoundError(f"no answered request with id '{request_id}'", param="request_id",
                                code="request_not_found") from None
        except StoreError:
            raise GatewayError("the label store is unavailable; retry later", status=503,
                               code="store_unavailable", headers={"retry-after": "5"}) from None
        return json_response({"object": "feedback", "request_id": request_id, "score": score})

    api.add_route("/v1/feedback", feedback, methods=["POST"])
    return api
