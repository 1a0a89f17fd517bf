"""Soak test: many requests through the real gateway on loopback, with upstream failures and vanishing clients.

    python bench/soak.py --requests 20000 --concurrency 64

The gateway (``tiergate serve``, random router, auth on) and a fake upstream that answers HTTP 500 to
``--failure-rate`` of its calls run as their own processes. Half the requests stream; ``--disconnect-rate``
of them hang up early (streams after their first chunk, JSON requests right after the request is written).
Every request carries its own ``x-request-id``. The run passes when

- every request that did not hang up got exactly one complete answer (a JSON object, or one stream ending
  in a single ``[DONE]``) or one OpenAI-shaped error, and none went unanswered;
- the gateway's ``tiergate_requests_total`` equals the number of requests sent (each accounted once);
- the gateway's RSS grew by less than ``--max-rss-growth`` from the end of the first ``--window`` requests to
  the end of the run (the last window).

With ``--hostile-workers N`` (default 4; 0 turns it off), N hostile actors run alongside the normal traffic
(bench/hostile.py): slowloris headers, a body that stops, 200 KB header lines, idle sockets and large-prompt
streams abandoned at their first chunk, while the large tier's upstream answers ``--garbage-rate`` of its
connections with non-HTTP garbage. Then also: every slow or oversized client was cut off (408/431/closed),
the slow bodies and abandoned streams are accounted too, and ``/healthz``, polled every 50 ms throughout,
kept its p99 under ``--healthz-p99-ms``.

Prints a JSON report; exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from hostile import GarbageProxy, Hostile

ROOT = Path(__file__).resolve().parent.parent
KEY = "tg-soak-3c5e7a9b1d2f4e6a"
KEY_HASH = "sha256:" + __import__("hashlib").sha256(KEY.encode()).hexdigest()
CONFIG = """
server: {{host: 127.0.0.1, port: {port}, shutdown_grace_s: 5, header_timeout_s: 2, body_timeout_s: 2}}
tiers:
  small: {{kind: openai, model: gpt-4o-mini, base_url: "{upstream}", timeout: {{connect: 2, read: 10, write: 5, pool: 10}}}}
  large: {{kind: openai, model: gpt-4o, base_url: "{large_upstream}", timeout: {{connect: 2, read: 10, write: 5, pool: 10}}}}
routing: {{router: random, seed: 7}}
auth:
  keys: [{{name: soak, hash: "{key_hash}"}}]
resilience:
  retry: {{base_delay_s: 0.01, max_delay_s: 0.1}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spawn(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERGATE_")}
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} not ready after {timeout:.0f} s")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def metric_sums(base: str, names: tuple[str, ...]) -> dict[str, float]:
    """Each counter in ``names`` summed over its label sets, from the gateway's ``/metrics``."""
    with urllib.request.urlopen(base + "/metrics", timeout=10) as response:
        text = response.read().decode()
    sums = dict.fromkeys(names, 0.0)
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in sums:
            sums[name] += float(line.rsplit(" ", 1)[1])
    return sums


@dataclass
class Tally:
    sent: int = 0
    results: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    def problem(self, kind: str, rid: str, detail: str) -> None:
        self.results[kind] += 1
        if len(self.problems) < 20:
            self.problems.append(f"{kind} {rid}: {detail[:200]}")


def body(index: int, stream: bool) -> dict[str, Any]:
    words = " ".join(f"w{(index * 7 + i) % 97}" for i in range(5 + index % 40))
    payload: dict[str, Any] = {"model": "tiergate-auto", "messages": [{"role": "user", "content": words}]}
    if stream:
        payload["stream"] = True
        if index % 4 == 1:
            payload["stream_options"] = {"include_usage": True}
    return payload


def check_stream(text: str) -> str | None:
    """None when the stream is one complete answer (or one in-band error) ending in a single [DONE]."""
    events = [line[6:] for line in text.split("\n") if line.startswith("data: ")]
    if not events or events[-1] != "[DONE]" or events.count("[DONE]") != 1:
        return "stream does not end in exactly one [DONE]"
    finishes = 0
    for raw in events[:-1]:
        event = json.loads(raw)
        if "error" in event:
            return None if raw is events[-2] else "error event before the end"
        finishes += sum(1 for choice in event.get("choices") or [] if choice.get("finish_reason"))
    return None if finishes == 1 else f"{finishes} finish reasons"


async def one(session: aiohttp.ClientSession, base: str, port: int, index: int, args: argparse.Namespace,
              tally: Tally, rng: random.Random) -> None:
    stream = index % 2 == 0
    rid = f"soak-{index}"
    hang_up = rng.random() < args.disconnect_rate
    headers = {"authorization": f"Bearer {KEY}", "x-request-id": rid}
    payload = body(index, stream)
    tally.sent += 1
    if hang_up and not stream:
        await hang_up_json(port, payload, headers, rng)
        tally.results["client_hung_up"] += 1
        return
    try:
        async with session.post(base + "/v1/chat/completions", json=payload, headers=headers) as response:
            tally.statuses[response.status] += 1
            if hang_up:
                await response.content.readany()
                response.close()  # drop the connection mid-stream
                tally.results["client_hung_up"] += 1
                return
            text = await response.text()
    except (TimeoutError, aiohttp.ClientError) as exc:
        tally.problem("unanswered", rid, repr(exc))
        return
    if response.headers.get("x-request-id") != rid:
        tally.problem("wrong_request_id", rid, str(response.headers.get("x-request-id")))
    if response.status != 200:
        try:
            error = json.loads(text)["error"]
            assert {"message", "type", "param", "code"} <= set(error)
        except (ValueError, KeyError, TypeError, AssertionError):
            tally.problem("malformed_error", rid, text)
            return
        tally.results["error_answer"] += 1
        return
    if stream:
        issue = check_stream(text)
        if issue:
            tally.problem("double_or_broken_stream", rid, issue)
            return
        tally.results["in_band_error" if '"error"' in text else "answered"] += 1
        return
    try:
        answer = json.loads(text)
        assert answer["object"] == "chat.completion" and len(answer["choices"]) == 1
    except (ValueError, KeyError, TypeError, AssertionError):
        tally.problem("double_or_broken_json", rid, text)
        return
    tally.results["answered"] += 1


async def hang_up_json(port: int, payload: dict[str, Any], headers: dict[str, str], rng: random.Random) -> None:
    """Write a whole request on a raw socket, then close without reading (the server has it: it must account it)."""
    data = json.dumps(payload).encode()
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
               f"content-length: {len(data)}\r\nconnection: close\r\n{head}\r\n").encode() + data
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    await asyncio.sleep(rng.random() * 0.002)
    writer.transport.abort()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else float("nan")


async def poll_healthz(base: str, stop: asyncio.Event, latencies: list[float]) -> None:
    """GET /healthz every 50 ms on a kept-alive connection; a failed poll counts as 10 s."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                async with session.get(base + "/healthz") as response:
                    await response.read()
                    ok = response.status == 200
            except (TimeoutError, aiohttp.ClientError):
                ok = False
            latencies.append(time.perf_counter() - started if ok else 10.0)
            await asyncio.sleep(0.05)


async def run_load(args: argparse.Namespace, base: str, port: int, gateway_pid: int,
                   upstream_port: int, proxy_port: int) -> dict[str, Any]:
    tally = Tally()
    stop = asyncio.Event()
    healthz: list[float] = []
    proxy = GarbageProxy(upstream_port, args.garbage_rate, args.seed)
    hostiles = [Hostile(port, KEY, args.seed + n) for n in range(args.hostile_workers)]
    side_tasks = []
    if hostiles:
        await proxy.start(proxy_port)
        side_tasks = [asyncio.ensure_future(h.run(stop)) for h in hostiles]
    side_tasks.append(asyncio.ensure_future(poll_healthz(base, stop, healthz)))
    rng = random.Random(args.seed)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(args.requests):
        queue.put_nowait(index)
    done = 0
    rss: dict[str, int] = {"start": rss_kib(gateway_pid)}
    started = time.monotonic()
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    timeout = aiohttp.ClientTimeout(total=60)

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal done
        while not queue.empty():
            index = queue.get_nowait()
            await one(session, base, port, index, args, tally, rng)
            done += 1
            if done == args.window:
                rss["after_first_window"] = rss_kib(gateway_pid)
            if args.progress and done % args.progress == 0:
                print(f"{done} requests, {time.monotonic() - started:.0f} s", file=sys.stderr)

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(args.concurrency)))
    duration = time.monotonic() - started
    stop.set()
    await asyncio.gather(*side_tasks)
    await asyncio.sleep(1.0)  # hung-up requests finish their accounting
    rss["end"] = rss_kib(gateway_pid)
    await proxy.close()
    hostile: Counter[str] = Counter()
    for each in hostiles:
        hostile.update(each.tally.results)
    return {"tally": tally, "duration_s": duration, "rss_kib": rss, "healthz": healthz,
            "hostile": hostile, "hostile_app_requests": sum(h.tally.app_requests for h in hostiles),
            "garbage_connections": proxy.garbage, "tunnelled_connections": proxy.tunnelled}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--failure-rate", type=float, default=0.02, help="upstream calls answered with HTTP 500")
    parser.add_argument("--disconnect-rate", type=float, default=0.05, help="clients that hang up early")
    parser.add_argument("--window", type=int, default=10_000, help="RSS is compared between the first and last window")
    parser.add_argument("--max-rss-growth", type=float, default=0.10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--hostile-workers", type=int, default=4, help="hostile actors alongside (0: none)")
    parser.add_argument("--garbage-rate", type=float, default=0.2,
                        help="share of the large tier's upstream connections answered with non-HTTP garbage")
    parser.add_argument("--healthz-p99-ms", type=float, default=50.0)
    parser.add_argument("--progress", type=int, default=5000, help="print progress every N requests (0: never)")
    parser.add_argument("--logs", type=Path, default=None, help="directory for the servers' logs (default: temp)")
    args = parser.parse_args(argv)
    args.window = min(args.window, args.requests // 2)

    logs = args.logs or Path(tempfile.mkdtemp(prefix="tiergate-soak-"))
    logs.mkdir(parents=True, exist_ok=True)
    upstream_port, port, proxy_port = free_port(), free_port(), free_port()
    upstream = spawn([sys.executable, "-m", "gateway.cli", "fake-upstream", "--port", str(upstream_port),
                      "--failure-rate", str(args.failure_rate)], logs / "fake-upstream.log")
    config = logs / "soak.yaml"
    large_port = proxy_port if args.hostile_workers else upstream_port
    config.write_text(CONFIG.format(port=port, upstream=f"http://127.0.0.1:{upstream_port}/v1",
                                    large_upstream=f"http://127.0.0.1:{large_port}/v1", key_hash=KEY_HASH))
    gateway = spawn([sys.executable, "-m", "gateway.cli", "serve", "--config", str(config), "--log-level", "warning"],
                    logs / "gateway.log")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(f"http://127.0.0.1:{upstream_port}/v1/models", upstream)
        wait_ready(base + "/readyz", gateway)
        outcome = asyncio.run(run_load(args, base, port, gateway.pid, upstream_port, proxy_port))
        counters = metric_sums(base, ("tiergate_requests_total", "tiergate_retries_total",
                                      "tiergate_fallbacks_total"))
        accounted = counters["tiergate_requests_total"]
    finally:
        stop(gateway)
        stop(upstream)
    tally: Tally = outcome["tally"]
    rss = outcome["rss_kib"]
    growth = (rss["end"] - rss["after_first_window"]) / rss["after_first_window"]
    bad = sum(tally.results[k] for k in tally.results if k not in ("answered", "error_answer", "in_band_error",
                                                                    "client_hung_up"))
    report = {
        "requests_sent": tally.sent,
        "concurrency": args.concurrency,
        "duration_s": round(outcome["duration_s"], 1),
        "rps": round(tally.sent / outcome["duration_s"], 1),
        "results": dict(tally.results),
        "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
        "unanswered_or_double": bad,
        "accounted": accounted,
        "gateway_retries": counters["tiergate_retries_total"],
        "gateway_fallbacks": counters["tiergate_fallbacks_total"],
        "rss_mib": {k: round(v / 1024, 1) for k, v in rss.items()},
        "rss_growth_last_vs_first_window": round(growth, 4),
        "problems": tally.problems,
        "logs": str(logs),
    }
    healthz = outcome["healthz"]
    hostile = outcome["hostile"]
    expected = tally.sent + outcome["hostile_app_requests"]
    report["hostile"] = {"results": dict(sorted(hostile.items())), "reached_the_app": outcome["hostile_app_requests"],
                         "garbage_upstream_connections": outcome["garbage_connections"],
                         "tunnelled_upstream_connections": outcome["tunnelled_connections"]}
    report["healthz_ms"] = {"polls": len(healthz), "p50": round(percentile(healthz, 50) * 1000, 2),
                            "p99": round(percentile(healthz, 99) * 1000, 2), "max": round(max(healthz) * 1000, 2)}
    report["accounted_expected"] = expected
    not_cut = {k: v for k, v in hostile.items()
               if k.split(":")[0] in ("slow_headers", "slow_body", "oversized_header", "idle")
               and k.split(":")[1] not in ("408", "431", "closed", "reset")}
    checks = {"no_unanswered_or_double": bad == 0, "accounting_equals_sent": accounted == expected,
              "rss_growth_ok": growth < args.max_rss_growth,
              "healthz_p99_ok": percentile(healthz, 99) * 1000 < args.healthz_p99_ms,
              "hostile_clients_cut_off": not not_cut}
    report["checks"] = checks
    print(json.dumps(report, indent=2))
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
