"""networking.istio.io models: VirtualService and DestinationRule.

One schema serves v1, v1beta1 and v1alpha3, as in Istio. Every field Istio defines is
declared here so that types are checked; which of them the compiler implements is listed in
``controlplane.api.support``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from controlplane.api.base import (
    Duration,
    Int32,
    IstioModel,
    ObjectMeta,
    OptionalPort,
    UInt32,
    UInt64,
)

# ---- shared -------------------------------------------------------------------------------


class StringMatch(IstioModel):
    """Exactly one of exact, prefix, regex; an empty match means "present"."""

    exact: str | None = None
    prefix: str | None = None
    regex: str | None = None


class PortSelector(IstioModel):
    number: UInt32 | None = None


class Percent(IstioModel):
    value: float = 0.0


class Destination(IstioModel):
    host: str = ""
    subset: str | None = None
    port: PortSelector | None = None


class WorkloadSelector(IstioModel):
    match_labels: dict[str, str] = Field(default_factory=dict)


# ---- VirtualService -----------------------------------------------------------------------


class HTTPMatchRequest(IstioModel):
    name: str | None = None
    uri: StringMatch | None = None
    scheme: StringMatch | None = None
    method: StringMatch | None = None
    authority: StringMatch | None = None
    headers: dict[str, StringMatch] = Field(default_factory=dict)
    port: OptionalPort = None
    source_labels: dict[str, str] = Field(default_factory=dict)
    gateways: list[str] = Field(default_factory=list)
    query_params: dict[str, StringMatch] = Field(default_factory=dict)
    ignore_uri_case: bool = False
    without_headers: dict[str, StringMatch] = Field(default_factory=dict)
    source_namespace: str | None = None
    stat_prefix: str | None = None


class HeaderOperations(IstioModel):
    set: dict[str, str] = Field(default_factory=dict)
    add: dict[str, str] = Field(default_factory=dict)
    remove: list[str] = Field(default_factory=list)


class Headers(IstioModel):
    request: HeaderOperations | None = None
    response: HeaderOperations | None = None


class HTTPRouteDestination(IstioModel):
    destination: Destination
    weight: Int32 | None = None
    headers: Headers | None = None


class HTTPRedirect(IstioModel):
    uri: str | None = None
    authority: str | None = None
    port: UInt32 | None = None
    derive_port: Literal["FROM_PROTOCOL_DEFAULT", "FROM_REQUEST_PORT"] | None = None
    scheme: str | None = None
    redirect_code: UInt32 | None = None
    prefix_rewrite: str | None = None


class HTTPBody(IstioModel):
    string: str | None = None
    bytes: str | None = None


class HTTPDirectResponse(IstioModel):
    status: UInt32
    body: HTTPBody | None = None


class Delegate(IstioModel):
    name: str = ""
    namespace: str | None = None


class RegexRewrite(IstioModel):
    match: str = ""
    rewrite: str = ""


class HTTPRewrite(IstioModel):
    uri: str | None = None
    authority: str | None = None
    uri_regex_rewrite: RegexRewrite | None = None


class HTTPRetry(IstioModel):
    attempts: Int32 = 0
    per_try_timeout: Duration | None = None
    retry_on: str | None = None
    retry_remote_localities: bool | None = None
    retry_ignore_previous_hosts: bool | None = None
    backoff: Duration | None = None


class FaultDelay(IstioModel):
    fixed_delay: Duration | None = None
    exponential_delay: Duration | None = None
    percentage: Percent | None = None
    percent: Int32 | None = None


class FaultAbort(IstioModel):
    http_status: Int32 | None = None
    grpc_status: str | None = None
    http2_error: str | None = None
    percentage: Percent | None = None


class HTTPFaultInjection(IstioModel):
    delay: FaultDelay | None = None
    abort: FaultAbort | None = None


class HTTPMirrorPolicy(IstioModel):
    destination: Destination
    percentage: Percent | None = None


class CorsPolicy(IstioModel):
    allow_origins: list[StringMatch] = Field(default_factory=list)
    allow_origin: list[str] = Field(default_factory=list)
    allow_methods: list[str] = Field(default_factory=list)
    allow_headers: list[str] = Field(default_factory=list)
    expose_headers: list[str] = Field(default_factory=list)
    max_age: Duration | None = None
    allow_credentials: bool | None = None
    unmatched_preflights: Literal["UNSPECIFIED", "FORWARD", "IGNORE"] | None = None


class HTTPRoute(IstioModel):
    name: str | None = None
    match: list[HTTPMatchRequest] = Field(default_factory=list)
    route: list[HTTPRouteDestination] = Field(default_factory=list)
    redirect: HTTPRedirect | None = None
    direct_response: HTTPDirectResponse | None = None
    delegate: Delegate | None = None
    rewrite: HTTPRewrite | None = None
    timeout: Duration | None = None
    retries: HTTPRetry | None = None
    fault: HTTPFaultInjection | None = None
    mirror: Destination | None = None
    mirrors: list[HTTPMirrorPolicy] = Field(default_factory=list)
    mirror_percentage: Percent | None = None
    mirror_percent: UInt32 | None = None
    cors_policy: CorsPolicy | None = None
    headers: Headers | None = None


class RouteDestination(IstioModel):
    destination: Destination
    weight: Int32 | None = None


class L4MatchAttributes(IstioModel):
    destination_subnets: list[str] = Field(default_factory=list)
    port: OptionalPort = None
    source_subnet: str | None = None
    source_labels: dict[str, str] = Field(default_factory=dict)
    gateways: list[str] = Field(default_factory=list)
    source_namespace: str | None = None


class TLSMatchAttributes(IstioModel):
    sni_hosts: list[str] = Field(default_factory=list)
    destination_subnets: list[str] = Field(default_factory=list)
    port: OptionalPort = None
    source_labels: dict[str, str] = Field(default_factory=dict)
    gateways: list[str] = Field(default_factory=list)
    source_namespace: str | None = None


class TCPRoute(IstioModel):
    match: list[L4MatchAttributes] = Field(default_factory=list)
    route: list[RouteDestination] = Field(default_factory=list)


class TLSRoute(IstioModel):
    match: list[TLSMatchAttributes] = Field(default_factory=list)
    route: list[RouteDestination] = Field(default_factory=list)


class VirtualServiceSpec(IstioModel):
    hosts: list[str] = Field(default_factory=list)
    gateways: list[str] = Field(default_factory=list)
    http: list[HTTPRoute] = Field(default_factory=list)
    tls: list[TLSRoute] = Field(default_factory=list)
    tcp: list[TCPRoute] = Field(default_factory=list)
    export_to: list[str] = Field(default_factory=list)


# ---- DestinationRule ----------------------------------------------------------------------


class HTTPCookieAttribute(IstioModel):
    name: str = ""
    value: str | None = None


class HTTPCookie(IstioModel):
    name: str = ""
    path: str | None = None
    ttl: Duration | None = None
    attributes: list[HTTPCookieAttribute] = Field(default_factory=list)


class RingHash(IstioModel):
    minimum_ring_size: UInt64 | None = None


class MagLev(IstioModel):
    table_size: UInt64 | None = None


class ConsistentHashLB(IstioModel):
    http_header_name: str | None = None
    http_cookie: HTTPCookie | None = None
    use_source_ip: bool | None = None
    http_query_parameter_name: str | None = None
    ring_hash: RingHash | None = None
    maglev: MagLev | None = None
    minimum_ring_size: UInt64 | None = None


class LocalityDistribute(IstioModel):
    from_: str = Field(default="", alias="from")
    to: dict[str, int] = Field(default_factory=dict)


class LocalityFailover(IstioModel):
    from_: str = Field(default="", alias="from")
    to: str = ""


class LocalityLoadBalancerSetting(IstioModel):
    distribute: list[LocalityDistribute] = Field(default_factory=list)
    failover: list[LocalityFailover] = Field(default_factory=list)
    failover_priority: list[str] = Field(default_factory=list)
    enabled: bool | None = None


SimpleLB = Literal[
    "UNSPECIFIED", "LEAST_CONN", "RANDOM", "PASSTHROUGH", "ROUND_ROBIN", "LEAST_REQUEST"
]


class ZoneAwareLoadBalancerSetting(IstioModel):
    enabled: bool | None = None
    failover: list[LocalityFailover] = Field(default_factory=list)
    failover_priority: list[str] = Field(default_factory=list)
    min_cluster_size: UInt64 | None = None


class WarmupConfiguration(IstioModel):
    duration: Duration | None = None
    minimum_percent: float | None = None
    aggression: float | None = None


class LoadBalancerSettings(IstioModel):
    simple: SimpleLB | None = None
    consistent_hash: ConsistentHashLB | None = None
    locality_lb_setting: LocalityLoadBalancerSetting | None = None
    zone_aware_lb_setting: ZoneAwareLoadBalancerSetting | None = None
    warmup_duration_secs: Duration | None = None
    warmup: WarmupConfiguration | None = None


class TcpKeepalive(IstioModel):
    probes: UInt32 | None = None
    time: Duration | None = None
    interval: Duration | None = None


class TCPSettings(IstioModel):
    max_connections: Int32 | None = None
    connect_timeout: Duration | None = None
    tcp_keepalive: TcpKeepalive | None = None
    max_connection_duration: Duration | None = None
    idle_timeout: Duration | None = None


class ConnectionKeepalive(IstioModel):
    interval: Duration | None = None
    timeout: Duration | None = None


class HTTPSettings(IstioModel):
    http1_max_pending_requests: Int32 | None = None
    http2_max_requests: Int32 | None = None
    max_requests_per_connection: Int32 | None = None
    max_retries: Int32 | None = None
    idle_timeout: Duration | None = None
    h2_upgrade_policy: Literal["DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"] | None = None
    use_client_protocol: bool | None = None
    max_concurrent_streams: Int32 | None = None
    http2_keep_alive: ConnectionKeepalive | None = None


class ConnectionPoolSettings(IstioModel):
    tcp: TCPSettings | None = None
    http: HTTPSettings | None = None


class OutlierDetection(IstioModel):
    split_external_local_origin_errors: bool | None = None
    consecutive_local_origin_failures: UInt32 | None = None
    consecutive_gateway_errors: UInt32 | None = None
    consecutive_5xx_errors: UInt32 | None = Field(default=None, alias="consecutive5xxErrors")
    consecutive_errors: Int32 | None = None
    interval: Duration | None = None
    base_ejection_time: Duration | None = None
    max_ejection_percent: Int32 | None = None
    min_health_percent: Int32 | None = None
    outlier_detection_http_error_codes: list[UInt32] = Field(default_factory=list)


TLSMode = Literal["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"]


class ClientTLSSettings(IstioModel):
    mode: TLSMode = "DISABLE"
    client_certificate: str | None = None
    private_key: str | None = None
    ca_certificates: str | None = None
    credential_name: str | None = None
    subject_alt_names: list[str] = Field(default_factory=list)
    sni: str | None = None
    insecure_skip_verify: bool | None = None
    ca_crl: str | None = None


class PortTrafficPolicy(IstioModel):
    port: PortSelector | None = None
    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None


class TunnelSettings(IstioModel):
    protocol: str | None = None
    target_host: str = ""
    target_port: UInt32 | None = None


class ProxyProtocol(IstioModel):
    version: Literal["V1", "V2"] | None = None


class RetryBudget(IstioModel):
    percent: float | None = None
    min_retry_concurrency: UInt32 | None = None
    budget_interval: Duration | None = None


class TrafficPolicy(IstioModel):
    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None
    port_level_settings: list[PortTrafficPolicy] = Field(default_factory=list)
    tunnel: TunnelSettings | None = None
    proxy_protocol: ProxyProtocol | None = None
    retry_budget: RetryBudget | None = None


class Subset(IstioModel):
    name: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    traffic_policy: TrafficPolicy | None = None


class DestinationRuleSpec(IstioModel):
    host: str = ""
    traffic_policy: TrafficPolicy | None = None
    subsets: list[Subset] = Field(default_factory=list)
    export_to: list[str] = Field(default_factory=list)
    workload_selector: WorkloadSelector | None = None


# ---- the resources ------------------------------------------------------------------------


class VirtualService(IstioModel):
    api_version: str = "networking.istio.io/v1"
    kind: Literal["VirtualService"] = "VirtualService"
    metadata: ObjectMeta
    spec: VirtualServiceSpec


class DestinationRule(IstioModel):
    api_version: str = "networking.istio.io/v1"
    kind: Literal["DestinationRule"] = "DestinationRule"
    metadata: ObjectMeta
    spec: DestinationRuleSpec
