"""Flower on the session Ray cluster: failing clients do not kill a run, and a run resumes."""

from __future__ import annotations

import json

import pytest

from training.fl_config import FlRunConfig
from training.fl_job import run_federated

pytestmark = pytest.mark.integration


def config(tmp_path, **overrides) -> FlRunConfig:
    base = dict(run_name="it", num_clients=3, num_rounds=2, local_epochs=2, learning_rate=0.1,
                client_num_cpus=1.0, min_results=2, round_timeout_s=120,
                checkpoint_dir=tmp_path / "ckpt", model_store=str(tmp_path / "models"))
    return FlRunConfig(**{**base, **overrides})


def test_failing_client_does_not_kill_the_run_and_resume_continues(ray_session, tmp_path):
    import ray

    gcs_before = ray.get_runtime_context().gcs_address
    # Client 1 raises in every round; 2 of 3 results still meet min_results=2.
    cfg = config(tmp_path, fail_partition_ids=(1,))
    result = run_federated(cfg)
    # Flower's backend shuts Ray down when a simulation ends; the driver must be back on the
    # same session cluster, not on a fresh local one.
    assert ray.is_initialized() and ray.get_runtime_context().gcs_address == gcs_before
    rounds = result.history[1:]
    assert [r["failures"] for r in rounds] == [1, 1]
    assert [r["results"] for r in rounds] == [2, 2]
    assert rounds[-1]["accuracy"] > result.history[0]["accuracy"] + 0.2
    manifest = json.loads((tmp_path / "models/it/manifest.json").read_text())
    assert manifest["rounds"] == 2 and manifest["data_partition"]["num_clients"] == 3

    # Same run name, more rounds: picks up at round 2's checkpoint and runs only round 3.
    resumed = run_federated(config(tmp_path, num_rounds=3))
    assert resumed.resumed_from_round == 2
    assert [h["round"] for h in resumed.history] == [0, 1, 2, 3]
    assert resumed.history[3]["failures"] == 0


def test_round_below_min_results_keeps_the_previous_model(ray_session, tmp_path):
    cfg = config(tmp_path, run_name="strict", num_rounds=1, min_results=3,
                 fail_partition_ids=(0,))
    result = run_federated(cfg)
    assert result.history[1]["results"] == 2
    # Nothing aggregated: the global model (and so its accuracy) is unchanged.
    assert result.history[1]["accuracy"] == result.history[0]["accuracy"]

