"""Builds the backend a tier's settings describe."""

from __future__ import annotations

from gateway.backends.base import Backend
from gateway.settings import LocalBackend, OpenAIBackend


def build_backend(name: str, settings: OpenAIBackend | LocalBackend) -> Backend:
    if isinstance(settings, OpenAIBackend):
        from gateway.backends.openai_http import OpenAIHTTPBackend

        return OpenAIHTTPBackend(name, settings)
    # Imported here: torch and transformers load only when a local tier is configured.
    from gateway.backends.local.backend import TransformersBackend

    return TransformersBackend(settings, name=name)
