"""What `tenantserve up` shows and starts once the server is ready: the banner (the served
models and their base URL, the admin token line, with `--demo` the demo tenants' ids and
API keys, and a curl to try) and, with `--demo`, traffic as each demo tenant.
"""

from __future__ import annotations

import json
import shlex
import threading
from typing import TYPE_CHECKING

from tenantserve.config import Settings

if TYPE_CHECKING:
    from tenantserve.bootstrap import Service
    from tenantserve.cli.demo import DemoTenant


def admin_token_line(settings: Settings, token: str, created: bool) -> str:
    """What `up` says about the admin token: the token itself only when just created."""
    from tenantserve.bootstrap import ADMIN_TOKEN_FILE

    path = settings.data_dir / ADMIN_TOKEN_FILE
    if created:
        return f"admin token (new; kept in {path}, mode 0600): {token}"
    if settings.admin_token:
        return "admin token: the value of TENANTSERVE_ADMIN_TOKEN"
    return f"admin token: in {path}"


def print_banner(service: Service, admin_line: str, demos: list[DemoTenant]) -> None:
    """Print what is served where, the admin token line, the demo tenants and a curl to try."""
    settings = service.settings
    model_name = next(iter(_served_models(service)), "")
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    base = f"http://{host}:{settings.port}"
    # max_tokens bounds the answer: without it a sampled reply may run to the tier's cap.
    body = json.dumps(
        {
            "model": model_name,
            "messages": [{"role": "user", "content": "Say hello in French."}],
            "max_tokens": 64,
        }
    )
    served = ", ".join(_served_models(service))
    lines = [f"\ntenantserve is serving {served} at {base}/v1", "", admin_line, ""]
    if demos:
        lines += _demo_table(settings, demos)
    standard = next((d for d in demos if d.name == "demo-standard"), None)
    if standard is not None:
        auth = shlex.quote(f"Authorization: Bearer {standard.api_key}")
    else:
        lines += [
            "make a tenant and a key (or run `tenantserve up --demo`):",
            "  tenantserve tenant create --name NAME --tier standard --region us",
            "  tenantserve key create --tenant <its id>; export API_KEY=<the key>",
            "",
        ]
        auth = '"Authorization: Bearer $API_KEY"'
    lines += [
        "try it:",
        f"  curl {base}/v1/chat/completions -H 'Content-Type: application/json' \\",
        f"    -H {auth} \\",
        f"    -d {shlex.quote(body)}",
        "",
    ]
    print("\n".join(lines), flush=True)


def start_demo_traffic(service: Service, demos: list[DemoTenant], admin_token: str) -> None:
    """Requests as each demo tenant, then their usage and draft invoices, once serving."""
    from tenantserve.cli.demo_traffic import run_demo_traffic

    models = _served_models(service)
    if not models:
        return
    settings = service.settings
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    base = f"http://{host}:{settings.port}"
    threading.Thread(
        target=run_demo_traffic,
        args=(base, models[0], demos, admin_token),
        name="demo-traffic",
        daemon=True,
    ).start()


def _served_models(service: Service) -> list[str]:
    from tenantserve.gateway.pools import EnginePool

    names: list[str] = []
    for pool in service.pools:
        models = [pool.model] if isinstance(pool, EnginePool) else pool.models
        names += [m.name for m in models if m.name not in names]
    return names


def _demo_table(settings: Settings, demos: list[DemoTenant]) -> list[str]:
    from tenantserve.cli.demo import DEMO_KEYS_FILE, DEMO_REGION

    rows = [("name", "tier", "tenant id", "API key")]
    rows += [(d.name, d.tier, d.tenant_id, d.api_key) for d in demos]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return [
        f"demo tenants (region {DEMO_REGION}; keys kept in {settings.data_dir / DEMO_KEYS_FILE}):",
        *(
            "  " + "  ".join([*(c.ljust(w) for c, w in zip(row, widths, strict=False)), row[3]])
            for row in rows
        ),
        "",
    ]
