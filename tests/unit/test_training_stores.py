"""Persistence: pending-job stores (file, real Redis), checkpoints, and the model store (local, S3)."""

from __future__ import annotations

import hashlib
import socket
import uuid

import numpy as np
import pytest

from training.checkpoint import Checkpoint, CheckpointDir
from training.errors import UnknownJob
from training.job_store import FileJobStore, PendingJob, RedisJobStore
from training.model_export import LocalModelStore, S3ModelStore, load_model, save_model


def job(sid: str, created_s: float = 1.0) -> PendingJob:
    return PendingJob(submission_id=sid, entrypoint="python -m training.fl_job", created_s=created_s,
                      deadline_s=10_000.0, duration_s=600.0, threshold_g_per_kwh=200.0)


def test_file_store_survives_a_restart_and_refuses_duplicates(tmp_path):
    path = tmp_path / "jobs.json"
    FileJobStore(path).add(job("a"))
    restarted = FileJobStore(path)
    j = restarted.get("a")
    assert j.state == "pending" and j.threshold_g_per_kwh == 200.0
    with pytest.raises(ValueError, match="already exists"):
        restarted.add(job("a"))
    j.state = "submitted"
    restarted.put(j)
    assert FileJobStore(path).get("a").state == "submitted"
    with pytest.raises(UnknownJob):
        restarted.get("nope")


@pytest.fixture
def redis_store():
    key = f"aegis:test:jobs:{uuid.uuid4().hex}"
    store = RedisJobStore("redis://127.0.0.1:6379/0", key=key)
    yield store
    store._redis.delete(key)


def test_redis_store_shares_jobs_between_instances(redis_store):
    redis_store.add(job("b", 2.0))
    redis_store.add(job("a", 1.0))
    other = RedisJobStore("redis://127.0.0.1:6379/0", key=redis_store._key)
    assert [j.submission_id for j in other.all()] == ["a", "b"]
    with pytest.raises(ValueError, match="already exists"):
        other.add(job("a"))


def test_checkpoint_latest_round_round_trips(tmp_path):
    ckpts = CheckpointDir(tmp_path, keep=2)
    assert ckpts.load_latest() is None
    for rnd in range(4):
        ckpts.save(Checkpoint(rnd, {"w": np.full(3, rnd, np.float32)}, [{"round": rnd}]))
    latest = ckpts.load_latest()
    assert latest.round == 3 and latest.arrays["w"].tolist() == [3, 3, 3]
    assert len(list(tmp_path.glob("round-*.safetensors"))) == 2


def test_local_model_store_detects_tampered_weights(tmp_path):
    store = LocalModelStore(tmp_path)
    manifest = save_model(store, "m1", b"weights", {"rounds": 3})
    assert manifest["sha256"] == hashlib.sha256(b"weights").hexdigest()
    weights, loaded = load_model(store, "m1")
    assert weights == b"weights" and loaded["rounds"] == 3
    (tmp_path / "m1" / "model.safetensors").write_bytes(b"tampered")
    with pytest.raises(ValueError, match="sha256"):
        load_model(store, "m1")


@pytest.fixture
def moto_s3(monkeypatch):
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    import boto3

    boto3.client("s3").create_bucket(Bucket="aegis-models")
    yield f"http://127.0.0.1:{port}"
    server.stop()


def test_s3_model_store_against_a_real_s3_server(moto_s3):
    import boto3

    store = S3ModelStore("s3://aegis-models/runs")
    manifest = save_model(store, "digits", b"\x00\x01weights", {"metrics": {"accuracy": 0.9}})
    keys = sorted(o["Key"] for o in
                  boto3.client("s3").list_objects_v2(Bucket="aegis-models")["Contents"])
    assert keys == ["runs/digits/manifest.json", "runs/digits/model.safetensors"]
    weights, loaded = load_model(S3ModelStore("s3://aegis-models/runs"), "digits")
    assert weights == b"\x00\x01weights" and loaded["sha256"] == manifest["sha256"]
