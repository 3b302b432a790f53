// The llmgw dashboard: a single-page app over the gateway's admin API, no dependencies, no build.
//
// The master key lives only in sessionStorage (this tab; never a URL, never localStorage, never
// logged) and goes out as `Authorization: Bearer <key>` on every call. A 401 from any call signs
// out and clears the page: a wrong key shows the API's error and no data. Each page makes one
// request per refresh (Spend by key and Architecture: two, in parallel); only the page shown
// refreshes, and nothing refreshes while the tab is hidden. Everything the API returns is put in
// the page as text (textContent), never as markup; the one exception is the architecture SVG,
// which the gateway renders and which is parsed as SVG and stripped of scripts and handlers.

const KEY_SLOT = "llmgw.masterKey";
const REFRESH_MS = 5000;
const SVG_NS = "http://www.w3.org/2000/svg";

// ---- DOM helpers ---------------------------------------------------------------------------------
function build(doc, tag, attrs, kids) {
  const el = doc(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") el.textContent = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const kid of kids.flat(Infinity)) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}
const h = (tag, attrs, ...kids) => build((t) => document.createElement(t), tag, attrs, kids);
const s = (tag, attrs, ...kids) => build((t) => document.createElementNS(SVG_NS, t), tag, attrs, kids);
const $ = (sel, root = document) => root.querySelector(sel);
// replaceChildren, flattening arrays and leaving out null/false (as h() does).
const fill = (el, ...kids) => el.replaceChildren(...kids.flat(Infinity).filter((k) => k !== null && k !== undefined && k !== false));

// ---- formatting ----------------------------------------------------------------------------------
const isNum = (x) => typeof x === "number" && Number.isFinite(x);
const dash = "–";
const fmtInt = (n) => (isNum(n) ? Math.round(n).toLocaleString("en-US") : dash);
// Cost with the rounding of `llmgw spend` (Python's f"{x:.6f}"; toFixed rounds the same way).
const fmtUsd = (x) => (isNum(x) ? "$" + x.toFixed(6) : dash);
const fmtPct = (r) => (isNum(r) ? (r * 100).toFixed(r && r < 0.001 ? 3 : 1) + "%" : dash);
const fmtNum = (x, d = 2) => (isNum(x) ? x.toFixed(d) : dash);
// A rate: two significant digits when small (5 requests a day is 0.000058/s, not 0.000).
const fmtRate = (x) => (!isNum(x) ? dash : x === 0 || x >= 0.1 ? x.toFixed(2) : String(Number(x.toPrecision(2))));
function fmtMs(ms) {
  if (!isNum(ms)) return dash;
  if (ms >= 1000) return (ms / 1000).toFixed(2) + " s";
  return ms.toFixed(ms < 10 ? 2 : ms < 100 ? 1 : 0) + " ms";
}
function fmtBytes(b) {
  if (!isNum(b)) return dash;
  const units = ["B", "KB", "MB", "GB"];
  let i = 0;
  while (b >= 1024 && i < units.length - 1) { b /= 1024; i++; }
  return (i ? b.toFixed(1) : String(b)) + " " + units[i];
}
const fmtTime = (ts) => (isNum(ts) ? new Date(ts * 1000).toISOString().slice(0, 19).replace("T", " ") : dash);
const fmtClock = (ts) => new Date(ts * 1000).toISOString().slice(11, 16);

// Python's repr of a float (what `llmgw spend --format csv` writes): shortest round-trip digits,
// exponent below 1e-4 and from 1e16, always a decimal point or an exponent.
function pyFloat(x) {
  if (!Number.isFinite(x)) return Number.isNaN(x) ? "nan" : x > 0 ? "inf" : "-inf";
  if (x === 0) return Object.is(x, -0) ? "-0.0" : "0.0";
  const a = Math.abs(x);
  if (a < 1e-4 || a >= 1e16) {
    const [m, e] = x.toExponential().split("e");
    const n = Number(e);
    return `${m}e${n < 0 ? "-" : "+"}${String(Math.abs(n)).padStart(2, "0")}`;
  }
  const str = String(x);
  return str.includes(".") ? str : str + ".0";
}
function csvField(v) {
  const str = v === null || v === undefined ? "" : typeof v === "number" && !Number.isInteger(v) ? pyFloat(v) : String(v);
  return /[",\r\n]/.test(str) ? '"' + str.replaceAll('"', '""') + '"' : str;
}

// ---- the admin API -------------------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(method, path, { body, signal, key, text = false } = {}) {
  const token = key ?? sessionStorage.getItem(KEY_SLOT);
  const headers = { authorization: `Bearer ${token}` };
  if (body !== undefined) headers["content-type"] = "application/json";
  let resp;
  try {
    resp = await fetch(path, { method, headers, signal, cache: "no-store", credentials: "omit",
                               body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (exc) {
    if (exc.name === "AbortError") throw exc;
    throw new ApiError(0, `${method} ${path.split("?")[0]}: the gateway cannot be reached (${exc.message})`);
  }
  const raw = await resp.text();
  let data = null;
  if ((resp.headers.get("content-type") || "").includes("json")) {
    try { data = JSON.parse(raw); } catch { data = null; }
  }
  if (!resp.ok) {
    const err = data && data.error;
    const message = (err && err.message) || raw.slice(0, 300) || resp.statusText;
    const exc = new ApiError(resp.status, `${method} ${path.split("?")[0]}: HTTP ${resp.status}: ${message}`,
                             err && err.code);
    if (resp.status === 401 && key === undefined) signOut(exc.message);
    throw exc;
  }
  if (text) return raw;
  if (data === null) throw new ApiError(resp.status, `${method} ${path.split("?")[0]}: the answer is not JSON`);
  return data;
}

const qs = (params) => {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== "" && v !== null && v !== undefined) q.set(k, v);
  const out = q.toString();
  return out ? "?" + out : "";
};

// ---- refreshing ----------------------------------------------------------------------------------
// Runs `fn` now and every `ms` (if given) while the page is shown and the tab visible; `now()`
// runs it again at once (a Refresh button, after a change). One run at a time.
class Poller {
  constructor(fn, ms) {
    Object.assign(this, { fn, ms, timer: null, running: false, again: false, stopped: false });
    this.onVisible = () => { if (!document.hidden) this.now(); else this.clear(); };
    document.addEventListener("visibilitychange", this.onVisible);
    this.now();
  }
  clear() { clearTimeout(this.timer); this.timer = null; }
  async now() {
    if (this.stopped) return;
    if (this.running) { this.again = true; return; }
    this.clear();
    if (document.hidden) return;
    this.running = true;
    try { await this.fn(); } catch (exc) { if (exc.name !== "AbortError") console.error("dashboard:", exc.message); }
    this.running = false;
    if (this.stopped) return;
    if (this.again) { this.again = false; this.now(); } else if (this.ms && !document.hidden) {
      this.timer = setTimeout(() => this.now(), this.ms);
    }
  }
  stop() { this.stopped = true; this.clear(); document.removeEventListener("visibilitychange", this.onVisible); }
}

// The frame every page shares: heading, toolbar, error line, body, "updated at".
function frame(root, title, signal) {
  const err = h("p", { class: "err", role: "alert", hidden: true });
  const stamp = h("span", { class: "stamp" });
  const toolbar = h("div", { class: "toolbar" });
  const body = h("div");
  root.append(h("h1", { text: title }), toolbar, err, body);
  return {
    toolbar, body, stamp,
    ok() { err.hidden = true; err.textContent = ""; stamp.textContent = "updated " + new Date().toLocaleTimeString(); },
    fail(exc) {
      if (exc.name === "AbortError" || signal.aborted) return;
      err.textContent = exc.message;
      err.hidden = false;
    },
  };
}

function table(columns, rows, { rowAttrs, foot } = {}) {
  const head = h("tr", null, columns.map((c) => h("th", { scope: "col", class: c.num ? "num" : null, text: c.title })));
  const body = rows.map((r, i) => h("tr", rowAttrs ? rowAttrs(r, i) : null,
    columns.map((c) => { const v = c.get(r); return h("td", { class: c.num ? "num" : null, "data-col": c.key }, v); })));
  return h("div", { class: "scroll" }, h("table", null, h("thead", null, head), h("tbody", null, body),
    foot ? h("tfoot", null, foot) : null));
}
const col = (key, title, get, num = false) => ({ key, title, get: get || ((r) => r[key] ?? dash), num });
const statusBadge = (st) => {
  const good = st === "active" || st === "closed" || (isNum(st) && st < 400);
  const bad = st === "revoked" || st === "expired" || st === "open" || (isNum(st) && st >= 400);
  return h("span", { class: `status ${good ? "good" : bad ? "bad" : "neutral"}`, text: st ?? dash });
};
function tile(key, name, value) {
  return h("div", { class: "tile", "data-tile": key }, h("div", { class: "k", text: name }), h("div", { class: "v", text: value }));
}
function segmented(label, options, value, onPick) {
  const wrap = h("div", { class: "seg", role: "group", "aria-label": label });
  for (const [v, text] of options) {
    wrap.append(h("button", { type: "button", "aria-pressed": String(v === value), "data-value": v, text,
      onclick: () => {
        for (const b of wrap.children) b.setAttribute("aria-pressed", String(b.dataset.value === String(v)));
        onPick(v);
      } }));
  }
  return wrap;
}
const field = (label, input) => h("label", { class: "field" }, h("span", { text: label }), input);
// A group of buttons is not labelable: its caption is a plain span (the group has an aria-label).
const group = (label, seg) => h("div", { class: "field" }, h("span", { text: label, "aria-hidden": "true" }), seg);

// ---- charts (hand-drawn SVG) ---------------------------------------------------------------------
const W = 320, H = 130, PAD = { l: 48, r: 8, t: 8, b: 18 };
function chart(title, points, series, { fmt = (x) => fmtNum(x), bars = false, from, to, first, last } = {}) {
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img" });
  const pw = W - PAD.l - PAD.r, ph = H - PAD.t - PAD.b;
  const values = series.flatMap((se) => points.map(se.get)).filter(isNum);
  const max = Math.max(0, ...values) || 1;
  const t0 = from ?? (points.length ? points[0].t : 0), t1 = to ?? (points.length ? points[points.length - 1].t : 1);
  const span = Math.max(t1 - t0, 1);
  const x = (t) => PAD.l + ((t - t0) / span) * pw;
  const y = (v) => PAD.t + ph - (v / max) * ph;
  for (const f of [0, 0.5, 1]) {
    svg.append(s("line", { class: "grid", x1: PAD.l, x2: W - PAD.r, y1: y(max * f), y2: y(max * f) }),
               s("text", { class: "axis", x: PAD.l - 4, y: y(max * f) + 3, "text-anchor": "end", text: fmt(max * f) }));
  }
  svg.append(s("text", { class: "axis", x: PAD.l, y: H - 4, text: first ?? fmtClock(t0) }),
             s("text", { class: "axis", x: W - PAD.r, y: H - 4, "text-anchor": "end", text: last ?? fmtClock(t1) }));
  const step = points.length > 1 ? points[1].t - points[0].t : span;
  series.forEach((se, si) => {
    if (bars) {
      const bw = Math.max(1, (step / span) * pw * 0.8 / series.length);
      for (const p of points) {
        const v = se.get(p);
        if (!isNum(v) || v <= 0) continue;
        svg.append(s("rect", { x: x(p.t) + si * bw, y: y(v), width: bw, height: PAD.t + ph - y(v), fill: se.color }));
      }
      return;
    }
    let run = [];
    const flush = () => {
      if (run.length === 1) svg.append(s("circle", { cx: run[0][0], cy: run[0][1], r: 1.8, fill: se.color }));
      else if (run.length) svg.append(s("polyline", { points: run.map((q) => q.join(",")).join(" "), fill: "none",
                                                        stroke: se.color, "stroke-width": 1.6 }));
      run = [];
    };
    for (const p of points) {
      const v = se.get(p);
      if (isNum(v)) run.push([x(p.t).toFixed(1), y(v).toFixed(1)]); else flush();
    }
    flush();
  });
  const latest = series.map((se) => {
    const last = [...points].reverse().find((p) => isNum(se.get(p)));
    return `${se.name} ${last ? fmt(se.get(last)) : dash}`;
  }).join(", ");
  svg.setAttribute("aria-label", `${title}: latest ${latest}`);
  svg.prepend(s("title", { text: `${title}: latest ${latest}` }));
  const legend = series.length > 1 ? h("div", { class: "legend" },
    series.map((se) => h("span", null, h("i", { style: `background:${se.color}` }), se.name))) : null;
  return h("figure", { class: "chart", style: "margin:0" }, h("h3", { text: title }), svg, legend);
}

// ---- pages ---------------------------------------------------------------------------------------
const prefs = { window: 3600, group: "*", spendBy: "team", from: "", to: "", filters: { key: "", model: "", status: "" } };

function overview(root, signal) {
  const f = frame(root, "Overview", signal);
  const groupSel = h("select", { id: "ov-group" }, h("option", { value: "*", text: "all model groups" }));
  groupSel.addEventListener("change", () => { prefs.group = groupSel.value; draw(); });
  const win = segmented("Window", [[3600, "1 h"], [86400, "24 h"]], prefs.window, (v) => { prefs.window = v; poll.now(); });
  f.toolbar.append(field("Model group", groupSel), group("Window", win), f.stamp);
  const tiles = h("div", { class: "tiles" }), charts = h("div", { class: "charts" });
  const sampled = h("p", { class: "notice", hidden: true });
  f.body.append(sampled, tiles, charts);
  let data = null;
  function draw() {
    if (!data) return;
    if (prefs.group !== "*" && !(data.groups || []).includes(prefs.group)) prefs.group = "*";
    const t = (prefs.group === "*" ? data.totals : (data.group_totals || {})[prefs.group]) || {};
    tiles.replaceChildren(
      tile("requests", "Requests", fmtInt(t.requests)), tile("rps", "Requests/s", fmtRate(t.rps)),
      tile("error_rate", "Error rate", fmtPct(t.error_rate)), tile("p50_ms", "Latency p50", fmtMs(t.p50_ms)),
      tile("p99_ms", "Latency p99", fmtMs(t.p99_ms)), tile("ttft_p50_ms", "TTFT p50", fmtMs(t.ttft_p50_ms)),
      tile("tokens_in", "Tokens in", fmtInt(t.tokens_in)), tile("tokens_out", "Tokens out", fmtInt(t.tokens_out)),
      tile("cost_usd", "Cost", fmtUsd(t.cost_usd)));
    const groups = data.groups || [];
    const have = [...groupSel.options].map((o) => o.value).slice(1);
    if (have.join("\n") !== groups.join("\n")) {
      groupSel.replaceChildren(h("option", { value: "*", text: "all model groups" }),
                               ...groups.map((g) => h("option", { value: g, text: g })));
    }
    groupSel.value = prefs.group;
    sampled.hidden = !data.sampled;
    sampled.textContent = data.sampled ? `More requests than the gateway holds for the overview: the figures cover only ` +
      `the newest ones, since ${fmtTime(data.complete_since)} UTC.` : "";
    const pts = (data.series || {})[prefs.group] || [];
    const step = data.step || 60, start = data.from ?? data.now - data.window;
    const opts = { from: start, to: start + data.window, first: data.window === 3600 ? "−1 h" : "−24 h", last: "now" };
    charts.replaceChildren(
      chart("Requests/s", pts, [{ name: "req/s", get: (p) => p.requests / step, color: "#1c7ed6" }],
            { ...opts, bars: true, fmt: fmtRate }),
      chart("Latency", pts, [{ name: "p50", get: (p) => p.p50_ms, color: "#1c7ed6" },
                             { name: "p99", get: (p) => p.p99_ms, color: "#e8590c" }], { ...opts, fmt: fmtMs }),
      chart("Time to first token (p50)", pts, [{ name: "TTFT p50", get: (p) => p.ttft_p50_ms, color: "#7048e8" }],
            { ...opts, fmt: fmtMs }),
      chart("Error rate", pts, [{ name: "errors", get: (p) => (p.requests ? p.errors / p.requests : null), color: "#c92a2a" }],
            { ...opts, fmt: fmtPct }),
      chart("Tokens", pts, [{ name: "in", get: (p) => p.tokens_in, color: "#1c7ed6" },
                            { name: "out", get: (p) => p.tokens_out, color: "#2b8a3e" }], { ...opts, bars: true, fmt: fmtInt }),
      chart("Cost", pts, [{ name: "USD", get: (p) => p.cost_usd, color: "#e8590c" }],
            { ...opts, bars: true, fmt: (v) => "$" + v.toFixed(v && v < 0.01 ? 5 : 2) }));
  }
  const poll = new Poller(async () => {
    try {
      data = await api("GET", `/admin/overview${qs({ window: prefs.window })}`, { signal });
      f.ok();
      draw();
    } catch (exc) { f.fail(exc); }
  }, REFRESH_MS);
  return poll;
}

function spend(root, signal) {
  const f = frame(root, "Spend", signal);
  const by = segmented("Group by", [["team", "Team"], ["key", "Key"], ["user", "User"], ["model", "Model"], ["day", "Day"]],
                       prefs.spendBy, (v) => { prefs.spendBy = v; poll.now(); });
  const from = h("input", { type: "date", id: "spend-from", value: prefs.from });
  const to = h("input", { type: "date", id: "spend-to", value: prefs.to });
  from.addEventListener("change", () => { prefs.from = from.value; poll.now(); });
  to.addEventListener("change", () => { prefs.to = to.value; poll.now(); });
  const exportBtn = h("button", { type: "button", text: "Export CSV", disabled: true, onclick: () => download() });
  f.toolbar.append(group("Group by", by), field("From (UTC)", from), field("To (UTC, exclusive)", to),
                   h("button", { type: "button", text: "Refresh", onclick: () => poll.now() }), exportBtn, f.stamp);
  let shown = null;
  // The columns and values of `llmgw spend --format csv`, so both files are the same bytes.
  function download() {
    const { rows, groupBy } = shown;
    const columns = [groupBy, "requests", "prompt_tokens", "completion_tokens", "cached_tokens", "cost_usd",
                     "cost_saved_usd", "unpriced_requests"];
    const floats = new Set(["cost_usd", "cost_saved_usd"]);
    const lines = [columns.join(","), ...rows.map((r) => columns.map((c) =>
      floats.has(c) && isNum(r[c]) ? pyFloat(r[c]) : csvField(r[c])).join(","))];
    const url = URL.createObjectURL(new Blob([lines.join("\n") + "\n"], { type: "text/csv" }));
    const a = h("a", { href: url, download: `spend-by-${groupBy}.csv`, hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }
  const poll = new Poller(async () => {
    const groupBy = prefs.spendBy;
    try {
      const [out, keys] = await Promise.all([
        api("GET", `/admin/spend${qs({ group_by: groupBy, from: prefs.from, to: prefs.to })}`, { signal }),
        groupBy === "key" ? api("GET", "/admin/keys", { signal }) : null]);
      const rows = out.data || [];
      const byId = new Map(((keys && keys.data) || []).map((k) => [k.id, k]));
      const name = (r) => (r[groupBy] === null || r[groupBy] === undefined ? "-" : String(r[groupBy]));
      const columns = [col("name", groupBy === "key" ? "Key id" : groupBy[0].toUpperCase() + groupBy.slice(1), name)];
      if (groupBy === "key") {
        const k = (r) => byId.get(r.key) || {};
        columns.push(col("key_name", "Key name", (r) => k(r).name ?? dash),
                     col("budget", "Budget", (r) => (k(r).budget ? `$${k(r).budget.usd}/${k(r).budget.period}` : dash)),
                     col("spent", "Spent this period", (r) => (k(r).budget ? fmtUsd(k(r).budget.spent_usd) : dash), true),
                     col("status", "Status", (r) => (k(r).status ? statusBadge(k(r).status) : dash)));
      }
      columns.push(col("requests", "Requests", (r) => fmtInt(r.requests), true),
                   col("prompt_tokens", "Prompt tokens", (r) => fmtInt(r.prompt_tokens), true),
                   col("completion_tokens", "Completion tokens", (r) => fmtInt(r.completion_tokens), true),
                   col("cached_tokens", "Cached tokens", (r) => fmtInt(r.cached_tokens), true),
                   col("cost_usd", "Cost", (r) => fmtUsd(r.cost_usd), true),
                   col("cost_saved_usd", "Saved by cache", (r) => fmtUsd(r.cost_saved_usd), true),
                   col("unpriced_requests", "Unpriced", (r) => fmtInt(r.unpriced_requests), true));
      const sum = (k) => rows.reduce((acc, r) => acc + (r[k] || 0), 0);
      const totals = { requests: fmtInt(sum("requests")), prompt_tokens: fmtInt(sum("prompt_tokens")),
                       completion_tokens: fmtInt(sum("completion_tokens")), cached_tokens: fmtInt(sum("cached_tokens")),
                       cost_usd: fmtUsd(sum("cost_usd")), cost_saved_usd: fmtUsd(sum("cost_saved_usd")),
                       unpriced_requests: fmtInt(sum("unpriced_requests")) };
      const foot = h("tr", { class: "total" }, columns.map((c, i) =>
        h("td", { class: c.num ? "num" : null, "data-col": c.key, text: i === 0 ? "Total" : totals[c.key] ?? "" })));
      shown = { rows, groupBy };
      exportBtn.disabled = false;
      f.body.replaceChildren(rows.length ? table(columns, rows, { foot, rowAttrs: (r) => ({ "data-name": name(r) }) })
        : h("p", { class: "muted", text: "No spend in this range." }));
      f.ok();
    } catch (exc) { f.fail(exc); }
  });
  return poll;
}

function keyFields(form, editing) {
  const v = (n) => form.elements[n].value.trim();
  const out = {};
  const text = (n) => { if (v(n) || editing) out[n] = v(n) || null; };
  if (!editing || v("name")) out.name = v("name");
  text("team");
  text("user");
  if (v("models") || editing) out.models = v("models") ? v("models").split(",").map((m) => m.trim()).filter(Boolean) : null;
  for (const n of ["rpm", "tpm"]) if (v(n) || editing) out[n] = v(n) ? Number(v(n)) : null;
  if (v("budget_usd")) out.budget = { usd: Number(v("budget_usd")), period: v("budget_period") };
  else if (editing) out.budget = null;
  return out;
}

function keyForm(id, legend, submitText, rec) {
  const b = (rec && rec.budget) || {};
  const inp = (name, label, value, extra = {}) => field(label, h("input", { name, id: `${id}-${name}`, value: value ?? "", ...extra }));
  const period = h("select", { name: "budget_period", id: `${id}-budget_period` },
    ["day", "week", "month", "total"].map((p) => h("option", { value: p, text: p, selected: p === (b.period || "month") })));
  const err = h("p", { class: "err", role: "alert", hidden: true });
  const form = h("form", { id, class: "card", novalidate: true, "aria-label": legend },
    h("h2", { text: legend, style: "margin-top:0" }),
    h("div", { class: "form-grid" },
      inp("name", "Name", rec && rec.name, { required: !rec }), inp("team", "Team", rec && rec.team),
      inp("user", "User", rec && rec.user),
      inp("models", "Models (comma-separated; empty: all)", rec && rec.models ? rec.models.join(",") : ""),
      inp("rpm", "Requests/min", rec && rec.rpm, { type: "number", step: 1 }),
      inp("tpm", "Tokens/min", rec && rec.tpm, { type: "number", step: 1 }),
      inp("budget_usd", "Budget (USD)", b.usd, { type: "number", step: "any" }), field("Budget period", period),
      h("button", { type: "submit", class: "primary", text: submitText })),
    err);
  form.showError = (exc) => { err.textContent = exc ? exc.message : ""; err.hidden = !exc; };
  return form;
}

function keys(root, signal) {
  const f = frame(root, "Keys", signal);
  f.toolbar.append(h("button", { type: "button", text: "Refresh", onclick: () => poll.now() }), f.stamp);
  const notice = h("div", { class: "notice", id: "new-key", role: "status", hidden: true });
  const create = keyForm("key-create", "Create a key", "Create key");
  const editSlot = h("div"), list = h("div");
  f.body.append(create, notice, editSlot, list);
  function showKey(out, what) {
    notice.replaceChildren(
      h("strong", { text: `${what} key for ${out.name} (${out.id}). Copy it now: it is not shown again.` }),
      h("code", { id: "new-key-value", text: out.key }),
      h("button", { type: "button", text: "Dismiss", onclick: () => { notice.replaceChildren(); notice.hidden = true; } }));
    notice.hidden = false;
  }
  create.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const out = await api("POST", "/admin/keys", { body: keyFields(create, false), signal });
      create.showError(null);
      create.reset();
      showKey(out, "New");
      poll.now();
    } catch (exc) { if (exc.name !== "AbortError") create.showError(exc); }
  });
  function edit(rec) {
    const form = keyForm("key-edit", `Edit ${rec.name} (${rec.id})`, "Save changes", rec);
    form.querySelector(".form-grid").append(h("button", { type: "button", text: "Cancel", onclick: () => editSlot.replaceChildren() }));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      try {
        await api("PATCH", `/admin/keys/${encodeURIComponent(rec.id)}`, { body: keyFields(form, true), signal });
        editSlot.replaceChildren();
        poll.now();
      } catch (exc) { if (exc.name !== "AbortError") form.showError(exc); }
    });
    editSlot.replaceChildren(form);
    form.elements.name.focus();
  }
  async function act(rec, what) {
    const verb = what === "rotate" ? "Rotate" : "Revoke";
    const warning = what === "rotate" ? "A new key with the same settings replaces it; the old key stops working."
                                      : "It stops working from the next request on.";
    if (!confirm(`${verb} key ${rec.name} (${rec.id})? ${warning}`)) return;
    try {
      const path = `/admin/keys/${encodeURIComponent(rec.id)}`;
      if (what === "rotate") showKey(await api("POST", `${path}/rotate`, { signal }), "Rotated");
      else await api("DELETE", path, { signal });
      poll.now();
    } catch (exc) { f.fail(exc); }
  }
  const poll = new Poller(async () => {
    try {
      const out = await api("GET", "/admin/keys", { signal });
      const rows = out.data || [];
      const live = (r) => r.status === "active";
      list.replaceChildren(rows.length ? table([
        col("name", "Name"), col("id", "ID", (r) => h("code", { text: r.id })), col("team", "Team"), col("user", "User"),
        col("last4", "Key", (r) => h("code", { text: `…${r.last4 || ""}` })),
        col("models", "Models", (r) => (r.models ? r.models.join(", ") : "all")),
        col("rpm", "RPM", (r) => fmtInt(r.rpm), true), col("tpm", "TPM", (r) => fmtInt(r.tpm), true),
        col("budget", "Budget", (r) => (r.budget ? `$${r.budget.usd}/${r.budget.period}` : dash)),
        col("spent", "Spent this period", (r) => (r.budget ? fmtUsd(r.budget.spent_usd) : dash), true),
        col("status", "Status", (r) => statusBadge(r.status)), col("created_at", "Created (UTC)", (r) => fmtTime(r.created_at)),
        col("actions", "Actions", (r) => (live(r) ? [
          h("button", { type: "button", text: "Edit", "aria-label": `Edit ${r.name}`, onclick: () => edit(r) }), " ",
          h("button", { type: "button", text: "Rotate", "aria-label": `Rotate ${r.name}`, onclick: () => act(r, "rotate") }), " ",
          h("button", { type: "button", class: "danger", text: "Revoke", "aria-label": `Revoke ${r.name}`,
                        onclick: () => act(r, "revoke") })] : "")),
      ], rows, { rowAttrs: (r) => ({ "data-key-id": r.id, class: r.status }) }) : h("p", { class: "muted", text: "No keys yet." }));
      f.ok();
    } catch (exc) { f.fail(exc); }
  });
  return poll;
}

function routing(root, signal) {
  const f = frame(root, "Routing", signal);
  f.toolbar.append(f.stamp);
  const poll = new Poller(async () => {
    try {
      const out = await api("GET", "/admin/routing", { signal });
      const cards = (out.groups || []).map((g) => {
        const chain = h("div", { class: "chain", "aria-label": `Fallback chain of ${g.name}` },
          h("span", { class: "muted", text: "Fallbacks:" }), h("span", { class: "hop", text: g.name }),
          (g.fallbacks || []).length ? g.fallbacks.map((fb) => ["→",
            h("span", { class: "hop", "data-fallback": fb.to, text: `${fb.to} (on ${(fb.on || []).join(", ") || "any failure"})` })])
            : h("span", { class: "muted", text: "none" }));
        const breaker = (b) => (b && typeof b === "object" ? b.state ?? JSON.stringify(b) : b);
        return h("section", { class: "card", "data-group": g.name },
          h("h2", { style: "margin-top:0" }, g.name, " ", h("span", { class: "muted", text: [
            `strategy ${g.strategy || dash}`, isNum(g.retries) ? `retries ${g.retries}` : "",
            isNum(g.timeout) ? `deadline ${g.timeout} s` : "", isNum(g.hedge_after) ? `hedge after ${g.hedge_after} s` : "",
          ].filter(Boolean).join(" · ") })),
          chain,
          table([col("name", "Deployment"), col("upstream", "Upstream"), col("provider", "Provider"), col("model", "Model"),
                 col("weight", "Weight", (r) => fmtNum(r.weight, 2), true), col("in_flight", "In flight", (r) => fmtInt(r.in_flight), true),
                 col("latency_ms", "Latency", (r) => fmtMs(r.latency_ms), true),
                 col("error_rate", "Error rate", (r) => fmtPct(r.error_rate), true),
                 col("requests", "Requests", (r) => fmtInt(r.requests), true),
                 col("breaker", "Breaker", (r) => [statusBadge(breaker(r.breaker)), r.breaker_reason ? ` ${r.breaker_reason}` : ""])],
                g.deployments || [], { rowAttrs: (r) => ({ "data-deployment": r.name }) }));
      });
      f.body.replaceChildren(h("p", { class: "muted", text: `Live figures from worker ${out.worker ?? dash}` + (out.workers > 1 ? ` of ${out.workers} (each worker routes on its own view).` : ".") }), ...cards);
      f.ok();
    } catch (exc) { f.fail(exc); }
  }, REFRESH_MS);
  return poll;
}

function cache(root, signal) {
  const f = frame(root, "Cache", signal);
  f.toolbar.append(f.stamp);
  const note = h("p", { class: "notice", role: "status", hidden: true });
  const content = h("div");
  f.body.append(note, content);
  async function flush(ns) {
    if (!confirm(`Flush every cached answer in namespace "${ns}"?`)) return;
    try {
      const out = await api("DELETE", `/admin/cache/namespaces/${encodeURIComponent(ns)}`, { signal });
      note.textContent = `Flushed ${out.flushed} entries from namespace "${ns}".`;
      note.hidden = false;
      poll.now();
    } catch (exc) { f.fail(exc); }
  }
  const poll = new Poller(async () => {
    try {
      const c = await api("GET", "/admin/cache", { signal });
      const kinds = [["hit", "exact hit"], ["semantic-hit", "semantic hit"], ["coalesced", "coalesced"], ["miss", "miss"]];
      const lookups = kinds.reduce((a, [k]) => a + (c[k] || 0), 0);
      const served = lookups - (c.miss || 0);
      const ns = Object.entries(c.namespaces || {}).sort((a, b) => b[1] - a[1]);
      content.replaceChildren(
        h("div", { class: "tiles" },
          tile("hit_rate", "Hit rate", lookups ? fmtPct(served / lookups) : dash), tile("saved_usd", "Saved", fmtUsd(c.saved_usd)),
          tile("entries", "Entries", fmtInt(c.entries)), tile("bytes", "Size", fmtBytes(c.bytes)),
          tile("stored", "Stored", fmtInt(c.stored)), tile("bypass", "Bypassed", fmtInt(c.bypass)),
          tile("evicted", "Evicted", fmtInt(c.evicted)), tile("expired", "Expired", fmtInt(c.expired))),
        h("h2", { text: "Lookups by result" }),
        table([col("kind", "Result", (r) => r[1]), col("count", "Count", (r) => fmtInt(c[r[0]] || 0), true),
               col("share", "Share", (r) => (lookups ? fmtPct((c[r[0]] || 0) / lookups) : dash), true)],
              kinds, { rowAttrs: (r) => ({ "data-kind": r[0] }) }),
        h("h2", { text: "Namespaces" }),
        ns.length ? table([col("ns", "Namespace", (r) => h("code", { text: r[0] })), col("entries", "Entries", (r) => fmtInt(r[1]), true),
                           col("flush", "", (r) => h("button", { type: "button", class: "danger", text: "Flush",
                               "aria-label": `Flush namespace ${r[0]}`, onclick: () => flush(r[0]) }))],
                          ns, { rowAttrs: (r) => ({ "data-namespace": r[0] }) })
          : h("p", { class: "muted", text: "No entries." }));
      f.ok();
    } catch (exc) {
      if (exc.status === 404) {
        content.replaceChildren(h("p", { class: "notice", id: "cache-off", text: "cache not configured (no cache: section in the config)" }));
        f.ok();
      } else f.fail(exc);
    }
  }, REFRESH_MS);
  return poll;
}

const HIDDEN_FIELDS = /^(messages|prompt|input|content|body|text|completion|response|output|attempts|timings)$/;

function attemptsTimeline(attempts, total) {
  const rowH = 22, left = 150, width = 640;
  const end = Math.max(total || 0, ...attempts.map((a) => (a.start_ms || 0) + (a.duration_ms || 0)), 1);
  const x = (ms) => left + (ms / end) * (width - left - 10);
  const svg = s("svg", { viewBox: `0 0 ${width} ${attempts.length * rowH + 20}`, role: "img",
                         "aria-label": `Timeline of ${attempts.length} attempts over ${fmtMs(end)}` });
  attempts.forEach((a, i) => {
    const yy = i * rowH + 4, ok = isNum(a.status) ? a.status < 400 : !a.error;
    const flags = ["fallback", "retry", "hedge", "cancelled"].filter((k) => a[k]).join(" ");
    svg.append(
      s("text", { x: 0, y: yy + 13, "font-size": 11, text: `${i + 1}. ${a.deployment ?? dash}${flags ? " · " + flags : ""}` }),
      s("rect", { x: x(a.start_ms || 0), y: yy, height: rowH - 8, rx: 2, fill: ok ? "#40c057" : "#fa5252",
                  width: Math.max(2, x((a.start_ms || 0) + (a.duration_ms || 0)) - x(a.start_ms || 0)) },
        s("title", { text: `${a.deployment}: ${a.status ?? ""} ${a.error ?? ""} at ${fmtMs(a.start_ms)} for ${fmtMs(a.duration_ms)}` })));
  });
  const yAxis = attempts.length * rowH + 14;
  svg.append(s("text", { class: "axis", x: left, y: yAxis, text: "0" }),
             s("text", { class: "axis", x: width - 10, y: yAxis, "text-anchor": "end", text: fmtMs(end) }));
  return h("div", { class: "timeline" }, svg);
}

function requests(root, signal) {
  const f = frame(root, "Requests", signal);
  const inputs = {};
  const form = h("form", { class: "toolbar", style: "margin:0", "aria-label": "Filters" },
    ["key", "model", "status"].map((k) => field({ key: "Key id", model: "Model", status: "Status" }[k],
      inputs[k] = h("input", { id: `req-${k}`, value: prefs.filters[k], size: k === "status" ? 5 : 18 }))),
    h("button", { type: "submit", class: "primary", text: "Apply" }),
    h("button", { type: "button", text: "Clear", onclick: () => { for (const k in inputs) inputs[k].value = ""; form.requestSubmit(); } }));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    for (const k in inputs) prefs.filters[k] = inputs[k].value.trim();
    poll.now();
  });
  f.toolbar.append(form, h("button", { type: "button", text: "Refresh", onclick: () => poll.now() }), f.stamp);
  const list = h("div"), detail = h("section", { id: "request-detail", class: "card", hidden: true, "aria-label": "Request detail" });
  f.body.append(detail, list);
  let open = null;
  async function show(id) {
    open = id;
    for (const tr of list.querySelectorAll("tr.pick")) tr.classList.toggle("on", tr.dataset.requestId === id);
    detail.hidden = false;
    detail.replaceChildren(h("p", { class: "muted", text: `Loading ${id}…` }));
    try {
      const r = await api("GET", `/admin/requests/${encodeURIComponent(id)}`, { signal });
      if (open !== id) return;
      // The ledger row (every worker's), then what the serving worker still holds in memory:
      // attempts and timings (null once it has served RECENT more requests, or on another worker).
      const attempts = Array.isArray(r.attempts) ? r.attempts : [];
      const extra = Object.fromEntries(Object.entries(r).filter(([k, v]) => v !== null && !(r.ledger && k in r.ledger)));
      const fields = { ...(r.ledger || {}), ...extra };
      const shown = Object.entries(fields).filter(([k, v]) => !HIDDEN_FIELDS.test(k) && k !== "object" &&
                                                             (v === null || typeof v !== "object"));
      const fmt = (k, v) => (k === "ts" || k === "started_at" ? fmtTime(v) : k.endsWith("_ms") ? fmtMs(v)
                             : k.endsWith("_usd") ? fmtUsd(v) : v ?? dash);
      const timings = r.timings && typeof r.timings === "object" ? Object.entries(r.timings) : [];
      const total = (r.timings && r.timings.duration_ms) ?? (r.ledger && r.ledger.latency_ms);
      fill(detail,
        h("div", { class: "toolbar" }, h("h2", { style: "margin:0", text: `Request ${r.request_id ?? id}` }),
          h("button", { type: "button", text: "Close", onclick: () => { open = null; detail.hidden = true; } })),
        r.ledger ? null : h("p", { class: "muted", text: "Not in the ledger yet (it is written in batches)." }),
        h("dl", { class: "kv" }, shown.map(([k, v]) => [h("dt", { text: k }), h("dd", { "data-field": k, text: fmt(k, v) })])),
        h("h3", { text: `Attempts (${attempts.length})` }),
        attempts.length ? [attemptsTimeline(attempts, total),
          table([col("deployment", "Deployment"), col("status", "Status", (a) => statusBadge(a.status)), col("error", "Error"),
                 col("start_ms", "Start", (a) => fmtMs(a.start_ms), true), col("duration_ms", "Duration", (a) => fmtMs(a.duration_ms), true),
                 col("kind", "Kind", (a) => [a.fallback ? "fallback" : "", a.retry ? "retry" : "", a.hedge ? "hedge" : "",
                                             a.cancelled ? "cancelled" : ""].filter(Boolean).join(", ") || "first")], attempts)]
          : h("p", { class: "muted", text: r.in_memory === false
              ? `Attempts are kept by the worker that served the request, for its last requests; worker ${r.worker} no longer holds them.`
              : "No upstream attempt (answered by the gateway, e.g. from the cache)." }),
        timings.length ? [h("h3", { text: "Timings" }), h("dl", { class: "kv" },
          timings.map(([k, v]) => [h("dt", { text: k }), h("dd", { "data-timing": k, text: isNum(v) ? fmtMs(v) : v ?? dash })]))] : null);
    } catch (exc) {
      if (exc.name !== "AbortError" && open === id) fill(detail, h("p", { class: "err", role: "alert", text: exc.message }));
    }
  }
  const poll = new Poller(async () => {
    try {
      const out = await api("GET", `/admin/requests${qs({ limit: 100, ...prefs.filters })}`, { signal });
      const rows = out.data || [];
      list.replaceChildren(rows.length ? table([
        col("ts", "Time (UTC)", (r) => fmtTime(r.ts)),
        col("request_id", "Request", (r) => h("button", { type: "button", class: "mono", text: r.request_id,
            "aria-label": `Details of request ${r.request_id}`, onclick: (ev) => { ev.stopPropagation(); show(r.request_id); } })),
        col("key_id", "Key"), col("team", "Team"), col("model", "Model"), col("deployment", "Deployment"),
        col("status", "Status", (r) => statusBadge(r.status)), col("latency_ms", "Latency", (r) => fmtMs(r.latency_ms), true),
        col("ttft_ms", "TTFT", (r) => fmtMs(r.ttft_ms), true), col("prompt_tokens", "In", (r) => fmtInt(r.prompt_tokens), true),
        col("completion_tokens", "Out", (r) => fmtInt(r.completion_tokens), true), col("cost_usd", "Cost", (r) => fmtUsd(r.cost_usd), true),
        col("cache", "Cache"), col("error", "Error"),
      ], rows, { rowAttrs: (r) => ({ class: `pick${r.request_id === open ? " on" : ""}`, "data-request-id": r.request_id,
                                     onclick: () => show(r.request_id) }) })
        : h("p", { class: "muted", text: "No requests match." }));
      f.ok();
    } catch (exc) { f.fail(exc); }
  });
  return poll;
}

// The gateway's SVG, parsed as SVG (not HTML) and without anything that could run.
function safeSvg(text) {
  const doc = new DOMParser().parseFromString(text, "image/svg+xml");
  const root = doc.documentElement;
  if (root.nodeName !== "svg" || doc.querySelector("parsererror")) throw new Error("the diagram is not valid SVG");
  for (const el of root.querySelectorAll("script, foreignObject, iframe, object, embed")) el.remove();
  for (const el of [root, ...root.querySelectorAll("*")]) {
    for (const a of [...el.attributes]) {
      if (/^on/i.test(a.name) || (/href$/i.test(a.name) && !a.value.startsWith("#"))) el.removeAttribute(a.name);
    }
  }
  return document.importNode(root, true);
}

function architecture(root, signal) {
  const f = frame(root, "Architecture", signal);
  f.toolbar.append(h("span", { class: "muted", text: "The running configuration, with live figures; follows config reloads." }), f.stamp);
  const box = h("div", { class: "diagram", id: "diagram" }), figures = h("div");
  f.body.append(box, h("h2", { text: "Live figures" }), figures);
  const poll = new Poller(async () => {
    try {
      const [svg, model] = await Promise.all([api("GET", "/admin/diagram?format=svg", { signal, text: true }),
                                              api("GET", "/admin/diagram?format=json", { signal })]);
      box.replaceChildren(safeSvg(svg));
      const nodes = Array.isArray(model) ? model : model.nodes || [];
      const rows = nodes.filter((n) => (n.live || []).length);
      figures.replaceChildren(rows.length ? table([col("label", "Node", (n) => n.label ?? n.id), col("kind", "Kind", (n) => n.kind ?? dash),
        col("live", "Live", (n) => (Array.isArray(n.live) ? n.live : [n.live]).join(" · "))],
        rows, { rowAttrs: (n) => ({ "data-figures": n.id }) }) : h("p", { class: "muted", text: "No live figures yet." }));
      f.ok();
    } catch (exc) { f.fail(exc); }
  }, REFRESH_MS);
  return poll;
}

// ---- shell: sign-in, navigation --------------------------------------------------------------------
const PAGES = { overview, spend, keys, routing, cache, requests, architecture };
let current = null; // { poll, abort }

function stopPage() {
  if (!current) return;
  current.poll.stop();
  current.abort.abort();
  current = null;
}

function signOut(message) {
  stopPage();
  sessionStorage.removeItem(KEY_SLOT);
  $("#view").replaceChildren();
  $("#view").hidden = true;
  $("#nav").hidden = true;
  $("#logout").hidden = true;
  $("#login").hidden = false;
  const err = $("#login-error");
  err.textContent = message || "";
  err.hidden = !message;
  $("#master-key").focus();
}

function route() {
  if (!sessionStorage.getItem(KEY_SLOT)) { signOut(); return; }
  const name = (location.hash.match(/^#\/([a-z]+)/) || [])[1];
  if (!PAGES[name]) { location.replace("#/overview"); return; }
  stopPage();
  $("#login").hidden = true;
  $("#nav").hidden = false;
  $("#logout").hidden = false;
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.getAttribute("href") === `#/${name}`) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  const view = $("#view");
  view.replaceChildren();
  view.hidden = false;
  view.dataset.page = name;
  document.title = `${name[0].toUpperCase()}${name.slice(1)} · llmgw`;
  const abort = new AbortController();
  current = { abort, poll: PAGES[name](view, abort.signal) };
}

$("#login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const input = $("#master-key");
  const key = input.value.trim();
  input.value = "";
  if (!key) return;
  try {
    // Any admin call proves the key; a refused one is shown and nothing is kept.
    await api("GET", "/admin/keys", { key });
  } catch (exc) {
    if (exc.status === 0 || exc.status === 401 || exc.status === 403) { signOut(exc.message); return; }
  }
  sessionStorage.setItem(KEY_SLOT, key);
  $("#login-error").hidden = true;
  route();
});
$("#logout").addEventListener("click", () => signOut());
window.addEventListener("hashchange", route);
route();
