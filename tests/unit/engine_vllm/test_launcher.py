"""VllmLauncher without vLLM: the command line it builds, and start-up failures that name
their cause (no interpreter; an interpreter without vLLM exits and its log is shown)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tenantserve.engine_vllm.launcher import VllmLauncher
from tenantserve.errors import ConfigError
from tenantserve.pool_config import VllmLaunchConfig


def _launcher(tmp_path: Path, python: Path, args: tuple[str, ...] = ()) -> VllmLauncher:
    cfg = VllmLaunchConfig(model=tmp_path / "model", python=python, args=args, port=18123)
    return VllmLauncher(cfg, ("m", "m2"), tmp_path / "vllm.log", max_loras=4, max_lora_rank=32)


def test_the_command_turns_on_what_the_pool_relies_on_and_the_configured_args_win(
    tmp_path: Path,
) -> None:
    launcher = _launcher(tmp_path, Path(sys.executable), ("--max-loras", "9"))
    command = launcher.command()
    assert command[:3] == [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    joined = " ".join(command)
    assert "--served-model-name m m2" in joined
    assert "--enable-lora" in command
    assert "--scheduling-policy priority" in joined
    assert "--enable-prompt-tokens-details" in command  # cached tokens are metered
    assert command[-2:] == ["--max-loras", "9"]  # after ours: argparse keeps the last
    assert launcher.base_url == "http://127.0.0.1:18123/v1"
    assert launcher.environment()["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"


async def test_a_missing_interpreter_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        await _launcher(tmp_path, tmp_path / "no-python").start()


async def test_a_server_that_exits_during_start_up_shows_its_log(tmp_path: Path) -> None:
    # This interpreter has no vLLM: `python -m vllm...` exits at once.
    launcher = _launcher(tmp_path, Path(sys.executable))
    with pytest.raises(ConfigError, match="exited with 1 during start-up") as failed:
        await launcher.start()
    assert "No module named 'vllm'" in str(failed.value)
