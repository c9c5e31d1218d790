"""Who a proxy is, read from its node: the project's local-mode keys and Istio's."""

from __future__ import annotations

import pytest

from controlplane.compile.proxy import LOCAL, TRANSPARENT, InvalidNode, proxy_from_node
from controlplane.inject.bootstrap import render_bootstrap


def test_bootstrap_metadata_round_trips_into_the_proxy() -> None:
    bootstrap = render_bootstrap(
        node_id="sidecar~127.0.5.10~reviews-v1.default~default.svc.cluster.local",
        namespace="default",
        labels={"app": "reviews"},
        service_account="reviews",
        xds_port=15010,
        outbound_port=15101,
        app_address="127.0.5.110",
        tcp_ports="tcp-echo:9000=20001,db.prod:5432=20002",
        instance_ips="127.0.5.10,127.0.5.11",
    )
    node = bootstrap["node"]
    proxy = proxy_from_node(node["id"], node["metadata"])
    assert proxy.mode == LOCAL
    assert proxy.app_address == "127.0.5.110"
    assert proxy.local_tcp_ports == (("tcp-echo", 9000, 20001), ("db.prod", 5432, 20002))
    assert proxy.ips == ("127.0.5.10", "127.0.5.11")
    assert proxy.local_outbound_port == 15101


def test_a_node_without_local_ports_is_a_transparent_sidecar_at_its_node_ip() -> None:
    proxy = proxy_from_node("sidecar~10.1.2.3~web-0.shop~shop.svc.cluster.local", {})
    assert proxy.mode == TRANSPARENT
    assert proxy.namespace == "shop"
    assert proxy.ips == ("10.1.2.3",)
    assert proxy.app_address == "127.0.0.1"


@pytest.mark.parametrize("entry", ["tcp-echo=20001", "tcp-echo:x=1", "tcp-echo:9000", ":9000=1"])
def test_a_malformed_local_tcp_port_names_the_node_and_the_entry(entry: str) -> None:
    with pytest.raises(InvalidNode, match=f"LOCAL_TCP_PORTS entry {entry!r}"):
        proxy_from_node(
            "sidecar~127.0.0.1~a.default~default.svc.cluster.local", {"LOCAL_TCP_PORTS": entry}
        )
