"""Settings. The only module that reads the environment.

Every component takes one frozen config dataclass (`Scheduler(cfg.scheduler)`);
`Settings.from_env()` builds the whole tree from `TENANTSERVE_*` variables on top
of embedded defaults, so a fresh machine runs with no configuration at all.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from tenantserve.engine.config import CacheConfig, EngineConfig, LoraConfig, SchedulerConfig
from tenantserve.errors import ConfigError
from tenantserve.observability.config import ObservabilityConfig, RequestRecordsConfig
from tenantserve.pool_config import PoolConfig, load_pools
from tenantserve.ray_config import RayConfig, parse_ray_counts, parse_ray_reserved
from tenantserve.tenancy.model import Region

DEFAULT_DATA_DIR = Path(".tenantserve")


@dataclass(frozen=True)
class JwtConfig:
    """JWT verification: HS256 secret and/or RS256 public key (PEM or JWKS file); none → no JWTs."""

    audience: str = "tenantserve"
    issuer: str | None = None
    hs256_secret: str | None = field(default=None, repr=False)
    rs256_public_key_file: Path | None = None
    jwks_file: Path | None = None


@dataclass(frozen=True)
class AuthConfig:
    """Tenant credentials: API-key hashing pepper (HMAC-SHA256 when set) and JWT keys."""

    api_key_pepper: str | None = field(default=None, repr=False)
    jwt: JwtConfig = field(default_factory=JwtConfig)


ARTIFACT_STORE_KINDS = ("local", "s3")


@dataclass(frozen=True)
class ArtifactStoreConfig:
    """Where model artifacts live: "local" (data_dir/artifacts) or "s3" (an S3-API bucket)."""

    kind: str = "local"
    # S3 only; None: boto3's defaults (AWS endpoint, its credential chain).
    s3_endpoint_url: str | None = None
    s3_bucket: str | None = None
    s3_region: str | None = None
    s3_access_key_id: str | None = field(default=None, repr=False)
    s3_secret_access_key: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in ARTIFACT_STORE_KINDS:
            raise ConfigError(f"TENANTSERVE_ARTIFACT_STORE must be local or s3, not {self.kind!r}")
        if self.kind == "s3" and not self.s3_bucket:
            raise ConfigError("TENANTSERVE_ARTIFACT_STORE=s3 needs TENANTSERVE_S3_BUCKET")


@dataclass(frozen=True)
class MeteringConfig:
    """Where usage events go after the outbox (`tenantserve/metering/`)."""

    # None: the embedded pipeline (the outbox drained into the database in process);
    # a URL: the outbox is shipped to this NATS JetStream, and aggregated from it.
    nats_url: str | None = None
    # The JetStream stream (one per deployment); its subjects are the name, lower-cased,
    # with dots for underscores (TENANTSERVE_USAGE -> tenantserve.usage.<tenant>).
    stream: str = "TENANTSERVE_USAGE"
    # The outbox's SQLite `synchronous`: FULL survives power loss, NORMAL a process crash.
    outbox_synchronous: str = "FULL"
    # Whether `tenantserve up` runs the shipper and the aggregator in process (JetStream
    # mode); False when they run as their own processes (`tenantserve metering ...`).
    run_pipeline: bool = True


@dataclass(frozen=True)
class BillingConfig:
    """Export of invoices to the payment provider."""

    stripe_api_key: str | None = field(default=None, repr=False)
    # None: Stripe's own API; set for a proxy or a local recording server in tests.
    stripe_api_base: str | None = None


ENGINE_BACKENDS = ("process", "ray")


@dataclass(frozen=True)
class EvalConfig:
    """The eval gate (`registry/eval_gate.py`): a candidate regresses below the stable
    version's score minus `regression_threshold`, or below `min_score` (sets without a
    floor of their own); `block_on_missing`: no result yet also blocks promotion to 100%."""

    regression_threshold: float = 0.05
    min_score: float | None = None
    block_on_missing: bool = True


@dataclass(frozen=True)
class Settings:
    """Everything `tenantserve up` needs."""

    data_dir: Path = DEFAULT_DATA_DIR
    host: str = "127.0.0.1"
    port: int = 8000
    # None: the default model (SmolLM2-135M-Instruct, converted into data_dir).
    model_dir: Path | None = None
    device: str = "cpu"
    quantization: str = "fp32"
    # Engine compute threads; None: PyTorch's default (one per core).
    engine_threads: int | None = None
    cache: CacheConfig = field(default_factory=CacheConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    # Rate limits and concurrency counters: Redis when set, else in-process.
    redis_url: str | None = None
    # How long a rate-limit decision may wait for Redis before the tier's outage policy
    # decides (fail closed: 503 limiter_unavailable; fail open: admitted, degraded).
    redis_timeout_s: float = 0.5
    # Metadata database (SQLAlchemy async URL); None: SQLite file in data_dir.
    database_url: str | None = None
    auth: AuthConfig = field(default_factory=AuthConfig)
    # Bearer token of the admin API; None: generated once and kept in data_dir/admin_token.
    admin_token: str | None = field(default=None, repr=False)
    # Largest accepted request body (413 above it).
    max_body_bytes: int = 4 << 20
    # How long a request body may take to arrive (408 after it; adapter uploads get ten
    # times as long): a client trickling its body in holds a connection no longer.
    body_timeout_s: float = 60.0
    # Largest tenant adapter upload (all its files, or its archive and what it unpacks to;
    # 413 above it). Uploads pass the body limit first: set max_body_bytes above this.
    max_adapter_bytes: int = 256 << 20
    # Region of this deployment's pools; tenants of another region are refused (403).
    region: Region = Region.US
    # How long an authenticated credential is trusted without asking the database again.
    auth_cache_ttl_s: float = 2.0
    # False: no built-in engine (and no default model); only the pools below serve.
    builtin_engine: bool = True
    # External pools (`--pools FILE` / TENANTSERVE_POOLS_FILE, see `load_pools`).
    pools: tuple[PoolConfig, ...] = ()
    # Model artifacts: the data dir's artifacts/ (default) or an S3 bucket.
    artifacts: ArtifactStoreConfig = field(default_factory=ArtifactStoreConfig)
    metering: MeteringConfig = field(default_factory=MeteringConfig)
    billing: BillingConfig = field(default_factory=BillingConfig)
    records: RequestRecordsConfig = field(default_factory=RequestRecordsConfig)
    observability: ObservabilityConfig = field(default_factory=ObservabilityConfig)
    evals: EvalConfig = field(default_factory=EvalConfig)
    # Where the built-in engine runs: "process" (a child process) or "ray" (Ray Serve).
    engine_backend: str = "process"
    ray: RayConfig = field(default_factory=RayConfig)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Defaults, then TENANTSERVE_* variables, then explicit overrides (CLI flags)."""
        env = os.environ if env is None else env
        s = cls()
        if v := env.get("TENANTSERVE_DATA_DIR"):
            s = replace(s, data_dir=Path(v))
        if v := env.get("TENANTSERVE_MODEL_DIR"):
            s = replace(s, model_dir=Path(v))
        if v := env.get("TENANTSERVE_DEVICE"):
            s = replace(s, device=v)
        if v := env.get("TENANTSERVE_QUANTIZATION"):
            s = replace(s, quantization=v)
        if v := env.get("TENANTSERVE_ENGINE_THREADS"):
            s = replace(s, engine_threads=_int(v, "ENGINE_THREADS"))
        if v := env.get("TENANTSERVE_MAX_NUM_SEQS"):
            n = _int(v, "MAX_NUM_SEQS")
            s = replace(s, scheduler=replace(s.scheduler, max_num_seqs=n))
        if v := env.get("TENANTSERVE_KV_CACHE_BYTES"):
            s = replace(s, cache=replace(s.cache, kv_cache_bytes=_int(v, "KV_CACHE_BYTES")))
        if v := env.get("TENANTSERVE_MAX_LORAS"):
            s = replace(s, lora=replace(s.lora, max_loras=_int(v, "MAX_LORAS")))
        if v := env.get("TENANTSERVE_MAX_CPU_LORAS"):
            s = replace(s, lora=replace(s.lora, max_cpu_loras=_int(v, "MAX_CPU_LORAS")))
        if v := env.get("TENANTSERVE_MAX_LORA_RANK"):
            s = replace(s, lora=replace(s.lora, max_lora_rank=_int(v, "MAX_LORA_RANK")))
        if v := env.get("TENANTSERVE_REDIS_URL"):
            s = replace(s, redis_url=v)
        if v := env.get("TENANTSERVE_REDIS_TIMEOUT_S"):
            s = replace(s, redis_timeout_s=_float(v, "REDIS_TIMEOUT_S"))
        if v := env.get("TENANTSERVE_DATABASE_URL"):
            s = replace(s, database_url=v)
        if v := env.get("TENANTSERVE_ADMIN_TOKEN"):
            s = replace(s, admin_token=v)
        if v := env.get("TENANTSERVE_MAX_BODY_BYTES"):
            s = replace(s, max_body_bytes=_int(v, "MAX_BODY_BYTES"))
        if v := env.get("TENANTSERVE_BODY_TIMEOUT_S"):
            s = replace(s, body_timeout_s=_float(v, "BODY_TIMEOUT_S"))
        if v := env.get("TENANTSERVE_MAX_ADAPTER_BYTES"):
            s = replace(s, max_adapter_bytes=_int(v, "MAX_ADAPTER_BYTES"))
        if v := env.get("TENANTSERVE_REGION"):
            s = replace(s, region=_region(v))
        if v := env.get("TENANTSERVE_BUILTIN_ENGINE"):
            s = replace(s, builtin_engine=_bool(v, "BUILTIN_ENGINE"))
        if v := env.get("TENANTSERVE_POOLS_FILE"):
            s = replace(s, pools=load_pools(Path(v), env))
        s = replace(s, auth=_auth_from_env(s.auth, env))
        s = replace(s, artifacts=_artifacts_from_env(env))
        s = replace(s, metering=_metering_from_env(env), billing=_billing_from_env(env))
        s = replace(s, records=_records_from_env(env))
        s = replace(s, observability=_observability_from_env(env))
        if v := env.get("TENANTSERVE_EVAL_REGRESSION_THRESHOLD"):
            threshold = _float(v, "EVAL_REGRESSION_THRESHOLD")
            s = replace(s, evals=replace(s.evals, regression_threshold=threshold))
        if v := env.get("TENANTSERVE_EVAL_MIN_SCORE"):
            s = replace(s, evals=replace(s.evals, min_score=_float(v, "EVAL_MIN_SCORE")))
        if v := env.get("TENANTSERVE_EVAL_BLOCK_ON_MISSING"):
            block = _bool(v, "EVAL_BLOCK_ON_MISSING")
            s = replace(s, evals=replace(s.evals, block_on_missing=block))
        s = _engine_backend_from_env(s, env)
        given = {k: v for k, v in overrides.items() if v is not None}
        return replace(s, **given)  # type: ignore[arg-type]

    def engine_config(self, model_dir: Path) -> EngineConfig:
        return EngineConfig(
            model_dir=model_dir,
            device=self.device,
            quantization=self.quantization,
            num_threads=self.engine_threads,
            cache=self.cache,
            scheduler=self.scheduler,
            lora=self.lora,
        )


def _engine_backend_from_env(s: Settings, env: Mapping[str, str]) -> Settings:
    if v := env.get("TENANTSERVE_ENGINE_BACKEND"):
        if v not in ENGINE_BACKENDS:
            raise ConfigError(f"TENANTSERVE_ENGINE_BACKEND must be one of {ENGINE_BACKENDS}")
        s = replace(s, engine_backend=v)
    r = s.ray
    if v := env.get("TENANTSERVE_RAY_ADDRESS"):
        r = replace(r, address=v)
    if v := env.get("TENANTSERVE_RAY_MIN_REPLICAS"):
        r = replace(r, min_replicas=_int(v, "RAY_MIN_REPLICAS"))
    if v := env.get("TENANTSERVE_RAY_MAX_REPLICAS"):
        r = replace(r, max_replicas=_int(v, "RAY_MAX_REPLICAS"))
    if v := env.get("TENANTSERVE_RAY_TARGET_ONGOING_REQUESTS"):
        r = replace(r, target_ongoing_requests=_float(v, "RAY_TARGET_ONGOING_REQUESTS"))
    if v := env.get("TENANTSERVE_RAY_REPLICA_CPUS"):
        r = replace(r, replica_num_cpus=_float(v, "RAY_REPLICA_CPUS"))
    if v := env.get("TENANTSERVE_RAY_RESERVED"):
        r = replace(r, reserved=parse_ray_reserved(v))
    if v := env.get("TENANTSERVE_RAY_DEDICATED"):
        r = replace(r, dedicated=parse_ray_counts(v, "POOL"))
    if v := env.get("TENANTSERVE_RAY_ADAPTER_DIR"):
        r = replace(r, adapter_dir=v)
    return replace(s, ray=r)


def _metering_from_env(env: Mapping[str, str]) -> MeteringConfig:
    m = MeteringConfig()
    if v := env.get("TENANTSERVE_NATS_URL"):
        m = replace(m, nats_url=v)
    if v := env.get("TENANTSERVE_NATS_STREAM"):
        m = replace(m, stream=v)
    if v := env.get("TENANTSERVE_OUTBOX_SYNCHRONOUS"):
        m = replace(m, outbox_synchronous=v.upper())
    if v := env.get("TENANTSERVE_METERING_IN_PROCESS"):
        m = replace(m, run_pipeline=_bool(v, "METERING_IN_PROCESS"))
    return m


def _observability_from_env(env: Mapping[str, str]) -> ObservabilityConfig:
    o = ObservabilityConfig()
    if v := env.get("TENANTSERVE_METRICS_TOP_K"):
        o = replace(o, metrics_top_k=_int(v, "METRICS_TOP_K"))
    if v := env.get("TENANTSERVE_METRICS_PORT"):
        o = replace(o, metrics_port=_int(v, "METRICS_PORT"))
    if v := env.get("PROMETHEUS_MULTIPROC_DIR"):
        o = replace(o, multiproc_dir=Path(v))
    if v := env.get("TENANTSERVE_OTLP_ENDPOINT"):
        o = replace(o, otlp_endpoint=v)
    if v := env.get("TENANTSERVE_LOG_FORMAT"):
        o = replace(o, log_format=v.lower())
    return o


def _records_from_env(env: Mapping[str, str]) -> RequestRecordsConfig:
    r = RequestRecordsConfig()
    if v := env.get("TENANTSERVE_REQUEST_RETENTION_DAYS"):
        r = replace(r, retention_days=_float(v, "REQUEST_RETENTION_DAYS"))
    if v := env.get("TENANTSERVE_LOG_CONTENT_MAX_CHARS"):
        r = replace(r, max_content_chars=_int(v, "LOG_CONTENT_MAX_CHARS"))
    if v := env.get("TENANTSERVE_SLO_EVALUATE_EVERY_S"):
        r = replace(r, slo_evaluate_every_s=_float(v, "SLO_EVALUATE_EVERY_S"))
    return r


def _float(value: str, name: str) -> float:
    try:
        return float(value)
    except ValueError as e:
        raise ConfigError(f"TENANTSERVE_{name} must be a number, got {value!r}") from e


def _billing_from_env(env: Mapping[str, str]) -> BillingConfig:
    return BillingConfig(
        stripe_api_key=env.get("TENANTSERVE_STRIPE_API_KEY") or None,
        stripe_api_base=env.get("TENANTSERVE_STRIPE_API_BASE") or None,
    )


def _bool(value: str, name: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"TENANTSERVE_{name} must be true or false, got {value!r}")


def _artifacts_from_env(env: Mapping[str, str]) -> ArtifactStoreConfig:
    return ArtifactStoreConfig(
        kind=env.get("TENANTSERVE_ARTIFACT_STORE") or "local",
        s3_endpoint_url=env.get("TENANTSERVE_S3_ENDPOINT_URL") or None,
        s3_bucket=env.get("TENANTSERVE_S3_BUCKET") or None,
        s3_region=env.get("TENANTSERVE_S3_REGION") or None,
        s3_access_key_id=env.get("TENANTSERVE_S3_ACCESS_KEY_ID") or None,
        s3_secret_access_key=env.get("TENANTSERVE_S3_SECRET_ACCESS_KEY") or None,
    )


def _auth_from_env(auth: AuthConfig, env: Mapping[str, str]) -> AuthConfig:
    if v := env.get("TENANTSERVE_API_KEY_PEPPER"):
        auth = replace(auth, api_key_pepper=v)
    jwt = auth.jwt
    if v := env.get("TENANTSERVE_JWT_AUDIENCE"):
        jwt = replace(jwt, audience=v)
    if v := env.get("TENANTSERVE_JWT_ISSUER"):
        jwt = replace(jwt, issuer=v)
    if v := env.get("TENANTSERVE_JWT_HS256_SECRET"):
        jwt = replace(jwt, hs256_secret=v)
    if v := env.get("TENANTSERVE_JWT_PUBLIC_KEY_FILE"):
        jwt = replace(jwt, rs256_public_key_file=Path(v))
    if v := env.get("TENANTSERVE_JWT_JWKS_FILE"):
        jwt = replace(jwt, jwks_file=Path(v))
    return replace(auth, jwt=jwt)


def _region(value: str) -> Region:
    try:
        return Region(value)
    except ValueError:
        choices = ", ".join(r.value for r in Region)
        raise ConfigError(f"TENANTSERVE_REGION must be one of {choices}, got {value!r}") from None


def _int(value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError as e:
        raise ConfigError(f"TENANTSERVE_{name} must be an integer, got {value!r}") from e
