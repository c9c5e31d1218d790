"""Checks that need the rest of the mesh: a resource valid alone but broken in context."""

from __future__ import annotations

from controlplane.api.issues import Codes, Issue, Level, ResourceKey
from controlplane.api.networking import Destination, VirtualService
from controlplane.store.snapshot import Snapshot, resolve_host


def check_virtual_service(snapshot: Snapshot, vs: VirtualService) -> list[Issue]:
    """Destinations that point at a subset or port that does not exist, or an unknown host."""
    key = ResourceKey("VirtualService", vs.metadata.namespace, vs.metadata.name)
    found: list[Issue] = []
    for path, dest in _destinations(vs):
        found += _check_destination(snapshot, vs.metadata.namespace, path, dest)
    return [i.with_context(key, None) for i in found]


def _destinations(vs: VirtualService) -> list[tuple[str, Destination]]:
    out: list[tuple[str, Destination]] = []
    for i, http in enumerate(vs.spec.http):
        for j, route in enumerate(http.route):
            out.append((f"spec.http[{i}].route[{j}].destination", route.destination))
        if http.mirror is not None:
            out.append((f"spec.http[{i}].mirror", http.mirror))
        for j, mirror in enumerate(http.mirrors):
            out.append((f"spec.http[{i}].mirrors[{j}].destination", mirror.destination))
    for proto, routes in (("tcp", vs.spec.tcp), ("tls", vs.spec.tls)):
        for i, l4 in enumerate(routes):
            for j, route in enumerate(l4.route):
                out.append((f"spec.{proto}[{i}].route[{j}].destination", route.destination))
    return out


def _check_destination(
    snapshot: Snapshot, namespace: str, path: str, dest: Destination
) -> list[Issue]:
    host = resolve_host(dest.host, namespace)
    service = snapshot.services.get(host)
    found: list[Issue] = []
    if service is None:
        found.append(
            Issue(Codes.HOST_NOT_FOUND, f"{path}.host", f"no service in the mesh is named {host!r}")
        )
    elif (
        dest.port is not None
        and dest.port.number is not None
        and service.port(dest.port.number) is None
    ):
        have = ", ".join(str(p.port) for p in service.ports) or "none"
        found.append(
            Issue(
                Codes.PORT_NOT_FOUND,
                f"{path}.port.number",
                f"service {host} has no port {dest.port.number} (ports: {have})",
            )
        )
    if dest.subset:
        rule = snapshot.destination_rule(host, namespace)
        if rule is None or rule.subset(dest.subset) is None:
            where = (
                "no DestinationRule"
                if rule is None
                else f"DestinationRule {rule.sources[0].namespace}/{rule.sources[0].name}"
            )
            found.append(
                Issue(
                    Codes.SUBSET_NOT_FOUND,
                    f"{path}.subset",
                    f"subset {dest.subset!r} of host {host} is not defined ({where} defines it)",
                )
            )
    return found


def blocking(issues: list[Issue]) -> list[Issue]:
    """The in-context findings that keep a new version from replacing the last good one."""
    return [i for i in issues if i.severity is Level.ERROR]
