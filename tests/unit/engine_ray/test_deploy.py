"""Ray pool settings and deployment options, without starting Ray."""

from __future__ import annotations

from pathlib import Path

import pytest

from tenantserve.config import Settings
from tenantserve.engine.config import EngineConfig
from tenantserve.engine_ray.client import RayServeEngineClient
from tenantserve.engine_ray.deploy import RayPoolDeployment
from tenantserve.errors import ConfigError
from tenantserve.gateway.events import EventLog
from tenantserve.gateway.pools import EnginePool
from tenantserve.pool_setup import build_pools
from tenantserve.ray_config import RayConfig, parse_ray_reserved


def test_ray_backend_and_its_settings_come_from_the_environment() -> None:
    s = Settings.from_env(
        {
            "TENANTSERVE_ENGINE_BACKEND": "ray",
            "TENANTSERVE_RAY_ADDRESS": "auto",
            "TENANTSERVE_RAY_MIN_REPLICAS": "1",
            "TENANTSERVE_RAY_MAX_REPLICAS": "4",
            "TENANTSERVE_RAY_TARGET_ONGOING_REQUESTS": "2.5",
            "TENANTSERVE_RAY_RESERVED": "ten_a=2, ten_b=1",
            "TENANTSERVE_RAY_DEDICATED": "gold=2",
            "TENANTSERVE_RAY_ADAPTER_DIR": "/var/lib/tenantserve/adapters",
        }
    )
    assert s.engine_backend == "ray"
    assert s.ray == RayConfig(
        address="auto",
        min_replicas=1,
        max_replicas=4,
        target_ongoing_requests=2.5,
        reserved=(("ten_a", 2), ("ten_b", 1)),
        dedicated=(("gold", 2),),
        adapter_dir="/var/lib/tenantserve/adapters",
    )
    assert Settings.from_env({}).engine_backend == "process"


@pytest.mark.parametrize("value", ["ten_a", "ten_a=x", "=2", "ten_a=-1"])
def test_a_malformed_reservation_is_refused(value: str) -> None:
    with pytest.raises(ConfigError):
        parse_ray_reserved(value)


def test_an_unknown_engine_backend_is_refused() -> None:
    with pytest.raises(ConfigError):
        Settings.from_env({"TENANTSERVE_ENGINE_BACKEND": "k8s"})


def test_replica_bounds_are_checked() -> None:
    with pytest.raises(ConfigError):
        RayConfig(min_replicas=3, max_replicas=2)
    with pytest.raises(ConfigError):
        RayConfig(reserved=(("ten_a", 0),))
    with pytest.raises(ConfigError):
        RayConfig(dedicated=(("gold", 0),))
    with pytest.raises(ConfigError, match="unique"):
        RayConfig(dedicated=(("gold", 1), ("gold", 2)))
    with pytest.raises(ConfigError, match="unique"):
        RayConfig(dedicated=(("shared", 1),))


def test_equal_bounds_give_fixed_replicas_and_unequal_ones_autoscaling() -> None:
    engine = EngineConfig(model_dir=Path("m"))
    fixed = RayPoolDeployment("shared", engine, RayConfig(), 2, 2).options()
    assert fixed["num_replicas"] == 2 and "autoscaling_config" not in fixed
    assert fixed["max_ongoing_requests"] == engine.scheduler.max_num_seqs
    # A premium request the fair queue lets past a full pool reaches the engine.
    headroom = RayPoolDeployment("shared", engine, RayConfig(), 2, 2, priority_headroom=2)
    assert headroom.options()["max_ongoing_requests"] == engine.scheduler.max_num_seqs + 2
    scaled = RayPoolDeployment("shared", engine, RayConfig(target_ongoing_requests=3), 1, 4)
    assert "num_replicas" not in scaled.options()
    assert scaled.options()["autoscaling_config"] == {
        "min_replicas": 1,
        "initial_replicas": 1,
        "max_replicas": 4,
        "target_ongoing_requests": 3,
    }


def test_reserved_pools_keep_their_reservation_and_dedicated_ones_start_empty(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    ray = RayConfig(
        min_replicas=1, max_replicas=2, reserved=(("ten_a", 3),), dedicated=(("gold", 2),)
    )
    settings = Settings(data_dir=tmp_path, model_dir=tiny_model_dir, engine_backend="ray", ray=ray)
    pools = build_pools(settings, EventLog())
    assert [p.name for p in pools] == ["shared", "reserved-ten_a", "gold"]
    bounds = {}
    files = set()
    for pool in pools:
        assert isinstance(pool, EnginePool) and isinstance(pool.engine, RayServeEngineClient)
        deployment = pool.engine.deployment
        bounds[pool.name] = (deployment.min_replicas, deployment.max_replicas, pool.dedicated)
        files.add(deployment.files)
    assert bounds == {
        "shared": (1, 2, False),
        "reserved-ten_a": (3, 3, False),
        "gold": (0, 2, True),
    }
    assert [p.reserved_for for p in pools] == [frozenset(), {"ten_a"}, frozenset()]
    # Every replica can pull adapters from the gateway's artifact store into its own dir.
    [only] = files
    assert only is not None and only.artifacts == settings.artifacts
    assert only.data_dir == str(tmp_path) and only.adapter_dir.endswith("tenantserve-ray-adapters")


def test_a_dedicated_pool_autoscales_from_zero_and_is_held_at_its_replicas_in_use() -> None:
    engine = EngineConfig(model_dir=Path("m"))
    ray = RayConfig(dedicated_downscale_delay_s=5)
    idle = RayPoolDeployment("gold", engine, ray, 0, 2, dedicated=True)
    scaling = idle.options()["autoscaling_config"]
    assert (scaling["min_replicas"], scaling["initial_replicas"], scaling["max_replicas"]) == (
        0,
        0,
        2,
    )
    assert scaling["downscale_delay_s"] == 5
    held = idle.held(True)
    # Held, it still autoscales (min = max): a lightweight update, no replica restarted.
    assert held.options()["autoscaling_config"]["min_replicas"] == 2
    assert "num_replicas" not in held.options()
    assert held.held(False) == idle
    shared = RayPoolDeployment("shared", engine, ray, 1, 1)
    assert shared.held(True) is shared  # only dedicated pools are held or let go


def test_only_a_gateways_own_local_ray_has_its_applications_deleted_at_shutdown() -> None:
    engine = EngineConfig(model_dir=Path("m"))
    local = RayPoolDeployment("shared", engine, RayConfig(), 1, 1)
    cluster = RayPoolDeployment("shared", engine, RayConfig(address="auto"), 1, 1)
    assert local.owned_by_gateway and not cluster.owned_by_gateway
