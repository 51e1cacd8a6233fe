"""`AuditEntry`: one link of the hash chain, and how its hash is computed (no framework).

An entry's `hash` is sha256 over the canonical JSON (sorted keys, no spaces, ASCII) of
`[seq, id, at, actor, action, target, details, prev_hash]`, `at` in UTC ISO 8601 with
microseconds; `prev_hash` is the previous entry's `hash` (`GENESIS_HASH` for seq 1). An
edit of any field, a removed entry or a moved one breaks the chain (`chain.py` says where).
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, NamedTuple

GENESIS_HASH = "0" * 64
FIRST_SEQ = 1


def new_entry_id() -> str:
    """`aud_<24 hex>`."""
    return "aud_" + secrets.token_hex(12)


def json_ready(details: Mapping[str, Any] | None) -> dict[str, Any]:
    """`details` as it reads back from JSON (tuples → lists, Decimals and dates → strings),
    so the stored value and the hashed value are the same."""
    return dict(json.loads(json.dumps(dict(details or {}), default=str)))


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def utc_iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="microseconds")


class ChainHead(NamedTuple):
    """The newest entry's seq and hash: what to keep outside the database to detect a cut
    tail later (`verify(anchor=...)`)."""

    seq: int
    hash: str

    def __str__(self) -> str:
        return f"{self.seq}:{self.hash}"

    @classmethod
    def parse(cls, text: str) -> ChainHead:
        """`SEQ:HASH`; ValueError otherwise."""
        seq, sep, digest = text.strip().partition(":")
        if not sep or not seq.isdigit() or len(digest) != 64:
            raise ValueError(f"a chain head is SEQ:HASH (64 hex digits), not {text!r}")
        return cls(int(seq), digest.lower())


@dataclass(frozen=True)
class AuditEntry:
    """One recorded admin action: who did what to which target, when, with which facts."""

    seq: int
    id: str
    at: datetime
    actor: str
    action: str
    target: str
    details: dict[str, Any] = field(default_factory=dict)
    prev_hash: str = GENESIS_HASH
    hash: str = ""

    @classmethod
    def create(
        cls,
        prev: ChainHead | None,
        at: datetime,
        actor: str,
        action: str,
        target: str,
        details: Mapping[str, Any] | None = None,
        entry_id: str | None = None,
    ) -> AuditEntry:
        """The entry after `prev` (None: the first), hashed."""
        unhashed = cls(
            seq=prev.seq + 1 if prev else FIRST_SEQ,
            id=entry_id or new_entry_id(),
            at=at.astimezone(UTC),
            actor=actor,
            action=action,
            target=target,
            details=json_ready(details),
            prev_hash=prev.hash if prev else GENESIS_HASH,
        )
        return replace(unhashed, hash=unhashed.computed_hash())

    def computed_hash(self, seq: int | None = None) -> str:
        """sha256 of the canonical fields (as if at `seq`, when given)."""
        fields = [
            self.seq if seq is None else seq,
            self.id,
            utc_iso(self.at),
            self.actor,
            self.action,
            self.target,
            self.details,
            self.prev_hash,
        ]
        return hashlib.sha256(canonical_json(fields).encode()).hexdigest()

    @property
    def head(self) -> ChainHead:
        return ChainHead(self.seq, self.hash)
