"""DestinationRule traffic policy -> the parts of an Envoy Cluster it shapes.

Which policy applies to one cluster follows istiod (``MergeSubsetTrafficPolicy``): a matching
``portLevelSettings`` entry replaces the top-level policy whole (fields it omits fall back to
defaults, not to the top level); a subset's policy then overrides component by component, and a
subset's matching port-level entry replaces everything. The four components are connection pool,
load balancer, outlier detection and TLS (TLS is applied by the security code).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import protocol_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo
from envoy.type.v3 import percent_pb2

from controlplane.api.networking import (
    ClientTLSSettings,
    ConnectionPoolSettings,
    ConsistentHashLB,
    LoadBalancerSettings,
    LocalityLoadBalancerSetting,
    OutlierDetection,
    Subset,
    TrafficPolicy,
)
from controlplane.compile.endpoints import LocalityPolicy
from controlplane.compile.protos import duration, packed, uint32
from controlplane.compile.proxy import Proxy
from controlplane.store.registry import MeshPort

DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_RING_SIZE = 1024
HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
MAX_UINT32 = 4294967295

_T = TypeVar("_T")
_SIMPLE_LB = {
    "ROUND_ROBIN": cluster_pb2.Cluster.ROUND_ROBIN,
    "LEAST_REQUEST": cluster_pb2.Cluster.LEAST_REQUEST,
    # Istio maps the deprecated LEAST_CONN to LEAST_REQUEST.
    "LEAST_CONN": cluster_pb2.Cluster.LEAST_REQUEST,
    "RANDOM": cluster_pb2.Cluster.RANDOM,
    "UNSPECIFIED": cluster_pb2.Cluster.LEAST_REQUEST,
}


@dataclass(frozen=True)
class EffectivePolicy:
    """The traffic policy components that apply to one cluster (subset and port resolved)."""

    connection_pool: ConnectionPoolSettings | None = None
    load_balancer: LoadBalancerSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None

    @property
    def consistent_hash(self) -> ConsistentHashLB | None:
        return self.load_balancer.consistent_hash if self.load_balancer else None

    @property
    def locality_setting(self) -> LocalityLoadBalancerSetting | None:
        """The DestinationRule's locality settings, None when absent or disabled."""
        setting = self.load_balancer.locality_lb_setting if self.load_balancer else None
        if setting is not None and setting.enabled is False:
            return None
        return setting


NO_POLICY = EffectivePolicy()


def _port_level(policy: TrafficPolicy | None, port: int) -> tuple[EffectivePolicy | None, bool]:
    if policy is None:
        return None, False
    for entry in policy.port_level_settings:
        if entry.port is not None and entry.port.number == port:
            return (
                EffectivePolicy(
                    entry.connection_pool, entry.load_balancer, entry.outlier_detection, entry.tls
                ),
                True,
            )
    return (
        EffectivePolicy(
            policy.connection_pool, policy.load_balancer, policy.outlier_detection, policy.tls
        ),
        False,
    )


def effective_policy(
    top: TrafficPolicy | None, subset: Subset | None, port: int
) -> EffectivePolicy:
    """The policy of cluster ``outbound|port|subset|host``: subset-port > subset > top-port >
    top, one whole component at a time."""
    original, _ = _port_level(top, port)
    sub_policy = subset.traffic_policy if subset is not None else None
    if sub_policy is None:
        return original or NO_POLICY
    override, whole = _port_level(sub_policy, port)
    assert override is not None
    if original is None:
        return override

    return EffectivePolicy(
        _choose(override.connection_pool, original.connection_pool, whole),
        _choose(override.load_balancer, original.load_balancer, whole),
        _choose(override.outlier_detection, original.outlier_detection, whole),
        _choose(override.tls, original.tls, whole),
    )


def _choose(mine: _T | None, inherited: _T | None, whole: bool) -> _T | None:
    """A port-level entry replaces whole (its gaps are defaults); otherwise gaps inherit."""
    return mine if mine is not None or whole else inherited


def apply_traffic_policy(
    cluster: cluster_pb2.Cluster, port: MeshPort, policy: EffectivePolicy
) -> None:
    """Shape an outbound cluster: connection pool, HTTP/2 upgrade, outlier detection, load
    balancing, in istiod's order (outlier detection before load balancing, which reads it)."""
    apply_connection_pool(cluster, policy.connection_pool)
    _apply_h2_upgrade(cluster, port, policy.connection_pool)
    apply_outlier_detection(cluster, policy.outlier_detection)
    apply_load_balancer(cluster, policy.load_balancer)


# ---- connection pool ----------------------------------------------------------------------


def _positive(value: int | None) -> int:
    """istiod cannot tell an unset proto3 int from 0: only positive values count."""
    return value if value is not None and value > 0 else 0


def default_thresholds() -> circuit_breaker_pb2.CircuitBreakers.Thresholds:
    """Istio lifts Envoy's small defaults (e.g. 3 parallel retries) to the maximum."""
    return circuit_breaker_pb2.CircuitBreakers.Thresholds(
        max_connections=uint32(MAX_UINT32),
        max_pending_requests=uint32(MAX_UINT32),
        max_requests=uint32(MAX_UINT32),
        max_retries=uint32(MAX_UINT32),
        track_remaining=True,
    )


def apply_connection_pool(
    cluster: cluster_pb2.Cluster, pool: ConnectionPoolSettings | None
) -> None:
    thresholds = default_thresholds()
    cluster.connect_timeout.CopyFrom(duration(DEFAULT_CONNECT_TIMEOUT))
    http, tcp = (pool.http, pool.tcp) if pool is not None else (None, None)
    idle_timeout: float | None = None
    per_connection = 0
    if http is not None:
        if _positive(http.http2_max_requests):
            thresholds.max_requests.value = _positive(http.http2_max_requests)
        if _positive(http.http1_max_pending_requests):
            thresholds.max_pending_requests.value = _positive(http.http1_max_pending_requests)
        if _positive(http.max_retries):
            thresholds.max_retries.value = _positive(http.max_retries)
        idle_timeout = http.idle_timeout
        per_connection = http.max_requests_per_connection or 0
    max_duration: float | None = None
    if tcp is not None:
        if tcp.connect_timeout is not None:
            cluster.connect_timeout.CopyFrom(duration(tcp.connect_timeout))
        if _positive(tcp.max_connections):
            thresholds.max_connections.value = _positive(tcp.max_connections)
        max_duration = tcp.max_connection_duration
        if idle_timeout is None:
            idle_timeout = tcp.idle_timeout
        keepalive = tcp.tcp_keepalive
        if keepalive is not None:
            # An empty TcpKeepalive turns SO_KEEPALIVE on with the OS defaults.
            ka = cluster.upstream_connection_options.tcp_keepalive
            ka.SetInParent()
            if _positive(keepalive.probes):
                ka.keepalive_probes.value = _positive(keepalive.probes)
            if keepalive.time is not None:
                ka.keepalive_time.value = int(keepalive.time)
            if keepalive.interval is not None:
                ka.keepalive_interval.value = int(keepalive.interval)
    cluster.circuit_breakers.CopyFrom(circuit_breaker_pb2.CircuitBreakers(thresholds=[thresholds]))
    if idle_timeout is not None or per_connection > 0 or max_duration is not None:
        options = http_options(cluster)
        common = options.common_http_protocol_options
        if idle_timeout is not None:
            common.idle_timeout.CopyFrom(duration(idle_timeout))
        if per_connection > 0:
            common.max_requests_per_connection.value = per_connection
        if max_duration is not None:
            common.max_connection_duration.CopyFrom(duration(max_duration))
        set_http_options(cluster, options)


def http_options(cluster: cluster_pb2.Cluster) -> hpo.HttpProtocolOptions:
    """The cluster's upstream HTTP options (HTTP/1.1 unless already set otherwise)."""
    options = hpo.HttpProtocolOptions()
    existing = cluster.typed_extension_protocol_options.get(HTTP_PROTOCOL_OPTIONS)
    if existing is not None:
        existing.Unpack(options)
    if not options.HasField("explicit_http_config") and not options.HasField(
        "use_downstream_protocol_config"
    ):
        options.explicit_http_config.http_protocol_options.SetInParent()
    return options


def set_http_options(cluster: cluster_pb2.Cluster, options: hpo.HttpProtocolOptions) -> None:
    cluster.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS].CopyFrom(packed(options))


def use_http2(cluster: cluster_pb2.Cluster) -> None:
    options = http_options(cluster)
    options.explicit_http_config.http2_protocol_options.CopyFrom(
        protocol_pb2.Http2ProtocolOptions()
    )
    set_http_options(cluster, options)


def _apply_h2_upgrade(
    cluster: cluster_pb2.Cluster, port: MeshPort, pool: ConnectionPoolSettings | None
) -> None:
    # The mesh default (h2UpgradePolicy DO_NOT_UPGRADE) upgrades nothing; a rule's UPGRADE
    # upgrades even a port of unknown protocol, because the user says it is HTTP.
    policy = pool.http.h2_upgrade_policy if pool is not None and pool.http is not None else None
    if policy == "UPGRADE" and port.protocol not in ("HTTP2", "GRPC"):
        use_http2(cluster)


# ---- outlier detection --------------------------------------------------------------------


def apply_outlier_detection(cluster: cluster_pb2.Cluster, outlier: OutlierDetection | None) -> None:
    if outlier is None:
        return
    out = outlier_detection_pb2.OutlierDetection(enforcing_success_rate=uint32(0))
    consecutive_5xx = outlier.consecutive_5xx_errors
    if consecutive_5xx is not None:
        out.consecutive_5xx.value = consecutive_5xx
        out.enforcing_consecutive_5xx.value = 100 if consecutive_5xx > 0 else 0
    gateway = outlier.consecutive_gateway_errors
    if gateway is not None:
        out.consecutive_gateway_failure.value = gateway
        out.enforcing_consecutive_gateway_failure.value = 100 if gateway > 0 else 0
    if outlier.interval is not None:
        out.interval.CopyFrom(duration(outlier.interval))
    if outlier.base_ejection_time is not None:
        out.base_ejection_time.CopyFrom(duration(outlier.base_ejection_time))
    if _positive(outlier.max_ejection_percent):
        out.max_ejection_percent.value = _positive(outlier.max_ejection_percent)
    if outlier.split_external_local_origin_errors:
        out.split_external_local_origin_errors = True
        if _positive(outlier.consecutive_local_origin_failures):
            out.consecutive_local_origin_failure.value = _positive(
                outlier.consecutive_local_origin_failures
            )
            out.enforcing_consecutive_local_origin_failure.value = 100
        out.enforcing_local_origin_success_rate.value = 0
    cluster.outlier_detection.CopyFrom(out)
    # Istio turns the panic threshold off (Envoy's default is 50%): with few pods per service
    # panic mode would send traffic to the ejected ones.
    cluster.common_lb_config.healthy_panic_threshold.CopyFrom(
        percent_pb2.Percent(value=float(outlier.min_health_percent or 0))
    )


# ---- load balancing -----------------------------------------------------------------------


def apply_load_balancer(cluster: cluster_pb2.Cluster, lb: LoadBalancerSettings | None) -> None:
    _apply_locality_config(cluster, lb)
    simple = lb.simple if lb is not None else None
    if simple == "PASSTHROUGH":
        # Straight to the address the application dialled: no endpoints from us.
        cluster.type = cluster_pb2.Cluster.ORIGINAL_DST
        cluster.ClearField("eds_cluster_config")
        cluster.lb_policy = cluster_pb2.Cluster.CLUSTER_PROVIDED
        return
    cluster.lb_policy = _SIMPLE_LB.get(simple or "UNSPECIFIED", cluster_pb2.Cluster.LEAST_REQUEST)
    if lb is not None and lb.warmup_duration_secs is not None:
        slow_start = cluster_pb2.Cluster.SlowStartConfig(
            slow_start_window=duration(lb.warmup_duration_secs)
        )
        if cluster.lb_policy == cluster_pb2.Cluster.ROUND_ROBIN:
            cluster.round_robin_lb_config.slow_start_config.CopyFrom(slow_start)
        elif cluster.lb_policy == cluster_pb2.Cluster.LEAST_REQUEST:
            cluster.least_request_lb_config.slow_start_config.CopyFrom(slow_start)
    hash_lb = lb.consistent_hash if lb is not None else None
    if hash_lb is None:
        return
    if hash_lb.maglev is not None:
        cluster.lb_policy = cluster_pb2.Cluster.MAGLEV
        if hash_lb.maglev.table_size:
            cluster.maglev_lb_config.table_size.value = hash_lb.maglev.table_size
    elif hash_lb.ring_hash is not None:
        cluster.lb_policy = cluster_pb2.Cluster.RING_HASH
        if hash_lb.ring_hash.minimum_ring_size:
            cluster.ring_hash_lb_config.minimum_ring_size.value = (
                hash_lb.ring_hash.minimum_ring_size
            )
    else:
        cluster.lb_policy = cluster_pb2.Cluster.RING_HASH
        cluster.ring_hash_lb_config.minimum_ring_size.value = (
            hash_lb.minimum_ring_size or DEFAULT_RING_SIZE
        )


def locality_failover_enabled(policy: EffectivePolicy) -> bool:
    """Failover between localities only works with outlier detection (otherwise Envoy never
    sees the local endpoints fail); Istio's mesh default enables locality LB."""
    return policy.outlier_detection is not None and (
        policy.load_balancer is None
        or policy.load_balancer.locality_lb_setting is None
        or policy.load_balancer.locality_lb_setting.enabled is not False
    )


def _apply_locality_config(cluster: cluster_pb2.Cluster, lb: LoadBalancerSettings | None) -> None:
    setting = lb.locality_lb_setting if lb is not None else None
    if setting is None or setting.enabled is False:
        return
    failover = bool(setting.failover or setting.failover_priority)
    if setting.distribute or (failover and cluster.HasField("outlier_detection")):
        cluster.common_lb_config.locality_weighted_lb_config.SetInParent()


def locality_policy(policy: EffectivePolicy, proxy: Proxy | None) -> LocalityPolicy | None:
    """How the cluster's endpoints are weighted or prioritised for ``proxy``; None when the
    assignment does not depend on the client (the common case, shared by every proxy)."""
    if proxy is None:
        return None
    setting = policy.locality_setting
    lb = policy.load_balancer
    if lb is not None and lb.locality_lb_setting is not None and setting is None:
        return None  # explicitly disabled
    distribute = setting is not None and bool(setting.distribute)
    failover = locality_failover_enabled(policy)
    if not distribute and not failover:
        return None
    labels = proxy.labels_key if setting is not None and setting.failover_priority else ()
    return LocalityPolicy(proxy.locality, labels, setting, failover)
