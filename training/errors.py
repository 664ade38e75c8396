"""Errors raised by the training side.

    TrainingError
    ├── CarbonDataError     a provider could not deliver intensity data (after its retries)
    ├── SubmissionError     Ray refused or failed a job submission
    └── UnknownJob          no pending or submitted job has that id

Configuration errors use `common.errors.ConfigError` (a ValueError naming the field), shared
with the serving side so every entry point reports bad settings the same way.
"""

from __future__ import annotations

from common.errors import ConfigError

__all__ = ["TrainingError", "CarbonDataError", "SubmissionError", "UnknownJob", "ConfigError"]


class TrainingError(Exception):
    """Base class for training-side failures that a CLI reports as one line."""


class CarbonDataError(TrainingError):
    pass


class SubmissionError(TrainingError):
    pass


class UnknownJob(TrainingError):
    pass
