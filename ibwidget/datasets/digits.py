"""scikit-learn's 8x8 handwritten digits: 1797 real images in 10 classes, shipped offline with scikit-learn."""

from __future__ import annotations

import os

import numpy as np
import torch

from ibwidget.datasets._common import LabelledTensorDataset, Loaders, _check_args, _loaders, _n_val

#: Fraction of the 1797 images held out as the test set; this split is stratified and fixed (independent of ``seed``)
#: so that every run is scored on the same images.
TEST_FRACTION = 0.2
_TEST_SEED = 0


def load_data(
    batch_size: int = 64,
    num_workers: int = 0,
    validation_split: float = 0.2,
    *,
    seed: int = 0,
    root: str | os.PathLike[str] | None = None,
    download: bool = True,
) -> Loaders:
    """Return ``(train_loader, val_loader, test_loader)`` for the digits; batches are ``(x, y)``, x float32 (B,1,8,8).

    Pixels (0..16) are divided by 16, then standardised with the mean and std of all training-split pixels (one
    scalar each, like MNIST's ``Normalize``), applied to all three splits. Labels are int64. The test set is a fixed,
    stratified ``TEST_FRACTION`` of the data; ``validation_split`` of the rest, stratified and seeded by ``seed``,
    is the validation set. The train loader shuffles with a generator seeded by ``seed``. Each loader's dataset is an
    in-memory ``LabelledTensorDataset`` (``.targets``, ``.classes``, ``.indices`` = rows of ``load_digits()``).
    ``root`` and ``download`` are accepted for a uniform call with mnist/cifar10 and ignored (nothing to download).
    The first three arguments are PyGlow's, in its order; the rest are keyword-only.
    """
    _check_args(batch_size, num_workers, validation_split, seed)
    from sklearn.datasets import load_digits  # lazy: keep `import ibwidget` cheap
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = bunch.data.astype(np.float32).reshape(-1, 1, 8, 8) / 16.0
    y = bunch.target.astype(np.int64)
    idx = np.arange(len(y))
    rest, test = train_test_split(idx, test_size=TEST_FRACTION, random_state=_TEST_SEED, stratify=y)
    n_val = _n_val(len(rest), validation_split)
    if n_val == 0:
        train, val = rest, rest[:0]
    else:
        train, val = train_test_split(rest, test_size=n_val, random_state=seed % 2**32, stratify=y[rest])
    train, val, test = np.sort(train), np.sort(val), np.sort(test)
    mean, std = float(x[train].mean()), float(x[train].std())
    classes = [str(c) for c in bunch.target_names]

    def make(rows):
        xs = torch.from_numpy((x[rows] - mean) / std)
        return LabelledTensorDataset(xs, torch.from_numpy(y[rows]), classes, torch.from_numpy(rows))

    return _loaders(make(train), make(val), make(test), batch_size, num_workers, seed)
