"""Demo tenants for `tenantserve up --demo`: one per tier, each with a working API key.

Idempotent: tenants are found by name before any is created, and the keys are kept
in `data_dir/demo_keys.json` (mode 0600) so every run prints the same ones. A stored
key is replaced only when it no longer authenticates (revoked, expired, another
database or pepper).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tenantserve.errors import AuthenticationError, TenantSuspendedError
from tenantserve.tenancy.model import Region, Tenant
from tenantserve.tenancy.service import TenancyService
from tenantserve.tiers import Tier

DEMO_KEYS_FILE = "demo_keys.json"
DEMO_REGION = Region.US
DEMO_TENANTS: tuple[tuple[str, Tier], ...] = (
    ("demo-free", Tier.FREE),
    ("demo-standard", Tier.STANDARD),
    ("demo-premium", Tier.PREMIUM),
)


@dataclass(frozen=True)
class DemoTenant:
    """A demo tenant and its API key (plaintext, as kept in the demo keys file)."""

    name: str
    tier: str
    tenant_id: str
    key_id: str
    api_key: str


async def ensure_demo_tenants(service: TenancyService, data_dir: Path) -> list[DemoTenant]:
    """The demo tenants in `DEMO_TENANTS` order, creating whichever tenant or key is
    missing; the keys file is rewritten only when a key was created."""
    path = data_dir / DEMO_KEYS_FILE
    stored = _read_keys(path)
    by_name: dict[str, Tenant] = {}
    for tenant in await service.list_tenants():  # oldest first: the first of a name wins
        by_name.setdefault(tenant.name, tenant)
    out: list[DemoTenant] = []
    changed = False
    for name, tier in DEMO_TENANTS:
        found = by_name.get(name)
        tenant = found or await service.create_tenant(name, tier, DEMO_REGION)
        demo = stored.get(name)
        if demo is None or not await _still_works(service, demo, tenant.id):
            new = await service.create_key(tenant.id)
            demo = DemoTenant(
                name=name,
                tier=tenant.tier.value,
                tenant_id=tenant.id,
                key_id=new.key.id,
                api_key=new.plaintext,
            )
            changed = True
        elif demo.tier != tenant.tier.value:
            demo = DemoTenant(**{**asdict(demo), "tier": tenant.tier.value})
            changed = True
        out.append(demo)
    if changed:
        _write_keys(path, out)
    return out


async def _still_works(service: TenancyService, demo: DemoTenant, tenant_id: str) -> bool:
    if demo.tenant_id != tenant_id:
        return False
    try:
        context = await service.authenticate(demo.api_key)
    except TenantSuspendedError:
        return True  # the key is fine; the operator suspended the tenant on purpose
    except AuthenticationError:
        return False
    return context.tenant_id == tenant_id


def _read_keys(path: Path) -> dict[str, DemoTenant]:
    """The stored demo keys by tenant name; an unreadable file counts as none."""
    try:
        data: Any = json.loads(path.read_text())
        return {d["name"]: DemoTenant(**d) for d in data["tenants"]}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _write_keys(path: Path, demos: list[DemoTenant]) -> None:
    """Replace the keys file atomically; it holds secrets, so only the owner may read it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"tenants": [asdict(d) for d in demos]}, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
