"""The compiler of one snapshot: runs the generator of each xDS type for a proxy.

``SnapshotCompiler`` is the object the xDS hub holds per snapshot. It dispatches by type URL
to the generators registered in ``GENERATORS`` (``cds``, ``eds``, ``lds``, ``rds``), in push
order, and follows the previous snapshot's compiler so that a change rebuilds only what read
what it touched.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from controlplane.api.issues import ResourceKey
from controlplane.compile.cds import CDS
from controlplane.compile.context import CompileContext
from controlplane.compile.eds import EDS
from controlplane.compile.generator import Generator
from controlplane.compile.lds import LDS
from controlplane.compile.proxy import Proxy
from controlplane.compile.rds import RDS, VHDS
from controlplane.compile.resources import CompiledResource
from controlplane.store.dependencies import change_tokens
from controlplane.store.snapshot import Snapshot
from controlplane.store.tokens import ChangeTokens, Token

# Type URL -> generator, in the order Envoy needs them: clusters before their endpoints,
# listeners before their routes.
GENERATORS: Mapping[str, Generator] = {g.type_url: g for g in (CDS, EDS, LDS, RDS, VHDS)}


@dataclass(frozen=True)
class ProxyResources:
    """Everything one proxy should have, by type URL then resource name."""

    by_type: Mapping[str, Mapping[str, CompiledResource]]

    def of(self, type_url: str) -> Mapping[str, CompiledResource]:
        return self.by_type.get(type_url, {})


class SnapshotCompiler(CompileContext):
    """Compiles proxies against one snapshot.

    Contract: ``compile(proxy)`` is pure (no I/O, no asyncio; single-threaded) and returns
    every resource of every generated type for ``proxy``. Equal inputs give the very same
    ``CompiledResource`` objects within a compiler and, through ``following``, across
    compilers of later snapshots whose change did not touch what the resource read. While it
    runs, every snapshot read is reported to ``reads``, so a caller that records around it
    (the xDS cache's shapes) learns what the proxy's resources depended on.
    """

    @classmethod
    def following(
        cls,
        previous: SnapshotCompiler,
        snapshot: Snapshot,
        changed: Collection[ResourceKey],
        tokens: ChangeTokens | None = None,
    ) -> tuple[SnapshotCompiler, frozenset[Token]]:
        """The compiler for ``snapshot``, which differs from ``previous``'s by the keys
        ``changed``: it inherits every build (and the snapshot every index and lookup) the
        change did not touch. Also returns the touched dependency tokens.

        ``tokens`` (default: those the store attached to ``snapshot``) are used when they
        describe exactly this change; otherwise the tokens are computed here.
        """
        old = previous.snapshot
        snapshot.take_over(old, {k.kind for k in changed})
        given = tokens if tokens is not None else snapshot.change
        touched = given.between(old.version, changed) if given is not None else None
        if touched is None:
            touched = change_tokens(old, snapshot, changed)
        snapshot.take_over_lookups(old, touched)
        return cls(snapshot, previous, touched), touched

    def compile(self, proxy: Proxy) -> ProxyResources:
        """Every resource ``proxy`` should have, by type URL."""
        built: dict[str, Mapping[str, CompiledResource]] = {}
        for type_url in GENERATORS:
            built[type_url] = self.generate(type_url, proxy, built)
        return ProxyResources(built)

    def generate(
        self,
        type_url: str,
        proxy: Proxy,
        built: Mapping[str, Mapping[str, CompiledResource]] | None = None,
    ) -> Mapping[str, CompiledResource]:
        """The resources of one type for ``proxy``; ``built`` holds the types generated
        before it (EDS reads the cluster names CDS built; without them, CDS runs first)."""
        generator = GENERATORS[type_url]
        if built is None:
            built = (
                {CDS.type_url: self.generate(CDS.type_url, proxy, {})} if generator is EDS else {}
            )
        # Each generator reads in a scope of its own: what one generator read directly is
        # no input of another's builds (see Tracker.push).
        recorder = self.reads.start_scope()
        try:
            return generator.generate(self, proxy, built)
        finally:
            self.reads.stop_recording(recorder)
