"""Tool-call overhead: the calculator called directly, through its spec, and through the Ray actor pool.

Run: `python -m benchmarks.tools` (starts a small local Ray, writes benchmarks/results/tools.json,
prints markdown). All three rows are measured side by side in one run; the ratio is what carries
over to other machines, not the absolute times.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

RESULTS = Path(__file__).with_name("results") / "tools.json"
EXPRESSION = "2 * (3 + 4) ** 2 - sqrt(16) / 4"


def _row(name: str, samples_s: list[float]) -> dict:
    ordered = sorted(samples_s)
    return {"path": name, "calls": len(samples_s),
            "mean_us": statistics.fmean(samples_s) * 1e6,
            "p50_us": ordered[len(ordered) // 2] * 1e6,
            "p99_us": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1e6}


async def _measure(direct_calls: int, pool_calls: int) -> list[dict]:
    import ray

    from deployments.tools.calculator import calculator
    from deployments.tools.pool import ToolPool
    from deployments.tools.spec import load_tool

    spec = load_tool("deployments.tools.calculator:calculator")
    samples: dict[str, list[float]] = {"direct function call": [], "spec.invoke (validation)": [],
                                       "ToolPool.invoke (Ray actor)": []}
    for _ in range(direct_calls):
        start = time.perf_counter()
        calculator(EXPRESSION)
        samples["direct function call"].append(time.perf_counter() - start)
    for _ in range(direct_calls):
        start = time.perf_counter()
        await spec.invoke(calculator, {"expression": EXPRESSION})
        samples["spec.invoke (validation)"].append(time.perf_counter() - start)

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        pool = ToolPool(spec, {"num_cpus": 0.1, "pool_size": 1, "max_concurrency": 4})
        await pool.ready()
        for _ in range(20):  # warm-up: connections, first-call imports in the actor
            await pool.invoke({"expression": EXPRESSION})
        for _ in range(pool_calls):
            start = time.perf_counter()
            result = await pool.invoke({"expression": EXPRESSION})
            samples["ToolPool.invoke (Ray actor)"].append(time.perf_counter() - start)
        assert result == calculator(EXPRESSION)
        pool.shutdown()
    finally:
        ray.shutdown()
    return [_row(name, values) for name, values in samples.items()]


def main() -> dict:
    rows = asyncio.run(_measure(direct_calls=5000, pool_calls=500))
    base = rows[0]["mean_us"]
    for row in rows:
        row["ratio_to_direct"] = row["mean_us"] / base
    report = {"expression": EXPRESSION, "machine": {"cpus": os.cpu_count(),
              "python": platform.python_version()}, "rows": rows}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2))
    print("| path | calls | mean µs | p50 µs | p99 µs | × direct |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(f"| {row['path']} | {row['calls']} | {row['mean_us']:.1f} | {row['p50_us']:.1f} | "
              f"{row['p99_us']:.1f} | {row['ratio_to_direct']:.0f} |")
    return report


if __name__ == "__main__":
    main()
