"""Security on the inbound side: mTLS filter chains (PeerAuthentication) and RBAC filters
(AuthorizationPolicy) for one inbound port.

The inbound module builds one plaintext chain per port; ``secure_port_chains`` turns it into
what the port's mTLS mode asks for, telling TLS from plaintext with the TLS inspector:

- STRICT: only a ``transport_protocol: tls`` chain that terminates mTLS; a plaintext
  connection matches no chain and is closed before any byte reaches the application.
- PERMISSIVE: that TLS chain plus a ``raw_buffer`` twin for plaintext.
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
from controlplane.compile.protos import packed
from controlplane.compile.rbac import NETWORK_RBAC_FILTER, WorkloadPolicies
from controlplane.compile.tls import ALPN_HTTP_INBOUND, inbound_tls_context, transport_socket

TLS_TRANSPORT = "tls"
RAW_TRANSPORT = "raw_buffer"


@dataclass(frozen=True)
class InboundSecurity:
    """What shapes one inbound port's security; equal values build equal chains."""

    mode: str = PERMISSIVE  # the port's PeerAuthentication mode
    has_identity: bool = False  # the proxy has a certificate to serve
    policies: WorkloadPolicies = field(
        default_factory=lambda: WorkloadPolicies({}), compare=False, hash=False
    )
    policies_key: tuple[tuple[str, str, str], ...] = ()  # identifies ``policies``

    @classmethod
    def of(cls, mode: str, has_identity: bool, policies: WorkloadPolicies) -> InboundSecurity:
        return cls(mode, has_identity, policies, policies.key)


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


def secure_port_chains(
    chains: list[lc.FilterChain], security: InboundSecurity, *, http: bool
) -> list[lc.FilterChain]:
    """The port's chains as its mTLS mode wants them (see the module docstring)."""
    out: list[lc.FilterChain] = []
    for chain in chains:
        if security.mode == DISABLE:
            out.append(chain)
            continue
        if not security.has_identity:
            if security.mode == STRICT:
                refused = lc.FilterChain()
                refused.CopyFrom(chain)
                refused.filters.insert(0, deny_all_network_filter())
                out.append(refused)
            else:
                out.append(chain)
            continue
        tls = lc.FilterChain()
        tls.CopyFrom(chain)
        tls.filter_chain_match.transport_protocol = TLS_TRANSPORT
        alpn = ALPN_HTTP_INBOUND if http else ()
        tls.transport_socket.CopyFrom(transport_socket(inbound_tls_context(alpn)))
        out.append(tls)
        if security.mode == PERMISSIVE:
            plain = lc.FilterChain()
            plain.CopyFrom(chain)
            plain.filter_chain_match.transport_protocol = RAW_TRANSPORT
            out.append(plain)
    return out
