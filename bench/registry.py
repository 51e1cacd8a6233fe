"""Registry benchmark: model + adapter name resolution on the request path, and adapter
upload -> ready time.

    .venv/bin/python bench/registry.py [--postgres] [--lookups 20000] [--rate 1000]

1. Lookups, per database (SQLite in a fresh data dir; with --postgres also a fresh
   PostgreSQL database, created and dropped): the tiny Llama registered as
   `tiny-llama@1.0.0` and served by a stand-in engine pool (a real `EnginePool` whose
   engine is never called), 100 tenants and 2,000 ready adapters (20 per tenant). The
   adapter rows are inserted through the registry's unit of work (status ready) and all
   share one small stored artifact (rank-8 q/v): the lookup path reads the row and the
   adapter's local copy, never the weights, so the upload path is not needed to fill it.
   Timed: `Dispatcher.resolve(ctx, name)`, the request path's entry (static catalog
   check, then `ModelResolver.resolve`), one lookup at a time:
     catalog name           the static catalog (no registry read)
     pinned, cold / warm    `tiny-llama@1.0.0` per tenant: first lookup, then cached
     adapter, cold          first lookup of each of the 2,000 adapters: the row, and the
                            adapter's files pulled to this node (first use)
     adapter, warm          20,000 lookups over the 2,000, all cached
     after invalidation     a real `AdapterService.delete` (which forgets its own name), then
                            a full `invalidate` (what lifecycle changes and rollouts do),
                            then the first lookup of each of the 2,000 again: the row,
                            the local copy checked, no pull
     mix                   --lookups lookups paced at --rate per second with the
                            production TTL (2 s): 50% catalog name, 45% adapters
                            (Zipf-popular over the 2,000, by their own tenant), 5% pinned;
                            the hit ratio is what that TTL gives at that rate
   The cache's size with every adapter and pinned name cached (a deep getsizeof that
   skips the shared tokenizer). A cProfile of the after-invalidation lookups goes to
   bench/results/registry-profile-<db>.txt.
2. Upload -> ready (SQLite): `AdapterService.upload` of a rank-16 all-linear and a rank-8
   q/v adapter on the tiny Llama and on SmolLM2-135M, each smoke-tested by a real engine
   (`AsyncEngineClient` on CPU); 3 runs each, median. Phases timed from outside by
   wrapping the service's steps: receive (`_receive`), base pull/verify
   (`ArtifactCache.pull`), check (the rest of `_check`), record (`_record`), store
   (`put_dir`), smoke (`SmokeTester.run`), finish (`_finish`); "other" is the rest
   (the name check, temporary directories).

Writes bench/results/registry.json and prints markdown tables; progress on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import pstats
import random
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import fields, is_dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sqlalchemy.engine import make_url  # noqa: E402
from sqlalchemy.ext.asyncio import create_async_engine  # noqa: E402

from tenantserve.admission import LocalRateLimiter  # noqa: E402
from tenantserve.admission.policy import PolicyConfig  # noqa: E402
from tenantserve.bootstrap import Tenancy, open_tenancy  # noqa: E402
from tenantserve.config import Settings  # noqa: E402
from tenantserve.engine.client import AsyncEngineClient  # noqa: E402
from tenantserve.engine.config import CacheConfig, EngineConfig  # noqa: E402
from tenantserve.engine.models.convert import ensure_default_model  # noqa: E402
from tenantserve.engine.tokenizer import Tokenizer  # noqa: E402
from tenantserve.gateway.catalog import SHARED_POOL  # noqa: E402
from tenantserve.gateway.dispatch import Dispatcher  # noqa: E402
from tenantserve.gateway.pools import EnginePool, build_catalog  # noqa: E402
from tenantserve.gateway.resolver import DEFAULT_TTL_S, ModelResolver  # noqa: E402
from tenantserve.pool_setup import load_served_model  # noqa: E402
from tenantserve.registry.adapter_service import AdapterService, UploadPart  # noqa: E402
from tenantserve.registry.adapter_smoke import (  # noqa: E402
    EngineSmokeTester,
    SmokeReport,
)
from tenantserve.registry.adapters import (  # noqa: E402
    Adapter,
    AdapterStatus,
    adapter_key,
    new_adapter_id,
)
from tenantserve.registry.artifact_cache import ArtifactCache  # noqa: E402
from tenantserve.registry.artifacts import hash_source, scan_source  # noqa: E402
from tenantserve.registry.default_model import register_default_model  # noqa: E402
from tenantserve.registry.model import manifest_digest  # noqa: E402
from tenantserve.registry.service import utc_now  # noqa: E402
from tenantserve.registry.unit_of_work import RegistryUnitOfWork  # noqa: E402
from tenantserve.tenancy.model import Region, TenantContext  # noqa: E402
from tenantserve.tiers import Tier  # noqa: E402
from tests.helpers.lora import set_adapter_config, write_random_adapter  # noqa: E402
from tests.helpers.models import write_tiny_llama  # noqa: E402

POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
RESULTS = REPO / "bench" / "results"
TINY = "tiny-llama"
NUM_TENANTS = 100
NUM_ADAPTERS = 2000
UPLOAD_RUNS = 3
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
# (label, rank, targets) of the uploaded adapters.
UPLOADS = (("rank-16 all-linear", 16, "all-linear"), ("rank-8 q/v", 8, ("q_proj", "v_proj")))
PHASES = ("receive", "base pull", "check", "record", "store", "smoke", "finish", "other")


def log(msg: str) -> None:
    print(f"[registry] {msg}", file=sys.stderr, flush=True)


def stats_ms(xs: Sequence[float]) -> dict[str, float]:
    ms = sorted(x * 1e3 for x in xs)
    q = statistics.quantiles(ms, n=1000, method="inclusive") if len(ms) > 1 else ms * 999
    return {"n": len(ms), "p50": q[499], "p99": q[989], "max": ms[-1]}


# -- 1. lookups ---------------------------------------------------------------------------


def ctx_of(tenant: str) -> TenantContext:
    return TenantContext(tenant_id=tenant, tier=Tier.STANDARD, region=Region.US, key_id="k")


async def insert_adapters(tenancy: Tenancy, data_dir: Path, tiny_dir: Path, base: str) -> list:
    """NUM_ADAPTERS ready rows over NUM_TENANTS tenants, sharing one stored artifact;
    returns [(tenant, name)]."""
    shared = write_random_adapter(tiny_dir, data_dir / "shared-adapter", 8, ["q_proj", "v_proj"], 1)
    manifest = tuple(hash_source(scan_source(shared)))
    digest = manifest_digest(manifest)
    store = tenancy.registry.store
    key = adapter_key("bench-shared", "shared", digest)
    await store.put_dir(key, scan_source(shared))
    now = utc_now()
    names = []
    async with RegistryUnitOfWork(tenancy.db.sessionmaker) as uow:
        for i in range(NUM_ADAPTERS):
            tenant, name = f"tnt_bench{i % NUM_TENANTS:03d}", f"adapter-{i // NUM_TENANTS:03d}"
            adapter = Adapter(
                id=new_adapter_id(),
                tenant_id=tenant,
                name=name,
                base_model=base,
                rank=8,
                target_modules=("q_proj", "v_proj"),
                digest=digest,
                artifact_uri=store.uri(key),
                files=manifest,
                status=AdapterStatus.READY,
                created_at=now,
            )
            await uow.adapters.add(adapter)
            names.append((tenant, name))
        await uow.commit()
    return names


async def timed_lookups(
    dispatcher: Dispatcher, calls: Sequence[tuple[str, str]], expect_found: bool | None = True
) -> list[float]:
    out = []
    for tenant, name in calls:
        ctx = ctx_of(tenant)
        t0 = time.perf_counter()
        found = await dispatcher.resolve(ctx, name, "req_bench")
        out.append(time.perf_counter() - t0)
        if expect_found is not None:
            assert (found is not None) == expect_found, (tenant, name, found)
    return out


def deep_size(obj: Any, seen: set[int] | None = None) -> int:
    """Bytes reachable from `obj`, each object once; the shared tokenizer, classes and enum
    members are not counted (not the cache's own)."""
    seen = set() if seen is None else seen
    if id(obj) in seen or isinstance(obj, (Tokenizer, type, Enum)):
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        size += sum(deep_size(k, seen) + deep_size(v, seen) for k, v in obj.items())
    elif isinstance(obj, (list, tuple, set, frozenset)):
        size += sum(deep_size(x, seen) for x in obj)
    elif is_dataclass(obj):
        size += sum(deep_size(getattr(obj, f.name), seen) for f in fields(obj))
        if hasattr(obj, "__dict__"):
            size += sys.getsizeof(obj.__dict__)
    return size


async def create_pg_database() -> str:
    name = f"tenantserve_bench_{secrets.token_hex(6)}"
    await pg_admin(f'CREATE DATABASE "{name}"')
    return make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)


async def pg_admin(statement: str) -> None:
    engine = create_async_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.exec_driver_sql(statement)
    finally:
        await engine.dispose()


async def lookups(db: str, tmp: Path, tiny_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    data_dir = tmp / f"lookups-{db}"
    url = await create_pg_database() if db == "postgresql" else None
    tenancy = await open_tenancy(Settings(data_dir=data_dir, database_url=url))
    try:
        return await _lookups(db, tenancy, data_dir, tiny_dir, args)
    finally:
        await tenancy.db.dispose()
        if url is not None:
            await pg_admin(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')


async def _lookups(
    db: str, tenancy: Tenancy, data_dir: Path, tiny_dir: Path, args: argparse.Namespace
) -> dict[str, Any]:
    version = await register_default_model(tenancy.registry, tiny_dir, name=TINY)
    log(f"{db}: inserting {NUM_ADAPTERS} adapters")
    adapter_names = await insert_adapters(tenancy, data_dir, tiny_dir, version.ref)
    # Never started: resolution reads the pool's name, region and model only.
    engine: Any = object()
    pool = EnginePool(SHARED_POOL, engine, load_served_model(tiny_dir), region=Region.US)
    resolver = ModelResolver(tenancy.registry, ttl_s=1e9)  # no expiry while measuring
    adapters = AdapterService(
        lambda: RegistryUnitOfWork(tenancy.db.sessionmaker),
        tenancy.registry,
        ArtifactCache(tenancy.registry.store, data_dir / "cache"),
        EngineSmokeTester(lambda ref: None),
        data_dir / "adapters",
        max_adapter_bytes=256 << 20,
        max_lora_rank=16,
        on_change=resolver.forget,
    )
    resolver.adapters = adapters
    resolver.bind(version.ref, pool)
    dispatcher = Dispatcher([pool], build_catalog([pool]), LocalRateLimiter(), PolicyConfig())
    dispatcher.resolver = resolver
    tenants = [f"tnt_bench{i:03d}" for i in range(NUM_TENANTS)]
    rng = random.Random(0)
    catalog_name = pool.model.name
    assert catalog_name == TINY
    cases: dict[str, dict[str, float]] = {}

    log(f"{db}: catalog and pinned names")
    calls = [(rng.choice(tenants), catalog_name) for _ in range(args.lookups)]
    await timed_lookups(dispatcher, calls[:500], None)
    cases["catalog name"] = stats_ms(await timed_lookups(dispatcher, calls, None))
    pinned = [(t, version.ref) for t in tenants]
    cases["pinned version, cold"] = stats_ms(await timed_lookups(dispatcher, pinned))
    calls = [(rng.choice(tenants), version.ref) for _ in range(args.lookups)]
    cases["pinned version, warm"] = stats_ms(await timed_lookups(dispatcher, calls))

    log(f"{db}: adapters cold (first use: row + pull to this node)")
    order = rng.sample(adapter_names, len(adapter_names))
    cases["adapter, cold (first use: row + pull)"] = stats_ms(
        await timed_lookups(dispatcher, order)
    )
    calls = [rng.choice(adapter_names) for _ in range(args.lookups)]
    cases["adapter, warm (cached)"] = stats_ms(await timed_lookups(dispatcher, calls))
    cache_bytes = deep_size(resolver._cache)
    cache_entries = len(resolver._cache)

    log(f"{db}: invalidation (a real delete), then first lookups again")
    extra = await insert_adapters_one(tenancy, adapters, data_dir, tiny_dir, version.ref)
    await adapters.delete(ctx_of(extra[0]), extra[1])
    assert (extra[0], extra[1]) not in resolver._cache, "delete did not forget its name"
    resolver.invalidate()  # what a lifecycle change or a rollout step does: everything
    order = rng.sample(adapter_names, len(adapter_names))
    cases["adapter, after invalidation (row + local check)"] = stats_ms(
        await timed_lookups(dispatcher, order)
    )
    # Where a miss's time goes: the same lookups again, under cProfile.
    resolver.invalidate()
    profiler = cProfile.Profile()
    profiler.enable()
    await timed_lookups(dispatcher, order)
    profiler.disable()
    buf = io.StringIO()
    pstats.Stats(profiler, stream=buf).sort_stats("cumulative").print_stats(40)
    pstats.Stats(profiler, stream=buf).sort_stats("tottime").print_stats(25)
    RESULTS.mkdir(parents=True, exist_ok=True)
    profile_path = RESULTS / f"registry-profile-{db}.txt"
    profile_path.write_text(buf.getvalue())

    log(f"{db}: mix, {args.lookups} lookups at {args.rate:g}/s, TTL {DEFAULT_TTL_S:g} s")
    resolver.ttl_s = DEFAULT_TTL_S
    resolver.invalidate()
    mix = await run_mix(dispatcher, resolver, adapter_names, tenants, version.ref, args, rng)
    cases.update(mix.pop("cases"))
    return {
        "cases": cases,
        "cache_entries": cache_entries,
        "cache_bytes": cache_bytes,
        "mix": mix,
        "profile": str(profile_path.relative_to(REPO)),
    }


async def insert_adapters_one(
    tenancy: Tenancy, adapters: AdapterService, data_dir: Path, tiny_dir: Path, base: str
) -> tuple[str, str]:
    """One more ready adapter with an artifact of its own (a delete removes its files)."""
    src = write_random_adapter(tiny_dir, data_dir / "extra-adapter", 8, ["q_proj"], 2)
    manifest = tuple(hash_source(scan_source(src)))
    digest = manifest_digest(manifest)
    tenant, name = "tnt_bench000", "to-delete"
    key = adapter_key(tenant, name, digest)
    await adapters.store.put_dir(key, scan_source(src))
    adapter = Adapter(
        id=new_adapter_id(),
        tenant_id=tenant,
        name=name,
        base_model=base,
        rank=8,
        target_modules=("q_proj",),
        digest=digest,
        artifact_uri=adapters.store.uri(key),
        files=manifest,
        status=AdapterStatus.READY,
        created_at=utc_now(),
    )
    async with RegistryUnitOfWork(tenancy.db.sessionmaker) as uow:
        await uow.adapters.add(adapter)
        await uow.commit()
    return tenant, name


async def run_mix(
    dispatcher: Dispatcher,
    resolver: ModelResolver,
    adapter_names: list[tuple[str, str]],
    tenants: list[str],
    pinned: str,
    args: argparse.Namespace,
    rng: random.Random,
) -> dict[str, Any]:
    popular = rng.sample(adapter_names, len(adapter_names))  # popularity rank -> adapter
    weights = [1.0 / (k + 1) for k in range(len(popular))]  # Zipf, s = 1
    calls: list[tuple[str, str, str]] = []
    for _ in range(args.lookups):
        u = rng.random()
        if u < 0.5:
            calls.append(("catalog", rng.choice(tenants), TINY))
        elif u < 0.95:
            calls.append(("adapter", *rng.choices(popular, weights)[0]))
        else:
            calls.append(("pinned", rng.choice(tenants), pinned))
    by_kind: dict[str, list[float]] = {"catalog": [], "adapter": [], "pinned": []}
    hits = misses = 0
    start = time.perf_counter()
    for i, (kind, tenant, name) in enumerate(calls):
        delay = start + i / args.rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if kind != "catalog":
            entry = resolver._cache.get((tenant, name))
            if entry is not None and time.monotonic() - entry[0] < resolver.ttl_s:
                hits += 1
            else:
                misses += 1
        ctx = ctx_of(tenant)
        t0 = time.perf_counter()
        await dispatcher.resolve(ctx, name, "req_bench")
        by_kind[kind].append(time.perf_counter() - t0)
    wall = time.perf_counter() - start
    every = [x for xs in by_kind.values() for x in xs]
    return {
        "cases": {
            f"mix: all ({args.rate:g}/s, TTL {DEFAULT_TTL_S:g} s)": stats_ms(every),
            "mix: adapter names only": stats_ms(by_kind["adapter"]),
            "mix: pinned names only": stats_ms(by_kind["pinned"]),
        },
        "registry_lookups": hits + misses,
        "cache_hit_ratio": hits / max(1, hits + misses),
        "achieved_rate": len(calls) / wall,
    }


# -- 2. upload -> ready -------------------------------------------------------------------


class TimedSmoke(EngineSmokeTester):
    def __init__(self, engine_for: Callable[[str], Any], phases: dict[str, float]) -> None:
        super().__init__(engine_for)
        self.phases = phases

    async def run(self, adapter_dir: Path, base_model_dir: Path, base_model: str) -> SmokeReport:
        t0 = time.perf_counter()
        try:
            return await super().run(adapter_dir, base_model_dir, base_model)
        finally:
            self.phases["smoke"] += time.perf_counter() - t0


def wrap_async(phases: dict[str, float], key: str, fn: Callable[..., Awaitable[Any]]) -> Any:
    async def wrapped(*a: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return await fn(*a, **kw)
        finally:
            phases[key] += time.perf_counter() - t0

    return wrapped


def wrap_sync(phases: dict[str, float], key: str, fn: Callable[..., Any]) -> Any:
    def wrapped(*a: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            phases[key] += time.perf_counter() - t0

    return wrapped


async def uploads(tmp: Path, tiny_dir: Path, smollm2_dir: Path) -> list[dict[str, Any]]:
    data_dir = tmp / "uploads"
    tenancy = await open_tenancy(Settings(data_dir=data_dir))
    rows = []
    try:
        for label, model_dir, name in (
            ("tiny Llama (2 layers, d=64)", tiny_dir, TINY),
            ("SmolLM2-135M", smollm2_dir, "smollm2-135m-instruct"),
        ):
            rows += await _uploads(tenancy, data_dir, label, model_dir, name)
    finally:
        await tenancy.db.dispose()
    return rows


async def _uploads(
    tenancy: Tenancy, data_dir: Path, model_label: str, model_dir: Path, name: str
) -> list[dict[str, Any]]:
    log(f"upload: registering {model_label}")
    version = await register_default_model(tenancy.registry, model_dir, name=name)
    phases = dict.fromkeys(PHASES, 0.0)
    cache = ArtifactCache(tenancy.registry.store, data_dir / "cache")
    t0 = time.perf_counter()
    await cache.pull(version)
    first_pull_s = time.perf_counter() - t0
    config = EngineConfig(
        model_dir=model_dir, cache=replace(CacheConfig(), kv_cache_bytes=64 << 20)
    )
    rows = []
    async with AsyncEngineClient(config) as engine:
        service = AdapterService(
            lambda: RegistryUnitOfWork(tenancy.db.sessionmaker),
            tenancy.registry,
            cache,
            TimedSmoke(lambda ref: engine if ref == version.ref else None, phases),
            data_dir / "adapters",
            max_adapter_bytes=256 << 20,
            max_lora_rank=16,
        )
        # Phase timers around the service's steps (instance attributes shadow the methods).
        service._receive = wrap_sync(phases, "receive", service._receive)  # type: ignore[method-assign]
        service._check = wrap_async(phases, "check", service._check)  # type: ignore[method-assign]
        service._record = wrap_async(phases, "record", service._record)  # type: ignore[method-assign]
        service._finish = wrap_async(phases, "finish", service._finish)  # type: ignore[method-assign]
        cache.pull = wrap_async(phases, "base pull", cache.pull)  # type: ignore[method-assign]
        store = cache.store
        store.put_dir = wrap_async(phases, "store", store.put_dir)  # type: ignore[method-assign]
        try:
            ctx = ctx_of("tnt_upload")
            for label, rank, targets in UPLOADS:
                src = write_random_adapter(
                    model_dir, data_dir / f"src-{name}-{rank}", rank, targets, seed=rank, b_std=1.0
                )
                set_adapter_config(src, base_model_name_or_path=version.ref)
                size = sum((src / f).stat().st_size for f in ADAPTER_FILES)
                runs = []
                for run in range(UPLOAD_RUNS + 1):  # the first is a warm-up
                    for k in phases:
                        phases[k] = 0.0
                    handles = [(src / f).open("rb") for f in ADAPTER_FILES]
                    parts = [
                        UploadPart(f, f, h) for f, h in zip(ADAPTER_FILES, handles, strict=True)
                    ]
                    t0 = time.perf_counter()
                    try:
                        adapter = await service.upload(ctx, f"{name}-r{rank}-{run}", parts)
                    finally:
                        for h in handles:
                            h.close()
                    total = time.perf_counter() - t0
                    assert adapter.status is AdapterStatus.READY, adapter.report
                    measured = dict(phases)
                    measured["check"] -= measured["base pull"]  # the pull runs inside _check
                    measured["other"] = total - sum(measured[k] for k in PHASES if k != "other")
                    measured["total"] = total
                    if run > 0:
                        runs.append(measured)
                    log(f"upload: {model_label} {label} run {run}: {total * 1e3:.0f} ms")
                rows.append(
                    {
                        "model": model_label,
                        "adapter": label,
                        "size_bytes": size,
                        "first_base_pull_s": first_pull_s,
                        "median_ms": {
                            k: statistics.median(r[k] for r in runs) * 1e3
                            for k in (*PHASES, "total")
                        },
                        "runs_ms": [r["total"] * 1e3 for r in runs],
                    }
                )
        finally:
            del store.put_dir  # the registry's store, shared with later registrations
    return rows


# -- main ---------------------------------------------------------------------------------


def print_tables(results: dict[str, Any]) -> None:
    for db, r in results["lookups"].items():
        print(f"\n### Lookups, {db} ({NUM_ADAPTERS} adapters, {NUM_TENANTS} tenants); ms\n")
        print("| case | n | p50 | p99 | max |")
        print("|---|---:|---:|---:|---:|")
        for case, s in r["cases"].items():
            print(f"| {case} | {s['n']:,} | {s['p50']:.4f} | {s['p99']:.4f} | {s['max']:.3f} |")
        mix = r["mix"]
        print(
            f"\nmix: {mix['registry_lookups']:,} registry-resolved lookups, cache hit ratio "
            f"{mix['cache_hit_ratio']:.1%}, {mix['achieved_rate']:,.0f} lookups/s achieved; "
            f"cache: {r['cache_entries']:,} entries, {r['cache_bytes'] / 1e6:.2f} MB "
            f"({r['cache_bytes'] / max(1, r['cache_entries']):,.0f} B/entry)"
        )
    if results.get("uploads"):
        print("\n### Upload -> ready (SQLite, CPU engine; median of 3; ms)\n")
        print("| model | adapter | size MB | " + " | ".join(PHASES) + " | total |")
        print("|---|---|---:|" + "---:|" * (len(PHASES) + 1))
        for row in results["uploads"]:
            m = row["median_ms"]
            print(
                f"| {row['model']} | {row['adapter']} | {row['size_bytes'] / 1e6:.1f} | "
                + " | ".join(f"{m[k]:.0f}" for k in PHASES)
                + f" | **{m['total']:.0f}** |"
            )
        for row in results["uploads"][::2]:
            print(
                f"\nfirst upload on {row['model']}: base pulled into the artifact cache in "
                f"{row['first_base_pull_s'] * 1e3:,.0f} ms (once per node; not in the table)"
            )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", action="store_true", help=f"also {POSTGRES_URL}")
    parser.add_argument("--lookups", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=1000.0, help="mix lookups per second")
    parser.add_argument("--skip-uploads", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS / "registry.json")
    args = parser.parse_args()

    smollm2_dir = ensure_default_model(REPO / ".tenantserve")
    results: dict[str, Any] = {"lookups": {}, "uploads": []}
    with tempfile.TemporaryDirectory(prefix="tenantserve-bench-registry-") as tmp_name:
        tmp = Path(tmp_name)
        tiny_dir = write_tiny_llama(tmp / TINY, smollm2_dir)
        for db in ("sqlite", "postgresql") if args.postgres else ("sqlite",):
            results["lookups"][db] = await lookups(db, tmp, tiny_dir, args)
        if not args.skip_uploads:
            results["uploads"] = await uploads(tmp, tiny_dir, smollm2_dir)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print_tables(results)


if __name__ == "__main__":
    asyncio.run(main())
