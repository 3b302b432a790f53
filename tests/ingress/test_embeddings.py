"""POST /v1/embeddings through the official openai SDK: OpenAI passthrough, Azure, Gemini
(batchEmbedContents), base64 and float encodings, errors, and providers without embeddings."""

from __future__ import annotations

import json
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import httpx
import openai
import pytest

KEY = "emb-upstream-secret-11223"


class GeminiEmbedStub:
    """A tiny Gemini `batchEmbedContents` server (the mock upstream has no Gemini embeddings):
    vector i of a request is [i + 0.5, -(i + 0.25), len(text)] truncated to outputDimensionality."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                stub.requests.append({"path": self.path, "key": self.headers.get("x-goog-api-key"), "body": body})
                if self.headers.get("x-goog-api-key") != KEY:
                    self._answer(400, {"error": {"code": 400, "message": "API key not valid. Please pass a valid "
                                                 "API key.", "status": "INVALID_ARGUMENT"}})
                    return
                vectors = []
                for i, req in enumerate(body["requests"]):
                    text = req["content"]["parts"][0]["text"]
                    vec = [i + 0.5, -(i + 0.25), float(len(text))]
                    vectors.append({"values": vec[: req.get("outputDimensionality", 3)]})
                self._answer(200, {"embeddings": vectors})

            def _answer(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> GeminiEmbedStub:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def gemini_stub() -> Iterator[GeminiEmbedStub]:
    with GeminiEmbedStub() as stub:
        yield stub


@pytest.fixture(scope="module")
def gw(mock_upstream, gemini_stub, tmp_path_factory):
    from support import running_gateway

    config = f"""
upstreams:
  oai: {{provider: openai, base_url: '{mock_upstream.url}/v1', api_key: {KEY}}}
  oai_429: {{provider: openai, base_url: '{mock_upstream.url}/v1', api_key: {KEY},
             headers: {{x-mock-status: '429', x-mock-retry-after: '2'}}}}
  az: {{provider: azure, base_url: '{mock_upstream.url}', api_key: {KEY},
        options: {{api_version: '2024-10-21', deployment: emb-deploy}}}}
  gem: {{provider: gemini, base_url: '{gemini_stub.url}/v1beta', api_key: {KEY}}}
  gem_badkey: {{provider: gemini, base_url: '{gemini_stub.url}/v1beta', api_key: wrong-gemini-key-777}}
  tgi: {{provider: tgi, base_url: '{mock_upstream.url}/v1'}}
models:
  oai-emb: {{upstream: oai, model: text-embedding-3-small}}
  oai-throttled: {{upstream: oai_429, model: text-embedding-3-small}}
  az-emb: {{upstream: az, model: text-embedding-3-small}}
  gem-emb: {{upstream: gem, model: text-embedding-004}}
  gem-badkey: {{upstream: gem_badkey, model: text-embedding-004}}
  tgi-chat: {{upstream: tgi, model: tgi}}
"""
    with running_gateway(tmp_path_factory.mktemp("emb"), config) as proc:
        yield proc


@pytest.fixture
def client(gw) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key="client-key", max_retries=0)


def test_openai_passthrough_default_base64(client, mock_upstream) -> None:
    out = client.embeddings.create(model="oai-emb", input=["hello", "world"], dimensions=8)
    assert [len(d.embedding) for d in out.data] == [8, 8] and out.model == "oai-emb"
    assert out.usage.prompt_tokens > 0
    sent = httpx.get(f"{mock_upstream.url}/_mock/last-request").json()
    assert sent["path"] == "/v1/embeddings" and sent["body"]["model"] == "text-embedding-3-small"
    assert sent["body"]["encoding_format"] == "base64"  # the SDK's default, passed through


def test_azure_embeddings(client, mock_upstream) -> None:
    out = client.embeddings.create(model="az-emb", input="hello", encoding_format="float", dimensions=4)
    assert len(out.data[0].embedding) == 4
    sent = httpx.get(f"{mock_upstream.url}/_mock/last-request").json()
    assert sent["path"] == "/openai/deployments/emb-deploy/embeddings" and sent["headers"]["api-key"] == KEY


def test_gemini_batch_embed_as_float_and_base64(client, gemini_stub) -> None:
    out = client.embeddings.create(model="gem-emb", input=["ab", "xyz"], encoding_format="float")
    assert [d.embedding for d in out.data] == [[0.5, -0.25, 2.0], [1.5, -1.25, 3.0]]
    assert [d.index for d in out.data] == [0, 1] and out.model == "gem-emb"
    req = gemini_stub.requests[-1]
    assert req["path"] == "/v1beta/models/text-embedding-004:batchEmbedContents" and req["key"] == KEY
    assert req["body"]["requests"][1] == {"model": "models/text-embedding-004",
                                          "content": {"parts": [{"text": "xyz"}]}}
    # The SDK asks for base64 by default and decodes it: the gateway packs Gemini's floats itself.
    out = client.embeddings.create(model="gem-emb", input="abcd", dimensions=2)
    assert out.data[0].embedding == [0.5, -0.25]
    assert gemini_stub.requests[-1]["body"]["requests"][0]["outputDimensionality"] == 2


def test_gemini_base64_bytes_are_little_endian_float32(gw) -> None:
    r = httpx.post(f"{gw.base_url}/embeddings", json={"model": "gem-emb", "input": "q", "encoding_format": "base64"})
    import base64

    raw = base64.b64decode(r.json()["data"][0]["embedding"])
    assert struct.unpack("<3f", raw) == (0.5, -0.25, 1.0)


def test_provider_without_embeddings_is_a_400_naming_the_model(client) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.embeddings.create(model="tgi-chat", input="x")
    assert "tgi-chat" in exc.value.message and exc.value.code == "embeddings_not_supported"


def test_unknown_model_is_404(client) -> None:
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="nope", input="x")


def test_invalid_input_is_400(gw) -> None:
    r = httpx.post(f"{gw.base_url}/embeddings", json={"model": "oai-emb", "input": []})
    assert r.status_code == 400 and r.json()["error"]["param"] == "input"


def test_upstream_errors_are_classified(client) -> None:
    with pytest.raises(openai.RateLimitError) as exc:
        client.embeddings.create(model="oai-throttled", input="x")
    assert exc.value.response.headers["retry-after"] == "2"
    with pytest.raises(openai.APIStatusError) as exc2:
        client.embeddings.create(model="gem-badkey", input="x")
    assert exc2.value.status_code == 502 and "wrong-gemini-key" not in exc2.value.response.text


def test_configured_client_keys_are_enforced(mock_upstream, start_gateway) -> None:
    gw = start_gateway(f"""
upstreams:
  oai: {{provider: openai, base_url: '{mock_upstream.url}/v1', api_key: {KEY}}}
models:
  e: {{upstream: oai, model: text-embedding-3-small}}
  other: {{upstream: oai, model: text-embedding-3-small}}
auth:
  keys: [{{name: alice, key: alice-key-0123456789, models: [e]}}]
""")
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=gw.base_url, api_key="wrong-key-00000000", max_retries=0).embeddings.create(
            model="e", input="x")
    alice = openai.OpenAI(base_url=gw.base_url, api_key="alice-key-0123456789", max_retries=0)
    assert len(alice.embeddings.create(model="e", input="x").data) == 1
    with pytest.raises(openai.PermissionDeniedError):
        alice.embeddings.create(model="other", input="x")
