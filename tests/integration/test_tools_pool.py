"""ToolPool on the session Ray: results, the per-actor concurrency limit, cancellation, crash recovery."""

from __future__ import annotations

import asyncio
import os
import sys
import time

import pytest
import ray

from deployments.tool_pool import ToolPool
from serve_app.agent_tools.spec import load_tool, tool_spec
from common.errors import InvalidArguments, Overloaded, ToolCrashed, ToolError, ToolTimeout

pytestmark = pytest.mark.integration

# The tools below travel to the actors by value: workers need not import the tests package.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

SMALL = {"num_cpus": 0.1, "max_restarts": 2}


@ray.remote(num_cpus=0)
class Gauge:
    """Counts calls inside the tool: the most at once per actor process, and cancellations."""

    def __init__(self) -> None:
        self.current: dict[int, int] = {}
        self.peak: dict[int, int] = {}
        self.cancelled = 0

    def enter(self, pid: int) -> None:
        self.current[pid] = self.current.get(pid, 0) + 1
        self.peak[pid] = max(self.peak.get(pid, 0), self.current[pid])

    def exit(self, pid: int) -> None:
        self.current[pid] -= 1

    def was_cancelled(self) -> None:
        self.cancelled += 1

    def report(self) -> dict:
        return {"peak": self.peak, "cancelled": self.cancelled}


class Sleeper:
    """An async tool: doubles x after sleeping, reporting entries and cancellations to a gauge."""

    def __init__(self, gauge) -> None:
        self.gauge = gauge

    async def __call__(self, x: int, sleep_s: float = 0.0) -> dict:
        pid = os.getpid()
        await self.gauge.enter.remote(pid)
        try:
            await asyncio.sleep(sleep_s)
        except asyncio.CancelledError:
            await self.gauge.was_cancelled.remote()
            raise
        finally:
            await self.gauge.exit.remote(pid)
        return {"double": 2 * x, "pid": pid}


def blocking(spin_s: float = 0.0, crash: bool = False) -> int:
    """A sync tool: blocks its thread for spin_s, or kills its own process; its pid."""
    if crash:
        os._exit(1)
    time.sleep(spin_s)
    return os.getpid()


async def _settles(coro, timeout_s=60.0):
    # Every call must settle: a hang fails the test here instead of at pytest's timeout.
    return await asyncio.wait_for(coro, timeout_s)


async def test_results_and_the_concurrency_limit(ray_session):
    gauge = Gauge.remote()
    pool = ToolPool(tool_spec(Sleeper, init_kwargs={"gauge": gauge}),
                    {**SMALL, "pool_size": 2, "max_concurrency": 2, "max_queued_calls": 4})
    try:
        await _settles(pool.ready())
        calls = [pool.invoke({"x": i, "sleep_s": 0.5}) for i in range(9)]
        results = await _settles(asyncio.gather(*calls, return_exceptions=True))
        # Capacity 2 actors x 2 + 4 queued: the ninth is refused at once, the others all run.
        assert isinstance(results[8], Overloaded)
        assert [r["double"] for r in results[:8]] == [2 * i for i in range(8)]
        report = await _settles(asyncio.wrap_future(gauge.report.remote().future()))
        assert len(report["peak"]) == 2
        assert set(report["peak"].values()) == {2}  # each actor reached its limit, never passed it
        with pytest.raises(InvalidArguments) as err:
            await pool.invoke({"x": "not a number"})
        assert err.value.param == "arguments.x" and err.value.status_code == 422
    finally:
        pool.shutdown()


async def test_a_timeout_cancels_the_call_and_the_pool_stays_usable(ray_session):
    gauge = Gauge.remote()
    pool = ToolPool(tool_spec(Sleeper, init_kwargs={"gauge": gauge}),
                    {**SMALL, "timeout_s": 1.0, "cancel_grace_s": 5.0})
    stuck = ToolPool(tool_spec(blocking), {**SMALL, "timeout_s": 1.0, "cancel_grace_s": 1.0})
    try:
        (pid,) = await _settles(pool.ready())
        with pytest.raises(ToolTimeout):
            await _settles(pool.invoke({"x": 1, "sleep_s": 60}))
        report = await _settles(asyncio.wrap_future(gauge.report.remote().future()))
        assert report["cancelled"] == 1  # the tool saw the cancellation: stopped, not abandoned
        again = await _settles(pool.invoke({"x": 3}))
        assert again == {"double": 6, "pid": pid}  # the same actor, not a restarted one

        # A sync tool cannot be interrupted: after the grace period its actor is killed and
        # restarted, so the blocked thread does not keep holding a slot.
        (old_pid,) = await _settles(stuck.ready())
        with pytest.raises(ToolTimeout):
            await _settles(stuck.invoke({"spin_s": 60}))
        new_pid = await _settles(stuck.invoke({"spin_s": 0}))
        assert new_pid != old_pid
    finally:
        pool.shutdown()
        stuck.shutdown()


async def test_a_crash_is_reported_and_the_actor_restarted(ray_session):
    pool = ToolPool(load_tool(f"{__name__}:blocking"), SMALL)
    try:
        (old_pid,) = await _settles(pool.ready())
        with pytest.raises(ToolCrashed) as err:
            await _settles(pool.invoke({"crash": True}))
        assert err.value.status_code == 502
        new_pid = await _settles(pool.invoke({}))
        assert new_pid != old_pid
    finally:
        pool.shutdown()


async def test_a_tools_own_refusal_comes_back_as_itself(ray_session):
    pool = ToolPool(load_tool("serve_app.agent_tools.calculator:calculator"), SMALL)
    try:
        assert (await _settles(pool.invoke({"expression": "6 * 7"})))["result"] == 42
        with pytest.raises(ToolError) as err:
            await _settles(pool.invoke({"expression": "1/0"}))
        assert err.value.code == "math_error" and err.value.param == "expression"
    finally:
        pool.shutdown()


async def test_live_knobs_change_without_restarting_actors(ray_session):
    gauge = Gauge.remote()
    pool = ToolPool(tool_spec(Sleeper, init_kwargs={"gauge": gauge}), {**SMALL, "timeout_s": 30.0})
    try:
        (pid,) = await _settles(pool.ready())
        assert (await _settles(pool.invoke({"x": 1, "sleep_s": 1.5})))["double"] == 2
        pool.config = pool.tuned({"timeout_s": 0.5})
        with pytest.raises(ToolTimeout) as err:
            await _settles(pool.invoke({"x": 1, "sleep_s": 1.5}))
        assert "0.5 s" in err.value.message
        assert (await _settles(pool.invoke({"x": 2})))["pid"] == pid  # same actor throughout
        with pytest.raises(ValueError, match="without a restart"):
            pool.tuned({"pool_size": 4})
        with pytest.raises(ValueError):
            pool.tuned({"timeout_s": -1})
    finally:
        pool.shutdown()
