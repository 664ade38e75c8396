"""Centralized baseline with Ray Train's TorchTrainer: same data, model and test split as the FL run.

    python -m training.centralized --epochs 20 --workers 1
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from typing import Any


def _train_loop(config: dict[str, Any]) -> None:
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    import ray.train
    import ray.train.torch

    from training.task import evaluate, load_digits_split, new_model

    train, test = load_digits_split()
    loader = DataLoader(TensorDataset(torch.from_numpy(train.x), torch.from_numpy(train.y)),
                        batch_size=config["batch_size"], shuffle=True,
                        generator=torch.Generator().manual_seed(config["seed"]))
    loader = ray.train.torch.prepare_data_loader(loader)
    net = ray.train.torch.prepare_model(new_model(config["seed"]))
    opt = torch.optim.SGD(net.parameters(), lr=config["lr"], momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    plain = net.module if hasattr(net, "module") else net
    for epoch in range(1, config["epochs"] + 1):
        if ray.train.get_context().get_world_size() > 1:
            loader.sampler.set_epoch(epoch)
        net.train()
        for x, y in loader:
            opt.zero_grad()
            loss_fn(net(x), y).backward()
            opt.step()
        loss, acc = evaluate(plain, test)
        metrics = {"epoch": epoch, "accuracy": acc, "loss": loss}
        if epoch < config["epochs"]:
            ray.train.report(metrics)
            continue
        # Ray Train keeps the metrics of the latest *checkpointed* report as Result.metrics,
        # so the last epoch reports with the weights (from rank 0; every rank must report).
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if ray.train.get_context().get_world_rank() == 0:
                torch.save(plain.state_dict(), f"{tmp}/model.pt")
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=checkpoint)


def run_baseline(epochs: int = 20, *, workers: int = 1, cpus_per_worker: float = 0.5,
                 batch_size: int = 32, lr: float = 0.05, seed: int = 0) -> dict[str, Any]:
    """Train centrally with TorchTrainer on the running Ray cluster; returns final test metrics."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if epochs < 1 or workers < 1:
        raise ValueError(f"epochs and workers must be >= 1, got {epochs} and {workers}")
    trainer = TorchTrainer(
        _train_loop,
        train_loop_config={"epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=False,
                                     resources_per_worker={"CPU": cpus_per_worker}),
        run_config=RunConfig(name="aegis-centralized-baseline",
                             storage_path=tempfile.mkdtemp(prefix="aegis-train-")),
    )
    result = trainer.fit()
    if result.error is not None:
        raise RuntimeError(f"centralized baseline failed: {result.error}")
    metrics = result.metrics
    if not metrics:
        raise RuntimeError("centralized baseline reported no metrics")
    return {"accuracy": float(metrics["accuracy"]), "loss": float(metrics["loss"]),
            "epochs": epochs, "workers": workers, "trainer": "ray.train.torch.TorchTrainer"}


def main(argv: list[str] | None = None) -> int:
    import ray

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--cpus-per-worker", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    ray.init(log_to_driver=False)
    try:
        out = run_baseline(args.epochs, workers=args.workers,
                           cpus_per_worker=args.cpus_per_worker, seed=args.seed)
    except (ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
