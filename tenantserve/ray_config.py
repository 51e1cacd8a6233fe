"""The Ray Serve engine backend's settings (`engine_backend = "ray"`): `RayConfig`, and the
`NAME=N[,NAME=N...]` lists of reserved and dedicated Ray pools (`parse_ray_counts`)."""

from __future__ import annotations

from dataclasses import dataclass

from tenantserve.errors import ConfigError


@dataclass(frozen=True)
class RayConfig:
    """Built-in engine pools as Ray Serve deployments: one deployment per pool, replicas
    autoscaled between `min_replicas` and `max_replicas` on ongoing requests per replica.

    `reserved` gives each premium tenant id its own pool that keeps at least that many
    replicas. `dedicated` names pools that hold no replica until a tenant is moved onto
    them (`tenantserve tenant move`): the move brings the pool up to its replicas, and the
    last tenant leaving lets it scale back to zero.
    """

    # None: a local Ray started by the gateway; "auto" or "ray://host:port": a cluster.
    address: str | None = None
    min_replicas: int = 1
    max_replicas: int = 1
    target_ongoing_requests: float = 4.0
    replica_num_cpus: float = 1.0
    reserved: tuple[tuple[str, int], ...] = ()  # (tenant id, replicas)
    dedicated: tuple[tuple[str, int], ...] = ()  # (pool name, replicas while in use)
    # How long an idle dedicated pool with no tenant left keeps its replicas.
    dedicated_downscale_delay_s: float = 60.0
    # Where each replica keeps the adapters it pulls from the artifact store (on its own
    # node); None: `tenantserve-ray-adapters` in the node's temporary directory.
    adapter_dir: str | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.min_replicas <= self.max_replicas or self.max_replicas < 1:
            raise ConfigError("Ray pools need 0 <= min_replicas <= max_replicas, max >= 1")
        if any(n < 1 for _, n in self.reserved):
            raise ConfigError("a reserved Ray pool keeps at least 1 replica")
        if any(n < 1 for _, n in self.dedicated):
            raise ConfigError("a dedicated Ray pool runs at least 1 replica while in use")
        names = [name for name, _ in self.dedicated]
        if len(set(names)) != len(names) or "shared" in names:
            raise ConfigError(f"dedicated Ray pool names must be unique, not `shared`: {names}")


def parse_ray_counts(value: str, what: str = "TENANT") -> tuple[tuple[str, int], ...]:
    """`NAME=N[,NAME=N...]`: reserved pools per premium tenant id (TENANTSERVE_RAY_RESERVED)
    or dedicated pools by name (TENANTSERVE_RAY_DEDICATED), each with N replicas."""
    out: list[tuple[str, int]] = []
    for part in filter(None, (p.strip() for p in value.split(","))):
        name, sep, n = part.partition("=")
        if not sep or not name or not n.isdigit():
            raise ConfigError(f"expected {what}=REPLICAS, got {part!r}")
        out.append((name, int(n)))
    return tuple(out)


def parse_ray_reserved(value: str) -> tuple[tuple[str, int], ...]:
    """`TENANT=N[,TENANT=N...]`: a reserved Ray pool per premium tenant id."""
    return parse_ray_counts(value, "TENANT")
