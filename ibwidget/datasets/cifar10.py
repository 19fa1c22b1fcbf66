"""CIFAR-10 through torchvision: 32x32 colour images in 10 classes, 50,000 train + 10,000 test."""

from __future__ import annotations

import functools
import os

from ibwidget.datasets._common import (
    Loaders,
    _check_args,
    _load_or_raise,
    _resolve_root,
    _split_and_load,
    _torchvision,
)

#: Per-channel mean and std of the CIFAR-10 training images after ``ToTensor`` (the dataset's true std, not the
#: often-copied (0.2023, 0.1994, 0.2010)).
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)

#: The pickled batches torchvision reads from ``<root>/cifar-10-batches-py/``.
FOLDER = "cifar-10-batches-py"
FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch", "batches.meta")


@functools.cache
def _dataset_class(verify: bool):
    """torchvision's CIFAR10, or (``verify=False``) a subclass that checks the files exist but not their md5.

    torchvision md5-checks every batch file against the official archive, so files a user made (a subset, a
    re-pickled copy, a test fixture) are rejected. Setting the checksums to None is the documented meaning of
    ``torchvision.datasets.utils.check_integrity(path, md5=None)`` ("exists"), and overriding these class attributes is
    how torchvision's own CIFAR100 specialises CIFAR10; no private method is patched.
    """
    _torchvision("CIFAR-10")  # where torchvision does not load, this says what to install
    from torchvision.datasets import CIFAR10

    if verify:
        return CIFAR10

    class _UnverifiedCIFAR10(CIFAR10):
        train_list = [[name, None] for name, _ in CIFAR10.train_list]
        test_list = [[name, None] for name, _ in CIFAR10.test_list]
        meta = {**CIFAR10.meta, "md5": None}

    return _UnverifiedCIFAR10


def load_data(
    batch_size: int = 64,
    num_workers: int = 0,
    validation_split: float = 0.2,
    *,
    root: str | os.PathLike[str] | None = None,
    download: bool = True,
    seed: int = 0,
    verify: bool = True,
) -> Loaders:
    """Return ``(train_loader, val_loader, test_loader)`` for CIFAR-10; batches are ``(x, y)``, x float32 (B,3,32,32).

    Images go through ``ToTensor`` and ``Normalize(MEAN, STD)``; labels are int64. The validation set is a seeded
    random ``validation_split`` fraction of the 50,000 training images; the train loader shuffles with a generator
    seeded by ``seed``, the others keep a fixed order. ``root`` defaults to ``$IBWIDGET_DATA`` or
    ``~/.cache/ibwidget/data``; files are read from ``<root>/cifar-10-batches-py/`` (see ``FILES``).
    ``verify=False`` skips torchvision's md5 check of the official files (for your own files in the same format).
    Raises ``DatasetNotFoundError`` (a ``FileNotFoundError`` and ``RuntimeError``) saying where to put the files when
    they are missing and cannot be downloaded, and ``TorchvisionMissingError`` (an ``ImportError``) when torchvision is
    not installed (``pip install 'ibwidget[vision]'``). The first three arguments are PyGlow's, in its order; the rest
    are keyword-only.
    """
    _check_args(batch_size, num_workers, validation_split, seed)
    root = _resolve_root(root)
    tv = _torchvision("CIFAR-10")  # lazy: keep `import ibwidget` cheap
    cls = _dataset_class(bool(verify))
    transform = tv.transforms.Compose([tv.transforms.ToTensor(), tv.transforms.Normalize(MEAN, STD)])
    folder = root / FOLDER
    how = (
        f"Extract cifar-10-python.tar.gz (https://www.cs.toronto.edu/~kriz/cifar.html) into {root}/ so that "
        f"{folder}/ holds {', '.join(FILES)}; or put the .tar.gz itself in {root}/ and call with download=True "
        "(it is checked and unpacked offline). Files that are not the official ones need verify=False."
    )

    def make(train):
        return lambda dl: cls(str(root), train=train, transform=transform, download=dl)

    train_data = _load_or_raise(make(True), "CIFAR-10", folder, FILES, how, download)
    test_data = _load_or_raise(make(False), "CIFAR-10", folder, FILES, how, download)
    return _split_and_load(train_data, test_data, batch_size, num_workers, validation_split, seed)
