"""Through a real Envoy: retries (configured and Istio's default), per-try and route timeouts
measured against slow backends, and fault injection (abort share over 1,000 requests, delay)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from controlplane.testing.backends import Backend, Reply, Seen, delay_first, fail_first
from controlplane.testing.traffic import count_backends, send
from tests.envoy.traffic_mesh import Pod, TrafficMesh, traffic_mesh
from tests.support import meshes

VIRTUAL_SERVICES = meshes.join(
    meshes.resource(
        "VirtualService",
        "ratings",
        """
  hosts: [ratings]
  http:
  - name: per-try
    match: [{uri: {prefix: /per-try}}]
    retries: {attempts: 2, perTryTimeout: 300ms, retryOn: 5xx}
    route: [{destination: {host: ratings}}]
  - name: timeout
    match: [{uri: {prefix: /timeout}}]
    timeout: 500ms
    route: [{destination: {host: ratings}}]
  - name: retries
    retries: {attempts: 3, retryOn: "gateway-error,connect-failure,503"}
    route: [{destination: {host: ratings}}]
""",
    ),
    meshes.resource(
        "VirtualService",
        "faulty",
        """
  hosts: [faulty]
  http:
  - match: [{uri: {prefix: /abort}}]
    fault: {abort: {httpStatus: 555, percentage: {value: 50}}}
    route: [{destination: {host: faulty}}]
  - match: [{uri: {prefix: /delay}}]
    fault: {delay: {fixedDelay: 500ms, percentage: {value: 100}}}
    route: [{destination: {host: faulty}}]
  - route: [{destination: {host: faulty}}]
""",
    ),
)


def slow_timeout_path(backend: Backend, seen: Seen) -> Reply | None:
    # Longer than the route timeout; the backend's own thread sleeps, Envoy has given up.
    return Reply(delay=2.0) if seen.path.startswith("/timeout") else None


@pytest.fixture(scope="module")
def resilience(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrafficMesh]:
    services = {
        "ratings": [Pod("ratings", "127.0.4.31")],
        "details": [Pod("details", "127.0.4.32")],  # no VirtualService: Istio's default route
        "faulty": [Pod("faulty", "127.0.4.33")],
    }
    with traffic_mesh(
        tmp_path_factory.mktemp("resilience"), services, {"vs.yaml": VIRTUAL_SERVICES}
    ) as mesh:
        yield mesh


def attempts_for(
    mesh: TrafficMesh, pod: str, host: str, path: str, failures: int
) -> tuple[int, int]:
    """Make the pod fail the next ``failures`` requests with 503; send one request; return
    (status the client saw, attempts the pod received)."""
    backend = mesh.backends[pod]
    backend.reset()
    backend.behaviour = fail_first(failures, 503)
    try:
        status, _, _ = send(mesh.port, host, path)
    finally:
        backend.behaviour = None
    return status, backend.count()


def test_configured_retries_hide_failures_up_to_the_attempt_count(
    resilience: TrafficMesh,
) -> None:
    assert attempts_for(resilience, "ratings", "ratings:8080", "/", 2) == (200, 3)
    assert attempts_for(resilience, "ratings", "ratings:8080", "/", 3) == (200, 4)
    # 1 try + 3 retries, then the client sees the failure.
    assert attempts_for(resilience, "ratings", "ratings:8080", "/", 10) == (503, 4)


def test_without_a_virtual_service_istio_default_retries_twice_on_503(
    resilience: TrafficMesh,
) -> None:
    assert attempts_for(resilience, "details", "details:8080", "/", 1) == (200, 2)
    assert attempts_for(resilience, "details", "details:8080", "/", 5) == (503, 3)


def test_per_try_timeout_cuts_a_slow_attempt_and_the_retry_succeeds(
    resilience: TrafficMesh,
) -> None:
    backend = resilience.backends["ratings"]
    backend.reset()
    backend.behaviour = delay_first(1, 3.0)
    try:
        started = time.monotonic()
        status, _, _ = send(resilience.port, "ratings:8080", "/per-try")
        elapsed = time.monotonic() - started
    finally:
        backend.behaviour = None
    assert status == 200
    assert backend.count() == 2
    # One cut attempt (300 ms) plus a quick retry; far below the 3 s the backend would take.
    assert 0.28 <= elapsed < 1.5, elapsed


def test_route_timeout_answers_504_after_the_timeout(resilience: TrafficMesh) -> None:
    backend = resilience.backends["ratings"]
    backend.behaviour = slow_timeout_path
    try:
        started = time.monotonic()
        status, _, body = send(resilience.port, "ratings:8080", "/timeout")
        elapsed = time.monotonic() - started
    finally:
        backend.behaviour = None
    assert status == 504, (elapsed, body)
    assert 0.45 <= elapsed < 1.5, elapsed


def test_fifty_percent_abort_fails_about_half_of_a_thousand_requests_with_555(
    resilience: TrafficMesh,
) -> None:
    counts = count_backends(resilience.port, "faulty:8080", 1000, path="/abort")
    assert set(counts) == {"faulty", "555"}, counts
    # Binomial(1000, 0.5) has a standard deviation of about 16: allow 4 of them.
    assert 435 <= counts["555"] <= 565, counts


def test_fixed_delay_holds_every_request_for_the_configured_time(
    resilience: TrafficMesh,
) -> None:
    for _ in range(3):
        started = time.monotonic()
        status, _, _ = send(resilience.port, "faulty:8080", "/delay")
        elapsed = time.monotonic() - started
        assert status == 200
        assert 0.48 <= elapsed < 1.5, elapsed
    started = time.monotonic()
    status, _, _ = send(resilience.port, "faulty:8080", "/other")
    assert status == 200 and time.monotonic() - started < 0.4
