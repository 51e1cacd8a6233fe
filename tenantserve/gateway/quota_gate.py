"""`QuotaGate`: a request's quotas at admission, and its charge at the end.

check(ctx, decision, prompt_tokens)   the tenant's usage this day / month (the quota
                                      ledger) → 429 quota_exceeded for a spent hard
                                      quota; max_tokens clamped by token quotas;
                                      operator events: `quota_threshold_reached` at
                                      each alert share, `soft_quota_exceeded`
                                      (each once per tenant, quota and period)
charge(tenant, prompt, completion)    the finished request counted in the ledger
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime

from tenantserve.admission.policy import Admitted
from tenantserve.admission.quota_ledger import QuotaLedger
from tenantserve.admission.quotas import (
    QuotaExceeded,
    SoftAlertFilter,
    check_quotas,
    threshold_alerts,
)
from tenantserve.gateway.errors import api_error_from_quota
from tenantserve.gateway.events import EventLog
from tenantserve.tenancy.model import TenantContext

logger = logging.getLogger(__name__)


class QuotaGate:
    def __init__(self, ledger: QuotaLedger, events: EventLog) -> None:
        self.ledger = ledger
        self.events = events
        self._alerts = SoftAlertFilter()

    async def check(
        self, ctx: TenantContext, decision: Admitted, num_prompt_tokens: int
    ) -> Admitted:
        """The decision with max_tokens clamped by the tenant's quotas; ApiError 429 when
        a hard one is spent."""
        now = datetime.now(UTC)
        used = await self.ledger.usage(ctx.tenant_id, ctx.quotas, now)
        for reached in threshold_alerts(ctx.quotas, used, now):
            if self._alerts.first_time(ctx.tenant_id, reached):
                details = {
                    **reached.quota.to_dict(),
                    "share": reached.share,
                    "used": reached.used,
                    "period_key": reached.period_key,
                }
                self.events.append("quota_threshold_reached", ctx.tenant_id, details)
        checked = check_quotas(ctx.quotas, used, num_prompt_tokens, decision.max_tokens, now)
        if isinstance(checked, QuotaExceeded):
            raise api_error_from_quota(checked)
        for alert in checked.alerts:
            if self._alerts.first_time(ctx.tenant_id, alert):
                details = {
                    **alert.quota.to_dict(),
                    "used": alert.used,
                    "period_key": alert.period_key,
                    "max_tokens": checked.max_tokens,
                }
                self.events.append("soft_quota_exceeded", ctx.tenant_id, details)
        return replace(decision, max_tokens=checked.max_tokens)

    async def charge(self, tenant_id: str, prompt_tokens: int, completion_tokens: int) -> None:
        """Count a request that ran against the tenant's quota periods."""
        if prompt_tokens == 0 and completion_tokens == 0:
            return  # never ran (refused or failed at start)
        try:
            await self.ledger.record(
                tenant_id,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                now=datetime.now(UTC),
            )
        except Exception:  # ledgers swallow store failures; this guards against bugs
            logger.exception("quota ledger record failed for %s", tenant_id)
