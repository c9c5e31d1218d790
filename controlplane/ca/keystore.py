"""Where the CA keeps its key material between restarts.

`KeyStore` is the seam: a directory on disk in file mode (`DirectoryKeyStore`), a Kubernetes
Secret in cluster mode. Both persist a `CABundle` in Istio's `cacerts` layout, so a directory
written here can be mounted into Istio and an operator's `cacerts` can be used here unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from controlplane.ca.bundle import (
    CA_CERT_FILE,
    CA_KEY_FILE,
    CERT_CHAIN_FILE,
    ROOT_CERT_FILE,
    CABundle,
)
from controlplane.ca.errors import InvalidCABundle

_FILES = (CA_CERT_FILE, CA_KEY_FILE, CERT_CHAIN_FILE, ROOT_CERT_FILE)
_KEY_MODE = 0o600
_CERT_MODE = 0o644
_DIRECTORY_MODE = 0o700


class KeyStore(Protocol):
    """Persistence for the CA's bundle."""

    def load(self) -> CABundle | None:
        """Return the stored bundle, or None if nothing has been stored yet."""
        ...

    def save(self, bundle: CABundle) -> None:
        """Store `bundle`, replacing whatever was there."""
        ...


class DirectoryKeyStore:
    """A `cacerts` directory: ca-cert.pem, ca-key.pem (mode 0600), cert-chain.pem, root-cert.pem."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def __repr__(self) -> str:
        return f"DirectoryKeyStore({str(self.directory)!r})"

    def load(self) -> CABundle | None:
        """Read the four files; None if none exist, InvalidCABundle if only some do."""
        present = {name: (self.directory / name).is_file() for name in _FILES}
        if not any(present.values()):
            return None
        missing = [name for name, exists in present.items() if not exists]
        if missing:
            raise InvalidCABundle(
                f"{self.directory} is an incomplete cacerts directory: missing {', '.join(missing)}"
            )
        text = {name: self._read(name) for name in _FILES}
        return CABundle(
            ca_cert_pem=text[CA_CERT_FILE],
            ca_key_pem=text[CA_KEY_FILE],
            cert_chain_pem=text[CERT_CHAIN_FILE],
            root_cert_pem=text[ROOT_CERT_FILE],
        )

    def save(self, bundle: CABundle) -> None:
        """Write each file atomically; the key is never readable by other users, even briefly."""
        self.directory.mkdir(mode=_DIRECTORY_MODE, parents=True, exist_ok=True)
        # Certificates first and the key last: a crash in between leaves an incomplete
        # directory, which load() reports, rather than a key paired with a stale certificate.
        self._write(ROOT_CERT_FILE, bundle.root_cert_pem, _CERT_MODE)
        self._write(CERT_CHAIN_FILE, bundle.cert_chain_pem, _CERT_MODE)
        self._write(CA_CERT_FILE, bundle.ca_cert_pem, _CERT_MODE)
        self._write(CA_KEY_FILE, bundle.ca_key_pem, _KEY_MODE)

    def _read(self, name: str) -> str:
        path = self.directory / name
        try:
            return path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidCABundle(f"cannot read {path}: {exc}") from exc

    def _write(self, name: str, text: str, mode: int) -> None:
        path = self.directory / name
        temporary = self.directory / f".{name}.{os.getpid()}.tmp"
        # O_EXCL with an explicit mode: the file is created with `mode` (less the umask, which
        # can only remove bits) and fchmod pins it exactly, before any secret is written.
        temporary.unlink(missing_ok=True)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                os.fchmod(handle.fileno(), mode)
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
