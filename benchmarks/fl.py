"""FL accuracy per round (IID vs Dirichlet(0.5)) against the centralized TorchTrainer baseline.

    python -m benchmarks.fl [--rounds 10] [--clients 20] [--client-cpus 0.5]

Runs on a local Ray started here (or RAY_ADDRESS), all on this machine; also reports rounds per
minute with 20 simulated clients. Timings exclude nothing but are measured side by side in one run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--client-cpus", type=float, default=0.5)
    parser.add_argument("--strategy", default="fedavg")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import ray

    from training.centralized import run_baseline
    from training.fl_config import FlRunConfig
    from training.fl_job import run_federated

    ray.init(log_to_driver=False, ignore_reinit_error=True)
    work = Path(tempfile.mkdtemp(prefix="aegis-bench-fl-"))
    runs = {}
    # Baseline first: Flower's simulation shuts its Ray connection down when it ends.
    t0 = time.monotonic()
    epochs = args.rounds * args.local_epochs
    baseline = run_baseline(epochs, cpus_per_worker=1.0, lr=0.1, seed=args.seed)
    baseline_s = time.monotonic() - t0
    for label, partition in [("IID", "iid"), ("Dirichlet(0.5)", "dirichlet")]:
        cfg = FlRunConfig(run_name=f"bench-{partition}", num_rounds=args.rounds,
                          num_clients=args.clients, local_epochs=args.local_epochs,
                          learning_rate=0.1, strategy=args.strategy, partition=partition,
                          dirichlet_alpha=0.5, seed=args.seed, client_num_cpus=args.client_cpus,
                          checkpoint_dir=work / "ckpt", model_store=str(work / "models"),
                          resume=False)
        t0 = time.monotonic()
        result = run_federated(cfg)
        runs[label] = (result.history, time.monotonic() - t0)
    print(f"\n{args.clients} clients, {args.strategy}, {args.local_epochs} local epoch(s)/round, "
          f"client resources {args.client_cpus} CPU; centralized: TorchTrainer, {epochs} epochs\n")
    labels = list(runs)
    print("| round | " + " | ".join(f"{l} accuracy" for l in labels) + " |")
    print("| --- |" + " --- |" * len(labels))
    for rnd in range(args.rounds + 1):
        cells = [f"{runs[l][0][rnd]['accuracy']:.3f}" for l in labels]
        print(f"| {rnd} | " + " | ".join(cells) + " |")
    print(f"| centralized ({epochs} epochs) | {baseline['accuracy']:.3f} | "
          f"{baseline['accuracy']:.3f} |")
    print("\n| partition | final accuracy | gap to centralized | rounds/min (incl. start-up) | "
          "rounds/min (after round 1) |")
    print("| --- | --- | --- | --- | --- |")
    for label in labels:
        history, total_s = runs[label]
        rounds_s = [h["duration_s"] for h in history[1:]]
        steady = 60 * (len(rounds_s) - 1) / sum(rounds_s[1:]) if len(rounds_s) > 1 else float("nan")
        print(f"| {label} | {history[-1]['accuracy']:.3f} | "
              f"{baseline['accuracy'] - history[-1]['accuracy']:+.3f} | "
              f"{60 * len(rounds_s) / total_s:.1f} | {steady:.1f} |")
    print(f"\ncentralized baseline wall time: {baseline_s:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
