"""Routers by name: one :class:`RouterKind` per name, the only place router names are written."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from routers.base import Router, Scorer
from routers.baselines import ConstantRouter, RandomRouter
from routers.options import ROUTER_DEFAULTS, ClassifierOptions, RouterOptions


@dataclass(frozen=True, slots=True)
class RouterKind:
    """One kind of router: its name in ``routing.router`` and how it is built from options.

    The defaults of every option live in :mod:`routers.options`; ``factory`` gets the kind's name (which the
    router reports as its ``name``) and the options, and reads the part it needs.
    """

    name: str
    factory: Callable[[str, RouterOptions], Router]

    def build(self, options: RouterOptions = ROUTER_DEFAULTS) -> Router:
        return self.factory(self.name, options)


def _classifier(name: str, options: RouterOptions) -> Router:
    # Imported here: settings import this module for the names, and the classifier's batching and threshold
    # modules bring numpy; the scoring runtime (onnxruntime, or torch) loads later still, in the worker.
    from routers.swap import SwappableRouter

    classifier = options.classifier

    def loader(checkpoint: str) -> Callable[[], Scorer]:
        def load() -> Scorer:
            from routers.runtime import load_scorer

            return load_scorer(checkpoint, runtime=classifier.runtime, max_length=classifier.max_length,
                               threads=classifier.threads)

        return load

    return SwappableRouter(classifier.path, loader, options=classifier, name=name)


KINDS: tuple[RouterKind, ...] = (
    RouterKind("classifier", _classifier),  # the encoder classifier: P(large needed) against the threshold
    RouterKind("random", lambda name, options: RandomRouter(name, options.seed)),  # the baseline to beat
    RouterKind("always-small", lambda name, _: ConstantRouter(name, "small")),
    RouterKind("always-large", lambda name, _: ConstantRouter(name, "large")),
)
ROUTERS: Mapping[str, RouterKind] = MappingProxyType({kind.name: kind for kind in KINDS})
ROUTER_NAMES: tuple[str, ...] = tuple(ROUTERS)
DEFAULT_ROUTER = KINDS[0].name  # the first kind listed


def router_kind(name: str) -> RouterKind:
    """The kind registered as ``name``; a :class:`ValueError` naming every registered kind otherwise."""
    kind = ROUTERS.get(name)
    if kind is None:
        raise ValueError(f"unknown router {name!r}; choose one of {', '.join(ROUTER_NAMES)}")
    return kind


def build_router(name: str, *, seed: int | None = None, **classifier_options: Any) -> Router:
    """A router by name; ``classifier_options`` are fields of :class:`routers.options.ClassifierOptions`."""
    options = RouterOptions(seed=seed, classifier=ClassifierOptions.from_mapping(classifier_options))
    return router_kind(name).build(options)
