"""Validation of Gateway, and of the gateway names a VirtualService binds to, as istiod's
webhook does it (pkg/config/validation: ValidateGateway, validateServer,
validateServerPort, validateServerBind, validateTLSOptions, validateGatewayNames).

The TLS rules are checked here so that a Gateway is refused or accepted whole, whatever part
of it the compiler implements.
"""

from __future__ import annotations

import ipaddress
import re

from controlplane.api.gateway import Gateway, Server, ServerTLSSettings, server_protocol
from controlplane.api.issues import Codes, Issue, Level
from controlplane.api.validation import check_port, register_validator

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# A gateway host's DNS part: a name or a wildcard prefix (``*``, ``*.example.com``).
_GATEWAY_HOST = re.compile(r"^(\*|\*\.)?([a-zA-Z0-9]([-a-zA-Z0-9_]{0,61}[a-zA-Z0-9])?\.?)*$")
_UNIX_PREFIX = "unix://"
# BoringSSL cipher names istiod accepts (pilot's security.IsValidCipherSuite).
_CIPHERS = frozenset(
    {
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "ECDHE-ECDSA-AES128-SHA",
        "ECDHE-RSA-AES128-SHA",
        "ECDHE-ECDSA-AES256-SHA",
        "ECDHE-RSA-AES256-SHA",
        "AES128-GCM-SHA256",
        "AES256-GCM-SHA384",
        "AES128-SHA",
        "AES256-SHA",
        "DES-CBC3-SHA",
    }
)


def _error(path: str, reason: str) -> Issue:
    return Issue(Codes.INVALID_FIELD, path, reason)


def _warning(path: str, reason: str) -> Issue:
    return Issue(Codes.INVALID_FIELD, path, reason, level=Level.WARNING)


def validate_gateway(gateway: Gateway) -> list[Issue]:
    found: list[Issue] = []
    name = gateway.metadata.name
    if not _DNS1123_LABEL.match(name):
        # istiod: a Gateway's name is a DNS label (no dots), so that ``ns/name`` is unambiguous
        found.append(_error("metadata.name", f"invalid gateway name: {name!r}"))
    servers = gateway.spec.servers
    if not servers:
        found.append(_error("spec.servers", "gateway must have at least one server"))
    port_names: set[str] = set()
    for i, server in enumerate(servers):
        path = f"spec.servers[{i}]"
        found += _validate_server(path, server)
        if server.port is None:
            continue
        if server.port.name in port_names:
            found.append(
                _error(
                    f"{path}.port.name",
                    f"port names in servers must be unique: duplicate name {server.port.name!r}",
                )
            )
        port_names.add(server.port.name)
        protocol = server_protocol(server.port)
        if server.tls is not None and server.tls.https_redirect and protocol not in _HTTPISH:
            found.append(
                _warning(
                    f"{path}.tls.httpsRedirect",
                    "tls.httpsRedirect should only be used with http servers",
                )
            )
    return found


_HTTPISH = frozenset({"HTTP", "HTTP2", "GRPC", "GRPC-WEB", "HTTP_PROXY"})


def _validate_server(path: str, server: Server) -> list[Issue]:
    found: list[Issue] = []
    if not server.hosts:
        found.append(_error(f"{path}.hosts", "server config must contain at least one host"))
    for i, host in enumerate(server.hosts):
        found += check_gateway_host(f"{path}.hosts[{i}]", host)
    port_ok = True
    port = server.port
    bind = server.bind or ""
    if port is None:
        found.append(_error(f"{path}.port", "port is required"))
        port_ok = False
    else:
        if server_protocol(port) == "UNSUPPORTED":
            found.append(
                _error(
                    f"{path}.port.protocol",
                    f"invalid protocol {port.protocol!r}, supported protocols are HTTP, HTTP2, "
                    "GRPC, GRPC-WEB, MONGO, REDIS, MYSQL, TCP",
                )
            )
            port_ok = False
        if port.number > 0 or not bind.startswith(_UNIX_PREFIX):
            bad = check_port(f"{path}.port.number", port.number)
            if port.number == 0:
                bad = [_error(f"{path}.port.number", "port number 0 must be between 1 and 65535")]
            found += bad
            port_ok = port_ok and not bad
        if port.target_port:
            found.append(_error(f"{path}.port.targetPort", "targetPort has no impact on Gateways"))
            port_ok = False
        if not port.name:
            found.append(_error(f"{path}.port.name", "port name must be set"))
            port_ok = False
    found += _validate_bind(path, server)
    if server.tls is not None:
        found += validate_server_tls(f"{path}.tls", server.tls)
    if port_ok and port is not None:
        protocol = server_protocol(port)
        if protocol in ("HTTPS", "TLS") and server.tls is None:
            found.append(
                _error(f"{path}.tls", "server must have TLS settings for HTTPS/TLS protocols")
            )
        elif protocol not in ("HTTPS", "TLS") and server.tls is not None:
            tls = server.tls
            if protocol in _HTTPISH:
                # only httpsRedirect is allowed on a plain HTTP server
                if (
                    tls.mode not in ("PASSTHROUGH", "AUTO_PASSTHROUGH")
                    or tls.ca_certificates
                    or tls.private_key
                    or tls.server_certificate
                ):
                    found.append(
                        _error(
                            f"{path}.tls",
                            "server cannot have TLS settings for plain text HTTP ports",
                        )
                    )
            else:
                found.append(
                    _error(f"{path}.tls", "server cannot have TLS settings for non HTTPS/TLS ports")
                )
    return found


def _validate_bind(path: str, server: Server) -> list[Issue]:
    bind = server.bind or ""
    if bind.startswith(_UNIX_PREFIX):
        address = bind[len(_UNIX_PREFIX) :]
        found: list[Issue] = []
        if not address.startswith("@") and (not address.startswith("/") or address.endswith("/")):
            found.append(_error(f"{path}.bind", f"{address} is not an absolute path to a file"))
        if server.port is not None and server.port.number != 0:
            found.append(
                _error(f"{path}.port.number", "port number must be 0 for unix domain socket")
            )
        return found
    if bind:
        try:
            ipaddress.ip_address(bind)
        except ValueError:
            return [_error(f"{path}.bind", f"{bind!r} is not a valid IP address")]
    return []


def check_gateway_host(path: str, host: str) -> list[Issue]:
    """``host``, ``ns/host``, ``./host`` or ``*/host`` (istiod's
    ValidateNamespaceSlashWildcardHostname for gateways)."""
    namespace, slash, name = host.partition("/")
    if not slash:
        return _check_host_part(path, host)
    found: list[Issue] = []
    if not namespace or not name:
        found.append(_error(path, "config namespace and dnsName in host entry cannot be empty"))
    if namespace not in ("*", ".") and namespace and not _DNS1123_LABEL.match(namespace):
        found.append(_error(path, f"invalid namespace value {namespace!r} in gateway"))
    if name:
        found += _check_host_part(path, name)
    return found


def _check_host_part(path: str, host: str) -> list[Issue]:
    if host == "*":
        return []
    if not _GATEWAY_HOST.match(host) or ".." in host or len(host) > 253:
        return [_error(path, f"{host!r} is not a valid host name")]
    if "*" in host.lstrip("*"):
        return [_error(path, f"{host!r}: a wildcard is only allowed as the first label")]
    return []


def validate_server_tls(path: str, tls: ServerTLSSettings) -> list[Issue]:
    """istiod's validateTLSOptions: which certificate sources a mode needs or excludes."""
    found: list[Issue] = []
    if tls.min_protocol_version in ("TLSV1_0", "TLSV1_1") and not tls.cipher_suites:
        found.append(
            _warning(
                f"{path}.minProtocolVersion",
                "TLS version below TLSV1_2 require setting compatible ciphers as by default "
                "they no longer include compatible ciphers.",
            )
        )
    invalid = sorted({c for c in tls.cipher_suites if c not in _CIPHERS})
    if invalid:
        found.append(_warning(f"{path}.cipherSuites", f"ignoring invalid cipher suites: {invalid}"))
    valid = [c for c in tls.cipher_suites if c in _CIPHERS]
    duplicates = sorted({c for c in valid if valid.count(c) > 1})
    if duplicates:
        found.append(
            _warning(f"{path}.cipherSuites", f"ignoring duplicate cipher suites: {duplicates}")
        )
    if tls.mode == "ISTIO_MUTUAL":
        for field, present, what in (
            ("serverCertificate", tls.server_certificate, "server certificate"),
            ("privateKey", tls.private_key, "private key"),
            ("caCertificates", tls.ca_certificates, "CA bundle"),
            ("tlsCertificates", tls.tls_certificates, "tlsCertificates"),
            ("credentialName", tls.credential_name, "credentialName"),
            ("credentialNames", tls.credential_names, "credentialNames"),
        ):
            if present:
                found.append(
                    _error(f"{path}.{field}", f"ISTIO_MUTUAL TLS cannot have associated {what}")
                )
        return found
    if tls.mode in ("PASSTHROUGH", "AUTO_PASSTHROUGH") and (
        tls.ca_crl
        or tls.server_certificate
        or tls.private_key
        or tls.ca_certificates
        or tls.tls_certificates
        or tls.credential_name
        or tls.credential_names
    ):
        found.append(
            _warning(
                f"{path}.mode",
                f"{tls.mode} mode does not use certificates, they will be ignored",
            )
        )
    sources = sum(
        (
            bool(tls.server_certificate and tls.private_key),
            bool(tls.credential_name),
            bool(tls.credential_names),
            bool(tls.tls_certificates),
        )
    )
    if sources > 1:
        found.append(
            _error(
                path,
                "only one of credential_name, credential_names, server_certificate/private_key, "
                "tls_certificates should be specified",
            )
        )
    terminating = tls.mode in ("SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL")
    if terminating and (tls.credential_name or tls.credential_names):
        return found  # certificates come from the credential (a Secret), checked in context
    if terminating:
        prefix = "SIMPLE TLS" if tls.mode == "SIMPLE" else "MUTUAL TLS"
        if tls.mode != "SIMPLE" and not tls.ca_certificates:
            found.append(_error(f"{path}.caCertificates", f"{prefix} requires a client CA bundle"))
        if len(tls.tls_certificates) > 2:
            found.append(
                _warning(
                    f"{path}.tlsCertificates", f"{prefix} can support up to 2 server certificates"
                )
            )
        certs = (
            [
                (f"{path}.tlsCertificates[{i}]", c.server_certificate, c.private_key)
                for i, c in enumerate(tls.tls_certificates)
            ]
            if tls.tls_certificates
            else [(path, tls.server_certificate, tls.private_key)]
        )
        for where, cert, key in certs:
            if not cert:
                found.append(
                    _error(f"{where}.serverCertificate", f"{prefix} requires a server certificate")
                )
            if not key:
                found.append(_error(f"{where}.privateKey", f"{prefix} requires a private key"))
    if tls.ca_crl:
        if tls.credential_name:
            found.append(
                _error(
                    f"{path}.caCrl",
                    "CRL is not supported with credentialName. CRL has to be specified in the "
                    "credential",
                )
            )
        if tls.mode == "SIMPLE":
            found.append(_error(f"{path}.caCrl", "CRL is not supported with SIMPLE TLS"))
    return found


register_validator("Gateway", validate_gateway)
