"""The models this gateway serves, as each caller may name and see them.

One served model today: its public name and a lower-case alias, both routed to the
shared pool of this deployment's region. The model registry (a later issue) replaces
the single `ServedModel` with versions, tenant aliases and adapters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from tenantserve.admission.policy import ModelRoute
from tenantserve.engine.tokenizer import Tokenizer
from tenantserve.tenancy.model import Region, TenantContext

SHARED_POOL = "shared"


@dataclass(frozen=True)
class ServedModel:
    """The model behind the API: its public name, tokenizer and context window."""

    name: str
    tokenizer: Tokenizer
    max_context_tokens: int
    created: int = 0


class ModelCatalog:
    """Routes by the names a caller may put in `model`, and what `/v1/models` shows it."""

    def __init__(self, model: ServedModel, region: Region, pool: str = SHARED_POOL) -> None:
        self.model = model
        route = ModelRoute(
            model_id=model.name,
            # No registry yet: the served directory is the one version there is.
            target=model.name,
            pool=pool,
            region=region,
            max_model_len=model.max_context_tokens,
        )
        alias = replace(route, model_id=model.name.lower())
        self._routes: dict[str, ModelRoute] = {route.model_id: route, alias.model_id: alias}
        self._canonical = route

    def routes(self, ctx: TenantContext) -> Mapping[str, ModelRoute]:
        """The caller's view for `decide()`: every name routed (public models only so far,
        so the same for every caller; `decide` applies the key scope and residency)."""
        return self._routes

    def visible(self, ctx: TenantContext) -> list[ModelRoute]:
        """The canonical routes the caller may use: its key scope and region applied."""
        route = self._canonical
        allowed = ctx.allows_model(route.model_id) or ctx.allows_model(route.target)
        return [route] if allowed and route.region == ctx.region else []
