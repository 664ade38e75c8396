"""Typed run configuration of the Flower app, validated once at start with field-named errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from training.errors import ConfigError

Strategy = Literal["fedavg", "fedprox", "fedadam", "fedmedian", "krum"]


class FlRunConfig(BaseModel):
    """Everything one federated run needs; Flower's kebab-case run config maps onto it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    run_name: str = Field(default="digits-fl", pattern=r"^[A-Za-z0-9._-]+$")
    num_rounds: int = Field(default=5, ge=1)
    num_clients: int = Field(default=10, ge=2)
    fraction_train: float = Field(default=1.0, gt=0.0, le=1.0)
    fraction_evaluate: float = Field(default=0.0, ge=0.0, le=1.0)  # 0: central evaluation only
    local_epochs: int = Field(default=1, ge=1)
    batch_size: int = Field(default=32, ge=1)
    learning_rate: float = Field(default=0.05, gt=0.0)
    strategy: Strategy = "fedavg"
    proximal_mu: float = Field(default=0.01, ge=0.0)
    server_learning_rate: float = Field(default=0.05, gt=0.0)  # FedAdam's eta
    num_malicious_clients: int = Field(default=0, ge=0)  # Krum's f
    dp: bool = False
    dp_noise_multiplier: float = Field(default=0.1, ge=0.0)
    dp_clipping_norm: float = Field(default=5.0, gt=0.0)
    partition: Literal["iid", "dirichlet"] = "iid"
    dirichlet_alpha: float = Field(default=0.5, gt=0.0)
    seed: int = 0
    client_num_cpus: float = Field(default=0.5, gt=0.0)
    client_num_gpus: float = Field(default=0.0, ge=0.0)
    min_results: int = Field(default=2, ge=1)
    round_timeout_s: float = Field(default=300.0, gt=0.0)
    checkpoint_dir: Path = Path.home() / ".aegis" / "checkpoints"
    resume: bool = True
    model_store: str = str(Path.home() / ".aegis" / "models")
    fail_partition_ids: tuple[int, ...] = ()  # fault injection: these clients raise in train

    @model_validator(mode="after")
    def _consistent(self) -> "FlRunConfig":
        sampled = max(1, round(self.fraction_train * self.num_clients))
        if self.min_results > sampled:
            raise ValueError(f"min_results ({self.min_results}) exceeds the clients sampled per "
                             f"round ({sampled} = fraction_train x num_clients)")
        if self.strategy == "krum" and sampled <= 2 * self.num_malicious_clients + 2:
            raise ValueError("krum needs more than 2*num_malicious_clients + 2 clients per round")
        bad = [i for i in self.fail_partition_ids if not 0 <= i < self.num_clients]
        if bad:
            raise ValueError(f"fail_partition_ids {bad} are not client ids 0..{self.num_clients - 1}")
        return self

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "FlRunConfig":
        """From Flower's run config (kebab-case keys) or CLI values; ConfigError names the field."""
        try:
            return cls(**{k.replace("-", "_"): v for k, v in values.items() if v is not None})
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "run config"
            raise ConfigError(f"{field}: {first['msg']}") from None

    def to_run_config(self) -> dict[str, Any]:
        """Flat, Flower-compatible values (str/int/float/bool) for records and the manifest."""
        out: dict[str, Any] = {}
        for key, value in self.model_dump(mode="json").items():
            out[key.replace("_", "-")] = ",".join(map(str, value)) if isinstance(value, list) \
                else value
        return out
