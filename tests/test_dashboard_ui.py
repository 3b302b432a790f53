"""The dashboard at /ui in a real headless Chromium (Playwright, the system's /usr/bin/chromium)
against a real gateway (governance, SQLite ledger, cache) in front of the project's mock upstream.

The tests share one gateway and one signed-in tab and run in file order: a key is created in the
Keys page, used by httpx, found in Requests and Spend, then revoked. A screenshot of each page goes
to $LLMGW_TEST_ARTIFACTS (or a temporary directory, printed). scripts/system-deps.sh installs
Chromium and the `test` extra Playwright; `playwright install` (a browser download) is never needed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from support import running_gateway

CHROMIUM = "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} is missing (scripts/system-deps.sh installs Debian's chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is missing (pip install -e '.[test]')")
expect = sync_api.expect

# No sandbox (root in a container), no GPU, and none of Chromium's own connections: the network is closed.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
MASTER = "master-key-dashboard-0123456789abcdef"
PRICE = "{input: 100, output: 200}"
KEY_SLOT = "llmgw.masterKey"


def gateway_config(mock_url: str, db: Path, extra_models: str = "") -> str:
    return f"""
upstreams:
  mock: {{provider: openai, base_url: "{mock_url}/v1", api_key: sk-upstream-dashboard-secret}}
models:
  m:
    deployments:
      - {{name: m, upstream: mock, model: mock-model, price: {PRICE}}}
    fallbacks:
      - {{to: backup, on: [server_error, timeout]}}
  backup:
    strategy: weighted
    deployments:
      - {{name: backup-a, upstream: mock, model: mock-model, weight: 3, price: {PRICE}}}
      - {{name: backup-b, upstream: mock, model: mock-model, weight: 1, price: {PRICE}}}
{extra_models}
governance:
  master_key: {MASTER}
  sqlite_path: {db}
  ledger: {{batch: 200, interval: 0.05}}
cache: {{ttl: 600}}
"""


def admin(gw, method: str, path: str, body: dict | None = None) -> httpx.Response:
    return httpx.request(method, f"{gw.url}{path}", json=body, headers={"authorization": f"Bearer {MASTER}"},
                         timeout=10)


def chat(gw, key: str, text: str, request_id: str | None = None) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}", **({"x-request-id": request_id} if request_id else {})}
    r = httpx.post(f"{gw.base_url}/chat/completions", headers=headers, timeout=10,
                   json={"model": "m", "messages": [{"role": "user", "content": text}], "max_tokens": 10})
    assert r.status_code == 200, r.text
    return r


def wait_for_ledger(gw, n: int, timeout: float = 10.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        rows = admin(gw, "GET", "/admin/requests?limit=1000").json()["data"]
        if len(rows) >= n or time.monotonic() > deadline:
            assert len(rows) >= n, f"{len(rows)} ledger rows, expected {n}"
            return rows
        time.sleep(0.05)


def number(text: str) -> float:
    return float(re.sub(r"[^0-9.]", "", text) or "nan")


# --- fixtures ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gw(tmp_path_factory, mock_upstream):
    d = tmp_path_factory.mktemp("dashboard")
    with running_gateway(d, gateway_config(mock_upstream.url, d / "gov.db")) as proc:
        proc.db = d / "gov.db"
        proc.mock_url = mock_upstream.url
        yield proc


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    where = os.environ.get("LLMGW_TEST_ARTIFACTS")
    path = Path(where) if where else tmp_path_factory.mktemp("dashboard-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    print(f"dashboard screenshots: {path}")
    return path


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def state() -> dict:
    """What the tests hand on, in file order (the UI-created key, every URL the tab asked for)."""
    return {"urls": [], "errors": []}


@pytest.fixture(scope="module")
def page(browser, gw, state):
    """One tab, signed in with the master key."""
    ctx = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    tab = ctx.new_page()
    tab.set_default_timeout(10_000)
    tab.on("request", lambda r: state["urls"].append(r.url))
    tab.on("dialog", lambda d: d.accept())
    # Uncaught exceptions and console errors (a CSP refusal is one); the API's 4xx the tests
    # provoke on purpose show as "Failed to load resource" and are left out.
    tab.on("pageerror", lambda exc: state["errors"].append(str(exc)))
    tab.on("console", lambda m: m.type == "error" and not m.text.startswith("Failed to load resource")
           and state["errors"].append(m.text))
    tab.goto(f"{gw.url}/ui")
    tab.get_by_label("Master key").fill(MASTER)
    tab.get_by_role("button", name="Sign in").click()
    expect(tab.locator('#view[data-page="overview"]')).to_be_visible()
    yield tab
    ctx.close()


@pytest.fixture(scope="module")
def traffic_key(gw) -> str:
    """A key made through the API, for traffic the tests need beside the UI-created one."""
    r = admin(gw, "POST", "/admin/keys", {"name": "load", "team": "load"})
    assert r.status_code == 201, r.text
    return r.json()["key"]


def show(page, route: str) -> None:
    page.goto(page.url.split("#")[0] + f"#/{route}")
    expect(page.locator(f'#view[data-page="{route}"]')).to_be_visible()


def refresh_until(page, selector: str, timeout: float = 10.0):
    """Click the page's Refresh button until `selector` is there (the ledger is written in batches)."""
    deadline = time.monotonic() + timeout
    while page.locator(selector).count() == 0:
        assert time.monotonic() < deadline, f"{selector} never appeared"
        page.get_by_role("button", name="Refresh").click()
        page.wait_for_timeout(150)
    return page.locator(selector).first


def no_error(page) -> None:
    expect(page.locator("#view .err:visible")).to_have_count(0)


# --- scenarios -----------------------------------------------------------------------------------

def test_a_wrong_key_shows_the_error_and_no_data(browser, gw, artifacts):
    ctx = browser.new_context()
    tab = ctx.new_page()
    try:
        tab.goto(f"{gw.url}/ui")
        tab.get_by_label("Master key").fill("not-the-master-key")
        tab.get_by_role("button", name="Sign in").click()
        expect(tab.locator("#login-error")).to_contain_text("HTTP 401")
        expect(tab.locator("#login-error")).to_contain_text("master key")
        tab.screenshot(path=artifacts / "login-wrong-key.png", full_page=True)
        assert tab.locator("#view").inner_html() == "" and tab.locator("#view table, .tile, svg").count() == 0
        assert tab.locator("#nav").is_hidden()
        assert tab.evaluate("sessionStorage.length + localStorage.length") == 0
        assert "not-the-master-key" not in tab.url
        # Nor does a deep link show anything without a key.
        tab.goto(f"{gw.url}/ui#/keys")
        assert tab.locator("#login").is_visible() and tab.locator("#view").inner_html() == ""
    finally:
        ctx.close()


def test_signing_in_keeps_the_key_in_this_tab_only(page):
    assert page.evaluate(f"sessionStorage.getItem({KEY_SLOT!r})") == MASTER
    assert page.evaluate("localStorage.length") == 0
    assert MASTER not in page.url and MASTER not in page.content()
    assert page.context.cookies() == []


def test_keys_page_creates_a_key_shown_once_and_reports_api_errors(page, gw, state, artifacts):
    show(page, "keys")
    form = page.locator("#key-create")
    form.get_by_label("Name").fill("ui-key")
    form.get_by_label("Requests/min").fill("0")
    form.get_by_role("button", name="Create key").click()
    expect(form.locator(".err")).to_contain_text("rpm must be a positive integer")
    form.get_by_label("Requests/min").fill("")
    form.get_by_label("Team").fill("ui-team")
    form.get_by_label("Budget (USD)").fill("5")
    form.get_by_label("Budget period").select_option("day")
    form.get_by_role("button", name="Create key").click()
    key = page.locator("#new-key-value").inner_text()
    assert key.startswith("llmgw-")
    expect(form.locator(".err")).to_be_hidden()
    listed = admin(gw, "GET", "/admin/keys").json()["data"]
    rec = next(k for k in listed if k["name"] == "ui-key")
    assert rec["team"] == "ui-team" and rec["budget"]["usd"] == 5 and rec["budget"]["period"] == "day"
    row = page.locator(f'tr[data-key-id="{rec["id"]}"]')
    expect(row).to_contain_text("ui-team")
    expect(row.locator('[data-col="status"]')).to_have_text("active")
    expect(row.locator('[data-col="last4"]')).to_have_text(f"…{key[-4:]}")
    expect(row.locator('[data-col="budget"]')).to_have_text("$5/day")
    page.screenshot(path=artifacts / "keys.png", full_page=True)
    # Shown once: dismissed, it is nowhere in the page, and a fresh visit never shows it.
    page.locator("#new-key").get_by_role("button", name="Dismiss").click()
    assert key not in page.content()
    show(page, "overview")
    show(page, "keys")
    expect(page.locator(f'tr[data-key-id="{rec["id"]}"]')).to_be_visible()
    assert key not in page.content()
    # Editing a limit goes through PATCH; a bad value is the API's message beside the form.
    page.get_by_role("button", name="Edit ui-key").click()
    edit = page.locator("#key-edit")
    edit.get_by_label("Tokens/min").fill("-5")
    edit.get_by_role("button", name="Save changes").click()
    expect(edit.locator(".err")).to_contain_text("tpm must be a positive integer")
    edit.get_by_label("Tokens/min").fill("5000")
    edit.get_by_role("button", name="Save changes").click()
    expect(page.locator(f'tr[data-key-id="{rec["id"]}"] [data-col="tpm"]')).to_have_text("5,000")
    assert admin(gw, "GET", f"/admin/keys/{rec['id']}").json()["tpm"] == 5000
    no_error(page)
    state.update(key=key, key_id=rec["id"])


def test_requests_page_lists_the_keys_request_with_its_attempts(page, gw, state, artifacts):
    chat(gw, state["key"], "hello dashboard", request_id="ui-req-1")
    chat(gw, state["key"], "hello dashboard", request_id="ui-req-2")  # the same question: a cache hit
    show(page, "requests")
    page.get_by_label("Key id").fill(state["key_id"])
    page.get_by_role("button", name="Apply").click()
    row = refresh_until(page, 'tr[data-request-id="ui-req-1"]')
    expect(row.locator('[data-col="model"]')).to_have_text("m")
    expect(row.locator('[data-col="status"]')).to_have_text("200")
    expect(row.locator('[data-col="team"]')).to_have_text("ui-team")
    refresh_until(page, 'tr[data-request-id="ui-req-2"]')
    expect(page.locator("tbody tr[data-request-id]")).to_have_count(2)  # the key filter holds
    row.click()
    detail = page.locator("#request-detail")
    expect(detail.locator('[data-field="request_id"]')).to_have_text("ui-req-1")
    expect(detail.locator('[data-field="model"]')).to_have_text("m")
    expect(detail.locator('[data-field="status"]')).to_have_text("200")
    expect(detail.locator(".timeline svg rect")).to_have_count(1)
    expect(detail).to_contain_text("Attempts (1)")
    assert "hello dashboard" not in page.content()  # no prompt text, ever
    page.screenshot(path=artifacts / "requests.png", full_page=True)
    no_error(page)


def test_spend_page_shows_team_and_key_cost_and_exports_the_cli_csv(page, gw, state, traffic_key, artifacts):
    chat(gw, traffic_key, "another team's spend")  # two rows in the export
    wait_for_ledger(gw, 3)
    by_team = admin(gw, "GET", "/admin/spend?group_by=team").json()
    team = next(r for r in by_team["data"] if r["team"] == "ui-team")
    assert team["cost_usd"] > 0
    show(page, "spend")
    page.get_by_role("button", name="Team", exact=True).click()
    row = page.locator('tr[data-name="ui-team"]')
    expect(row.locator('[data-col="cost_usd"]')).to_have_text(f"${team['cost_usd']:.6f}")
    expect(row.locator('[data-col="requests"]')).to_have_text(str(team["requests"]))
    expect(page.locator('tfoot [data-col="cost_usd"]')).to_have_text(f"${by_team['total_usd']:.6f}")
    # The export is byte for byte what `llmgw spend --format csv` prints.
    with page.expect_download() as download:
        page.get_by_role("button", name="Export CSV").click()
    exported = Path(download.value.path()).read_text()
    assert len(exported.splitlines()) == 3 and download.value.suggested_filename == "spend-by-team.csv"
    cli = subprocess.run([sys.executable, "-m", "llmgw.cli", "spend", "--group-by", "team", "--format", "csv",
                          "--url", gw.url], capture_output=True, text=True, timeout=30,
                         env={**os.environ, "LLMGW_MASTER_KEY": MASTER})
    assert cli.returncode == 0, cli.stderr
    assert exported == cli.stdout
    page.screenshot(path=artifacts / "spend-team.png", full_page=True)
    page.get_by_role("button", name="Key", exact=True).click()
    row = page.locator(f'tr[data-name="{state["key_id"]}"]')
    expect(row.locator('[data-col="key_name"]')).to_have_text("ui-key")
    expect(row.locator('[data-col="budget"]')).to_have_text("$5/day")
    key_spend = next(r for r in admin(gw, "GET", "/admin/spend?group_by=key").json()["data"]
                     if r["key"] == state["key_id"])
    expect(row.locator('[data-col="cost_usd"]')).to_have_text(f"${key_spend['cost_usd']:.6f}")
    spent = admin(gw, "GET", f"/admin/keys/{state['key_id']}").json()["budget"]["spent_usd"]
    expect(row.locator('[data-col="spent"]')).to_have_text(f"${spent:.6f}")
    page.screenshot(path=artifacts / "spend-key.png", full_page=True)
    no_error(page)


def test_revoking_a_key_marks_it_revoked(page, gw, state):
    show(page, "keys")
    page.get_by_role("button", name="Revoke ui-key").click()  # the confirm() is accepted
    row = page.locator(f'tr[data-key-id="{state["key_id"]}"]')
    expect(row.locator('[data-col="status"]')).to_have_text("revoked")
    expect(row.get_by_role("button")).to_have_count(0)
    r = httpx.post(f"{gw.base_url}/chat/completions", headers={"authorization": f"Bearer {state['key']}"},
                   json={"model": "m", "messages": [{"role": "user", "content": "x"}]}, timeout=10)
    assert r.status_code == 401
    no_error(page)


def test_overview_counts_requests_and_refreshes_in_place(page, gw, traffic_key, artifacts):
    show(page, "overview")
    count = page.locator('[data-tile="requests"] .v')
    expect(count).to_have_text(re.compile(r"^\d[\d,]*$"))
    before = number(count.inner_text())
    assert before >= 2
    page.evaluate("window.__same_page = true")
    for i in range(3):
        chat(gw, traffic_key, f"overview traffic {i}")
    # The page refreshes itself every 5 s, without a reload.
    expect(count).to_have_text(re.compile(r"^\d[\d,]*$"))
    deadline = time.monotonic() + 15
    while number(count.inner_text()) < before + 3:
        assert time.monotonic() < deadline, f"requests tile stuck at {count.inner_text()} (before: {before})"
        page.wait_for_timeout(250)
    assert page.evaluate("window.__same_page") is True
    expect(page.locator(".chart svg")).to_have_count(6)
    page.get_by_label("Model group").select_option("m")
    page.get_by_role("button", name="24 h").click()
    expect(page.locator('.seg button[aria-pressed="true"]')).to_have_text("24 h")
    expect(page.locator(".chart svg")).to_have_count(6)
    page.screenshot(path=artifacts / "overview.png", full_page=True)
    no_error(page)


def test_routing_lists_the_configured_deployments_and_fallbacks(page, artifacts):
    show(page, "routing")
    expect(page.locator('[data-group="m"] tr[data-deployment="m"]')).to_be_visible()
    expect(page.locator('[data-group="backup"] tr[data-deployment="backup-a"]')).to_be_visible()
    expect(page.locator('[data-group="backup"] tr[data-deployment="backup-b"]')).to_be_visible()
    expect(page.locator('[data-group="m"] [data-fallback="backup"]')).to_contain_text("server_error")
    expect(page.locator('[data-group="backup"]')).to_contain_text("weighted")
    page.screenshot(path=artifacts / "routing.png", full_page=True)
    no_error(page)


def test_cache_page_shows_the_hit_and_flushes_a_namespace(page, gw, artifacts):
    show(page, "cache")
    expect(page.locator('[data-kind="hit"] [data-col="count"]')).not_to_have_text("0")
    ns = page.locator('tr[data-namespace="ui-team"]')
    expect(ns.locator('[data-col="entries"]')).to_have_text("1")
    page.screenshot(path=artifacts / "cache.png", full_page=True)
    page.get_by_role("button", name="Flush namespace ui-team").click()  # the confirm() is accepted
    expect(page.locator("#view .notice")).to_contain_text('Flushed 1 entries from namespace "ui-team"')
    expect(ns).to_have_count(0)
    assert "ui-team" not in admin(gw, "GET", "/admin/cache").json()["namespaces"]
    no_error(page)


def test_architecture_diagram_matches_the_config_and_goes_live(page, gw, traffic_key, artifacts):
    show(page, "architecture")
    diagram = page.locator("#diagram svg")
    expect(diagram.locator('[data-node="group:m"]')).to_be_visible()
    ids = set(diagram.locator("[data-node]").evaluate_all("els => els.map(e => e.dataset.node)"))
    assert {i for i in ids if i.startswith(("group:", "deployment:"))} == \
        {"group:m", "group:backup", "deployment:m", "deployment:backup-a", "deployment:backup-b"}
    assert {"upstream:mock", "stage:cache", "stage:governance", "router"} <= ids
    node = diagram.locator('[data-node="group:m"]')
    before = node.text_content()
    chat(gw, traffic_key, "architecture traffic")
    chat(gw, traffic_key, "architecture traffic, again")
    deadline = time.monotonic() + 15
    while node.text_content() == before:
        assert time.monotonic() < deadline, f"the live figures of group:m did not change: {before!r}"
        page.wait_for_timeout(250)
    expect(page.locator("[data-figures]").first).to_be_visible()
    page.screenshot(path=artifacts / "architecture.png", full_page=True)
    # A config reload shows in the diagram on its next refresh.
    gw.config_path.write_text(gateway_config(gw.mock_url, gw.db,
                                             "  extra: {upstream: mock, model: mock-model, price: " + PRICE + "}"))
    gw.reload()
    expect(diagram.locator('[data-node="group:extra"]')).to_be_visible(timeout=20_000)
    no_error(page)


def test_the_key_stays_in_session_storage_and_calls_go_to_the_admin_api(page, gw, state):
    assert state["urls"], "the tab made no requests"
    for url in [*state["urls"], page.url]:
        assert MASTER not in url
        if url.startswith("blob:"):  # the CSV export, made in the page
            continue
        parts = urlsplit(url)
        assert parts.netloc == urlsplit(gw.url).netloc, url
        assert parts.path == "/ui" or parts.path.startswith(("/ui/", "/admin/")), url
    assert page.evaluate("localStorage.length") == 0
    assert state["errors"] == []
    page.get_by_role("button", name="Log out").click()
    expect(page.locator("#login")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0
    assert page.locator("#view").inner_html() == ""
