"""Configuration: typed values from YAML, and errors that name the file, line, key and fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from llmgw.providers import registry
from llmgw.config import ConfigError, load_config, parse_config

GOOD = """
server:
  port: 9000
  max_body_bytes: 1000
upstreams:
  openai:
    provider: openai
    base_url: https://api.openai.com/v1/
    api_key: ${OPENAI_API_KEY}
    timeouts: {connect: 2, first_byte: 30}
models:
  gpt-4o-mini:
    upstream: openai
  cheap:
    upstream: openai
    model: gpt-4o-mini
auth:
  keys:
    - {name: alice, key: "${ALICE_KEY}", models: [cheap]}
"""


def test_valid_config_becomes_typed_objects():
    cfg = parse_config(GOOD, env={"OPENAI_API_KEY": "sk-test-abc", "ALICE_KEY": "alice-key-0123456789"}, providers=registry)
    up = cfg.upstreams["openai"]
    assert up.base_url == "https://api.openai.com/v1" and up.api_key == "sk-test-abc"
    assert up.timeouts.connect == 2.0 and up.timeouts.first_byte == 30.0 and up.timeouts.idle == 60.0
    assert cfg.models["cheap"].model == "gpt-4o-mini" and cfg.models["gpt-4o-mini"].model == "gpt-4o-mini"
    assert cfg.server.port == 9000 and cfg.server.max_body_bytes == 1000
    assert cfg.auth_keys[0].models == ("cheap",)


def test_secrets_do_not_appear_in_reprs():
    cfg = parse_config(GOOD, env={"OPENAI_API_KEY": "sk-test-abc", "ALICE_KEY": "alice-key-0123456789"}, providers=registry)
    assert "sk-test-abc" not in repr(cfg) and "alice-key" not in repr(cfg)


class _OnlyOpenAI:
    """A provider catalog with one entry: config validation takes the catalog it is handed."""

    def names(self) -> list[str]:
        return ["openai"]

    def get(self, name: str):
        return registry.get(name)


def _problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        parse_config(text, source="gw.yaml", env=env or {}, providers=_OnlyOpenAI())
    return exc.value.problems


def test_missing_env_var_names_the_variable_and_line():
    problems = _problems(GOOD, env={"ALICE_KEY": "alice-key-0123456789"})
    assert problems == [
        "gw.yaml:9: upstreams.openai.api_key: environment variable OPENAI_API_KEY is not set. "
        "Export OPENAI_API_KEY before starting, or write ${OPENAI_API_KEY:-default}"
    ]


def test_env_default_is_used():
    cfg = parse_config(GOOD.replace("${OPENAI_API_KEY}", "${OPENAI_API_KEY:-sk-default}"),
                       env={"ALICE_KEY": "alice-key-0123456789"}, providers=registry)
    assert cfg.upstreams["openai"].api_key == "sk-default"


def test_every_problem_is_reported_at_once_with_line_and_fix():
    text = """
upstreams:
  a:
    provider: openaii
    base_url: ftp://x
    max_conections: 3
models:
  m:
    upstream: b
  n: 7
server:
  port: "80"
"""
    problems = _problems(text)
    assert "gw.yaml:4: upstreams.a.provider: unknown provider 'openaii'. Use one of: openai" in problems
    assert "gw.yaml:5: upstreams.a.base_url: must be an http(s):// URL, got 'ftp://x'. Fix the value" in problems
    assert "gw.yaml:6: upstreams.a.max_conections: unknown key. Did you mean 'max_connections'?" in problems
    assert "gw.yaml:9: models.m.upstream: unknown upstream 'b'. Use one of the upstreams: a" in problems
    assert any(p.startswith("gw.yaml:10: models.n: expected a mapping") for p in problems)
    assert "gw.yaml:12: server.port: expected int, got str '80'. Write a int here" in problems


def test_missing_ca_file_is_a_located_error(tmp_path: Path):
    text = f"upstreams:\n  a: {{provider: openai, base_url: 'https://x', ca_file: '{tmp_path}/nope.pem'}}\nmodels:\n  m: {{upstream: a}}\n"
    assert any(p.startswith("gw.yaml:2: upstreams.a.ca_file: CA file") and "does not exist" in p for p in _problems(text))


def test_yaml_syntax_error_has_a_line():
    problems = _problems("upstreams:\n  a: [\n")
    assert problems[0].startswith("gw.yaml:3: not valid YAML")


def test_empty_file_asks_for_upstreams_and_models():
    problems = _problems("")
    assert any("upstreams: missing or empty" in p for p in problems)
    assert any("models: missing or empty" in p for p in problems)


def test_short_client_key_is_rejected():
    problems = _problems(GOOD.replace("${ALICE_KEY}", "short"), env={"OPENAI_API_KEY": "k"})
    assert any("auth.keys[0].key: missing or shorter than 16 characters" in p for p in problems)


def test_unreadable_file(tmp_path: Path):
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path / "missing.yaml", providers=registry)
    assert "cannot read the config file" in str(exc.value)


def _check(path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "llmgw.cli", "check-config", str(path)], capture_output=True,
                          text=True, env={**os.environ, **env})


def test_check_config_explains_a_valid_file_without_printing_secrets(tmp_path: Path):
    path = tmp_path / "ok.yaml"
    path.write_text(GOOD)
    r = _check(path, {"OPENAI_API_KEY": "sk-live-very-secret", "ALICE_KEY": "alice-key-0123456789"})
    assert r.returncode == 0, r.stderr
    assert "upstream openai: openai at https://api.openai.com/v1 (API key set" in r.stdout
    assert "model cheap -> upstream openai (as 'gpt-4o-mini')" in r.stdout
    assert "client auth: 1 key(s)" in r.stdout
    assert "sk-live-very-secret" not in r.stdout + r.stderr


def test_check_config_fails_with_located_errors(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD)
    r = _check(path, {"ALICE_KEY": "alice-key-0123456789"})
    assert r.returncode == 2
    assert f"{path}:9: upstreams.openai.api_key: environment variable OPENAI_API_KEY is not set" in r.stderr


def test_examples_are_valid(tmp_path: Path):
    root = Path(__file__).resolve().parents[1]
    env = {"LLMGW_BENCH_UPSTREAM": "http://127.0.0.1:1/v1", "OPENAI_API_KEY": "sk-x", "ANTHROPIC_API_KEY": "x",
           "GEMINI_API_KEY": "x", "LLMGW_ALICE_KEY": "alice-key-0123456789",
           "LLMGW_PRIMARY_UPSTREAM": "http://127.0.0.1:2/v1", "LLMGW_FALLBACK_UPSTREAM": "http://127.0.0.1:3/v1",
           "LLMGW_MASTER_KEY": "master-key-0123456789abcdef", "LLMGW_DB_PATH": str(tmp_path / "llmgw.db")}
    files = sorted((root / "examples").glob("*.yaml")) + [root / "python/llmgw/examples/demo.yaml"]
    assert files
    for f in files:
        load_config(f, env=env, providers=registry)
