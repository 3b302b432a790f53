"""Plugins: the extension API (`Plugin`, see api.py for the contract) and the built-ins."""

from llmgw.plugins.api import Plugin

__all__ = ["Plugin"]
