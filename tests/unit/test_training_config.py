"""Run config validation, data partitioning, and CLI error handling (one line, non-zero exit)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from training.errors import ConfigError
from training.fl_config import FlRunConfig
from training.settings import parse_deadline_s, parse_duration_s
from training.task import load_digits_split, partition_indices


def test_flower_run_config_maps_onto_typed_fields():
    cfg = FlRunConfig.from_mapping({"num-rounds": 4, "strategy": "fedprox", "proximal-mu": 0.1})
    assert cfg.num_rounds == 4 and cfg.strategy == "fedprox" and cfg.proximal_mu == 0.1


@pytest.mark.parametrize("values, field", [
    ({"num_rounds": 0}, "num_rounds"),
    ({"strategy": "fedsgd"}, "strategy"),
    ({"num_clients": 3, "min_results": 5}, "min_results"),
    ({"fail_partition_ids": (7,), "num_clients": 3}, "fail_partition_ids"),
])
def test_bad_config_names_the_field(values, field):
    with pytest.raises(ConfigError, match=field):
        FlRunConfig.from_mapping(values)


def test_dirichlet_partition_is_label_skewed_and_iid_is_not():
    train, _ = load_digits_split()

    def skew(parts):  # mean share of each client's most common label
        return np.mean([np.bincount(train.y[p], minlength=10).max() / len(p) for p in parts])

    iid = partition_indices(train.y, 10, "iid", seed=1)
    dirichlet = partition_indices(train.y, 10, "dirichlet", alpha=0.1, seed=1)
    for parts in (iid, dirichlet):
        assert sorted(np.concatenate(parts).tolist()) == list(range(len(train.y)))
    assert skew(iid) < 0.2 < 0.4 < skew(dirichlet)


def test_durations_and_deadlines_parse():
    assert parse_duration_s("1h30m", "d") == 5400
    assert parse_deadline_s("8h", 1000.0) == 1000.0 + 8 * 3600
    assert parse_deadline_s("2020-03-02T09:00:00Z", 0.0) == 1583139600.0
    with pytest.raises(ConfigError, match="deadline"):
        parse_duration_s("soon", "deadline")


@pytest.mark.parametrize("argv, message", [
    (["-m", "training.fl_job", "--rounds", "0"], "num_rounds"),
    (["-m", "training.submit", "--deadline", "soon", "--", "echo"], "deadline"),
    (["-m", "training.submit", "--deadline", "8h", "--carbon-source", "csv", "--", "echo"],
     "csv_path"),
])
def test_cli_errors_are_one_line_without_traceback(argv, message, tmp_path):
    proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=120,
                          env={"AEGIS_SUBMITTER_STATE_FILE": str(tmp_path / "s.json"),
                               "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_fedadam_moments_survive_a_checkpoint_round_trip(tmp_path):
    from training.checkpoint import Checkpoint, CheckpointDir
    from training.strategies import make_strategy, optimizer_state, restore_optimizer_state

    cfg = FlRunConfig(strategy="fedadam", dp=True, num_clients=4, min_results=2)
    running = make_strategy(cfg)
    running.strategy.m_t = {"w": np.ones(3, np.float32)}
    running.strategy.v_t = {"w": np.full(3, 2.0, np.float32)}
    ckpts = CheckpointDir(tmp_path)
    ckpts.save(Checkpoint(4, {"layers.0.weight": np.zeros(2, np.float32),
                              **optimizer_state(running)}))
    resumed = make_strategy(cfg)
    assert restore_optimizer_state(resumed, ckpts.load_latest().arrays) == 2
    assert resumed.strategy.v_t["w"].tolist() == [2.0, 2.0, 2.0]
    assert resumed.strategy.m_t["w"].tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("strategy", ["fedavg", "fedprox", "fedadam", "fedmedian", "krum"])
@pytest.mark.parametrize("dp", [False, True])
def test_every_strategy_builds_with_and_without_dp(strategy, dp):
    from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping

    from training.strategies import make_strategy

    built = make_strategy(FlRunConfig(strategy=strategy, dp=dp, num_clients=6, min_results=2,
                                      num_malicious_clients=1))
    inner = built.strategy if dp else built
    assert isinstance(built, DifferentialPrivacyServerSideFixedClipping) == dp
    assert type(inner).__name__.lower() == strategy
    if strategy == "fedprox":
        assert inner.proximal_mu == 0.01
