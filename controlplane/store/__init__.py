"""The mesh's state: one immutable Snapshot at a time, and what changed between them."""

from controlplane.store.snapshot import (
    MergedDestinationRule,
    ResourceStatus,
    Snapshot,
    resolve_host,
)
from controlplane.store.store import ChangeSet, Rejection, Store, Submission, found_by_store

__all__ = [
    "ChangeSet",
    "MergedDestinationRule",
    "Rejection",
    "ResourceStatus",
    "Snapshot",
    "Store",
    "Submission",
    "found_by_store",
    "resolve_host",
]
