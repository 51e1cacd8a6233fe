"""Which LoRA adapters are where: active in a device slot, parsed in host memory, or cold on disk.

`AdapterManager` is driven by the scheduler's single-threaded step loop and never
blocks it on disk I/O: a cold adapter is read and validated by a small thread pool
while the step loop keeps serving other requests; `poll()` (once per step) moves
finished reads into the host tier, from where `acquire` copies an adapter into a
device slot synchronously (milliseconds). LRU between tiers: an idle active adapter
goes back to the host tier when its slot is needed, and the host tier forgets its
least recently used adapters beyond `max_cpu_loras`. A slot in use (refcount > 0) is
never taken away.

An adapter is identified by `LoraRef.adapter_id`; its files are read from the path
given the first time the id is seen. A load that failed is remembered: `check` and
`acquire` report the same error until `forget(adapter_id)`.
"""

from __future__ import annotations

import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, NamedTuple

from tenantserve.engine.config import LoraConfig
from tenantserve.engine.layers.lora import LoraWeights
from tenantserve.engine.lora_files import (
    WEIGHTS_FILE,
    LoraAdapterWeights,
    read_adapter,
    read_adapter_config,
)
from tenantserve.engine.models.llama import LlamaConfig
from tenantserve.engine.request import LoraRef
from tenantserve.errors import AdapterError


class AdapterAcquire(NamedTuple):
    """`acquire`'s answer: a slot to run with now; or neither (loading, or every slot in use:
    ask again next step); or an error (the adapter cannot be loaded: end the request)."""

    slot: int | None
    error: str | None = None


@dataclass(frozen=True)
class AdapterStats:
    """Counts per tier and load latencies, for metrics."""

    num_active: int
    num_pinned: int  # active with at least one running sequence
    num_host: int
    num_loading: int
    num_failed: int
    host_bytes: int
    num_disk_loads: int  # cold -> host (background)
    num_host_loads: int  # host -> device slot
    last_disk_load_s: float | None
    last_host_load_s: float | None
    # Seconds spent in all loads so far (with the counts: the mean load latency).
    disk_load_s_total: float = 0.0
    host_load_s_total: float = 0.0
    # The adapters in device slots, most recently used first (the operator's "hot" list).
    active_ids: tuple[str, ...] = ()


class _Loaded(NamedTuple):
    adapter: LoraAdapterWeights
    elapsed_s: float


@dataclass
class _Active:
    adapter: LoraAdapterWeights
    slot: int
    refcount: int
    last_used: int


@dataclass
class _Host:
    adapter: LoraAdapterWeights
    last_used: int


class AdapterManager:
    """Three tiers of LoRA adapters (device slots, host LRU, disk) behind acquire/release."""

    MAX_REMEMBERED_FAILURES: ClassVar[int] = 1024

    def __init__(self, cfg: LoraConfig, model_cfg: LlamaConfig, weights: LoraWeights) -> None:
        if cfg.max_loras < 1 or cfg.loader_threads < 1:
            raise ValueError("max_loras and loader_threads must be at least 1")
        self.cfg = cfg
        self.model_cfg = model_cfg
        self._weights = weights
        # The host tier must hold a finished load until it is activated.
        self._max_host = max(1, cfg.max_cpu_loras)
        self._pool = ThreadPoolExecutor(
            max_workers=cfg.loader_threads, thread_name_prefix="lora-loader"
        )
        self._active: dict[str, _Active] = {}
        self._slot_owner: list[str | None] = [None] * (cfg.max_loras + 1)  # slot 0 unused
        self._host: dict[str, _Host] = {}
        self._loading: dict[str, Future[_Loaded]] = {}
        self._failed: dict[str, str] = {}
        self._clock = 0  # logical time of last use, for LRU
        self._num_disk_loads = 0
        self._num_host_loads = 0
        self._last_disk_load_s: float | None = None
        self._last_host_load_s: float | None = None
        self._disk_load_s_total = 0.0
        self._host_load_s_total = 0.0

    def check(self, ref: LoraRef) -> None:
        """Cheap validation at admission (reads at most the small config file); raises
        AdapterError naming the problem. Passing does not promise the tensors are valid."""
        if ref.adapter_id in self._failed:
            raise AdapterError(self._failed[ref.adapter_id])
        known = self._active.keys() | self._host.keys() | self._loading.keys()
        if ref.adapter_id in known:
            return
        read_adapter_config(Path(ref.path), self.model_cfg, self.cfg.max_lora_rank)
        if not (Path(ref.path) / WEIGHTS_FILE).is_file():
            raise AdapterError(f"adapter {ref.path} has no {WEIGHTS_FILE}")

    def acquire(self, ref: LoraRef) -> AdapterAcquire:
        """A device slot holding the adapter, pinned until `release(slot)`; never waits on
        disk (a cold adapter starts loading in the background and slot is None)."""
        adapter_id = ref.adapter_id
        self._clock += 1
        future = self._loading.get(adapter_id)
        if future is not None and future.done():
            self._finish_load(adapter_id, future)
        if adapter_id in self._failed:
            return AdapterAcquire(None, self._failed[adapter_id])
        active = self._active.get(adapter_id)
        if active is not None:
            active.refcount += 1
            active.last_used = self._clock
            return AdapterAcquire(active.slot)
        host = self._host.get(adapter_id)
        if host is not None:
            host.last_used = self._clock
            slot = self._free_slot()
            if slot is None:
                return AdapterAcquire(None)
            start = time.perf_counter()
            self._weights.load_slot(slot, host.adapter)
            self._last_host_load_s = time.perf_counter() - start
            self._host_load_s_total += self._last_host_load_s
            self._num_host_loads += 1
            del self._host[adapter_id]
            self._active[adapter_id] = _Active(host.adapter, slot, 1, self._clock)
            self._slot_owner[slot] = adapter_id
            self._trim_host()
            return AdapterAcquire(slot)
        if future is None:
            self._loading[adapter_id] = self._pool.submit(
                _load, adapter_id, Path(ref.path), self.model_cfg, self.cfg.max_lora_rank
            )
        return AdapterAcquire(None)

    def release(self, slot: int) -> None:
        """A sequence using `slot` finished, was aborted or preempted; slot 0 is ignored."""
        if slot == 0:
            return
        adapter_id = self._slot_owner[slot] if 0 < slot < len(self._slot_owner) else None
        if adapter_id is None:
            raise ValueError(f"release of slot {slot}, which holds no adapter")
        active = self._active[adapter_id]
        if active.refcount == 0:
            raise ValueError(f"release of slot {slot} ({adapter_id}) more often than acquired")
        active.refcount -= 1

    def poll(self) -> None:
        """Move finished background loads into the host tier (or record their errors)."""
        for adapter_id, future in list(self._loading.items()):
            if future.done():
                self._finish_load(adapter_id, future)
        self._trim_host()

    def wait_for_load(self, timeout_s: float) -> None:
        """Block up to `timeout_s` until some background load finishes (for an engine with
        nothing else to do); returns at once when nothing is loading."""
        if self._loading:
            wait(list(self._loading.values()), timeout=timeout_s, return_when=FIRST_COMPLETED)

    def forget(self, adapter_id: str) -> None:
        """Drop a remembered load error (e.g. after the adapter's files were replaced)."""
        self._failed.pop(adapter_id, None)

    def stats(self) -> AdapterStats:
        """A snapshot of the tiers and load latencies."""
        return AdapterStats(
            num_active=len(self._active),
            num_pinned=sum(1 for a in self._active.values() if a.refcount),
            num_host=len(self._host),
            num_loading=len(self._loading),
            num_failed=len(self._failed),
            host_bytes=sum(h.adapter.num_bytes for h in self._host.values()),
            num_disk_loads=self._num_disk_loads,
            num_host_loads=self._num_host_loads,
            last_disk_load_s=self._last_disk_load_s,
            last_host_load_s=self._last_host_load_s,
            disk_load_s_total=self._disk_load_s_total,
            host_load_s_total=self._host_load_s_total,
            active_ids=tuple(
                sorted(self._active, key=lambda i: self._active[i].last_used, reverse=True)
            ),
        )

    def close(self) -> None:
        """Stop the loader threads (running reads finish; queued ones are dropped)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _finish_load(self, adapter_id: str, future: Future[_Loaded]) -> None:
        del self._loading[adapter_id]
        try:
            loaded = future.result()
        except AdapterError as e:
            self._remember_failure(adapter_id, str(e))
            return
        except Exception as e:  # an unexpected failure must not take the step loop down
            self._remember_failure(adapter_id, f"cannot load adapter {adapter_id}: {e!r}")
            return
        self._num_disk_loads += 1
        self._last_disk_load_s = loaded.elapsed_s
        self._disk_load_s_total += loaded.elapsed_s
        self._host[adapter_id] = _Host(loaded.adapter, self._clock)

    def _remember_failure(self, adapter_id: str, error: str) -> None:
        self._failed[adapter_id] = error
        while len(self._failed) > self.MAX_REMEMBERED_FAILURES:
            del self._failed[next(iter(self._failed))]  # the oldest

    def _free_slot(self) -> int | None:
        """A slot with no adapter, else the least recently used idle one, its adapter moved
        to the host tier; None when every slot is in use."""
        for slot in range(1, len(self._slot_owner)):
            if self._slot_owner[slot] is None:
                return slot
        idle = [a for a in self._active.values() if a.refcount == 0]
        if not idle:
            return None
        victim = min(idle, key=lambda a: a.last_used)
        victim_id = self._slot_owner[victim.slot]
        assert victim_id is not None
        del self._active[victim_id]
        self._host[victim_id] = _Host(victim.adapter, victim.last_used)
        self._slot_owner[victim.slot] = None
        return victim.slot

    def _trim_host(self) -> None:
        while len(self._host) > self._max_host:
            oldest = min(self._host, key=lambda k: self._host[k].last_used)
            del self._host[oldest]


def _load(adapter_id: str, path: Path, model_cfg: LlamaConfig, max_rank: int) -> _Loaded:
    """Runs on a loader thread: read and validate the adapter's files."""
    start = time.perf_counter()
    adapter = read_adapter(adapter_id, path, model_cfg, max_rank)
    return _Loaded(adapter, time.perf_counter() - start)
