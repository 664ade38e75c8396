"""Pause a rounds-based job between rounds while carbon intensity is high (interruptible mode)."""

from __future__ import annotations

import logging
import math

from training.carbon.forecast import from_epoch_s
from training.carbon.policy import should_run_now
from training.carbon.providers import CarbonProvider
from training.clock import Clock, SystemClock
from training.errors import CarbonDataError

logger = logging.getLogger(__name__)


class CarbonGate:
    """Before each round: run now, or sleep until the plan's next low-carbon window.

    The remaining work is estimated from the rounds left times the mean round time so far, so
    the pause never pushes the job past its deadline (the policy runs at once when it must).

    Args:
        provider: Intensity source.
        deadline_s: Epoch seconds by which the job must be finished; None disables pausing but
            still records intensity.
        threshold_g_per_kwh: Always run at or below this intensity.
        clock: Time source (sleep included).
        max_pause_s: Upper bound on one sleep before re-checking the forecast.
    """

    def __init__(self, provider: CarbonProvider, *, deadline_s: float | None,
                 threshold_g_per_kwh: float | None, clock: Clock | None = None,
                 max_pause_s: float = 1800.0) -> None:
        self.provider = provider
        self.deadline_s = deadline_s
        self.threshold_g_per_kwh = threshold_g_per_kwh
        self.clock = clock or SystemClock()
        self.max_pause_s = max_pause_s
        self.paused_s = 0.0

    def current_g_per_kwh(self) -> float | None:
        try:
            return self.provider.current().g_per_kwh
        except CarbonDataError as exc:
            logger.warning("carbon intensity unavailable: %s", exc)
            return None

    def before_round(self, round_num: int, rounds_left: int, round_s: float) -> float | None:
        """Block until the round may run; return the intensity it starts at (None if unknown)."""
        while self.deadline_s is not None:
            now_s = self.clock.now_s()
            remaining_s = max(rounds_left * round_s, 1.0)
            try:
                current = self.provider.current().g_per_kwh
                forecast = self.provider.forecast(max(self.deadline_s - now_s, remaining_s))
                decision = should_run_now(forecast, now_s, self.deadline_s, remaining_s,
                                          self.threshold_g_per_kwh, current_g_per_kwh=current)
            except (CarbonDataError, ValueError) as exc:
                logger.warning("round %d: no usable forecast (%s); running", round_num, exc)
                break
            if decision.run_now:
                logger.info("round %d: carbon %.1f g/kWh, running (%s)", round_num,
                            decision.now_g_per_kwh, decision.reason)
                break
            pause_s = min(decision.resume_s - now_s, self.max_pause_s)
            logger.info("round %d: carbon %.1f g/kWh, pausing %.0fs until %s (%s; %d rounds "
                        "~%.0fs left, deadline %s)", round_num, decision.now_g_per_kwh, pause_s,
                        from_epoch_s(decision.resume_s).isoformat(), decision.reason,
                        rounds_left, remaining_s, from_epoch_s(self.deadline_s).isoformat())
            self.clock.sleep(pause_s)
            self.paused_s += pause_s
        value = self.current_g_per_kwh()
        return None if value is None or math.isnan(value) else value
