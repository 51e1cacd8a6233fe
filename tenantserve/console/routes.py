"""`ConsoleRoutes`: the web console's pages and static files under `/console`.

The pages are server-rendered shells (Jinja2: the layout, the navigation of the
signed-in role, the page's forms and empty tables); every piece of tenant data is
fetched by the page's script from the same JSON API a client would call, with the
credential the person signed in with (`static/js/api.js`). So the console can never show
more than the API gives that credential: the isolation rules of `/v1/...` and the admin
token of `/admin/...` are the console's rules, tested once, and every operator read the
console makes is audited like any other.

    GET /console                      the sign-in page
    GET /console/signin               API key, JWT or admin token (kept in the tab's
                                      sessionStorage, sent as `Authorization: Bearer`)
    GET /console/<tenant page>        `TENANT_PAGES`
    GET /console/admin/<page>         `ADMIN_PAGES`
    GET /console/static/...           CSS, the page scripts, vendored Chart.js

Pages carry a strict Content-Security-Policy (scripts and connections to this origin
only, no inline script, no framing) and are never cached.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from tenantserve import __version__

HERE = Path(__file__).parent
PREFIX = "/console"

SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


@dataclass(frozen=True)
class Page:
    """One console page: its path under `/console` (may hold `{id}`), its title in the
    navigation, its template and its script under `static/js/pages/`."""

    path: str
    title: str
    template: str
    script: str
    # Shown in the navigation (detail pages are reached from a list, not the menu).
    in_nav: bool = True


TENANT_PAGES = (
    Page("/overview", "Overview", "tenant/overview.html", "overview.js"),
    Page("/keys", "API keys", "tenant/keys.html", "keys.js"),
    Page("/adapters", "Adapters", "tenant/adapters.html", "adapters.js"),
    Page("/requests", "Requests", "tenant/requests.html", "requests.js"),
    Page("/requests/{id}", "Request", "tenant/request.html", "request.js", in_nav=False),
    Page("/invoices", "Invoices", "tenant/invoices.html", "invoices.js"),
)

ADMIN_PAGES = (
    Page("/admin/tenants", "Tenants", "admin/tenants.html", "admin_tenants.js"),
    Page("/admin/tenants/{id}", "Tenant", "admin/tenant.html", "admin_tenant.js", in_nav=False),
    Page("/admin/pools", "Pools", "admin/pools.html", "admin_pools.js"),
    Page("/admin/models", "Models", "admin/models.html", "admin_models.js"),
    Page("/admin/rollouts", "Rollouts", "admin/rollouts.html", "admin_rollouts.js"),
    Page("/admin/alerts", "Alerts", "admin/alerts.html", "admin_alerts.js"),
    Page("/admin/audit", "Audit log", "admin/audit.html", "admin_audit.js"),
)


class ConsoleRoutes:
    """Installs the console's pages and static files on the app."""

    def __init__(self) -> None:
        self.templates = Jinja2Templates(directory=HERE / "templates")

    def install(self, app: FastAPI) -> None:
        """Add `/console...` to `app`."""
        app.mount(f"{PREFIX}/static", StaticFiles(directory=HERE / "static"), name="console")
        signin = Page("/signin", "Sign in", "signin.html", "signin.js", in_nav=False)
        for root in (PREFIX, f"{PREFIX}/"):  # the sign-in page, at the console's own address
            app.add_api_route(
                root, self._renderer(signin, "public"), methods=["GET"], include_in_schema=False
            )
        for role, pages in (
            ("public", (signin,)),
            ("tenant", TENANT_PAGES),
            ("admin", ADMIN_PAGES),
        ):
            for page in pages:
                app.add_api_route(
                    PREFIX + page.path,
                    self._renderer(page, role),
                    methods=["GET"],
                    include_in_schema=False,
                )

    def _renderer(self, page: Page, role: str) -> Callable[[Request], Awaitable[HTMLResponse]]:
        nav = {"tenant": TENANT_PAGES, "admin": ADMIN_PAGES}.get(role, ())

        async def render(request: Request) -> HTMLResponse:
            context = {
                "page": page,
                "role": role,
                "nav": [p for p in nav if p.in_nav],
                "prefix": PREFIX,
                "path_id": request.path_params.get("id", ""),
                "version": __version__,
            }
            response = self.templates.TemplateResponse(request, page.template, context)
            response.headers.update(SECURITY_HEADERS)
            return response

        return render
