"""The ``Programmed`` verdict on one resource, as data: what ``programmed.py`` computes and the
status writer, the debug port and ``controlplane wait`` show. No dependency beyond the api,
so the status writer (imported by the Kubernetes source) can render it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from controlplane.api.issues import ResourceKey

PROGRAMMED = "Programmed"


@dataclass(frozen=True)
class Rejection:
    """A NACK attributed to a resource: which proxy, which Envoy resources, Envoy's words."""

    proxy: str
    type: str
    resource_names: tuple[str, ...]
    message: str


@dataclass(frozen=True)
class Programmed:
    """The verdict on one resource at one generation."""

    generation: int
    programmed: bool
    reason: str  # Programmed, Pending, Rejected, NotAccepted, NotReconciled
    message: str
    affected: int = 0
    pending: int = 0
    rejections: tuple[Rejection, ...] = ()
    seen_at: float = 0.0  # when the change to this generation was seen (0: at start)

    def condition(self) -> dict[str, Any]:
        """The Kubernetes condition (without ``lastTransitionTime``)."""
        return {
            "type": PROGRAMMED,
            "status": "True" if self.programmed else "False",
            "reason": self.reason,
            "message": self.message,
            "observedGeneration": self.generation,
        }

    def as_json(self, key: ResourceKey) -> dict[str, Any]:
        return {
            "resource": f"{key.kind}/{key.namespace}/{key.name}",
            "generation": self.generation,
            "programmed": self.programmed,
            "reason": self.reason,
            "message": self.message,
            "affected": self.affected,
            "pending": self.pending,
            "seen_at": self.seen_at,
            "rejections": [
                {
                    "proxy": r.proxy,
                    "type": r.type,
                    "resources": list(r.resource_names),
                    "message": r.message,
                }
                for r in self.rejections
            ],
        }

    def same(self, other: Programmed | None) -> bool:
        return other is not None and self.condition() == other.condition()


class Verdicts(Protocol):
    """What the status writer reads of the tracker (``programmed.ProgrammedTracker``)."""

    @property
    def verdicts(self) -> Mapping[ResourceKey, Programmed]: ...

    @property
    def listeners(self) -> list[Callable[[set[ResourceKey]], None]]: ...
