"""Sending requests through a sidecar and counting who answered."""

from __future__ import annotations

import http.client
import json
from collections import Counter


def send(
    port: int,
    host_header: str,
    path: str = "/",
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 10.0,
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers={"Host": host_header, **(headers or {})})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def count_backends(
    port: int,
    host_header: str,
    requests: int,
    path: str = "/",
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> Counter[str]:
    """Send ``requests`` GETs over one keep-alive connection; count answers by backend name
    (non-2xx answers count as ``"<status>"``)."""
    counts: Counter[str] = Counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        for _ in range(requests):
            conn.request("GET", path, headers={"Host": host_header, **(headers or {})})
            resp = conn.getresponse()
            data = resp.read()
            if 200 <= resp.status < 300:
                try:
                    counts[str(json.loads(data)["name"])] += 1
                except (ValueError, KeyError):
                    counts["?"] += 1
            else:
                counts[str(resp.status)] += 1
            if resp.getheader("connection", "").lower() == "close":
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    finally:
        conn.close()
    return counts
