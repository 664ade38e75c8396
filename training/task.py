"""The learning task: a small MLP on scikit-learn's bundled digits (8x8 images, 10 classes).

Shared by the Flower clients, the server's central evaluation and the Ray Train baseline, so the
federated and centralized numbers are for the same data, model and test split.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

NUM_FEATURES = 64
NUM_CLASSES = 10
# Fixed, so every run (federated or centralized, any seed) is scored on the same held-out images.
_TEST_SPLIT_SEED = 0
_TEST_FRACTION = 0.2


@dataclass(frozen=True)
class Split:
    x: np.ndarray  # float32, (n, 64), scaled to [0, 1]
    y: np.ndarray  # int64, (n,)


def load_digits_split() -> tuple[Split, Split]:
    """(train, test), stratified; the data ships inside scikit-learn, so nothing is downloaded."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=_TEST_FRACTION, random_state=_TEST_SPLIT_SEED, stratify=y
    )
    return Split(x_tr, y_tr), Split(x_te, y_te)


def partition_indices(
    labels: np.ndarray,
    num_partitions: int,
    scheme: Literal["iid", "dirichlet"],
    alpha: float = 0.5,
    seed: int = 0,
    min_size: int = 2,
) -> list[np.ndarray]:
    """Split example indices among clients: IID, or label-skewed by Dirichlet(alpha) per class.

    Smaller alpha means more skew. Dirichlet draws are repeated until every client holds at
    least `min_size` examples, as in the usual recipe (Hsu et al. 2019), so no client is empty.
    """
    if num_partitions < 1:
        raise ValueError(f"num_partitions must be >= 1, got {num_partitions}")
    if num_partitions * min_size > len(labels):
        raise ValueError(f"{len(labels)} examples cannot give {num_partitions} clients "
                         f"{min_size} each")
    rng = np.random.default_rng(seed)
    if scheme == "iid":
        return [np.sort(p) for p in np.array_split(rng.permutation(len(labels)), num_partitions)]
    if scheme != "dirichlet":
        raise ValueError(f"partition scheme must be 'iid' or 'dirichlet', got {scheme!r}")
    if alpha <= 0:
        raise ValueError(f"dirichlet alpha must be > 0, got {alpha}")
    for _ in range(1000):
        parts: list[list[int]] = [[] for _ in range(num_partitions)]
        for cls in np.unique(labels):
            idx = rng.permutation(np.flatnonzero(labels == cls))
            shares = rng.dirichlet(np.full(num_partitions, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
            for part, chunk in zip(parts, np.split(idx, cuts)):
                part.extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_size:
            return [np.sort(np.array(p, dtype=np.int64)) for p in parts]
    raise ValueError(f"could not draw a Dirichlet({alpha}) partition with {min_size}+ examples "
                     f"per client; use fewer clients or a larger alpha")


def load_partition(partition_id: int, num_partitions: int, scheme: Literal["iid", "dirichlet"],
                   alpha: float, seed: int) -> Split:
    train, _ = load_digits_split()
    idx = partition_indices(train.y, num_partitions, scheme, alpha, seed)[partition_id]
    return Split(train.x[idx], train.y[idx])


class Net(nn.Module):
    """64 -> hidden -> 10 MLP: small enough for many simulated clients on two CPU cores."""

    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(NUM_FEATURES, hidden), nn.ReLU(), nn.Linear(hidden, NUM_CLASSES)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def new_model(seed: int) -> Net:
    torch.manual_seed(seed)
    return Net()


def train(net: Net, data: Split, *, epochs: int, batch_size: int, lr: float,
          proximal_mu: float = 0.0, seed: int = 0) -> float:
    """Local SGD; with proximal_mu > 0 adds FedProx's (mu/2)*||w - w_global||^2. Returns mean loss."""
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.from_numpy(data.x), torch.from_numpy(data.y)
    global_params = [p.detach().clone() for p in net.parameters()] if proximal_mu > 0 else None
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    net.train()
    total, count = 0.0, 0
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), batch_size):
            batch = order[start:start + batch_size]
            opt.zero_grad()
            loss = loss_fn(net(x[batch]), y[batch])
            if global_params is not None:
                prox = sum(((p - g) ** 2).sum() for p, g in zip(net.parameters(), global_params))
                loss = loss + proximal_mu / 2 * prox
            loss.backward()
            opt.step()
            total += float(loss) * len(batch)
            count += len(batch)
    return total / max(count, 1)


@torch.no_grad()
def evaluate(net: Net, data: Split) -> tuple[float, float]:
    """(mean cross-entropy loss, accuracy) on `data`."""
    net.eval()
    logits = net(torch.from_numpy(data.x))
    y = torch.from_numpy(data.y)
    loss = float(nn.functional.cross_entropy(logits, y))
    accuracy = float((logits.argmax(dim=1) == y).float().mean())
    return loss, accuracy


def state_dict_numpy(net: Net) -> "OrderedDict[str, np.ndarray]":
    return OrderedDict((k, v.detach().cpu().numpy()) for k, v in net.state_dict().items())
