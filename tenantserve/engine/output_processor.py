"""Turns sampled tokens into client output: incremental text, stop conditions, finish reasons."""

from __future__ import annotations

from collections.abc import Collection
from collections.abc import Sequence as Seq
from typing import Protocol

from tenantserve.engine.request import FinishReason, Sequence


class Decoder(Protocol):
    def decode(self, ids: Seq[int], skip_special_tokens: bool = True) -> str: ...


class OutputProcessor:
    """Per-sequence detokenization and stop checks. Owns `Sequence`'s text fields."""

    def __init__(self, tokenizer: Decoder, eos_token_ids: Collection[int]) -> None:
        self.tokenizer = tokenizer
        self.eos_token_ids = frozenset(eos_token_ids)
        self._offsets: dict[str, tuple[int, int]] = {}  # request id -> (prefix, read)

    def append(self, seq: Sequence, token_id: int) -> str:
        """Account for the token just appended to `seq`; sets `seq.finish_reason` when it ends
        the sequence. Returns the text that can be sent to the client now."""
        p = seq.request.sampling
        out_ids = seq.output_token_ids
        if token_id in p.stop_token_ids or (not p.ignore_eos and token_id in self.eos_token_ids):
            seq.finish_reason = FinishReason.STOP
        else:
            self._decode_delta(seq, out_ids)
            if p.stop and self._truncate_at_stop(seq, p.stop):
                seq.finish_reason = FinishReason.STOP
        if seq.finish_reason is None and len(out_ids) >= p.max_tokens:
            seq.finish_reason = FinishReason.LENGTH
        return self._emit(seq)

    def flush(self, seq: Sequence) -> str:
        """All text not yet sent (at finish)."""
        return self._emit(seq, hold=0)

    def forget(self, seq: Sequence) -> None:
        self._offsets.pop(seq.request_id, None)

    def _decode_delta(self, seq: Sequence, out_ids: list[int]) -> None:
        prefix, read = self._offsets.get(seq.request_id, (0, 0))
        prefix_text = self.tokenizer.decode(out_ids[prefix:read])
        new_text = self.tokenizer.decode(out_ids[prefix:])
        # An incomplete UTF-8 sequence decodes to U+FFFD: wait for the next token.
        if len(new_text) > len(prefix_text) and not new_text.endswith("\ufffd"):
            seq.output_text += new_text[len(prefix_text) :]
            self._offsets[seq.request_id] = (read, len(out_ids))

    @staticmethod
    def _truncate_at_stop(seq: Sequence, stops: tuple[str, ...]) -> bool:
        longest = max(len(s) for s in stops)
        start = max(0, seq.num_emitted_chars - longest)
        hits = [i for s in stops if (i := seq.output_text.find(s, start)) >= 0]
        if not hits:
            return False
        seq.output_text = seq.output_text[: min(hits)]
        return True

    def _emit(self, seq: Sequence, hold: int | None = None) -> str:
        if hold is None:
            stops = seq.request.sampling.stop
            # Hold back a tail that might be the start of a stop string.
            hold = 0 if seq.finish_reason or not stops else max(len(s) for s in stops) - 1
        end = max(seq.num_emitted_chars, len(seq.output_text) - hold)
        delta = seq.output_text[seq.num_emitted_chars : end]
        seq.num_emitted_chars = end
        return delta
