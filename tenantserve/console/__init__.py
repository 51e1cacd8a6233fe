"""The web console: pages for tenants (usage, spend, quotas, latency, keys, adapters,
requests, invoices) and operators (tenants, pools, models, rollouts, alerts, audit),
served by the gateway under `/console`; see `routes.py`."""
