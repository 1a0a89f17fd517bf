"""Gateway overhead benchmark: direct-to-upstream vs a minimal floor vs Tiergate vs LiteLLM's proxy, in one run.

    python bench/overhead.py                      # everything; writes bench/RESULTS.md
    python bench/overhead.py --skip-litellm       # the gateway-core numbers only (direct vs Tiergate)

One fake OpenAI upstream (``tiergate fake-upstream``: instant JSON and SSE answers with usage) serves every
target on loopback. Tiergate runs ``config/bench-fake.yaml`` with ``routing.router: always-small``, so the
classifier is excluded and what is measured is pure pass-through. LiteLLM's proxy is installed into its own
virtual environment (bench/.venv-litellm, pinned version) and started with bench/litellm/config.yaml, no
database. Each gateway runs alone, pinned to ``--gateway-cpus``; the upstream and the load generator share
``--client-cpus``. Closed-loop JSON load comes from ``wrk`` (Debian package ``wrk``) with a POST script,
or bench/loadgen.py when wrk is missing; streaming time to first token always comes from bench/loadgen.py.
Every point is repeated ``--repeats`` times, direct and gateway back to back, and medians are reported.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
LITELLM_VERSION = "1.106.2"
LITELLM_VENV = BENCH / ".venv-litellm"
# LiteLLM refuses to start without a master key; the same bearer token goes to every target.
MASTER_KEY = "sk-bench-4f7c2a9e81d34b6c"
PROMPT = "Say hello."

WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = '%(body)s'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(key)s"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%%d,"duration_us":%%d,"connect":%%d,"read":%%d,"write":%%d,"status":%%d,' ..
    '"timeout":%%d,"p50_us":%%d,"p90_us":%%d,"p99_us":%%d,"mean_us":%%f,"max_us":%%d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
"""


@dataclass
class Target:
    """Something that answers /v1/chat/completions: the upstream itself or a gateway in front of it."""

    name: str
    url: str
    model: str
    process: subprocess.Popen[bytes] | None = None
    startup_s: list[float] = field(default_factory=list)
    rss_idle_kib: int = 0
    rss_after_kib: int = 0
    rss_peak_kib: int = 0


# ------------------------------------------------------------------------------------------ processes
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


NICE = [0]


def pinned(cpus: str | None, command: list[str]) -> list[str]:
    """Pin to ``cpus`` and apply the run's ``--nice`` (other work on a shared machine gets less of the core)."""
    prefix = ["nice", "-n", str(NICE[0])] if NICE[0] else []
    return [*prefix, "taskset", "-c", cpus, *command] if cpus else [*prefix, *command]


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIERGATE_", "LITELLM_", "OPENAI_"))}
    env.update(extra)
    return env


def spawn(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("wb")
    # Own session, so stop() can signal the server and any children it forked, and nothing else.
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    except ProcessLookupError:
        pass


def wait_ready(url: str, process: subprocess.Popen[bytes], started: float, timeout: float, log: Path) -> float:
    """Poll ``url`` until 200; return seconds since ``started`` (the spawn)."""
    deadline = started + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: server exited with {process.returncode}; see {log}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return time.monotonic() - started
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.01)
    raise RuntimeError(f"{url} not ready after {timeout:.0f} s; see {log}")


def _descendants(pid: int) -> list[int]:
    found = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            found += _descendants(int(child))
    return found


def rss_kib(pid: int) -> tuple[int, int]:
    """Resident and peak-resident memory of a process tree, in KiB (Linux /proc)."""
    rss = peak = 0
    for each in _descendants(pid):
        try:
            status = Path(f"/proc/{each}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                rss += int(line.split()[1])
            elif line.startswith("VmHWM:"):
                peak += int(line.split()[1])
    return rss, peak


# ------------------------------------------------------------------------------------------- servers
def start_upstream(args: argparse.Namespace, logs: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    log = logs / "fake-upstream.log"
    command = [sys.executable, "-m", "gateway.cli", "fake-upstream", "--host", "127.0.0.1", "--port", str(port)]
    started = time.monotonic()
    process = spawn(pinned(args.client_cpus, command), clean_env({}), log)
    # The fake answers GET /v1/models; that doubles as its readiness check.
    wait_ready(f"http://127.0.0.1:{port}/v1/models", process, started, 60, log)
    return process, f"http://127.0.0.1:{port}/v1"


Started = tuple[subprocess.Popen[bytes], float, str]  # the process, seconds to ready, its /v1 base URL


def start_tiergate(args: argparse.Namespace, upstream: str, logs: Path, attempt: int) -> Started:
    port = free_port()
    log = logs / f"tiergate-{attempt}.log"
    env = clean_env({
        "TIERGATE_TIERS__SMALL__BASE_URL": upstream,
        "TIERGATE_TIERS__LARGE__BASE_URL": upstream,
        "TIERGATE_ROUTING__ROUTER": "always-small",
    })
    command = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(args.tiergate_config),
               "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    started = time.monotonic()
    process = spawn(pinned(args.gateway_cpus, command), env, log)
    seconds = wait_ready(f"http://127.0.0.1:{port}/readyz", process, started, 120, log)
    return process, seconds, f"http://127.0.0.1:{port}/v1"


def start_floor(args: argparse.Namespace, upstream: str, logs: Path, attempt: int) -> Started:
    """bench/floor_app.py: a minimal Starlette + aiohttp pass-through under the same server as Tiergate."""
    port = free_port()
    log = logs / f"floor-{attempt}.log"
    command = [sys.executable, "-m", "uvicorn", "--factory", "bench.floor_app:create_app", "--host", "127.0.0.1",
               "--port", str(port), "--loop", "uvloop", "--http", "httptools", "--no-access-log",
               "--log-level", "warning"]
    started = time.monotonic()
    process = spawn(pinned(args.gateway_cpus, command), clean_env({"FLOOR_UPSTREAM": upstream}), log)
    seconds = wait_ready(f"http://127.0.0.1:{port}/healthz", process, started, 60, log)
    return process, seconds, f"http://127.0.0.1:{port}/v1"


def ensure_litellm(venv: Path) -> Path:
    binary = venv / "bin" / "litellm"
    if not binary.exists():
        print(f"installing litellm[proxy]=={LITELLM_VERSION} into {venv} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", f"litellm[proxy]=={LITELLM_VERSION}"],
                       check=True)
    return binary


def start_litellm(args: argparse.Namespace, upstream: str, logs: Path, attempt: int) -> Started:
    binary = ensure_litellm(args.litellm_venv)
    config = logs / "litellm-config.yaml"
    config.write_text((BENCH / "litellm" / "config.yaml").read_text().replace("${UPSTREAM}", upstream))
    port = free_port()
    log = logs / f"litellm-{attempt}.log"
    env = clean_env({
        "LITELLM_MASTER_KEY": MASTER_KEY,
        # Use the bundled model price map instead of fetching it at startup: loopback only.
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOG": "ERROR",
    })
    command = [str(binary), "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
               "--num_workers", "1"]
    started = time.monotonic()
    process = spawn(pinned(args.gateway_cpus, command), env, log)
    seconds = wait_ready(f"http://127.0.0.1:{port}/health/readiness", process, started, 300, log)
    return process, seconds, f"http://127.0.0.1:{port}/v1"


# ------------------------------------------------------------------------------------------ load
def request_body(model: str) -> str:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 16},
                      separators=(",", ":"))


def run_wrk(args: argparse.Namespace, target: Target, concurrency: int, workdir: Path) -> dict[str, Any]:
    script = workdir / f"post-{target.model}.lua"
    script.write_text(WRK_SCRIPT % {"body": request_body(target.model), "key": MASTER_KEY})
    url = target.url + "/chat/completions"
    if args.warmup > 0:
        subprocess.run(pinned(args.client_cpus, ["wrk", "-t1", f"-c{concurrency}", f"-d{args.warmup}s",
                                                 "--timeout", "30s", "-s", str(script), url]),
                       check=True, capture_output=True, timeout=args.warmup + 60)
    done = subprocess.run(pinned(args.client_cpus, ["wrk", "-t1", f"-c{concurrency}", f"-d{args.duration}s",
                                                    "--timeout", "30s", "-s", str(script), url]),
                          check=True, capture_output=True, text=True, timeout=args.duration + 90)
    line = next(x for x in done.stdout.splitlines() if x.startswith("WRKJSON "))
    raw = json.loads(line[len("WRKJSON "):])
    errors = raw["connect"] + raw["read"] + raw["write"] + raw["status"] + raw["timeout"]
    seconds = raw["duration_us"] / 1e6
    return {"requests": raw["requests"], "errors": errors, "duration_s": seconds,
            "rps": (raw["requests"] - raw["status"]) / seconds, "p50_us": raw["p50_us"],
            "p90_us": raw["p90_us"], "p99_us": raw["p99_us"], "mean_us": raw["mean_us"], "max_us": raw["max_us"]}


def run_loadgen(args: argparse.Namespace, target: Target, concurrency: int, stream: bool) -> dict[str, Any]:
    command = [sys.executable, str(BENCH / "loadgen.py"), "--url", target.url + "/chat/completions",
               "--model", target.model, "--api-key", MASTER_KEY, "--concurrency", str(concurrency),
               "--prompt", PROMPT]
    if stream:
        command += ["--stream", "--requests", str(args.stream_requests)]
    else:
        command += ["--duration", str(args.duration), "--warmup", str(args.warmup)]
    done = subprocess.run(pinned(args.client_cpus, command), check=True, capture_output=True, text=True,
                          timeout=args.duration + args.warmup + 600)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def measure(args: argparse.Namespace, target: Target, concurrency: int, workdir: Path) -> dict[str, Any]:
    if args.loadgen == "wrk":
        return run_wrk(args, target, concurrency, workdir)
    return run_loadgen(args, target, concurrency, stream=False)


# ---------------------------------------------------------------------------------------- reporting
def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarize(samples: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "rps": median([s["rps"] for s in samples]),
        "rps_min": min(s["rps"] for s in samples),
        "rps_max": max(s["rps"] for s in samples),
        "p50_us": median([s["p50_us"] for s in samples]),
        "p99_us": median([s["p99_us"] for s in samples]),
        "errors": sum(s["errors"] for s in samples),
        "runs": len(samples),
    }


def machine(litellm_venv: Path) -> dict[str, str]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])

    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "not installed"

    def run(command: list[str]) -> str:
        try:
            return subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=ROOT,
                                  check=False).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return "unknown"

    litellm_python = litellm_venv / "bin" / "python"
    litellm = "not installed"
    if litellm_python.exists():
        litellm = run([str(litellm_python), "-c", "from importlib import metadata; print(metadata.version('litellm'))"])
    wrk = run(["sh", "-c", "wrk --version 2>&1 | head -1"]).split(" Copyright")[0]
    commit = run(["git", "rev-parse", "--short", "HEAD"])
    dirty = run(["git", "status", "--porcelain", "gateway", "routers"])
    return {
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "memory": f"{mem_kib / 1024 / 1024:.0f} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "tiergate": f"{version('tiergate')} (git {commit or 'none'}{' + uncommitted changes' if dirty else ''})",
        "uvicorn": version("uvicorn"), "httpx": version("httpx"), "aiohttp": version("aiohttp"),
        "litellm": litellm, "wrk": wrk or "not installed",
    }


def fmt_us(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value / 1000:.2f} ms" if abs(value) >= 1000 else f"{value:.0f} µs"


def mib(kib: int) -> str:
    return f"{kib / 1024:.0f} MiB" if kib else "-"


def render(results: dict[str, Any]) -> str:
    out: list[str] = []
    meta, cfg = results["machine"], results["config"]
    names = [n for n in ("direct", "floor", "tiergate", "litellm") if n in results["targets"]]
    out += ["# Gateway overhead: direct vs Tiergate vs LiteLLM", "",
            f"Measured {results['finished']} in one run of:", "", "```", results["command"], "```", "",
            "## Machine and versions", ""]
    out += [f"- {key}: {value}" for key, value in meta.items()]
    method = [
        "Upstream: `tiergate fake-upstream` on loopback (instant JSON and SSE answers with usage).",
        (f"Gateways run one at a time, each alone on CPU {cfg['gateway_cpus']} (`taskset`); the upstream and the "
         f"load generator share CPU {cfg['client_cpus']}. This machine has {os.cpu_count()} cores, so there is "
         "no separate core for each."),
        ("Tiergate: `tiergate serve --config config/bench-fake.yaml` with `routing.router: always-small` "
         "(classifier excluded: pure pass-through), one uvicorn worker."),
        ("LiteLLM: `litellm --config bench/litellm/config.yaml --num_workers 1` (proxy, no database, master key "
         "set because the proxy refuses to start without one)."),
        (f"Load: {cfg['loadgen']} closed loop, {cfg['duration']} s per point after {cfg['warmup']} s warm-up, "
         f"{cfg['repeats']} repeats; direct and gateway measured back to back in each repeat. Numbers are "
         "medians over repeats (rps range in brackets)."),
        (f"Niceness {cfg['nice']} for every benchmark process. 1-minute load average before / after the run: "
         f"{cfg['load_before']:.1f} / {cfg.get('load_after', float('nan')):.1f} on {os.cpu_count()} cores; "
         "above the benchmark's own ~2, other work was sharing the cores (the rps ranges show how much)."),
        "Added latency = gateway percentile minus direct percentile at the same concurrency.",
        (f"Streaming: time to first content chunk, concurrency 1, {cfg['stream_requests']} streams per repeat "
         "(bench/loadgen.py, aiohttp)."),
        ("Startup: process spawn until the readiness endpoint answers 200 (`/readyz`, LiteLLM "
         "`/health/readiness`); RSS of the whole process tree from /proc."),
    ]
    out += ["", "## Method", "", *(f"- {line}" for line in method), "",
            "## Throughput and added latency", "",
            "| target | concurrency | requests/s | vs direct | p50 | p99 | added p50 | added p99 | errors |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    points = results["points"]
    for name in names:
        for c in cfg["concurrency"]:
            point = points.get(f"{name}@{c}")
            if not point:
                continue
            direct = points[f"direct@{c}"]
            ratio = point["rps"] / direct["rps"] if direct["rps"] else float("nan")
            added = "" if name == "direct" else fmt_us(point["p50_us"] - direct["p50_us"])
            added99 = "" if name == "direct" else fmt_us(point["p99_us"] - direct["p99_us"])
            out.append(f"| {name} | {c} | {point['rps']:,.0f} [{point['rps_min']:,.0f}–{point['rps_max']:,.0f}] | "
                       f"{ratio:.2f} | {fmt_us(point['p50_us'])} | {fmt_us(point['p99_us'])} | {added} | "
                       f"{added99} | {point['errors']} |")
    out += ["", "## Streaming, startup, memory", "",
            ("| target | TTFT p50 | TTFT p99 | added TTFT p50 | startup (median) | RSS idle | RSS after load "
             "| peak RSS |"),
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    stream = results["stream"]
    for name in names:
        target = results["targets"][name]
        s = stream.get(name)
        added = "" if name == "direct" or not s else fmt_us(s["p50_us"] - stream["direct"]["p50_us"])
        startup = f"{median(target['startup_s']):.2f} s" if target["startup_s"] else "-"
        out.append(f"| {name} | {fmt_us(s['p50_us']) if s else '-'} | {fmt_us(s['p99_us']) if s else '-'} | "
                   f"{added} | {startup} | {mib(target['rss_idle_kib'])} | {mib(target['rss_after_kib'])} | "
                   f"{mib(target['rss_peak_kib'])} |")
    out += ["", "## Verdicts", ""]
    out += [f"- {line}" for line in results["verdicts"]]
    out.append("")
    return "\n".join(out)


def verdicts(results: dict[str, Any]) -> list[str]:
    points, lines = results["points"], []
    if "tiergate@1" in points:
        added = points["tiergate@1"]["p50_us"] - points["direct@1"]["p50_us"]
        lines.append(f"Tiergate added p50 at concurrency 1: {fmt_us(added)} (target < 1 ms): "
                     f"{'PASS' if added < 1000 else 'FAIL'}")
    if "tiergate@32" in points:
        rps = points["tiergate@32"]["rps"]
        lines.append(f"Tiergate at concurrency 32 on one core: {rps:,.0f} requests/s (target >= 1,500): "
                     f"{'PASS' if rps >= 1500 else 'FAIL'}")
    for c in results["config"]["concurrency"]:
        if f"tiergate@{c}" in points and f"floor@{c}" in points:
            ratio = points[f"tiergate@{c}"]["rps"] / points[f"floor@{c}"]["rps"]
            target = " (target >= 0.7)" if c == 32 else ""
            lines.append(f"Tiergate / minimal Starlette + aiohttp floor at concurrency {c}: {ratio:.2f}x{target}")
    tier = [p["rps"] for k, p in points.items() if k.startswith("tiergate@")]
    lite = [p["rps"] for k, p in points.items() if k.startswith("litellm@")]
    if tier and lite:
        ratio = max(tier) / max(lite)
        lines.append(f"Peak throughput Tiergate / LiteLLM: {max(tier):,.0f} / {max(lite):,.0f} = {ratio:.1f}x "
                     f"(target >= 20x): {'PASS' if ratio >= 20 else 'FAIL'}")
    return lines


# --------------------------------------------------------------------------------------------- main
def bench_target(args: argparse.Namespace, name: str, direct: Target, upstream: str, logs: Path,
                 results: dict[str, Any], raw: dict[str, list[dict[str, Any]]]) -> None:
    starter = {"tiergate": start_tiergate, "floor": start_floor, "litellm": start_litellm}[name]
    model = args.tiergate_model if name == "tiergate" else "gpt-4o-mini"
    target = Target(name, "", model)
    process = None
    try:
        for attempt in range(args.startup_repeats):
            stop(process)
            process, seconds, url = starter(args, upstream, logs, attempt)
            target.startup_s.append(seconds)
            target.url = url
            print(f"{name}: ready in {seconds:.2f} s (pid {process.pid})", flush=True)
        assert process is not None
        time.sleep(1.0)
        target.rss_idle_kib, _ = rss_kib(process.pid)
        for repeat in range(args.repeats):
            for c in args.concurrency:
                for each in (direct, target):
                    sample = measure(args, each, c, logs)
                    raw.setdefault(f"{each.name}@{c}", []).append(sample)
                    print(f"  repeat {repeat + 1} {each.name:9s} c={c:<4d} {sample['rps']:9.0f} rps  "
                          f"p50 {fmt_us(sample['p50_us']):>9s}  p99 {fmt_us(sample['p99_us']):>9s}  "
                          f"errors {sample['errors']}", flush=True)
            for each in (direct, target):
                sample = run_loadgen(args, each, 1, stream=True)
                raw.setdefault(f"stream:{each.name}", []).append(sample)
                print(f"  repeat {repeat + 1} {each.name:9s} stream TTFT p50 {fmt_us(sample['p50_us'])} "
                      f"p99 {fmt_us(sample['p99_us'])} errors {sample['errors']}", flush=True)
        target.rss_after_kib, target.rss_peak_kib = rss_kib(process.pid)
    finally:
        stop(process)
    results["targets"][name] = {"startup_s": target.startup_s, "rss_idle_kib": target.rss_idle_kib,
                                "rss_after_kib": target.rss_after_kib, "rss_peak_kib": target.rss_peak_kib}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", default="1,8,32,128", help="comma-separated (default 1,8,32,128)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured point")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of unmeasured load before each point")
    parser.add_argument("--stream-requests", type=int, default=300)
    parser.add_argument("--startup-repeats", type=int, default=3)
    parser.add_argument("--skip-litellm", action="store_true", help="direct vs Tiergate only")
    parser.add_argument("--skip-floor", action="store_true",
                        help="leave out the minimal Starlette + aiohttp pass-through (bench/floor_app.py)")
    parser.add_argument("--skip-tiergate", action="store_true", help="direct vs LiteLLM only")
    parser.add_argument("--gateway-cpus", default="0", help="taskset CPU list for the gateway ('' = no pinning)")
    parser.add_argument("--client-cpus", default="1", help="taskset CPU list for upstream and load generator")
    parser.add_argument("--nice", type=int, default=0,
                        help="niceness for every benchmark process (negative needs root): less noise on a busy host")
    parser.add_argument("--loadgen", choices=["wrk", "aiohttp"], default=None,
                        help="JSON load generator (default: wrk when installed)")
    parser.add_argument("--tiergate-config", type=Path, default=ROOT / "config" / "bench-fake.yaml")
    parser.add_argument("--tiergate-model", default="tiergate-auto", help="model name sent to Tiergate")
    parser.add_argument("--litellm-venv", type=Path, default=LITELLM_VENV)
    parser.add_argument("--out", type=Path, default=BENCH / "out", help="raw JSON and server logs")
    parser.add_argument("--results", default=str(BENCH / "RESULTS.md"), help="markdown report ('' = none)")
    args = parser.parse_args(argv)
    args.concurrency = [int(x) for x in args.concurrency.split(",") if x]
    NICE[0] = args.nice
    if args.loadgen is None:
        args.loadgen = "wrk" if shutil.which("wrk") else "aiohttp"
    if (os.cpu_count() or 1) < 2 or not shutil.which("taskset"):
        args.gateway_cpus = args.client_cpus = ""
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    logs = args.out / stamp
    logs.mkdir(parents=True, exist_ok=True)
    command = "python bench/overhead.py" + ("" if argv is None and len(sys.argv) == 1 else
                                            " " + shlex.join(argv if argv is not None else sys.argv[1:]))
    results: dict[str, Any] = {
        "command": command,
        "config": {"concurrency": args.concurrency, "repeats": args.repeats, "duration": args.duration,
                   "warmup": args.warmup, "loadgen": args.loadgen, "gateway_cpus": args.gateway_cpus or "any",
                   "client_cpus": args.client_cpus or "any", "stream_requests": args.stream_requests,
                   "nice": args.nice, "load_before": os.getloadavg()[0]},
        "targets": {"direct": {"startup_s": [], "rss_idle_kib": 0, "rss_after_kib": 0, "rss_peak_kib": 0}},
    }
    raw: dict[str, list[dict[str, Any]]] = {}
    upstream_process, upstream = start_upstream(args, logs)
    direct = Target("direct", upstream, "gpt-4o-mini")
    try:
        if not args.skip_floor:
            bench_target(args, "floor", direct, upstream, logs, results, raw)
        if not args.skip_tiergate:
            bench_target(args, "tiergate", direct, upstream, logs, results, raw)
        if not args.skip_litellm:
            bench_target(args, "litellm", direct, upstream, logs, results, raw)
    finally:
        stop(upstream_process)
    results["points"] = {k: summarize(v) for k, v in raw.items() if not k.startswith("stream:")}
    results["stream"] = {k.split(":", 1)[1]: summarize(v) for k, v in raw.items() if k.startswith("stream:")}
    results["raw"] = raw
    results["machine"] = machine(args.litellm_venv)  # after the run: a first run installs LiteLLM on the way
    results["finished"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    results["config"]["load_after"] = os.getloadavg()[0]
    results["verdicts"] = verdicts(results)
    (logs / "results.json").write_text(json.dumps(results, indent=2))
    report = render(results)
    (logs / "RESULTS.md").write_text(report)
    if args.results:
        Path(args.results).write_text(report)
    print()
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
