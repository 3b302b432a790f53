import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from llmgw.bench import add_arguments, run

from .conftest import MockOpenAI


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def _json_report(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict]:
    code = run(_args(*argv, "--json"))
    return code, json.loads(capsys.readouterr().out)


def test_json_report_of_a_clean_closed_loop_run(server: MockOpenAI, capsys: pytest.CaptureFixture[str]) -> None:
    code, report = _json_report(capsys, "--url", server.url("ok"), "--model", "m", "-n", "25", "-c", "3")
    assert code == 0
    assert report["requests"] == {"total": 25, "ok": 25, "failed": 0}
    assert server.hits["ok"] == 25
    assert report["errors"] == {}
    assert report["throughput"]["output_tokens"] == 25 * 7
    assert report["latency_ms"]["count"] == 25
    assert set(report["latency_ms"]) >= {"p50", "p90", "p99", "p99.9", "min", "max", "mean"}
    assert report["latency_ms"]["p50"] <= report["latency_ms"]["p99.9"] <= report["latency_ms"]["max"]
    assert report["run"]["mode"] == "concurrency" and report["run"]["concurrency"] == 3
    assert report["percentile_method"].startswith("exact")
    assert report["ttft_ms"] is None and "schedule" not in report


def test_errors_are_reported_by_kind_and_fail_the_exit_code(server: MockOpenAI,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    code, report = _json_report(capsys, "--url", server.url("every3rd500"), "--model", "m", "-n", "9")
    assert code == 1
    assert report["requests"] == {"total": 9, "ok": 6, "failed": 3}
    assert report["errors"] == {"http_500": 3}
    assert "nope" in report["error_examples"]["http_500"]


def test_stream_report_has_ttft_and_inter_chunk_time(server: MockOpenAI, capsys: pytest.CaptureFixture[str]) -> None:
    code, report = _json_report(capsys, "--url", server.url("stream"), "--model", "m", "-n", "4", "--stream")
    assert code == 0
    assert report["ttft_ms"]["count"] == 4
    assert report["inter_chunk_ms"]["count"] == 4 * 2
    assert report["throughput"]["output_tokens"] == 4 * 3


def test_open_loop_report_accounts_for_the_schedule(server: MockOpenAI, capsys: pytest.CaptureFixture[str]) -> None:
    code, report = _json_report(capsys, "--url", server.url("ok"), "--model", "m", "--rate", "100",
                                "--duration", "0.1")
    assert code == 0
    assert report["requests"]["total"] == 10 == server.hits["ok"]
    sched = report["schedule"]
    assert sched["scheduled"] == sched["sent"] == 10
    assert sched["not_sent"] == 0 and sched["latency_origin"] == "scheduled send time"
    assert sched["send_lag_ms"]["count"] == 10


def test_warmup_requests_are_sent_but_left_out(server: MockOpenAI, capsys: pytest.CaptureFixture[str]) -> None:
    code, report = _json_report(capsys, "--url", server.url("ok"), "--model", "m", "-n", "5", "--warmup", "0.05")
    assert code == 0
    assert report["requests"]["total"] == 5
    assert server.hits["ok"] > 5


def test_prompt_file_and_api_key_from_the_environment(server: MockOpenAI, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("a long prompt\nover two lines", encoding="utf-8")
    monkeypatch.setenv("LLMGW_BENCH_API_KEY", "sk-env")
    code, _ = _json_report(capsys, "--url", server.url("ok"), "--model", "m", "-n", "1", "--prompt-file",
                           str(prompt), "--max-tokens", "0")
    assert code == 0
    assert server.bodies == [{"model": "m", "messages": [{"role": "user", "content": "a long prompt\nover two lines"}]}]
    assert server.headers[0]["authorization"] == "Bearer sk-env"


@pytest.mark.parametrize("bad", [["-n", "0"], ["--rate", "-1"], ["--duration", "0"], ["--warmup", "-1"]])
def test_invalid_options_exit_2_with_a_message(bad: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert run(_args("--url", "http://127.0.0.1:9/v1", "--model", "m", *bad)) == 2
    assert "llmgw bench: error:" in capsys.readouterr().err


def test_text_report_names_the_client_and_percentiles(server: MockOpenAI, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(_args("--url", server.url("ok"), "--model", "m", "-n", "3")) == 0
    out = capsys.readouterr().out
    assert "client:" in out and "p99.9" in out and "3 total, 3 ok, 0 failed" in out


def test_python_dash_m_entry_point(server: MockOpenAI) -> None:
    proc = subprocess.run([sys.executable, "-m", "llmgw.bench", "--url", server.url("status503"), "--model", "m",
                           "-n", "2", "--json"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert json.loads(proc.stdout)["errors"] == {"http_503": 2}
