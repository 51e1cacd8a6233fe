"""The audit entry of each admin action, built from the JSON that the admin API and the
CLI's direct mode both produce (pure). One vocabulary for both recorders:

    await audit.record(actor, *actions.tenant_updated(before, after))

Each returns an `Action` (action, target, details); details keep the facts that matter
(what changed from → to, ids, amounts), never a key or token.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar

from tenantserve.audit.facts import changes, picked
from tenantserve.errors import NotFoundError

T = TypeVar("T")

Json = Mapping[str, Any]

KEY_FACTS = ("tenant_id", "prefix", "allowed_models", "expires_at", "revoked_at")
VERSION_FACTS = ("digest", "format", "quantization", "status", "scope", "size_bytes")
ROLLOUT_STEP_FACTS = ("phase", "percent", "step")
INVOICE_FACTS = ("tenant_id", "period", "status", "total_usd", "credited_usd")


class Action(NamedTuple):
    """One audit entry's action, target and details."""

    action: str
    target: str
    details: dict[str, Any]


async def state_before(read: Awaitable[T], view: Callable[[T], Mapping[str, Any]]) -> Json:
    """The JSON a change starts from; `{}` for an unknown target (the change itself then
    fails with the error it would have raised without the audit)."""
    try:
        return view(await read)
    except NotFoundError:
        return {}


def _without(view: Json, *names: str) -> dict[str, Any]:
    return {k: v for k, v in view.items() if k not in names}


def tenant_created(tenant: Json) -> Action:
    return Action("tenant.create", str(tenant["id"]), _without(tenant, "id", "created_at"))


def tenant_updated(before: Json, after: Json) -> Action:
    """`{field: {"from", "to"}}` for each changed field (tier, status, limits, quotas...)."""
    return Action("tenant.update", str(after["id"]), changes(before, after))


def key_created(key: Json) -> Action:
    return Action("key.create", str(key["id"]), picked(key, *KEY_FACTS))


def key_revoked(key: Json) -> Action:
    return Action("key.revoke", str(key["id"]), picked(key, *KEY_FACTS))


def model_registered(version: Json, created: bool) -> Action:
    facts = {**picked(version, *VERSION_FACTS), "created": created}
    return Action("model.register", str(version["id"]), facts)


def model_deprecated(before: Json, after: Json) -> Action:
    return Action("model.deprecate", str(after["id"]), changes(before, after))


def model_archived(before: Json, after: Json) -> Action:
    return Action("model.archive", str(after["id"]), changes(before, after))


def rollout_started(rollout: Json, reason: str | None) -> Action:
    facts = picked(rollout, "id", "stable", "candidate", "phase", "percent", "plan")
    return Action("rollout.start", str(rollout["model"]), {**facts, "reason": reason})


def rollout_stepped(action: str, before: Json, after: Json, reason: str | None) -> Action:
    """`rollout.promote` / `rollout.rollback`: the phase and percent from → to."""
    facts = {
        **picked(after, "id", "stable", "candidate"),
        **changes(before, after, ROLLOUT_STEP_FACTS),
        "reason": reason,
    }
    return Action(action, str(after["model"]), facts)


def adapter_changed(action: str, adapter: Json) -> Action:
    """`adapter.upload` / `adapter.delete` of a tenant's adapter."""
    facts = picked(adapter, "name", "version", "base_model", "status", "size_bytes")
    return Action(action, str(adapter["id"]), facts)


def invoices_generated(period: str, tenant_id: str | None, generated: Sequence[Json]) -> Action:
    invoices = [picked(g, "id", "tenant_id", "outcome", "total_usd") for g in generated]
    facts = {"period": period, "tenant_id": tenant_id, "invoices": invoices}
    return Action("invoice.generate", tenant_id or "*", facts)


def invoice_finalized(invoice: Json) -> Action:
    return Action("invoice.finalize", str(invoice["id"]), picked(invoice, *INVOICE_FACTS))


def credit_note_issued(note: Json) -> Action:
    facts = picked(note, "id", "tenant_id", "amount_usd", "reason")
    return Action("invoice.credit_note", str(note["invoice_id"]), facts)


def invoice_exported(export: Json) -> Action:
    facts = picked(export, "provider", "customer_id", "provider_invoice_id")
    return Action("invoice.export", str(export["invoice_id"]), facts)


def price_set(version: Json) -> Action:
    """A new price-book version (token price, platform fee or engine cost)."""
    return Action("price.set", str(version["kind"]), dict(version))


def credit_granted(grant: Json) -> Action:
    facts = picked(grant, "id", "amount_usd", "expires_at", "reason")
    return Action("credit.grant", str(grant["tenant_id"]), facts)


def usage_read(tenant_id: str | None, start: str, end: str, granularity: str) -> Action:
    """An operator read of a tenant's (None: every tenant's) usage."""
    facts = {"start": start, "end": end, "granularity": granularity}
    return Action("usage.read", tenant_id or "*", facts)


def events_read(count: int) -> Action:
    """An operator read of the operator event log (tenants' events)."""
    return Action("events.read", "*", {"count": count})
