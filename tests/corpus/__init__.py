"""The project's corpus of Istio-style YAML: ``valid/`` must parse, validate without errors or
unsupported-field warnings, compile, and pass ``envoy --mode validate``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from controlplane.api.issues import Issue
from controlplane.sources.files import read_file
from controlplane.store import Snapshot, Store, Submission

CORPUS = Path(__file__).parent


@dataclass
class Corpus:
    snapshot: Snapshot
    issues: list[Issue]
    submissions: list[Submission]


def load_corpus(kind: str = "valid") -> Corpus:
    """Read every YAML file of ``tests/corpus/<kind>`` as the file source does."""
    issues: list[Issue] = []
    submissions: list[Submission] = []
    for path in sorted((CORPUS / kind).glob("*.yaml")):
        result = read_file(path, f"{kind}/{path.name}")
        issues += result.issues
        submissions += result.submissions
    store = Store()
    store.apply(upserts=submissions)
    return Corpus(store.snapshot, issues, submissions)
