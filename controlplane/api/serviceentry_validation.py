"""Validation of ServiceEntry and WorkloadEntry, rule for rule as istiod's webhook
(pkg/config/validation: ValidateServiceEntry, ValidateWorkloadEntry): errors refuse the
resource, warnings are reported and the resource is kept."""

from __future__ import annotations

import ipaddress
import re

from controlplane.api.issues import Codes, Issue, Level
from controlplane.api.serviceentry import PROTOCOLS, ServiceEntry, WorkloadEntry, WorkloadEntrySpec
from controlplane.api.validation import (
    check_cidr,
    check_export_to,
    check_host,
    check_port,
    register_validator,
)

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_UNIX_PREFIX = "unix://"
_TLS_PROTOCOLS = frozenset({"HTTPS", "TLS"})
_HTTP_PROTOCOLS = frozenset({"HTTP", "HTTP2", "GRPC", "GRPC-WEB", "HTTP_PROXY"})


def _error(path: str, reason: str) -> Issue:
    return Issue(Codes.INVALID_FIELD, path, reason)


def _warning(path: str, reason: str) -> Issue:
    return Issue(Codes.INVALID_FIELD, path, reason, level=Level.WARNING)


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _is_fqdn(value: str) -> bool:
    """A DNS name istiod's agent.ValidateFQDN accepts: labels of letters, digits and '-'."""
    name = value.rstrip(".")
    if not name or len(name) > 253:
        return False
    return all(
        re.fullmatch(r"[a-zA-Z0-9]([-a-zA-Z0-9]{0,61}[a-zA-Z0-9])?", part)
        for part in name.split(".")
    )


# Kubernetes label keys (an optional DNS-subdomain prefix and '/', then a name of at most 63
# characters) and values (at most 63 characters, same alphabet, or empty), as istiod checks
# labels (pkg/config/labels).
_LABEL_NAME = r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)"
_LABEL_KEY = re.compile(rf"^([a-z0-9]([-a-z0-9.]{{0,251}}[a-z0-9])?/)?{_LABEL_NAME}$")
_LABEL_VALUE = re.compile(rf"^{_LABEL_NAME}?$")


def check_labels(path: str, labels: dict[str, str]) -> list[Issue]:
    found: list[Issue] = []
    for key, value in labels.items():
        where = f"{path}.{key}"
        if not _LABEL_KEY.match(key):
            found.append(_error(where, f"{key!r} is not a valid label key"))
        elif not _LABEL_VALUE.match(value):
            found.append(_error(where, f"{value!r} is not a valid label value"))
    return found


def check_port_name(path: str, name: str) -> list[Issue]:
    if not _DNS1123_LABEL.match(name):
        return [_error(path, f"invalid port name {name!r}: must be a DNS-1123 label")]
    return []


def check_protocol(path: str, protocol: str) -> list[Issue]:
    """A known protocol, or none (the proxy then detects it)."""
    if protocol and protocol.upper() not in PROTOCOLS or protocol.upper() == "UNSUPPORTED":
        return [_error(path, f"unrecognized protocol {protocol!r}")]
    return []


def _check_endpoint(
    path: str,
    entry: WorkloadEntrySpec,
    ports: set[str] | None,
    allow_fqdn: bool,
    allow_unix: bool = True,
) -> list[Issue]:
    """A WorkloadEntry, or an inline endpoint of a ServiceEntry (``ports``: its port names)."""
    found: list[Issue] = []
    address = entry.address
    if not address:
        if not entry.network:
            return [_error(f"{path}.address", "address is required")]
        found.append(
            _warning(f"{path}.address", f"address is unset with network {entry.network!r}")
        )
    if address.startswith(_UNIX_PREFIX):
        socket_path = address[len(_UNIX_PREFIX) :]
        if not allow_unix:
            found.append(
                _error(
                    f"{path}.address",
                    f"endpoint address {address!r} is not a valid FQDN or an IP address",
                )
            )
        elif not socket_path.startswith("/") and not socket_path.startswith("@"):
            found.append(
                _error(f"{path}.address", f"{address!r}: a unix socket path must be absolute")
            )
        if entry.ports:
            found.append(_error(f"{path}.ports", f"unix endpoint {address} must not include ports"))
        if ports is not None and len(ports) != 1:
            found.append(_error(path, "exactly 1 service port required for unix endpoints"))
    elif address and not _is_ip(address):
        if not allow_fqdn:
            found.append(
                _error(f"{path}.address", f"endpoint address {address!r} is not a valid IP address")
            )
        elif not _is_fqdn(address):
            found.append(
                _error(
                    f"{path}.address",
                    f"endpoint address {address!r} is not a valid FQDN or an IP address",
                )
            )
    for name, number in entry.ports.items():
        where = f"{path}.ports.{name}"
        if ports is not None and name not in ports:
            found.append(
                _error(where, f"endpoint port {number} is not defined by the service entry")
            )
        found += check_port_name(where, name)
        found += check_port(where, number)
    found += check_labels(f"{path}.labels", entry.labels)
    return found


def validate_workload_entry(entry: WorkloadEntry) -> list[Issue]:
    return _check_endpoint("spec", entry.spec, None, allow_fqdn=True)


def validate_service_entry(entry: ServiceEntry) -> list[Issue]:
    spec = entry.spec
    found: list[Issue] = []
    selector = spec.workload_selector
    if selector is not None and not selector.labels:
        found.append(
            _warning(
                "spec.workloadSelector",
                "workload selector has no labels: will be applied to all services in namespace",
            )
        )
    if selector is not None:
        found += check_labels("spec.workloadSelector.labels", selector.labels)
    if selector is not None and spec.endpoints is not None:
        found.append(
            _error("spec", "only one of workloadSelector or endpoints is allowed in a ServiceEntry")
        )
    if not spec.hosts:
        found.append(_error("spec.hosts", "service entry must have at least one host"))
    for i, host in enumerate(spec.hosts):
        path = f"spec.hosts[{i}]"
        if host == "*":
            found.append(_error(path, "invalid host *: a ServiceEntry may not claim every host"))
            continue
        found += check_host(path, host)
        if "*" in host and not host.startswith("*."):
            found.append(_warning(path, f"partial wildcard {host!r} is not supported"))
    cidr = False
    for i, address in enumerate(spec.addresses):
        cidr = cidr or "/" in address
        found += check_cidr(f"spec.addresses[{i}]", address)
    if cidr and spec.resolution not in ("NONE", "STATIC"):
        found.append(
            _error("spec.addresses", "CIDR addresses are allowed only for NONE/STATIC resolution")
        )
    names: set[str] = set()
    numbers: set[int] = set()
    for i, port in enumerate(spec.ports):
        path = f"spec.ports[{i}]"
        if port.name in names:
            found.append(
                _error(f"{path}.name", f"service entry port name {port.name!r} already defined")
            )
        if port.number in numbers:
            found.append(
                _error(f"{path}.number", f"service entry port {port.number} already defined")
            )
        names.add(port.name)
        numbers.add(port.number)
        if port.target_port:
            found += check_port(f"{path}.targetPort", port.target_port)
        if not spec.addresses and port.protocol.upper() in ("", "TCP"):
            found.append(
                Issue(
                    Codes.SERVICE_ENTRY_ADDRESSES_REQUIRED,
                    f"{path}.protocol",
                    "addresses are required for ports serving TCP (or unset) protocol when IP "
                    "autoallocation is not enabled (istioctl IST0134)",
                )
            )
        found += check_port_name(f"{path}.name", port.name)
        found += check_protocol(f"{path}.protocol", port.protocol)
        found += check_port(f"{path}.number", port.number or 0)
    found += _check_resolution(entry, names)
    if spec.resolution != "NONE" and len(spec.hosts) > 1:
        for i, port in enumerate(spec.ports):
            protocol = port.protocol.upper()
            if protocol not in _HTTP_PROTOCOLS and protocol not in _TLS_PROTOCOLS:
                found.append(
                    _error(
                        f"spec.ports[{i}]", "multiple hosts provided with non-HTTP, non-TLS ports"
                    )
                )
                break
    found += check_export_to("spec.exportTo", spec.export_to)
    return found


def _check_resolution(entry: ServiceEntry, port_names: set[str]) -> list[Issue]:
    spec = entry.spec
    endpoints = spec.endpoints or []
    found: list[Issue] = []
    if spec.resolution == "NONE":
        if endpoints:
            found.append(
                _error("spec.endpoints", "no endpoints should be provided for resolution NONE")
            )
        if spec.workload_selector is not None:
            found.append(
                _warning(
                    "spec.workloadSelector",
                    "workloadSelector should not be set when resolution is NONE",
                )
            )
    elif spec.resolution == "STATIC":
        for i, ep in enumerate(endpoints):
            found += _check_endpoint(f"spec.endpoints[{i}]", ep, port_names, allow_fqdn=False)
    elif spec.resolution in ("DNS", "DNS_ROUND_ROBIN"):
        if not endpoints:
            for i, host in enumerate(spec.hosts):
                if not _is_fqdn(host):
                    found.append(
                        _error(
                            f"spec.hosts[{i}]",
                            f"hosts must be FQDN if no endpoints are provided for resolution "
                            f"{spec.resolution} ({host!r} is not)",
                        )
                    )
                    break
        if spec.resolution == "DNS_ROUND_ROBIN" and len(endpoints) > 1:
            found.append(
                _error(
                    "spec.endpoints",
                    "there must only be 0 or 1 endpoint for resolution DNS_ROUND_ROBIN",
                )
            )
        for i, ep in enumerate(endpoints):
            found += _check_endpoint(
                f"spec.endpoints[{i}]", ep, port_names, allow_fqdn=True, allow_unix=False
            )
        tcp = any(p.protocol.upper() in ("", "TCP") for p in spec.ports)
        if spec.addresses and tcp and len(spec.hosts) > 1:
            found.append(
                _warning(
                    "spec.hosts",
                    "service entry can not have more than one host specified simultaneously "
                    "with address and tcp port",
                )
            )
    else:  # DYNAMIC_DNS: accepted by istiod for its dynamic forward proxy; not built here
        found.append(
            _error(
                "spec.resolution",
                "DYNAMIC_DNS is not supported by this control plane (use DNS or NONE)",
            )
        )
    return found


register_validator("ServiceEntry", validate_service_entry)
register_validator("WorkloadEntry", validate_workload_entry)
