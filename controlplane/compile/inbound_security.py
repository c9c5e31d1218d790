"""Security on the inbound side: mTLS filter chains (PeerAuthentication) and RBAC filters
(AuthorizationPolicy) for one inbound port.

The inbound module builds one plaintext chain per port; ``secure_port_chains`` turns it into
what the port's mTLS mode asks for, telling TLS from plaintext with the TLS inspector:

- STRICT: only a ``transport_protocol: tls`` chain that terminates mTLS; a plaintext
  connection matches no chain and is closed before any byte reaches the application.
- PERMISSIVE: that TLS chain (for TLS that offers the mesh's ALPN, ``istio``...), a
  ``raw_buffer`` twin for plaintext, and other TLS passed through to the application as it
  is, as Istio does (an app that terminates TLS itself keeps working).
- DISABLE: the plaintext chain alone.

A proxy without a certificate (its connection proved no identity) cannot terminate mTLS:
under PERMISSIVE or DISABLE it serves plaintext, under STRICT it refuses every connection
(fail closed) rather than fall back to plaintext.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2

from controlplane.compile.authn import DISABLE, PERMISSIVE, STRICT
from controlplane.compile.filters import NETWORK_RBAC_FILTER
from controlplane.compile.jwt import WorkloadJwt
from controlplane.compile.protos import packed
from controlplane.compile.rbac import WorkloadPolicies
from controlplane.compile.tls import ALPN_HTTP_INBOUND, inbound_tls_context, transport_socket

TLS_TRANSPORT = "tls"
RAW_TRANSPORT = "raw_buffer"
# What a mesh client offers in its handshake (Istio's sidecars add the istio-http/* forms).
MESH_ALPNS = ("istio-peer-exchange", "istio", "istio-http/1.0", "istio-http/1.1", "istio-h2")


@dataclass(frozen=True)
class InboundSecurity:
    """What shapes one inbound port's security; equal values build equal chains."""

    mode: str = PERMISSIVE  # the port's PeerAuthentication mode
    has_identity: bool = False  # the proxy has a certificate to serve
    policies: WorkloadPolicies = field(
        default_factory=lambda: WorkloadPolicies({}), compare=False, hash=False
    )
    policies_key: tuple[tuple[str, str, str], ...] = ()  # identifies ``policies``
    jwt: WorkloadJwt = field(default_factory=WorkloadJwt)  # RequestAuthentication (HTTP)

    @classmethod
    def of(
        cls,
        mode: str,
        has_identity: bool,
        policies: WorkloadPolicies,
        jwt: WorkloadJwt | None = None,
    ) -> InboundSecurity:
        return cls(mode, has_identity, policies, policies.key, jwt or WorkloadJwt())


def deny_all_network_filter() -> lc.Filter:
    """Closes every connection: an ALLOW network RBAC with no policy."""
    return lc.Filter(
        name=NETWORK_RBAC_FILTER,
        typed_config=packed(
            network_rbac_pb2.RBAC(
                rules=rbac_pb2.RBAC(action=rbac_pb2.RBAC.ALLOW), stat_prefix="tcp.strict."
            )
        ),
    )


def _copy(chain: lc.FilterChain, transport: str) -> lc.FilterChain:
    out = lc.FilterChain()
    out.CopyFrom(chain)
    out.filter_chain_match.transport_protocol = transport
    return out


def _refused(chain: lc.FilterChain) -> lc.FilterChain:
    out = lc.FilterChain()
    out.CopyFrom(chain)
    out.filters.insert(0, deny_all_network_filter())
    return out


def secure_port_chains(
    chains: list[lc.FilterChain],
    security: InboundSecurity,
    *,
    http: bool,
    tls_passthrough: lc.FilterChain | None = None,
) -> list[lc.FilterChain]:
    """The port's chains as its mTLS mode wants them (see the module docstring).

    Under PERMISSIVE with a ``tls_passthrough`` chain (a TCP proxy to the app), the mTLS chain
    also requires the mesh's ALPN (``istio``...), as Istio does, and other TLS goes through to
    the application untouched: an app that terminates TLS itself keeps working.
    """
    out: list[lc.FilterChain] = []
    for chain in chains:
        if security.mode == DISABLE:
            out.append(chain)
            continue
        if not security.has_identity:
            out.append(_refused(chain) if security.mode == STRICT else chain)
            continue
        mtls = _copy(chain, TLS_TRANSPORT)
        alpn = ALPN_HTTP_INBOUND if http else ()
        mtls.transport_socket.CopyFrom(transport_socket(inbound_tls_context(alpn)))
        out.append(mtls)
        if security.mode == PERMISSIVE:
            out.append(_copy(chain, RAW_TRANSPORT))
            if tls_passthrough is not None:
                mtls.filter_chain_match.application_protocols[:] = MESH_ALPNS
                out.append(_copy(tls_passthrough, TLS_TRANSPORT))
    return out


def plaintext_only_chains(chain: lc.FilterChain, security: InboundSecurity) -> list[lc.FilterChain]:
    """A chain that can only serve plaintext (it matches on HTTP inspection): kept for
    plaintext under PERMISSIVE, dropped under STRICT (a TLS twin elsewhere serves mTLS)."""
    if security.mode == DISABLE:
        return [chain]
    if not security.has_identity:
        return [_refused(chain) if security.mode == STRICT else chain]
    if security.mode == PERMISSIVE:
        return [_copy(chain, RAW_TRANSPORT)]
    return []
