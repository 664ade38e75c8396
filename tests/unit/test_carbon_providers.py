"""Carbon providers: the real GB trace, and UK-API / Electricity Maps formats from a local server."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from training.carbon._http import CachedJsonClient
from training.carbon.providers import (
    CsvTraceProvider,
    ElectricityMapsProvider,
    UkCarbonIntensityProvider,
    load_trace,
)
from training.errors import CarbonDataError

TRACE = Path(__file__).resolve().parents[3] / "shared/data/carbon/gb_2020_ci.csv"


class ManualClock:
    def __init__(self, start: datetime) -> None:
        self.t = start.timestamp()

    def now_s(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds)


class Recorded:
    """A local HTTP server answering from a dict of path -> JSON, optionally failing first."""

    def __init__(self, routes: dict[str, object], fail_first: int = 0) -> None:
        self.routes, self.fail_left, self.hits = routes, fail_first, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                outer.hits.append(self.path)
                path = self.path.split("?")[0]
                if outer.fail_left > 0:
                    outer.fail_left -= 1
                    self.send_response(503)
                    self.end_headers()
                    return
                body = outer.routes.get(path)
                self.send_response(200 if body is not None else 404)
                self.end_headers()
                if body is not None:
                    self.wfile.write(json.dumps(body).encode())

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def uk_slots(start: datetime, values: list[float]) -> dict:
    fmt = "%Y-%m-%dT%H:%MZ"
    return {"data": [{
        "from": (start + timedelta(minutes=30 * i)).strftime(fmt),
        "to": (start + timedelta(minutes=30 * (i + 1))).strftime(fmt),
        "intensity": {"forecast": v, "actual": None, "index": "moderate"},
    } for i, v in enumerate(values)]}


START = datetime(2020, 3, 2, 9, 0, tzinfo=timezone.utc)


def test_trace_provider_replays_the_recorded_values():
    trace = load_trace(TRACE)
    assert len(trace) == 21980
    clock = ManualClock(datetime(2026, 1, 1, tzinfo=timezone.utc))
    provider = CsvTraceProvider(TRACE, clock=clock, replay_start=datetime(2019, 12, 20, 0, 40))
    # 00:40 falls in the 00:30 slot: 135.088... in the CSV.
    assert provider.current().g_per_kwh == pytest.approx(135.08869637679902)
    fc = provider.forecast(6 * 3600)
    assert fc.start_s <= clock.now_s() < fc.end_s
    assert fc.values[1] == pytest.approx(141.3570581257414)


def test_trace_missing_column_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("Time,Intensity\n2020-01-01 00:00:00,1\n")
    with pytest.raises(CarbonDataError, match="Carbon Intensity"):
        load_trace(bad)


def test_uk_provider_parses_current_and_forecast():
    server = Recorded({
        "/intensity": uk_slots(START, [250]),
        "/intensity/2020-03-02T09:00Z/fw48h": uk_slots(START, [250, 240, 120, 110]),
    })
    try:
        clock = ManualClock(START + timedelta(minutes=10))
        uk = UkCarbonIntensityProvider(CachedJsonClient(server.url, clock=clock), clock=clock)
        assert uk.current().g_per_kwh == 250
        fc = uk.forecast()
        assert list(fc.values) == [250, 240, 120, 110]
        assert fc.start_s == START.timestamp()
    finally:
        server.close()


def test_http_cache_serves_repeats_until_ttl_expires():
    server = Recorded({"/intensity": uk_slots(START, [250])})
    try:
        clock = ManualClock(START)
        client = CachedJsonClient(server.url, cache_ttl_s=300, clock=clock)
        uk = UkCarbonIntensityProvider(client, clock=clock)
        uk.current(), uk.current()
        assert len(server.hits) == 1
        clock.sleep(301)
        uk.current()
        assert len(server.hits) == 2
    finally:
        server.close()


def test_http_retries_with_backoff_then_succeeds():
    server = Recorded({"/intensity": uk_slots(START, [99])}, fail_first=2)
    try:
        clock = ManualClock(START)
        client = CachedJsonClient(server.url, retries=3, backoff_s=1.0, clock=clock)
        assert UkCarbonIntensityProvider(client, clock=clock).current().g_per_kwh == 99
        assert len(server.hits) == 3
        assert clock.now_s() - START.timestamp() == pytest.approx(1.0 + 2.0)  # 1s, then 2s
    finally:
        server.close()


def test_http_gives_up_with_carbon_data_error():
    server = Recorded({}, fail_first=10)
    try:
        clock = ManualClock(START)
        client = CachedJsonClient(server.url, retries=2, backoff_s=0.1, clock=clock)
        with pytest.raises(CarbonDataError, match="after 3 attempts"):
            UkCarbonIntensityProvider(client, clock=clock).current()
    finally:
        server.close()


def test_electricity_maps_provider_joins_latest_and_forecast():
    iso = "%Y-%m-%dT%H:%M:%S.000Z"
    server = Recorded({
        "/v3/carbon-intensity/latest": {"zone": "GB", "carbonIntensity": 210,
                                        "datetime": START.strftime(iso)},
        "/v3/carbon-intensity/forecast": {"zone": "GB", "forecast": [
            {"carbonIntensity": v, "datetime": (START + timedelta(hours=h)).strftime(iso)}
            for h, v in [(1, 180), (2, 90), (3, 150)]]},
    })
    try:
        clock = ManualClock(START)
        em = ElectricityMapsProvider(CachedJsonClient(server.url, clock=clock), "GB")
        fc = em.forecast()
        assert list(fc.values) == [210, 180, 90, 150]
        assert all("zone=GB" in hit for hit in server.hits)
    finally:
        server.close()
