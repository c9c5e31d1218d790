"""Validation of a Sidecar on its own, as istiod's webhook does it (``ValidateSidecar`` in
istio's pkg/config/validation/validation.go): the same verdicts (error or warning) for the
same input, with this project's field paths.
"""

from __future__ import annotations

import ipaddress
import re

from controlplane.api.issues import Codes, Issue, Level
from controlplane.api.sidecar import IstioEgressListener, IstioIngressListener, Sidecar, SidecarPort
from controlplane.api.traffic_rules import check_connection_pool
from controlplane.api.validation import check_duration, check_host, register_validator

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# The protocols Istio parses (protocol.Parse, case-insensitive); "" means sniffed.
PROTOCOLS = frozenset(
    {"http", "https", "http2", "grpc", "grpc-web", "tcp", "tls", "udp", "mongo", "mysql", "redis"}
)
UNIX_PREFIX = "unix://"


def _error(path: str, reason: str) -> Issue:
    return Issue(Codes.INVALID_FIELD, path, reason)


def _warning(path: str, reason: str) -> Issue:
    return Issue(Codes.INVALID_FIELD, path, reason, level=Level.WARNING)


def validate_sidecar(sidecar: Sidecar) -> list[Issue]:
    spec = sidecar.spec
    found: list[Issue] = []
    selector = spec.workload_selector
    if selector is not None:
        for k, v in selector.labels.items():
            lpath = f"spec.workloadSelector.labels.{k}"
            if k == "":
                found.append(_error(lpath, f"empty key is not supported in selector: {k}={v!r}"))
            if "*" in k or "*" in v:
                found.append(_error(lpath, f"wildcard is not supported in selector: {k}={v}"))
        if not selector.labels:
            found.append(
                _warning(
                    "spec.workloadSelector",
                    "workload selector specified without labels, will be applied to all "
                    "services in namespace",
                )
            )
    if (
        not spec.egress
        and not spec.ingress
        and spec.outbound_traffic_policy is None
        and spec.inbound_connection_pool is None
    ):
        found.append(_error("spec", "sidecar: empty configuration provided"))
    found += _validate_ingress(spec.ingress)
    if spec.inbound_connection_pool is not None:
        found += check_connection_pool(
            "spec.inboundConnectionPool", spec.inbound_connection_pool, check_duration
        )
    found += _validate_egress(sidecar.metadata.namespace, spec.egress)
    found += _validate_outbound_policy(sidecar)
    return found


def _check_port(path: str, port: SidecarPort, egress: bool, bind: str) -> list[Issue]:
    found: list[Issue] = []
    if port.target_port:
        found.append(_error(f"{path}.targetPort", "targetPort has no impact on Sidecars"))
    if port.name and not _DNS1123_LABEL.match(port.name):
        found.append(_error(f"{path}.name", f"invalid port name {port.name!r}"))
    if port.protocol and port.protocol.lower() not in PROTOCOLS:
        found.append(_error(f"{path}.protocol", f"unsupported protocol: {port.protocol}"))
    if egress and port.number == 0:
        return found  # a Unix domain socket listener: checked by the caller
    if not 1 <= port.number <= 65535:
        found.append(_error(f"{path}.number", f"port number {port.number} must be in 1..65535"))
    return found


def _check_ip(path: str, value: str) -> list[Issue]:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return [_error(path, f"{value!r} is not a valid IP address")]
    return []


def _validate_ingress(listeners: list[IstioIngressListener]) -> list[Issue]:
    found: list[Issue] = []
    ports: set[int] = set()
    for i, listener in enumerate(listeners):
        path = f"spec.ingress[{i}]"
        if listener.port is None:
            found.append(_error(f"{path}.port", "sidecar: port is required for ingress listeners"))
            continue
        found += _check_port(f"{path}.port", listener.port, False, listener.bind)
        if listener.bind:
            found += _check_ip(f"{path}.bind", listener.bind)
        if listener.port.number in ports:
            found.append(
                _error(f"{path}.port", "sidecar: ports on IP bound listeners must be unique")
            )
        ports.add(listener.port.number)
        if listener.default_endpoint:
            found += _check_default_endpoint(f"{path}.defaultEndpoint", listener.default_endpoint)
        tls = listener.tls
        if tls is not None:
            tpath = f"{path}.tls"
            if tls.subject_alt_names:
                found.append(
                    _error(tpath, "sidecar: subjectAltNames is not supported in ingress tls")
                )
            if tls.https_redirect:
                found.append(_error(tpath, "sidecar: httpsRedirect is not supported"))
            if tls.credential_name:
                found.append(_error(tpath, "sidecar: credentialName is not currently supported"))
            if tls.credential_names:
                found.append(_error(tpath, "sidecar: credentialNames is not currently supported"))
            if tls.tls_certificates:
                found.append(_error(tpath, "sidecar: tls_certificates is not currently supported"))
            if tls.mode in ("ISTIO_MUTUAL", "AUTO_PASSTHROUGH"):
                found.append(
                    _error(f"{tpath}.mode", f"cannot set mode to {tls.mode} in sidecar ingress tls")
                )
            if listener.port.protocol.lower() not in ("https", "tls"):
                found.append(
                    _error(tpath, "server cannot have TLS settings for non HTTPS/TLS ports")
                )
        if listener.connection_pool is not None:
            found += check_connection_pool(
                f"{path}.connectionPool", listener.connection_pool, check_duration
            )
            if listener.connection_pool.http is not None and listener.port.protocol.lower() not in (
                "http",
                "http2",
                "grpc",
                "grpc-web",
            ):
                found.append(
                    _warning(
                        f"{path}.connectionPool.http",
                        f"sidecar: HTTP connection pool settings are configured for port "
                        f"{listener.port.number} but its protocol is not HTTP "
                        f"({listener.port.protocol}); only TCP settings will apply",
                    )
                )
    return found


def _check_default_endpoint(path: str, value: str) -> list[Issue]:
    if value.startswith(UNIX_PREFIX):
        return [] if value[len(UNIX_PREFIX) :] else [_error(path, "unix address must not be empty")]
    host, colon, port = value.rpartition(":")
    if not colon:
        return [_error(path, f"address {value}: missing port in address")]
    host = host.removeprefix("[").removesuffix("]")
    found: list[Issue] = []
    if host not in ("", "127.0.0.1", "0.0.0.0", "::1", "::"):
        found.append(
            _error(
                path,
                "sidecar: defaultEndpoint must be of form 127.0.0.1:<port>,0.0.0.0:<port>,"
                "[::1]:port,[::]:port,unix://filepath or unset",
            )
        )
    if not port.isdigit():
        found.append(_error(path, f"sidecar: defaultEndpoint port ({port}) is not a number"))
    elif not 1 <= int(port) <= 65535:
        found.append(_error(path, f"port number {port} must be in 1..65535"))
    return found


def _validate_egress(namespace: str, listeners: list[IstioEgressListener]) -> list[Issue]:
    found: list[Issue] = []
    ports: set[int] = set()
    sockets: set[str] = set()
    catch_all = False
    for i, listener in enumerate(listeners):
        path = f"spec.egress[{i}]"
        if listener.port is None:
            if catch_all:
                found.append(
                    _error(path, "sidecar: egress can have only one listener with empty port")
                )
                continue
            if i == len(listeners) - 1:
                catch_all = True
            else:
                found.append(
                    _error(
                        path,
                        "sidecar: the egress listener with empty port should be the last "
                        "listener in the list",
                    )
                )
        else:
            found += _check_port(f"{path}.port", listener.port, True, listener.bind)
            if listener.port.number == 0:
                if not listener.bind.startswith(UNIX_PREFIX):
                    found.append(
                        _error(
                            f"{path}.bind",
                            "sidecar: ports with 0 value must have a unix domain socket bind "
                            "address",
                        )
                    )
                if listener.capture_mode not in ("DEFAULT", "NONE"):
                    found.append(
                        _error(
                            f"{path}.captureMode",
                            "sidecar: captureMode must be DEFAULT/NONE for unix domain socket "
                            "listeners",
                        )
                    )
                if listener.bind in sockets:
                    found.append(
                        _error(
                            f"{path}.bind",
                            "sidecar: unix domain socket values for listeners must be unique",
                        )
                    )
                sockets.add(listener.bind)
            else:
                if listener.bind:
                    found += _check_ip(f"{path}.bind", listener.bind)
                if listener.port.number in ports:
                    found.append(
                        _error(
                            f"{path}.port", "sidecar: ports on IP bound listeners must be unique"
                        )
                    )
                ports.add(listener.port.number)
        found += _validate_egress_hosts(f"{path}.hosts", namespace, listener.hosts)
    return found


def _validate_egress_hosts(path: str, namespace: str, hosts: list[str]) -> list[Issue]:
    if not hosts:
        return [_error(path, "sidecar: egress listener must contain at least one host")]
    found: list[Issue] = []
    seen: dict[str, set[str]] = {}
    for i, entry in enumerate(hosts):
        hpath = f"{path}[{i}]"
        ns, slash, name = entry.partition("/")
        if slash and not ns.startswith("~"):
            key = namespace if ns == "." else ns
            names = seen.setdefault(key, set())
            if (name != "*" and (name in names or "*" in names)) or (name == "*" and names):
                found.append(_warning(hpath, f"duplicated egress host: {entry}"))
            names.add(name)
        found += check_egress_host(hpath, entry)
    if "*" in seen.get("*", set()) and len(seen) != 1:
        found.append(_warning(path, "`*/*` host select all resources, no other hosts can be added"))
    return found


def check_egress_host(path: str, entry: str) -> list[Issue]:
    """``namespace/dnsName``: namespace ``*``, ``.``, a DNS-1123 label, each optionally
    ``~``-prefixed (exclusion); dnsName ``*``, ``*.suffix`` or an FQDN (no short names)."""
    if entry.count("/") < 1:
        return [_error(path, f"{entry!r}: host must be of form namespace/dnsName")]
    ns, _, name = entry.partition("/")
    if not ns or not name:
        return [_error(path, "config namespace and dnsName in host entry cannot be empty")]
    found: list[Issue] = []
    bare = ns.removeprefix("~")
    if bare not in ("", "*", ".") and not _DNS1123_LABEL.match(bare):
        found.append(_error(path, f"invalid namespace value {ns!r} in sidecar"))
    if name != "*" and "." not in name:
        found.append(_error(path, f"{entry!r}: short names (non FQDN) are not allowed"))
    elif name != "*":
        found += check_host(path, name)
    return found


def _validate_outbound_policy(sidecar: Sidecar) -> list[Issue]:
    policy = sidecar.spec.outbound_traffic_policy
    if policy is None:
        return []
    path = "spec.outboundTrafficPolicy"
    if policy.mode == "ALLOW_ANY_DYNAMIC_DNS":
        return [
            _error(
                f"{path}.mode",
                "sidecar: ALLOW_ANY_DYNAMIC_DNS mode is only supported in MeshConfig, not in "
                "Sidecar resource",
            )
        ]
    proxy = policy.egress_proxy
    if proxy is None:
        return []
    if policy.mode != "ALLOW_ANY":
        return [
            _error(
                f"{path}.egressProxy",
                "sidecar: egress_proxy must be set only with ALLOW_ANY outbound_traffic_policy mode",
            )
        ]
    found = check_host(f"{path}.egressProxy.host", proxy.host, allow_wildcard=False)
    if proxy.port is None:
        found.append(
            _error(f"{path}.egressProxy.port", "sidecar: egress_proxy port must be non-nil")
        )
    elif proxy.port.number is not None:
        if not 1 <= proxy.port.number <= 65535:
            found.append(
                _error(
                    f"{path}.egressProxy.port.number",
                    f"port number {proxy.port.number} must be in 1..65535",
                )
            )
    return found


register_validator("Sidecar", validate_sidecar)
