"""The well-known names of the Envoy filters and transport sockets the generators emit: one
home, so a listener, a route's per-filter config and an RBAC chain always agree on a name."""

# Listener filters
ORIGINAL_DST_FILTER = "envoy.filters.listener.original_dst"
TLS_INSPECTOR_FILTER = "envoy.filters.listener.tls_inspector"
HTTP_INSPECTOR_FILTER = "envoy.filters.listener.http_inspector"

# Network filters
HCM_FILTER = "envoy.filters.network.http_connection_manager"
TCP_PROXY_FILTER = "envoy.filters.network.tcp_proxy"
NETWORK_RBAC_FILTER = "envoy.filters.network.rbac"
NETWORK_EXT_AUTHZ_FILTER = "envoy.filters.network.ext_authz"

# HTTP filters
ROUTER_FILTER = "envoy.filters.http.router"
ON_DEMAND_FILTER = "envoy.filters.http.on_demand"
FAULT_FILTER = "envoy.filters.http.fault"
CORS_FILTER = "envoy.filters.http.cors"
HTTP_RBAC_FILTER = "envoy.filters.http.rbac"
JWT_AUTHN_FILTER = "envoy.filters.http.jwt_authn"
HTTP_EXT_AUTHZ_FILTER = "envoy.filters.http.ext_authz"

# Transport sockets
TLS_SOCKET = "envoy.transport_sockets.tls"
RAW_BUFFER_SOCKET = "envoy.transport_sockets.raw_buffer"
