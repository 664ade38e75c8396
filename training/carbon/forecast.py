"""A carbon-intensity series as a step function over time slots, with fast window integrals."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterable, Sequence

import numpy as np


def to_utc(moment: datetime) -> datetime:
    """Return `moment` as an aware UTC datetime; naive datetimes are taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def epoch_s(moment: datetime) -> float:
    return to_utc(moment).timestamp()


def from_epoch_s(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


@dataclass(frozen=True)
class IntensityPoint:
    """Grid carbon intensity over one slot [start, end), in gCO2eq/kWh."""

    start: datetime
    end: datetime
    g_per_kwh: float


class Forecast:
    """Ordered, non-overlapping intensity slots read as a step function.

    Times are kept as epoch seconds in numpy arrays so that the policy can score thousands of
    candidate windows per job (the trace replay in benchmarks/carbon.py does exactly that).
    """

    def __init__(self, starts_s: np.ndarray, ends_s: np.ndarray, values: np.ndarray) -> None:
        if not (len(starts_s) == len(ends_s) == len(values)):
            raise ValueError("starts_s, ends_s and values must have the same length")
        if len(values) == 0:
            raise ValueError("a forecast needs at least one slot")
        if np.any(ends_s <= starts_s) or np.any(starts_s[1:] < ends_s[:-1]):
            raise ValueError("forecast slots must be ordered, non-empty and non-overlapping")
        self.starts_s = np.asarray(starts_s, dtype=float)
        self.ends_s = np.asarray(ends_s, dtype=float)
        self.values = np.asarray(values, dtype=float)
        # Cumulative integral (g/kWh * s) at each slot end; gaps between slots integrate to 0
        # and are refused by `integral` instead, so the prefix sum only needs slot areas.
        areas = (self.ends_s - self.starts_s) * self.values
        self._cum = np.concatenate([[0.0], np.cumsum(areas)])

    @classmethod
    def from_points(cls, points: Iterable[IntensityPoint]) -> "Forecast":
        pts = sorted(points, key=lambda p: p.start)
        return cls(
            np.array([epoch_s(p.start) for p in pts]),
            np.array([epoch_s(p.end) for p in pts]),
            np.array([p.g_per_kwh for p in pts]),
        )

    @classmethod
    def regular(cls, start_s: float, slot_s: float, values: Sequence[float]) -> "Forecast":
        """Evenly spaced slots of `slot_s` seconds beginning at `start_s`."""
        starts = start_s + slot_s * np.arange(len(values))
        return cls(starts, starts + slot_s, np.asarray(values, dtype=float))

    def __len__(self) -> int:
        return len(self.values)

    @property
    def start_s(self) -> float:
        return float(self.starts_s[0])

    @property
    def end_s(self) -> float:
        return float(self.ends_s[-1])

    def points(self) -> list[IntensityPoint]:
        return [
            IntensityPoint(from_epoch_s(s), from_epoch_s(e), float(v))
            for s, e, v in zip(self.starts_s, self.ends_s, self.values)
        ]

    def covers(self, t0_s: float, t1_s: float) -> bool:
        return self.start_s <= t0_s and t1_s <= self.end_s

    def value_at(self, t_s: float) -> float:
        """Intensity of the slot containing `t_s` (the last slot's value at its very end)."""
        if not self.start_s <= t_s <= self.end_s:
            raise ValueError(f"time {from_epoch_s(t_s).isoformat()} is outside the forecast")
        i = int(np.searchsorted(self.starts_s, t_s, side="right")) - 1
        return float(self.values[max(i, 0)])

    def _cum_at(self, t_s: float) -> float:
        i = int(np.searchsorted(self.starts_s, t_s, side="right")) - 1
        if i < 0:
            return 0.0
        within = min(t_s, self.ends_s[i]) - self.starts_s[i]
        return float(self._cum[i] + within * self.values[i])

    def _cum_at_many(self, ts: np.ndarray) -> np.ndarray:
        i = np.searchsorted(self.starts_s, ts, side="right") - 1
        ic = np.clip(i, 0, None)
        within = np.minimum(ts, self.ends_s[ic]) - self.starts_s[ic]
        return np.where(i < 0, 0.0, self._cum[ic] + within * self.values[ic])

    def means(self, t0s: np.ndarray, duration_s: float) -> np.ndarray:
        """Mean intensity over [t, t + duration_s] for each start t (all must be covered)."""
        t0s = np.asarray(t0s, dtype=float)
        return (self._cum_at_many(t0s + duration_s) - self._cum_at_many(t0s)) / duration_s

    def integral(self, t0_s: float, t1_s: float) -> float:
        """Integral of intensity over [t0_s, t1_s], in (g/kWh)*s; the span must be covered."""
        if t1_s < t0_s:
            raise ValueError("t1_s must not be before t0_s")
        if not self.covers(t0_s, t1_s):
            raise ValueError("window is not covered by the forecast")
        return self._cum_at(t1_s) - self._cum_at(t0_s)

    def mean(self, t0_s: float, t1_s: float) -> float:
        """Mean intensity over [t0_s, t1_s] in g/kWh (the value at t0_s for an empty window)."""
        if t1_s == t0_s:
            return self.value_at(t0_s)
        return self.integral(t0_s, t1_s) / (t1_s - t0_s)

    def window(self, t0_s: float, t1_s: float) -> "Forecast":
        """The slots that overlap [t0_s, t1_s], clipped to it."""
        lo = max(int(np.searchsorted(self.ends_s, t0_s, side="right")), 0)
        hi = int(np.searchsorted(self.starts_s, t1_s, side="left"))
        if hi <= lo:
            raise ValueError("window does not overlap the forecast")
        starts = np.maximum(self.starts_s[lo:hi], t0_s)
        ends = np.minimum(self.ends_s[lo:hi], t1_s)
        keep = ends > starts
        return Forecast(starts[keep], ends[keep], self.values[lo:hi][keep])

    def scaled(self, factors: np.ndarray) -> "Forecast":
        """A copy with each slot's value multiplied by `factors` (used to model forecast error)."""
        return Forecast(self.starts_s, self.ends_s, self.values * factors)
