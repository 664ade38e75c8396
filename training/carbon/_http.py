"""GET JSON over HTTP with a time-based cache and retries with exponential backoff."""

from __future__ import annotations

import logging
from typing import Any

import httpx

from training.clock import Clock, SystemClock
from training.errors import CarbonDataError

logger = logging.getLogger(__name__)

# Worth retrying: the API is overloaded or briefly down. Other 4xx mean our request is wrong.
_RETRY_STATUS = {429, 500, 502, 503, 504}


class CachedJsonClient:
    """The one place carbon providers touch the network; tests point it at a local server."""

    def __init__(
        self,
        base_url: str,
        *,
        headers: dict[str, str] | None = None,
        cache_ttl_s: float = 300.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        timeout_s: float = 10.0,
        clock: Clock | None = None,
    ) -> None:
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        if cache_ttl_s < 0:
            raise ValueError(f"cache_ttl_s must be >= 0, got {cache_ttl_s}")
        self._base_url = base_url.rstrip("/")
        self._headers = dict(headers or {})
        self._cache_ttl_s = cache_ttl_s
        self._retries = retries
        self._backoff_s = backoff_s
        self._timeout_s = timeout_s
        self._clock = clock or SystemClock()
        self._cache: dict[str, tuple[float, Any]] = {}
        self.requests_sent = 0  # counted so a caller (and a test) can see the cache work

    def get(self, path: str, params: dict[str, str] | None = None) -> Any:
        url = f"{self._base_url}{path}"
        key = url + "?" + "&".join(f"{k}={v}" for k, v in sorted((params or {}).items()))
        hit = self._cache.get(key)
        if hit is not None and self._clock.now_s() < hit[0]:
            return hit[1]
        body = self._get_with_retries(url, params)
        self._cache[key] = (self._clock.now_s() + self._cache_ttl_s, body)
        return body

    def _get_with_retries(self, url: str, params: dict[str, str] | None) -> Any:
        last_error = ""
        for attempt in range(self._retries + 1):
            if attempt:
                delay_s = self._backoff_s * 2 ** (attempt - 1)
                logger.warning("carbon API %s failed (%s); retry %d in %.1fs",
                               url, last_error, attempt, delay_s)
                self._clock.sleep(delay_s)
            self.requests_sent += 1
            try:
                resp = httpx.get(url, params=params, headers=self._headers,
                                 timeout=self._timeout_s)
            except httpx.HTTPError as exc:
                last_error = f"{type(exc).__name__}: {exc}"
                continue
            if resp.status_code in _RETRY_STATUS:
                last_error = f"HTTP {resp.status_code}"
                continue
            if resp.status_code != 200:
                raise CarbonDataError(f"carbon API {url} answered HTTP {resp.status_code}")
            try:
                return resp.json()
            except ValueError as exc:
                raise CarbonDataError(f"carbon API {url} returned invalid JSON") from exc
        raise CarbonDataError(
            f"carbon API {url} unavailable after {self._retries + 1} attempts: {last_error}"
        )
