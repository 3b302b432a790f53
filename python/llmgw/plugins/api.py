"""The plugin contract. Built-ins (auth, ...) are plugins on this same API.

A plugin is a class; the gateway creates one instance per worker with the `options` from config
as keyword arguments, and calls the hooks it overrides (hooks it leaves alone cost nothing):

``pre_request(ctx, request)``
    Before the upstream call, in the configured order. Return None to go on unchanged, a
    ChatRequest to replace the request, or a ChatResponse / raise GatewayError to short-circuit:
    the upstream is not called and no later pre_request hook runs. A plugin may also change
    ``request.body`` in place; once any pre_request hook has run, the body is serialized again.

``post_response(ctx, result)``
    After the upstream answered (or failed, or a plugin short-circuited), in REVERSE configured
    order, and only for plugins whose pre_request ran (a short-circuiting plugin's own
    post_response runs). ``result`` is a ChatResponse or a GatewayError; return None to keep it,
    or a replacement (a ChatResponse can turn an error into an answer and vice versa). For a
    streamed answer it runs after the stream ended with a summary (``result.streamed`` is True,
    ``result.usage``, ``result.finish_reason``, and ``result.text`` if ``ctx.collect_text`` was
    set in pre_request); what was streamed cannot be changed then.

``on_chunk(ctx, chunk)``
    For each streamed OpenAI ``chat.completion.chunk`` dict, in configured order, synchronously.
    Return the chunk (possibly changed in place), a new chunk, or None to drop it (later
    plugins do not see a dropped chunk). Only for plugins whose pre_request ran.

``startup(gateway)`` / ``shutdown()``
    Once per worker, when the gateway's configuration is loaded / unloaded (also on reload).

Hooks may be plain or ``async`` functions (``on_chunk`` must be plain: it runs per chunk). A hook
that raises anything but GatewayError fails the request with a 500 naming the plugin; the
gateway keeps serving. Plugins live in ``module:Class`` form in the config's ``plugins`` list, or
are installed packages exposing the class in the ``llmgw.plugins`` entry-point group and named
in the config by their entry-point name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Awaitable

if TYPE_CHECKING:
    from llmgw.errors import GatewayError
    from llmgw.exchange import ChatRequest, ChatResponse, RequestContext

__all__ = ["Plugin"]


class Plugin:
    """Base class for gateway plugins: override the hooks you need (see the module docstring)."""

    #: Shown in errors and logs; defaults to the class name.
    name: str = ""

    def __init__(self, **options: Any) -> None:
        self.options = options

    def startup(self, gateway: Any) -> None | Awaitable[None]:
        return None

    def shutdown(self) -> None | Awaitable[None]:
        return None

    def pre_request(
        self, ctx: RequestContext, request: ChatRequest
    ) -> ChatRequest | ChatResponse | None | Awaitable[ChatRequest | ChatResponse | None]:
        return None

    def post_response(
        self, ctx: RequestContext, result: ChatResponse | GatewayError
    ) -> ChatResponse | GatewayError | None | Awaitable[ChatResponse | GatewayError | None]:
        return None

    def on_chunk(self, ctx: RequestContext, chunk: dict[str, Any]) -> dict[str, Any] | None:
        return chunk
