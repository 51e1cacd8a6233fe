"""The hash chain on in-memory entries: a clean chain verifies; an edited, removed,
reordered or inserted entry, and a cut tail (given the kept head), are each named."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest

from tenantserve.audit.chain import ProblemKind, verify_chain
from tenantserve.audit.entry import GENESIS_HASH, AuditEntry, ChainHead

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _chain(n: int) -> list[AuditEntry]:
    entries: list[AuditEntry] = []
    for i in range(n):
        prev = entries[-1].head if entries else None
        at = T0 + timedelta(seconds=i)
        details = {"tier": {"from": "free", "to": "premium"}, "i": i}
        entries.append(AuditEntry.create(prev, at, "admin", "tenant.update", f"ten_{i}", details))
    return entries


def _renumbered(entries: list[AuditEntry]) -> list[AuditEntry]:
    """The entries in this order with seq 1, 2, ... as a database would number its rows."""
    return [replace(e, seq=i + 1) for i, e in enumerate(entries)]


def test_a_chain_of_appended_entries_verifies_with_its_head() -> None:
    entries = _chain(6)
    assert entries[0].prev_hash == GENESIS_HASH
    assert all(b.prev_hash == a.hash for a, b in pairwise(entries))
    report = verify_chain(entries, anchor=entries[-1].head)
    assert report.ok and report.checked == 6 and report.head == entries[-1].head


def test_the_hash_covers_every_field() -> None:
    e = _chain(1)[0]
    for changed in (
        replace(e, seq=2),
        replace(e, id="aud_other"),
        replace(e, at=e.at + timedelta(microseconds=1)),
        replace(e, actor="cli:root"),
        replace(e, action="tenant.create"),
        replace(e, target="ten_x"),
        replace(e, details={"i": 1}),
        replace(e, prev_hash="1" * 64),
    ):
        assert changed.computed_hash() != e.hash


def test_an_edited_entry_is_named() -> None:
    entries = _chain(5)
    entries[2] = replace(entries[2], details={"tier": {"from": "free", "to": "free"}})
    report = verify_chain(entries)
    assert report.problem is not None
    assert (report.problem.kind, report.problem.seq) == (ProblemKind.EDITED, 3)
    assert report.problem.entry_id == entries[2].id
    assert report.checked == 3 and report.head == entries[1].head


def test_an_entry_edited_and_re_hashed_is_named_by_its_successors_link() -> None:
    entries = _chain(5)
    forged = replace(entries[1], actor="someone-else")
    entries[1] = replace(forged, hash=forged.computed_hash())
    report = verify_chain(entries)
    assert report.problem is not None
    assert (report.problem.kind, report.problem.seq) == (ProblemKind.EDITED, 2)


@pytest.mark.parametrize("index", [0, 2])
def test_a_removed_entry_is_named_by_its_seq(index: int) -> None:
    entries = _chain(5)
    del entries[index]
    report = verify_chain(entries)
    assert report.problem is not None
    assert (report.problem.kind, report.problem.seq) == (ProblemKind.REMOVED, index + 1)
    assert report.problem.entry_id is None


def test_swapped_entries_are_reported_as_reordered() -> None:
    entries = _chain(5)
    swapped = _renumbered([entries[0], entries[2], entries[1], entries[3], entries[4]])
    report = verify_chain(swapped)
    assert report.problem is not None
    assert report.problem.kind is ProblemKind.REORDERED
    assert (report.problem.seq, report.problem.entry_id) == (2, entries[2].id)
    assert "recorded at seq 3" in report.problem.message


def test_an_inserted_entry_is_named() -> None:
    entries = _chain(5)
    forged = AuditEntry.create(entries[1].head, T0, "admin", "key.create", "key_x", {})
    tampered = _renumbered([*entries[:2], forged, *entries[2:]])
    report = verify_chain(tampered)
    assert report.problem is not None
    assert report.problem.kind is ProblemKind.INSERTED
    assert (report.problem.seq, report.problem.entry_id) == (3, forged.id)


def test_a_cut_tail_is_only_detected_against_the_kept_head() -> None:
    entries = _chain(6)
    kept = entries[-1].head
    cut = entries[:4]
    assert verify_chain(cut).ok  # alone, a shorter log looks like a complete one
    report = verify_chain(cut, anchor=kept)
    assert report.problem is not None
    assert (report.problem.kind, report.problem.seq) == (ProblemKind.TRUNCATED, 5)
    assert verify_chain([], anchor=kept).problem is not None


def test_a_chain_rewritten_up_to_the_kept_head_is_detected() -> None:
    entries = _chain(3)
    kept = entries[-1].head
    rewritten: list[AuditEntry] = []
    for e in entries:
        prev = rewritten[-1].head if rewritten else None
        rewritten.append(AuditEntry.create(prev, e.at, "admin", e.action, "ten_forged", {}, e.id))
    assert verify_chain(rewritten).ok
    report = verify_chain(rewritten, anchor=kept)
    assert report.problem is not None
    assert (report.problem.kind, report.problem.seq) == (ProblemKind.EDITED, 3)


def test_a_chain_head_round_trips_as_text() -> None:
    head = _chain(2)[-1].head
    assert ChainHead.parse(str(head)) == head
    for bad in ("", "3", "x:" + "0" * 64, "3:abc"):
        with pytest.raises(ValueError):
            ChainHead.parse(bad)
