"""``controlplane helper config-sync`` and ``secrets-agent``: keep a directory current.

Both write files the application reads while they change, so every write is atomic: the
new content goes to a hidden temporary file in the same directory, is flushed to disk and
renamed over the old name (``os.replace``): a reader sees the old file or the new one,
never half of either. Unchanged files are not rewritten; files the source no longer has are
removed.

* ``config-sync --source SRC --dest DIR --interval S``: SRC is a directory (a mounted
  ConfigMap, a checkout: its regular, non-hidden top-level files) or an HTTP(S) URL that
  answers a JSON object ``{"files": {name: content}}``; ``--token-file`` adds the (re-read
  each round) token as ``Authorization: Bearer``.
* ``secrets-agent``: the shape of Vault Agent's injector. It authenticates with the Pod's
  projected service-account token (Vault's Kubernetes auth: ``POST /v1/auth/<path>/login``
  with ``role`` and ``jwt``), reads each secret the Pod's annotations name
  (``secrets.controlplane.io/secret-<file>: <secret path>``, read from the downward API's
  ``annotations`` file) with ``GET /v1/<secret path>`` and writes it as JSON to
  ``<dest>/<file>`` (a memory-backed ``emptyDir``). Every round it reads the token again and
  logs in again, so a rotated token or secret is picked up within one interval.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger("controlplane.helper")

SECRET_PREFIX = "secrets.controlplane.io/secret-"


def atomic_write(path: Path, content: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``content`` in one rename (temporary file in the same dir)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _safe_name(name: str) -> bool:
    return bool(name) and "/" not in name and not name.startswith(".") and name not in ("..",)


def sync_directory(
    files: Mapping[str, bytes], dest: Path, mode: int = 0o644, prune: bool = True
) -> list[str]:
    """Make ``dest`` hold exactly ``files``; returns the names written or removed."""
    dest.mkdir(parents=True, exist_ok=True)
    changed = []
    for name, content in sorted(files.items()):
        if not _safe_name(name):
            raise ValueError(f"file name {name!r}: must be a plain name (no '/', no leading '.')")
        target = dest / name
        try:
            if target.read_bytes() == content:
                continue
        except FileNotFoundError:
            pass
        atomic_write(target, content, mode)
        changed.append(name)
    if prune:
        for old in sorted(dest.iterdir()):
            if old.is_file() and not old.name.startswith(".") and old.name not in files:
                old.unlink()
                changed.append(old.name)
    return changed


def _http_json(
    url: str, headers: Mapping[str, str], body: Any = None, timeout: float = 10.0
) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method="GET" if body is None else "POST", headers=dict(headers)
    )
    if data is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"null")


def read_source(source: str, token_file: Path | None = None) -> dict[str, bytes]:
    """The files of a config-sync source (a directory or an HTTP URL)."""
    if source.startswith(("http://", "https://")):
        headers = {}
        if token_file is not None:
            headers["Authorization"] = f"Bearer {token_file.read_text().strip()}"
        doc = _http_json(source, headers)
        files = doc.get("files") if isinstance(doc, Mapping) else None
        if not isinstance(files, Mapping):
            raise ValueError(f"{source}: expected a JSON object with 'files'")
        return {str(k): str(v).encode() for k, v in files.items()}
    root = Path(source)
    return {
        p.name: p.read_bytes()
        for p in sorted(root.iterdir())
        if not p.name.startswith(".") and p.is_file()
    }


def parse_downward_annotations(text: str) -> dict[str, str]:
    """The downward API's ``annotations`` file: one ``key="value"`` per line (Go quoting)."""
    out = {}
    for line in text.splitlines():
        key, sep, quoted = line.partition("=")
        if not sep:
            continue
        try:
            out[key] = str(json.loads(quoted))
        except json.JSONDecodeError:
            out[key] = quoted.strip('"')
    return out


def wanted_secrets(annotations: Mapping[str, str]) -> dict[str, str]:
    """file name -> secret path, from ``secrets.controlplane.io/secret-<file>: <path>``."""
    return {
        key[len(SECRET_PREFIX) :]: value
        for key, value in annotations.items()
        if key.startswith(SECRET_PREFIX) and key[len(SECRET_PREFIX) :]
    }


def fetch_secrets(
    address: str, role: str, jwt: str, secrets: Mapping[str, str], auth_path: str = "kubernetes"
) -> dict[str, bytes]:
    """Log in with the service-account token, read each secret; file name -> JSON bytes."""
    base = address.rstrip("/")
    login = _http_json(f"{base}/v1/auth/{auth_path}/login", {}, {"role": role, "jwt": jwt})
    token = str(((login or {}).get("auth") or {}).get("client_token") or "")
    if not token:
        raise ValueError(f"{base}: login as role {role!r} gave no client_token")
    files = {}
    for name, path in sorted(secrets.items()):
        doc = _http_json(f"{base}/v1/{path.lstrip('/')}", {"X-Vault-Token": token})
        data = (doc or {}).get("data")
        if isinstance(data, Mapping) and isinstance(data.get("data"), Mapping):
            data = data["data"]  # KV version 2 wraps the secret with its metadata
        files[name] = (json.dumps(data, sort_keys=True) + "\n").encode()
    return files


READY_MARKER = ".synced"


def loop(
    one_round: Callable[[], list[str]],
    interval: float,
    what: str,
    stop: Callable[[], bool] = lambda: False,
    once: bool = False,
    ready_marker: Path | None = None,
) -> int:
    """Run ``one_round`` every ``interval`` seconds; failures are logged and retried.

    After the first round that succeeds, ``ready_marker`` is created: the templates' startup
    probe waits for it, so with native sidecars the application starts only once its files
    are there (as Vault Agent's init container does)."""
    while True:
        try:
            changed = one_round()
        except (OSError, ValueError, urllib.error.URLError) as exc:
            log.warning("%s: round failed (the files stay as they were): %s", what, exc)
            if once:
                return 1
        else:
            if changed:
                log.info("%s: updated %s", what, ", ".join(changed))
            if ready_marker is not None and not ready_marker.exists():
                ready_marker.touch()
        if once or stop():
            return 0
        time.sleep(interval)
