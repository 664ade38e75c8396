"""Ray job entrypoint: Flower server + simulated clients on the cluster this job runs in.

    ray job submit --working-dir . -- python -m training.fl_job --rounds 5 --clients 10 \\
        --strategy fedprox --partition dirichlet --alpha 0.5

Flower's Ray backend reuses an initialised Ray, so this process calls `ray.init()` (which attaches
to the job's cluster through RAY_ADDRESS) before starting the simulation; no second Ray starts.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from training.errors import ConfigError, TrainingError
from training.fl_config import FlRunConfig


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.fl_job", description=__doc__.splitlines()[0])
    a = p.add_argument
    a("--run-name", help="model and checkpoint name (default digits-fl)")
    a("--rounds", dest="num_rounds", type=int)
    a("--clients", dest="num_clients", type=int)
    a("--fraction-train", type=float, help="fraction of clients sampled per round")
    a("--fraction-evaluate", type=float, help="fraction for client-side evaluation (default 0)")
    a("--local-epochs", type=int)
    a("--batch-size", type=int)
    a("--lr", dest="learning_rate", type=float)
    a("--strategy", choices=["fedavg", "fedprox", "fedadam", "fedmedian", "krum"])
    a("--proximal-mu", type=float, help="FedProx mu")
    a("--server-lr", dest="server_learning_rate", type=float, help="FedAdam eta")
    a("--num-malicious", dest="num_malicious_clients", type=int, help="Krum's f")
    a("--dp", action="store_true", default=None, help="central DP: server-side fixed clipping")
    a("--dp-noise", dest="dp_noise_multiplier", type=float)
    a("--dp-clip", dest="dp_clipping_norm", type=float)
    a("--partition", choices=["iid", "dirichlet"])
    a("--alpha", dest="dirichlet_alpha", type=float, help="Dirichlet concentration")
    a("--seed", type=int)
    a("--client-cpus", dest="client_num_cpus", type=float)
    a("--client-gpus", dest="client_num_gpus", type=float)
    a("--min-results", type=int, help="fewest client results a round aggregates")
    a("--round-timeout", dest="round_timeout_s", type=float, help="seconds to wait for clients")
    a("--checkpoint-dir", type=Path)
    a("--no-resume", dest="resume", action="store_false", default=None)
    a("--model-store", help="directory or s3://bucket/prefix")
    a("--fail-clients", help="fault injection: comma-separated client ids that raise in train")
    a("--baseline-epochs", type=int, default=0,
      help="also train the centralized TorchTrainer baseline for this many epochs")
    g = p.add_argument_group("carbon (interruptible mode: pause between rounds)")
    g.add_argument("--carbon-source", choices=["uk", "electricity_maps", "csv"])
    g.add_argument("--carbon-api-url")
    g.add_argument("--carbon-csv")
    g.add_argument("--replay-start", help="trace time that maps to now (csv source)")
    g.add_argument("--pause-threshold", type=float, help="never pause at or below this g/kWh")
    g.add_argument("--deadline", default=os.environ.get("AEGIS_JOB_DEADLINE"),
                   help="finish by (ISO 8601 or 8h); set by the submitter for --interruptible")
    return p


def _config(args: argparse.Namespace) -> FlRunConfig:
    skip = {"baseline_epochs", "carbon_source", "carbon_api_url", "carbon_csv", "replay_start",
            "pause_threshold", "deadline", "fail_clients"}
    values = {k: v for k, v in vars(args).items() if k not in skip}
    if args.fail_clients:
        try:
            values["fail_partition_ids"] = tuple(int(i) for i in args.fail_clients.split(","))
        except ValueError:
            raise ConfigError("--fail-clients must be comma-separated integers") from None
    return FlRunConfig.from_mapping(values)


def _gate(args: argparse.Namespace):
    if not args.carbon_source:
        return None
    from training.carbon_gate import CarbonGate
    from training.clock import SystemClock
    from training.settings import CarbonSettings, parse_deadline_s, validated

    clock = SystemClock()
    provider = validated(CarbonSettings, source=args.carbon_source, api_url=args.carbon_api_url,
                         csv_path=args.carbon_csv, replay_start=args.replay_start).build(clock)
    deadline_s = parse_deadline_s(args.deadline, clock.now_s()) if args.deadline else None
    return CarbonGate(provider, deadline_s=deadline_s, threshold_g_per_kwh=args.pause_threshold,
                      clock=clock)


def run_federated(cfg: FlRunConfig, gate=None, baseline: dict | None = None):
    """Run the Flower simulation on the already-initialised Ray; returns the server's FlResult."""
    import ray
    from flwr.simulation import run_simulation

    from training.client_app import build_client_app
    from training.server_app import build_server_app

    results: list = []
    resources = {"num_cpus": cfg.client_num_cpus, "num_gpus": cfg.client_num_gpus}
    address = ray.get_runtime_context().gcs_address if ray.is_initialized() else None
    # A driver that started its own local Ray (no cluster given) loses that Ray with the
    # shutdown below, so only a driver attached to an existing cluster reconnects.
    node = getattr(ray._private.worker, "_global_node", None)
    reconnect = address is not None and not getattr(node, "head", False)
    backend_config: dict = {"client_resources": resources}
    if reconnect:
        # Should Flower's backend ever (re)initialise Ray, it must join this cluster, not start one.
        backend_config["init_args"] = {"address": address}
    try:
        run_simulation(
            server_app=build_server_app(cfg, gate, baseline, results),
            client_app=build_client_app(cfg),
            num_supernodes=cfg.num_clients,
            backend_config=backend_config,
        )
    finally:
        # Flower's RayBackend.terminate() calls ray.shutdown(), even on a Ray it did not start.
        # Reconnect, so a caller (a test session, a notebook) keeps using the same cluster.
        if reconnect and not ray.is_initialized():
            ray.init(address=address, log_to_driver=False)
    if not results:
        raise RuntimeError("the federated run did not finish (see the log above)")
    return results[0]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # Our own modules log at INFO (carbon decisions); Flower keeps its own console handler.
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("training").addHandler(handler)
    logging.getLogger("training").setLevel(logging.INFO)
    try:
        cfg = _config(args)
        gate = _gate(args)
    except (ConfigError, TrainingError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    import ray

    # Attach to the job's cluster (RAY_ADDRESS); Flower's backend then reuses this connection.
    ray.init(log_to_driver=False, ignore_reinit_error=True)
    baseline = None
    if args.baseline_epochs > 0:
        from training.centralized import run_baseline

        baseline = run_baseline(args.baseline_epochs, cpus_per_worker=cfg.client_num_cpus,
                                batch_size=cfg.batch_size, lr=cfg.learning_rate, seed=cfg.seed)
        print(f"centralized baseline (TorchTrainer, {args.baseline_epochs} epochs): "
              f"accuracy={baseline['accuracy']:.4f}", flush=True)
    try:
        result = run_federated(cfg, gate, baseline)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    results = [result]
    final = results[0].history[-1]
    summary = {"run_name": cfg.run_name, "rounds": final["round"], "accuracy": final["accuracy"],
               "initial_accuracy": results[0].history[0]["accuracy"],
               "model_store": cfg.model_store, "sha256": results[0].manifest["sha256"]}
    if baseline is not None:
        summary["centralized_accuracy"] = baseline["accuracy"]
    print("FL_RESULT " + json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
