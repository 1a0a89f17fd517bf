"""``tiergate report``: per-day cost, savings and latency from the request log, and the monthly projection."""

from __future__ import annotations

import io
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.cli import build_parser, main
from gateway.pricing import PriceTable
from gateway.tools.report import (
    bucket_quantile,
    days_from_log,
    period_from_metrics,
    projection,
    read_log,
    run_report,
)
from tests.unit.test_metrics import PRICES, answered, make

TABLE = PriceTable(PRICES, large_model="gpt-4o")


def record(day: str, tier: str, prompt: int, completion: int, duration: float) -> dict[str, Any]:
    model = "gpt-4o-mini" if tier == "small" else "gpt-4o"
    return {"time": f"{day}T10:00:00.000+00:00", "tier": tier, "model": model, "outcome": "success",
            "prompt_tokens": prompt, "completion_tokens": completion, "cached_prompt_tokens": 0,
            "cost_usd": TABLE.cost(model, prompt, completion), "duration_seconds": duration,
            "counterfactual_cost_usd": TABLE.cost("gpt-4o", prompt, completion)}


LOG = [record("2026-11-20", "small", 1000, 1000, 0.1), record("2026-11-20", "large", 1000, 1000, 0.3),
       record("2026-11-21", "small", 1000, 1000, 0.2), record("2026-11-21", "small", 1000, 1000, 0.4)]


def write_log(tmp_path: Path, records: list[dict[str, Any]]) -> Path:
    path = tmp_path / "requests.jsonl"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records) + b"not json\n")
    return path


def test_days_sum_cost_counterfactual_and_savings() -> None:
    first, second = days_from_log(LOG, TABLE, "gpt-4o-mini")
    assert (first.label, first.requests, first.tiers["small"], first.tiers["large"]) == ("2026-11-20", 2, 1, 1)
    assert first.cost == pytest.approx((750 + 12500) / 1e6)
    assert first.counterfactual == pytest.approx(2 * 12500 / 1e6)
    assert second.savings == pytest.approx(2 * (12500 - 750) / 1e6)
    assert second.quantile(0.5) == 0.2 and second.quantile(0.95) == 0.4


def test_monthly_projection_for_all_large_all_small_and_the_current_mix() -> None:
    bills = projection(days_from_log(LOG, TABLE, "gpt-4o-mini"), monthly_requests=1_000_000)
    assert bills["all-large"] == pytest.approx(12500 / 1e6 * 1_000_000)
    assert bills["all-small"] == pytest.approx(750 / 1e6 * 1_000_000)
    assert bills["current mix"] == pytest.approx((3 * 750 + 12500) / 4 / 1e6 * 1_000_000)


def test_cli_prints_days_total_and_projection(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_log(tmp_path, LOG)
    assert main(["report", "--log", str(path), "--monthly-requests", "1000000"]) == 0
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert lines[1].startswith("2026-11-20") and lines[2].startswith("2026-11-21") and lines[3].startswith("total")
    assert "all-large    $12,500.00" in out.out and "all-small    $750.00" in out.out
    assert "skipped 1 unreadable line" in out.err


def test_report_reads_the_log_the_gateway_writes(tmp_path: Path) -> None:
    from gateway.telemetry.request_log import RequestLog

    log = RequestLog(tmp_path / "r.jsonl")
    _, accountant = make()
    accountant.sinks.append(log)
    answered(accountant, "small", prompt_tokens=1000, completion_tokens=1000)
    log.close()
    records, bad = read_log([tmp_path / "r.jsonl"])
    (day,) = days_from_log(records, TABLE, "gpt-4o-mini")
    assert bad == 0 and day.requests == 1 and day.cost == pytest.approx(750 / 1e6)


def test_report_from_a_metrics_scrape_matches_the_counters() -> None:
    metrics, accountant = make()
    for tier in ("small", "small", "large"):
        answered(accountant, tier, prompt_tokens=1000, completion_tokens=1000, duration_seconds=0.0)
    period = period_from_metrics(metrics.exposition().decode(), TABLE, "gpt-4o-mini")
    assert (period.requests, period.tiers["small"]) == (3, 2)
    assert period.counterfactual == pytest.approx(3 * 12500 / 1e6)
    assert period.small_cost == pytest.approx(3 * 750 / 1e6)


def test_bucket_quantile_interpolates_like_promql() -> None:
    buckets = [(0.1, 0.0), (0.5, 10.0), (1.0, 20.0), (float("inf"), 20.0)]
    assert bucket_quantile(0.5, buckets) == pytest.approx(0.5)
    assert bucket_quantile(0.25, buckets) == pytest.approx(0.3)


def test_empty_log_says_so(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    args = build_parser().parse_args(["report", "--log", str(empty)])
    out = io.StringIO()
    assert run_report(args, out) == 1 and "no requests" in out.getvalue()


def test_scrape_without_a_profile_takes_the_small_model_from_the_labels() -> None:
    metrics, accountant = make()
    answered(accountant, "large", prompt_tokens=1000, completion_tokens=1000)
    answered(accountant, "small", prompt_tokens=1000, completion_tokens=1000)
    period = period_from_metrics(metrics.exposition().decode(), TABLE, None)
    assert period.small_cost == pytest.approx(2 * 750 / 1e6)


def test_a_missing_log_is_an_error_message_not_a_traceback(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--log", str(tmp_path / "absent.jsonl")]) == 2
    assert "absent.jsonl" in capsys.readouterr().err


def test_report_scrapes_a_metrics_url_and_says_why_when_it_cannot(capsys: pytest.CaptureFixture[str]) -> None:
    metrics, accountant = make()
    for tier in ("small", "large"):
        answered(accountant, tier, prompt_tokens=1000, completion_tokens=1000)
    text = metrics.exposition()

    class Metrics(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
            status, body = (200, text) if self.path == "/metrics" else (404, b"no")
            self.send_response(status)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Metrics)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        out = io.StringIO()
        args = build_parser().parse_args(["report", "--metrics-url", base + "/metrics"])
        assert run_report(args, out) == 0 and "small" in out.getvalue()
        missing = build_parser().parse_args(["report", "--metrics-url", base + "/absent"])
        assert run_report(missing, io.StringIO()) == 2
        assert "cannot scrape" in capsys.readouterr().err
    finally:
        server.shutdown()
        server.server_close()
