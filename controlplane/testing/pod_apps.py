"""Small apps that run inside test pods (network namespaces) and know nothing of any proxy.

    python -m controlplane.testing.pod_apps serve-http NAME PORT      # says its name (JSON)
    python -m controlplane.testing.pod_apps count-http URL COUNT [HEADER:VALUE ...]
    python -m controlplane.testing.pod_apps serve-tcp NAME PORT       # TCP echo with its name
    python -m controlplane.testing.pod_apps count-tcp HOST PORT COUNT

Servers print ``ready`` once they listen; clients print one JSON object of counts by backend
name (or status / error).
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from collections import Counter
from typing import Any


def serve_http(name: str, port: int) -> None:
    from controlplane.testing.backends import Backend

    backend = Backend(name, "0.0.0.0", port)
    print("ready", flush=True)
    backend._server.serve_forever()


def count_http(url: str, count: int, headers: list[str]) -> Counter[str]:
    """GET ``url`` ``count`` times; count answers by backend name (or status)."""
    extra = dict(h.split(":", 1) for h in headers)
    # No proxy settings from the environment: the app knows nothing about any proxy.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    counts: Counter[str] = Counter()
    for _ in range(count):
        request = urllib.request.Request(url, headers=extra)
        try:
            with opener.open(request, timeout=10) as resp:
                counts[str(json.loads(resp.read())["name"])] += 1
        except urllib.error.HTTPError as exc:
            counts[str(exc.code)] += 1
        except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
            counts[f"error:{type(exc).__name__}"] += 1
    return counts


def serve_tcp(name: str, port: int) -> None:
    from controlplane.testing.tcp_echo import TcpEchoBackend

    backend = TcpEchoBackend(name, "0.0.0.0", port)
    print("ready", flush=True)
    backend._server.serve_forever()


def main(argv: list[str]) -> int:
    command, *rest = argv
    if command == "serve-http":
        serve_http(rest[0], int(rest[1]))
    elif command == "count-http":
        print(json.dumps(count_http(rest[0], int(rest[1]), rest[2:])))
    elif command == "serve-tcp":
        serve_tcp(rest[0], int(rest[1]))
    elif command == "count-tcp":
        from controlplane.testing.tcp_echo import count_echo_backends

        print(json.dumps(count_echo_backends(rest[0], int(rest[1]), int(rest[2]))))
    else:
        print(f"unknown command {command}", file=sys.stderr)
        return 2
    return 0


def parse_counts(stdout: str) -> dict[str, Any]:
    """The counts a client app printed (its last line)."""
    return dict(json.loads(stdout.strip().splitlines()[-1]))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
