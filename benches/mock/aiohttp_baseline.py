"""The best Python-side alternative to the mock's hand-written server: aiohttp.web on uvloop.

It renders answers with the mock's own OpenAI wire code, so a side-by-side run compares only the
HTTP stacks. Serves POST /v1/chat/completions (streaming or not), no auth, no faults.
"""

from __future__ import annotations

import argparse
import time

import orjson
import uvloop
from aiohttp import web
from llmgw.mock.answers import compose_answer
from llmgw.mock.openai_wire import OpenAIWire, read_chat_turn
from llmgw.mock.options import MockOptions

WIRE = OpenAIWire()


async def chat(request: web.Request) -> web.StreamResponse:
    body = orjson.loads(await request.read())
    options = MockOptions().with_overrides(request.headers)  # type: ignore[arg-type]
    answer = compose_answer(read_chat_turn(body), options)
    created = int(time.time())
    if not body.get("stream"):
        payload = WIRE.chat_completion("chatcmpl-baseline", created, body["model"], answer)
        return web.Response(body=orjson.dumps(payload), content_type="application/json")
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    reply = WIRE.chat_stream("chatcmpl-baseline", created, body["model"], answer, options.chunk_words,
                             include_usage)
    response = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await response.prepare(request)
    for frame in reply.prelude + reply.chunks + reply.epilogue:
        await response.write(frame)
    await response.write_eof()
    return response


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None, loop=uvloop.new_event_loop())


if __name__ == "__main__":
    main()
