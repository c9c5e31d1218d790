"""The control plane's JWKS fetcher against an issuer served on loopback by this test: first
fetch with backoff, refresh, the last good key set kept while the issuer is down, responses
that are not key sets, OpenID discovery, timeouts, and what the RequestAuthentication's
status says meanwhile."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from controlplane.api import load
from controlplane.api.issues import ResourceKey
from controlplane.api.request_authn import JwksKeySet, jwks_key
from controlplane.sources.jwks import JwksFetcher
from controlplane.store import Store, Submission
from tests.support.jwt import rsa_jwk

KEYS_1 = json.dumps({"keys": [rsa_jwk("1")]})
KEYS_2 = json.dumps({"keys": [rsa_jwk("2")]})
RA_KEY = ResourceKey("RequestAuthentication", "default", "api-jwt")


@dataclass
class Issuer:
    """A loopback issuer: ``reply`` decides each answer (status, body, delay)."""

    reply: Callable[[], tuple[int, str, float]] = lambda: (200, KEYS_1, 0.0)
    hits: list[str] = field(default_factory=list)
    port: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.hits.append(request.path)
        if request.path.endswith("/.well-known/openid-configuration"):
            doc = {"issuer": f"http://127.0.0.1:{self.port}", "jwks_uri": self.uri("/keys")}
            return web.json_response(doc)
        status, body, delay = self.reply()
        if status in (301, 302):
            raise web.HTTPFound(location=body)
        if delay:
            await asyncio.sleep(delay)
        return web.Response(status=status, text=body, content_type="application/json")

    def uri(self, path: str = "/jwks.json") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
async def issuer() -> AsyncIterator[Issuer]:
    found = Issuer()
    app = web.Application()
    app.router.add_get("/{tail:.*}", found.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    found.port = runner.addresses[0][1]
    try:
        yield found
    finally:
        await runner.cleanup()


def request_authentication(rule: str) -> Submission:
    doc = {
        "apiVersion": "security.istio.io/v1",
        "kind": "RequestAuthentication",
        "metadata": {"name": "api-jwt", "namespace": "default"},
        "spec": {"jwtRules": [json.loads(rule)]},
    }
    resource, issues = load(doc)
    return Submission(resource, tuple(issues))


def key_set(store: Store, uri: str) -> JwksKeySet | None:
    found: JwksKeySet | None = store.snapshot.get(jwks_key(uri))
    return found


def codes(store: Store) -> list[str]:
    status = store.snapshot.status.get(RA_KEY)
    return [i.code.id for i in status.issues] if status else []


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_fetches_the_key_set_and_refreshes_it(issuer: Issuer) -> None:
    store = Store()
    store.apply(
        upserts=[request_authentication(json.dumps({"issuer": "a", "jwksUri": issuer.uri()}))]
    )
    fetcher = JwksFetcher(store, refresh_interval=0.2)
    async with fetcher.running():
        await until(
            lambda: (ks := key_set(store, issuer.uri())) is not None and ks.spec.jwks == KEYS_1
        )
        issuer.reply = lambda: (200, KEYS_2, 0.0)  # the issuer rotates
        await until(lambda: key_set(store, issuer.uri()).spec.jwks == KEYS_2)  # type: ignore[union-attr]
    assert codes(store) == []


async def test_a_first_fetch_that_fails_is_retried_with_backoff_and_reported(
    issuer: Issuer,
) -> None:
    answers = iter([(503, "down", 0.0)] * 3)
    issuer.reply = lambda: next(answers, (200, KEYS_1, 0.0))
    store = Store()
    store.apply(
        upserts=[request_authentication(json.dumps({"issuer": "a", "jwksUri": issuer.uri()}))]
    )
    fetcher = JwksFetcher(store, refresh_interval=60, retry_interval=0.05)
    seen: list[list[str]] = []
    store.subscribe(lambda snapshot, change: seen.append(codes(store)))
    async with fetcher.running():
        await until(
            lambda: (ks := key_set(store, issuer.uri())) is not None and ks.spec.jwks is not None
        )
    assert len(issuer.hits) == 4  # three failures (0.05 s, 0.1 s, 0.2 s apart), then the keys
    assert ["CP0442"] in seen  # never fetched: tokens of the issuer refused meanwhile
    status = store.snapshot.status[RA_KEY]
    assert status.accepted and status.reconciled and codes(store) == []


async def test_issuer_down_keeps_the_last_good_key_set_and_says_so(issuer: Issuer) -> None:
    store = Store()
    store.apply(
        upserts=[request_authentication(json.dumps({"issuer": "a", "jwksUri": issuer.uri()}))]
    )
    fetcher = JwksFetcher(store, refresh_interval=0.1, retry_interval=0.05)
    async with fetcher.running():
        await until(lambda: key_set(store, issuer.uri()) is not None)
        issuer.reply = lambda: (500, "oops", 0.0)
        await until(lambda: bool(key_set(store, issuer.uri()).spec.error))  # type: ignore[union-attr]
        spec = key_set(store, issuer.uri()).spec  # type: ignore[union-attr]
        assert spec.jwks == KEYS_1 and "HTTP 500" in spec.error
        [issue] = store.snapshot.status[RA_KEY].issues
        assert issue.code.id == "CP0441" and issue.path == "spec.jwtRules[0].jwksUri"
        assert "stays in effect" in issue.reason and issuer.uri() in issue.reason
        issuer.reply = lambda: (200, KEYS_1, 0.0)
        await until(lambda: codes(store) == [])
    assert key_set(store, issuer.uri()).spec.error == ""  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "body",
    ["<html>login</html>", '{"keys": "none"}', '{"keys": [{"kty": "RSA"}]}', "[]"],
)
async def test_a_response_that_is_not_a_key_set_never_replaces_a_good_one(
    issuer: Issuer, body: str
) -> None:
    store = Store()
    store.apply(
        upserts=[request_authentication(json.dumps({"issuer": "a", "jwksUri": issuer.uri()}))]
    )
    async with JwksFetcher(store, refresh_interval=0.05).running():
        await until(lambda: key_set(store, issuer.uri()) is not None)
        issuer.reply = lambda: (200, body, 0.0)
        await until(lambda: "not a JSON Web Key Set" in key_set(store, issuer.uri()).spec.error)  # type: ignore[union-attr]
        assert key_set(store, issuer.uri()).spec.jwks == KEYS_1  # type: ignore[union-attr]


async def test_a_slow_issuer_times_out_after_the_rules_timeout(issuer: Issuer) -> None:
    issuer.reply = lambda: (200, KEYS_1, 1.0)
    store = Store()
    rule = {"issuer": "a", "jwksUri": issuer.uri(), "timeout": "100ms"}
    store.apply(upserts=[request_authentication(json.dumps(rule))])
    async with JwksFetcher(store, refresh_interval=60, retry_interval=30).running():
        await until(lambda: key_set(store, issuer.uri()) is not None, timeout=2)
    spec = key_set(store, issuer.uri()).spec  # type: ignore[union-attr]
    assert spec.jwks is None and "Timeout" in spec.error


async def test_an_issuer_alone_is_found_by_openid_discovery(issuer: Issuer) -> None:
    store = Store()
    issuer_url = f"http://127.0.0.1:{issuer.port}/realm"
    store.apply(upserts=[request_authentication(json.dumps({"issuer": issuer_url}))])
    discovery = issuer_url + "/.well-known/openid-configuration"
    async with JwksFetcher(store, refresh_interval=60).running():
        await until(lambda: key_set(store, discovery) is not None)
    assert key_set(store, discovery).spec.jwks == KEYS_1  # type: ignore[union-attr]
    assert issuer.hits == ["/realm/.well-known/openid-configuration", "/keys"]


async def test_a_uri_no_rule_names_any_more_is_dropped(issuer: Issuer) -> None:
    store = Store()
    store.apply(
        upserts=[request_authentication(json.dumps({"issuer": "a", "jwksUri": issuer.uri()}))]
    )
    async with JwksFetcher(store, refresh_interval=0.05).running():
        await until(lambda: key_set(store, issuer.uri()) is not None)
        store.apply(deletes=[RA_KEY])
        await until(lambda: key_set(store, issuer.uri()) is None)
        hits = len(issuer.hits)
        await asyncio.sleep(0.2)
        assert len(issuer.hits) == hits  # no longer fetched


@pytest.mark.parametrize(
    "target", ["http://169.254.169.254/latest/meta-data", "http://[fe80::1]/keys"]
)
async def test_link_local_and_metadata_addresses_are_never_fetched(
    issuer: Issuer, target: str
) -> None:
    """As istiod's jwksBlockedIP: directly, or through a redirect from an allowed issuer."""
    issuer.reply = lambda: (302, target, 0.0)
    store = Store()
    rules = [{"issuer": "a", "jwksUri": target}, {"issuer": "b", "jwksUri": issuer.uri()}]
    for rule in rules:
        store.apply(upserts=[request_authentication(json.dumps(rule))])
        async with JwksFetcher(store, refresh_interval=60, retry_interval=30).running():
            uri = rule["jwksUri"]
            await until(lambda u=uri: key_set(store, u) is not None, timeout=3)  # type: ignore[misc]
        spec = key_set(store, uri).spec  # type: ignore[union-attr]
        assert (
            spec.jwks is None and "connection blocked" in spec.error and "link-local" in spec.error
        )


async def test_a_key_set_not_refreshed_for_the_eviction_time_is_dropped(issuer: Issuer) -> None:
    """istiod evicts a key set it could not refresh for 7 days; then tokens are refused."""
    store = Store()
    store.apply(
        upserts=[request_authentication(json.dumps({"issuer": "a", "jwksUri": issuer.uri()}))]
    )
    async with JwksFetcher(store, refresh_interval=0.05, eviction=0.5).running():
        await until(lambda: key_set(store, issuer.uri()) is not None)
        issuer.reply = lambda: (503, "down", 0.0)
        await until(lambda: "CP0441" in codes(store))  # first: the last good set stays
        assert key_set(store, issuer.uri()).spec.jwks == KEYS_1  # type: ignore[union-attr]
        await until(lambda: "CP0442" in codes(store))  # then: dropped, fails closed
        assert key_set(store, issuer.uri()).spec.jwks is None  # type: ignore[union-attr]
