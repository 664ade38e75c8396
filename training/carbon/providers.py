"""Carbon-intensity providers behind one interface: a CSV trace, the UK API, Electricity Maps."""

from __future__ import annotations

import csv
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from training.carbon._http import CachedJsonClient
from training.carbon.forecast import Forecast, IntensityPoint, epoch_s, from_epoch_s
from training.clock import Clock, SystemClock
from training.errors import CarbonDataError

DEFAULT_HORIZON_S = 48 * 3600.0


class CarbonProvider(Protocol):
    """What the submitter and the FL pause gate need from a source of intensity data."""

    name: str

    def current(self) -> IntensityPoint:
        """Intensity of the slot that contains now."""

    def forecast(self, horizon_s: float = DEFAULT_HORIZON_S) -> Forecast:
        """Forecast slots from the one containing now, covering up to `horizon_s` ahead."""


def load_trace(path: str | Path) -> Forecast:
    """Read a trace CSV with columns `Time` (UTC) and `Carbon Intensity` (gCO2eq/kWh).

    Each row holds until the next row's time; the last row lasts as long as the one before it.
    """
    path = Path(path)
    try:
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            missing = {"Time", "Carbon Intensity"} - set(reader.fieldnames or [])
            if missing:
                raise CarbonDataError(f"{path}: missing column(s) {sorted(missing)}")
            rows = [(r["Time"], r["Carbon Intensity"]) for r in reader]
    except OSError as exc:
        raise CarbonDataError(f"cannot read carbon trace {path}: {exc.strerror}") from exc
    if len(rows) < 2:
        raise CarbonDataError(f"{path}: a trace needs at least two rows")
    try:
        starts = np.array([
            datetime.fromisoformat(t).replace(tzinfo=timezone.utc).timestamp() for t, _ in rows
        ])
        values = np.array([float(v) for _, v in rows])
    except ValueError as exc:
        raise CarbonDataError(f"{path}: bad row ({exc})") from exc
    ends = np.append(starts[1:], starts[-1] + (starts[-1] - starts[-2]))
    return Forecast(starts, ends, values)


class CsvTraceProvider:
    """Replays a recorded trace, for offline use, tests and benchmarks.

    Args:
        path: Trace CSV (see `load_trace`).
        clock: Where "now" comes from.
        replay_start: Trace time that corresponds to the clock's now at construction; None uses
            the clock's time unchanged (the trace must then cover the present).
        forecast_error: Relative standard deviation of Gaussian noise added to forecasts (0.05
            for 5%); `current()` always reports the recorded value.
        seed: Seed for that noise.
    """

    name = "csv"

    def __init__(
        self,
        path: str | Path,
        *,
        clock: Clock | None = None,
        replay_start: datetime | None = None,
        forecast_error: float = 0.0,
        seed: int = 0,
    ) -> None:
        if forecast_error < 0:
            raise ValueError(f"forecast_error must be >= 0, got {forecast_error}")
        self.trace = load_trace(path)
        self._clock = clock or SystemClock()
        self._shift_s = 0.0 if replay_start is None else epoch_s(replay_start) - self._clock.now_s()
        self._error = forecast_error
        self._rng = np.random.default_rng(seed)

    def _trace_now_s(self) -> float:
        t = self._clock.now_s() + self._shift_s
        if not self.trace.covers(t, t):
            raise CarbonDataError(f"the trace does not cover {from_epoch_s(t).isoformat()}")
        return t

    def current(self) -> IntensityPoint:
        t = self._trace_now_s()
        i = int(np.searchsorted(self.trace.starts_s, t, side="right")) - 1
        return IntensityPoint(from_epoch_s(self.trace.starts_s[i] - self._shift_s),
                              from_epoch_s(self.trace.ends_s[i] - self._shift_s),
                              float(self.trace.values[i]))

    def forecast(self, horizon_s: float = DEFAULT_HORIZON_S) -> Forecast:
        t = self._trace_now_s()
        part = self.trace.window(t, min(t + horizon_s, self.trace.end_s))
        factors = 1.0 + self._rng.normal(0.0, self._error, len(part)) if self._error else 1.0
        starts = part.starts_s - self._shift_s
        # Shifting there and back is not exact in floating point; the first slot must still
        # contain now, or the policy would see a forecast that starts in the future.
        starts[0] = min(starts[0], self._clock.now_s())
        return Forecast(starts, part.ends_s - self._shift_s, part.values * factors)


def _parse_time(text: str) -> datetime:
    # The UK API writes "2018-01-20T12:00Z"; fromisoformat on 3.10 does not take a bare "Z".
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)


class UkCarbonIntensityProvider:
    """The GB Carbon Intensity API (api.carbonintensity.org.uk) or a server speaking its format.

    Uses `GET /intensity` (the current half hour) and `GET /intensity/{from}/fw48h` (48-hour
    forecast). A slot's `actual` is preferred over its `forecast` when the API has it.
    """

    name = "uk"

    def __init__(self, client: CachedJsonClient, *, clock: Clock | None = None) -> None:
        self._client = client
        self._clock = clock or SystemClock()

    @staticmethod
    def _points(body: Any, url: str) -> list[IntensityPoint]:
        try:
            points = []
            for row in body["data"]:
                intensity = row["intensity"]
                value = intensity.get("actual")
                value = intensity["forecast"] if value is None else value
                points.append(IntensityPoint(_parse_time(row["from"]), _parse_time(row["to"]),
                                             float(value)))
        except (KeyError, TypeError, ValueError) as exc:
            raise CarbonDataError(f"unexpected response from {url}: {exc!r}") from exc
        if not points:
            raise CarbonDataError(f"{url} returned no intensity data")
        return points

    def current(self) -> IntensityPoint:
        return self._points(self._client.get("/intensity"), "/intensity")[0]

    def forecast(self, horizon_s: float = DEFAULT_HORIZON_S) -> Forecast:
        now = datetime.fromtimestamp(self._clock.now_s(), tz=timezone.utc)
        # Ask from the start of the current half hour so the first slot contains now.
        slot = now.replace(minute=30 * (now.minute // 30), second=0, microsecond=0)
        path = f"/intensity/{slot.strftime('%Y-%m-%dT%H:%MZ')}/fw48h"
        points = self._points(self._client.get(path), path)
        end = now + timedelta(seconds=horizon_s)
        return Forecast.from_points(p for p in points if p.start < end)


class ElectricityMapsProvider:
    """Electricity Maps-style API: `/v3/carbon-intensity/latest` and `/forecast` for a zone."""

    name = "electricity_maps"

    def __init__(self, client: CachedJsonClient, zone: str, *, slot_s: float = 3600.0) -> None:
        if not zone:
            raise ValueError("zone must be a non-empty zone code such as 'GB'")
        self._client = client
        self._zone = zone
        self._slot_s = slot_s  # the API reports hourly points; each holds until the next

    def current(self) -> IntensityPoint:
        path = "/v3/carbon-intensity/latest"
        body = self._client.get(path, {"zone": self._zone})
        try:
            start = _parse_time(body["datetime"])
            value = float(body["carbonIntensity"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CarbonDataError(f"unexpected response from {path}: {exc!r}") from exc
        return IntensityPoint(start, start + timedelta(seconds=self._slot_s), value)

    def forecast(self, horizon_s: float = DEFAULT_HORIZON_S) -> Forecast:
        path = "/v3/carbon-intensity/forecast"
        body = self._client.get(path, {"zone": self._zone})
        try:
            rows = [(_parse_time(r["datetime"]), float(r["carbonIntensity"]))
                    for r in body["forecast"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise CarbonDataError(f"unexpected response from {path}: {exc!r}") from exc
        if not rows:
            raise CarbonDataError(f"{path} returned an empty forecast")
        # The forecast starts at the next hour; the current slot comes from /latest.
        now_point = self.current()
        points = [now_point] + [
            IntensityPoint(t, t + timedelta(seconds=self._slot_s), v)
            for t, v in rows if t >= now_point.end
        ]
        end = now_point.start + timedelta(seconds=horizon_s)
        return Forecast.from_points(p for p in points if p.start < end)
