"""The certificate authority: SPIFFE workload certificates signed by the mesh's CA.

Chain contents. `cert_chain_pem` is the leaf followed by the intermediates (`ca-cert.pem` and
any CA above it, from `cert-chain.pem`), never the root; roots travel separately in
`root_certs_pem` and become the `ROOTCA` SDS secret. Istio's agent differs: istiod answers a
CSR with `[leaf, cert-chain, root]` and the agent concatenates all of it into the `default`
secret, so a sidecar there also sends the self-signed root. TLS peers must already hold the
root to trust it (RFC 8446, 4.4.2 lets a sender omit it), so sending it is only bytes on every
handshake; with our self-signed root the chain is the leaf alone. A compiler that wants
Istio's exact bytes can append `root_certs_pem`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID

from controlplane.ca.bundle import (
    CABundle,
    certificates_to_pem,
    parse_bundle,
    private_key_to_pem,
    signature_hash,
)
from controlplane.ca.errors import CAError, IdentityMismatch, InvalidCSR
from controlplane.ca.identity import DEFAULT_TRUST_DOMAIN, Identity, check_trust_domain
from controlplane.ca.keystore import KeyStore
from controlplane.ca.root import create_root_bundle
from controlplane.ca.tokens import derive_token_key

DEFAULT_WORKLOAD_TTL = timedelta(hours=24)
MAX_WORKLOAD_TTL = timedelta(days=90)
CLOCK_SKEW = timedelta(minutes=1)
_MIN_RSA_BITS = 2048
_CSR_CURVES = (ec.SECP256R1, ec.SECP384R1)


@dataclass(frozen=True)
class SignedCertificate:
    """A workload certificate whose private key stayed with the client (see `sign_csr`)."""

    identity: Identity
    cert_chain_pem: str
    """The leaf, then intermediates up to but excluding the root."""
    root_certs_pem: str
    """The trust bundle: every root a peer's chain may end in."""
    not_before: datetime
    not_after: datetime
    serial_number: int

    @property
    def spiffe_id(self) -> str:
        """The URI SAN of the leaf."""
        return self.identity.spiffe_id


@dataclass(frozen=True)
class WorkloadCertificate(SignedCertificate):
    """A workload certificate with the private key the CA generated for it."""

    private_key_pem: str = field(repr=False)
    """ECDSA P-256, unencrypted PKCS#8 PEM."""


class CertificateAuthority:
    """Signs SPIFFE certificates for the identities of one trust domain.

    Construction validates the bundle; afterwards the CA holds no mutable state, so one
    instance can be shared by every connection.
    """

    def __init__(
        self,
        bundle: CABundle,
        *,
        trust_domain: str = DEFAULT_TRUST_DOMAIN,
        workload_ttl: timedelta = DEFAULT_WORKLOAD_TTL,
        max_workload_ttl: timedelta = MAX_WORKLOAD_TTL,
        clock_skew: timedelta = CLOCK_SKEW,
        now: datetime | None = None,
    ) -> None:
        if not timedelta(0) < workload_ttl <= max_workload_ttl:
            raise ValueError(
                f"workload ttl {workload_ttl} must be positive and at most {max_workload_ttl}"
            )
        if clock_skew < timedelta(0):
            raise ValueError(f"clock skew allowance {clock_skew} must not be negative")
        material = parse_bundle(bundle, _now(now))
        self.trust_domain = check_trust_domain(trust_domain)
        self.workload_ttl = workload_ttl
        self.max_workload_ttl = max_workload_ttl
        self.clock_skew = clock_skew
        self._material = material
        self._intermediates_pem = certificates_to_pem(material.intermediates)
        self._roots_pem = certificates_to_pem(material.roots)
        # A leaf cannot outlive any CA certificate its chain relies on.
        self._latest_not_after = min(
            c.not_valid_after_utc for c in (material.cert, *material.intermediates)
        )
        self._authority_key_id = _authority_key_identifier(material.cert, material.key)
        self._hash = signature_hash(material.key)

    @classmethod
    def load_or_create(
        cls,
        store: KeyStore,
        *,
        trust_domain: str = DEFAULT_TRUST_DOMAIN,
        workload_ttl: timedelta = DEFAULT_WORKLOAD_TTL,
        max_workload_ttl: timedelta = MAX_WORKLOAD_TTL,
        clock_skew: timedelta = CLOCK_SKEW,
        now: datetime | None = None,
    ) -> CertificateAuthority:
        """The CA in `store`; on first start, a new self-signed root, saved there first."""
        bundle = store.load()
        if bundle is None:
            bundle = create_root_bundle(_now(now), trust_domain=trust_domain)
            store.save(bundle)
            # Read back: a store shared by replicas (a Kubernetes Secret) keeps the first
            # root saved, which may be another replica's.
            bundle = store.load() or bundle
        return cls(
            bundle,
            trust_domain=trust_domain,
            workload_ttl=workload_ttl,
            max_workload_ttl=max_workload_ttl,
            clock_skew=clock_skew,
            now=now,
        )

    @property
    def root_certs_pem(self) -> str:
        """The trust bundle (`root-cert.pem`), the content of the `ROOTCA` secret."""
        return self._roots_pem

    @property
    def roots(self) -> tuple[x509.Certificate, ...]:
        """Every root of the trust bundle (several while a root is being rotated)."""
        return self._material.roots

    @property
    def signing_root(self) -> x509.Certificate:
        """The root the signing chain ends in: the one whose expiry ends this CA's leaves."""
        material = self._material
        top = material.intermediates[-1] if material.intermediates else material.cert
        for root in material.roots:
            if root == top or _issued(top, root):
                return root
        return material.roots[0]

    @property
    def chain_not_after(self) -> datetime:
        """When the signing certificate or an intermediate above it expires, first."""
        return self._latest_not_after

    @property
    def certificate(self) -> x509.Certificate:
        """The certificate that signs workload certificates (`ca-cert.pem`)."""
        return self._material.cert

    @property
    def token_key(self) -> bytes:
        """The key for `issue_token` and `verify_token` (see `controlplane.ca.tokens`)."""
        return derive_token_key(self._material.key)

    def issue(
        self,
        identity: Identity,
        ttl: timedelta | None = None,
        *,
        now: datetime | None = None,
    ) -> WorkloadCertificate:
        """A fresh ECDSA P-256 key and a certificate for `identity`, valid for `ttl`."""
        key = ec.generate_private_key(ec.SECP256R1())
        signed = self._sign(key.public_key(), identity, ttl, _now(now))
        return WorkloadCertificate(
            identity=signed.identity,
            cert_chain_pem=signed.cert_chain_pem,
            root_certs_pem=signed.root_certs_pem,
            not_before=signed.not_before,
            not_after=signed.not_after,
            serial_number=signed.serial_number,
            private_key_pem=private_key_to_pem(key),
        )

    def sign_csr(
        self,
        csr_pem: str | bytes,
        identity: Identity,
        ttl: timedelta | None = None,
        *,
        now: datetime | None = None,
    ) -> SignedCertificate:
        """Certify the key in a CSR for the caller's authenticated `identity`, and only that.

        The CSR's subject and extensions are ignored, except that a SAN it requests must be
        exactly `identity`'s SPIFFE id (IdentityMismatch otherwise): a client asking for
        another identity is refused rather than quietly given its own.
        """
        csr = _load_csr(csr_pem)
        _check_requested_names(csr, identity)
        return self._sign(_acceptable_public_key(csr), identity, ttl, _now(now))

    def _sign(
        self,
        public_key: CertificatePublicKeyTypes,
        identity: Identity,
        ttl: timedelta | None,
        now: datetime,
    ) -> SignedCertificate:
        if identity.trust_domain != self.trust_domain:
            raise IdentityMismatch(
                f"{identity.spiffe_id} is in trust domain {identity.trust_domain!r}; this CA "
                f"signs only for {self.trust_domain!r}"
            )
        lifetime = self.workload_ttl if ttl is None else min(ttl, self.max_workload_ttl)
        if lifetime <= timedelta(0):
            raise ValueError(f"certificate ttl must be positive, not {ttl}")
        if now >= self._latest_not_after:
            raise CAError(
                f"the CA certificate chain expired at {self._latest_not_after.isoformat()}"
            )
        now = now.replace(microsecond=0)
        not_before = now - self.clock_skew
        not_after = min(now + lifetime, self._latest_not_after)
        serial = x509.random_serial_number()
        issuer = self._material.cert
        leaf = (
            x509.CertificateBuilder()
            # SPIFFE identities live in the SAN alone; with an empty subject it must be critical.
            .subject_name(x509.Name([]))
            .issuer_name(issuer.subject)
            .public_key(public_key)
            .serial_number(serial)
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity.spiffe_id)]),
                critical=True,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_LEAF_KEY_USAGE, critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(self._authority_key_id, critical=False)
            .sign(self._material.key, self._hash)
        )
        return SignedCertificate(
            identity=identity,
            cert_chain_pem=certificates_to_pem([leaf]) + self._intermediates_pem,
            root_certs_pem=self._roots_pem,
            not_before=not_before,
            not_after=not_after,
            serial_number=serial,
        )


_LEAF_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=True,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)


def _now(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError(f"time {now.isoformat()} must be timezone-aware")
    return now.astimezone(UTC)


def _authority_key_identifier(
    issuer: x509.Certificate, issuer_key: CertificateIssuerPrivateKeyTypes
) -> x509.AuthorityKeyIdentifier:
    # Copy the issuer's own key id when it has one: chain builders match on it byte for byte.
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _load_csr(csr_pem: str | bytes) -> x509.CertificateSigningRequest:
    data = csr_pem.encode("ascii", "replace") if isinstance(csr_pem, str) else csr_pem
    try:
        csr = x509.load_pem_x509_csr(data)
    except ValueError as exc:
        raise InvalidCSR(f"not a PEM certificate signing request: {exc}") from exc
    if not csr.is_signature_valid:
        raise InvalidCSR("the CSR's signature does not verify with the key it carries")
    return csr


def _check_requested_names(csr: x509.CertificateSigningRequest, identity: Identity) -> None:
    try:
        requested = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return
    except ValueError as exc:
        raise InvalidCSR(f"the CSR's extensions cannot be parsed: {exc}") from exc
    uris = requested.get_values_for_type(x509.UniformResourceIdentifier)
    others = [name for name in requested if not isinstance(name, x509.UniformResourceIdentifier)]
    wrong = [uri for uri in uris if uri != identity.spiffe_id]
    if wrong:
        raise IdentityMismatch(
            f"the CSR asks for {', '.join(wrong)} but the caller authenticated as "
            f"{identity.spiffe_id}"
        )
    if others:
        raise InvalidCSR(
            f"the CSR asks for names this CA never certifies ({', '.join(map(str, others))}); "
            f"workload certificates carry only the caller's SPIFFE id, {identity.spiffe_id}"
        )


def _acceptable_public_key(csr: x509.CertificateSigningRequest) -> CertificatePublicKeyTypes:
    key = csr.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, _CSR_CURVES):
            raise InvalidCSR(f"the CSR's key is on curve {key.curve.name}; use P-256 or P-384")
        return key
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < _MIN_RSA_BITS:
            raise InvalidCSR(
                f"the CSR's RSA key has {key.key_size} bits; at least {_MIN_RSA_BITS} are required"
            )
        return key
    raise InvalidCSR(
        f"the CSR's key is a {type(key).__name__}; use ECDSA P-256/P-384 or RSA of 2048+ bits"
    )


def _issued(child: x509.Certificate, parent: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(parent)
    except Exception:  # wrong key type, bad signature, different issuer name
        return False
    return True
