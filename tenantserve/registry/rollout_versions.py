"""What a rollout does to the versions it moves between, and which versions qualify:
the candidate and stable model versions picked for a start, and the finishing and
rolling back of model and adapter versions (inside the rollout's own transaction)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from tenantserve.errors import InvalidRequestError, NotFoundError
from tenantserve.registry.adapters import (
    AdapterStatus,
    is_adapter_key,
    parse_adapter_key,
    parse_adapter_ref,
)
from tenantserve.registry.model import ModelStatus, ModelVersion, earliest_end_date
from tenantserve.registry.naming import ModelRef, validate_name, version_key
from tenantserve.registry.rollout import (
    Action,
    Decision,
    Rollout,
)
from tenantserve.registry.unit_of_work import RegistryUnitOfWork


async def finish_versions(
    uow: RegistryUnitOfWork, rollout: Rollout, decision: Decision, now: datetime
) -> Decision:
    """Make the candidate the served version and deprecate the old stable one, naming the
    candidate; a candidate deprecated or archived meanwhile rolls the rollout back."""
    plan = rollout.plan
    candidate = await get_version(uow, plan.candidate_ref)
    if candidate is None or candidate.status not in (ModelStatus.ACTIVE, ModelStatus.CANARY):
        state = "gone" if candidate is None else candidate.status.value
        return Decision(Action.ROLLBACK, f"cannot finish: {plan.candidate_ref} is {state}")
    notes: list[str] = []
    if candidate.status is ModelStatus.CANARY:
        # ModelVersion has no canary → active transition of its own yet; this is it.
        candidate.status = ModelStatus.ACTIVE
        await uow.models.update(candidate, now)
        notes.append(f"{candidate.ref} is now active")
    stable = await get_version(uow, plan.stable_ref)
    if stable is not None and stable.status is ModelStatus.ACTIVE:
        end_date = earliest_end_date(now)
        stable.deprecate(end_date, now, candidate)
        await uow.models.update(stable, now)
        notes.append(f"{stable.ref} deprecated until {end_date.isoformat()}")
    else:
        state = "gone" if stable is None else stable.status.value
        notes.append(f"{plan.stable_ref} left as it was ({state})")
    return Decision(Action.FINISH, f"{decision.reason}; {'; '.join(notes)}")


async def finish_adapter(
    uow: RegistryUnitOfWork, rollout: Rollout, decision: Decision, now: datetime
) -> Decision:
    """Supersede the old stable adapter version (the candidate becomes the current one); a
    candidate gone or not ready any more rolls the rollout back."""
    plan = rollout.plan
    tenant_id, name, version = parse_adapter_ref(plan.candidate_ref)
    candidate = await uow.adapters.get_version(tenant_id, name, version)
    if candidate is None or not candidate.is_routable:
        state = "gone" if candidate is None else candidate.status.value
        return Decision(Action.ROLLBACK, f"cannot finish: {plan.candidate_ref} is {state}")
    notes = [f"{candidate.ref} is now current"]
    for old in await uow.adapters.versions(tenant_id, name):
        if old.version < candidate.version and old.superseded_at is None:
            old.supersede(now)
            await uow.adapters.update(old)
            notes.append(f"{old.ref} superseded")
    return Decision(Action.FINISH, f"{decision.reason}; {'; '.join(notes)}")


async def roll_back_adapter(
    uow: RegistryUnitOfWork, rollout: Rollout, decision: Decision, now: datetime
) -> None:
    """The rolled-back candidate version: failed and superseded, the reason its report."""
    tenant_id, name, version = parse_adapter_ref(rollout.plan.candidate_ref)
    candidate = await uow.adapters.get_version(tenant_id, name, version)
    if candidate is not None and candidate.status is not AdapterStatus.VALIDATING:
        candidate.roll_back(f"rolled back: {decision.reason}", now)
        await uow.adapters.update(candidate)


def validate_key(name: str) -> None:
    """A model name, or an adapter's rollout key `adapter:<tenant>/<name>`."""
    if is_adapter_key(name):
        parse_adapter_key(name)
    else:
        validate_name(name)


async def get_version(uow: RegistryUnitOfWork, ref: str) -> ModelVersion | None:
    parsed = ModelRef.parse(ref)
    assert parsed.version is not None
    return await uow.models.get(parsed.name, parsed.version)


def candidate_ref(name: str, candidate: str) -> ModelRef:
    text = candidate if "@" in candidate else f"{name}@{candidate}"
    ref = ModelRef.parse(text)
    if ref.name != name or ref.version is None:
        raise InvalidRequestError(f"the candidate must be a version of {name}, not {candidate!r}")
    return ref


def pick_candidate(versions: Sequence[ModelVersion], ref: ModelRef) -> ModelVersion:
    found = next((v for v in versions if v.version == ref.version), None)
    if found is None:
        raise NotFoundError(f"model {ref} does not exist; register it first")
    if found.status not in (ModelStatus.ACTIVE, ModelStatus.CANARY):
        raise InvalidRequestError(f"{found.ref} is {found.status.value}; it cannot be rolled out")
    if not found.is_public:
        raise InvalidRequestError(
            f"{found.ref} is private to one tenant; only public versions are rolled out "
            "(a rollout routes every tenant's requests)"
        )
    return found


def pick_stable(versions: Sequence[ModelVersion], candidate: ModelVersion) -> ModelVersion:
    stable = [
        v
        for v in versions
        if v.status is ModelStatus.ACTIVE and v.is_public and v.ref != candidate.ref
    ]
    if not stable:
        raise InvalidRequestError(
            f"{candidate.name} has no other active public version to roll out over"
        )
    newest = max(stable, key=lambda v: version_key(v.version))
    if version_key(candidate.version) <= version_key(newest.version):
        raise InvalidRequestError(
            f"{candidate.ref} is not newer than the stable version {newest.ref}"
        )
    return newest
