"""Sources: where the mesh's resources come from, and what that place needs running beside it.

A source turns outside objects into typed resources for the store (``files``: a directory
of YAML; ``kube``: a cluster watched with kopf). What the composition root asks of one is
``controlplane.app.Source``: file mode and cluster mode differ only in the source they hand
``ControlPlane``. A source also names what only it can know: where the mesh CA keeps its
keys (``MeshCa``, here), where status goes and who may write it, and its extras (a watcher
task; the kopf thread, webhooks and peering), started and stopped on the control plane's
exit stack.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from controlplane.ca import KeyStore


@dataclass(frozen=True)
class MeshCa:
    """Where the mesh CA lives and how proxies prove who they are.

    ``keystore`` is a directory (file mode) or a KeyStore such as ``SecretKeyStore``;
    ``token_review`` is an API client whose TokenReviews check proxies' tokens (cluster
    mode), or None for the CA's own bootstrap tokens. ``on_error`` sees a failure to load
    the CA: it raises to stop the start, or returns to serve without one.
    """

    keystore: Path | KeyStore
    on_error: Callable[[Exception], None]
    token_review: Any = None
