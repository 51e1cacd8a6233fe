"""AdapterManager: tiers (disk -> host -> device slot), LRU between them, and bad adapters."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig as HFLlamaConfig
from transformers import LlamaForCausalLM as HFLlamaForCausalLM

from tenantserve.engine import adapters as adapters_module
from tenantserve.engine.adapters import AdapterAcquire, AdapterManager
from tenantserve.engine.config import LoraConfig
from tenantserve.engine.layers.lora import LoraWeights
from tenantserve.engine.lora_files import CONFIG_FILE, WEIGHTS_FILE
from tenantserve.engine.models.checkpoint import read_config
from tenantserve.engine.models.llama import LlamaConfig
from tenantserve.engine.request import LoraRef
from tenantserve.errors import AdapterError
from tests.helpers.lora import write_random_adapter

MAX_RANK = 8


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    hf_cfg = HFLlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=64,
        max_position_embeddings=64,
    )
    path = tmp_path_factory.mktemp("adapters") / "model"
    HFLlamaForCausalLM(hf_cfg).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def adapter_pool(model_dir: Path) -> list[Path]:
    """Five valid adapters: ranks 2..8, various targets."""
    targets: list[list[str] | str] = [
        ["q_proj", "v_proj"],
        "all-linear",
        ["o_proj", "down_proj"],
        ["gate_proj", "up_proj"],
        ["k_proj"],
    ]
    return [
        write_random_adapter(model_dir, model_dir.parent / f"ad{i}", 2 + i, targets[i], seed=i)
        for i in range(5)
    ]


@pytest.fixture
def model_cfg(model_dir: Path) -> LlamaConfig:
    return read_config(model_dir)


@pytest.fixture
def make_manager(model_cfg: LlamaConfig) -> Iterator[Callable[..., AdapterManager]]:
    managers: list[AdapterManager] = []

    def make(max_loras: int = 2, max_cpu_loras: int = 2) -> AdapterManager:
        cfg = LoraConfig(max_loras=max_loras, max_cpu_loras=max_cpu_loras, max_lora_rank=MAX_RANK)
        weights = LoraWeights(model_cfg, cfg, torch.float32, torch.device("cpu"))
        manager = AdapterManager(cfg, model_cfg, weights)
        managers.append(manager)
        return manager

    yield make
    for manager in managers:
        manager.close()


def _ref(path: Path) -> LoraRef:
    return LoraRef(adapter_id=path.name, path=str(path))


def _wait_for_loads(manager: AdapterManager, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while manager.stats().num_loading:
        assert time.monotonic() < deadline, "background load did not finish"
        time.sleep(0.005)
        manager.poll()


def _acquire_loaded(manager: AdapterManager, ref: LoraRef) -> int:
    """Acquire, waiting for a background load if the adapter is cold."""
    got = manager.acquire(ref)
    if got.slot is None and got.error is None:
        _wait_for_loads(manager)
        got = manager.acquire(ref)
    assert got.error is None and got.slot is not None, got
    return got.slot


def test_cold_adapter_loads_in_background_then_gets_a_slot(
    make_manager: Callable[..., AdapterManager], adapter_pool: list[Path]
) -> None:
    manager = make_manager()
    ref = _ref(adapter_pool[0])
    manager.check(ref)
    assert manager.acquire(ref) == AdapterAcquire(None, None)
    assert manager.stats().num_loading == 1
    _wait_for_loads(manager)
    stats = manager.stats()
    assert (stats.num_loading, stats.num_host, stats.num_active) == (0, 1, 0)
    assert stats.num_disk_loads == 1 and stats.last_disk_load_s is not None

    slot = manager.acquire(ref).slot
    assert slot == 1
    stats = manager.stats()
    assert (stats.num_host, stats.num_active, stats.num_pinned, stats.num_host_loads) == (
        0,
        1,
        1,
        1,
    )
    assert stats.last_host_load_s is not None
    assert manager._weights.slot_targets(slot) == {"qkv_proj"}
    # Already active: same slot, one more user.
    assert manager.acquire(ref).slot == slot
    manager.release(slot)
    manager.release(slot)
    assert manager.stats().num_pinned == 0
    assert manager.stats().active_ids == (ref.adapter_id,)
    with pytest.raises(ValueError, match="more often"):
        manager.release(slot)


def test_cold_acquire_returns_at_once_and_reads_on_another_thread(
    make_manager: Callable[..., AdapterManager],
    adapter_pool: list[Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    manager = make_manager()
    release_disk = threading.Event()
    reader_threads: list[int] = []
    real_read = adapters_module.read_adapter

    def slow_read(*args: object, **kwargs: object) -> object:
        reader_threads.append(threading.get_ident())
        assert release_disk.wait(10)
        return real_read(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(adapters_module, "read_adapter", slow_read)
    ref = _ref(adapter_pool[1])
    start = time.perf_counter()
    assert manager.acquire(ref) == AdapterAcquire(None, None)
    assert manager.acquire(ref) == AdapterAcquire(None, None)  # still loading, not resubmitted
    manager.poll()
    assert time.perf_counter() - start < 1.0
    assert manager.stats().num_loading == 1
    release_disk.set()
    assert _acquire_loaded(manager, ref) == 1
    assert reader_threads and threading.get_ident() not in reader_threads
    assert manager.stats().num_disk_loads == 1


def test_idle_adapter_is_evicted_to_host_when_slots_are_full(
    make_manager: Callable[..., AdapterManager], adapter_pool: list[Path]
) -> None:
    manager = make_manager(max_loras=2, max_cpu_loras=4)
    a, b, c = (_ref(p) for p in adapter_pool[:3])
    slot_a = _acquire_loaded(manager, a)
    slot_b = _acquire_loaded(manager, b)
    manager.release(slot_a)
    manager.release(slot_b)
    manager.acquire(b)  # b used more recently than a
    manager.release(slot_b)

    slot_c = _acquire_loaded(manager, c)
    assert slot_c == slot_a  # a, the least recently used idle adapter, made room
    stats = manager.stats()
    assert (stats.num_active, stats.num_host) == (2, 1)
    assert stats.active_ids == (c.adapter_id, b.adapter_id)  # hot: most recent first
    # a comes back from host memory, synchronously, without another disk read
    manager.release(slot_c)
    got = manager.acquire(a)
    assert got.slot is not None
    assert manager.stats().num_disk_loads == 3
    assert manager.stats().num_host_loads == 4


def test_pinned_adapter_is_never_evicted(
    make_manager: Callable[..., AdapterManager], adapter_pool: list[Path]
) -> None:
    manager = make_manager(max_loras=1, max_cpu_loras=2)
    a, b = _ref(adapter_pool[0]), _ref(adapter_pool[1])
    slot_a = _acquire_loaded(manager, a)
    assert manager.acquire(b) == AdapterAcquire(None, None)  # starts the disk read
    _wait_for_loads(manager)
    for _ in range(3):  # b is in host memory, but the only slot is in use
        assert manager.acquire(b) == AdapterAcquire(None, None)
        assert manager.acquire(a).slot == slot_a
        manager.release(slot_a)
    assert manager.stats().num_active == 1 and manager.stats().num_host == 1
    manager.release(slot_a)
    assert manager.acquire(b).slot == slot_a
    assert manager.acquire(a) == AdapterAcquire(None, None)  # now a waits for b's slot


def test_host_tier_forgets_least_recently_used_beyond_max_cpu_loras(
    make_manager: Callable[..., AdapterManager], adapter_pool: list[Path]
) -> None:
    manager = make_manager(max_loras=1, max_cpu_loras=2)
    pinned = _ref(adapter_pool[4])
    _acquire_loaded(manager, pinned)  # holds the only slot, so the others stay in host memory
    refs = [_ref(p) for p in adapter_pool[:3]]
    for ref in refs:
        assert manager.acquire(ref).slot is None
        _wait_for_loads(manager)
    stats = manager.stats()
    assert (stats.num_host, stats.num_disk_loads) == (2, 4)
    assert stats.host_bytes > 0
    # The oldest (refs[0]) was dropped back to disk: asking for it reads it again.
    assert manager.acquire(refs[0]) == AdapterAcquire(None, None)
    assert manager.stats().num_loading == 1
    assert manager.acquire(refs[2]) == AdapterAcquire(None, None)  # in host memory: no read
    assert manager.stats().num_loading == 1


def test_release_of_the_base_slot_is_ignored_and_of_an_empty_slot_refused(
    make_manager: Callable[..., AdapterManager],
) -> None:
    manager = make_manager()
    manager.release(0)
    with pytest.raises(ValueError, match="slot 2"):
        manager.release(2)


# --- malformed adapters -------------------------------------------------------------------


def _edit_config(path: Path, **changes: object) -> None:
    cfg = json.loads((path / CONFIG_FILE).read_text())
    cfg.update(changes)
    (path / CONFIG_FILE).write_text(json.dumps(cfg))


def _edit_tensors(path: Path, edit: Callable[[dict[str, torch.Tensor]], None]) -> None:
    tensors = load_file(path / WEIGHTS_FILE)
    edit(tensors)
    save_file(tensors, path / WEIGHTS_FILE)


def _first_key(tensors: dict[str, torch.Tensor], suffix: str) -> str:
    return next(k for k in sorted(tensors) if k.endswith(suffix))


def _set_nan(tensors: dict[str, torch.Tensor]) -> None:
    tensors[_first_key(tensors, "lora_B.weight")][0, 0] = float("nan")


def _wrong_shape(tensors: dict[str, torch.Tensor]) -> None:
    key = _first_key(tensors, "lora_A.weight")
    tensors[key] = torch.zeros(tensors[key].shape[0], tensors[key].shape[1] + 1)


def _unknown_key(tensors: dict[str, torch.Tensor]) -> None:
    tensors["base_model.model.lm_head.lora_A.weight"] = torch.zeros(2, 32)


def _drop_b(tensors: dict[str, torch.Tensor]) -> None:
    del tensors[_first_key(tensors, "lora_B.weight")]


# (how to break a valid q/v adapter, words the error must contain)
CONFIG_PROBLEMS: dict[str, tuple[Callable[[Path], object], str]] = {
    "missing_dir": (lambda p: shutil.rmtree(p), "does not exist"),
    "missing_config": (lambda p: (p / CONFIG_FILE).unlink(), CONFIG_FILE),
    "bad_json": (lambda p: (p / CONFIG_FILE).write_text("{not json"), "not valid JSON"),
    "rank_above_max": (lambda p: _edit_config(p, r=MAX_RANK * 2), "rank 16"),
    "unknown_target": (lambda p: _edit_config(p, target_modules=["lm_head"]), "lm_head"),
    "bias": (lambda p: _edit_config(p, bias="all"), "bias"),
    "dora": (lambda p: _edit_config(p, use_dora=True), "use_dora"),
    "missing_weights": (lambda p: (p / WEIGHTS_FILE).unlink(), WEIGHTS_FILE),
}
TENSOR_PROBLEMS: dict[str, tuple[Callable[[Path], object], str]] = {
    "nan_weight": (lambda p: _edit_tensors(p, _set_nan), "NaN"),
    "wrong_shape": (lambda p: _edit_tensors(p, _wrong_shape), "shape"),
    "unknown_tensor": (lambda p: _edit_tensors(p, _unknown_key), "unknown tensor"),
    "missing_b": (lambda p: _edit_tensors(p, _drop_b), "no lora_B"),
    "not_safetensors": (lambda p: (p / WEIGHTS_FILE).write_bytes(b"garbage"), "safetensors"),
}


def _broken_copy(adapter_pool: list[Path], tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    shutil.copytree(adapter_pool[0], path)
    return path


@pytest.mark.parametrize("problem", sorted(CONFIG_PROBLEMS))
def test_malformed_adapter_config_is_refused_at_admission(
    problem: str,
    make_manager: Callable[..., AdapterManager],
    adapter_pool: list[Path],
    tmp_path: Path,
) -> None:
    break_it, words = CONFIG_PROBLEMS[problem]
    path = _broken_copy(adapter_pool, tmp_path, problem)
    break_it(path)
    with pytest.raises(AdapterError, match=words):
        make_manager().check(_ref(path))


@pytest.mark.parametrize("problem", sorted(TENSOR_PROBLEMS))
def test_malformed_adapter_tensors_end_the_request_with_the_problem(
    problem: str,
    make_manager: Callable[..., AdapterManager],
    adapter_pool: list[Path],
    tmp_path: Path,
) -> None:
    break_it, words = TENSOR_PROBLEMS[problem]
    path = _broken_copy(adapter_pool, tmp_path, problem)
    break_it(path)
    manager = make_manager()
    ref = _ref(path)
    manager.check(ref)  # admission only reads the config
    assert manager.acquire(ref) == AdapterAcquire(None, None)
    _wait_for_loads(manager)
    got = manager.acquire(ref)
    assert got.slot is None and got.error is not None and words in got.error
    assert manager.stats().num_failed == 1 and manager.stats().num_active == 0
    # Remembered: new requests are refused at admission with the same message.
    with pytest.raises(AdapterError, match=words):
        manager.check(ref)
    manager.forget(ref.adapter_id)
    manager.check(ref)


def test_config_matching_peft_rules_is_accepted(
    make_manager: Callable[..., AdapterManager], adapter_pool: list[Path], tmp_path: Path
) -> None:
    path = _broken_copy(adapter_pool, tmp_path, "regex_target")
    _edit_config(path, target_modules=r".*\.(q_proj|v_proj)")
    manager = make_manager()
    manager.check(_ref(path))
    assert _acquire_loaded(manager, _ref(path)) == 1
    _edit_config(path, target_modules=r".*\.embed_tokens")
    with pytest.raises(AdapterError, match="matches no supported module"):
        make_manager().check(LoraRef("other", str(path)))
