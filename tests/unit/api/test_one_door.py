"""One validator answers everywhere (issue 11): file mode, the admission webhook and
`controlplane analyze` give the same verdict and the same ``path: reason`` for a resource
(status shows the rejection the source hands the store, see tests/unit/status)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from controlplane.analyze import analyze
from controlplane.inject.admission import admission_verdict
from controlplane.sources.files import read_file

HEADER_WITH_SPACE = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews}}]
    headers: {request: {set: {"x canary": "on"}}}
"""
RULEZ_DENY = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: default}
spec:
  action: DENY
  rulez: [{to: [{operation: {paths: [/admin]}}]}]
"""
WEIGHT_BEYOND_INT32 = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: canary, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 4294967296}
    - {destination: {host: reviews, subset: v2}, weight: 1}
"""
BAD_NAME = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: Reviews_DR, namespace: default}
spec: {host: reviews}
"""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            HEADER_WITH_SPACE,
            "spec.http[0].headers.request.set.x canary: 'x canary' is not a valid HTTP header "
            "name (RFC 9110 token)",
        ),
        (
            RULEZ_DENY,
            "spec.rulez: unknown field 'rulez': 'spec' does not define it",
        ),
        (
            WEIGHT_BEYOND_INT32,
            "spec.http[0].route[0].weight: 4294967296 is out of range for int32 "
            "(-2147483648..2147483647)",
        ),
        (
            BAD_NAME,
            "metadata.name: 'Reviews_DR' is not a DNS-1123 subdomain (lower case letters, "
            "digits, '-' and '.') of at most 253 characters",
        ),
    ],
    ids=["header-name-with-space", "rulez-deny", "weight-beyond-int32", "name-not-dns1123"],
)
def test_file_mode_webhook_and_analyze_refuse_with_the_same_words(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "resource.yaml"
    path.write_text(text)
    # file mode: refused (no submission), the rejection carries the message
    result = read_file(path, "resource.yaml")
    assert result.submissions == []
    [rejection] = result.rejections
    assert message in [i.field_message for i in rejection.issues]
    # the admission webhook
    errors, _ = admission_verdict(yaml.safe_load(text))
    assert message in errors
    # analyze, with a failing exit status
    report = analyze([path])
    assert message in [i.field_message for i in report.errors]
    assert report.exit_status() == 1
