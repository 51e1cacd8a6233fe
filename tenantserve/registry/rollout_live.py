"""`LiveRollouts`: the running rollouts as this process serves them, from memory, each
with its step's per-version stats (`StepStats`).

The gateway's questions (`route`, `shadow_target`) are answered without a database read,
and `observe` counts a served request without I/O; it may be called from other threads
than the event loop's. A rollout's new step starts with empty stats; the stable version's
stats over the whole rollout stay as the baseline for a step with too few stable requests.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from tenantserve.registry.rollout import (
    Rollout,
    RolloutPhase,
    route,
    shadow,
)
from tenantserve.registry.rollout_policy import VersionStats


class StepStats(NamedTuple):
    """This step's counts for the stable version and the candidate."""

    stable: VersionStats
    candidate: VersionStats


@dataclass
class _Live:
    """A running rollout as this process serves it, with its stats."""

    rollout: Rollout
    stable: VersionStats = field(default_factory=VersionStats)
    candidate: VersionStats = field(default_factory=VersionStats)
    # The stable version over the whole rollout: the baseline when this step has too few
    # stable requests (at 100% it has none).
    baseline: VersionStats = field(default_factory=VersionStats)

    @property
    def step_key(self) -> tuple[str, RolloutPhase, int | None]:
        return (self.rollout.id, self.rollout.phase, self.rollout.step_index)


class LiveRollouts:
    """The running rollouts served from this process's memory, by model, with their stats."""

    def __init__(self) -> None:
        self._live: dict[str, _Live] = {}
        # observe() may be called from other threads than the event loop's.
        self._lock = threading.Lock()

    def install(self, rollout: Rollout) -> None:
        """Serve `rollout` from memory; a new step starts with empty stats."""
        with self._lock:
            live = self._live.get(rollout.model)
            if not rollout.is_active:
                if live is not None and live.rollout.id == rollout.id:
                    del self._live[rollout.model]
                return
            if live is None or live.rollout.id != rollout.id:
                self._live[rollout.model] = _Live(rollout)
                return
            if (rollout.phase, rollout.step_index) != (
                live.rollout.phase,
                live.rollout.step_index,
            ):
                live.stable, live.candidate = VersionStats(), VersionStats()
            live.rollout = rollout

    def sync(self, running: Sequence[Rollout]) -> None:
        """Serve exactly the `running` rollouts (re-read from the database): the others are
        dropped, each of these installed."""
        with self._lock:
            for name in set(self._live) - {r.model for r in running}:
                del self._live[name]
        for rollout in running:
            self.install(rollout)

    def stats(self, name: str) -> StepStats | None:
        """Copies of this step's stats of the model's running rollout in this process."""
        with self._lock:
            live = self._live.get(name)
            if live is None:
                return None
            return StepStats(copy.deepcopy(live.stable), copy.deepcopy(live.candidate))

    def judged(self) -> Iterator[tuple[Rollout, StepStats]]:
        """Each running rollout (a copy) with the stats its step is judged by (the stable
        version's whole-rollout baseline when this step has too few stable requests); one
        at a time, each copied when it is reached."""
        for live in list(self._live.values()):
            with self._lock:
                judged = (copy.deepcopy(live.rollout), _judged_stats(live))
            yield judged

    def observe(self, ref: str, latency_s: float, error: bool, diverged: bool = False) -> None:
        """Count one request served (or, in shadow, mirrored) by version `ref`; versions
        without a running rollout are ignored. Never blocks on I/O."""
        name = ref.partition("@")[0]
        with self._lock:
            live = self._live.get(name)
            if live is None:
                return
            plan = live.rollout.plan
            if ref == plan.stable_ref:
                live.stable.record(latency_s, error)
                live.baseline.record(latency_s, error)
            elif ref == plan.candidate_ref:
                live.candidate.record(latency_s, error, diverged)

    def route(self, name: str, request_id: str) -> str | None:
        """The `name@version` serving `request_id` for a plain `name` request while a
        rollout of `name` runs (sticky per request id); None when none runs."""
        live = self._live.get(name)
        return None if live is None else route(live.rollout, request_id)

    def shadow_target(self, name: str, request_id: str) -> str | None:
        """The candidate to mirror `request_id` to (its answer discarded), or None."""
        live = self._live.get(name)
        if live is None or not shadow(live.rollout, request_id):
            return None
        return live.rollout.plan.candidate_ref


def _judged_stats(live: _Live) -> StepStats:
    enough = live.stable.requests >= live.rollout.plan.min_requests
    stable = live.stable if enough else live.baseline
    return StepStats(copy.deepcopy(stable), copy.deepcopy(live.candidate))
