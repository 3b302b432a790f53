"""The gateway's configuration: one YAML file validated into typed, frozen objects at start.

Errors name the file, the line, the key path and the fix (`ConfigError`); every problem in the
file is reported in one pass. Secrets come only from environment variables written as `${NAME}`
(or `${NAME:-default}`), never from requests. `core` holds the top level (server, upstreams,
plugins, auth), `models` the model groups, `reader` the YAML reading they share.
"""

from llmgw.config.core import (
    AuthKey,
    Config,
    PluginSpec,
    ProviderCatalog,
    ServerConfig,
    UpstreamConfig,
    load_config,
    parse_config,
)
from llmgw.config.governance import Budget, GovernanceConfig, Limits
from llmgw.config.models import (
    Breaker,
    Complexity,
    Deployment,
    Fallback,
    Hedge,
    ModelGroup,
    Price,
    Retries,
    Rule,
    Shadow,
)
from llmgw.config.reader import ConfigError

__all__ = [
    "AuthKey",
    "Budget",
    "GovernanceConfig",
    "Limits",
    "Breaker",
    "Complexity",
    "Config",
    "ConfigError",
    "Deployment",
    "Fallback",
    "Hedge",
    "ModelGroup",
    "PluginSpec",
    "Price",
    "ProviderCatalog",
    "Retries",
    "Rule",
    "ServerConfig",
    "Shadow",
    "UpstreamConfig",
    "load_config",
    "parse_config",
]
