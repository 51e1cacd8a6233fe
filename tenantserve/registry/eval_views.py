"""Eval sets, results and runs as JSON (the admin API, the adapter API and the CLI)."""

from __future__ import annotations

from typing import Any

from tenantserve.registry.eval_service import EvalRun
from tenantserve.registry.evals import EvalResult, StoredEvalSet


def eval_set_json(stored: StoredEvalSet, items: bool = False) -> dict[str, Any]:
    """The set's identity and size (and its items when asked)."""
    s = stored.eval_set
    out: dict[str, Any] = {
        "id": stored.id,
        "object": "eval_set",
        "target": stored.target,
        "name": s.name,
        "description": s.description,
        "digest": stored.digest,
        "min_score": s.min_score,
        "num_items": len(s.items),
        "created_at": int(stored.created_at.timestamp()),
    }
    if items:
        out["items"] = [it.to_json() for it in s.items]
    return out


def eval_result_json(r: EvalResult, outcomes: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": r.id,
        "object": "eval_result",
        "ref": r.ref,
        "set": r.set_name,
        "set_digest": r.set_digest,
        "passed": r.passed,
        "total": r.total,
        "score": round(r.score, 4),
        "created_at": int(r.at.timestamp()),
    }
    if outcomes:
        out["outcomes"] = [o.to_json() for o in r.outcomes]
    return out


def eval_run_json(run: EvalRun) -> dict[str, Any]:
    return {
        "object": "eval_run",
        "ref": run.ref,
        "passed": run.verdict.passed,
        "verdict": run.verdict.detail,
        "results": [eval_result_json(r) for r in run.results],
    }
