"""Rollout of a new model version: shadow → canary steps → done, or rolled back.

Plain dataclasses and pure functions; no SQLAlchemy, no web framework. What a step's stats
decide lives in `rollout_policy.py`, persistence in `tables.py` / `rollout_repository.py`,
the per-step stats in `rollout_live.py`, the use cases (the clock, the database) in
`rollout_service.py`.

    shadow (mirror shadow_percent of live traffic; the candidate's answers are discarded)
      └─► canary 1% ─► 10% ─► 100% ─► done (the old stable version is deprecated)
    any active phase ──► rolled_back (automatic on a regression, or by hand)

Routing is sticky: a request id always lands in the same bucket (0..9999), and a bucket
below `percent × 100` goes to the candidate, so a request on the canary at 1% stays on it
at 10%. The tenant is never an input: the candidate is another version of the same public
model, not anyone's data.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import NamedTuple

from tenantserve.errors import InvalidRequestError
from tenantserve.tenancy.model import random_id_part

ROLLOUT_ID_PREFIX = "rol_"
NUM_BUCKETS = 10_000
DEFAULT_CANARY_STEPS: tuple[float, ...] = (1.0, 10.0, 100.0)
DEFAULT_SHADOW_PERCENT = 10.0
DEFAULT_STEP_SECONDS = 600.0
DEFAULT_MIN_REQUESTS = 100
DEFAULT_ERROR_RATE_MARGIN = 0.02
DEFAULT_P95_LATENCY_MARGIN = 1.2


class RolloutPhase(StrEnum):
    SHADOW = "shadow"
    CANARY = "canary"
    DONE = "done"
    ROLLED_BACK = "rolled_back"


class Action(StrEnum):
    """What `rollout_policy.evaluate` asks for: keep the step, move on, finish, roll back,
    or run the golden-set eval first (then evaluate again with its result)."""

    HOLD = "hold"
    ADVANCE = "advance"
    FINISH = "finish"
    ROLLBACK = "rollback"
    GATE = "gate"


class Decision(NamedTuple):
    """An action and the reason recorded with it."""

    action: Action
    reason: str


class GateResult(NamedTuple):
    """The outcome of a golden-set eval of the candidate."""

    passed: bool
    detail: str


def new_rollout_id() -> str:
    """`rol_` + 16 random base32 characters."""
    return ROLLOUT_ID_PREFIX + random_id_part()


@dataclass(frozen=True)
class RolloutPlan:
    """How one candidate version replaces the stable one: shadow share, canary steps
    (percent of traffic, increasing, ending at 100), how long each step lasts at least, how
    many candidate requests a step needs before it is judged, and the regression margins."""

    model: str
    stable_ref: str
    candidate_ref: str
    # Percent of live traffic mirrored to the candidate first; 0 skips the shadow phase.
    shadow_percent: float = DEFAULT_SHADOW_PERCENT
    canary_steps: tuple[float, ...] = DEFAULT_CANARY_STEPS
    step_seconds: float = DEFAULT_STEP_SECONDS
    min_requests: int = DEFAULT_MIN_REQUESTS
    # Absolute: roll back when candidate error rate > stable error rate + this.
    error_rate_margin: float = DEFAULT_ERROR_RATE_MARGIN
    # Ratio: roll back when candidate p95 latency > stable p95 latency × this.
    p95_latency_margin: float = DEFAULT_P95_LATENCY_MARGIN
    # Shadow only: roll back when more than this share of mirrored answers diverge.
    max_divergence_rate: float | None = None
    # The golden-set eval must pass before the candidate leaves its first phase.
    require_golden_set: bool = False

    def __post_init__(self) -> None:
        if self.stable_ref == self.candidate_ref:
            raise InvalidRequestError(f"{self.candidate_ref} is already the stable version")
        if not _finite(self.shadow_percent) or not 0 <= self.shadow_percent <= 100:
            raise InvalidRequestError(
                f"shadow_percent must be between 0 and 100, not {self.shadow_percent}"
            )
        steps = tuple(self.canary_steps)
        if (
            not steps
            or any(not _finite(s) or s <= 0 or s > 100 for s in steps)
            or any(a >= b for a, b in itertools.pairwise(steps))
            or steps[-1] != 100
        ):
            raise InvalidRequestError(
                "canary steps must be increasing percents in (0, 100] ending at 100, "
                f"not {list(self.canary_steps)}"
            )
        object.__setattr__(self, "canary_steps", tuple(float(s) for s in steps))
        if not _finite(self.step_seconds) or self.step_seconds < 0:
            raise InvalidRequestError(f"step_seconds must be ≥ 0, not {self.step_seconds}")
        if isinstance(self.min_requests, bool) or self.min_requests < 1:
            raise InvalidRequestError(f"min_requests must be ≥ 1, not {self.min_requests}")
        if not _finite(self.error_rate_margin) or not 0 <= self.error_rate_margin <= 1:
            raise InvalidRequestError(
                f"error_rate_margin must be between 0 and 1, not {self.error_rate_margin}"
            )
        if not _finite(self.p95_latency_margin) or self.p95_latency_margin < 1:
            raise InvalidRequestError(
                f"p95_latency_margin is a ratio ≥ 1, not {self.p95_latency_margin}"
            )
        d = self.max_divergence_rate
        if d is not None and (not _finite(d) or not 0 <= d <= 1):
            raise InvalidRequestError(f"max_divergence_rate must be between 0 and 1, not {d}")


@dataclass(frozen=True)
class RolloutEvent:
    """One recorded step: when, the phase and percent it led to, and why."""

    at: datetime
    phase: RolloutPhase
    percent: float
    reason: str


@dataclass
class Rollout:
    """One rollout of `plan.candidate_ref` over `plan.stable_ref`, and its history."""

    id: str
    plan: RolloutPlan
    phase: RolloutPhase
    # The index into `plan.canary_steps` while in canary; None in every other phase.
    step_index: int | None
    step_started_at: datetime
    created_at: datetime
    history: list[RolloutEvent] = field(default_factory=list)
    finished_at: datetime | None = None
    # Bumped on every write; a write from a stale copy is refused (see the repository).
    revision: int = field(default=0, compare=False)

    @classmethod
    def start(cls, plan: RolloutPlan, now: datetime, reason: str = "started") -> Rollout:
        """A new rollout in shadow (or at the first canary step when shadow_percent is 0)."""
        shadow = plan.shadow_percent > 0
        rollout = cls(
            id=new_rollout_id(),
            plan=plan,
            phase=RolloutPhase.SHADOW if shadow else RolloutPhase.CANARY,
            step_index=None if shadow else 0,
            step_started_at=now,
            created_at=now,
        )
        rollout._record(now, reason)
        return rollout

    @property
    def model(self) -> str:
        return self.plan.model

    @property
    def is_active(self) -> bool:
        return self.phase in (RolloutPhase.SHADOW, RolloutPhase.CANARY)

    @property
    def percent(self) -> float:
        """The candidate's share of live traffic, in percent (shadow traffic is not live)."""
        if self.phase is RolloutPhase.CANARY:
            assert self.step_index is not None
            return self.plan.canary_steps[self.step_index]
        return 100.0 if self.phase is RolloutPhase.DONE else 0.0

    @property
    def step_label(self) -> str:
        """`shadow 10%`, `canary 1%`, `done`, `rolled_back`."""
        if self.phase is RolloutPhase.SHADOW:
            return f"shadow {_pct(self.plan.shadow_percent)}"
        if self.phase is RolloutPhase.CANARY:
            return f"canary {_pct(self.percent)}"
        return self.phase.value

    @property
    def at_first_stage(self) -> bool:
        """In the phase the candidate starts in (where the golden-set gate applies)."""
        if self.phase is RolloutPhase.SHADOW:
            return True
        return self.phase is RolloutPhase.CANARY and self.step_index == 0 and not self._shadowed

    @property
    def at_last_step(self) -> bool:
        return (
            self.phase is RolloutPhase.CANARY and self.step_index == len(self.plan.canary_steps) - 1
        )

    @property
    def next_takes_all(self) -> bool:
        """Whether the next advance gives the candidate all traffic (to 100%, or done)."""
        if not self.is_active:
            return False
        if self.at_last_step:
            return True
        following = 0 if self.phase is RolloutPhase.SHADOW else (self.step_index or 0) + 1
        return self.plan.canary_steps[following] >= 100

    @property
    def _shadowed(self) -> bool:
        return self.plan.shadow_percent > 0

    def advance(self, now: datetime, reason: str) -> None:
        """Shadow → the first canary step, a canary step → the next; from the last step
        (100%) it finishes. InvalidRequestError when the rollout is over."""
        self._require_active()
        if self.at_last_step:
            self.finish(now, reason)
            return
        self.step_index = 0 if self.phase is RolloutPhase.SHADOW else (self.step_index or 0) + 1
        self.phase = RolloutPhase.CANARY
        self.step_started_at = now
        self._record(now, reason)

    def finish(self, now: datetime, reason: str) -> None:
        """The candidate takes all traffic; the rollout is over."""
        self._require_active()
        self._end(RolloutPhase.DONE, now, reason)

    def roll_back(self, now: datetime, reason: str) -> None:
        """All traffic back to the stable version; the rollout is over."""
        self._require_active()
        self._end(RolloutPhase.ROLLED_BACK, now, reason)

    def _end(self, phase: RolloutPhase, now: datetime, reason: str) -> None:
        self.phase = phase
        self.step_index = None
        self.step_started_at = now
        self.finished_at = now
        self._record(now, reason)

    def _record(self, now: datetime, reason: str) -> None:
        self.history.append(RolloutEvent(now, self.phase, self.percent, reason))

    def _require_active(self) -> None:
        if not self.is_active:
            raise InvalidRequestError(
                f"the rollout of {self.plan.candidate_ref} is over ({self.phase.value})"
            )


def bucket(salt: str, request_id: str) -> int:
    """The request's bucket in 0..9999: a stable hash of `salt` and the request id."""
    digest = hashlib.blake2b(f"{salt}\0{request_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % NUM_BUCKETS


def route(rollout: Rollout, request_id: str) -> str:
    """The version ref that serves `request_id`: the candidate for the request ids whose
    bucket is below the canary percent (and for all once done), else the stable version.
    Deterministic: the same id gets the same answer while the percent stays put."""
    plan = rollout.plan
    if rollout.phase is RolloutPhase.DONE:
        return plan.candidate_ref
    if rollout.phase is not RolloutPhase.CANARY:
        return plan.stable_ref
    if bucket(plan.model, request_id) < rollout.percent * NUM_BUCKETS / 100:
        return plan.candidate_ref
    return plan.stable_ref


def shadow(rollout: Rollout, request_id: str) -> bool:
    """Whether to mirror `request_id` to the candidate (shadow phase only; a bucket drawn
    independently of `route`'s)."""
    if rollout.phase is not RolloutPhase.SHADOW:
        return False
    threshold = rollout.plan.shadow_percent * NUM_BUCKETS / 100
    return bucket(f"shadow:{rollout.plan.model}", request_id) < threshold


def apply(rollout: Rollout, decision: Decision, now: datetime) -> bool:
    """Carry out `decision` on `rollout` (recording its reason); False for HOLD and GATE,
    which change nothing."""
    if decision.action is Action.ADVANCE:
        rollout.advance(now, decision.reason)
    elif decision.action is Action.FINISH:
        rollout.finish(now, decision.reason)
    elif decision.action is Action.ROLLBACK:
        rollout.roll_back(now, decision.reason)
    else:
        return False
    return True


def _finite(value: float) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _pct(value: float) -> str:
    return f"{value:g}%"
