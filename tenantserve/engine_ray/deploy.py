"""RayPoolDeployment: one pool as a Ray Serve application (deploy, delete).

Ray is connected to once per process (`connect_ray`: a local Ray, or the cluster at
`RayConfig.address`); Serve runs without its HTTP proxy, as the gateway is the front
door and calls replicas through deployment handles only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from tenantserve.engine.config import EngineConfig
from tenantserve.errors import ConfigError
from tenantserve.ray_config import RayConfig

if TYPE_CHECKING:  # imported by the replica, not by the gateway's start-up
    from tenantserve.engine_ray.adapter_files import ReplicaFilesConfig

RAY_NAMESPACE = "tenantserve"


def connect_ray(address: str | None) -> None:
    """Join the Ray cluster at `address` (None: start a local one), then start Serve
    without proxies; no-op when this process is already connected."""
    try:
        import ray
        from ray import serve
    except ImportError as e:
        raise ConfigError(
            "the ray engine backend needs Ray Serve: pip install 'tenantserve[ray]'"
        ) from e
    if not ray.is_initialized():
        ray.init(address=address, namespace=RAY_NAMESPACE, log_to_driver=False)
    serve.start(proxy_location="Disabled")


@dataclass(frozen=True)
class RayPoolDeployment:
    """The Serve application of one pool: the engine deployment, its replicas and
    autoscaling (a reserved pool never goes below its reservation)."""

    name: str  # the pool's name: also the Serve application's and the deployment's
    engine: EngineConfig
    ray: RayConfig
    min_replicas: int  # a reserved pool: its reservation
    max_replicas: int
    # Requests a replica takes beyond what its engine batches: the gateway's fair queue
    # lets a premium request past a full pool (its tier's headroom), and the replica's
    # engine preempts a lower tier for it; Serve must not hold it back.
    priority_headroom: int = 0
    # A dedicated pool: autoscaled from zero, its minimum raised to `max_replicas` while
    # tenants are placed on it (`held`).
    dedicated: bool = False
    # Where replicas pull adapters from (None: they read the gateway's copies by path).
    files: ReplicaFilesConfig | None = None

    def autoscaling_config(self) -> dict[str, Any]:
        """Serve's autoscaling on ongoing requests per replica."""
        config: dict[str, Any] = {
            "min_replicas": self.min_replicas,
            "initial_replicas": self.min_replicas,
            "max_replicas": self.max_replicas,
            "target_ongoing_requests": self.ray.target_ongoing_requests,
        }
        if self.dedicated:
            config["downscale_delay_s"] = self.ray.dedicated_downscale_delay_s
        return config

    @property
    def owned_by_gateway(self) -> bool:
        """A local Ray started by the gateway: its applications go with it. On a
        cluster (`address` set) they are shared by all gateways and outlive each."""
        return self.ray.address is None

    def held(self, hold: bool) -> RayPoolDeployment:
        """A dedicated pool's deployment with its replicas held up (minimum = maximum)
        or let go (minimum 0: idle, it scales to zero); any other pool unchanged."""
        if not self.dedicated:
            return self
        return replace(self, min_replicas=self.max_replicas if hold else 0)

    def options(self) -> dict[str, Any]:
        """The deployment's options: fixed replicas when min = max, else autoscaling;
        as many ongoing requests per replica as its engine batches, plus the headroom."""
        options: dict[str, Any] = {
            "name": self.name,
            "max_ongoing_requests": self.engine.scheduler.max_num_seqs + self.priority_headroom,
            "ray_actor_options": {"num_cpus": self.ray.replica_num_cpus},
            "health_check_period_s": 2.0,
            "health_check_timeout_s": 30.0,
        }
        if self.min_replicas == self.max_replicas and not self.dedicated:
            options["num_replicas"] = self.min_replicas
        else:
            options["autoscaling_config"] = self.autoscaling_config()
        return options

    def deploy(self) -> Any:
        """Deploy (or update) the application; blocks until its replicas run (at least
        the minimum) and returns its `DeploymentHandle`. An update of the replica
        bounds only restarts no replica."""
        from ray import serve

        from tenantserve.engine_ray.deployment import engine_deployment

        connect_ray(self.ray.address)
        app = engine_deployment(**self.options()).bind(self.engine, self.files)
        return serve.run(app, name=self.name, route_prefix=None)

    def delete(self) -> None:
        """Delete the application (its replicas stop); Ray itself keeps running."""
        import ray
        from ray import serve

        if ray.is_initialized():
            serve.delete(self.name)
