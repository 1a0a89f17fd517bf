"""The endpoints beyond chat: Responses, embeddings, completions, one model, and a 404 naming them all."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from gateway.errors import GatewayError, ModelNotFoundError
from gateway.http.forwarded import ForwardedEndpoint
from gateway.http.json_response import error_response, json_response
from gateway.responses.handler import build_responses_api
from gateway.state import GatewayState

# Every endpoint under /v1, for the 404 that answers any other path there.
SERVED = (
    ("POST", "/v1/chat/completions"), ("POST", "/v1/responses"), ("GET", "/v1/responses/{response_id}"),
    ("GET", "/v1/models"), ("GET", "/v1/models/{model}"), ("POST", "/v1/embeddings"), ("POST", "/v1/completions"),
)
ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {
    "description": "Unknown id", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}}


def _matches(template: str, path: str) -> bool:
    want, got = template.strip("/").split("/"), path.strip("/").split("/")
    return len(want) == len(got) and all(w.startswith("{") or w == g for w, g in zip(want, got, strict=True))


def unknown_path(method: str, path: str) -> GatewayError:
    """OpenAI's answer to an unknown URL, listing what this gateway serves (405 for a served path)."""
    allowed = [m for m, template in SERVED if _matches(template, path)]
    served = ", ".join(f"{m} {template}" for m, template in SERVED)
    if allowed:
        error = GatewayError(f"{method} is not allowed on {path} (use {', '.join(allowed)})", status=405,
                             code="method_not_allowed", headers={"allow": ", ".join(allowed)})
    else:
        error = GatewayError(f"Unknown request URL: {method} {path}. Tiergate serves: {served}", status=404,
                             code="unknown_url")
    error.type = "invalid_request_error"
    return error


def build_surface_api(state: GatewayState) -> APIRouter:
    """Include after every other router: its last route answers any unknown ``/v1/...`` path."""
    api = APIRouter()
    api.include_router(build_responses_api(state))
    for kind in ("embeddings", "completions"):
        endpoint = ForwardedEndpoint(state, kind)
        api.add_route(f"/v1/{kind}", endpoint.handle, methods=["POST"])

    @api.get("/v1/models/{model:path}", responses=NOT_FOUND)
    async def retrieve_model(model: str) -> Response:
        if model not in state.decider.models.names():
            known = ", ".join(state.decider.models.names())
            return error_response(ModelNotFoundError(
                f"The model '{model}' does not exist. Available models: {known}", param="model"))
        return json_response({"id": model, "object": "model", "created": int(state.started_at),
                              "owned_by": "tiergate"})

    async def not_found(request: Request) -> Response:
        return error_response(unknown_path(request.method, request.url.path))

    api.add_route("/v1/{path:path}", not_found, methods=ALL_METHODS)
    return api
