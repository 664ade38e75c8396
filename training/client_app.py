"""Flower ClientApp: local training and evaluation on this client's partition of the digits."""

from __future__ import annotations

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from training.fl_config import FlRunConfig
from training.task import evaluate, load_partition, new_model, train


class InjectedClientFailure(RuntimeError):
    """Raised by clients named in `fail_partition_ids`, to exercise the server's tolerance."""


def _partition(cfg: FlRunConfig, context: Context):
    pid = int(context.node_config["partition-id"])
    num = int(context.node_config["num-partitions"])
    return pid, load_partition(pid, num, cfg.partition, cfg.dirichlet_alpha, cfg.seed)


def _model_from(msg: Message, seed: int):
    net = new_model(seed)
    net.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    return net


def build_client_app(cfg: FlRunConfig | None = None) -> ClientApp:
    """A ClientApp bound to `cfg`, or reading `context.run_config` once per message when None."""
    app = ClientApp()

    def config_of(context: Context) -> FlRunConfig:
        return cfg if cfg is not None else FlRunConfig.from_mapping(context.run_config)

    @app.train()
    def _train(msg: Message, context: Context) -> Message:
        run_cfg = config_of(context)
        pid, data = _partition(run_cfg, context)
        if pid in run_cfg.fail_partition_ids:
            raise InjectedClientFailure(f"client {pid} fails by configuration")
        net = _model_from(msg, run_cfg.seed)
        server_round = int(msg.content["config"].get("server-round", 0))
        loss = train(
            net, data,
            epochs=run_cfg.local_epochs, batch_size=run_cfg.batch_size,
            lr=run_cfg.learning_rate,
            proximal_mu=float(msg.content["config"].get("proximal-mu", 0.0)),
            # Different shuffles per client and round, reproducible for a given seed.
            seed=run_cfg.seed * 100_003 + pid * 1_009 + server_round,
        )
        metrics = MetricRecord({"train_loss": loss, "num-examples": len(data.y)})
        content = RecordDict({"arrays": ArrayRecord(net.state_dict()), "metrics": metrics})
        return Message(content=content, reply_to=msg)

    @app.evaluate()
    def _evaluate(msg: Message, context: Context) -> Message:
        run_cfg = config_of(context)
        _, data = _partition(run_cfg, context)
        loss, accuracy = evaluate(_model_from(msg, run_cfg.seed), data)
        metrics = MetricRecord({"eval_loss": loss, "eval_acc": accuracy,
                                "num-examples": len(data.y)})
        return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)

    return app


# For `flwr run`: the run config comes from pyproject/--run-config through the Context.
app = build_client_app()
