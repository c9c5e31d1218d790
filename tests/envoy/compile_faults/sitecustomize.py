"""Test-only compile faults, loaded into the control plane's child process through
PYTHONPATH (Python imports ``sitecustomize`` at start). Valid input makes the compiler raise,
so the containment is tested without needing invalid input that validation would let by:

- an HTTP route named ``explode``: building its route action raises (one resource);
- a Service whose name starts with ``boom``: building its default route raises, which no
  per-resource guard contains (the proxy-wide last line: proxy-status must say ERROR).
"""

from __future__ import annotations

from typing import Any

from controlplane.compile import http_routes, routes

_route_action = http_routes._route_action
_default_route = routes.default_route


def _exploding_route_action(snapshot: Any, http: Any, *args: Any, **kwargs: Any) -> Any:
    if http.name == "explode":
        raise OverflowError("injected compile fault: route 'explode'")
    return _route_action(snapshot, http, *args, **kwargs)


def _exploding_default_route(hostname: str, *args: Any, **kwargs: Any) -> Any:
    if hostname.startswith("boom"):
        raise RuntimeError(f"injected compile fault: service {hostname}")
    return _default_route(hostname, *args, **kwargs)


http_routes._route_action = _exploding_route_action  # type: ignore[assignment]
routes.default_route = _exploding_default_route  # type: ignore[assignment]
