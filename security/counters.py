"""Plain counters that the ingress maps onto Ray / Prometheus metrics (no metrics import here)."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Callable


class Counters:
    """Named monotonically increasing counters with optional listeners.

    The ingress registers a listener (e.g. `lambda name, n: ray_counter.inc(n, tags={"event": name})`)
    so security code stays free of any metrics library.
    """

    def __init__(self) -> None:
        self._values: Counter[str] = Counter()
        self._listeners: list[Callable[[str, int], None]] = []
        self._lock = threading.Lock()

    def inc(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._values[name] += amount
        for listener in self._listeners:
            listener(name, amount)

    def add_listener(self, listener: Callable[[str, int], None]) -> None:
        self._listeners.append(listener)

    def get(self, name: str) -> int:
        return self._values[name]

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._values)
