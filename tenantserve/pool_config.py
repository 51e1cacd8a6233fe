"""The pools file (`tenantserve up --pools FILE`, `TENANTSERVE_POOLS_FILE`): the serving
pools beside the built-in engine's — OpenAI-compatible servers and vLLM servers that
tenantserve attaches to or starts — as `PoolConfig`s (`load_pools`)."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tenantserve.errors import ConfigError
from tenantserve.tenancy.model import Region

POOL_KINDS = ("openai", "vllm")


@dataclass(frozen=True)
class VllmLaunchConfig:
    """A vLLM OpenAI-compatible server that tenantserve starts (and stops) itself."""

    model: Path  # a Hugging Face checkpoint directory
    python: Path = Path(".venv-vllm/bin/python")  # the interpreter vLLM is installed in
    args: tuple[str, ...] = ()  # more `api_server` flags (`--dtype`, `--max-model-len`, ...)
    port: int | None = None  # None: a free loopback port
    start_timeout_s: float = 600.0


@dataclass(frozen=True)
class VllmConfig:
    """What a `kind = "vllm"` pool adds to an OpenAI-compatible one: tenants' LoRA adapters
    loaded at runtime (at most `max_loras`, least recently used unloaded first), a
    per-tenant `cache_salt` (HMAC of the tenant id under `cache_salt_secret`; None: a
    random secret per process) and the tier as vLLM's `priority`."""

    launch: VllmLaunchConfig | None = None
    max_loras: int = 8
    max_lora_rank: int = 16
    cache_salt_secret: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.max_loras < 1:
            raise ConfigError("a vLLM pool's max_loras must be at least 1")


@dataclass(frozen=True)
class PoolConfig:
    """A serving pool beside the built-in engine's: an external OpenAI-compatible server
    (a vLLM or SGLang deployment, another provider) that the gateway fronts. Requests to it
    pass through the same authentication, admission, rate limits and fair queue."""

    name: str
    base_url: str  # up to and including `/v1`
    models: tuple[str, ...]  # the model names it serves, as tenants call them
    kind: str = "openai"
    region: Region = Region.US
    # Premium tenants whose reserved pool this is; empty: a shared pool.
    reserved_for: tuple[str, ...] = ()
    # Serves only `reserved_for` and the tenants moved onto it (`tenantserve tenant move`),
    # nobody else even while nobody is there.
    dedicated: bool = False
    # The upstream's bearer token (read from this environment variable, never a file).
    api_key: str | None = field(default=None, repr=False)
    # Requests in flight at the upstream at once; more wait in the pool's fair queue.
    max_in_flight: int = 256
    timeout_s: float = 600.0
    max_model_len: int = 32768
    vllm: VllmConfig | None = None  # kind = "vllm" only

    def __post_init__(self) -> None:
        if self.kind not in POOL_KINDS:
            raise ConfigError(f"pool {self.name!r}: kind must be one of {POOL_KINDS}")
        launched = self.vllm is not None and self.vllm.launch is not None
        if launched and self.base_url:
            raise ConfigError(f"pool {self.name!r}: give either base_url or launch, not both")
        if not launched and not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(f"pool {self.name!r}: base_url must be an http(s) URL")
        if not self.models:
            raise ConfigError(f"pool {self.name!r}: `models` must name at least one model")


def load_pools(path: Path, env: Mapping[str, str] | None = None) -> tuple[PoolConfig, ...]:
    """The `[[pool]]` tables of a TOML file::

    [[pool]]
    name = "vllm-llama"            # unique
    kind = "openai"                # an OpenAI-compatible server
    base_url = "http://10.0.0.5:8000/v1"
    models = ["llama-3.1-8b-instruct"]
    region = "eu"                  # residency: only tenants of this region are served
    reserved_for = ["ten_..."]     # optional: a premium tenant's reserved pool
    dedicated = true               # optional: only for reserved_for and tenants moved here
    api_key_env = "VLLM_API_KEY"   # optional: the upstream's bearer token
    max_in_flight = 256            # optional
    """
    env = os.environ if env is None else env
    try:
        data = tomllib.loads(path.read_text())
    except OSError as e:
        raise ConfigError(f"cannot read the pools file {path}: {e.strerror}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"the pools file {path} is not valid TOML: {e}") from e
    pools = [_pool(p, path, env) for p in data.get("pool", [])]
    names = [p.name for p in pools]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: pool names must be unique, got {names}")
    return tuple(pools)


def _pool(raw: Any, path: Path, env: Mapping[str, str]) -> PoolConfig:
    known = {
        "name", "kind", "base_url", "models", "region", "reserved_for", "dedicated", "api_key_env",
        "max_in_flight", "timeout_s", "max_model_len", *VLLM_POOL_KEYS,
    }  # fmt: skip
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise ConfigError(f"{path}: every [[pool]] needs a `name`")
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{path}: pool {raw['name']!r} has unknown keys {unknown}")
    if raw.get("kind") == "vllm":
        raw = _vllm_pool(raw, path, env)
    elif unknown := sorted(set(raw) & VLLM_POOL_KEYS):
        raise ConfigError(f'{path}: pool {raw["name"]!r}: {unknown} need kind = "vllm"')
    fields_ = dict(raw)
    if "region" in fields_:
        fields_["region"] = _region(str(fields_["region"]))
    for key in ("models", "reserved_for"):
        if key in fields_:
            fields_[key] = tuple(fields_[key])
    if key_env := fields_.pop("api_key_env", None):
        if key_env not in env:
            raise ConfigError(f"pool {raw['name']!r}: environment variable {key_env} is not set")
        fields_["api_key"] = env[key_env]
    try:
        return PoolConfig(**fields_)
    except TypeError as e:
        raise ConfigError(f"{path}: pool {raw['name']!r}: {e}") from e


VLLM_POOL_KEYS = frozenset({"launch", "max_loras", "max_lora_rank", "cache_salt_secret_env"})


def _vllm_pool(raw: dict[str, Any], path: Path, env: Mapping[str, str]) -> dict[str, Any]:
    """A `kind = "vllm"` pool's own keys folded into its `VllmConfig`::

    launch = { model = "DIR", python = ".venv-vllm/bin/python", args = ["--dtype", "bfloat16"] }
    max_loras = 8                      # adapters loaded at once (vLLM's --max-loras)
    max_lora_rank = 16                 # vLLM's --max-lora-rank (launched servers)
    cache_salt_secret_env = "VAR"      # optional: the HMAC secret of the tenants' cache salts
    """
    name = raw["name"]
    rest = {k: v for k, v in raw.items() if k not in VLLM_POOL_KEYS}
    launch = None
    if (spec := raw.get("launch")) is not None:
        known = {"model", "python", "args", "port", "start_timeout_s"}
        if not isinstance(spec, dict) or "model" not in spec or set(spec) - known:
            raise ConfigError(
                f"{path}: pool {name!r}: launch takes {sorted(known)} (model required)"
            )
        launch = VllmLaunchConfig(
            model=Path(spec["model"]),
            python=Path(
                spec.get("python") or env.get("TENANTSERVE_VLLM_PYTHON") or ".venv-vllm/bin/python"
            ),
            args=tuple(str(a) for a in spec.get("args", ())),
            port=spec.get("port"),
            start_timeout_s=float(spec.get("start_timeout_s", 600.0)),
        )
        rest.setdefault("base_url", "")
    secret = None
    if secret_env := raw.get("cache_salt_secret_env"):
        if secret_env not in env:
            raise ConfigError(f"pool {name!r}: environment variable {secret_env} is not set")
        secret = env[secret_env]
    rest["vllm"] = VllmConfig(
        launch=launch,
        max_loras=int(raw.get("max_loras", 8)),
        max_lora_rank=int(raw.get("max_lora_rank", 16)),
        cache_salt_secret=secret,
    )
    return rest


def _region(value: str) -> Region:
    try:
        return Region(value)
    except ValueError:
        choices = ", ".join(r.value for r in Region)
        raise ConfigError(f"a pool's region must be one of {choices}, got {value!r}") from None
