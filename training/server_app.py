"""Flower ServerApp: the round loop with per-round checkpoints, failure tolerance and a carbon gate.

The loop is Flower's `Strategy.start` unrolled (configure_train -> send_and_receive ->
aggregate_train, then central evaluation), so that between rounds it can checkpoint, pause for
carbon, and refuse to aggregate when fewer than `min_results` clients answered.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp
from safetensors.torch import save as st_save

from training.carbon_gate import CarbonGate
from training.checkpoint import Checkpoint, CheckpointDir
from training.fl_config import FlRunConfig
from training.model_export import open_store, save_model
from training.strategies import (
    make_strategy,
    optimizer_state,
    restore_optimizer_state,
    split_model_arrays,
)
from training.task import evaluate, load_digits_split, new_model, partition_indices

logger = logging.getLogger(__name__)


@dataclass
class FlResult:
    history: list[dict[str, Any]] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)
    resumed_from_round: int = 0


def _log(msg: str, *args: Any) -> None:
    # Printed, not logged: `ray job logs` shows the driver's stdout whatever logging is set up.
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    print(f"{stamp} {msg % args}", flush=True)


def _partition_summary(cfg: FlRunConfig, labels: np.ndarray) -> dict[str, Any]:
    parts = partition_indices(labels, cfg.num_clients, cfg.partition, cfg.dirichlet_alpha, cfg.seed)
    return {
        "scheme": cfg.partition,
        "dirichlet_alpha": cfg.dirichlet_alpha if cfg.partition == "dirichlet" else None,
        "seed": cfg.seed,
        "num_clients": cfg.num_clients,
        "examples_per_client": [int(len(p)) for p in parts],
        "labels_per_client": [np.bincount(labels[p], minlength=10).tolist() for p in parts],
    }


def run_server(grid: Grid, cfg: FlRunConfig, gate: CarbonGate | None = None,
               baseline: dict[str, Any] | None = None) -> FlResult:
    """Run (or resume) the federated training described by `cfg` and store the final model."""
    train_data, test_data = load_digits_split()
    net = new_model(cfg.seed)
    ckpts = CheckpointDir(cfg.checkpoint_dir / cfg.run_name)
    result = FlResult()
    latest = ckpts.load_latest() if cfg.resume else None
    if latest is not None and latest.round <= cfg.num_rounds:
        net.load_state_dict({k: torch.from_numpy(v)
                             for k, v in split_model_arrays(latest.arrays).items()})
        result.history = latest.history
        result.resumed_from_round = latest.round
        _log("resuming %s from round %d checkpoint in %s", cfg.run_name, latest.round, ckpts.dir)
    else:
        loss, acc = evaluate(net, test_data)
        result.history = [{"round": 0, "accuracy": acc, "loss": loss, "duration_s": 0.0}]
        _log("round 0/%d: accuracy=%.4f loss=%.4f (initial model)", cfg.num_rounds, acc, loss)
        ckpts.save(Checkpoint(0, {k: v.numpy() for k, v in net.state_dict().items()},
                              result.history))

    strategy = make_strategy(cfg)
    if latest is not None and result.resumed_from_round:
        restore_optimizer_state(strategy, latest.arrays)
    arrays = ArrayRecord(net.state_dict())
    for rnd in range(result.resumed_from_round + 1, cfg.num_rounds + 1):
        done = [h["duration_s"] for h in result.history if h["round"] > 0]
        carbon = gate.before_round(rnd, cfg.num_rounds - rnd + 1,
                                   float(np.mean(done)) if done else 60.0) if gate else None
        t0 = time.monotonic()
        messages = list(strategy.configure_train(rnd, arrays, ConfigRecord(), grid))
        replies = list(grid.send_and_receive(messages, timeout=cfg.round_timeout_s))
        ok = [r for r in replies if not r.has_error()]
        failed = len(messages) - len(ok)  # errors plus clients that never answered in time
        train_loss = None
        if len(ok) < cfg.min_results:
            _log("round %d/%d: only %d of %d clients answered (min_results=%d); keeping the "
                 "previous global model", rnd, cfg.num_rounds, len(ok), len(messages),
                 cfg.min_results)
        else:
            agg_arrays, agg_metrics = strategy.aggregate_train(rnd, replies)
            if agg_arrays is not None:
                arrays = agg_arrays
            if agg_metrics is not None and "train_loss" in agg_metrics:
                train_loss = float(agg_metrics["train_loss"])
        client_acc = None
        if cfg.fraction_evaluate > 0:
            eval_msgs = list(strategy.configure_evaluate(rnd, arrays, ConfigRecord(), grid))
            agg_eval = strategy.aggregate_evaluate(
                rnd, grid.send_and_receive(eval_msgs, timeout=cfg.round_timeout_s))
            if agg_eval is not None and "eval_acc" in agg_eval:
                client_acc = float(agg_eval["eval_acc"])
        net.load_state_dict(arrays.to_torch_state_dict())
        loss, acc = evaluate(net, test_data)
        duration_s = time.monotonic() - t0
        row = {"round": rnd, "accuracy": acc, "loss": loss, "train_loss": train_loss,
               "client_accuracy": client_acc, "results": len(ok), "failures": failed,
               "duration_s": duration_s, "carbon_g_per_kwh": carbon}
        result.history.append(row)
        _log("round %d/%d: accuracy=%.4f loss=%.4f train_loss=%s clients_ok=%d failed=%d "
             "time=%.1fs carbon=%s", rnd, cfg.num_rounds, acc, loss,
             "-" if train_loss is None else f"{train_loss:.4f}", len(ok), failed, duration_s,
             "-" if carbon is None else f"{carbon:.1f}g/kWh")
        state = {k: v.numpy() for k, v in net.state_dict().items()}
        ckpts.save(Checkpoint(rnd, {**state, **optimizer_state(strategy)}, result.history))

    result.manifest = _store_final(cfg, net, result, train_data.y, gate, baseline)
    return result


def _store_final(cfg: FlRunConfig, net: torch.nn.Module, result: FlResult, labels: np.ndarray,
                 gate: CarbonGate | None, baseline: dict[str, Any] | None) -> dict[str, Any]:
    carbon = [h["carbon_g_per_kwh"] for h in result.history
              if h.get("carbon_g_per_kwh") is not None]
    final = result.history[-1]
    manifest = {
        "created_at": datetime.now(timezone.utc).isoformat(),
        "task": "sklearn-digits-mlp",
        "framework": f"torch {torch.__version__}",
        "rounds": final["round"],
        "resumed_from_round": result.resumed_from_round,
        "metrics": {"accuracy": final["accuracy"], "loss": final["loss"],
                    "initial_accuracy": result.history[0]["accuracy"],
                    "per_round": result.history},
        "config": cfg.to_run_config(),
        "data_partition": _partition_summary(cfg, labels),
        "carbon": {
            "provider": gate.provider.name if gate else None,
            "intensity_g_per_kwh_per_round": carbon,
            "mean_intensity_g_per_kwh": float(np.mean(carbon)) if carbon else None,
            "paused_s": gate.paused_s if gate else 0.0,
        },
    }
    if baseline is not None:
        manifest["centralized_baseline"] = baseline
        manifest["metrics"]["gap_to_centralized"] = baseline["accuracy"] - final["accuracy"]
    weights = st_save({k: v.contiguous() for k, v in net.state_dict().items()})
    store = open_store(cfg.model_store)
    manifest = save_model(store, cfg.run_name, weights, manifest)
    _log("model %s saved to %s (sha256 %s, accuracy %.4f)", cfg.run_name, store.uri,
         manifest["sha256"][:12], final["accuracy"])
    return manifest


def build_server_app(cfg: FlRunConfig | None = None, gate: CarbonGate | None = None,
                     baseline: dict[str, Any] | None = None,
                     results: list[FlResult] | None = None) -> ServerApp:
    """A ServerApp bound to `cfg` (else reading `context.run_config` once) whose result is
    appended to `results`, for the job entrypoint to report."""
    app = ServerApp()

    @app.main()
    def _main(grid: Grid, context: Context) -> None:
        run_cfg = cfg if cfg is not None else FlRunConfig.from_mapping(context.run_config)
        out = run_server(grid, run_cfg, gate, baseline)
        if results is not None:
            results.append(out)

    return app


# For `flwr run`: the run config comes from pyproject/--run-config through the Context.
app = build_server_app()
