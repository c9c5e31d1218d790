"""Turning YAML written in a test into what a source hands the store."""

from __future__ import annotations

import textwrap

import yaml

from controlplane.api import load
from controlplane.store import Submission


def submissions(text: str, origin: str | None = None) -> list[Submission]:
    """Every document of ``text`` (indented or not) parsed and validated, as submissions."""
    out = []
    for doc in yaml.safe_load_all(textwrap.dedent(text)):
        if doc:
            resource, issues = load(doc)
            out.append(Submission(resource, tuple(issues), origin))
    return out
