"""Findings about the mesh CA's own certificates (part "ops" of issue 17).

Pure: the caller reads the certificate (``controlplane.ca``) and passes its subject and expiry,
so the control plane's guard, ``controlplane analyze --ca-dir`` and the Warning Event say the
same thing. istiod exports the root's expiry as a metric (citadel_server_root_cert_expiry_*)
and leaves alerting to the operator; here the same threshold also becomes a finding.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from controlplane.api.issues import Codes, Issue

# A root this close to its expiry is a Warning, then an Error: workload certificates can no
# longer outlive it, and a rotation needs time to reach every proxy.
ROOT_WARNING_DAYS = 30
ROOT_ERROR_DAYS = 7
ROOT_CERT_FILE = "root-cert.pem"


def root_expiry_issue(
    subject: str, not_after: datetime, now: datetime | None = None
) -> Issue | None:
    """The finding for a mesh root within 30 (Warning) or 7 (Error) days of expiry."""
    left = not_after - (now or datetime.now(UTC))
    if left > timedelta(days=ROOT_WARNING_DAYS):
        return None
    code = (
        Codes.ROOT_CERT_EXPIRES_VERY_SOON
        if left <= timedelta(days=ROOT_ERROR_DAYS)
        else Codes.ROOT_CERT_EXPIRES_SOON
    )
    days = left.total_seconds() / 86400
    when = "has expired" if days <= 0 else f"expires in {days:.1f} days"
    return Issue(
        code,
        ROOT_CERT_FILE,
        f"the mesh root {subject!r} {when} (notAfter {not_after.isoformat()}); rotate it: "
        f"add the new root to {ROOT_CERT_FILE} beside the old one, switch the signing "
        "certificate once every proxy holds both, then remove the old root",
    )
