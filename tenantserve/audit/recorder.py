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
from typing import Any, Protocol


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
