"""Ways to run the mock: blocking from the CLI, or in a background thread for tests."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import signal
import threading
from concurrent.futures import Future
from typing import Any, Coroutine, TypeVar

from llmgw.mock.options import MockOptions, add_arguments, options_from_args
from llmgw.mock.server import MockServer

T = TypeVar("T")


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # uvloop is not available on Windows; asyncio's loop works too
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run(args: argparse.Namespace) -> None:
    """Serve until SIGINT/SIGTERM. ``args`` comes from a parser given :func:`add_arguments`."""
    options = options_from_args(args)
    loop = _new_loop()
    try:
        loop.run_until_complete(_serve_forever(options, args.host, args.port))
    finally:
        loop.close()


async def _serve_forever(options: MockOptions, host: str, port: int) -> None:
    server = MockServer(options)
    bound = await server.start(host, port)
    print(f"listening on http://{host}:{bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await server.stop()


class MockUpstream:
    """The mock in a background thread with its own event loop, as a context manager.

    ``MockUpstream(**options)`` takes any :class:`~llmgw.mock.options.MockOptions` field
    (``latency_ms=50``, ``status=429``, ``require_auth=False``, ...) plus ``host`` (default
    127.0.0.1) and ``port`` (default 0: a free port)::

        with MockUpstream(tokens_per_s=200) as mock:
            client = openai.OpenAI(base_url=mock.url + "/v1", api_key="k")
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, **options: Any) -> None:
        self.options = MockOptions(**options)
        self.host = host
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: MockServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:PORT`` (append /v1 for OpenAI SDKs)."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> MockUpstream:
        """Start the server thread; returns once the socket is listening."""
        if self._thread is not None:
            raise RuntimeError("MockUpstream already started")
        started: Future[int] = Future()
        self._loop = _new_loop()
        self._server = MockServer(self.options)
        self._thread = threading.Thread(target=self._run_loop, args=(started,), name="llmgw-mock",
                                        daemon=True)
        self._thread.start()
        try:
            self.port = started.result(timeout=10)
        except BaseException:
            self._thread.join(timeout=10)
            self._thread = None
            raise
        return self

    def _run_loop(self, started: Future[int]) -> None:
        loop = self._loop
        assert loop is not None and self._server is not None
        asyncio.set_event_loop(loop)
        try:
            port = loop.run_until_complete(self._server.start(self.host, self.port))
        except BaseException as exc:  # report bind errors to start()
            started.set_exception(exc)
            loop.close()
            return
        started.set_result(port)
        try:
            loop.run_forever()
            loop.run_until_complete(self._server.stop())
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()

    def stop(self) -> None:
        """Stop the server, close every connection and join the thread."""
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._thread = None
        self._loop = None

    def __enter__(self) -> MockUpstream:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            coro.close()
            raise RuntimeError("MockUpstream is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    def stats(self) -> dict[str, Any]:
        """Same as GET /_mock/stats."""
        return self._call(self._on_loop(lambda app: app.stats()))

    def last_request(self) -> dict[str, Any] | None:
        """Same as GET /_mock/last-request (None before the first request)."""
        return self._call(self._on_loop(lambda app: app.last))

    def reset(self) -> None:
        """Same as POST /_mock/reset."""
        self._call(self._on_loop(lambda app: app.reset()))

    def set_options(self, **changes: Any) -> None:
        """Change the defaults of the running mock (e.g. make it start failing)."""
        def apply(app: Any) -> None:
            app.options = dataclasses.replace(app.options, **changes)
        self._call(self._on_loop(apply))
        self.options = dataclasses.replace(self.options, **changes)

    async def _on_loop(self, action: Any) -> Any:
        assert self._server is not None
        return action(self._server.app)


def main(argv: list[str] | None = None) -> None:
    """``python -m llmgw.mock --port 9000``."""
    parser = argparse.ArgumentParser(prog="llmgw mock-upstream",
                                     description="Fake OpenAI/Azure/Anthropic/Gemini upstream for tests and benchmarks.")
    add_arguments(parser)
    run(parser.parse_args(argv))
