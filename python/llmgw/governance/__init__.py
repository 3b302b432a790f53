"""Governance: virtual keys, rate limits, budgets, costs, the ledger and spend reports.

Loaded by the gateway when the config has a `governance:` section; see `plugin` for the request
path, `counters` for where limits and budgets are counted, `stores` for keys and the ledger,
`admin` for the admin API and `pricing` for what a request costs.
"""

from llmgw.governance.plugin import Governance

__all__ = ["Governance"]
