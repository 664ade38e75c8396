"""The carbon-aware submitter on a recorded GB forecast, submitting to the session Ray cluster.

The forecast is the real 2020-01-14 trace in the UK Carbon Intensity API's JSON format, served by a
local HTTP server. Time is a manual clock shared by submitter and server, so "waiting" for the
evening's low-carbon slot takes no wall-clock time; job submission is real.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from training.carbon._http import CachedJsonClient
from training.carbon.providers import UkCarbonIntensityProvider
from training.job_store import FileJobStore
from training.ray_jobs import RayJobs
from training.submitter import CarbonAwareSubmitter

pytestmark = pytest.mark.e2e

TRACE = Path(__file__).resolve().parents[3] / "shared/data/carbon/gb_2020_ci.csv"
START = datetime(2020, 1, 14, 9, 0, tzinfo=timezone.utc)
FMT = "%Y-%m-%dT%H:%MZ"


def recorded_slots() -> list[tuple[datetime, float]]:
    """48 h of half-hour slots from START, as recorded in the trace."""
    with TRACE.open() as fh:
        rows = [(datetime.fromisoformat(r["Time"]).replace(tzinfo=timezone.utc),
                 float(r["Carbon Intensity"])) for r in csv.DictReader(fh)]
    return [(t, v) for t, v in rows if START <= t < START + timedelta(hours=48)]


class ManualClock:
    def __init__(self) -> None:
        self.t = START.timestamp() + 120  # 09:02
        self.sleeps: list[float] = []

    def now_s(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += max(0.0, seconds)


class UkApiServer:
    """Answers /intensity and /intensity/{from}/fw48h like the UK API, from the recording."""

    def __init__(self, clock: ManualClock, slots) -> None:
        def body(rows):
            return {"data": [{"from": t.strftime(FMT), "to": (t + timedelta(minutes=30)).strftime(FMT),
                              "intensity": {"forecast": round(v), "actual": None,
                                            "index": "moderate"}} for t, v in rows]}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                now = datetime.fromtimestamp(clock.now_s(), tz=timezone.utc)
                if self.path == "/intensity":
                    rows = [(t, v) for t, v in slots if t <= now < t + timedelta(minutes=30)]
                elif self.path.endswith("/fw48h"):
                    frm = datetime.strptime(self.path.split("/")[2], FMT).replace(tzinfo=timezone.utc)
                    rows = [(t, v) for t, v in slots if t >= frm]
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.end_headers()
                self.wfile.write(json.dumps(body(rows)).encode())

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def wait_done(jobs: RayJobs, sid: str, timeout_s: float = 180) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = jobs.status(sid)
        if status in {"SUCCEEDED", "FAILED", "STOPPED"}:
            return status
        time.sleep(1)
    return jobs.status(sid)


def test_submitter_waits_for_the_green_slot_and_submits_exactly_once(ray_cluster, tmp_path):
    slots = recorded_slots()
    clock = ManualClock()
    api = UkApiServer(clock, slots)
    store_path = tmp_path / "jobs.json"

    def submitter() -> CarbonAwareSubmitter:
        provider = UkCarbonIntensityProvider(CachedJsonClient(api.url, clock=clock), clock=clock)
        return CarbonAwareSubmitter(FileJobStore(store_path), RayJobs(ray_cluster.dashboard_url),
                                    provider, clock=clock, recheck_s=4 * 3600)

    deadline_s = START.timestamp() + 16 * 3600  # 01:00 next day
    first = submitter()
    job = first.enqueue(f"{sys.executable} -c \"print('green')\"", deadline_s=deadline_s,
                        duration_s=1800, threshold_g_per_kwh=100)
    # What the recording says is the greenest half hour that still ends by the deadline.
    usable = [(v, t) for t, v in slots
              if t.timestamp() >= clock.now_s() - 1800 and t.timestamp() + 1800 <= deadline_s]
    best_value, best_start = min(usable)
    assert min(v for v, _ in usable) > 100  # never below the threshold: it must pick a slot

    first.run()
    done = first.store.get(job.submission_id)
    assert done.state == "submitted"
    assert clock.now_s() == pytest.approx(best_start.timestamp())
    assert done.intensity_at_start_g_per_kwh == round(best_value)
    assert done.decisions[0]["reason"] == "lowest_forecast"
    assert sum(clock.sleeps) > 10 * 3600  # it really waited, from 09:02 to the evening

    jobs = RayJobs(ray_cluster.dashboard_url)
    assert wait_done(jobs, job.submission_id) == "SUCCEEDED"
    info = jobs._client.get_job_info(job.submission_id)
    assert info.metadata["aegis_carbon_intensity_at_start_g_per_kwh"] == f"{round(best_value):.1f}"

    # A crash after Ray accepted the job but before the store recorded it: the job is pending
    # again in the store. A restarted submitter must not create a second Ray job.
    crashed = FileJobStore(store_path).get(job.submission_id)
    crashed.state = "pending"
    FileJobStore(store_path).put(crashed)
    submitter().run()
    ours = [j for j in jobs._client.list_jobs() if j.submission_id == job.submission_id]
    assert len(ours) == 1
    assert FileJobStore(store_path).get(job.submission_id).state == "submitted"
    api.server.shutdown()


def test_cli_queue_list_and_cancel(ray_cluster, tmp_path):
    env = {**ray_cluster.env(), "AEGIS_SUBMITTER_STATE_FILE": str(tmp_path / "jobs.json")}
    trace_args = ["--carbon-source", "csv", "--carbon-csv", str(TRACE),
                  "--replay-start", "2020-01-14T09:00:00"]

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "training.submit", *args], env=env,
                              capture_output=True, text=True, timeout=120)

    queued = cli(*trace_args, "--deadline", "16h", "--duration", "30m", "--threshold", "100",
                 "--no-wait", "--submission-id", "aegis-cli-test", "--", "python", "-c", "pass")
    assert queued.returncode == 0, queued.stderr
    assert queued.stdout.strip() == "aegis-cli-test"
    listed = cli("list")
    assert "aegis-cli-test" in listed.stdout and "pending" in listed.stdout
    cancelled = cli(*trace_args, "cancel", "aegis-cli-test")
    assert cancelled.returncode == 0, cancelled.stderr
    assert "cancelled" in cli("list").stdout
    assert cli("cancel", "no-such-job").returncode == 2
