"""The JSON shape of a rollout, shared by the admin API and the CLI (same JSON)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tenantserve.registry.rollout import Rollout
from tenantserve.registry.rollout_live import StepStats
from tenantserve.registry.rollout_policy import VersionStats


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def stats_json(stats: VersionStats) -> dict[str, Any]:
    """`{"requests", "errors", "error_rate", "p95_latency_s", "divergences"}`."""
    return {
        "requests": stats.requests,
        "errors": stats.errors,
        "error_rate": stats.error_rate,
        "p95_latency_s": stats.p95_latency_s,
        "divergences": stats.divergences,
    }


def rollout_json(rollout: Rollout, stats: StepStats | None = None) -> dict[str, Any]:
    """`{"id", "object": "rollout", "model", "stable", "candidate", "phase", "percent",
    "step", "step_started_at", "created_at", "finished_at", "plan": {...}, "history":
    [{"at", "phase", "percent", "reason"}], "stats": {"stable", "candidate"} | null}`;
    `stats` are this step's, as the answering process counted them."""
    plan = rollout.plan
    return {
        "id": rollout.id,
        "object": "rollout",
        "model": rollout.model,
        "stable": plan.stable_ref,
        "candidate": plan.candidate_ref,
        "phase": rollout.phase.value,
        "percent": rollout.percent,
        "step": rollout.step_label,
        "step_started_at": _iso(rollout.step_started_at),
        "created_at": _iso(rollout.created_at),
        "finished_at": _iso(rollout.finished_at),
        "plan": {
            "shadow_percent": plan.shadow_percent,
            "canary_steps": list(plan.canary_steps),
            "step_seconds": plan.step_seconds,
            "min_requests": plan.min_requests,
            "error_rate_margin": plan.error_rate_margin,
            "p95_latency_margin": plan.p95_latency_margin,
            "max_divergence_rate": plan.max_divergence_rate,
            "require_golden_set": plan.require_golden_set,
        },
        "history": [
            {"at": _iso(e.at), "phase": e.phase.value, "percent": e.percent, "reason": e.reason}
            for e in rollout.history
        ],
        "stats": (
            None
            if stats is None
            else {"stable": stats_json(stats.stable), "candidate": stats_json(stats.candidate)}
        ),
    }
