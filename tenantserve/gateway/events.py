"""EventLog: the operator-visible record of what the platform did on its own (a noisy
neighbour demoted, ...), bounded and in memory; `GET /admin/events` shows it."""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tenantserve.errors import ConfigError

DEFAULT_MAX_EVENTS = 1000


@dataclass(frozen=True)
class OperatorEvent:
    """One thing operators should know about; `created_at_s` is Unix time."""

    id: str
    created_at_s: float
    kind: str
    tenant_id: str | None
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "object": "event",
            "id": self.id,
            "created_at": self.created_at_s,
            "kind": self.kind,
            "tenant_id": self.tenant_id,
            "details": dict(self.details),
        }


class EventLog:
    """The newest `max_events` events, oldest first; older ones are dropped. Single event
    loop, no locks."""

    def __init__(
        self, max_events: int = DEFAULT_MAX_EVENTS, *, clock: Callable[[], float] = time.time
    ) -> None:
        if max_events < 1:
            raise ConfigError(f"max_events must be at least 1, got {max_events}")
        self.clock = clock
        self._events: deque[OperatorEvent] = deque(maxlen=max_events)
        self._ids = itertools.count(1)

    def append(
        self, kind: str, tenant_id: str | None, details: Mapping[str, Any] | None = None
    ) -> OperatorEvent:
        """Record an event stamped now; drops the oldest when full."""
        event = OperatorEvent(
            id=f"evt_{next(self._ids)}",
            created_at_s=self.clock(),
            kind=kind,
            tenant_id=tenant_id,
            details=dict(details or {}),
        )
        self._events.append(event)
        return event

    def events(self) -> list[OperatorEvent]:
        """The kept events, oldest first; does not change the log."""
        return list(self._events)

    def __len__(self) -> int:
        return len(self._events)
