"""Observability pieces in process: the config section (and the standard OTEL_* / LANGFUSE_*
variables), W3C traceparent parsing and sampling, the metrics store's aggregation over workers
and its exposition (parsed with prometheus-client's own parser), the access log's two formats.
End-to-end behaviour through real gateway processes is in test_observability_e2e.py."""

from __future__ import annotations

import os
import pty

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from llmgw.config import ConfigError, parse_config
from llmgw.observability.accesslog import AccessLog, json_fields, text_line
from llmgw.observability.metrics import MetricsStore, merge, render
from llmgw.observability.plugin import redact_value
from llmgw.observability.record import AttemptRecord, FinishRecord
from llmgw.tracecontext import TraceContext, parse_traceparent
from llmgw.providers import registry

BASE = """
upstreams:
  up: {provider: openai, base_url: "http://127.0.0.1:9/v1"}
models:
  m: {upstream: up}
"""


def config(extra: str = "", env: dict[str, str] | None = None):
    return parse_config(BASE + extra, providers=registry, env=env or {})


# --- config ---------------------------------------------------------------------------------------

def test_defaults_metrics_and_access_log_on_tracing_and_langfuse_off():
    obs = config().observability
    assert obs.metrics.enabled and obs.metrics.path == "/metrics" and obs.metrics.port is None
    assert obs.access_log.format == "auto" and obs.access_log.bodies == "none"
    assert obs.tracing is None and obs.langfuse is None and obs.bodies == "none"


def test_standard_otel_variables_turn_tracing_on():
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/", "OTEL_SERVICE_NAME": "edge-gw",
           "OTEL_EXPORTER_OTLP_HEADERS": "Authorization=Bearer%20tok,x-tenant=a", "OTEL_TRACES_SAMPLER": "traceidratio",
           "OTEL_TRACES_SAMPLER_ARG": "0.25"}
    t = config(env=env).observability.tracing
    assert t is not None and t.endpoint == "http://collector:4318/v1/traces" and t.from_env
    assert t.service_name == "edge-gw" and t.sample_ratio == 0.25
    assert t.headers == {"authorization": "Bearer tok", "x-tenant": "a"}
    assert config(env={**env, "OTEL_SDK_DISABLED": "true"}).observability.tracing is None
    # the file wins over the environment
    t2 = config("observability: {tracing: {endpoint: 'http://other:4318/v1/traces', sample_ratio: 1}}\n", env).observability.tracing
    assert t2 is not None and t2.endpoint == "http://other:4318/v1/traces" and t2.sample_ratio == 1.0


def test_the_other_standard_otel_variables_resource_compression_timeout_and_samplers():
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
           "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "2500", "OTEL_EXPORTER_OTLP_TIMEOUT": "9000",
           "OTEL_RESOURCE_ATTRIBUTES": "service.name=from-resource,deployment.environment=prod%20eu,team=ml"}
    t = config(env=env).observability.tracing
    assert t is not None and t.compression == "gzip" and t.timeout == 2.5
    assert t.service_name == "from-resource"  # OTEL_SERVICE_NAME would win; it is not set here
    assert t.resource_attributes == {"deployment.environment": "prod eu", "team": "ml"}
    assert config(env={**env, "OTEL_SERVICE_NAME": "svc"}).observability.tracing.service_name == "svc"
    t = config("observability: {tracing: {compression: none, resource_attributes: {team: infra}}}\n", env)
    assert t.observability.tracing.compression is None and t.observability.tracing.resource_attributes["team"] == "infra"
    off = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_SAMPLER": "parentbased_always_off"}
    assert config(env=off).observability.tracing.sample_ratio == 0.0
    with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_COMPRESSION=.deflate. is not supported"):
        config(env={**env, "OTEL_EXPORTER_OTLP_COMPRESSION": "deflate"})


def test_config_errors_name_the_key_and_the_fix():
    with pytest.raises(ConfigError) as e:
        config("observability:\n  tracing: {}\n  langfuse: {bodies: all, environment: Prod}\n"
               "  metrics: {path: metrics}\n  access_log: {format: xml}\n")
    text = str(e.value)
    assert "observability.tracing.endpoint: missing" in text and "OTEL_EXPORTER_OTLP_ENDPOINT" in text
    assert "observability.langfuse.public_key: missing" in text and "LANGFUSE_PUBLIC_KEY" in text
    assert "observability.langfuse.bodies" in text and "observability.langfuse.environment" in text
    assert "observability.metrics.path" in text and "observability.access_log.format" in text


def test_langfuse_keys_default_to_the_standard_variables_and_bodies_decide_what_is_collected():
    env = {"LANGFUSE_PUBLIC_KEY": "pk-lf-1", "LANGFUSE_SECRET_KEY": "sk-lf-secret", "LANGFUSE_HOST": "http://lf:3000"}
    obs = config("observability: {langfuse: {}}\n", env).observability
    assert obs.langfuse is not None and obs.langfuse.host == "http://lf:3000" and obs.langfuse.public_key == "pk-lf-1"
    assert obs.bodies == "redacted" and "sk-lf-secret" not in repr(obs)
    obs = config("observability: {langfuse: {bodies: none}, access_log: {bodies: full}}\n", env).observability
    assert obs.bodies == "full"
    assert config("observability: {langfuse: {bodies: full}, access_log: false}\n", env).observability.access_log.format == "off"


# --- trace context --------------------------------------------------------------------------------

TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.mark.parametrize("value", [
    "", "garbage", "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01", "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", TP + "-extra", "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
])
def test_invalid_traceparents_are_ignored(value):
    assert parse_traceparent(value) is None


def test_a_client_traceparent_makes_the_gateway_a_child_span_and_its_flag_decides():
    trace_id, parent, sampled = parse_traceparent(TP)  # type: ignore[misc]
    assert trace_id.hex() == "4bf92f3577b34da6a3ce929d0e0e4736" and parent.hex() == "00f067aa0ba902b7" and sampled
    ctx = TraceContext.from_headers({"traceparent": TP, "tracestate": "vendor=1"}, ratio=0.0)
    assert ctx.trace_id == trace_id and ctx.parent_span_id == parent and ctx.sampled
    [(name, value), state] = ctx.upstream_headers(b"\x01" * 8)
    assert name == "traceparent" and value == f"00-{trace_id.hex()}-{'01' * 8}-01" and state == ("tracestate", "vendor=1")
    unsampled = TraceContext.from_headers({"traceparent": TP[:-2] + "00"}, ratio=1.0)
    assert not unsampled.sampled and unsampled.upstream_headers(b"\x02" * 8)[0][1].endswith("-00")
    # a future version with more fields is accepted
    assert parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-abc") is not None


def test_a_tracestate_that_is_not_printable_ascii_is_not_passed_on():
    ctx = TraceContext.from_headers({"traceparent": TP, "tracestate": "a=b\u00e9"}, ratio=1.0)
    assert ctx.tracestate is None and len(ctx.upstream_headers(b"\x01" * 8)) == 1


def test_text_lines_do_not_pass_control_characters_to_the_terminal():
    line = text_line(record(model="evil\x1b[2J\x07"))
    assert "\x1b" not in line and "\x07" not in line and "evil?[2J?" in line


def test_new_traces_are_sampled_by_ratio():
    kept = sum(TraceContext.from_headers({}, 0.3).sampled for _ in range(4000))
    assert 1000 < kept < 1400
    assert not any(TraceContext.from_headers({}, 0.0).sampled for _ in range(200))
    assert all(TraceContext.from_headers({}, 1.0).sampled for _ in range(200))


# --- metrics --------------------------------------------------------------------------------------

def families(text: bytes) -> dict[str, list]:
    return {f.name: f.samples for f in text_string_to_metric_families(text.decode())}


def value(fams: dict, name: str, sample: str, **labels: str) -> float:
    found = [s.value for s in fams[name] if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, (sample, labels, fams[name])
    return found[0]


def test_histograms_are_cumulative_and_counters_sum_over_workers():
    a, b = MetricsStore(), MetricsStore()
    for v in (0.0004, 0.003, 0.003, 7.0, 1000.0):
        a.observe("llmgw_request_duration_seconds", ("/v1/chat/completions", "m"), v)
    b.observe("llmgw_request_duration_seconds", ("/v1/chat/completions", "m"), 0.003)
    a.inc("llmgw_requests_total", ("/v1/chat/completions", "m", "d", "200"), 5)
    b.inc("llmgw_requests_total", ("/v1/chat/completions", "m", "d", "200"), 1)
    b.inc("llmgw_requests_total", ("/v1/chat/completions", "m", "d", "429"), 2)
    fams = families(render(merge([a.snapshot(), orjson.loads(orjson.dumps(b.snapshot()))])))
    h = "llmgw_request_duration_seconds"
    assert value(fams, h, h + "_bucket", le="0.0005") == 1
    assert value(fams, h, h + "_bucket", le="0.005") == 4
    assert value(fams, h, h + "_bucket", le="10.0") == 5
    assert value(fams, h, h + "_bucket", le="+Inf") == 6 == value(fams, h, h + "_count")
    assert value(fams, h, h + "_sum") == pytest.approx(1007.0094)
    r = "llmgw_requests"
    assert value(fams, r, r + "_total", status="200") == 6 and value(fams, r, r + "_total", status="429") == 2
    assert value(fams, "llmgw_workers", "llmgw_workers") == 2


def test_a_replacement_worker_starts_from_the_counts_of_the_one_it_replaces(tmp_path):
    old = MetricsStore()
    old.inc("llmgw_requests_total", ("/v1/chat/completions", "m", "d", "200"), 41)
    old.publish(str(tmp_path), 3)
    new = MetricsStore()
    new.adopt(str(tmp_path), 3)
    new.inc("llmgw_requests_total", ("/v1/chat/completions", "m", "d", "200"))
    fams = families(new.scrape(None, 3))
    assert value(fams, "llmgw_requests", "llmgw_requests_total", status="200") == 42


def test_label_values_are_escaped_in_the_exposition():
    s = MetricsStore()
    s.inc("llmgw_errors_total", ('/v1/"x"\n', "code\\y"))
    fams = families(s.scrape(None, 0))
    assert value(fams, "llmgw_errors", "llmgw_errors_total", code="code\\y") == 1


# --- access log and bodies ------------------------------------------------------------------------

def record(**kw) -> FinishRecord:
    base = dict(request_id="req-1", start_ns=1_700_000_000_000_000_000, end_ns=1_700_000_000_250_000_000,
                duration_s=0.25, ttfb_s=0.05, upstream_s=0.24, overhead_s=0.0004, kind="chat", dialect="openai",
                method="POST", path="/v1/chat/completions", status=200, result="ok", model="gpt-4o", group="gpt-4o",
                deployment="east", provider="openai", key_id="k_1", key_name="alice", team="research",
                prompt_tokens=12, completion_tokens=30, cost_usd=0.00031, stream=True)
    base.update(kw)
    return FinishRecord(**base)  # type: ignore[arg-type]


def test_json_line_has_the_fields_and_no_empty_values():
    r = record(attempts=[AttemptRecord("west", "w", "openai", "gpt-4o", 0, 10_000_000, 503, "upstream_unavailable",
                                       "retryable"),
                         AttemptRecord("east", "e", "openai", "gpt-4o", 10_000_000, 250_000_000, 200, via="fallback")])
    line = json_fields(r)
    assert line["request_id"] == "req-1" and line["key_id"] == "k_1" and line["team"] == "research"
    assert line["latency_ms"] == 250.0 and line["ttft_ms"] == 50.0 and line["cost_usd"] == 0.00031
    assert line["attempts"] == 2 and line["attempt_list"][0]["error"] == "upstream_unavailable"
    assert line["ts"].startswith("2023-11-14T22:13:20.000")
    assert "user" not in line and "input" not in line and "cache" not in line


def test_text_line_reads_like_a_sentence():
    line = text_line(record(cache="miss", error_code=None))
    assert " 200 POST /v1/chat/completions gpt-4o → east 250.0 ms (ttft 50.0 ms) 12→30 tok $0.000310 cache=miss" in line
    assert "key=alice team=research req-1" in line


async def test_auto_format_is_text_on_a_terminal_and_json_elsewhere(tmp_path):
    master, slave = pty.openpty()
    try:
        log = AccessLog("auto", os.ttyname(slave))
        assert log.format == "text"
        await log.flush([record()])
        assert b"POST /v1/chat/completions gpt-4o" in os.read(master, 4096)
        await log.aclose()
    finally:
        os.close(master)
        os.close(slave)
    path = tmp_path / "access.log"
    log = AccessLog("auto", str(path))
    assert log.format == "json"
    await log.flush([record(), record(request_id="req-2")])
    await log.aclose()
    lines = [orjson.loads(x) for x in path.read_bytes().splitlines()]
    assert [x["request_id"] for x in lines] == ["req-1", "req-2"]


def test_redacted_bodies_keep_the_shape_and_lose_the_pii():
    messages = [{"role": "user", "content": "mail jane.doe@example.com, key sk-proj-" + "aB3" * 20},
                {"role": "user", "content": [{"type": "text", "text": "card 4111 1111 1111 1111"}]}]
    out = redact_value(messages)
    assert out[0]["role"] == "user" and "[EMAIL]" in out[0]["content"] and "[SECRET]" in out[0]["content"]
    assert "jane.doe" not in orjson.dumps(out).decode() and "4111" not in orjson.dumps(out).decode()
    assert out[1]["content"][0]["text"] == "card [CARD]" and messages[0]["content"].startswith("mail jane")
