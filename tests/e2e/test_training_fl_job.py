"""`ray job submit` of a short FL job to the session cluster: model and manifest land in the store."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def test_ray_job_submit_runs_flower_and_stores_the_model(ray_cluster, tmp_path):
    sid = f"aegis-fl-e2e-{uuid.uuid4().hex[:8]}"
    store = tmp_path / "models"
    ray = str(Path(sys.executable).with_name("ray"))
    cmd = [ray, "job", "submit", "--address", ray_cluster.dashboard_url, "--working-dir", ".",
           "--submission-id", sid, "--",
           sys.executable, "-m", "training.fl_job", "--run-name", "e2e", "--rounds", "2",
           # Fractional clients: the session cluster (4 logical CPUs) also hosts the default
           # serving app, and three whole-CPU clients would wait for CPUs that never free up.
           "--clients", "3", "--client-cpus", "0.25", "--local-epochs", "2", "--lr", "0.1",
           "--strategy", "fedprox", "--partition", "dirichlet", "--alpha", "0.5",
           "--model-store", str(store), "--checkpoint-dir", str(tmp_path / "ckpt")]
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=ray_cluster.env(), capture_output=True,
                              text=True, timeout=420)
    except subprocess.TimeoutExpired:
        # The CLI timing out leaves the job running on the shared session cluster, holding its
        # CPUs for every later test: stop it before failing.
        subprocess.run([ray, "job", "stop", "--address", ray_cluster.dashboard_url, sid],
                       env=ray_cluster.env(), capture_output=True, timeout=120)
        raise
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    manifest = json.loads((store / "e2e" / "manifest.json").read_text())
    weights = (store / "e2e" / "model.safetensors").read_bytes()
    import hashlib

    assert manifest["sha256"] == hashlib.sha256(weights).hexdigest()
    assert manifest["rounds"] == 2
    assert manifest["config"]["strategy"] == "fedprox"
    assert manifest["data_partition"]["scheme"] == "dirichlet"
    per_round = manifest["metrics"]["per_round"]
    assert per_round[-1]["accuracy"] > per_round[0]["accuracy"] + 0.2

    logs = subprocess.run([ray, "job", "logs", "--address", ray_cluster.dashboard_url, sid],
                          env=ray_cluster.env(), capture_output=True, text=True, timeout=60)
    assert "round 2/2: accuracy=" in logs.stdout
