"""The mesh's state: one immutable Snapshot at a time, and what changed between them."""

from controlplane.store.snapshot import (
    MergedDestinationRule,
    ResourceStatus,
    Snapshot,
    resolve_host,
)
from controlplane.store.store import ChangeSet, Rejection, Store, Submission

__all__ = [
    "ChangeSet",
    "MergedDestinationRule",
    "Rejection",
    "ResourceStatus",
    "Snapshot",
    "Store",
    "Submission",
    "resolve_host",
]
