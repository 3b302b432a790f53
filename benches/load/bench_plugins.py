"""Plugins the load benchmarks put in the request path (loaded from benches/load on PYTHONPATH)."""

from llmgw.plugins import Plugin


class NoOpFinish(Plugin):
    """An on_finish hook that does nothing: the price of the finish seam itself (the Outcome is
    built and the hook called for every request)."""

    kinds = frozenset({"chat", "embeddings", "models"})
    read_only = True

    def on_finish(self, ctx, outcome):
        return None


class NoOpPre(Plugin):
    """A read-only pre_request hook that does nothing (the price of one more plugin in the chain)."""

    read_only = True

    def pre_request(self, ctx, request):
        return None


class NoOpAll(Plugin):
    """Every hook the governance plugin has, doing nothing: what the plugin seams cost a request
    (the governance benchmark's floor)."""

    kinds = frozenset({"chat", "embeddings", "models"})
    read_only = True

    async def on_headers(self, ctx, headers):
        return None

    async def pre_request(self, ctx, request):
        return None

    def post_response(self, ctx, result):
        return None

    def on_finish(self, ctx, outcome):
        return None
