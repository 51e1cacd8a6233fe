"""LLMEngine: one model, continuous batching. `step()` only orchestrates:
schedule -> run -> update -> outputs."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from tenantserve.engine.adapters import AdapterManager, AdapterStats
from tenantserve.engine.block_pool import BlockPool, BlockPoolStats
from tenantserve.engine.config import EngineConfig
from tenantserve.engine.layers.decode_kernel import DecodeKernel, load_decode_kernel
from tenantserve.engine.layers.lora import LoraWeights, apply_lora
from tenantserve.engine.layers.onednn import onednn_available, pack_linears
from tenantserve.engine.layers.quant import quantize_int8
from tenantserve.engine.models.checkpoint import load_model
from tenantserve.engine.output_processor import OutputProcessor
from tenantserve.engine.request import (
    EngineRequest,
    FinishReason,
    RequestMetrics,
    RequestOutput,
    Sequence,
)
from tenantserve.engine.runner import ModelRunner
from tenantserve.engine.sampler import Sampler
from tenantserve.engine.scheduler import Scheduler, SchedulerOutput
from tenantserve.engine.tokenizer import Tokenizer
from tenantserve.errors import ConfigError, InvalidRequestError, PromptTooLongError

# Weight storage per model version (a registry attribute) -> the dtype the model runs in.
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "int8": torch.bfloat16}


@dataclass(frozen=True)
class EngineStats:
    """A snapshot for metrics and the operator console."""

    num_running: int
    num_waiting: int
    num_steps: int
    num_preemptions: int
    max_model_len: int
    kv: BlockPoolStats
    adapters: AdapterStats | None
    # The last step's batch (sequences, tokens) and the sequences of all steps so far
    # (over `num_steps`: the mean batch size).
    num_batch_seqs: int = 0
    num_batch_tokens: int = 0
    num_batched_seqs_total: int = 0
    # Prompt tokens of finished requests, and how many of them the prefix cache served.
    num_prompt_tokens_total: int = 0
    num_cached_prompt_tokens_total: int = 0


class LLMEngine:
    """Serves generation requests for one model; single-threaded, driven by `step()`."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        self.device = torch.device(config.device)
        dtype = DTYPES[config.quantization]
        self.model = load_model(config.model_dir, self.device, dtype)
        if config.quantization == "int8":
            quantize_int8(self.model)
        elif onednn_available(self.device, dtype):
            pack_linears(self.model, batch_hint=config.scheduler.max_num_seqs)
        self.model_config = self.model.config
        self.tokenizer = Tokenizer(config.model_dir)
        eos = set(self.tokenizer.eos_token_ids) | set(self.model_config.eos_token_ids)
        self.output = OutputProcessor(self.tokenizer, eos)

        cc = config.cache
        num_blocks = cc.num_blocks or max(
            1, cc.kv_cache_bytes // ModelRunner.kv_bytes_per_block(self.model, cc.block_size, dtype)
        )
        self.max_model_len = min(
            config.max_model_len or self.model_config.max_position_embeddings,
            num_blocks * cc.block_size,
        )
        self.pool = BlockPool(
            num_blocks, cc.block_size, cc.tier_block_budget, cc.enable_prefix_cache
        )
        lora_weights: LoraWeights | None = None
        self.adapters: AdapterManager | None = None
        if config.lora.max_loras > 0:
            lora_weights = apply_lora(self.model, config.lora)
            self.adapters = AdapterManager(config.lora, self.model_config, lora_weights)
        self.scheduler = Scheduler(config.scheduler, self.pool, self.adapters)
        self.runner = ModelRunner(
            self.model,
            num_blocks,
            cc.block_size,
            self.device,
            Sampler(config.seed, self.device),
            lora=lora_weights,
            decode_kernel=self._decode_kernel(config),
        )
        self._seqs: dict[str, Sequence] = {}
        self._generators: dict[str, torch.Generator] = {}
        self._pending: list[RequestOutput] = []
        self.num_steps = 0
        self.num_preemptions = 0
        self.num_batch_seqs = 0
        self.num_batch_tokens = 0
        self.num_batched_seqs_total = 0
        self.num_prompt_tokens_total = 0
        self.num_cached_prompt_tokens_total = 0

    @staticmethod
    def _decode_kernel(config: EngineConfig) -> DecodeKernel | None:
        if config.decode_attention == "sdpa" or (
            config.decode_attention == "auto" and config.device != "cpu"
        ):
            return None
        kernel = load_decode_kernel()
        if kernel is None and config.decode_attention == "kernel":
            raise ConfigError("decode_attention='kernel' but the C++ kernel cannot be built")
        return kernel

    # -- requests -----------------------------------------------------------------------

    def add_request(self, request: EngineRequest) -> None:
        """Queue a request; raises InvalidRequestError (naming the problem) for bad input."""
        self._validate(request)
        seq = Sequence(request)
        self._seqs[request.request_id] = seq
        if request.sampling.seed is not None and not request.sampling.greedy:
            gen = torch.Generator(device=self.device)
            gen.manual_seed(request.sampling.seed)
            self._generators[request.request_id] = gen
        self.scheduler.add(seq)

    def abort_request(self, request_id: str) -> None:
        """End a request now; its final output (FinishReason.ABORT) comes from the next step."""
        seq = self._seqs.get(request_id)
        if seq is None:
            return
        seq.finish_reason = FinishReason.ABORT
        self._pending.append(self._finish(seq, text=""))

    def has_unfinished_requests(self) -> bool:
        return bool(self._seqs) or bool(self._pending)

    def _validate(self, request: EngineRequest) -> None:
        if request.request_id in self._seqs:
            raise InvalidRequestError(f"request id {request.request_id!r} is already in flight")
        prompt = request.prompt_token_ids
        if not prompt:
            raise InvalidRequestError("the prompt is empty")
        vocab = self.model_config.vocab_size
        if min(prompt) < 0 or max(prompt) >= vocab:
            raise InvalidRequestError(f"prompt token ids must be in [0, {vocab})")
        total = len(prompt) + request.sampling.max_tokens
        if total > self.max_model_len:
            raise PromptTooLongError(
                f"This model's maximum context length is {self.max_model_len} tokens. "
                f"However, you requested {total} tokens ({len(prompt)} in the prompt, "
                f"{request.sampling.max_tokens} for the completion)."
            )
        if request.lora is not None:
            if self.adapters is None:
                raise InvalidRequestError("this engine serves no LoRA adapters (max_loras is 0)")
            self.adapters.check(request.lora)

    # -- the step -----------------------------------------------------------------------

    def step(self) -> list[RequestOutput]:
        """Run one step; outputs for every request that progressed or ended."""
        outputs, self._pending = self._pending, []
        if self.adapters is not None:
            self.adapters.poll()
        plan = self.scheduler.schedule()
        self.num_preemptions += len(plan.preempted)
        for seq, error in plan.failed:
            seq.finish_reason = FinishReason.ERROR
            outputs.append(self._finish(seq, text="", error=error))
        if plan.is_empty:
            if self.adapters is not None and not outputs:
                # Only requests whose adapters are loading: wait for a load, do not spin.
                self.adapters.wait_for_load(timeout_s=0.05)
            return outputs
        now = time.monotonic()
        for item in plan.scheduled:
            if item.seq.first_scheduled_time is None:
                item.seq.first_scheduled_time = now
        t0 = time.perf_counter()
        sampled = self.runner.run(plan, self._generators)
        self._charge_step_time(plan, time.perf_counter() - t0)
        self.scheduler.update(plan, sampled)
        self.num_steps += 1
        self.num_batch_seqs = len(plan.scheduled)
        self.num_batch_tokens = plan.num_batched_tokens
        self.num_batched_seqs_total += self.num_batch_seqs
        now = time.monotonic()
        for request_id, token in sampled.items():
            seq = self._seqs[request_id]
            if seq.first_token_time is None:
                seq.first_token_time = now
            text = self.output.append(seq, token)
            if seq.finish_reason is not None:
                outputs.append(self._finish(seq, text, new_token_ids=(token,)))
            else:
                outputs.append(RequestOutput(request_id, (token,), text))
        return outputs

    @staticmethod
    def _charge_step_time(plan: SchedulerOutput, elapsed_s: float) -> None:
        """Split the step's wall time between its sequences by tokens computed."""
        total = plan.num_batched_tokens
        for item in plan.scheduled:
            item.seq.engine_time_s += elapsed_s * item.num_new_tokens / total

    def _finish(
        self,
        seq: Sequence,
        text: str,
        new_token_ids: tuple[int, ...] = (),
        error: str | None = None,
    ) -> RequestOutput:
        self.scheduler.finish(seq)
        text += self.output.flush(seq)
        self.output.forget(seq)
        del self._seqs[seq.request_id]
        self._generators.pop(seq.request_id, None)
        arrival = seq.request.arrival_time
        self.num_prompt_tokens_total += seq.num_prompt_tokens
        self.num_cached_prompt_tokens_total += seq.num_cached_tokens
        metrics = RequestMetrics(
            num_prompt_tokens=seq.num_prompt_tokens,
            num_cached_tokens=seq.num_cached_tokens,
            num_completion_tokens=seq.num_output_tokens,
            queue_time_s=(seq.first_scheduled_time or time.monotonic()) - arrival,
            ttft_s=None if seq.first_token_time is None else seq.first_token_time - arrival,
            engine_time_s=seq.engine_time_s,
            num_preemptions=seq.num_preemptions,
            adapter_wait_s=seq.adapter_wait_s,
        )
        return RequestOutput(
            request_id=seq.request_id,
            new_token_ids=new_token_ids,
            text_delta=text,
            finished=True,
            finish_reason=seq.finish_reason,
            error=error,
            error_code="invalid_request" if error else None,
            metrics=metrics,
        )

    def close(self) -> None:
        """Stop background work (adapter loader threads)."""
        if self.adapters is not None:
            self.adapters.close()

    def stats(self) -> EngineStats:
        return EngineStats(
            num_running=len(self.scheduler.running),
            num_waiting=len(self.scheduler.waiting),
            num_steps=self.num_steps,
            num_preemptions=self.num_preemptions,
            max_model_len=self.max_model_len,
            kv=self.pool.stats(),
            adapters=self.adapters.stats() if self.adapters is not None else None,
            num_batch_seqs=self.num_batch_seqs,
            num_batch_tokens=self.num_batch_tokens,
            num_batched_seqs_total=self.num_batched_seqs_total,
            num_prompt_tokens_total=self.num_prompt_tokens_total,
            num_cached_prompt_tokens_total=self.num_cached_prompt_tokens_total,
        )
