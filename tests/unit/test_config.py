from __future__ import annotations

from pathlib import Path

import pytest

from tenantserve.config import Settings
from tenantserve.errors import ConfigError
from tenantserve.pool_config import load_pools
from tenantserve.tenancy.model import Region

POOLS = """
[[pool]]
name = "vllm-eu"
base_url = "http://10.0.0.5:8000/v1"
models = ["llama=meta-llama/Llama-3.1-8B-Instruct"]
region = "eu"
reserved_for = ["ten_x"]
api_key_env = "VLLM_KEY"
max_in_flight = 32
"""


def test_pools_are_read_from_toml_with_the_key_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "pools.toml"
    path.write_text(POOLS)
    [pool] = load_pools(path, {"VLLM_KEY": "sk-upstream"})
    assert (pool.name, pool.region, pool.reserved_for, pool.max_in_flight) == (
        "vllm-eu",
        Region.EU,
        ("ten_x",),
        32,
    )
    assert pool.api_key == "sk-upstream" and "sk-upstream" not in repr(pool)
    settings = Settings.from_env({"TENANTSERVE_POOLS_FILE": str(path), "VLLM_KEY": "k"})
    assert settings.pools[0].models == ("llama=meta-llama/Llama-3.1-8B-Instruct",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (POOLS, "VLLM_KEY is not set"),
        ('[[pool]]\nname = "a"\nbase_url = "ftp://x"\nmodels = ["m"]', r"http\(s\) URL"),
        ('[[pool]]\nname = "a"\nbase_url = "http://x"\nmodels = []', "at least one model"),
        ('[[pool]]\nname = "a"\nbase_url = "http://x"\nmodels = ["m"]\nport = 1', "unknown keys"),
        (
            '[[pool]]\nname = "a"\nbase_url = "http://x"\nmodels = ["m"]\nregion = "mars"',
            "region must be one of",
        ),
        ("[[pool]\n", "not valid TOML"),
        ('[[pool]]\nbase_url = "http://x"', "needs a `name`"),
    ],
)
def test_a_bad_pools_file_says_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "pools.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_pools(path, {})


def test_a_missing_pools_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_pools(tmp_path / "nope.toml", {})


def test_the_builtin_engine_can_be_switched_off() -> None:
    assert Settings.from_env({"TENANTSERVE_BUILTIN_ENGINE": "false"}).builtin_engine is False
    with pytest.raises(ConfigError):
        Settings.from_env({"TENANTSERVE_BUILTIN_ENGINE": "maybe"})


def test_engine_threads_come_from_the_environment() -> None:
    assert Settings().engine_config(Path("m")).num_threads is None  # PyTorch's default
    settings = Settings.from_env({"TENANTSERVE_ENGINE_THREADS": "3"})
    assert settings.engine_config(Path("m")).num_threads == 3
    with pytest.raises(ConfigError):
        Settings.from_env({"TENANTSERVE_ENGINE_THREADS": "many"})


def test_the_redis_timeout_of_rate_limit_decisions_comes_from_the_environment() -> None:
    assert Settings().redis_timeout_s == 0.5
    assert Settings.from_env({"TENANTSERVE_REDIS_TIMEOUT_S": "2.5"}).redis_timeout_s == 2.5
    with pytest.raises(ConfigError):
        Settings.from_env({"TENANTSERVE_REDIS_TIMEOUT_S": "soon"})
