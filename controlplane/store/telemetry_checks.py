"""A Telemetry in the context of the mesh (part "telemetry"): the providers it names against
the mesh config's ``extensionProviders`` and the registry, and Telemetries that compete for
the same workloads (istioctl's IST0159 and IST0160; istiod applies the oldest namespace-wide
one, and every selecting one in creation order). Never blocking: the Telemetry is applied as
istiod applies it, and the finding says what that means.
"""

from __future__ import annotations

from typing import Any

from controlplane.api.issues import Code, Codes, Issue, ResourceKey
from controlplane.api.kube import Pod
from controlplane.api.mesh import MeshConfigSpec, MeshExtensionProvider
from controlplane.api.telemetry import ProviderRef, Telemetry
from controlplane.store.reads import SnapshotReader
from controlplane.store.snapshot import created

TELEMETRY_CONTEXT_CODES: frozenset[Code] = frozenset(
    {
        Codes.TELEMETRY_PROVIDER_NOT_FOUND,
        Codes.UNSUPPORTED_TELEMETRY_PROVIDER,
        Codes.TRACING_PROVIDER_SERVICE_NOT_FOUND,
        Codes.CONFLICTING_TELEMETRY_SELECTORS,
        Codes.MULTIPLE_TELEMETRIES_WITHOUT_SELECTOR,
        Codes.INVALID_TELEMETRY_PROVIDER,
    }
)
# The kinds of provider each section can use here (mesh config field names).
_LOGGING_KINDS = ("envoyFileAccessLog",)
_TRACING_KINDS = ("zipkin", "opentelemetry")
_METRICS_KINDS = ("prometheus",)
_BUILTIN = {"envoy": "envoyFileAccessLog", "prometheus": "prometheus", "stackdriver": "stackdriver"}


def _provider(mesh: MeshConfigSpec, name: str) -> MeshExtensionProvider | None:
    for provider in mesh.extension_providers:
        if provider.name.lower() == name.lower():
            return provider
    return None


def _kind_of(provider: MeshExtensionProvider) -> str:
    dumped = provider.model_dump(by_alias=True, exclude_none=True)
    return next((k for k in dumped if k != "name"), "")


def check_telemetry(snapshot: SnapshotReader, telemetry: Telemetry) -> list[Issue]:
    key = ResourceKey("Telemetry", telemetry.metadata.namespace, telemetry.metadata.name)
    found = _check_providers(snapshot, telemetry)
    found += _check_competing(snapshot, telemetry)
    return [i.with_context(key, None) for i in found]


def _check_providers(snapshot: SnapshotReader, telemetry: Telemetry) -> list[Issue]:
    mesh = snapshot.mesh
    spec = telemetry.spec
    found: list[Issue] = []
    sections: list[tuple[str, list[ProviderRef], tuple[str, ...]]] = []
    for i, logging in enumerate(spec.access_logging):
        sections.append((f"spec.accessLogging[{i}]", logging.providers, _LOGGING_KINDS))
        if (
            not logging.providers
            and not logging.disabled
            and not mesh.default_providers.access_logging
        ):
            found.append(
                Issue(
                    Codes.INVALID_TELEMETRY_PROVIDER,
                    f"spec.accessLogging[{i}].providers",
                    "an access logging entry with empty providers and no "
                    "defaultProviders.accessLogging in the mesh config is ignored (istioctl "
                    "IST0157)",
                )
            )
    for i, tracing in enumerate(spec.tracing):
        # istiod uses the first provider of a tracing entry only.
        sections.append((f"spec.tracing[{i}]", tracing.providers[:1], _TRACING_KINDS))
    for i, metrics in enumerate(spec.metrics):
        sections.append((f"spec.metrics[{i}]", metrics.providers, _METRICS_KINDS))
    for path, providers, usable in sections:
        for j, ref in enumerate(providers):
            found += _check_provider(
                snapshot, mesh, f"{path}.providers[{j}].name", ref.name, usable
            )
    return found


def _check_provider(
    snapshot: SnapshotReader, mesh: MeshConfigSpec, path: str, name: str, usable: tuple[str, ...]
) -> list[Issue]:
    if not name:
        return []  # refused by validation
    provider = _provider(mesh, name)
    kind = _kind_of(provider) if provider is not None else _BUILTIN.get(name.lower(), "")
    if not kind:
        available = ", ".join(sorted({p.name for p in mesh.extension_providers} | set(_BUILTIN)))
        return [
            Issue(
                Codes.TELEMETRY_PROVIDER_NOT_FOUND,
                path,
                f"the mesh config defines no extension provider {name!r} (extensionProviders: "
                f"{available}); it is skipped, as istiod skips it",
            )
        ]
    if kind not in usable:
        if usable == _METRICS_KINDS:
            reason = "only the prometheus metrics provider is implemented (Envoy's statistics)"
        else:
            reason = f"only {' and '.join(usable)} providers are implemented here"
        return [
            Issue(
                Codes.UNSUPPORTED_TELEMETRY_PROVIDER,
                path,
                f"extension provider {name!r} is a {kind} provider: {reason}; it has no effect",
            )
        ]
    if kind in _TRACING_KINDS and provider is not None:
        config: Any = provider.zipkin or provider.opentelemetry
        namespace, _, hostname = config.service.rpartition("/")
        service = snapshot.services.get(hostname)
        if service is None or (namespace and service.namespace != namespace):
            return [
                Issue(
                    Codes.TRACING_PROVIDER_SERVICE_NOT_FOUND,
                    path,
                    f"tracing provider {name!r}: could not find service {config.service} in the "
                    "service registry; no tracing is configured where it applies (as istiod)",
                )
            ]
        if service.port(config.port) is None:
            return [
                Issue(
                    Codes.TRACING_PROVIDER_SERVICE_NOT_FOUND,
                    path,
                    f"tracing provider {name!r}: service {service.hostname} has no port "
                    f"{config.port}; no tracing is configured where it applies",
                )
            ]
    return []


def _check_competing(snapshot: SnapshotReader, telemetry: Telemetry) -> list[Issue]:
    namespace = telemetry.metadata.namespace
    peers = sorted(
        (t for t in snapshot.of_kind(Telemetry).values() if t.metadata.namespace == namespace),
        key=created,
    )
    if telemetry.spec.namespace_wide:
        defaults = [t.metadata.name for t in peers if t.spec.namespace_wide]
        if len(defaults) < 2:
            return []
        return [
            Issue(
                Codes.MULTIPLE_TELEMETRIES_WITHOUT_SELECTOR,
                "spec",
                f"the Telemetries {', '.join(defaults)} in namespace {namespace} have no "
                f"workload selector (istioctl IST0160); only the oldest, {defaults[0]}, applies",
            )
        ]
    selector = telemetry.spec.selector
    if selector is None or not selector.match_labels:
        return []
    found: list[Issue] = []
    for pod in snapshot.of_kind(Pod).values():
        if pod.metadata.namespace != namespace:
            continue
        labels = pod.metadata.labels
        rivals = [
            t.metadata.name
            for t in peers
            if t.spec.selector is not None
            and t.spec.selector.match_labels
            and all(labels.get(k) == v for k, v in t.spec.selector.match_labels.items())
        ]
        if len(rivals) > 1 and telemetry.metadata.name in rivals:
            found.append(
                Issue(
                    Codes.CONFLICTING_TELEMETRY_SELECTORS,
                    "spec.selector",
                    f"the Telemetries {', '.join(rivals)} in namespace {namespace} select the "
                    f"same workload pod {pod.metadata.name} (istioctl IST0159); each applies "
                    "over the one created before it",
                )
            )
    return found
