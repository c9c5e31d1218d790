"""RDS content: the Envoy routes one VirtualService's ``http`` section becomes.

``routes.py`` assembles route configurations and virtual hosts; this module turns each
``HTTPRoute`` into Envoy ``Route`` entries (match, action, retries, timeouts).
"""

from __future__ import annotations

from collections.abc import Sequence

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2

from controlplane.api.networking import (
    HTTPMatchRequest,
    HTTPRetry,
    HTTPRoute,
    StringMatch,
    VirtualService,
)
from controlplane.compile.naming import outbound_cluster_name
from controlplane.compile.protos import duration, packed, uint32
from controlplane.compile.proxy import Proxy
from controlplane.store.registry import selects
from controlplane.store.snapshot import Snapshot, resolve_host

DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
DEFAULT_RETRY_ATTEMPTS = 2


def routes_from_virtual_service(
    snapshot: Snapshot, vs: VirtualService, port: int, proxy: Proxy
) -> list[rc.Route]:
    """Envoy routes for one port of a host: first match wins, one route per match entry,
    and nothing after the first catch-all."""
    out: list[rc.Route] = []
    namespace = vs.metadata.namespace
    for http in vs.spec.http:
        matches: Sequence[HTTPMatchRequest | None] = http.match or [None]
        for match in matches:
            if match is not None and not _match_applies(match, port, proxy):
                continue
            route = _build_route(snapshot, http, match, namespace, port)
            if route is None:
                continue
            out.append(route)
            if match is None or _is_catch_all(match):
                return out
    return out


def _match_applies(match: HTTPMatchRequest, port: int, proxy: Proxy) -> bool:
    if match.port is not None and match.port != port:
        return False
    if match.source_labels and not selects(match.source_labels, proxy.labels):
        return False
    if match.source_namespace and match.source_namespace != proxy.namespace:
        return False
    return True


def _is_catch_all(match: HTTPMatchRequest) -> bool:
    uri_catch_all = (
        match.uri is None
        or (match.uri.prefix == "/" and match.uri.exact is None)
        or (match.uri.regex in ("*", ".*"))
    )
    return (
        uri_catch_all
        and not match.headers
        and not match.query_params
        and match.method is None
        and match.authority is None
        and match.scheme is None
        and not match.without_headers
    )


def _build_route(
    snapshot: Snapshot, http: HTTPRoute, match: HTTPMatchRequest | None, namespace: str, port: int
) -> rc.Route | None:
    name = http.name or ""
    if match is not None and match.name:
        name = f"{name}.{match.name}" if name else match.name
    route = rc.Route(name=name, match=_route_match(match))
    if http.route:
        action = _route_action(snapshot, http, namespace, port)
        if action is None:
            return None
        route.route.CopyFrom(action)
    else:
        return None  # redirect / directResponse / delegate: not supported yet (reported)
    return route


def _route_match(match: HTTPMatchRequest | None) -> rc.RouteMatch:
    out = rc.RouteMatch()
    uri = match.uri if match is not None else None
    if uri is None or (uri.exact is None and uri.regex is None):
        out.prefix = uri.prefix if uri is not None and uri.prefix is not None else "/"
    elif uri.exact is not None:
        out.path = uri.exact
    else:
        out.safe_regex.CopyFrom(regex_pb2.RegexMatcher(regex=uri.regex))
    if match is not None:
        for header, value in sorted(match.headers.items()):
            out.headers.append(_header_matcher(header, value))
    return out


def _header_matcher(name: str, match: StringMatch) -> rc.HeaderMatcher:
    if match.exact is None and match.prefix is None and match.regex is None:
        return rc.HeaderMatcher(name=name, present_match=True)
    return rc.HeaderMatcher(name=name, string_match=string_matcher(match))


def string_matcher(match: StringMatch) -> string_pb2.StringMatcher:
    if match.exact is not None:
        return string_pb2.StringMatcher(exact=match.exact)
    if match.prefix is not None:
        return string_pb2.StringMatcher(prefix=match.prefix)
    return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=match.regex or ""))


def destination_port(
    snapshot: Snapshot, host: str, requested: int | None, listener_port: int
) -> int:
    """Destination port: as written, else the service's only port, else the listener's."""
    if requested:
        return requested
    service = snapshot.services.get(host)
    if service is not None and len(service.ports) == 1:
        return service.ports[0].port
    return listener_port


def _route_action(
    snapshot: Snapshot, http: HTTPRoute, namespace: str, port: int
) -> rc.RouteAction | None:
    weighted: list[tuple[str, int]] = []
    for dest in http.route:
        host = resolve_host(dest.destination.host, namespace)
        number = dest.destination.port.number if dest.destination.port else None
        cluster = outbound_cluster_name(
            destination_port(snapshot, host, number, port), dest.destination.subset, host
        )
        weight = dest.weight if dest.weight is not None else (100 if len(http.route) == 1 else 0)
        if weight > 0:
            weighted.append((cluster, weight))
    if not weighted:
        return None
    if len(weighted) == 1:
        action = rc.RouteAction(cluster=weighted[0][0])
    else:
        action = rc.RouteAction(
            weighted_clusters=rc.WeightedCluster(
                clusters=[
                    rc.WeightedCluster.ClusterWeight(name=c, weight=uint32(w)) for c, w in weighted
                ]
            )
        )
    return route_action_defaults(action, http.timeout, http.retries)


def route_action_defaults(
    action: rc.RouteAction, timeout: float | None, retries: HTTPRetry | None
) -> rc.RouteAction:
    action.cluster_not_found_response_code = rc.RouteAction.SERVICE_UNAVAILABLE
    action.timeout.CopyFrom(duration(timeout or 0.0))
    action.max_stream_duration.grpc_timeout_header_max.CopyFrom(duration(timeout or 0.0))
    policy = retry_policy(retries)
    if policy is not None:
        action.retry_policy.CopyFrom(policy)
    return action


def retry_policy(retries: HTTPRetry | None) -> rc.RetryPolicy | None:
    """Istio's retry semantics: unset means 2 attempts on connection-level failures and 503;
    ``attempts: 0`` turns retries off."""
    if retries is not None and retries.attempts == 0:
        return None
    attempts = DEFAULT_RETRY_ATTEMPTS if retries is None else retries.attempts
    retry_on_text = (
        DEFAULT_RETRY_ON if retries is None or not retries.retry_on else retries.retry_on
    )
    policies: list[str] = []
    codes: list[int] = [503] if retries is None or not retries.retry_on else []
    for item in (x.strip() for x in retry_on_text.split(",")):
        if not item:
            continue
        if item.isdigit():
            codes.append(int(item))
        elif item not in policies:
            policies.append(item)
    if codes and "retriable-status-codes" not in policies:
        policies.append("retriable-status-codes")
    policy = rc.RetryPolicy(
        retry_on=",".join(policies),
        num_retries=uint32(attempts),
        retriable_status_codes=codes,
        host_selection_retry_max_attempts=5,
        retry_host_predicate=[
            rc.RetryPolicy.RetryHostPredicate(
                name="envoy.retry_host_predicates.previous_hosts",
                typed_config=packed(previous_hosts_pb2.PreviousHostsPredicate()),
            )
        ],
    )
    if retries is not None and retries.per_try_timeout:
        policy.per_try_timeout.CopyFrom(duration(retries.per_try_timeout))
    return policy
