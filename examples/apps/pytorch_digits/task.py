"""The model, the data and the training loops: plain PyTorch, nothing federated.

Every site runs the same code on its own share of scikit-learn's digits (1,797 grey 8x8 images
of the digits 0-9). The shares are cut deterministically from ``data_seed``, so that every site
and the aggregator agree on them without talking: a fifth of the images is held out for testing,
and site ``partition_id`` of ``num_partitions`` gets one slice of the training images and one of
the test images.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

TEST_FRACTION = 0.2


class Net(nn.Module):
    """Two 3x3 convolutions with max pooling (8x8 -> 4x4 -> 2x2), then a linear layer:
    1,898 parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, kernel_size=3, padding=1)
        self.fc = nn.Linear(16 * 2 * 2, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc(torch.flatten(x, 1))


def load_data(
    partition_id: int,
    num_partitions: int,
    *,
    batch_size: int = 32,
    data_seed: int = 0,
    shuffle_seed: int | None = None,
) -> tuple[DataLoader[tuple[torch.Tensor, ...]], DataLoader[tuple[torch.Tensor, ...]]]:
    """This site's training and test loaders (see the module docstring).

    ``shuffle_seed`` fixes the order of the training batches; ``None`` draws it at random.
    """
    if not 0 <= partition_id < num_partitions:
        raise ValueError(f"partition-id {partition_id} is outside 0..{num_partitions - 1}")
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None, :, :]  # N x 1 x 8 x 8 in [0, 1]
    labels = digits.target.astype(np.int64)
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=TEST_FRACTION, random_state=data_seed, stratify=labels
    )
    train_part = np.array_split(train_idx, num_partitions)[partition_id]
    test_part = np.array_split(test_idx, num_partitions)[partition_id]
    generator = torch.Generator()
    if shuffle_seed is None:
        generator.seed()
    else:
        generator.manual_seed(shuffle_seed)
    train = DataLoader(
        _dataset(images, labels, train_part),
        batch_size=batch_size,
        shuffle=True,
        generator=generator,
    )
    test = DataLoader(_dataset(images, labels, test_part), batch_size=256)
    return train, test


def _dataset(
    images: npt.NDArray[np.float32], labels: npt.NDArray[np.int64], idx: npt.NDArray[np.intp]
) -> TensorDataset:
    return TensorDataset(torch.from_numpy(images[idx]), torch.from_numpy(labels[idx]))


def train(
    net: nn.Module, loader: DataLoader[tuple[torch.Tensor, ...]], *, epochs: int, lr: float
) -> float:
    """Local SGD with momentum; the mean training loss of the last epoch."""
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    net.train()
    total, count = 0.0, 0
    for _ in range(epochs):
        total, count = 0.0, 0
        for x, y in loader:
            optimizer.zero_grad()
            loss = F.cross_entropy(net(x), y)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(y)
            count += len(y)
    return total / max(count, 1)


@torch.no_grad()
def test(net: nn.Module, loader: DataLoader[tuple[torch.Tensor, ...]]) -> tuple[float, float, int]:
    """``(loss, accuracy, examples)`` of ``net`` on ``loader``."""
    net.eval()
    loss, correct, count = 0.0, 0, 0
    for x, y in loader:
        logits = net(x)
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(dim=1) == y).sum())
        count += len(y)
    if not count:
        return float("nan"), float("nan"), 0
    return loss / count, correct / count, count


def get_weights(net: nn.Module) -> OrderedDict[str, npt.NDArray[np.float32]]:
    """The model's ``state_dict`` as numpy arrays, under the ``state_dict``'s names."""
    return OrderedDict((name, t.detach().cpu().numpy()) for name, t in net.state_dict().items())


def set_weights(net: nn.Module, weights: dict[str, npt.ArrayLike]) -> None:
    """Load named arrays into the model (``strict``: the names must be the ``state_dict``'s)."""
    state = OrderedDict((name, torch.as_tensor(np.asarray(w))) for name, w in weights.items())
    net.load_state_dict(state, strict=True)
