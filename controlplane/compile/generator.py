"""The generator contract: one xDS type's resources for one proxy, from one snapshot.

Each of ``cds``, ``eds``, ``lds`` and ``rds`` defines one ``Generator``, registered by type
URL in ``compile/compiler.py``, which runs them in push order (clusters before their
endpoints, listeners before their routes) and hands each what the earlier ones built.
Secrets (``compile/sds.py``) are per identity, not per snapshot: the CA's provider serves
them, and no snapshot generator makes them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from controlplane.compile.context import CompileContext
from controlplane.compile.proxy import Proxy
from controlplane.compile.resources import CompiledResource

# type URL -> resource name -> resource: what the generators that ran before have built.
Built = Mapping[str, Mapping[str, CompiledResource]]
Generate = Callable[[CompileContext, Proxy, Built], Mapping[str, CompiledResource]]


@dataclass(frozen=True)
class Generator:
    """Builds every resource of ``type_url`` that a proxy should have.

    Contract: ``generate(context, proxy, built)`` is pure: it reads the snapshot only through
    ``context.reads`` and memoizes every resource it builds with ``context.cached`` under a
    key of exactly what shapes it, so equal proxies share resources and a change rebuilds
    only what read what it touched. ``pushed_by`` names the config kinds whose change can
    alter its output (a change of any other kind leaves it as it was).
    """

    type_url: str
    pushed_by: frozenset[str]
    generate: Generate
