"""The dashboard's data side through real gateway processes: /admin/overview (from the ledger),
/admin/routing, /admin/diagram, /admin/requests/{id}, the master key on each, and the static
files at /ui. The UI itself is tested in test_dashboard_ui.py. Plus the overview's arithmetic
against a plain-Python reference (LedgerTail over a SQLite ledger's overview_buckets)."""

from __future__ import annotations

import asyncio
import http.client
import math
import random
import time
from pathlib import Path

import httpx
import pytest

from llmgw.dashboard import api
from llmgw.governance.stores import HIST_LO_MS, HIST_RATIO, LEDGER_COLUMNS, SqliteStore, hist_bin
from llmgw.dashboard.plugin import DIR_ENV, STATIC

MASTER = "master-key-0123456789abcdef"
UPSTREAM_KEY = "sk-upstream-secret-123456"
MSG = [{"role": "user", "content": "hello dashboard"}]
ADMIN_PATHS = ("/admin/overview", "/admin/overview?window=86400", "/admin/routing", "/admin/diagram",
               "/admin/diagram?format=svg", "/admin/diagram?format=mermaid", "/admin/requests/req-anything")


def config(mock_url: str, db: Path, extra_models: str = "", store: str = "") -> str:
    return f"""
upstreams:
  mock: {{provider: openai, base_url: "{mock_url}/v1", api_key: {UPSTREAM_KEY}}}
  broken: {{provider: openai, base_url: "{mock_url}/v1", api_key: {UPSTREAM_KEY}, headers: {{x-mock-status: '500'}}}}
models:
  m:
    deployments:
      - {{name: m-a, upstream: mock, model: mock-model, price: {{input: 100, output: 200}}}}
      - {{name: m-b, upstream: mock, model: mock-model, weight: 3, price: {{input: 100, output: 200}}}}
    strategy: weighted
  flaky:
    deployments:
      - {{name: flaky-a, upstream: broken, model: mock-model}}
    breaker: {{failures: 2, cooldown: 600}}
    fallbacks:
      - {{to: m, on: [server_error]}}
      - {{to: n, on: [timeout, connection]}}
  down: {{upstream: broken, model: mock-model}}
  n: {{upstream: mock, model: mock-model}}
{extra_models}
governance:
  master_key: {MASTER}
  {store or f"sqlite_path: {db}"}
  ledger: {{batch: 200, interval: 0.05}}
"""


def admin(gw, path: str, token: str | None = MASTER) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.get(f"{gw.url}{path}", headers=headers, timeout=10)


def new_key(gw) -> str:
    r = httpx.post(f"{gw.url}/admin/keys", json={"name": "dash"}, headers={"authorization": f"Bearer {MASTER}"})
    assert r.status_code == 201, r.text
    return r.json()["key"]


def chat(gw, key: str, model: str, client: httpx.Client | None = None, **extra) -> httpx.Response:
    body = {"model": model, "messages": MSG, "max_tokens": 5, **extra}
    return (client or httpx).post(f"{gw.base_url}/chat/completions", json=body,
                                  headers={"authorization": f"Bearer {key}"}, timeout=10)


def ledger_rows(gw, n: int, timeout: float = 10.0) -> list[dict]:
    """The newest ledger rows once there are at least `n` (the ledger writes every 0.05 s here)."""
    deadline = time.monotonic() + timeout
    rows: list[dict] = []
    while time.monotonic() < deadline:
        rows = admin(gw, "/admin/requests?limit=1000").json()["data"]
        if len(rows) >= n:
            return rows
        time.sleep(0.05)
    raise AssertionError(f"expected {n} ledger rows, found {len(rows)}")


def raw_get(gw, path: str) -> tuple[int, dict[str, str], bytes]:
    """GET with the path sent exactly as written (httpx would resolve dot segments first)."""
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


@pytest.fixture
def traffic(start_gateway, mock_upstream, tmp_path):
    """A gateway after known traffic: 6 answers from m, 2 errors from `down`, 1 fallback from
    `flaky` to m (then flaky's breaker is open: 2 failures), 1 answer from n."""
    gw = start_gateway(config(mock_upstream.url, tmp_path / "g.db"))
    key = new_key(gw)
    out: dict = {"gw": gw, "key": key, "ids": {}, "client_ms": []}
    with httpx.Client(timeout=10) as client:
        for _ in range(6):
            t0 = time.perf_counter()
            r = chat(gw, key, "m", client)
            out["client_ms"].append((time.perf_counter() - t0) * 1000)
            assert r.status_code == 200
        for _ in range(2):
            r = chat(gw, key, "down", client)
            assert r.status_code >= 500
            out["ids"].setdefault("down", r.headers["x-request-id"])
        r = chat(gw, key, "flaky", client)
        assert r.status_code == 200 and r.headers["x-llmgw-fallbacks"].startswith("flaky-a"), r.headers
        out["ids"]["fallback"] = r.headers["x-request-id"]
        r = chat(gw, key, "flaky", client)  # the second failure opens flaky-a's breaker
        assert r.status_code == 200
        r = chat(gw, key, "n", client)
        assert r.status_code == 200
    out["requests"], out["errors"] = 11, 2
    out["rows"] = ledger_rows(gw, out["requests"])
    return out


# --- the overview ----------------------------------------------------------------------------------

def test_overview_counts_what_the_ledger_holds(traffic):
    gw, rows = traffic["gw"], traffic["rows"]
    r = admin(gw, "/admin/overview?window=3600")
    assert r.status_code == 200, r.text
    o = r.json()
    assert o["window"] == 3600 and o["step"] == 60 and o["groups"] == ["m", "flaky", "down", "n"]
    assert abs(o["now"] - time.time()) < 5 and o["sampled"] is False
    assert set(o["series"]) == {"m", "flaky", "down", "n", "*"}
    for name, buckets in o["series"].items():
        t0 = buckets[0]["t"]
        assert len(buckets) == 60 and [b["t"] for b in buckets] == list(range(t0, t0 + 3600, 60))
        assert buckets[-1]["t"] <= o["now"] < buckets[-1]["t"] + 60
    t = o["totals"]
    assert t["requests"] == traffic["requests"] == sum(b["requests"] for b in o["series"]["*"])
    assert t["errors"] == traffic["errors"] == sum(b["errors"] for b in o["series"]["*"])
    assert t["error_rate"] == pytest.approx(2 / 11, abs=1e-4)
    assert [sum(b["requests"] for b in o["series"][g]) for g in ("m", "flaky", "down", "n")] == [6, 2, 2, 1]
    assert o["group_totals"]["down"]["errors"] == 2 and o["group_totals"]["m"]["errors"] == 0
    latencies = [row["latency_ms"] for row in rows]
    assert min(latencies) - 0.001 <= t["p50_ms"] <= t["p99_ms"] <= max(latencies) + 0.001  # (rounded to µs)
    # Nearest rank, from the histograms: within one bin of the exact figure (of 11, the largest; the 6th).
    assert t["p99_ms"] == pytest.approx(in_bin(max(latencies), latencies), abs=0.001)
    assert t["p50_ms"] == pytest.approx(in_bin(sorted(latencies)[5], latencies), abs=0.001)
    assert t["tokens_in"] == sum(row["prompt_tokens"] for row in rows) > 0
    assert t["tokens_out"] == sum(row["completion_tokens"] for row in rows) > 0
    assert t["cost_usd"] == pytest.approx(sum(row["cost_usd"] or 0 for row in rows), abs=1e-8) and t["cost_usd"] > 0
    assert t["rps"] == pytest.approx(11 / (o["now"] - o["from"]), rel=1e-3)
    busy = [b for b in o["series"]["m"] if b["requests"]]
    assert busy and all(b["p50_ms"] is not None and b["p50_ms"] <= b["p99_ms"] for b in busy)
    assert all(b["p50_ms"] is None and b["cost_usd"] == 0 for b in o["series"]["m"] if not b["requests"])

    day = admin(gw, "/admin/overview?window=86400").json()
    assert day["step"] == 900 and len(day["series"]["*"]) == 96 and day["totals"]["requests"] == 11
    bad = admin(gw, "/admin/overview?window=60")
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "window"


def test_overview_follows_new_rows(traffic):
    gw, key = traffic["gw"], traffic["key"]
    assert admin(gw, "/admin/overview").json()["totals"]["requests"] == 11
    for _ in range(3):
        assert chat(gw, key, "n").status_code == 200
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        time.sleep(0.3)  # an answer is computed at most once a second
        if admin(gw, "/admin/overview").json()["totals"]["requests"] == 14:
            break
    else:
        raise AssertionError("the overview did not count the new requests")
    assert admin(gw, "/admin/overview").json()["group_totals"]["n"]["requests"] == 4


def test_overview_covers_every_replica(start_gateway, mock_upstream, postgres_server, tmp_path):
    """Two replicas on one PostgreSQL ledger: each one's overview counts both's requests."""
    dsn = postgres_server.new_database()
    text = config(mock_upstream.url, tmp_path / "unused.db", store=f'store: postgres\n  postgres_dsn: "{dsn}"')
    a, b = start_gateway(text, name="a"), start_gateway(text, name="b")
    key = new_key(a)
    for i in range(8):
        assert chat(a if i % 2 else b, key, "m").status_code == 200
    assert chat(b, key, "down").status_code >= 500
    ledger_rows(a, 9)
    for gw in (a, b):
        o = admin(gw, "/admin/overview").json()
        assert o["totals"]["requests"] == 9 and o["totals"]["errors"] == 1
        assert o["group_totals"]["m"]["requests"] == 8
    detail = admin(a, f"/admin/requests/{ledger_rows(a, 9)[0]['request_id']}").json()
    assert detail["ledger"]["status"] >= 500  # the newest: b's failure, found in the shared ledger


# --- routing ---------------------------------------------------------------------------------------

def test_routing_lists_groups_fallbacks_and_live_state(traffic):
    r = admin(traffic["gw"], "/admin/routing")
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["worker"] == 0 and out["workers"] == 1
    groups = {g["name"]: g for g in out["groups"]}
    assert list(groups) == ["m", "flaky", "down", "n"]
    assert groups["m"]["strategy"] == "weighted" and groups["m"]["fallbacks"] == []
    assert [(d["name"], d["weight"], d["upstream"], d["provider"], d["model"]) for d in groups["m"]["deployments"]] == [
        ("m-a", 1.0, "mock", "openai", "mock-model"), ("m-b", 3.0, "mock", "openai", "mock-model")]
    assert groups["flaky"]["fallbacks"] == [{"to": "m", "on": ["server_error"]},
                                            {"to": "n", "on": ["timeout", "connection"]}]
    deps = [d for g in out["groups"] for d in g["deployments"]]
    assert all(d["in_flight"] == 0 for d in deps)
    assert sum(d["requests"] for d in groups["m"]["deployments"]) == 8  # 6 direct, 2 fallbacks from flaky
    assert all(d["breaker"] == "none" and d["error_rate"] in (0.0, None) for d in groups["m"]["deployments"])
    flaky = groups["flaky"]["deployments"][0]
    assert flaky["breaker"] == "open" and flaky["failures"] == 2 and flaky["error_rate"] == 1.0
    assert flaky["breaker_reason"] == "server_error"
    down = groups["down"]["deployments"][0]
    assert down["breaker"] == "none" and down["failures"] == 2
    assert groups["m"]["deployments"][0]["latency_ms"] is not None
    assert UPSTREAM_KEY not in r.text


# --- the diagram -----------------------------------------------------------------------------------

def test_diagram_matches_the_config_with_live_figures(traffic):
    gw = traffic["gw"]
    r = admin(gw, "/admin/diagram?format=json")
    assert r.status_code == 200, r.text
    d = r.json()
    ids = {n["id"] for n in d["nodes"]}
    assert {"group:m", "group:flaky", "group:down", "group:n", "deployment:m-a", "deployment:m-b",
            "deployment:flaky-a", "upstream:mock", "upstream:broken", "stage:governance", "router"} <= ids
    assert {(e["source"], e["target"], e["style"]) for e in d["edges"]} >= {
        ("group:flaky", "group:m", "fallback"), ("group:flaky", "group:n", "fallback"), ("router", "group:m", "flow")}
    assert [c["section"] for c in d["columns"]][0] == "clients" and d["worker"] == 0
    live = {n["id"]: n["live"] for n in d["nodes"]}
    assert any("req/s" in line for line in live["group:m"]) and any(line.startswith("p50 ") for line in live["group:m"])
    assert any("errors" in line for line in live["group:down"])
    assert "breaker open" in live["deployment:flaky-a"]
    assert any(line.startswith("queue ledger: ") for line in live["stage:governance"])
    assert any("req/s" in line for line in live["router"])
    assert UPSTREAM_KEY not in r.text and MASTER not in r.text

    svg = admin(gw, "/admin/diagram?format=svg")
    assert svg.status_code == 200 and svg.headers["content-type"] == "image/svg+xml"
    assert svg.text.startswith("<svg") and 'data-node="group:flaky"' in svg.text and "breaker open" in svg.text
    mermaid = admin(gw, "/admin/diagram?format=mermaid")
    assert mermaid.status_code == 200 and mermaid.text.startswith("flowchart LR") and "k_live" in mermaid.text
    assert admin(gw, "/admin/diagram?format=png").status_code == 400


def test_diagram_follows_a_reload(start_gateway, mock_upstream, tmp_path):
    db = tmp_path / "g.db"
    gw = start_gateway(config(mock_upstream.url, db))
    assert "group:extra" not in {n["id"] for n in admin(gw, "/admin/diagram").json()["nodes"]}
    gw.config_path.write_text(config(mock_upstream.url, db, "  extra: {upstream: mock, model: mock-model}"))
    gw.reload()
    deadline = time.monotonic() + 10
    while "group:extra" not in {n["id"] for n in admin(gw, "/admin/diagram").json()["nodes"]}:
        assert time.monotonic() < deadline, "the diagram did not follow the reload"
        time.sleep(0.1)
    assert "extra" in [g["name"] for g in admin(gw, "/admin/routing").json()["groups"]]
    assert "extra" in admin(gw, "/admin/overview").json()["groups"]


# --- one request -----------------------------------------------------------------------------------

def test_request_detail_has_the_attempts_of_a_fallback(traffic):
    gw, rid = traffic["gw"], traffic["ids"]["fallback"]
    r = admin(gw, f"/admin/requests/{rid}")
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["request_id"] == rid and d["in_memory"] is True and d["worker"] == 0
    assert d["ledger"]["request_id"] == rid and d["ledger"]["status"] == 200 and d["ledger"]["attempts"] == 2
    assert d["group"] == "flaky" and d["status"] == 200 and d["deployment"] in ("m-a", "m-b")
    first, second = d["attempts"]
    assert (first["deployment"], first["upstream"], first["status"]) == ("flaky-a", "broken", 500)
    assert first["fallback"] is False
    assert first["error"] and first["error_class"] in ("retryable", "fallback")
    assert (second["deployment"], second["status"], second["error"]) == (d["deployment"], 200, None)
    assert second["fallback"] is True
    assert 0 <= first["start_ms"] <= second["start_ms"] and first["duration_ms"] >= 0
    assert not any(a["retry"] or a["hedge"] or a["cancelled"] for a in d["attempts"])
    t = d["timings"]
    assert t["duration_ms"] >= t["upstream_ms"] > 0 and t["overhead_ms"] >= 0 and t["ttft_ms"] is not None
    assert t["duration_ms"] == pytest.approx(t["upstream_ms"] + t["client_ms"] + t["overhead_ms"], abs=0.01)

    failed = admin(gw, f"/admin/requests/{traffic['ids']['down']}").json()
    assert failed["status"] >= 500 and failed["error"] and failed["ledger"]["error"] == failed["error"]
    missing = admin(gw, "/admin/requests/req-never-seen")
    assert missing.status_code == 404
    assert "req-never-seen" in missing.json()["error"]["message"] and "since=" in missing.json()["error"]["message"]


# --- the master key --------------------------------------------------------------------------------

def test_every_dashboard_endpoint_needs_the_master_key(traffic):
    gw, key = traffic["gw"], traffic["key"]
    for path in ADMIN_PATHS:
        for token in (None, "wrong-master-key-0000000", key, MASTER[:-1] + "x"):
            r = admin(gw, path, token)
            assert r.status_code == 401, (path, token, r.text)
            body = r.json()
            assert list(body) == ["error"] and body["error"]["code"] == "invalid_master_key"
            assert all(word not in r.text for word in ("flaky", "m-a", "series", "req/s", "mock-model"))
        assert admin(gw, path).status_code in (200, 404)  # (the unknown request id)


# --- the UI's files --------------------------------------------------------------------------------

@pytest.fixture
def ui_dir(tmp_path):
    root = tmp_path / "ui"
    (root / "js").mkdir(parents=True)
    files = {"index.html": b"<!doctype html><title>t</title>", "app.js": b"export const x = 1;\n",
             "app.css": b"body{}", "logo.svg": b"<svg xmlns='http://www.w3.org/2000/svg'/>",
             "logo.png": b"\x89PNG\r\n\x1a\n", "favicon.ico": b"\x00\x00\x01\x00", "js/chart.js": b"// chart\n",
             "notes.txt": b"not served", ".secret.js": b"hidden"}
    for name, data in files.items():
        (root / name).write_bytes(data)
    (root / "escape.js").symlink_to(Path(__file__).resolve())  # a link out of the folder
    return root


def test_ui_serves_its_files_with_strict_headers(start_gateway, mock_upstream, tmp_path, ui_dir):
    gw = start_gateway(config(mock_upstream.url, tmp_path / "g.db"), env={DIR_ENV: str(ui_dir)})
    for path in ("/ui", "/ui/"):
        r = httpx.get(gw.url + path)  # no key needed: the files hold no data
        assert r.status_code == 200 and r.content == (ui_dir / "index.html").read_bytes()
        assert r.headers["content-type"] == "text/html; charset=utf-8"
        assert r.headers["content-security-policy"] == \
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'"
        assert r.headers["x-frame-options"] == "DENY" and r.headers["cache-control"] == "no-cache"
        assert r.headers["x-content-type-options"] == "nosniff"
    for name, ctype in (("app.js", "text/javascript; charset=utf-8"), ("app.css", "text/css; charset=utf-8"),
                        ("logo.svg", "image/svg+xml"), ("logo.png", "image/png"), ("favicon.ico", "image/x-icon"),
                        ("js/chart.js", "text/javascript; charset=utf-8")):
        r = httpx.get(f"{gw.url}/ui/{name}")
        assert r.status_code == 200 and r.headers["content-type"] == ctype and r.content == (ui_dir / name).read_bytes()
        assert "content-security-policy" in r.headers
    for path in ("/ui/notes.txt", "/ui/.secret.js", "/ui/escape.js", "/ui/missing.js", "/ui/js", "/ui/js/",
                 "/ui/../governance/admin.py", "/ui/%2e%2e/governance/admin.py", "/ui/..%2fgovernance%2fadmin.py",
                 "/ui/%2e%2e%2f%2e%2e%2fgovernance%2fadmin.py", "/ui/js/../app.js", "/ui//etc/passwd",
                 "/ui/%2fetc%2fpasswd", "/ui/app.js%00.html", "/ui/a/b/c/d.js"):
        status, headers, body = raw_get(gw, path)
        assert status == 404, (path, status)
        assert b"import" not in body and b"not served" not in body and b"hidden" not in body
    assert httpx.post(f"{gw.url}/ui/app.js").status_code == 405


def test_ui_without_its_files_says_so(start_gateway, mock_upstream, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    gw = start_gateway(config(mock_upstream.url, tmp_path / "g.db"), env={DIR_ENV: str(empty)})
    r = httpx.get(f"{gw.url}/ui")
    assert r.status_code == 404 and "not installed" in r.json()["error"]["message"]
    assert admin(gw, "/admin/routing").status_code == 200  # the admin API works without them


def test_ui_serves_the_packaged_files(start_gateway, mock_upstream, tmp_path):
    if not (STATIC / "index.html").is_file():
        pytest.skip("the packaged UI is not there yet")
    gw = start_gateway(config(mock_upstream.url, tmp_path / "g.db"))
    r = httpx.get(f"{gw.url}/ui/")
    assert r.status_code == 200 and r.content == (STATIC / "index.html").read_bytes()


def test_no_dashboard_without_governance(start_gateway, mock_upstream, tmp_path, ui_dir):
    gw = start_gateway(f"""
upstreams:
  mock: {{provider: openai, base_url: "{mock_upstream.url}/v1", api_key: {UPSTREAM_KEY}}}
models:
  m: {{upstream: mock, model: mock-model}}
""", env={DIR_ENV: str(ui_dir)})
    assert httpx.post(f"{gw.base_url}/chat/completions", json={"model": "m", "messages": MSG}).status_code == 200
    for path in ("/ui", "/ui/", "/ui/app.js", *ADMIN_PATHS, "/admin/keys"):
        r = admin(gw, path)
        assert r.status_code == 404, (path, r.status_code)


# --- the overview's arithmetic, against a plain-Python reference ----------------------------------

def in_bin(exact: float | None, values: list[float]) -> float | None:
    """What the overview reports for the nearest-rank value `exact` of `values`: its histogram
    bin's geometric midpoint, clamped to the least and greatest of `values`; within ~10% of it."""
    if exact is None:
        return None
    got = min(max(HIST_LO_MS * HIST_RATIO ** (hist_bin(exact) + 0.5), min(values)), max(values))
    assert 1 / math.sqrt(HIST_RATIO) <= got / exact <= math.sqrt(HIST_RATIO)
    return got


def nearest_rank(values: list[float], q: float) -> float | None:
    values = sorted(v for v in values if v is not None)
    return values[max(math.ceil(q * len(values)) - 1, 0)] if values else None


def reference(rows: list[tuple], window: int, now: float, groups: list[str]) -> dict:
    step = api.OVERVIEW_STEPS[window]
    first = int(now // step) - window // step + 1
    rows = [r for r in rows if r[0] >= first * step]

    def figures(rs: list[tuple]) -> dict:
        lat = [r[3] for r in rs if r[3] is not None]
        ttft = nearest_rank([r[4] for r in rs], 0.5)  # not clamped: no least and greatest kept for it
        return {"requests": len(rs), "errors": sum(1 for r in rs if (r[2] or 0) >= 400),
                "p50_ms": in_bin(nearest_rank(lat, 0.5), lat), "p99_ms": in_bin(nearest_rank(lat, 0.99), lat),
                "ttft_p50_ms": None if ttft is None else HIST_LO_MS * HIST_RATIO ** (hist_bin(ttft) + 0.5),
                "tokens_in": sum(r[5] or 0 for r in rs), "tokens_out": sum(r[6] or 0 for r in rs),
                "cost_usd": sum(r[7] or 0 for r in rs)}

    series = {}
    for name in (*groups, "*"):
        mine = [r for r in rows if name == "*" or r[1] == name]
        series[name] = [figures([r for r in mine if min(max(int(r[0] // step) - first, 0), window // step - 1) == i])
                        for i in range(window // step)]
    return {"series": series, "totals": figures(rows)}


def close(a, b) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and abs(a - b) <= 0.0006)


def check(out: dict, ref: dict) -> None:
    for name, buckets in ref["series"].items():
        for got, want in zip(out["series"][name], buckets):
            for field, value in want.items():
                assert close(got[field], round(value, 8) if field == "cost_usd" else value), (name, field, got, want)
    for field, value in ref["totals"].items():
        assert close(out["totals"][field], value), (field, out["totals"], ref["totals"])


def ledger_row(r: tuple, kind: str = "chat") -> tuple:
    """A ledger row of the reference's (ts, model, status, latency_ms, ttft_ms, prompt_tokens,
    completion_tokens, cost_usd)."""
    out = dict.fromkeys(LEDGER_COLUMNS)
    out.update(request_id=f"r{r[0]}", kind=kind, ts=r[0], model=r[1], status=r[2], latency_ms=r[3], ttft_ms=r[4],
               prompt_tokens=r[5], completion_tokens=r[6], cost_usd=r[7])
    return tuple(out.values())


class CountingStore(SqliteStore):
    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.reads: list[int] = []

    async def read_overview(self, since: int) -> list[tuple]:
        got = await super().read_overview(since)
        self.reads.append(len(got))
        return got


def test_overview_arithmetic_matches_a_reference(tmp_path):
    """Exact counts and sums; percentiles within one histogram bin (exactly the bin the reference
    says, clamped to the least and greatest latency); rows in batches that share minutes (merged
    at write time); model listings and shadow copies left out; later refreshes read a few rows."""
    rng = random.Random(7)
    now = 1_800_000_000.0
    models = ["a", "b", "c", None, "unconfigured"]

    def row(ts: float) -> tuple:
        return (ts, rng.choice(models), rng.choice([200, 200, 200, 429, 500, None]),
                rng.choice([None, round(rng.uniform(0.1, 900), 3)]), rng.choice([None, round(rng.uniform(0.1, 50), 3)]),
                rng.choice([None, rng.randint(0, 400)]), rng.randint(0, 100), rng.choice([None, rng.random() / 100]))

    rows = [row(now - rng.uniform(0, 90000)) for _ in range(3000)]
    store = CountingStore(str(tmp_path / "o.db"))

    async def run() -> None:
        await store.open()
        for i in range(0, len(rows), 250):  # batches of mixed times: most minutes are in several
            store.write_ledger([ledger_row(r) for r in rows[i:i + 250]])
        store.write_ledger([ledger_row(r, kind) for r in rows[:50] for kind in ("shadow", "models")])
        tail = api.LedgerTail(store, settle=2.0)
        await tail.refresh(now)
        for window in (3600, 86400):
            check(tail.compute(window, now, ["a", "b", "c"]), reference(rows, window, now, ["a", "b", "c"]))
        # New rows, and one that comes late but within `settle`: the next refresh reads only the
        # minutes not yet complete.
        later = now + 30
        new = [row(later - rng.uniform(0, 25)) for _ in range(200)] + [row(now - 1.0)]
        rows.extend(new)
        store.write_ledger([ledger_row(r) for r in new])
        await tail.refresh(later)
        assert store.reads[-1] <= 2 * len(models)
        out = tail.compute(3600, later, ["a", "b"])
        check(out, reference(rows, 3600, later, ["a", "b"]))
        assert out["sampled"] is False and out["rows"] == sum(1 for r in rows if r[0] >= out["from"])
        await store.close()

    asyncio.run(run())


def test_ledger_rows_query(tmp_path):
    """The store method the dashboard reads with (SQLite here; PostgreSQL in the replicas test):
    newest first, ts > since, kinds skipped, one request id, known columns only."""
    from llmgw.governance.stores import LEDGER_COLUMNS, SqliteStore

    async def run() -> None:
        store = SqliteStore(str(tmp_path / "l.db"))
        await store.open()
        rows = []
        for i, kind in enumerate(["chat", "shadow", "models", "chat", "embeddings"]):
            row = dict.fromkeys(LEDGER_COLUMNS)
            row.update(request_id=f"r{i}", ts=100.0 + i, kind=kind, status=200)
            rows.append(tuple(row.values()))
        store.write_ledger(rows)
        got = await store.ledger_rows(("request_id", "ts"), since=100.0, skip_kinds=("shadow", "models"), limit=10)
        assert got == [("r4", 104.0), ("r3", 103.0)]
        assert await store.ledger_rows(("request_id",), request_id="r1", limit=1) == [("r1",)]
        assert await store.ledger_rows(("request_id",), limit=2) == [("r4",), ("r3",)]
        with pytest.raises(ValueError):
            await store.ledger_rows(("request_id; DROP TABLE ledger",), limit=1)
        await store.close()

    asyncio.run(run())
