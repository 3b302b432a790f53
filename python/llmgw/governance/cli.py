"""`llmgw keys ...` and `llmgw spend`: the admin API from the command line.

    llmgw keys create --name ci --team research --rpm 60 --budget-usd 5 --budget-period day
    llmgw keys list | show ID | rotate ID | revoke ID | expire ID [--in SECONDS]
    llmgw keys update ID --rpm 120 --models gpt-4o,gpt-4o-mini
    llmgw spend --group-by team --from 2026-12-01 --format csv
    llmgw spend --config gateway.yaml          # read the store directly (the gateway may be down)

They talk to a running gateway at `--url` (or `LLMGW_URL`, default http://127.0.0.1:8080) with
the master key from `LLMGW_MASTER_KEY`; the key is never taken on the command line, where `ps`
and shell history would show it. `llmgw spend --config` reads the ledger from the configured
store instead, which needs no running gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import os
import sys
import time
import urllib.error
import urllib.request
from typing import Any

__all__ = ["add_keys_arguments", "add_spend_arguments", "run_keys", "run_spend"]

_DEFAULT_URL = "http://127.0.0.1:8080"


class CliError(Exception):
    pass


def _call(args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    master = os.environ.get("LLMGW_MASTER_KEY")
    if not master:
        raise CliError("set LLMGW_MASTER_KEY to the gateway's master key (governance.master_key)")
    url = (args.url or os.environ.get("LLMGW_URL") or _DEFAULT_URL).rstrip("/") + path
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"authorization": f"Bearer {master}", "content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read())["error"]["message"]
        except Exception:
            message = exc.reason
        raise CliError(f"{method} {path}: HTTP {exc.code}: {message}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise CliError(f"cannot reach the gateway at {url}: {getattr(exc, 'reason', exc)}") from None


# -- keys -------------------------------------------------------------------------------------------
def _key_fields(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field in ("name", "team", "user", "rpm", "tpm"):
        value = getattr(args, field, None)
        if value is not None:
            out[field] = value
    if args.models is not None:
        out["models"] = [m.strip() for m in args.models.split(",") if m.strip()] or None
    if args.budget_usd is not None:
        out["budget"] = {"usd": args.budget_usd, "period": args.budget_period}
    if args.expires_in is not None:
        out["expires_in"] = args.expires_in
    if args.metadata is not None:
        try:
            out["metadata"] = json.loads(args.metadata)
        except ValueError:
            raise CliError("--metadata must be a JSON object") from None
    return out


def _when(ts: Any) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ts)) if isinstance(ts, (int, float)) else "-"


def _key_table(keys: list[dict[str, Any]]) -> str:
    rows = [("ID", "NAME", "TEAM", "USER", "KEY", "RPM", "TPM", "BUDGET", "SPENT", "STATUS", "CREATED")]
    for k in keys:
        b = k.get("budget") or {}
        rows.append((k["id"], k["name"], k.get("team") or "-", k.get("user") or "-", f"...{k.get('last4', '')}",
                     str(k.get("rpm") or "-"), str(k.get("tpm") or "-"),
                     f"${b['usd']:g}/{b['period']}" if b else "-",
                     f"${b.get('spent_usd', 0):.4f}" if b else "-", k.get("status", ""), _when(k.get("created_at"))))
    return _table(rows)


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def run_keys(args: argparse.Namespace) -> int:
    try:
        action = args.action
        if action == "create":
            out = _call(args, "POST", "/admin/keys", _key_fields(args))
        elif action == "list":
            out = _call(args, "GET", "/admin/keys")
            if not args.json:
                print(_key_table(out["data"]))
                return 0
        elif action == "show":
            out = _call(args, "GET", f"/admin/keys/{args.id}")
        elif action == "update":
            fields = _key_fields(args)
            if not fields:
                raise CliError("nothing to change: give at least one of --name, --team, --user, --models, --rpm, "
                               "--tpm, --budget-usd, --expires-in, --metadata")
            out = _call(args, "PATCH", f"/admin/keys/{args.id}", fields)
        elif action == "rotate":
            out = _call(args, "POST", f"/admin/keys/{args.id}/rotate")
        elif action == "revoke":
            out = _call(args, "DELETE", f"/admin/keys/{args.id}")
        else:  # expire
            out = _call(args, "PATCH", f"/admin/keys/{args.id}", {"expires_in": args.seconds})
    except CliError as exc:
        print(f"llmgw keys: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(out, indent=2))
    if "key" in out:
        print("\nThe key is shown only this once; store it now.", file=sys.stderr)
    return 0


def add_keys_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", help=f"the gateway (default: $LLMGW_URL or {_DEFAULT_URL})")
    sub = p.add_subparsers(dest="action", required=True)

    def fields(q: argparse.ArgumentParser, create: bool) -> None:
        q.add_argument("--name", required=create)
        q.add_argument("--team")
        q.add_argument("--user")
        q.add_argument("--models", help="comma-separated model names the key may call (default: all)")
        q.add_argument("--rpm", type=int, help="requests per minute")
        q.add_argument("--tpm", type=int, help="tokens per minute")
        q.add_argument("--budget-usd", type=float)
        q.add_argument("--budget-period", default="month", choices=("day", "week", "month", "total"))
        q.add_argument("--expires-in", type=float, help="seconds until the key expires")
        q.add_argument("--metadata", help="a JSON object kept with the key")

    fields(sub.add_parser("create", help="create a key (its plaintext is shown once)"), True)
    q = sub.add_parser("list", help="every key, with its budget use")
    q.add_argument("--json", action="store_true")
    for action, help_ in (("show", "one key"), ("rotate", "a new key with the same settings; the old one is revoked"),
                          ("revoke", "revoke a key (from the next request on)")):
        sub.add_parser(action, help=help_).add_argument("id")
    q = sub.add_parser("update", help="change a key's owner, models, limits or budget")
    q.add_argument("id")
    fields(q, False)
    q = sub.add_parser("expire", help="make a key expire (now, or in --in seconds)")
    q.add_argument("id")
    q.add_argument("--in", dest="seconds", type=float, default=0.0)


# -- spend ------------------------------------------------------------------------------------------
async def _spend_from_store(config_path: str, group_by: str, since: float, until: float) -> list[dict[str, Any]]:
    from llmgw.config import load_config
    from llmgw.governance.stores import open_store
    from llmgw.providers import registry

    cfg = load_config(config_path, providers=registry)
    if cfg.governance is None:
        raise CliError(f"{config_path} has no governance section (no ledger)")
    g = cfg.governance
    store = open_store(g.store, g.sqlite_path, g.postgres_dsn)
    await store.open()
    try:
        return await store.spend(group_by, since, until)
    finally:
        await store.close()


def _format_spend(rows: list[dict[str, Any]], group_by: str, fmt: str) -> str:
    if fmt == "json":
        return json.dumps({"group_by": group_by, "total_usd": sum(r["cost_usd"] for r in rows), "data": rows},
                          indent=2)
    columns = [group_by, "requests", "prompt_tokens", "completion_tokens", "cached_tokens", "cost_usd",
               "cost_saved_usd", "unpriced_requests"]
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(columns)
        for r in rows:
            w.writerow([r[c] if r[c] is not None else "" for c in columns])
        return buf.getvalue().rstrip("\n")
    table = [tuple(c.upper() for c in columns)]
    for r in rows:
        table.append((str(r[group_by] if r[group_by] is not None else "-"), str(r["requests"]),
                      str(r["prompt_tokens"]), str(r["completion_tokens"]), str(r["cached_tokens"]),
                      f"{r['cost_usd']:.6f}", f"{r['cost_saved_usd']:.6f}", str(r["unpriced_requests"])))
    total = sum(r["cost_usd"] for r in rows)
    table.append(("TOTAL", str(sum(r["requests"] for r in rows)), "", "", "", f"{total:.6f}", "", ""))
    return _table(table)


def run_spend(args: argparse.Namespace) -> int:
    from llmgw.governance.admin import parse_when

    try:
        since = parse_when(args.since, 0.0)
        until = parse_when(args.until, time.time() + 86400)
        if args.config:
            rows = asyncio.run(_spend_from_store(args.config, args.group_by, since, until))
        else:
            q = f"/admin/spend?group_by={args.group_by}&from={since}&to={until}"
            rows = _call(args, "GET", q)["data"]
    except CliError as exc:
        print(f"llmgw spend: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bad date, an unreadable store: say what, not a traceback
        print(f"llmgw spend: {getattr(exc, 'message', None) or exc}", file=sys.stderr)
        return 1
    print(_format_spend(rows, args.group_by, args.format))
    return 0


def add_spend_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--group-by", default="key", choices=("key", "user", "team", "model", "day"))
    p.add_argument("--from", dest="since", help="start (YYYY-MM-DD, ISO 8601 or Unix seconds; default: the beginning)")
    p.add_argument("--to", dest="until", help="end, exclusive (default: now)")
    p.add_argument("--format", default="table", choices=("table", "csv", "json"))
    p.add_argument("--config", "-c", help="read the ledger from this config's store instead of a running gateway")
    p.add_argument("--url", help=f"the gateway (default: $LLMGW_URL or {_DEFAULT_URL})")
