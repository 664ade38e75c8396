"""Build the Flower strategy named in the run config (optionally wrapped for differential privacy)."""

from __future__ import annotations

import numpy as np

from flwr.serverapp.strategy import (
    DifferentialPrivacyServerSideFixedClipping,
    FedAdam,
    FedAvg,
    FedMedian,
    FedProx,
    Krum,
    Strategy,
)

from training.fl_config import FlRunConfig


def sampled_per_round(cfg: FlRunConfig) -> int:
    return max(cfg.min_results, round(cfg.fraction_train * cfg.num_clients))


def make_strategy(cfg: FlRunConfig) -> Strategy:
    common = dict(
        fraction_train=cfg.fraction_train,
        fraction_evaluate=cfg.fraction_evaluate,
        min_train_nodes=cfg.min_results,
        min_evaluate_nodes=1,
        # Wait for every simulated node before round 1, so sampling sees the whole federation.
        min_available_nodes=cfg.num_clients,
    )
    if cfg.strategy == "fedavg":
        strategy: Strategy = FedAvg(**common)
    elif cfg.strategy == "fedprox":
        strategy = FedProx(**common, proximal_mu=cfg.proximal_mu)
    elif cfg.strategy == "fedadam":
        strategy = FedAdam(**common, eta=cfg.server_learning_rate, eta_l=cfg.learning_rate)
    elif cfg.strategy == "fedmedian":
        strategy = FedMedian(**common)
    else:
        strategy = Krum(**common, num_malicious_nodes=cfg.num_malicious_clients)
    if cfg.dp:
        # Server-side clipping + Gaussian noise on the aggregate (central DP, Flower's wrapper).
        strategy = DifferentialPrivacyServerSideFixedClipping(
            strategy,
            noise_multiplier=cfg.dp_noise_multiplier,
            clipping_norm=cfg.dp_clipping_norm,
            num_sampled_clients=sampled_per_round(cfg),
        )
    return strategy


# Server-side optimiser moments of FedOpt-family strategies (FedAdam): without them a resumed
# run would restart Adam from zero moments, which is a different optimisation than the one stopped.
_OPT_PREFIX = "_server_opt."
_OPT_FIELDS = ("m_t", "v_t")


def _inner(strategy: Strategy) -> Strategy:
    return getattr(strategy, "strategy", strategy)  # unwrap the DP wrapper


def optimizer_state(strategy: Strategy) -> dict[str, np.ndarray]:
    """The strategy's server optimiser state as flat named arrays (empty when it has none)."""
    out: dict[str, np.ndarray] = {}
    inner = _inner(strategy)
    for name in _OPT_FIELDS:
        for key, value in (getattr(inner, name, None) or {}).items():
            out[f"{_OPT_PREFIX}{name}.{key}"] = np.asarray(value)
    return out


def restore_optimizer_state(strategy: Strategy, arrays: dict[str, np.ndarray]) -> int:
    """Put state saved by `optimizer_state` back; returns how many arrays were restored."""
    inner = _inner(strategy)
    restored = 0
    for name in _OPT_FIELDS:
        prefix = f"{_OPT_PREFIX}{name}."
        part = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
        if part and hasattr(inner, name):
            setattr(inner, name, part)
            restored += len(part)
    return restored


def split_model_arrays(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The model's own tensors from a checkpoint, without the optimiser state."""
    return {k: v for k, v in arrays.items() if not k.startswith(_OPT_PREFIX)}
