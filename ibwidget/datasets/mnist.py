"""MNIST through torchvision: 28x28 handwritten digits, 60,000 train + 10,000 test (needs the files or a download)."""

from __future__ import annotations

import os

from ibwidget.datasets._common import (
    Loaders,
    _check_args,
    _load_or_raise,
    _resolve_root,
    _split_and_load,
    _torchvision,
)

#: Normalisation constants (the training set's pixel mean and std after ``ToTensor``).
MEAN = (0.1307,)
STD = (0.3081,)

#: The raw files torchvision reads from ``<root>/MNIST/raw/``.
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def load_data(
    batch_size: int = 64,
    num_workers: int = 0,
    validation_split: float = 0.2,
    *,
    root: str | os.PathLike[str] | None = None,
    download: bool = True,
    seed: int = 0,
) -> Loaders:
    """Return ``(train_loader, val_loader, test_loader)`` for MNIST; batches are ``(x, y)``, x float32 (B, 1, 28, 28).

    Images go through ``ToTensor`` and ``Normalize(MEAN, STD)``; labels are int64. The validation set is a seeded
    random ``validation_split`` fraction of the 60,000 training images; the train loader shuffles with a generator
    seeded by ``seed``, the others keep a fixed order. ``root`` defaults to ``$IBWIDGET_DATA`` or
    ``~/.cache/ibwidget/data``; files are read from ``<root>/MNIST/raw/`` (see ``FILES``).
    Raises ``DatasetNotFoundError`` (a ``FileNotFoundError`` and ``RuntimeError``) saying where to put the files when
    they are missing and cannot be downloaded, and ``TorchvisionMissingError`` (an ``ImportError``) when torchvision is
    not installed (``pip install 'ibwidget[vision]'``). The first three arguments are PyGlow's, in its order; the rest
    are keyword-only.
    """
    _check_args(batch_size, num_workers, validation_split, seed)
    root = _resolve_root(root)
    tv = _torchvision("MNIST")  # lazy: keep `import ibwidget` cheap
    transform = tv.transforms.Compose([tv.transforms.ToTensor(), tv.transforms.Normalize(MEAN, STD)])
    folder = root / "MNIST" / "raw"
    how = (
        f"Put the four uncompressed MNIST files ({', '.join(FILES)}) in {folder}/ and call with download=False, "
        f"or put the original .gz files there and call with download=True (they are checked and unpacked offline)."
    )

    def make(train):
        return lambda dl: tv.datasets.MNIST(str(root), train=train, transform=transform, download=dl)

    # torchvision still reads the legacy processed/{training,test}.pt files when they exist
    legacy = all((root / "MNIST" / "processed" / f).is_file() for f in ("training.pt", "test.pt"))
    train_data = _load_or_raise(make(True), "MNIST", folder, FILES, how, download, precheck=not legacy)
    test_data = _load_or_raise(make(False), "MNIST", folder, FILES, how, download, precheck=not legacy)
    return _split_and_load(train_data, test_data, batch_size, num_workers, validation_split, seed)
