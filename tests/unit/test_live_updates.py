"""`LiveUpdates`: a running replica refuses a bad live update and keeps what it runs; a starting one raises."""

from __future__ import annotations

import logging

import pytest

from serve_app.live import LiveUpdates


def _set(state: dict, value: int) -> int:
    if value < 1:
        raise ValueError(f"value must be >= 1, got {value}")
    state["value"] = value
    return value


def test_the_first_update_raises_and_later_bad_ones_are_refused(caplog):
    refused: list[int] = []
    live, state = LiveUpdates("demo", lambda: refused.append(1)), {}
    with pytest.raises(ValueError, match="got 0"):
        live.apply(lambda: _set(state, 0))  # a starting replica: nothing to keep, so it fails to start
    assert not live.applied and refused == []
    assert live.apply(lambda: _set(state, 3)) == 3 and live.applied
    with caplog.at_level(logging.ERROR, logger="ray.serve"):
        assert live.apply(lambda: _set(state, -1)) is None
    assert state == {"value": 3} and refused == [1]  # the last good value stays, and is counted
    assert live.last_refused["error"] == "value must be >= 1, got -1"
    live.apply(lambda: _set(state, 4))
    assert live.last_refused is None  # a good update clears it
    assert "demo: live update refused, the running settings stay: value must be >= 1, got -1" in caplog.text


async def test_async_updates_follow_the_same_rule():
    live, state = LiveUpdates("demo"), {}

    async def update(value: int) -> int:
        return _set(state, value)

    with pytest.raises(ValueError):
        await live.apply_async(lambda: update(0))
    assert await live.apply_async(lambda: update(2)) == 2
    assert await live.apply_async(lambda: update(0)) is None and state == {"value": 2}
