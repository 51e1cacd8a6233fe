"""The vLLM pool's pure parts: tenant cache salts, tier priorities, what `prepare` sends,
and the `kind = "vllm"` pools file."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tenantserve.engine.request import LoraRef
from tenantserve.errors import ConfigError
from tenantserve.gateway.events import EventLog
from tenantserve.gateway.pools import UpstreamModel
from tenantserve.gateway.upstream import OpenAIUpstream
from tenantserve.gateway.vllm_adapters import VllmAdapters
from tenantserve.gateway.vllm_pool import VllmPool, cache_salt, vllm_priority
from tenantserve.pool_config import PoolConfig, VllmConfig, load_pools
from tenantserve.pool_setup import build_configured_pool
from tenantserve.tenancy.model import Region, TenantContext
from tenantserve.tiers import Tier


def test_cache_salt_differs_per_tenant_and_per_secret() -> None:
    a, b = cache_salt(b"secret", "ten_a"), cache_salt(b"secret", "ten_b")
    assert a != b
    assert cache_salt(b"secret", "ten_a") == a  # stable: the prefix cache still hits
    assert cache_salt(b"other", "ten_a") != a  # not guessable from the tenant id alone
    assert len(a) == 64 and "/" not in a and "@" not in a  # what vLLM accepts


def test_premium_is_served_before_standard_before_free() -> None:
    assert vllm_priority(Tier.PREMIUM) < vllm_priority(Tier.STANDARD) < vllm_priority(Tier.FREE)
    assert vllm_priority(Tier.PREMIUM) == 0


def _pool(adapters: VllmAdapters | None = None) -> VllmPool:
    return VllmPool(
        name="vllm",
        upstream=OpenAIUpstream("http://127.0.0.1:9/v1"),
        models=(UpstreamModel("m", "m", 2048),),
        adapters=adapters,
        salt_secret=b"s3cret",
    )


def _ctx(tenant: str, tier: Tier) -> TenantContext:
    return TenantContext(tenant_id=tenant, tier=tier, region=Region.US)


async def test_prepare_overrides_a_client_sent_cache_salt_and_priority() -> None:
    payload = {"model": "m", "cache_salt": "guess-of-another-tenant", "priority": -100}
    release = await _pool().prepare(payload, _ctx("ten_a", Tier.FREE), None)
    release()
    assert payload["cache_salt"] == cache_salt(b"s3cret", "ten_a")
    assert payload["priority"] == vllm_priority(Tier.FREE)
    assert payload["model"] == "m"


async def test_prepare_names_the_loaded_adapter_as_model_and_holds_it() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        return httpx.Response(200, text="ok")

    client = httpx.AsyncClient(base_url="http://vllm/v1", transport=httpx.MockTransport(handler))
    adapters = VllmAdapters(client, max_loaded=1, wait_timeout_s=0.2)
    payload: dict[str, object] = {"model": "m"}
    release = await _pool(adapters).prepare(
        payload, _ctx("ten_a", Tier.PREMIUM), LoraRef("adp_1", "/cache/adp_1")
    )
    assert payload["model"] == "adp_1"
    assert calls == ["/v1/load_lora_adapter"]
    release()
    await client.aclose()


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pools.toml"
    path.write_text(text)
    return path


def test_a_vllm_pool_is_launched_or_attached(tmp_path: Path) -> None:
    pools = load_pools(
        _write(
            tmp_path,
            """
[[pool]]
name = "launched"
kind = "vllm"
models = ["smol"]
max_loras = 3
cache_salt_secret_env = "SALT"
launch = { model = "/models/smol", python = "/venv/bin/python", args = ["--dtype", "float32"] }

[[pool]]
name = "attached"
kind = "vllm"
base_url = "http://127.0.0.1:8001/v1"
models = ["smol"]
""",
        ),
        env={"SALT": "pepper"},
    )
    launched, attached = pools
    assert launched.vllm is not None and launched.vllm.launch is not None
    assert launched.vllm.launch.model == Path("/models/smol")
    assert launched.vllm.launch.args == ("--dtype", "float32")
    assert launched.vllm.max_loras == 3
    assert launched.vllm.cache_salt_secret == "pepper"
    assert attached.vllm is not None and attached.vllm.launch is None
    assert attached.base_url == "http://127.0.0.1:8001/v1"


@pytest.mark.parametrize(
    "body",
    [
        'kind = "vllm"\nmodels = ["m"]',  # neither base_url nor launch
        'kind = "openai"\nbase_url = "http://x/v1"\nmodels = ["m"]\nmax_loras = 2',
        'kind = "vllm"\nbase_url = "http://x/v1"\nmodels = ["m"]\nlaunch = { model = "/m" }',
        'kind = "vllm"\nmodels = ["m"]\nlaunch = { python = "/p" }',  # no model
        'kind = "vllm"\nbase_url = "http://x/v1"\nmodels = ["m"]\ncache_salt_secret_env = "NOPE"',
    ],
)
def test_bad_vllm_pool_settings_are_refused(tmp_path: Path, body: str) -> None:
    with pytest.raises(ConfigError):
        load_pools(_write(tmp_path, f'[[pool]]\nname = "p"\n{body}\n'), env={})


def test_a_pool_has_a_connection_for_every_request_its_queue_lets_through(
    tmp_path: Path,
) -> None:
    """One request at a time, plus the premium headroom: a premium request past a full
    pool must not wait for the only connection (it did: a 504 from the connect timeout)."""
    for kind, vllm in (("openai", None), ("vllm", VllmConfig())):
        cfg = PoolConfig(
            "p", "http://127.0.0.1:9/v1", ("m",), kind=kind, max_in_flight=1, vllm=vllm
        )
        pool = build_configured_pool(cfg, EventLog(), tmp_path)
        headroom = pool.queue.config.max_headroom
        assert headroom > 0
        assert pool.queue.config.max_in_flight == 1
        assert pool.upstream.max_connections == 1 + headroom
