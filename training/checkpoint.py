"""Per-round checkpoints of the global model, so a stopped or failed job resumes at its last round."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save


@dataclass
class Checkpoint:
    round: int
    arrays: dict[str, np.ndarray]
    history: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class CheckpointDir:
    """`<dir>/round-0003.safetensors` + `<dir>/latest.json`; latest.json is written last.

    A crash between the two leaves latest.json at the previous round, which is still complete.
    """

    def __init__(self, directory: str | Path, keep: int = 3) -> None:
        self.dir = Path(directory).expanduser()
        self.keep = keep

    def save(self, ckpt: Checkpoint) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        weights = self.dir / f"round-{ckpt.round:04d}.safetensors"
        _atomic_write(weights, st_save({k: np.ascontiguousarray(v) for k, v in ckpt.arrays.items()}))
        meta = {"round": ckpt.round, "weights": weights.name, "history": ckpt.history,
                "extra": ckpt.extra}
        _atomic_write(self.dir / "latest.json", json.dumps(meta).encode())
        for old in sorted(self.dir.glob("round-*.safetensors"))[:-self.keep]:
            old.unlink(missing_ok=True)
        return weights

    def load_latest(self) -> Checkpoint | None:
        latest = self.dir / "latest.json"
        if not latest.exists():
            return None
        meta = json.loads(latest.read_text())
        arrays = st_load((self.dir / meta["weights"]).read_bytes())
        return Checkpoint(meta["round"], dict(arrays), meta["history"], meta.get("extra", {}))
