"""SDS: the secrets a sidecar's TLS contexts name, ``default`` and ``ROOTCA``, and the
credentials a gateway's TLS servers name (``kubernetes://<credentialName>`` and
``kubernetes://<credentialName>-cacert``, from Kubernetes Secrets).

Pure builders from PEM text. Unlike the other xDS types, secrets are not generated from a
snapshot: they are per workload identity, so no ``Generator`` is registered for them. The
certificate authority that produces the PEM lives in ``controlplane.ca`` and the provider
that hands secrets to each authenticated proxy in ``controlplane.cache.secrets``.
"""

from __future__ import annotations

from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2
from google.protobuf import json_format

from controlplane.api.credentials import CertInfo
from controlplane.compile.tls import SDS_DEFAULT, SDS_ROOT


def certificate_secret(
    cert_chain_pem: str, private_key_pem: str, name: str = SDS_DEFAULT
) -> secret_pb2.Secret:
    """The workload's own certificate chain and private key."""
    return secret_pb2.Secret(
        name=name,
        tls_certificate=common_pb2.TlsCertificate(
            certificate_chain=base_pb2.DataSource(inline_bytes=cert_chain_pem.encode()),
            private_key=base_pb2.DataSource(inline_bytes=private_key_pem.encode()),
        ),
    )


def root_secret(root_certs_pem: str, name: str = SDS_ROOT) -> secret_pb2.Secret:
    """The mesh's trust bundle: peers' chains must end in one of these roots."""
    return secret_pb2.Secret(
        name=name,
        validation_context=common_pb2.CertificateValidationContext(
            trusted_ca=base_pb2.DataSource(inline_bytes=root_certs_pem.encode())
        ),
    )


def credential_secret(name: str, info: CertInfo) -> secret_pb2.Secret:
    """A credential's certificate chain and key, as a gateway's server certificate."""
    return secret_pb2.Secret(
        name=name,
        tls_certificate=common_pb2.TlsCertificate(
            certificate_chain=base_pb2.DataSource(inline_bytes=info.cert),
            private_key=base_pb2.DataSource(inline_bytes=info.key),
        ),
    )


def credential_ca_secret(name: str, info: CertInfo) -> secret_pb2.Secret:
    """A credential's CA bundle (and CRL), checking client certificates (MUTUAL)."""
    context = common_pb2.CertificateValidationContext(
        trusted_ca=base_pb2.DataSource(inline_bytes=info.cert)
    )
    if info.crl:
        context.crl.CopyFrom(base_pb2.DataSource(inline_bytes=info.crl))
    return secret_pb2.Secret(name=name, validation_context=context)


def redacted(secret: secret_pb2.Secret) -> dict[str, Any]:
    """A secret as debug output may show it: the private key replaced by a marker."""
    out: dict[str, Any] = dict(json_format.MessageToDict(secret))
    if secret.HasField("tls_certificate"):
        out["tlsCertificate"]["privateKey"] = {"inlineBytes": "[redacted]"}
    return out
