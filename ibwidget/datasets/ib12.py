"""Tishby's 12-bit task: all 4096 binary patterns of 12 bits, with binary labels of a rotation-invariant rule.

Shwartz-Ziv & Tishby 2017 (*Opening the black box of deep neural networks via information*) and Saxe et al. 2018
(*On the information bottleneck theory of deep learning*, ICLR) train 12-10-7-5-4-3-2 networks on it; with every
pattern as the probe, I(X; T) of a layer can reach the 12-bit ceiling. This construction follows the papers'
description; their exact labels are not published, so the reproduction is qualitative:

- the 12 inputs sit on the vertices p_i of a regular icosahedron on the unit sphere;
- a pattern x in {0, 1}^12 has the value f(x) = ||sum_i x_i p_i||^2, invariant under the icosahedron's rotations
  (a rotation permutes the vertices);
- y = 1 when f(x) exceeds the threshold that makes p(y = 1) closest to 0.5.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ibwidget.datasets._common import LabelledTensorDataset, Loaders, _check_args, _loaders, _n_val

N_BITS = 12  #: inputs per pattern
N_PATTERNS = 2**N_BITS  #: every pattern: 4096


def vertices() -> np.ndarray:
    """The 12 vertices of a regular icosahedron on the unit sphere, (12, 3) float64: the cyclic permutations of
    (0, ±1, ±φ), normalised."""
    phi = (1.0 + math.sqrt(5.0)) / 2.0
    points = []
    for a in (-1.0, 1.0):
        for b in (-phi, phi):
            points += [(0.0, a, b), (a, b, 0.0), (b, 0.0, a)]
    p = np.array(points)
    return p / np.linalg.norm(p, axis=1, keepdims=True)


def patterns() -> tuple[torch.Tensor, torch.Tensor]:
    """Every pattern and its label: x float32 (4096, 12) of 0s and 1s (pattern k holds the bits of k, most
    significant first), y int64 (4096,) of 0s and 1s. The probe that lets I(X; T) reach 12 bits."""
    bits = (np.arange(N_PATTERNS)[:, None] >> np.arange(N_BITS - 1, -1, -1)[None, :]) & 1
    f = np.sum((bits @ vertices()) ** 2, axis=1)
    levels = np.unique(np.round(f, 9))  # f takes few values (rotations map patterns onto each other)
    share = [np.mean(f > t + 1e-9) for t in levels]
    threshold = levels[int(np.argmin([abs(s - 0.5) for s in share]))]
    y = (f > threshold + 1e-9).astype(np.int64)
    return torch.from_numpy(bits.astype(np.float32)), torch.from_numpy(y)


def load_data(batch_size: int = 256, num_workers: int = 0, validation_split: float = 0.2, *, seed: int = 0) -> Loaders:
    """Return ``(train_loader, val_loader, all_loader)``; batches are ``(x, y)``, x float32 (B, 12) of 0s and 1s,
    y int64 in {0, 1}.

    ``validation_split`` of the 4096 patterns (stratified by label, seeded by ``seed``) is the validation set, the
    rest trains (shuffled with a generator seeded by ``seed``). The third loader holds all 4096 patterns in order
    (:func:`patterns`): the probe of an information-plane study of this task, where every pattern must be seen for
    I(X; T) to reach its 12-bit ceiling. Datasets are ``LabelledTensorDataset`` (``.targets``, ``.classes``,
    ``.indices`` = pattern numbers).
    """
    _check_args(batch_size, num_workers, validation_split, seed)
    x, y = patterns()
    rng = np.random.default_rng(seed)
    val_rows: list[int] = []
    for label in (0, 1):  # stratified: each class gives the same share of its patterns
        rows = np.flatnonzero(y.numpy() == label)
        val_rows += rng.permutation(rows)[: _n_val(len(rows), validation_split)].tolist()
    val = np.sort(np.array(val_rows, dtype=np.int64))
    train = np.setdiff1d(np.arange(N_PATTERNS), val)
    classes = ["0", "1"]

    def make(rows: np.ndarray) -> LabelledTensorDataset:
        index = torch.from_numpy(rows)
        return LabelledTensorDataset(x[index], y[index], classes, index)

    return _loaders(make(train), make(val), make(np.arange(N_PATTERNS)), batch_size, num_workers, seed)
