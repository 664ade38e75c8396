"""Where trained models go: a local directory or an `s3://bucket/prefix`, each model with a manifest.

Layout (both backends): `<root>/<name>/model.safetensors` and `<root>/<name>/manifest.json`. The
manifest is written last, so a reader that finds it can trust the weights' sha256 inside it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Protocol

WEIGHTS_FILE = "model.safetensors"
MANIFEST_FILE = "manifest.json"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ModelStore(Protocol):
    uri: str

    def put_bytes(self, key: str, data: bytes) -> None: ...

    def get_bytes(self, key: str) -> bytes: ...


class LocalModelStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()
        self.uri = str(self.root)

    def put_bytes(self, key: str, data: bytes) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)

    def get_bytes(self, key: str) -> bytes:
        return (self.root / key).read_bytes()


class S3ModelStore:
    """boto3 against AWS or any S3-compatible endpoint (`AWS_ENDPOINT_URL` or `endpoint_url`)."""

    def __init__(self, uri: str, *, endpoint_url: str | None = None) -> None:
        import boto3

        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        if not bucket:
            raise ValueError(f"model store URI {uri!r} names no bucket")
        self.uri = uri
        self._bucket = bucket
        self._prefix = prefix.strip("/")
        self._s3 = boto3.client(
            "s3", endpoint_url=endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
        )

    def _key(self, key: str) -> str:
        return f"{self._prefix}/{key}" if self._prefix else key

    def put_bytes(self, key: str, data: bytes) -> None:
        self._s3.put_object(Bucket=self._bucket, Key=self._key(key), Body=data)

    def get_bytes(self, key: str) -> bytes:
        return self._s3.get_object(Bucket=self._bucket, Key=self._key(key))["Body"].read()


def open_store(uri: str) -> ModelStore:
    """`s3://bucket/prefix` -> S3ModelStore; anything else is a local directory."""
    if uri.startswith("s3://"):
        return S3ModelStore(uri)
    return LocalModelStore(uri)


def save_model(store: ModelStore, name: str, weights: bytes, manifest: dict[str, Any]) -> dict:
    """Write weights, then the manifest (with the weights' sha256 and size). Returns the manifest."""
    full = {
        **manifest,
        "name": name,
        "weights_file": WEIGHTS_FILE,
        "format": "safetensors",
        "sha256": sha256_hex(weights),
        "size_bytes": len(weights),
    }
    store.put_bytes(f"{name}/{WEIGHTS_FILE}", weights)
    store.put_bytes(f"{name}/{MANIFEST_FILE}",
                    json.dumps(full, indent=2, sort_keys=True).encode())
    return full


def load_model(store: ModelStore, name: str) -> tuple[bytes, dict[str, Any]]:
    """Read weights and manifest; refuse weights whose sha256 does not match the manifest."""
    manifest = json.loads(store.get_bytes(f"{name}/{MANIFEST_FILE}"))
    weights = store.get_bytes(f"{name}/{manifest['weights_file']}")
    if sha256_hex(weights) != manifest["sha256"]:
        raise ValueError(f"model {name!r} in {store.uri}: weights do not match manifest sha256")
    return weights, manifest
