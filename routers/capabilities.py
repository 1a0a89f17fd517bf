"""Optional router capabilities that observers read: the batcher's queue depth, the serving checkpoint's id."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class QueueReporter(Protocol):
    """A router that batches: how many texts wait to be scored (the classifier, the swappable router)."""

    def queue_depth(self) -> int: ...


@runtime_checkable
class Checkpointed(Protocol):
    """A router serving a named checkpoint (``tiergate_build_info``'s ``classifier_checkpoint`` label)."""

    @property
    def checkpoint_id(self) -> str: ...
