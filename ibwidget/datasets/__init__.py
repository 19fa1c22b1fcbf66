"""Datasets as ``(train, val, test)`` DataLoaders: ``digits`` (offline), ``ib12`` (Tishby's 12-bit task,
generated), ``mnist`` and ``cifar10`` (torchvision).

Each submodule has ``load_data(batch_size=64, num_workers=0, validation_split=0.2, ...)`` (PyGlow's argument order).
Importing this package loads no data (and does not import torchvision or scikit-learn).
"""

from ibwidget.datasets import cifar10, digits, ib12, mnist
from ibwidget.datasets._common import (
    DatasetNotFoundError,
    TorchvisionMissingError,
    default_root,
    num_classes,
    to_tensors,
)

__all__ = [
    "cifar10",
    "digits",
    "ib12",
    "mnist",
    "DatasetNotFoundError",
    "TorchvisionMissingError",
    "default_root",
    "num_classes",
    "to_tensors",
]
