"""`AuditRecorder`: what the rest of the code needs of the audit log — one call per
admin action or operator read of tenant data.

    await audit.record(actor, action, target, details)

`actor`: who ("admin" for the admin token, "cli:<user>" for direct CLI commands,
"tenant:<id>" for a tenant's own actions); `action`: a dotted verb
("tenant.update", "key.revoke", "usage.read"); `target`: what it acted on (an id);
`details`: JSON-ready facts (never secrets: no keys, no tokens).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

# The actor of every action taken with the admin token.
ADMIN_ACTOR = "admin"


def tenant_actor(tenant_id: str) -> str:
    """The actor of a tenant's own action (an adapter upload, say)."""
    return f"tenant:{tenant_id}"


class AuditRecorder(Protocol):
    async def record(
        self,
        actor: str,
        action: str,
        target: str,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        """Append one entry; raises when it could not be stored (the action should then
        not be reported as done)."""
        ...


class NullRecorder:
    """An `AuditRecorder` that keeps nothing (parts built without an audit log)."""

    async def record(
        self,
        actor: str,
        action: str,
        target: str,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        """Record nothing."""


@dataclass(frozen=True)
class AuditTrail:
    """One actor's entries in a recorder (the CLI's direct mode: `cli:<user>`):
    `await trail.record(*actions.tenant_updated(before, after))`."""

    recorder: AuditRecorder
    actor: str

    async def record(
        self, action: str, target: str, details: Mapping[str, Any] | None = None
    ) -> None:
        """Append one entry as `actor`; raises when it could not be stored."""
        await self.recorder.record(self.actor, action, target, details)
