"""The plugin contract. Built-ins (auth, ...) are plugins on this same API.

A plugin is a class; the gateway creates one instance per worker with the `options` from config
as keyword arguments, and calls the hooks it overrides (hooks it leaves alone cost nothing).
Every rule below has its own test in tests/test_plugins.py or tests/test_runner.py.

Which requests
    ``kinds`` (class attribute, default ``{"chat"}``) names the request kinds whose hooks the
    plugin gets: ``"chat"`` (POST /v1/chat/completions, and POST /v1/messages translated to the
    same canonical request; ``ctx.dialect`` tells them apart), ``"embeddings"``, ``"models"``
    (GET /v1/models, an empty body). ``ctx.kind`` and ``request.kind`` say which one is running.

``on_headers(ctx, headers)``
    Before a byte of the request body is read, in configured order: refuse a request on its
    headers alone (raise GatewayError), e.g. authentication. Return None.

``pre_request(ctx, request)``
    After the body is parsed and validated, in configured order. ``ctx.plan`` already says where
    the request will go (None for an unknown model; the 404 comes after these hooks, so an
    unauthenticated caller learns nothing). Return None to go on unchanged, a ChatRequest to
    replace the request, or a ChatResponse / raise GatewayError to short-circuit: the upstream
    is not called and no later pre_request hook runs. A plugin may also change
    ``request.body`` in place; once any plugin that is not ``read_only`` has run this hook, the
    body is serialized again. If a hook changes ``request.model`` the plan is made again.

``post_response(ctx, result)``
    After the upstream answered (or failed, or a plugin short-circuited), in REVERSE configured
    order, and only for plugins whose pre_request stage was reached (a short-circuiting plugin's
    own post_response runs). ``result`` is a ChatResponse or a GatewayError; return None to keep
    it, or a replacement (a ChatResponse can turn an error into an answer and vice versa). For a
    streamed answer it runs after the stream ended with a summary (``result.streamed`` is True,
    ``result.usage``, ``result.finish_reason``, and ``result.text`` — what the client received,
    after every on_chunk hook — if ``ctx.collect_text`` was set); the stream cannot be changed
    then.

``on_chunk(ctx, chunk)``
    For each streamed OpenAI ``chat.completion.chunk`` dict, in configured order, synchronously,
    only for plugins whose pre_request stage was reached. Return the chunk (possibly changed in
    place), a new chunk, a list of chunks (none, one or several: hold text back, split, merge)
    or None to drop it. Later plugins see what earlier ones returned. Whatever a plugin holds
    back it releases in ``on_stream_end``.

``on_stream_end(ctx)``
    When the upstream stream ended, in configured order: return the chunks still held (a list,
    or None). They pass through the later plugins' on_chunk, then those plugins' on_stream_end
    run. Not called when the stream failed (what was held is then dropped, never half-sent).

``on_finish(ctx, outcome)``
    Exactly once for every request of a kind the plugin handles that reached the gateway, in
    REVERSE configured order, whatever happened: success, upstream error, short-circuit, a
    plugin crash, a client that disconnected before or during a stream, a stream cut, a 4xx
    from the parse step (bad JSON, 413, 415), a refusal in on_headers. ``outcome`` (an
    ``llmgw.exchange.Outcome``) has the final status, usage (estimated for a cut or cancelled
    stream, and flagged so), the attempts with their timings, and the gateway's overhead. The
    response has already been sent: nothing here can change it, and a failure here is logged and
    counted, never shown to the client. Cancellation never skips it. May be async; keep it
    short (queue slow work: ``services.queue``).

``startup(services)`` / ``shutdown()``
    ``startup`` once per worker when the plugin is first loaded, with the app-scoped
    ``llmgw.services.Services`` (stores, the rate limiter, background queues and tasks, route
    registration), which lives as long as the worker. ``shutdown`` when the plugin is unloaded:
    a reload that drops or changes its config entry, or the worker stopping (SIGTERM, Ctrl-C);
    plugins shut down in reverse order, after their requests in flight finished, and their
    queues are flushed before the process exits. A reload keeps a plugin whose config entry is
    unchanged (same instance, same state); a changed entry gets a new instance, which may carry
    state over with ``services.keep(name, factory)``. If a plugin's startup fails during a
    reload, the plugins started for the new config are shut down again and the old
    configuration keeps serving.

``read_only`` (class attribute, default False)
    True promises that the plugin never changes the request body or a chunk (it may still read
    them, refuse, short-circuit, set ``ctx`` fields or response headers). The gateway then keeps
    its fast path: the client's request bytes go upstream untouched, a streamed answer is
    forwarded byte for byte (on_chunk still sees each chunk, and what it returns is ignored),
    and a read-only plugin's post_response that returns None does not force re-serialization.

Hooks may be plain or ``async`` functions, except ``on_chunk`` and ``on_stream_end``, which run
per chunk and must be plain. A hook that raises GatewayError answers that error. One that raises
anything else is a crash, handled by the plugin entry's ``on_error``: ``closed`` (the default)
fails the request with a 500 naming the plugin (in a stream already under way: an error event in
the client's format, then the end of the stream); ``open`` logs it, counts it
(``llmgw.plugins.chain.PLUGIN_ERRORS``) and goes on as if the hook had returned None (a chunk
passes unchanged). Either way the gateway keeps serving.
Plugins are named in the config's ``plugins`` list as ``module:Class``, or by an entry-point
name in the ``llmgw.plugins`` group of an installed package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Awaitable, ClassVar

if TYPE_CHECKING:
    from llmgw.errors import GatewayError
    from llmgw.exchange import ChatRequest, ChatResponse, Outcome, RequestContext
    from llmgw.services import Services

__all__ = ["Plugin"]

Chunk = dict[str, Any]


class Plugin:
    """Base class for gateway plugins: override the hooks you need (see the module docstring)."""

    #: Shown in errors and logs; defaults to the class name.
    name: str = ""
    #: Request kinds whose hooks this plugin gets.
    kinds: ClassVar[frozenset[str]] = frozenset({"chat"})
    #: Never changes the request body or a chunk: keeps the byte-passthrough fast path.
    read_only: ClassVar[bool] = False

    def __init__(self, **options: Any) -> None:
        self.options = options

    def startup(self, services: Services) -> None | Awaitable[None]:
        return None

    def shutdown(self) -> None | Awaitable[None]:
        return None

    def on_headers(self, ctx: RequestContext, headers: dict[str, str]) -> None | Awaitable[None]:
        return None

    def pre_request(
        self, ctx: RequestContext, request: ChatRequest
    ) -> ChatRequest | ChatResponse | None | Awaitable[ChatRequest | ChatResponse | None]:
        return None

    def post_response(
        self, ctx: RequestContext, result: ChatResponse | GatewayError
    ) -> ChatResponse | GatewayError | None | Awaitable[ChatResponse | GatewayError | None]:
        return None

    def on_chunk(self, ctx: RequestContext, chunk: Chunk) -> Chunk | list[Chunk] | None:
        return chunk

    def on_stream_end(self, ctx: RequestContext) -> list[Chunk] | None:
        return None

    def on_finish(self, ctx: RequestContext, outcome: Outcome) -> None | Awaitable[None]:
        return None
