"""An example llmgw plugin: refuses clients outside a set of networks before their request body is
read. Hook: on_headers (and `kinds`, to guard every endpoint, plugin routes included).

    plugins:
      - target: plugins.ip_allowlist:IpAllowlist
        options: {networks: ["127.0.0.0/8", "10.0.0.0/8"]}
"""

from __future__ import annotations

import ipaddress
from typing import Any

from llmgw.errors import GatewayError
from llmgw.plugins import Plugin


class IpAllowlist(Plugin):
    name = "ip-allowlist"
    kinds = frozenset({"chat", "embeddings", "models", "route"})
    read_only = True

    def __init__(self, networks: list[str], **options: Any) -> None:
        super().__init__(**options)
        self.networks = [ipaddress.ip_network(n) for n in networks]

    def on_headers(self, ctx, headers):
        host = ctx.client.rsplit(":", 1)[0].strip("[]")
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            address = None
        if address is None or not any(address in net for net in self.networks):
            raise GatewayError(403, "Your network may not use this gateway.", type="permission_error",
                               code="network_not_allowed")
