"""The Gateway API conformance suite as a yardstick on a cluster without pods.

The upstream suite (module ``sigs.k8s.io/gateway-api/conformance``, the release pinned in
tests/cluster/gateway_api.sh) drives real pods; the tests' apiserver has none. What can run
here: each core test's manifests (``tests/<name>.yaml``, over ``base/manifests.yaml``) applied
to the real apiserver with the operator running, and the status that test's ``.go`` file
waits for, read from the file itself:

* core: every feature the test lists is one of Gateway, HTTPRoute, GRPCRoute, ReferenceGrant
  (the Core features of those APIs in ``pkg/features``);
* "status written": every GatewayClass, Gateway and route parent of the test carries conditions with
  ``observedGeneration`` equal to the object's generation;
* every ``metav1.Condition{Type, Status, Reason}`` literal in the ``.go`` file is found on one
  of the test's objects (Gateway, listener or route parent conditions);
* when the test calls ``GatewayAnd*RoutesMustBeAccepted``: some route of the test has every
  parent ``Accepted`` True; when it calls ``HTTPRouteMustHaveResolvedRefsConditionsTrue``:
  some route has every parent ``ResolvedRefs`` True.

This is an approximation of the suite's assertions (it does not bind each literal to the
object the test names); the traffic half of each test is not run here.
"""

from __future__ import annotations

import datetime
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.cluster.cluster import LocalCluster

CORE_FEATURES = {"SupportGateway", "SupportHTTPRoute", "SupportGRPCRoute", "SupportReferenceGrant"}
ROUTE_KINDS = {"HTTPRoute", "GRPCRoute", "TLSRoute", "TCPRoute"}
# part "gwroutes": the TLSRoute and TCPRoute tests (Extended in v1.6.0), run by the same means.
L4_FEATURES = {"SupportTLSRoute", "SupportTCPRoute"}
# The suite's helpers that wait for a route's parents to be Accepted, and ResolvedRefs, True.
_ACCEPT_CALLS = (
    "GatewayAndHTTPRoutesMustBeAccepted",
    "GatewayAndRoutesMustBeAccepted",
    "GatewayAndGRPCRoutesMustBeAccepted",
    "GatewayAndTLSRoutesMustBeAccepted",
    "GatewayAndTCPRoutesMustBeAccepted",
)
_RESOLVED_CALLS = (
    "HTTPRouteMustHaveResolvedRefsConditionsTrue",
    "TLSRouteMustHaveResolvedRefsConditionsTrue",
)
_PREFIXES = (
    "RouteCondition",
    "RouteReason",
    "GatewayCondition",
    "GatewayReason",
    "ListenerCondition",
    "ListenerReason",
    "GatewayClassCondition",
    "GatewayClassReason",
    "Condition",
)


@dataclass
class ConformanceTest:
    short_name: str
    go_file: Path
    manifests: list[Path]
    features: list[str]
    conditions: list[tuple[str, str, str | None]] = field(default_factory=list)
    expects_accepted: bool = False
    expects_resolved: bool = False
    traffic: bool = False
    # The test deletes its ReferenceGrant midway and then expects the conditions it names
    # (TCPRouteReferenceGrant): checked in two steps, before and after the deletion.
    deletes_grant: bool = False

    @property
    def core(self) -> bool:
        return bool(self.features) and set(self.features) <= CORE_FEATURES


def _value(expr: str) -> str:
    expr = expr.strip().rstrip(",")
    if expr.startswith('"'):
        return expr.strip('"')
    name = expr.split(".")[-1].strip("()")
    name = re.sub(r"^string\(", "", name)
    for prefix in _PREFIXES:
        if name.startswith(prefix) and len(name) > len(prefix):
            return name[len(prefix) :]
    return name


def parse_test(go_file: Path, root: Path) -> ConformanceTest | None:
    text = go_file.read_text()
    name = re.search(r'ShortName:\s*"([^"]+)"', text)
    if name is None:
        return None
    feats = re.search(r"Features:\s*\[\]features\.FeatureName\{(.*?)\}", text, re.S)
    features = re.findall(r"features\.(Support\w+)", feats.group(1)) if feats else []
    manifests = re.search(r"Manifests:\s*\[\]string\{(.*?)\}", text, re.S)
    paths = re.findall(r'"([^"]+\.yaml)"', manifests.group(1)) if manifests else []
    test = ConformanceTest(name.group(1), go_file, [root / p for p in paths], features)
    for literal in re.findall(r"metav1\.Condition\{(.*?)\}", text, re.S):
        fields = dict(re.findall(r"(Type|Status|Reason):\s*([^,\n]+)", literal))
        if "Type" in fields and "Status" in fields:
            reason = _value(fields["Reason"]) if "Reason" in fields else None
            reason = reason or None  # Reason: "" names no reason
            test.conditions.append((_value(fields["Type"]), _value(fields["Status"]), reason))
    test.expects_accepted = any(call in text for call in _ACCEPT_CALLS)
    test.expects_resolved = any(call in text for call in _RESOLVED_CALLS)
    test.deletes_grant = bool(re.search(r"ReferenceGrant\{.*?Client\.Delete\(", text, re.S))
    test.traffic = any(
        call in text
        for call in (
            "MakeRequestAndExpect",
            "grpc.Expect",
            "MakeTCPRequest",
            "MakeTLSRequest",
            "EchoSendOnce",
            "weight.NewFunctionBasedSender",
        )
    )
    return test


def core_tests(root: Path) -> list[ConformanceTest]:
    tests = [parse_test(f, root) for f in sorted((root / "tests").glob("*.go"))]
    return [t for t in tests if t is not None and t.core]


def l4_tests(root: Path) -> list[ConformanceTest]:
    """The TLSRoute and TCPRoute tests whose other features are core ones."""
    tests = [parse_test(f, root) for f in sorted((root / "tests").glob("*.go"))]
    return [
        t
        for t in tests
        if t is not None
        and set(t.features) & L4_FEATURES
        and set(t.features) <= CORE_FEATURES | L4_FEATURES
    ]


def render(path: Path, class_name: str, controller: str) -> str:
    return (
        path.read_text()
        .replace("{GATEWAY_CLASS_NAME}", class_name)
        .replace("{GATEWAY_CONTROLLER_NAME}", controller)
    )


def objects(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if isinstance(d, dict) and d.get("kind")]


def self_signed_secret(namespace: str, name: str, hosts: list[str]) -> dict[str, Any]:
    """A kubernetes.io/tls Secret, as the suite's setup creates (MustCreateSelfSignedCertSecret)."""
    import base64

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]), False)
        .sign(key, hashes.SHA256())
    )
    pem_cert = cert.public_bytes(serialization.Encoding.PEM)
    pem_key = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {"name": name, "namespace": namespace},
        "data": {
            "tls.crt": base64.b64encode(pem_cert).decode(),
            "tls.key": base64.b64encode(pem_key).decode(),
        },
    }


def _conditions_of(obj: dict[str, Any]) -> list[tuple[dict[str, Any], int | None]]:
    """(condition, generation) of a Gateway, its listeners and a route's parents."""
    generation = (obj.get("metadata") or {}).get("generation")
    status = obj.get("status") or {}
    out = [(c, generation) for c in status.get("conditions") or []]
    for listener in status.get("listeners") or []:
        out += [(c, generation) for c in listener.get("conditions") or []]
    for parent in status.get("parents") or []:
        out += [(c, generation) for c in parent.get("conditions") or []]
    return out


def _all_parents(route: dict[str, Any], kind: str) -> bool:
    parents = (route.get("status") or {}).get("parents") or []
    return bool(parents) and all(
        {c.get("type"): c.get("status") for c in p.get("conditions") or []}.get(kind) == "True"
        for p in parents
    )


def check(test: ConformanceTest, live: list[dict[str, Any]], step: str = "all") -> str | None:
    """None when the test's status expectations hold, else the first one that does not.
    ``step``: "before" the test deletes its ReferenceGrant (status written, routes accepted),
    "after" (the conditions it names), or "all"."""
    for obj in live:
        meta = obj.get("metadata") or {}
        what = f"{obj['kind']} {meta.get('namespace')}/{meta.get('name')}"
        status = obj.get("status") or {}
        if obj["kind"] in ("Gateway", "GatewayClass"):
            conds = status.get("conditions") or []
            ours = [c for c in conds if c.get("reason") != "Pending"]
            if not ours or any(c.get("observedGeneration") != meta.get("generation") for c in ours):
                return f"{what}: no status for generation {meta.get('generation')}"
        elif obj["kind"] in ROUTE_KINDS:
            parents = status.get("parents") or []
            if not parents:
                return f"{what}: no status.parents"
            for parent in parents:
                for c in parent.get("conditions") or []:
                    if c.get("observedGeneration") != meta.get("generation"):
                        return f"{what}: parent condition {c.get('type')} of an old generation"
    seen = [c for obj in live for c, _ in _conditions_of(obj)]
    for kind, status_, reason in test.conditions if step != "before" else []:
        if not any(
            c.get("type") == kind
            and c.get("status") == status_
            and (reason is None or c.get("reason") == reason)
            for c in seen
        ):
            return f"no object has condition {kind}={status_}" + (f" ({reason})" if reason else "")
    routes = [o for o in live if o["kind"] in ROUTE_KINDS]
    for wanted, kind in (
        (test.expects_accepted, "Accepted"),
        (test.expects_resolved, "ResolvedRefs"),
    ):
        if step == "after":
            break
        if wanted and routes and not any(_all_parents(r, kind) for r in routes):
            return f"no route has every parent {kind} True"
    return None


def run_test(
    cluster: LocalCluster,
    test: ConformanceTest,
    class_name: str,
    controller: str,
    timeout: float,
) -> tuple[str, str]:
    """("pass" | "fail", detail) for one core test; its objects are removed afterwards."""
    docs: list[dict[str, Any]] = []
    for manifest in test.manifests:
        docs += objects(render(manifest, class_name, controller))
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
    watched = [
        d for d in docs if d["kind"] in ("Gateway", "GatewayClass") or d["kind"] in ROUTE_KINDS
    ]
    try:
        if test.deletes_grant:
            problem = _wait_for(cluster, test, watched, timeout, "before")
            if problem is not None:
                return "fail", f"before the ReferenceGrant is deleted: {problem}"
            grants = [d for d in docs if d["kind"] == "ReferenceGrant"]
            cluster.kubectl("delete", "-f", "-", input=yaml.safe_dump_all(grants))
            problem = _wait_for(cluster, test, watched, timeout, "after")
            if problem is not None:
                return "fail", f"after the ReferenceGrant is deleted: {problem}"
            return "pass", ""
        problem = _wait_for(cluster, test, watched, timeout, "all")
        return ("pass", "") if problem is None else ("fail", problem)
    finally:
        cluster.kubectl(
            "delete", "-f", "-", "--ignore-not-found", "--wait=false",
            input=yaml.safe_dump_all([d for d in docs if d["kind"] != "Namespace"]),
            check=False,
        )  # fmt: skip


def _wait_for(
    cluster: LocalCluster,
    test: ConformanceTest,
    watched: list[dict[str, Any]],
    timeout: float,
    step: str,
) -> str | None:
    """Poll the test's objects until ``check`` holds (None) or ``timeout`` passes (why not)."""
    problem: str | None = "not checked"
    deadline = time.time() + timeout
    while time.time() < deadline:
        live = []
        for d in watched:
            kind = f"{d['kind'].lower()}.gateway.networking.k8s.io"
            meta = d["metadata"]
            ns = meta.get("namespace", "default")
            proc = cluster.kubectl("get", kind, meta["name"], "-n", ns, "-o", "json", check=False)
            if proc.returncode == 0:
                live.append(json.loads(proc.stdout))
        problem = check(test, live, step)
        if problem is None:
            return None
        time.sleep(0.5)
    return problem


# Core tests whose traffic expectations run through a real gateway Envoy with loopback
# backends (tests/envoy/test_gateway_api_conformance_traffic.py).
TRAFFIC_CHECKED = frozenset(
    {
        "HTTPRouteSimpleSameNamespace",
        "HTTPRouteExactPathMatching",
        "HTTPRouteMatching",
        "HTTPRouteWeight",
        "HTTPRouteHeaderMatching",
        "HTTPRouteInvalidNonExistentBackendRef",
        "HTTPRouteInvalidBackendRefUnknownKind",
        "HTTPRouteNoBackendRefs",
        "HTTPRouteRedirectHostAndStatus",
        "HTTPRoutePathMatchOrder",
        "HTTPRouteMatchingAcrossRoutes",
        "HTTPRouteInvalidCrossNamespaceBackendRef",
        "HTTPRouteReferenceGrant",
        "HTTPRouteListenerHostnameMatching",
        "HTTPRouteHostnameIntersection",
        "HTTPRouteInvalidReferenceGrant",
        "HTTPRoutePartiallyInvalidViaInvalidReferenceGrant",
        "HTTPRouteMultipleGateways",
        # part "gwroutes"
        "GRPCExactMethodMatching",
        "GRPCRouteHeaderMatching",
        "GRPCRouteListenerHostnameMatching",
        "GRPCRouteWeight",
        "HTTPRouteCrossNamespace",
        "HTTPRouteServiceTypes",
        "HTTPRouteHTTPSListener",
        "TLSRouteSimpleSameNamespace",
        "TCPRouteWeightedRouting",
        "TCPRouteReferenceGrant",
        "TCPRouteParentRefPortAndSectionName",
        "TCPRouteMultipleRoutesAttachment",
        "TCPRouteParentRefAttachAll",
        "TLSRouteHostnameIntersection",
    }
)


def table(
    results: list[tuple[ConformanceTest, str, str]], title: str = "core conformance test"
) -> str:
    lines = [
        f"| {title} | status on the real apiserver | traffic |",
        "| --- | --- | --- |",
    ]
    for test, verdict, detail in results:
        status = verdict if not detail else f"{verdict}: {detail}"
        traffic = "expected by the test; not run here yet" if test.traffic else "none expected"
        if test.short_name in TRAFFIC_CHECKED:
            traffic = "pass (real Envoy, loopback backends)"
        lines.append(f"| {test.short_name} | {status.replace('|', '/')} | {traffic} |")
    return "\n".join(lines)
