"""Continuous batching: which sequences run in the next step, and with how many tokens.

Policy only (block hashing lives in the block pool, weights in the adapter manager).
Each step:
1. running sequences, highest tier first, get their next token (decode) or next prefill
   chunk, within the per-step token budget; when blocks run out, the lowest-tier, newest
   running sequence is preempted (its blocks freed; it is recomputed later);
2. waiting sequences are admitted in priority order (tier, then arrival) while the budget,
   the sequence limit and the blocks allow; a waiting sequence may preempt running ones of
   a strictly lower tier, for blocks or for a seat when `max_num_seqs` are running. A
   sequence whose adapter is still loading is skipped; the rest keep going;
3. while a sequence of a higher tier is prefilling, sequences of lower tiers sit the step
   out (`isolate_priority_prefill`), so a premium request's time to first token does not
   carry a free-tier batch.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from tenantserve.engine.block_pool import BlockHash, BlockPool, hash_block, hash_root
from tenantserve.engine.config import SchedulerConfig
from tenantserve.engine.request import LoraRef, Sequence, SequenceStatus


class AdapterAcquirer(Protocol):
    """What the scheduler needs of the adapter manager."""

    def acquire(self, ref: LoraRef) -> tuple[int | None, str | None]: ...

    def release(self, slot: int) -> None: ...


@dataclass(frozen=True)
class ScheduledSeq:
    """`num_new_tokens` tokens of `seq`, from position `seq.num_computed_tokens`, run this step."""

    seq: Sequence
    num_new_tokens: int

    @property
    def samples(self) -> bool:
        """True when this step computes the sequence's last known token, so a new one is sampled."""
        return self.seq.num_computed_tokens + self.num_new_tokens == self.seq.num_tokens


@dataclass
class SchedulerOutput:
    """The plan of one step. `decodes` hold one token each; `prefills` hold chunks."""

    decodes: list[ScheduledSeq] = field(default_factory=list)
    prefills: list[ScheduledSeq] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)
    # Sequences that cannot run (their adapter failed to load), with the reason.
    failed: list[tuple[Sequence, str]] = field(default_factory=list)

    @property
    def scheduled(self) -> list[ScheduledSeq]:
        return self.decodes + self.prefills

    @property
    def num_batched_tokens(self) -> int:
        return len(self.decodes) + sum(s.num_new_tokens for s in self.prefills)

    @property
    def is_empty(self) -> bool:
        return not self.decodes and not self.prefills


def _priority_order(seq: Sequence) -> tuple[int, float]:
    return (-seq.tier.priority, seq.request.arrival_time)


class Scheduler:
    """Decides each step's batch; owns the waiting and running queues."""

    def __init__(
        self, cfg: SchedulerConfig, pool: BlockPool, adapters: AdapterAcquirer | None
    ) -> None:
        self.cfg = cfg
        self.pool = pool
        self.adapters = adapters
        self.waiting: list[Sequence] = []
        self.running: list[Sequence] = []
        self._block_hashes: dict[str, list[BlockHash]] = {}

    # -- queue management ---------------------------------------------------------------

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def finish(self, seq: Sequence) -> None:
        """Remove a sequence (finished, aborted or failed) and return all it holds."""
        if seq.status is SequenceStatus.RUNNING:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self._release(seq)
        seq.status = SequenceStatus.FINISHED
        self._block_hashes.pop(seq.request_id, None)

    # -- the step -----------------------------------------------------------------------

    def schedule(self) -> SchedulerOutput:
        """Plan the next step. Mutates queues, blocks and adapter slots, not token counts."""
        out = SchedulerOutput()
        budget = self.cfg.max_num_batched_tokens
        planned: dict[str, ScheduledSeq] = {}

        for seq in sorted(self.running, key=_priority_order):
            if budget == 0:
                break
            if seq.status is not SequenceStatus.RUNNING:  # preempted earlier in this loop
                continue
            num_new = min(seq.num_tokens - seq.num_computed_tokens, budget)
            while not self._grow(seq, num_new):
                victim = min(self.running, key=Sequence.preemption_key)
                budget += self._preempt(victim, planned, out)
                if victim is seq:
                    break
            else:
                planned[seq.request_id] = ScheduledSeq(seq, num_new)
                budget -= num_new

        if not out.preempted:
            budget = self._admit(budget, planned, out)

        if self.cfg.isolate_priority_prefill:
            self._isolate_priority_prefill(planned)

        for item in planned.values():
            if item.seq.num_computed_tokens == item.seq.num_tokens - 1 and item.num_new_tokens == 1:
                out.decodes.append(item)
            else:
                out.prefills.append(item)
        return out

    def _isolate_priority_prefill(self, planned: dict[str, ScheduledSeq]) -> None:
        """While a sequence of a higher tier is being prefilled, sequences of lower tiers sit
        the step out: the higher tier's time to first token is its prefill alone, not its
        prefill plus everyone else's decodes (they resume next step, blocks kept)."""
        prefilling = [i.seq.tier.priority for i in planned.values() if i.seq.num_output_tokens == 0]
        if not prefilling:
            return
        top = max(prefilling)
        for request_id in [r for r, i in planned.items() if i.seq.tier.priority < top]:
            del planned[request_id]

    def _admit(self, budget: int, planned: dict[str, ScheduledSeq], out: SchedulerOutput) -> int:
        for seq in sorted(self.waiting, key=_priority_order):
            if budget == 0:
                break
            if len(self.running) >= self.cfg.max_num_seqs:
                # Full: a higher tier takes the seat of the lowest-tier, newest sequence.
                victims = [r for r in self.running if r.tier.priority < seq.tier.priority]
                if not victims:
                    break
                budget += self._preempt(min(victims, key=Sequence.preemption_key), planned, out)
            if seq.request.lora is not None and seq.lora_slot == 0:
                assert self.adapters is not None
                slot, error = self.adapters.acquire(seq.request.lora)
                if error is not None:
                    out.failed.append((seq, error))
                    continue
                if slot is None:  # still loading: let others run
                    if seq.adapter_wait_since is None:
                        seq.adapter_wait_since = time.monotonic()
                    continue
                seq.lora_slot = slot
                if seq.adapter_wait_s is None:
                    since = seq.adapter_wait_since
                    seq.adapter_wait_s = 0.0 if since is None else time.monotonic() - since
            if not self._admit_one(seq, budget, planned, out):
                if seq.lora_slot and self.adapters is not None:
                    self.adapters.release(seq.lora_slot)
                    seq.lora_slot = 0
                break  # strict priority: nobody of lower priority jumps ahead
            budget -= planned[seq.request_id].num_new_tokens
        return budget

    def _admit_one(
        self, seq: Sequence, budget: int, planned: dict[str, ScheduledSeq], out: SchedulerOutput
    ) -> bool:
        hashes = self._hashes(seq)
        # At least the last token is computed: its logits give the next token.
        max_cached_blocks = (seq.num_tokens - 1) // self.pool.block_size
        match = self.pool.match_prefix(hashes[:max_cached_blocks])
        self.pool.touch(match.block_ids, seq.request.tenant_id, seq.tier)
        seq.block_ids = list(match.block_ids)
        seq.num_computed_tokens = match.num_cached_tokens
        num_new = min(seq.num_tokens - seq.num_computed_tokens, budget)
        while not self._grow(seq, num_new):
            victims = [r for r in self.running if r.tier.priority < seq.tier.priority]
            if not victims:
                self.pool.free(seq.block_ids)
                seq.block_ids = []
                seq.num_computed_tokens = 0
                return False
            self._preempt(min(victims, key=Sequence.preemption_key), planned, out)
        if seq.num_preemptions == 0:
            seq.num_cached_tokens = match.num_cached_tokens
        self.waiting.remove(seq)
        self.running.append(seq)
        seq.status = SequenceStatus.RUNNING
        planned[seq.request_id] = ScheduledSeq(seq, num_new)
        return True

    def _grow(self, seq: Sequence, num_new_tokens: int) -> bool:
        """Make the sequence's blocks cover `num_new_tokens` more tokens; False if out of blocks."""
        needed_tokens = seq.num_computed_tokens + num_new_tokens
        needed_blocks = -(-needed_tokens // self.pool.block_size) - len(seq.block_ids)
        if needed_blocks <= 0:
            return True
        new = self.pool.allocate(needed_blocks, seq.request.tenant_id, seq.tier)
        if new is None:
            return False
        seq.block_ids.extend(new)
        return True

    def _preempt(
        self, seq: Sequence, planned: dict[str, ScheduledSeq], out: SchedulerOutput
    ) -> int:
        """Free a running sequence's blocks and requeue it; returns budget it gave back."""
        self.running.remove(seq)
        self._release(seq)
        seq.num_computed_tokens = 0
        seq.status = SequenceStatus.WAITING
        seq.num_preemptions += 1
        self.waiting.append(seq)
        out.preempted.append(seq)
        item = planned.pop(seq.request_id, None)
        return item.num_new_tokens if item else 0

    def _release(self, seq: Sequence) -> None:
        if seq.block_ids:
            self.pool.free(seq.block_ids)
            seq.block_ids = []
        if seq.lora_slot and self.adapters is not None:
            self.adapters.release(seq.lora_slot)
        seq.lora_slot = 0

    # -- after the step -----------------------------------------------------------------

    def update(self, sched: SchedulerOutput, sampled: dict[str, int]) -> None:
        """Advance token counts by what ran, publish newly full blocks to the prefix cache,
        and append each sampled token to its sequence."""
        bs = self.pool.block_size
        for item in sched.scheduled:
            seq = item.seq
            if seq.status is not SequenceStatus.RUNNING:
                continue
            before = seq.num_computed_tokens
            seq.num_computed_tokens += item.num_new_tokens
            full_before, full_after = before // bs, seq.num_computed_tokens // bs
            if full_after > full_before:
                hashes = self._hashes(seq, upto_blocks=full_after)
                for i in range(full_before, full_after):
                    self.pool.register(seq.block_ids[i], hashes[i])
            token = sampled.get(seq.request_id)
            if token is not None:
                seq.token_ids.append(token)

    def _hashes(self, seq: Sequence, upto_blocks: int | None = None) -> list[BlockHash]:
        """Chained hashes of the sequence's full blocks (memoized; tokens never change)."""
        bs = self.pool.block_size
        n = seq.num_tokens // bs if upto_blocks is None else upto_blocks
        hashes = self._block_hashes.setdefault(seq.request_id, [])
        prev = hashes[-1] if hashes else hash_root(seq.request.salt, _adapter_id(seq))
        for i in range(len(hashes), n):
            prev = hash_block(prev, seq.token_ids[i * bs : (i + 1) * bs])
            hashes.append(prev)
        return hashes[:n]

    def iter_all(self) -> Iterable[Sequence]:
        yield from self.running
        yield from self.waiting


def _adapter_id(seq: Sequence) -> str | None:
    return seq.request.lora.adapter_id if seq.request.lora else None
