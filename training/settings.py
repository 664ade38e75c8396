"""Typed settings for the submitter and the FL job's carbon gate, from AEGIS_* env and CLI flags."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from training.carbon._http import CachedJsonClient
from training.carbon.providers import (
    CarbonProvider,
    CsvTraceProvider,
    ElectricityMapsProvider,
    UkCarbonIntensityProvider,
)
from training.clock import Clock
from training.errors import ConfigError

_DURATION_RE = re.compile(r"^(?:(\d+(?:\.\d+)?)d)?(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?"
                          r"(?:(\d+(?:\.\d+)?)s)?$")


def parse_duration_s(text: str, field: str) -> float:
    """'8h', '90m', '1h30m', '45s', '2d' or a bare number of seconds -> seconds."""
    text = text.strip().lower()
    try:
        return float(text)
    except ValueError:
        pass
    match = _DURATION_RE.match(text)
    if not text or not match or not any(match.groups()):
        raise ConfigError(f"{field} must be a duration such as 8h, 90m or 1h30m, got {text!r}")
    d, h, m, s = (float(g) if g else 0.0 for g in match.groups())
    return d * 86400 + h * 3600 + m * 60 + s


def parse_deadline_s(text: str, now_s: float, field: str = "deadline") -> float:
    """A deadline relative to now ('8h') or absolute (ISO 8601, UTC when no offset is given)."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return now_s + parse_duration_s(text, field)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


class CarbonSettings(BaseSettings):
    """Where carbon intensity comes from. Env: AEGIS_CARBON_SOURCE, AEGIS_CARBON_API_URL, ..."""

    model_config = SettingsConfigDict(env_prefix="AEGIS_CARBON_", extra="forbid")

    source: Literal["uk", "electricity_maps", "csv"] = "uk"
    api_url: str | None = None  # default depends on source
    zone: str = "GB"
    token: SecretStr | None = None
    csv_path: Path | None = None
    replay_start: datetime | None = None
    forecast_error: float = Field(default=0.0, ge=0.0, le=1.0)
    cache_ttl_s: float = Field(default=300.0, ge=0.0)
    retries: int = Field(default=3, ge=0, le=10)
    backoff_s: float = Field(default=1.0, ge=0.0)

    @model_validator(mode="after")
    def _source_needs(self) -> "CarbonSettings":
        if self.source == "csv" and self.csv_path is None:
            raise ValueError("csv_path is required when source is 'csv'")
        if self.source == "csv" and not self.csv_path.is_file():
            raise ValueError(f"csv_path {self.csv_path} is not a file")
        if self.source == "electricity_maps" and self.token is None and self.api_url is None:
            raise ValueError("token is required for the public Electricity Maps API")
        return self

    def build(self, clock: Clock) -> CarbonProvider:
        if self.source == "csv":
            return CsvTraceProvider(self.csv_path, clock=clock, replay_start=self.replay_start,
                                    forecast_error=self.forecast_error)
        default_url = {"uk": "https://api.carbonintensity.org.uk",
                       "electricity_maps": "https://api.electricitymap.org"}[self.source]
        headers = {"auth-token": self.token.get_secret_value()} if self.token else {}
        client = CachedJsonClient(self.api_url or default_url, headers=headers,
                                  cache_ttl_s=self.cache_ttl_s, retries=self.retries,
                                  backoff_s=self.backoff_s, clock=clock)
        if self.source == "uk":
            return UkCarbonIntensityProvider(client, clock=clock)
        return ElectricityMapsProvider(client, self.zone)


class StoreSettings(BaseSettings):
    """Where pending jobs persist. Env: AEGIS_SUBMITTER_STATE_FILE, AEGIS_SUBMITTER_REDIS_URL."""

    model_config = SettingsConfigDict(env_prefix="AEGIS_SUBMITTER_", extra="forbid")

    state_file: Path = Path(".aegis-cache/submitter-jobs.json")
    redis_url: str | None = None


def validated(cls, **values):
    """Build settings `cls`, turning pydantic's error into one ConfigError naming the field."""
    try:
        return cls(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or cls.__name__
        raise ConfigError(f"{where}: {first['msg']}") from None


def timedelta_text(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))
