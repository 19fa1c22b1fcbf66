"""Shared dataset plumbing: argument checks, seeded splits, loaders, offline-friendly downloads, probe helpers."""

from __future__ import annotations

import contextlib
import math
import os
import socket
from collections.abc import Iterator, Sequence, Sized
from pathlib import Path
from typing import Any, TypeAlias, cast

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset, TensorDataset

#: Per-socket-operation timeout while torchvision downloads, so an offline machine fails in seconds, not minutes.
DOWNLOAD_TIMEOUT_S = 10.0

_OFFLINE_HINT = "Offline? ib.datasets.digits.load_data() needs no download (scikit-learn's 8x8 digits)."


#: What every ``load_data`` returns: the train, validation and test loaders.
Loaders: TypeAlias = tuple[DataLoader, DataLoader, DataLoader]


class DatasetNotFoundError(FileNotFoundError, RuntimeError):
    """Dataset files are missing (or could not be downloaded); the message says which and where to put them.

    Subclasses both ``FileNotFoundError`` and ``RuntimeError`` (what torchvision raises), so either catches it.
    """


class TorchvisionMissingError(ModuleNotFoundError):
    """torchvision, which reads the MNIST and CIFAR-10 files, is not installed or does not load beside this torch."""


def _torchvision(name: str) -> Any:
    """Import torchvision for the ``name`` loader, or raise ``TorchvisionMissingError`` saying what to install.

    torchvision is an optional dependency (``pip install 'ibwidget[vision]'``): its wheel must be the build made for
    the installed torch (a mismatched one fails at import with "operator torchvision::nms does not exist").
    """
    try:
        import torchvision
        import torchvision.datasets
        import torchvision.transforms
    except ImportError as e:
        why = "is not installed"
        cause: Exception = e
    except RuntimeError as e:  # a wheel built for another torch (or another CUDA build) fails in its op registrations
        why = f"does not load beside torch {torch.__version__} ({str(e).strip()[:200]})"
        cause = e
    else:
        return torchvision
    raise TorchvisionMissingError(
        f"{name} is read through torchvision, which {why}. Install the torchvision release built for torch "
        f"{torch.__version__}: pip install 'ibwidget[vision]'. {_OFFLINE_HINT}"
    ) from cause


class LabelledTensorDataset(TensorDataset):
    """An in-memory ``(x, y)`` TensorDataset with torchvision-like ``targets`` and ``classes``.

    ``indices`` records each sample's row in the source data (e.g. ``sklearn.datasets.load_digits``).
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, classes: Sequence[str], indices: torch.Tensor | None = None):
        super().__init__(x, y)
        self.classes = list(classes)
        self.indices = torch.arange(len(y)) if indices is None else torch.as_tensor(indices, dtype=torch.long)

    @property
    def targets(self) -> torch.Tensor:
        """The labels, an int64 tensor."""
        return self.tensors[1]


def default_root() -> Path:
    """The data folder: ``$IBWIDGET_DATA`` if set, else ``~/.cache/ibwidget/data``."""
    env = os.environ.get("IBWIDGET_DATA")
    return Path(env).expanduser() if env else Path("~/.cache/ibwidget/data").expanduser()


def _resolve_root(root) -> Path:
    if root is None:
        return default_root()
    if not isinstance(root, str | os.PathLike):
        raise TypeError(f"root must be a folder path (str or pathlib.Path) or None, got {type(root).__name__}.")
    return Path(root).expanduser()


def _check_args(batch_size, num_workers, validation_split, seed) -> None:
    """Validate the arguments every ``load_data`` shares; messages say what to pass."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}. Pass e.g. batch_size=64.")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(
            f"num_workers must be an int >= 0, got {num_workers!r}. Pass 0 to load in the main process "
            "(the default), or e.g. num_workers=2."
        )
    if (
        isinstance(validation_split, bool)
        or not isinstance(validation_split, int | float)
        or not math.isfinite(validation_split)
        or not 0 <= validation_split < 1
    ):
        raise ValueError(
            f"validation_split must be a fraction in [0, 1), got {validation_split!r}. "
            "Pass e.g. validation_split=0.2 to hold out 20% of the training data, or 0 for no validation set."
        )
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}. Pass e.g. seed=0.")


def _n_val(n: int, validation_split: float) -> int:
    """Number of validation samples out of ``n`` (floor, as PyGlow); raises if nothing is left to train on."""
    n_val = int(math.floor(validation_split * n))
    if n - n_val < 1:
        raise ValueError(
            f"validation_split={validation_split} leaves no training samples out of {n}; pass a smaller fraction."
        )
    return n_val


def _split_indices(n: int, validation_split: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded (torch.Generator) permutation of ``range(n)`` split into sorted (train, val) index lists."""
    n_val = _n_val(n, validation_split)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return sorted(perm[n_val:].tolist()), sorted(perm[:n_val].tolist())


def _loaders(train: Dataset, val: Dataset, test: Dataset, batch_size: int, num_workers: int, seed: int) -> Loaders:
    """Train loader shuffled with a seeded generator; validation and test loaders in fixed order."""
    common: dict[str, Any] = {"batch_size": batch_size, "num_workers": num_workers}
    gen = torch.Generator().manual_seed(seed)
    return (
        DataLoader(train, shuffle=True, generator=gen, **common),
        DataLoader(val, shuffle=False, **common),
        DataLoader(test, shuffle=False, **common),
    )


def _split_and_load(train_data, test_data, batch_size, num_workers, validation_split, seed):
    """Split a torchvision training set into train/val Subsets and wrap all three in DataLoaders."""
    train_idx, val_idx = _split_indices(len(train_data), validation_split, seed)
    train, val = Subset(train_data, train_idx), Subset(train_data, val_idx)
    return _loaders(train, val, test_data, batch_size, num_workers, seed)


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """Temporarily set the default socket timeout (process-wide; restored on exit)."""
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def _missing(folder: Path, names: Sequence[str]) -> list[Path]:
    return [folder / name for name in names if not (folder / name).is_file()]


def _not_found(name: str, folder: Path, missing: Sequence[Path], how: str, cause: BaseException | None = None):
    """Build the clear error: what went wrong, which files, where they go, and the offline alternative."""
    if cause is None:
        lines = [f"{name} files not found in {folder}."]
    else:
        lines = [f"{name} could not be loaded from {folder} ({type(cause).__name__}: {str(cause).strip()[:300]})."]
    if missing:
        lines.append("Missing: " + ", ".join(str(p) for p in missing) + ".")
    lines += [how, _OFFLINE_HINT]
    return DatasetNotFoundError("\n".join(lines))


def _load_or_raise(make, name: str, folder: Path, names: Sequence[str], how: str, download: bool, precheck=True):
    """Call ``make(download)`` (a torchvision constructor) and turn missing files, a failed download or files that
    torchvision rejects into a ``DatasetNotFoundError`` saying where to put the files.

    With ``download=False`` the files are checked first (no network at all). With ``download=True`` torchvision
    only downloads what is missing, under a short socket timeout so that an offline machine fails in seconds.
    """
    missing = _missing(folder, names)
    if missing and not download and precheck:  # precheck=False: torchvision has another source (legacy files)
        raise _not_found(name, folder, missing, how)
    try:
        if not download:
            return make(False)
        with _socket_timeout(DOWNLOAD_TIMEOUT_S):
            return make(True)
    except (OSError, RuntimeError) as e:  # URLError and socket timeouts are OSErrors; torchvision wraps some
        raise _not_found(name, folder, _missing(folder, names), how, cause=e) from e


def to_tensors(loader_or_dataset, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Materialise the first ``limit`` samples (all if None) of a DataLoader or Dataset as ``(x, y)`` tensors.

    Order is the dataset's own, deterministic order (a DataLoader's shuffling is ignored; a loader whose sampler has
    ``indices``, e.g. PyGlow's ``SubsetRandomSampler`` validation loader, gives those samples). ``y`` is int64.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be a non-negative int or None, got {limit!r}.")
    data = loader_or_dataset
    if isinstance(data, DataLoader):
        sampler = data.sampler
        if isinstance(data.dataset, IterableDataset):
            return _from_iterable(data, limit)
        if hasattr(sampler, "indices"):
            data = Subset(data.dataset, list(sampler.indices))
        elif isinstance(sampler, torch.utils.data.SequentialSampler | torch.utils.data.RandomSampler) and not getattr(
            sampler, "replacement", False
        ):
            data = data.dataset
        else:
            return _from_iterable(data, limit)
    if isinstance(data, IterableDataset):
        return _from_iterable(data, limit)
    if not isinstance(data, Dataset):
        raise TypeError(f"Expected a torch DataLoader or Dataset, got {type(data).__name__}.")
    size = len(cast(Sized, data))  # a map-style Dataset; one without __len__ raises TypeError here
    n = size if limit is None else min(limit, size)
    fast = _tensor_view(data, n)
    if fast is not None:
        return fast
    if n == 0:
        raise ValueError("The dataset is empty; nothing to materialise (is validation_split 0?).")
    items = [data[i] for i in range(n)]
    return _stack([x for x, _ in items]), torch.as_tensor([int(y) for _, y in items], dtype=torch.long)


def _tensor_view(data: Dataset, n: int):
    """Fast path for (Subsets of) TensorDatasets: index the tensors instead of looping."""
    idx = torch.arange(n)
    while isinstance(data, Subset):
        idx = torch.as_tensor(data.indices, dtype=torch.long)[idx]
        data = data.dataset
    if isinstance(data, TensorDataset) and len(data.tensors) == 2:
        x, y = data.tensors
        return x[idx], y[idx].long()
    return None


def _from_iterable(iterable, limit):
    xs, ys, seen = [], [], 0
    for batch in iterable:
        x, y = batch[0], batch[1]
        if isinstance(iterable, DataLoader):
            xs.append(x)
            ys.append(torch.as_tensor(y))
            seen += len(x)
        else:
            xs.append(torch.as_tensor(x).unsqueeze(0))
            ys.append(torch.as_tensor(y).reshape(1))
            seen += 1
        if limit is not None and seen >= limit:
            break
    if not xs:
        raise ValueError("The data is empty; nothing to materialise.")
    x, y = torch.cat(xs), torch.cat(ys).long()
    return (x, y) if limit is None else (x[:limit], y[:limit])


def _stack(xs) -> torch.Tensor:
    return torch.stack([torch.as_tensor(x) for x in xs])


def num_classes(loader_or_dataset) -> int:
    """Number of classes: ``len(classes)`` of the underlying dataset if it has one, else ``max(label) + 1``."""
    data = loader_or_dataset.dataset if isinstance(loader_or_dataset, DataLoader) else loader_or_dataset
    while isinstance(data, Subset):
        data = data.dataset
    classes = getattr(data, "classes", None)
    if classes is not None and len(classes) > 0:
        return len(classes)
    targets = getattr(data, "targets", None)
    if targets is None and isinstance(data, TensorDataset) and len(data.tensors) == 2:
        targets = data.tensors[1]
    if targets is None:
        targets = to_tensors(loader_or_dataset)[1]
    return int(torch.as_tensor(targets).max()) + 1
