"""Exceptions raised by the certificate authority.

Every message says what was wrong and, where it helps, what was expected, so that a caller
can pass it on to an operator or a gRPC client unchanged.
"""

from __future__ import annotations


class CAError(Exception):
    """Base class of every error raised by `controlplane.ca`."""


class InvalidIdentity(CAError, ValueError):
    """A SPIFFE id, namespace, service account or trust domain is malformed."""


class InvalidCABundle(CAError):
    """The CA's own key material (root, intermediate, key) is missing, malformed or inconsistent."""


class InvalidCSR(CAError):
    """A certificate signing request cannot be parsed, is not self-signed, or asks for too much."""


class IdentityMismatch(CAError):
    """A request asks for an identity other than the one its caller authenticated as."""


class InvalidToken(CAError):
    """A bootstrap token is malformed, forged, expired, or meant for another audience."""
