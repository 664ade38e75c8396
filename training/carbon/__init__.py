"""Carbon-intensity data and the policy that decides when training runs."""

from training.carbon.forecast import Forecast, IntensityPoint
from training.carbon.policy import (
    PauseDecision,
    StartDecision,
    Window,
    plan_interruptible,
    plan_start,
    should_run_now,
)
from training.carbon.providers import (
    CarbonProvider,
    CsvTraceProvider,
    ElectricityMapsProvider,
    UkCarbonIntensityProvider,
    load_trace,
)

__all__ = [
    "CarbonProvider",
    "CsvTraceProvider",
    "ElectricityMapsProvider",
    "Forecast",
    "IntensityPoint",
    "PauseDecision",
    "StartDecision",
    "UkCarbonIntensityProvider",
    "Window",
    "load_trace",
    "plan_interruptible",
    "plan_start",
    "should_run_now",
]
