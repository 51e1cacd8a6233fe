"""The JSON shapes of audit entries, pages and verify reports, shared by the admin API and
the CLI (same JSON)."""

from __future__ import annotations

from typing import Any

from tenantserve.audit.chain import VerifyReport
from tenantserve.audit.entry import AuditEntry, utc_iso
from tenantserve.audit.log import AuditPage


def entry_json(e: AuditEntry) -> dict[str, Any]:
    """`{"seq", "id", "at", "actor", "action", "target", "details", "prev_hash", "hash"}`."""
    return {
        "seq": e.seq,
        "id": e.id,
        "at": utc_iso(e.at),
        "actor": e.actor,
        "action": e.action,
        "target": e.target,
        "details": e.details,
        "prev_hash": e.prev_hash,
        "hash": e.hash,
    }


def page_json(page: AuditPage) -> dict[str, Any]:
    """`{"object": "list", "data": [entry], "next": seq | null}` (`next`: pass as `after`,
    or as `before` when the page is newest first)."""
    return {
        "object": "list",
        "data": [entry_json(e) for e in page.entries],
        "next": page.next_cursor,
    }


def report_json(report: VerifyReport) -> dict[str, Any]:
    """`{"ok", "checked", "head": "SEQ:HASH" | null, "problem": {"kind", "seq", "entry_id",
    "message"} | null}`."""
    problem = report.problem
    return {
        "object": "audit_verification",
        "ok": report.ok,
        "checked": report.checked,
        "head": str(report.head) if report.head else None,
        "problem": (
            None
            if problem is None
            else {
                "kind": problem.kind.value,
                "seq": problem.seq,
                "entry_id": problem.entry_id,
                "message": problem.message,
            }
        ),
    }
