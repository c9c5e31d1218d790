"""Trust-domain aliases in AuthorizationPolicy, as istiod applies them
(``pilot/pkg/security/trustdomain/bundle.go``).

The mesh's trust domain and its ``trustDomainAliases`` name one mesh: a workload known as
``old-td/ns/foo/sa/bar`` before a migration is the same workload as ``new-td/ns/foo/sa/bar``.
So a principal written with any of them (or with ``cluster.local``, which always stands for
the local trust domain) is matched under every one of them; a principal whose trust domain is
``*`` or that is not shaped ``<td>/ns/<ns>/sa/<sa>`` is left as written, and so is one from a
trust domain outside the list. A ``trustDomains`` value naming one of them stands for all.
"""

from __future__ import annotations

from collections.abc import Iterable

CLUSTER_LOCAL = "cluster.local"


def _suffix_match(text: str, pattern: str) -> bool:
    return pattern.startswith("*") and text.endswith(pattern[1:])


def _prefix_match(text: str, pattern: str) -> bool:
    return pattern.endswith("*") and text.startswith(pattern[:-1])


def _matches_any(text: str, patterns: Iterable[str]) -> bool:
    """istiod's ``stringMatch``: the wildcard may sit on either side."""
    return any(
        text == p
        or p == "*"
        or _prefix_match(text, p)
        or _prefix_match(p, text)
        or _suffix_match(text, p)
        or _suffix_match(p, text)
        for p in patterns
    )


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def expand_principals(principals: Iterable[str], trust_domains: tuple[str, ...]) -> list[str]:
    """Each principal under the local trust domain and every alias (``trust_domains``: the
    local one first, then the aliases)."""
    out: list[str] = []
    for principal in principals:
        parts = principal.split("/")
        if len(parts) != 5 or parts[0] == "*":
            out.append(principal)  # no trust domain to enforce
            continue
        domain = parts[0]
        if not (_matches_any(domain, trust_domains) or domain == CLUSTER_LOCAL):
            out.append(principal)  # another mesh's identity: kept as written
            continue
        rewritten: list[str] = []
        for td in trust_domains:
            candidate = principal if _suffix_match(td, domain) else "/".join([td, *parts[1:]])
            if candidate not in rewritten:
                rewritten.append(candidate)
        out.extend(rewritten)
    return _unique(out)


def expand_trust_domains(values: Iterable[str], trust_domains: tuple[str, ...]) -> list[str]:
    """``trustDomains`` values: one naming the local trust domain or an alias stands for all."""
    out: list[str] = []
    for value in values:
        out.extend(trust_domains if value in trust_domains else (value,))
    return _unique(out)
