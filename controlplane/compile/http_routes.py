"""RDS content: the Envoy routes one VirtualService's ``http`` section becomes.

``routes.py`` assembles route configurations and virtual hosts; this module turns each
``HTTPRoute`` into Envoy ``Route`` entries: match, destinations (weights, consistent-hash
policies), rewrite, redirect, timeouts, retries, mirroring, and the per-route fault and CORS
configuration (translated in ``route_policies``).
"""

from __future__ import annotations

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.extensions.retry.priority.previous_priorities.v3 import (
    previous_priorities_config_pb2,
)
from envoy.type.matcher.v3 import regex_pb2

from controlplane.api.gateway import MESH, resolve_gateway_name
from controlplane.api.networking import (
    Destination,
    HTTPMatchRequest,
    HTTPRetry,
    HTTPRoute,
    HTTPRouteDestination,
    StringMatch,
    VirtualService,
)
from controlplane.compile.cluster_policy import effective_policy
from controlplane.compile.filters import CORS_FILTER, FAULT_FILTER
from controlplane.compile.naming import outbound_cluster_name
from controlplane.compile.protos import duration, packed, uint32
from controlplane.compile.proxy import Proxy
from controlplane.compile.route_policies import (
    HeaderOperations,
    cors_policy,
    hash_policy,
    header_operations,
    http_fault,
    mirror_policy,
    redirect_action,
    route_mirror_fractions,
    string_matcher,
)
from controlplane.store.gatewayapi_inputs import uses_gateway_semantics
from controlplane.store.reads import SnapshotReader
from controlplane.store.registry import selects
from controlplane.store.snapshot import resolve_host

DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
DEFAULT_RETRY_ATTEMPTS = 2
UNKNOWN_SERVICE = "UnknownService"  # istiod's cluster name for an invalid backend
_HTTP_STATUS = range(100, 600)


def routes_from_virtual_service(
    snapshot: SnapshotReader,
    vs: VirtualService,
    port: int,
    proxy: Proxy,
    gateway: str | None = None,
) -> list[rc.Route]:
    """Envoy routes for one port of a host: first match wins, one route per match entry,
    and nothing after the first catch-all. ``gateway`` ("ns/name"): the routes as that
    Gateway's server on ``port`` sees them (None: a sidecar, bound as ``mesh``)."""
    out = _routes(snapshot, vs, port, proxy, gateway)
    if uses_gateway_semantics(vs):
        # The Gateway API: requests that would go to an invalid backend get 500 (istiod's
        # applyHTTPRouteDestination under UseGatewaySemantics).
        for route in out:
            if route.HasField("route"):
                route.route.cluster_not_found_response_code = rc.RouteAction.INTERNAL_SERVER_ERROR
    return out


def _routes(
    snapshot: SnapshotReader,
    vs: VirtualService,
    port: int,
    proxy: Proxy,
    gateway: str | None,
) -> list[rc.Route]:
    out: list[rc.Route] = []
    namespace = vs.metadata.namespace
    for http in vs.spec.http:
        if not http.match:
            route = _build_route(snapshot, http, None, namespace, port, proxy)
            if route is not None:
                out.append(route)
            return out  # a route without match conditions catches everything
        for match in http.match:
            if not _match_applies(match, port, proxy, namespace, gateway):
                continue
            route = _build_route(snapshot, http, match, namespace, port, proxy)
            if route is None:
                continue
            out.append(route)
            if is_catch_all(route):
                return out
    return out


def _match_applies(
    match: HTTPMatchRequest, port: int, proxy: Proxy, namespace: str, gateway: str | None
) -> bool:
    if match.port is not None and match.port != port:
        return False
    if match.gateways:
        # Gateway names in a match replace the source conditions; sidecars are "mesh".
        names = {resolve_gateway_name(g, namespace) for g in match.gateways}
        return (gateway or MESH) in names
    if match.source_labels and not selects(match.source_labels, proxy.labels):
        return False
    if match.source_namespace and match.source_namespace != proxy.namespace:
        return False
    return True


def is_catch_all(route: rc.Route) -> bool:
    """Matches every request: prefix ``/`` or regex ``.*`` with no header/query conditions."""
    match = route.match
    which = match.WhichOneof("path_specifier")
    path_all = (which == "prefix" and match.prefix == "/") or (
        which == "safe_regex" and match.safe_regex.regex == ".*"
    )
    return path_all and not match.headers and not match.query_parameters


def _build_route(
    snapshot: SnapshotReader,
    http: HTTPRoute,
    match: HTTPMatchRequest | None,
    namespace: str,
    port: int,
    proxy: Proxy,
) -> rc.Route | None:
    name = http.name or ""
    if match is not None and match.name:
        name = f"{name}.{match.name}"
    route = rc.Route(name=name, match=route_match(match))
    ops = header_operations(http.headers)
    if http.redirect is not None:
        redirect = redirect_action(http.redirect, port)
        if redirect is None:
            return None
        route.redirect.CopyFrom(redirect)
    elif http.route:
        route.route.CopyFrom(_route_action(snapshot, http, namespace, port, proxy, ops))
    elif http.direct_response is not None:
        # As istiod: the status and a literal body (the Gateway API's 500 for a rule whose
        # backends do not resolve is one, store/gatewayapi.py).
        direct = rc.DirectResponseAction(status=http.direct_response.status)
        body = http.direct_response.body
        if body is not None and body.string is not None:
            direct.body.inline_string = body.string
        route.direct_response.CopyFrom(direct)
    else:
        return None  # delegate: not supported yet (reported at validation)
    route.request_headers_to_add.extend(ops.request_to_add)
    route.request_headers_to_remove.extend(ops.request_to_remove)
    route.response_headers_to_add.extend(ops.response_to_add)
    route.response_headers_to_remove.extend(ops.response_to_remove)
    live = live_destinations(http)
    if http.redirect is None and len(live) == 1 and live[0].headers is not None:
        # A lone destination's header operations go on the route, after the route-level ones.
        dest_ops = header_operations(live[0].headers)
        route.request_headers_to_add.extend(dest_ops.request_to_add)
        route.request_headers_to_remove.extend(dest_ops.request_to_remove)
        route.response_headers_to_add.extend(dest_ops.response_to_add)
        route.response_headers_to_remove.extend(dest_ops.response_to_remove)
    fault = http_fault(http.fault)
    if fault is not None:
        route.typed_per_filter_config[FAULT_FILTER].CopyFrom(packed(fault))
    cors = cors_policy(http.cors_policy)
    if cors is not None:
        route.typed_per_filter_config[CORS_FILTER].CopyFrom(packed(cors))
    return route


def route_match(match: HTTPMatchRequest | None) -> rc.RouteMatch:
    """Path (exact / prefix / RE2), headers sorted by name, then :method, :authority, :scheme,
    then query parameters; ``ignoreUriCase`` turns case sensitivity off."""
    out = rc.RouteMatch(prefix="/")
    if match is None:
        return out
    for header, value in sorted(match.headers.items()):
        out.headers.append(header_matcher(header, value))
    uri = match.uri
    if uri is not None:
        if uri.exact is not None:
            out.path = uri.exact
        elif uri.prefix is not None:
            out.prefix = uri.prefix
        elif uri.regex is not None:
            out.safe_regex.CopyFrom(regex_pb2.RegexMatcher(regex=uri.regex))
    if match.ignore_uri_case:
        out.case_sensitive.value = False  # Envoy's default is case-sensitive
    for pseudo, pseudo_match in (
        (":method", match.method),
        (":authority", match.authority),
        (":scheme", match.scheme),
    ):
        if pseudo_match is not None:
            out.headers.append(header_matcher(pseudo, pseudo_match))
    for name, value in sorted(match.query_params.items()):
        param = rc.QueryParameterMatcher(name=name)
        if _is_present_match(value):
            param.present_match = True
        else:
            param.string_match.CopyFrom(string_matcher(value))
        out.query_parameters.append(param)
    return out


def _is_present_match(match: StringMatch) -> bool:
    # Istio reads regex "*" (not valid RE2) as "present", like an empty match.
    if match.exact is None and match.prefix is None and match.regex is None:
        return True
    return match.regex == "*"


def header_matcher(name: str, match: StringMatch) -> rc.HeaderMatcher:
    if _is_present_match(match):
        return rc.HeaderMatcher(name=name, present_match=True)
    return rc.HeaderMatcher(name=name, string_match=string_matcher(match))


def destination_port(
    snapshot: SnapshotReader, host: str, requested: int | None, listener_port: int
) -> int:
    """Destination port: as written, else the service's only port, else the listener's."""
    if requested:
        return requested
    service = snapshot.services.get(host)
    if service is not None and len(service.ports) == 1:
        return service.ports[0].port
    return listener_port


def destination_cluster(
    snapshot: SnapshotReader, dest: Destination, namespace: str, port: int
) -> str:
    if not dest.host:
        # Only a Gateway API backendRef that does not resolve has no host (istiod's
        # GetDestinationCluster): a cluster that never exists, so its share fails.
        return UNKNOWN_SERVICE
    host = resolve_host(dest.host, namespace)
    number = dest.port.number if dest.port else None
    return outbound_cluster_name(destination_port(snapshot, host, number, port), dest.subset, host)


def destination_hash(
    snapshot: SnapshotReader, dest: Destination, namespace: str, port: int, client_namespace: str
) -> rc.RouteAction.HashPolicy | None:
    """The hash policy of the consistent-hash DestinationRule (as seen by the client) that
    shapes this destination's cluster, if any."""
    if not dest.host:
        return None
    host = resolve_host(dest.host, namespace)
    rule = snapshot.destination_rule(host, client_namespace)
    if rule is None:
        return None
    number = destination_port(snapshot, host, dest.port.number if dest.port else None, port)
    subset = rule.subset(dest.subset) if dest.subset else None
    return hash_policy(effective_policy(rule.traffic_policy, subset, number).consistent_hash)


def default_hash_policy(
    snapshot: SnapshotReader, hostname: str, port: int, client_namespace: str
) -> rc.RouteAction.HashPolicy | None:
    """For the default route of a service without a VirtualService."""
    return destination_hash(snapshot, Destination(host=hostname), "", port, client_namespace)


def live_destinations(http: HTTPRoute) -> list[HTTPRouteDestination]:
    """The destinations that take traffic: a lone destination always, otherwise those with a
    positive weight (one left means a plain cluster, several a weighted split)."""
    if len(http.route) == 1:
        return list(http.route)
    return [d for d in http.route if d.weight]


def _route_action(
    snapshot: SnapshotReader,
    http: HTTPRoute,
    namespace: str,
    port: int,
    proxy: Proxy,
    ops: HeaderOperations,
) -> rc.RouteAction:
    action = rc.RouteAction()
    authority = ops.authority
    rewrite = http.rewrite
    if rewrite is not None:
        if rewrite.uri_regex_rewrite is not None:
            action.regex_rewrite.pattern.regex = rewrite.uri_regex_rewrite.match
            action.regex_rewrite.substitution = rewrite.uri_regex_rewrite.rewrite
        elif rewrite.uri:
            action.prefix_rewrite = rewrite.uri
        authority = rewrite.authority or authority
    if authority:
        action.host_rewrite_literal = authority
    for mirrored, fraction in route_mirror_fractions(http):
        cluster = destination_cluster(snapshot, mirrored, namespace, port)
        action.request_mirror_policies.append(mirror_policy(cluster, fraction))
    consistent_hash = False
    live = live_destinations(http)
    if len(live) == 1:
        dest = live[0]
        action.cluster = destination_cluster(snapshot, dest.destination, namespace, port)
        if dest.headers is not None:
            dest_authority = header_operations(dest.headers).authority
            if dest_authority and not action.host_rewrite_literal:
                action.host_rewrite_literal = dest_authority
        policy = destination_hash(snapshot, dest.destination, namespace, port, proxy.namespace)
        if policy is not None:
            action.hash_policy.append(policy)
            consistent_hash = True
    else:
        for dest in live:
            weight = rc.WeightedCluster.ClusterWeight(
                name=destination_cluster(snapshot, dest.destination, namespace, port),
                weight=uint32(dest.weight or 0),
            )
            dest_ops = header_operations(dest.headers)
            weight.request_headers_to_add.extend(dest_ops.request_to_add)
            weight.request_headers_to_remove.extend(dest_ops.request_to_remove)
            weight.response_headers_to_add.extend(dest_ops.response_to_add)
            weight.response_headers_to_remove.extend(dest_ops.response_to_remove)
            if dest_ops.authority:
                weight.host_rewrite_literal = dest_ops.authority
            action.weighted_clusters.clusters.append(weight)
            policy = destination_hash(snapshot, dest.destination, namespace, port, proxy.namespace)
            if policy is not None:
                action.hash_policy.append(policy)
    # Like istiod, only a single consistent-hash destination drops the previous-hosts retry
    # predicate (retrying elsewhere would break stickiness).
    return route_action_defaults(action, http.timeout, http.retries, consistent_hash)


def route_action_defaults(
    action: rc.RouteAction,
    timeout: float | None,
    retries: HTTPRetry | None,
    consistent_hash: bool = False,
) -> rc.RouteAction:
    """Timeout (0 = none; also the cap on a gRPC client's grpc-timeout) and retry policy.

    Like istiod, the cap goes in the deprecated ``max_grpc_timeout``: setting its replacement
    (``max_stream_duration``) switches Envoy to stream-duration timeouts and the route
    ``timeout`` would no longer apply.
    """
    action.cluster_not_found_response_code = rc.RouteAction.SERVICE_UNAVAILABLE
    action.timeout.CopyFrom(duration(timeout or 0.0))
    action.max_grpc_timeout.CopyFrom(duration(timeout or 0.0))
    policy = retry_policy(retries, consistent_hash)
    if policy is not None:
        action.retry_policy.CopyFrom(policy)
    return action


def retry_policy(retries: HTTPRetry | None, consistent_hash: bool = False) -> rc.RetryPolicy | None:
    """Istio's retry semantics: unset means 2 attempts on connection-level failures and 503;
    ``attempts: 0`` turns retries off; a given ``retryOn`` replaces the conditions (numbers
    in it are status codes)."""
    if retries is not None and retries.attempts <= 0:
        return None
    policy = rc.RetryPolicy(
        retry_on=DEFAULT_RETRY_ON,
        num_retries=uint32(DEFAULT_RETRY_ATTEMPTS),
        retriable_status_codes=[503],
        host_selection_retry_max_attempts=5,
    )
    if not consistent_hash:
        policy.retry_host_predicate.append(
            rc.RetryPolicy.RetryHostPredicate(
                name="envoy.retry_host_predicates.previous_hosts",
                typed_config=packed(previous_hosts_pb2.PreviousHostsPredicate()),
            )
        )
    if retries is None:
        return policy
    policy.num_retries.value = retries.attempts
    if retries.retry_on:
        conditions: list[str] = []
        codes: list[int] = []
        for item in (x.strip() for x in retries.retry_on.split(",")):
            if not item:
                continue
            if item.isdigit() and int(item) in _HTTP_STATUS:
                codes.append(int(item))
            else:
                conditions.append(item)
        if codes and "retriable-status-codes" not in conditions:
            conditions.append("retriable-status-codes")
        policy.retry_on = ",".join(conditions)
        del policy.retriable_status_codes[:]
        policy.retriable_status_codes.extend(codes)
    if retries.per_try_timeout:
        policy.per_try_timeout.CopyFrom(duration(retries.per_try_timeout))
    if retries.retry_remote_localities:
        policy.retry_priority.name = "envoy.retry_priorities.previous_priorities"
        policy.retry_priority.typed_config.CopyFrom(
            packed(previous_priorities_config_pb2.PreviousPrioritiesConfig(update_frequency=2))
        )
    if retries.backoff:
        policy.retry_back_off.base_interval.CopyFrom(duration(retries.backoff))
    return policy
