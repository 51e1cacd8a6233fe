"""Verifying a hash chain of `AuditEntry`s (pure; no framework).

    verifier = ChainVerifier(anchor=None, last_seq=None)
    for entry in entries_in_seq_order:
        if verifier.feed(entry) is not None:
            break
    report = verifier.finish()

The first problem found is named, with its kind:

- `edited`: an entry's fields no longer match its hash, or an entry was re-hashed after an
  edit (its successor still chains to the old hash);
- `removed`: a seq is missing (the first missing one is named);
- `reordered`: an entry sits at a seq other than the one it was hashed at;
- `inserted`: a forged entry took the seq of a real one, which was renumbered after it;
- `truncated`: the chain ends before the `anchor` (a head kept outside the database) —
  a cut tail is otherwise indistinguishable from a shorter log.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from tenantserve.audit.entry import FIRST_SEQ, GENESIS_HASH, AuditEntry, ChainHead


class ProblemKind(StrEnum):
    EDITED = "edited"
    REMOVED = "removed"
    REORDERED = "reordered"
    INSERTED = "inserted"
    TRUNCATED = "truncated"


@dataclass(frozen=True)
class ChainProblem:
    """The first bad place in the chain: its kind, the seq named and that entry's id (None
    where the entry is gone)."""

    kind: ProblemKind
    seq: int
    entry_id: str | None
    message: str


@dataclass(frozen=True)
class VerifyReport:
    """What `verify` found: entries checked, the newest good head, the first problem."""

    checked: int
    head: ChainHead | None
    problem: ChainProblem | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


class ChainVerifier:
    """Checks entries fed in ascending seq order (as stored); stops at the first problem.
    `last_seq` (the highest seq stored) bounds the search for a moved entry's true seq."""

    def __init__(self, anchor: ChainHead | None = None, last_seq: int | None = None) -> None:
        self.anchor = anchor
        self.last_seq = last_seq
        self.checked = 0
        self.problem: ChainProblem | None = None
        self._prev: AuditEntry | None = None
        self._hash_at_anchor: str | None = None

    def feed(self, entry: AuditEntry) -> ChainProblem | None:
        """Check the next entry; the problem found (then and for good), else None."""
        if self.problem is not None:
            return self.problem
        self.checked += 1
        self.problem = self._check(entry)
        if self.problem is None:
            self._prev = entry
            if self.anchor is not None and entry.seq == self.anchor.seq:
                self._hash_at_anchor = entry.hash
        return self.problem

    def finish(self) -> VerifyReport:
        """The report; with an anchor, a chain ending before it (or disagreeing with it)
        is a problem too."""
        head = self._prev.head if self._prev is not None else None
        if self.problem is None and self.anchor is not None:
            self.problem = self._check_anchor(self.anchor, head)
        return VerifyReport(checked=self.checked, head=head, problem=self.problem)

    def _check(self, e: AuditEntry) -> ChainProblem | None:
        prev = self._prev
        expected_seq = prev.seq + 1 if prev else FIRST_SEQ
        expected_prev_hash = prev.hash if prev else GENESIS_HASH
        if e.computed_hash() != e.hash:
            return self._misplaced_or_edited(e, prev, expected_seq)
        if e.seq > expected_seq:
            missing = (
                f"seq {expected_seq}"
                if e.seq == expected_seq + 1
                else f"seqs {expected_seq}-{e.seq - 1}"
            )
            return ChainProblem(
                ProblemKind.REMOVED,
                expected_seq,
                None,
                f"entry {expected_seq} was removed: {missing} missing before entry {e.seq} "
                f"({e.id})",
            )
        if e.seq < expected_seq:
            return ChainProblem(
                ProblemKind.REORDERED,
                e.seq,
                e.id,
                f"entry {e.seq} ({e.id}) comes after entry {expected_seq - 1}",
            )
        if e.prev_hash != expected_prev_hash:
            if prev is None:
                return ChainProblem(
                    ProblemKind.EDITED,
                    e.seq,
                    e.id,
                    f"entry {e.seq} ({e.id}) does not start from the genesis hash",
                )
            return ChainProblem(
                ProblemKind.EDITED,
                prev.seq,
                prev.id,
                f"entry {prev.seq} ({prev.id}) was edited and re-hashed: entry {e.seq} "
                "chains to a different hash",
            )
        return None

    def _misplaced_or_edited(
        self, e: AuditEntry, prev: AuditEntry | None, expected_seq: int
    ) -> ChainProblem:
        true_seq = self._hashed_at(e)
        if true_seq is None:
            return ChainProblem(
                ProblemKind.EDITED,
                e.seq,
                e.id,
                f"entry {e.seq} ({e.id}) was edited: its fields do not match its hash",
            )
        if prev is not None and true_seq == prev.seq and prev.prev_hash == e.prev_hash:
            return ChainProblem(
                ProblemKind.INSERTED,
                prev.seq,
                prev.id,
                f"entry {prev.seq} ({prev.id}) was inserted: the real entry {prev.seq} "
                f"({e.id}) was renumbered to {e.seq} after it",
            )
        return ChainProblem(
            ProblemKind.REORDERED,
            e.seq,
            e.id,
            f"entry {e.id} was moved: it is at seq {e.seq} but was recorded at seq {true_seq}",
        )

    def _hashed_at(self, e: AuditEntry) -> int | None:
        """The seq `e`'s hash was computed at, if another than its own (one pass over the
        possible seqs; only run for an entry that already failed)."""
        highest = max(e.seq, self.last_seq or 0) + 1
        for seq in range(FIRST_SEQ, highest + 1):
            if seq != e.seq and e.computed_hash(seq) == e.hash:
                return seq
        return None

    def _check_anchor(self, anchor: ChainHead, head: ChainHead | None) -> ChainProblem | None:
        last = head.seq if head else 0
        if anchor.seq > last:
            return ChainProblem(
                ProblemKind.TRUNCATED,
                last + 1,
                None,
                f"the chain ends at entry {last}, but it had reached entry {anchor.seq}: "
                f"entries {last + 1}-{anchor.seq} were removed",
            )
        if self._hash_at_anchor != anchor.hash:
            return ChainProblem(
                ProblemKind.EDITED,
                anchor.seq,
                None,
                f"entry {anchor.seq}'s hash differs from the kept head: the chain up to it "
                "was rewritten",
            )
        return None


def verify_chain(entries: Iterable[AuditEntry], anchor: ChainHead | None = None) -> VerifyReport:
    """Check entries given in ascending seq order (as stored)."""
    listed = list(entries)
    verifier = ChainVerifier(anchor, last_seq=max((e.seq for e in listed), default=0))
    for entry in listed:
        if verifier.feed(entry) is not None:
            break
    return verifier.finish()
