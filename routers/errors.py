"""The router's exception tree: the gateway maps these to its fail-safe tier."""

from __future__ import annotations


class ClassifierError(Exception):
    """The classifier cannot score: missing or broken weights, a failed forward pass, a closed router."""


class ClassifierOverloadedError(ClassifierError):
    """The scoring queue is full; raised at once so the request is routed by the fail-safe rule instead."""


class ClassifierNotReadyError(ClassifierError):
    """``score`` was called before ``start()`` finished loading the model, or after ``aclose()``."""
