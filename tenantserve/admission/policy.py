"""The pure admission decision: may this tenant run this request, where, and with what caps.

`decide()` reads nothing and writes nothing: the gateway gathers the facts (the
authenticated `TenantContext`, the request's token counts, the caller's view of the
catalog) and acts on the result. Rate limits and quotas, which need shared state, are
checked by the limiter right after an `Admitted`, still before any model work.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from tenantserve.tenancy.model import Region, TenantContext
from tenantserve.tiers import Tier


@dataclass(frozen=True)
class TierCaps:
    """Per-request size caps of a tier (tenant overrides win)."""

    max_prompt_tokens: int
    max_output_tokens: int


DEFAULT_TIER_CAPS: Mapping[Tier, TierCaps] = {
    Tier.FREE: TierCaps(max_prompt_tokens=4096, max_output_tokens=512),
    Tier.STANDARD: TierCaps(max_prompt_tokens=16384, max_output_tokens=4096),
    Tier.PREMIUM: TierCaps(max_prompt_tokens=131072, max_output_tokens=16384),
}


@dataclass(frozen=True)
class ModelRoute:
    """A model as one caller may name it, and where it is served."""

    model_id: str  # what the client puts in `model` (catalog name, alias or adapter name)
    target: str  # the immutable version it resolves to, `name@version`
    pool: str  # the shared pool serving it
    region: Region
    max_model_len: int
    adapter_id: str | None = None  # set when the route is one of the tenant's adapters
    # The caller's reserved pool for this model, when it has one (premium reservations).
    reserved_pool: str | None = None


@dataclass(frozen=True)
class AdmissionRequest:
    """What the gateway knows of a request before any model work."""

    model: str
    num_prompt_tokens: int
    max_tokens: int | None  # None: as many as the caps and the context allow


@dataclass(frozen=True)
class Admitted:
    route: ModelRoute
    pool: str
    max_tokens: int
    priority: int


@dataclass(frozen=True)
class Denied:
    """An OpenAI-shaped refusal: HTTP status, error code, message, offending parameter."""

    status: int
    code: str
    message: str
    param: str | None = None


@dataclass(frozen=True)
class PolicyConfig:
    tier_caps: Mapping[Tier, TierCaps] = field(default_factory=lambda: dict(DEFAULT_TIER_CAPS))


def decide(
    ctx: TenantContext,
    req: AdmissionRequest,
    catalog: Mapping[str, ModelRoute],
    cfg: PolicyConfig,
) -> Admitted | Denied:
    """Admit or deny `req` for `ctx`. `catalog` must be the caller's own view (public models,
    its aliases, its adapters): a name outside it is "not found", whoever else owns it."""
    route = catalog.get(req.model)
    if route is None:
        return Denied(
            404,
            "model_not_found",
            f"The model `{req.model}` does not exist or you do not have access to it.",
            "model",
        )
    if not (ctx.allows_model(route.model_id) or ctx.allows_model(route.target)):
        return Denied(403, "model_not_allowed", f"This API key may not use `{req.model}`.", "model")
    if route.region != ctx.region:
        return Denied(
            403,
            "region_mismatch",
            f"`{req.model}` is served in region {route.region.value}; your data stays in "
            f"{ctx.region.value}, so it is not served there.",
            "model",
        )
    caps = cfg.tier_caps[ctx.tier]
    max_prompt = ctx.limits.max_prompt_tokens or caps.max_prompt_tokens
    max_output = ctx.limits.max_output_tokens or caps.max_output_tokens
    if req.num_prompt_tokens > max_prompt:
        return Denied(
            400,
            "prompt_too_long",
            f"The prompt has {req.num_prompt_tokens} tokens; the {ctx.tier.value} tier "
            f"allows {max_prompt}.",
            "messages",
        )
    room = route.max_model_len - req.num_prompt_tokens
    if room < 1:
        return Denied(
            400,
            "context_length_exceeded",
            f"This model's maximum context length is {route.max_model_len} tokens; the prompt "
            f"has {req.num_prompt_tokens}.",
            "messages",
        )
    if req.max_tokens is None:
        max_tokens = min(max_output, room)
    elif req.max_tokens > max_output:
        return Denied(
            400,
            "max_tokens_too_large",
            f"max_tokens is {req.max_tokens}; the {ctx.tier.value} tier allows {max_output}.",
            "max_tokens",
        )
    elif req.max_tokens > room:
        return Denied(
            400,
            "context_length_exceeded",
            f"This model's maximum context length is {route.max_model_len} tokens. However, you "
            f"requested {req.num_prompt_tokens + req.max_tokens} tokens "
            f"({req.num_prompt_tokens} in the messages, {req.max_tokens} in the completion).",
            "max_tokens",
        )
    else:
        max_tokens = req.max_tokens
    # A reservation is a premium feature: a tenant moved to a lower tier uses the shared
    # pool again (unless its reserved pool is the only one serving the model).
    pool = route.pool
    if route.reserved_pool is not None and ctx.tier is Tier.PREMIUM:
        pool = route.reserved_pool
    return Admitted(route=route, pool=pool, max_tokens=max_tokens, priority=ctx.tier.priority)
