"""Which adapter slot each token of a step uses, arranged for the LoRA kernels (lora.py).

The runner orders a step's tokens so that equal slots form contiguous runs. Long runs
(prefill chunks) become segments, computed on their exact rows; the short ones (decode
tokens) are grouped by slot and padded to equal length, so that all adapters of the step
are applied by one batched matmul. Pure host-side planning, once per step.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch


class LoraSegment(NamedTuple):
    """Tokens [start, end) of the step, all using `slot`."""

    start: int
    end: int
    slot: int


@dataclass(frozen=True)
class PaddedRows:
    """Short runs grouped by slot: the tokens of slot `first_slot + i` fill padded rows
    [i * rows_per_slot, i * rows_per_slot + count); the remaining rows are padding."""

    first_slot: int
    num_slots: int  # a contiguous slot range; slots in it without tokens are padding
    rows_per_slot: int
    slots: frozenset[int]
    gather_idx: torch.Tensor  # [num_slots * rows_per_slot] long: token of each padded row
    token_idx: torch.Tensor  # [N] long: the group's tokens
    padded_idx: torch.Tensor  # [N] long: the padded row of each of those tokens
    # Set when the padded rows are exactly tokens [start, end) in order (no padding, slots
    # sorted, equal counts): then no gather or scatter is needed.
    token_range: tuple[int, int] | None

    def to(self, device: torch.device) -> PaddedRows:
        """The same rows with index tensors on `device`."""
        return PaddedRows(
            first_slot=self.first_slot,
            num_slots=self.num_slots,
            rows_per_slot=self.rows_per_slot,
            slots=self.slots,
            gather_idx=self.gather_idx.to(device, non_blocking=True),
            token_idx=self.token_idx.to(device, non_blocking=True),
            padded_idx=self.padded_idx.to(device, non_blocking=True),
            token_range=self.token_range,
        )


@dataclass(frozen=True)
class LoraBatch:
    """Which adapter slot each token of one step uses, arranged for the LoRA kernels."""

    # A run at least this long is a segment of its own (mm + addmm_ on exact rows).
    MIN_SEGMENT_TOKENS: ClassVar[int] = 16

    num_tokens: int
    slots: frozenset[int]  # adapter slots used by the step (never 0)
    segments: tuple[LoraSegment, ...]
    padded: PaddedRows | None

    @classmethod
    def from_token_slots(cls, token_slots: Sequence[int]) -> LoraBatch:
        """Plan a step from the slot of each token, in step order (0: base model)."""
        if not any(token_slots):
            return cls(num_tokens=len(token_slots), slots=frozenset(), segments=(), padded=None)
        runs: list[LoraSegment] = []
        start = 0
        for slot, group in itertools.groupby(token_slots):
            end = start + sum(1 for _ in group)
            if slot != 0:
                runs.append(LoraSegment(start, end, slot))
            start = end
        short = [r for r in runs if r.end - r.start < cls.MIN_SEGMENT_TOKENS]
        segments = [r for r in runs if r.end - r.start >= cls.MIN_SEGMENT_TOKENS]
        # Drop the busiest slot from the padded group while padding would cost more than
        # the rows themselves (a slot range with holes, or one slot with many tokens).
        while short:
            counts: dict[int, int] = {}
            for r in short:
                counts[r.slot] = counts.get(r.slot, 0) + r.end - r.start
            num_rows = sum(counts.values())
            span = max(counts) - min(counts) + 1
            if span * max(counts.values()) <= 2 * num_rows + cls.MIN_SEGMENT_TOKENS:
                break
            busiest = max(counts, key=lambda s: counts[s])
            segments += [r for r in short if r.slot == busiest]
            short = [r for r in short if r.slot != busiest]
        # Two runs cost less as segments than one gather/bmm/bmm/scatter.
        if len(short) <= 2:
            segments += short
            short = []
        return cls(
            num_tokens=len(token_slots),
            slots=frozenset(r.slot for r in runs),
            segments=tuple(sorted(segments)),
            padded=_padded_rows(short) if short else None,
        )

    def to(self, device: torch.device) -> LoraBatch:
        """The same batch with its index tensors on `device`."""
        if self.padded is None or self.padded.gather_idx.device == device:
            return self
        return LoraBatch(self.num_tokens, self.slots, self.segments, self.padded.to(device))


def _padded_rows(runs: Sequence[LoraSegment]) -> PaddedRows:
    slots = sorted({r.slot for r in runs})
    first_slot = slots[0]
    tokens: dict[int, list[int]] = {s: [] for s in slots}
    for r in runs:
        tokens[r.slot].extend(range(r.start, r.end))
    rows_per_slot = max(len(t) for t in tokens.values())
    num_slots = slots[-1] - first_slot + 1
    pad_token = runs[0].start
    gather = [pad_token] * (num_slots * rows_per_slot)
    token_idx: list[int] = []
    padded_idx: list[int] = []
    for slot, toks in tokens.items():
        base = (slot - first_slot) * rows_per_slot
        for i, tok in enumerate(toks):
            gather[base + i] = tok
            token_idx.append(tok)
            padded_idx.append(base + i)
    in_order = len(token_idx) == len(gather) and gather == list(
        range(gather[0], gather[0] + len(gather))
    )
    return PaddedRows(
        first_slot=first_slot,
        num_slots=num_slots,
        rows_per_slot=rows_per_slot,
        slots=frozenset(slots),
        gather_idx=torch.tensor(gather, dtype=torch.long),
        token_idx=torch.tensor(token_idx, dtype=torch.long),
        padded_idx=torch.tensor(padded_idx, dtype=torch.long),
        token_range=(gather[0], gather[0] + len(gather)) if in_order else None,
    )
