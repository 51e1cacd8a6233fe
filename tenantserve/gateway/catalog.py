"""The models this gateway serves, as each caller may name and see them.

An entry is one model served by one pool (`pools.py` builds them): its public name, a
lower-case alias, the pool, the pool's region, and whom the pool is reserved for: the
premium tenants its configuration names, and any tenant moved onto it
(`TenantContext.pool`, set by `tenantserve tenant move`) — a `dedicated` pool serves
nobody else, even before anyone is moved there. A caller's view (`routes`) has, per name,
the shared pool in the caller's region (else one elsewhere, which admission refuses for
residency), and the caller's reserved pool for that model if it has one (the pool it was
moved to first). Models served only by pools reserved for others are not in the view at
all: such a name is "not found".

The model registry (a later issue) replaces the static entries with versions, tenant
aliases and adapters.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from tenantserve.admission.policy import ModelRoute
from tenantserve.engine.tokenizer import Tokenizer
from tenantserve.tenancy.model import Region, TenantContext

SHARED_POOL = "shared"


@dataclass(frozen=True)
class ServedModel:
    """A model of the built-in engine: its public name, tokenizer and context window."""

    name: str
    tokenizer: Tokenizer
    max_context_tokens: int
    created: int = 0


@dataclass(frozen=True)
class CatalogEntry:
    """One model served by one pool."""

    name: str
    pool: str
    region: Region
    max_context_tokens: int
    created: int = 0
    # None: the backend tokenizes (an upstream); prompts are estimated for admission.
    tokenizer: Tokenizer | None = None
    reserved_for: frozenset[str] = frozenset()
    # Serves only the tenants in `reserved_for` and those moved onto it.
    dedicated: bool = False

    @property
    def reserved(self) -> bool:
        return self.dedicated or bool(self.reserved_for)

    def visible_to(self, tenant_id: str, placed_pool: str | None = None) -> bool:
        return not self.reserved or tenant_id in self.reserved_for or self.pool == placed_pool


class ModelCatalog:
    """Routes by the names a caller may put in `model`, and what `/v1/models` shows it."""

    def __init__(self, entries: Iterable[CatalogEntry]) -> None:
        self._by_name: dict[str, list[CatalogEntry]] = {}
        for entry in entries:
            self._by_name.setdefault(entry.name, []).append(entry)
        self._reserved_tenants = frozenset(
            t for group in self._by_name.values() for e in group for t in e.reserved_for
        )
        # Views depend only on the region and, for tenants with a reservation, the tenant
        # and the pool it was moved to.
        self._views: dict[tuple[Region, str, str], dict[str, ModelRoute]] = {}

    def routes(self, ctx: TenantContext) -> Mapping[str, ModelRoute]:
        """The caller's view for `decide()`: every name (and alias) it may address.
        `decide` then applies the key scope, residency and the reserved pool."""
        placed = ctx.pool or ""
        who = ctx.tenant_id if placed or ctx.tenant_id in self._reserved_tenants else ""
        key = (ctx.region, who, placed)
        view = self._views.get(key)
        if view is None:
            view = self._views[key] = self._view(ctx.region, ctx.tenant_id, ctx.pool)
        return view

    def visible(self, ctx: TenantContext) -> list[ModelRoute]:
        """The canonical routes the caller may use: its key scope and region applied."""
        return [
            route
            for name, route in self.routes(ctx).items()
            if name == route.target
            and route.region == ctx.region
            and (ctx.allows_model(route.model_id) or ctx.allows_model(route.target))
        ]

    def tokenizer(self, name: str) -> Tokenizer | None:
        """The tokenizer of a model (by name or alias), when the gateway has one."""
        for entry in self._by_name.get(name) or self._by_name.get(self._canonical(name), []):
            if entry.tokenizer is not None:
                return entry.tokenizer
        return None

    def created(self, name: str) -> int:
        entries = self._by_name.get(name, [])
        return entries[0].created if entries else 0

    def _canonical(self, name: str) -> str:
        for canonical in self._by_name:
            if canonical.lower() == name:
                return canonical
        return name

    def pools_of(self, name: str) -> list[str]:
        """The pools serving the model `name`."""
        return [e.pool for e in self._by_name.get(name, [])]

    def _view(
        self, region: Region, tenant_id: str, placed_pool: str | None
    ) -> dict[str, ModelRoute]:
        view: dict[str, ModelRoute] = {}
        for name, group in self._by_name.items():
            usable = [e for e in group if e.visible_to(tenant_id, placed_pool)]
            if not usable:
                continue
            shared = [e for e in usable if not e.reserved]
            reserved = [e for e in usable if e.reserved and e.region == region]
            reserved.sort(key=lambda e: e.pool != placed_pool)  # its own pool first
            local = [e for e in shared if e.region == region]
            base = (local or reserved or shared or usable)[0]
            route = ModelRoute(
                model_id=name,
                target=name,  # no registry yet: the name is the one version there is
                pool=base.pool,
                region=base.region,
                max_model_len=base.max_context_tokens,
                reserved_pool=reserved[0].pool if reserved else None,
            )
            view[name] = route
            view.setdefault(name.lower(), replace(route, model_id=name.lower()))
        return view
