"""Workload identity: a Kubernetes service account in a trust domain, named by a SPIFFE id."""

from __future__ import annotations

import re
from dataclasses import dataclass

from controlplane.ca.errors import InvalidIdentity

DEFAULT_TRUST_DOMAIN = "cluster.local"

# SPIFFE trust domains are lowercase letters, digits, '.', '-' and '_' (SPIFFE ID spec, 2.1).
_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]{1,255}")
# Kubernetes namespaces are DNS-1123 labels; service accounts are DNS-1123 subdomains.
_LABEL = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
_NAMESPACE = re.compile(_LABEL)
_SERVICE_ACCOUNT = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_SPIFFE_ID = re.compile(r"spiffe://([^/]*)/ns/([^/]*)/sa/([^/]*)")


@dataclass(frozen=True, order=True)
class Identity:
    """The identity a workload proves with its certificate: `spiffe://<td>/ns/<ns>/sa/<sa>`."""

    trust_domain: str
    namespace: str
    service_account: str

    def __post_init__(self) -> None:
        check_trust_domain(self.trust_domain)
        if len(self.namespace) > 63 or not _NAMESPACE.fullmatch(self.namespace):
            raise InvalidIdentity(
                f"namespace {self.namespace!r} is not a DNS-1123 label (lowercase alphanumerics "
                "and '-', starting and ending with an alphanumeric, at most 63 characters)"
            )
        if len(self.service_account) > 253 or not _SERVICE_ACCOUNT.fullmatch(self.service_account):
            raise InvalidIdentity(
                f"service account {self.service_account!r} is not a DNS-1123 subdomain "
                "(lowercase alphanumerics, '-' and '.', at most 253 characters)"
            )

    @property
    def spiffe_id(self) -> str:
        """The URI SAN a certificate for this identity carries."""
        return f"spiffe://{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"

    @classmethod
    def parse(cls, spiffe_id: str) -> Identity:
        """Parse `spiffe://<td>/ns/<ns>/sa/<sa>` exactly; anything else raises InvalidIdentity."""
        match = _SPIFFE_ID.fullmatch(spiffe_id)
        if match is None:
            raise InvalidIdentity(
                f"{spiffe_id!r} is not a workload SPIFFE id of the form "
                "'spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>'"
            )
        trust_domain, namespace, service_account = match.groups()
        return cls(trust_domain, namespace, service_account)

    def __str__(self) -> str:
        return self.spiffe_id


def check_trust_domain(trust_domain: str) -> str:
    """Return `trust_domain` if it is a valid SPIFFE trust domain, else raise InvalidIdentity."""
    if not _TRUST_DOMAIN.fullmatch(trust_domain):
        raise InvalidIdentity(
            f"trust domain {trust_domain!r} must be 1-255 lowercase letters, digits, "
            "'.', '-' or '_'"
        )
    return trust_domain
