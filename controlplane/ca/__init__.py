"""The mesh's certificate authority: SPIFFE workload certificates, their rotation, and the
bootstrap tokens that tell the control plane who a proxy is in file mode.

    ca = CertificateAuthority.load_or_create(DirectoryKeyStore(".demo/cacerts"))
    cert = ca.issue(Identity("cluster.local", "default", "reviews"))

The gRPC `CertificateServicer` lives in `controlplane.ca.service`, apart from this pure core.
"""

from controlplane.ca.authority import (
    CertificateAuthority,
    SignedCertificate,
    WorkloadCertificate,
)
from controlplane.ca.bundle import CABundle
from controlplane.ca.cache import WorkloadCertCache
from controlplane.ca.errors import (
    CAError,
    IdentityMismatch,
    InvalidCABundle,
    InvalidCSR,
    InvalidIdentity,
    InvalidToken,
)
from controlplane.ca.identity import DEFAULT_TRUST_DOMAIN, Identity
from controlplane.ca.keystore import DirectoryKeyStore, KeyStore
from controlplane.ca.rotation import certificate_renewal_time, needs_renewal, renewal_time
from controlplane.ca.tokens import issue_token, verify_token

__all__ = [
    "DEFAULT_TRUST_DOMAIN",
    "CABundle",
    "CAError",
    "CertificateAuthority",
    "DirectoryKeyStore",
    "Identity",
    "IdentityMismatch",
    "InvalidCABundle",
    "InvalidCSR",
    "InvalidIdentity",
    "InvalidToken",
    "KeyStore",
    "SignedCertificate",
    "WorkloadCertCache",
    "WorkloadCertificate",
    "certificate_renewal_time",
    "issue_token",
    "needs_renewal",
    "renewal_time",
    "verify_token",
]
