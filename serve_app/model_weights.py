"""Resolve a model `source` to local files: a package, a directory, a GGUF file, `s3://` or a hub id.

Only safe weight formats (safetensors, GGUF) are accepted unless the model's config sets
`allow_pickle: true`; pickle checkpoints run arbitrary code when they are loaded.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from common.errors import ConfigError

logger = logging.getLogger(__name__)

SAFE_SUFFIXES = (".safetensors", ".gguf")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
_COMPLETE_MARKER = ".aegis-complete.json"


class ModelSourceError(ConfigError):
    """The configured source cannot be turned into loadable, safe weights."""


@dataclass(frozen=True)
class ResolvedModel:
    """Local files for one model. `gguf_file` is the file name inside `path` for GGUF weights."""

    path: Path
    gguf_file: str | None = None

    @property
    def is_gguf(self) -> bool:
        return self.gguf_file is not None


class S3Client(Protocol):
    """The slice of boto3's S3 client the store uses (a seam for tests and other backends)."""

    def get_paginator(self, operation_name: str) -> Any: ...

    def download_file(self, bucket: str, key: str, filename: str) -> None: ...


def resolve_model(
    source: str,
    *,
    cache_dir: Path,
    gguf_file: str | None = None,
    allow_pickle: bool = False,
    revision: str | None = None,
    s3_endpoint_url: str | None = None,
    s3_client: S3Client | None = None,
) -> ResolvedModel:
    """Turn a configured source into local files, downloading once into `cache_dir` if needed.

    Raises:
        ModelSourceError: the source does not exist, is unreachable, or holds only pickle weights
            while `allow_pickle` is false.
    """
    if source.startswith("package:"):
        path = _package_path(source.removeprefix("package:"))
    elif source.startswith("s3://"):
        client = s3_client or _boto3_client(s3_endpoint_url)
        path = download_s3_prefix(source, cache_dir=cache_dir / "s3", client=client)
    elif source.startswith(("/", "./", "../", "~")) or Path(source).exists():
        path = Path(source).expanduser().resolve()
        if not path.exists():
            raise ModelSourceError(f"model source {source!r}: no such file or directory")
    else:
        path = _hub_snapshot(source, revision=revision, cache_dir=cache_dir / "hub",
                             allow_pickle=allow_pickle)

    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelSourceError(
                f"model source {source!r} is a file but not a .gguf; point at a directory "
                "holding config.json and safetensors weights, or at a .gguf file")
        return ResolvedModel(path=path.parent, gguf_file=path.name)

    if gguf_file is None:
        ggufs = sorted(p.name for p in path.glob("*.gguf"))
        if len(ggufs) > 1:
            raise ModelSourceError(
                f"model source {source!r} holds several GGUF files {ggufs}; set gguf_file")
        gguf_file = ggufs[0] if ggufs else None
    elif not (path / gguf_file).is_file():
        raise ModelSourceError(f"gguf_file {gguf_file!r} not found in {path}")

    if gguf_file is None:
        check_weight_formats(path, allow_pickle=allow_pickle, source=source)
    return ResolvedModel(path=path, gguf_file=gguf_file)


def check_weight_formats(path: Path, *, allow_pickle: bool, source: str) -> None:
    """Refuse a directory whose only weights are pickle files, unless explicitly allowed."""
    files = [p for p in path.rglob("*") if p.is_file()]
    safe = [p for p in files if p.suffix in SAFE_SUFFIXES]
    pickled = [p for p in files if p.suffix in PICKLE_SUFFIXES]
    if safe:
        return
    if pickled and not allow_pickle:
        raise ModelSourceError(
            f"model source {source!r} has only pickle weights ({pickled[0].name}); pickle files "
            "can run code when loaded. Convert them to safetensors, or set allow_pickle: true "
            "for this model if you trust where they came from")
    if not pickled:
        raise ModelSourceError(f"model source {source!r}: no weights (*.safetensors, *.gguf) in {path}")


def _package_path(spec: str) -> Path:
    package, _, subpath = spec.partition("/")
    # find_spec does not import the package: model packages may import heavy plugins.
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise ModelSourceError(
            f"model package {package!r} is not installed; `pip install` it (see pyproject.toml)")
    path = Path(next(iter(found.submodule_search_locations))) / subpath
    if not path.exists():
        raise ModelSourceError(f"model package {package!r} has no {subpath!r}")
    return path


def _boto3_client(endpoint_url: str | None) -> S3Client:
    import boto3

    return boto3.client("s3", endpoint_url=endpoint_url or os.environ.get("AWS_ENDPOINT_URL"))


def download_s3_prefix(uri: str, *, cache_dir: Path, client: S3Client) -> Path:
    """Download every object under `s3://bucket/prefix` once, verified, into the cache.

    The download goes to a temporary directory that is renamed into place only after every file
    has its expected size and (when S3 gives a single-part ETag) MD5, so a crash mid-download
    never leaves a cache entry that looks complete. A later call re-hashes nothing: it trusts
    the marker that holds each file's sha256 and size, and checks the sizes.
    """
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    if not bucket:
        raise ModelSourceError(f"bad S3 uri {uri!r}: expected s3://bucket/prefix")
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    target = cache_dir / bucket / hashlib.sha256(prefix.encode()).hexdigest()[:16]
    if _cache_entry_valid(target):
        return target

    objects: list[dict[str, Any]] = []
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            objects.extend(page.get("Contents", []))
    except Exception as exc:  # botocore raises many types; the message is what the user needs
        raise ModelSourceError(f"cannot list {uri}: {exc}") from exc
    objects = [obj for obj in objects if not obj["Key"].endswith("/")]
    if not objects:
        raise ModelSourceError(f"no objects under {uri}")

    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".download-", dir=cache_dir))
    try:
        manifest: dict[str, dict[str, Any]] = {}
        for obj in objects:
            relative = obj["Key"][len(prefix):]
            if ".." in Path(relative).parts:
                raise ModelSourceError(f"refusing object key outside the prefix: {obj['Key']!r}")
            local = staging / relative
            local.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, obj["Key"], str(local))
            manifest[relative] = _verify_download(local, obj)
        (staging / _COMPLETE_MARKER).write_text(json.dumps({"source": uri, "files": manifest}))
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("downloaded %d files from %s to %s", len(objects), uri, target)
    return target


def _verify_download(local: Path, obj: dict[str, Any]) -> dict[str, Any]:
    size = local.stat().st_size
    if size != obj["Size"]:
        raise ModelSourceError(f"{obj['Key']}: downloaded {size} bytes, S3 lists {obj['Size']}")
    md5, sha256 = hashlib.md5(), hashlib.sha256()
    with local.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            md5.update(block)
            sha256.update(block)
    etag = str(obj.get("ETag", "")).strip('"')
    # A multipart ETag ("...-N") is not an MD5 of the object; size is the check we have then.
    if etag and "-" not in etag and etag != md5.hexdigest():
        raise ModelSourceError(f"{obj['Key']}: MD5 {md5.hexdigest()} does not match ETag {etag}")
    return {"size": size, "sha256": sha256.hexdigest()}


def _cache_entry_valid(target: Path) -> bool:
    marker = target / _COMPLETE_MARKER
    if not marker.is_file():
        return False
    try:
        files = json.loads(marker.read_text())["files"]
    except (ValueError, KeyError):
        return False
    return all((target / name).is_file() and (target / name).stat().st_size == meta["size"]
               for name, meta in files.items())


def _hub_snapshot(repo_id: str, *, revision: str | None, cache_dir: Path,
                  allow_pickle: bool) -> Path:
    if repo_id.count("/") != 1 or any(part == "" for part in repo_id.split("/")):
        raise ModelSourceError(
            f"model source {repo_id!r} is not a local path, package:, s3:// uri or hub id (org/name)")
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.gguf", "*.txt", "*.model", "*.tiktoken", "*.jinja"]
    if allow_pickle:
        patterns += ["*.bin", "*.pt"]
    try:
        return Path(snapshot_download(repo_id, revision=revision, cache_dir=str(cache_dir),
                                      allow_patterns=patterns))
    except Exception as exc:  # offline, unknown repo, auth: all mean "cannot get it from the hub"
        raise ModelSourceError(
            f"cannot fetch {repo_id!r} from the Hugging Face hub ({type(exc).__name__}: {exc}). "
            "Offline? Use a local directory, a .gguf file or s3:// instead") from exc
