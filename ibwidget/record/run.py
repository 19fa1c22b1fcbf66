"""``Run``: a training run's config, history and per-epoch snapshots, re-estimable for any estimator and sigma.

A snapshot keeps, for each tracked layer and the fixed probe of m samples, the packed upper triangle of the
squared-distance matrix ``D2`` (m(m-1)/2 float32 values) and the squared norms ``diag(G)``: together they are the
Gram matrix ``G = Z Z^T`` (``G_ij = (n_i + n_j - D2_ij) / 2``), so every Gram-based estimator can be recomputed for
every epoch, later, for any sigma. A narrow layer (at most 64 units and narrower than the probe) whose activations
are kept (for binning; the default) keeps only them (m d floats): its distances are computed from them when needed
(:func:`derives_distances`).

A ``Run`` only stores: :meth:`Run.snapshots` hands out what it holds as a read-only, never-growing
:class:`~ibwidget.measure.trajectories.Snapshots`, from which :mod:`ibwidget.measure.trajectories` computes
:meth:`Run.trajectories`, :meth:`Run.saturation` and the plane grid's values alike.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ibwidget._vocabulary import DIAGNOSTICS, KERNELS, TARGETS
from ibwidget.measure import kernels as _kernels
from ibwidget.measure import trajectories as _trajectories
from ibwidget.measure._typing import PathLike
from ibwidget.measure._validate import clean_text
from ibwidget.measure.trajectories import Snapshots

__all__ = ["Run", "load_run", "Snapshots", "TARGETS", "KERNELS", "derives_distances"]

_HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")


_report_writer = None  # write_html(runs, path, title, notes, **grid_kwargs), from the plane layer above this one


def set_report_writer(writer) -> None:
    """Register the function :meth:`Run.to_html` calls (:mod:`ibwidget.plane` does, on import)."""
    global _report_writer
    _report_writer = writer


#: The widest layer whose distances are computed from its kept activations instead of stored: up to this width the
#: matrix product that computes them costs about what reading stored ones does (``benchmarks/bench_storage.py``; at
#: 256 units a sigma change took 4.8x as long on probe 512).
DERIVED_MAX_WIDTH = 64


def derives_distances(dim: int, m: int) -> bool:
    """Whether a layer of width ``dim`` whose activations are kept on a probe of ``m`` keeps no distances: it is
    narrower than the probe, so its activations (m dim floats) hold its Gram in less room than the m(m-1)/2
    distances, and at most :data:`DERIVED_MAX_WIDTH` wide, so computing them when needed is cheap."""
    return dim < m and dim <= DERIVED_MAX_WIDTH


class _Growable:
    """A preallocated tensor that grows along dim 0 by doubling: appends without re-stacking history."""

    def __init__(self, row_shape, dtype, device, capacity: int):
        self._data = torch.empty((max(1, capacity), *row_shape), dtype=dtype, device=device)
        self.size = 0

    def reserve(self, capacity: int) -> None:
        """Hold at least ``capacity`` rows, growing to exactly that (appends beyond it double again)."""
        if capacity > self._data.shape[0]:
            bigger = self._data.new_empty((capacity, *self._data.shape[1:]))
            bigger[: self.size] = self._data[: self.size]
            self._data = bigger

    def extend(self, rows: torch.Tensor) -> None:
        for row in rows:
            self.append(row)

    def append(self, row: torch.Tensor) -> None:
        if self.size == self._data.shape[0]:
            bigger = self._data.new_empty((2 * self.size, *self._data.shape[1:]))
            bigger[: self.size] = self._data
            self._data = bigger
        self._data[self.size] = row
        self.size += 1

    @property
    def capacity(self) -> int:
        return self._data.shape[0]

    def view(self, n: int | None = None) -> torch.Tensor:
        return self._data[: self.size if n is None else n]


class Run:
    """Config, Keras-style ``history`` and per-epoch snapshots of one training run (epoch 0 = before training).

    Built by the engine (or :func:`load_run`); read by the widgets. Thread-safe: the training thread appends, any
    other thread may call :meth:`trajectories` meanwhile. ``derived_layers``: the layers that keep no distances,
    only activations (see :func:`derives_distances`); by default the first snapshot decides: every layer whose
    activations it brings and that :func:`derives_distances` admits.
    """

    def __init__(
        self,
        name: str,
        layer_names: Sequence[str],
        layer_dims: Sequence[int],
        probe_x: torch.Tensor,
        probe_labels: torch.Tensor,
        num_classes: int | None = None,
        config: dict | None = None,
        device: str | torch.device = "cpu",
        capacity: int = 8,
        output_is_probabilities: bool = False,
        derived_layers: Sequence[str] | None = None,
    ):
        if len(layer_names) != len(layer_dims) or not layer_names:
            raise ValueError("a Run needs at least one tracked layer, with one dimension per layer name.")
        if len(set(layer_names)) != len(layer_names):
            raise ValueError(f"layer names must be unique, got {list(layer_names)}.")
        self.name = clean_text(name)
        self.layer_names = [clean_text(n) for n in layer_names]
        self.layer_dims = [int(d) for d in layer_dims]
        self.device = torch.device(device)
        self.config = dict(config or {})
        self.output_is_probabilities = bool(output_is_probabilities)
        self.history: dict[str, list[float]] = {k: [] for k in _HISTORY_KEYS}
        self.custom_dynamics: dict[str, list[np.ndarray]] = {}
        self.batch_dynamics: list[np.ndarray] = []
        # snapshot index -> name -> (layers,) float64: a device tensor until first read, then an ndarray
        self._diagnostics: dict[int, dict[str, torch.Tensor | np.ndarray]] = {}
        self._lock = threading.RLock()
        self._snapshots: Snapshots | None = None  # the last one handed out, while nothing new is recorded
        self._snapshots_key: tuple = ()
        self.probe_x = probe_x.detach().to(self.device, torch.float32)
        self.probe_labels = probe_labels.detach().to(self.device, torch.long)
        self.m = int(self.probe_x.shape[0])
        if self.m < 4:
            raise ValueError(f"the probe has {self.m} samples; use at least 4 (512 is the default).")
        if self.probe_labels.shape != (self.m,):
            raise ValueError(f"probe labels must have shape ({self.m},), got {tuple(self.probe_labels.shape)}.")
        self.num_classes = int(num_classes or int(self.probe_labels.max()) + 1)
        self.input_dim = int(self.probe_x[0].numel())
        self._x_dist, self._x_norms = _kernels.pack_gram(_kernels.gram(self.probe_x))
        self._capacity = capacity
        self.derived_layers: list[str] | None = None  #: layers keeping only activations; set by the first snapshot
        self._dist: _Growable | None = None  # packed D2 per epoch and stored layer
        self._norms: _Growable | None = None  # diag(G)
        if derived_layers is not None:
            self._store(derived_layers)
        self._acts: dict[str, _Growable] = {}
        self._outputs: _Growable | None = None
        self.epochs: list[int] = []

    # ------------------------------------------------------------------------------------------ recording

    def _store(self, derived: Sequence[str]) -> None:
        """Fix which layers keep their distances (all but ``derived``) and make room for them."""
        unknown = [n for n in derived if n not in self.layer_names]
        if unknown:
            raise ValueError(f"derived_layers {unknown} are not tracked layers ({self.layer_names}).")
        self.derived_layers = [n for n in self.layer_names if n in derived]
        stored = len(self.layer_names) - len(self.derived_layers)
        P = self.m * (self.m - 1) // 2
        self._dist = _Growable((stored, P), torch.float32, self.device, self._capacity)
        self._norms = _Growable((stored, self.m), torch.float32, self.device, self._capacity)

    @property
    def stored_layers(self) -> list[str]:
        """The layers whose distances are stored (all but :attr:`derived_layers`)."""
        return [n for n in self.layer_names if n not in (self.derived_layers or [])]

    def add_snapshot(self, epoch: int, grams: dict, output: torch.Tensor, activations: dict | None = None) -> None:
        """Record one epoch: a Gram (m, m) per layer, the model's raw output (m, C), optional narrow activations.

        A layer that keeps only its activations (:attr:`derived_layers`) needs no Gram; a stored layer without one
        gets it from its activations."""
        if self.derived_layers is None:
            self._decide(activations or {})
        acts = activations or {}
        missing = [n for n in self.stored_layers if n not in grams and n not in acts]
        if missing:
            raise ValueError(f"add_snapshot needs a Gram for every tracked layer; missing {missing}.")
        grams = {n: grams[n] if n in grams else _kernels.gram(acts[n].detach()) for n in self.stored_layers}
        stored = [grams[n].to(self.device, torch.float32) for n in self.stored_layers]
        if stored:
            dist, norms = _kernels.pack_gram(torch.stack(stored))
        else:
            dist, norms = torch.empty(0, self.m * (self.m - 1) // 2), torch.empty(0, self.m)
        self.add_packed_snapshot(epoch, dist, norms, output, activations)

    def _decide(self, activations: dict) -> None:
        """Keep only the activations of the layers they describe in less room than distances (the first snapshot)."""
        widths = {n: a[0].numel() for n, a in activations.items() if n in self.layer_names}
        self._store([n for n, d in widths.items() if derives_distances(d, self.m)])

    def add_packed_snapshot(
        self,
        epoch: int,
        dist: torch.Tensor,
        norms: torch.Tensor,
        output: torch.Tensor,
        activations: dict | None = None,
    ) -> None:
        """Record one epoch as a run file holds it: per stored layer (:attr:`stored_layers`) the packed off-diagonal
        squared distances (S, P) and squared norms (S, m) of its Gram matrix, the model's raw output (m, C), and
        activations (required for the :attr:`derived_layers`)."""
        if self.derived_layers is None:
            self._decide(activations or {})
        assert self._dist is not None and self._norms is not None
        lacking = [n for n in self.derived_layers or [] if n not in (activations or {})]
        if lacking:
            raise ValueError(f"the layers {lacking} keep only their activations; this snapshot lacks them.")
        S, P = len(self.stored_layers), self.m * (self.m - 1) // 2
        if tuple(dist.shape) != (S, P) or tuple(norms.shape) != (S, self.m):
            raise ValueError(
                f"distances {tuple(dist.shape)} and norms {tuple(norms.shape)} must be ({S}, {P}) and ({S}, {self.m}):"
                f" one row per stored layer ({self.stored_layers})."
            )
        dist = dist.to(self.device, torch.float32)
        norms = norms.to(self.device, torch.float32)
        output = output.detach().to(self.device, torch.float32).reshape(self.m, -1)
        with self._lock:
            capacity = self._dist.capacity
            self._dist.append(dist)
            self._norms.append(norms)
            if self._outputs is None:
                self._outputs = _Growable(tuple(output.shape), torch.float32, self.device, capacity)
            self._outputs.append(output)
            for n, a in (activations or {}).items():
                a = a.detach().to(self.device, torch.float32).reshape(self.m, -1)
                if n not in self._acts:
                    self._acts[n] = _Growable(tuple(a.shape), torch.float32, self.device, capacity)
                self._acts[n].append(a)
            self.epochs.append(int(epoch))

    def reserve(self, snapshots: int) -> None:
        """Make room for ``snapshots`` snapshots in all, so that a continued run holds what its budget counted."""
        with self._lock:
            for grown in (self._dist, self._norms, self._outputs, *self._acts.values()):
                if grown is not None:
                    grown.reserve(snapshots)

    def log_epoch(self, logs: dict) -> None:
        """Append one epoch's metrics (keys of ``history``; missing ones are recorded as NaN)."""
        with self._lock:
            for k in set(self.history) | set(logs):
                self.history.setdefault(k, [math.nan] * (len(self.history["loss"])))
            n = len(self.history["loss"])
            for k, values in self.history.items():
                if len(values) == n:
                    values.append(float(logs.get(k, math.nan)))

    @property
    def num_snapshots(self) -> int:
        """Recorded snapshots, epoch 0 (before training) included."""
        return len(self.epochs)

    def nbytes(self) -> int:
        """Bytes held by the snapshots."""
        with self._lock:
            arrays = [g.view() for g in (self._dist, self._norms, *self._acts.values()) if g is not None]
            arrays += [self._outputs.view()] if self._outputs is not None else []
            return sum(a.numel() * a.element_size() for a in arrays)

    def __repr__(self) -> str:
        return f"Run({self.name!r}, {self.num_snapshots} snapshots, layers={self.layer_names}, probe={self.m})"

    # ------------------------------------------------------------------------------------------ estimation

    def snapshots(self) -> Snapshots:
        """The snapshots recorded so far, read-only and fixed: later epochs never appear in them.

        Taken under the run's lock, so epochs, distances, norms, outputs, activations and history agree; the tensors
        share the run's storage (no copy).
        """
        with self._lock:
            n = len(self.epochs)
            key = (n, *((k, len(v)) for k, v in self.history.items()))
            if self._snapshots is not None and self._snapshots_key == key:
                return self._snapshots
            self._snapshots_key = key
            outputs = (
                self._outputs.view(n) if self._outputs is not None else torch.empty(0, self.m, 0, device=self.device)
            )
            S, P = len(self.stored_layers), self.m * (self.m - 1) // 2
            derived = self.derived_layers or []

            def empty(*shape):
                return torch.empty(0, *shape, device=self.device)

            self._snapshots = Snapshots(
                name=self.name,
                layer_names=tuple(self.layer_names),
                layer_dims=tuple(self.layer_dims),
                epochs=tuple(self.epochs),
                stored_dist=self._dist.view(n) if self._dist is not None else empty(S, P),
                stored_norms=self._norms.view(n) if self._norms is not None else empty(S, self.m),
                derived_layers=tuple(self.layer_names.index(name) for name in derived),
                outputs=outputs,
                activations={  # a derived layer's, even before its first epoch (a file read right after its header)
                    **{name: empty(self.m, self.layer_dims[self.layer_names.index(name)]) for name in derived},
                    **{name: grown.view(n) for name, grown in self._acts.items()},
                },
                probe_x=self.probe_x,
                x_dist=self._x_dist,
                x_norms=self._x_norms,
                labels=self.probe_labels,
                num_classes=self.num_classes,
                output_is_probabilities=self.output_is_probabilities,
                history={k: list(v) for k, v in self.history.items()},
            )
            return self._snapshots

    def trajectories(
        self,
        estimator: str = "hsic",
        sigma: float = 5.0,
        target: str = "labels",
        sigma_rule: str = "fixed",
        kernel: str = "gaussian",
        sigma_x: float | None = None,
        sigma_y: float | None = None,
        layers: Sequence[str] | None = None,
    ) -> np.ndarray:
        """Information-plane coordinates for every recorded epoch: ndarray (epochs, layers, 2), float64.

        ``[:, :, 0]`` is the dependence of each layer T on the input X, ``[:, :, 1]`` on the target Y (true labels,
        one-hot with a linear kernel; or the network's softmax ``output``, PyGlow's choice, with ``kernel``).
        ``kernel`` and ``sigma``/``sigma_rule`` apply to T and X (``sigma_x`` overrides X's base sigma,
        ``sigma_y`` the output's); for KDE estimators sigma² is the noise variance.
        """
        return _trajectories.trajectories(
            self.snapshots(), estimator, sigma, target, sigma_rule, kernel, sigma_x, sigma_y, layers
        )

    def null_band(
        self,
        estimator: str = "hsic",
        sigma: float = 5.0,
        sigma_rule: str | None = None,
        target: str = "labels",
        q: float = 0.95,
        permutations: int = 100,
        seed: int = 0,
        kernel: str = "gaussian",
        layers: Sequence[str] | None = None,
    ) -> np.ndarray:
        """The chance floor of :meth:`trajectories`: ndarray (epochs, layers, 2), per epoch and layer the
        ``q``-quantile of the estimator over ``permutations`` reorderings of the probe's inputs (``[..., 0]``, the
        X axis) and of its labels and outputs (``[..., 1]``, the Y axis), which keep each variable's structure and
        break its tie to the layer (Gretton et al. 2008, a permutation test of independence). A point below its
        band is indistinguishable from chance at level 1 - q. Same estimator, width and target arguments as
        :meth:`trajectories` (``sigma_rule=None``: the fixed ``sigma``); computed from the stored snapshots, for
        this selection only: about ``permutations`` times the cost of one :meth:`trajectories`. Seeded."""
        return _trajectories.null_band(
            self.snapshots(),
            q,
            estimator=estimator,
            sigma=sigma,
            target=target,
            sigma_rule=sigma_rule or "fixed",
            kernel=kernel,
            permutations=permutations,
            seed=seed,
            layers=layers,
        )

    def cka_matrix(self, epoch: int, sigma: float | None = None, sigma_rule: str | None = "median_d2") -> np.ndarray:
        """CKA between every two representations of the probe at recorded ``epoch``: a symmetric (n, n) ndarray
        with a unit diagonal over [input, tracked layers..., output logits] (the output left out when it equals the
        last tracked layer; :meth:`cka_names` gives the order). Linear CKA when ``sigma`` and ``sigma_rule`` are
        None; else Gaussian, of width ``sigma`` for every representation, or ``sigma_rule``'s per representation
        (Kornblith et al. 2019)."""
        return _trajectories.cka_matrix(self.snapshots(), self._epoch_index(epoch), sigma, sigma_rule)

    def cka_names(self, epoch: int = 0) -> list[str]:
        """The rows of :meth:`cka_matrix` at ``epoch``: "input", the tracked layers, then "output" unless the model's
        output equals the last tracked layer."""
        return _trajectories.cka_representations(self.snapshots(), self._epoch_index(epoch))[0]

    def add_diagnostics(self, values: dict) -> None:
        """Attach per-layer geometric diagnostics to the latest snapshot: ``values`` maps names of
        :data:`~ibwidget._vocabulary.DIAGNOSTICS` to tensors or arrays of one value per tracked layer (kept as
        given, on their device, until read)."""
        unknown = sorted(set(values) - set(DIAGNOSTICS))
        if unknown:
            raise ValueError(f"unknown diagnostics {unknown}; the known ones are {', '.join(DIAGNOSTICS)}.")
        with self._lock:
            if not self.epochs:
                raise ValueError("add_diagnostics describes a snapshot: record one first (add_snapshot).")
            row: dict[str, torch.Tensor | np.ndarray] = {}
            for name, v in values.items():
                t = torch.as_tensor(v).detach().to(dtype=torch.float64).reshape(-1)
                if t.numel() != len(self.layer_names):
                    raise ValueError(f"diagnostic {name!r} has {t.numel()} values for {len(self.layer_names)} layers.")
                row[name] = t
            self._diagnostics.setdefault(len(self.epochs) - 1, {}).update(row)

    def diagnostics_at(self, index: int) -> dict[str, np.ndarray]:
        """The diagnostics recorded with snapshot ``index`` (not an epoch number), as float64 arrays (layers,)."""
        with self._lock:
            row = self._diagnostics.get(index, {})
            out = {}
            for name, values in row.items():
                if isinstance(values, torch.Tensor):  # read once from the device, then kept on the host
                    values = row[name] = values.cpu().numpy()
                out[name] = values
            return out

    def diagnostics(self) -> dict[str, np.ndarray]:
        """Per-layer geometric diagnostics of every snapshot (see :mod:`ibwidget.record.diagnostics`): a dict of
        float64 ndarrays (epochs, layers), one per name of :data:`~ibwidget._vocabulary.DIAGNOSTICS` —
        ``saturated_fraction``, ``mean_abs_activation``, ``weight_norm``, ``grad_mean``, ``grad_std``,
        ``grad_snr`` — NaN where a snapshot has none (epoch 0's gradients, a layer of unknown nonlinearity, a run
        recorded before they existed; :attr:`diagnostics_notes` says why)."""
        with self._lock:
            n = len(self.epochs)
            rows = [self.diagnostics_at(i) for i in range(n)]
        out = {}
        for name in DIAGNOSTICS:
            values = np.full((n, len(self.layer_names)), np.nan)
            for i, row in enumerate(rows):
                if name in row:
                    values[i] = row[name]
            out[name] = values
        return out

    @property
    def diagnostics_notes(self) -> list[str]:
        """Why some diagnostics are missing: layers whose nonlinearity is unknown (no saturated fraction), a run
        recorded under FSDP (no weight or gradient statistics)."""
        notes = []
        if self.config.get("parallel") == "fsdp":
            notes.append("weight norms and gradient statistics are not recorded under FSDP (each rank holds shards).")
        kinds = self.config.get("nonlinearities")
        if not isinstance(kinds, list) or len(kinds) != len(self.layer_names):
            return notes
        unknown = [n for n, k in zip(self.layer_names, kinds, strict=True) if k is None]
        if not unknown:
            return notes
        names = ", ".join(unknown)
        return notes + [
            f"saturated fraction unknown for {names}: their nonlinearity is not known (nn.Tanh, nn.Sigmoid, nn.ReLU "
            f"modules and IBSequential layers are); declare it, e.g. nonlinearities={{{unknown[0]!r}: 'tanh'}} "
            "('tanh', 'sigmoid', 'relu' or 'linear')."
        ]

    def _epoch_index(self, epoch: int) -> int:
        if epoch not in self.epochs:
            raise ValueError(f"epoch {epoch!r} has no snapshot; recorded epochs: {self.epochs}.")
        return self.epochs.index(epoch)

    def saturation(self, sigma: float = 5.0, sigma_rule: str = "fixed") -> np.ndarray:
        """Mean off-diagonal Gaussian kernel value per (epoch, layer): ~1 sigma too large, ~0 too small."""
        return _trajectories.saturation(self.snapshots(), sigma, sigma_rule)

    # ------------------------------------------------------------------------------------------ files

    def to_html(self, path: PathLike, title: str | None = None, notes: str | None = None, **grid_kwargs) -> Path:
        """Write a one-file HTML page of this run's information plane that works offline, with no kernel.

        Toggles (layer, estimator, sigma, target) and an epoch player run in the browser over a precomputed grid
        (``grid_kwargs``: ``estimators``, ``sigmas``, ``targets``, ``sigma_rules``, ``kernel``; see
        :class:`ibwidget.PlaneView`). Atomic, like :meth:`save`. Returns the path.
        """
        if _report_writer is None:
            raise RuntimeError("no report writer is registered; import ibwidget (or ibwidget.plane) first.")
        return _report_writer([self], path, title=title, notes=notes, **grid_kwargs)

    def save(self, path: PathLike) -> Path:
        """Write the run to ``path`` as one ``.ibrun`` file (schema 3: a log of checksummed records with ``.npy``
        arrays; no pickle; see :mod:`ibwidget.record.runfile`). Parent folders are created.

        Atomic: written to a hidden temporary file beside ``path`` (``.NAME.*.tmp``), flushed to disk, then renamed
        over it, so a crash mid-save never leaves a broken file in place of a good one; a hard crash (power loss,
        ``kill -9``) can leave only that temporary file behind, safe to delete. An existing file keeps its
        permissions; a new one gets the usual ones (0666 less the umask).
        """
        from ibwidget.record import runfile  # the file side of a Run, which itself builds Runs

        return runfile.save(self, path)

    @classmethod
    def load(cls, path: PathLike, device: str | torch.device = "cpu") -> Run:
        """Read a run file (schema 1, 2 or 3); a damaged or unknown file raises ``ValueError`` saying why. Of a file
        another process is still writing, the epochs complete so far.

        Every size is checked against the file's metadata before anything is read, and parts the format does not
        know are skipped.
        """
        from ibwidget.record import runfile

        return runfile.load(path, device)

    @classmethod
    def from_schema1(cls, meta: dict, arrays: dict, device: str | torch.device = "cpu") -> Run:
        """A run from a schema-1 file's checked ``meta.json`` and arrays (see :mod:`ibwidget.record._runfile`)."""
        n = len(meta["epochs"])
        run = cls(
            meta["name"],
            meta["layer_names"],
            meta["layer_dims"],
            torch.from_numpy(arrays["probe_x"]),
            torch.from_numpy(arrays["probe_labels"]),
            num_classes=meta["num_classes"],
            config=meta.get("config", {}),
            device=device,
            capacity=max(n, 1),
            output_is_probabilities=meta.get("output_is_probabilities", False),
        )
        run._store([])  # schema 1 stored every layer's distances
        assert run._dist is not None and run._norms is not None
        run._dist.extend(torch.from_numpy(arrays["dist"]).to(run.device, torch.float32))
        run._norms.extend(torch.from_numpy(arrays["norms"]).to(run.device, torch.float32))
        for i, name in enumerate(run.layer_names):
            if f"acts_{i}" in arrays:
                acts = torch.from_numpy(arrays[f"acts_{i}"]).to(run.device, torch.float32)
                run._acts[name] = _Growable(tuple(acts.shape[1:]), torch.float32, run.device, max(n, 1))
                run._acts[name].extend(acts)
        if n:
            outputs = torch.from_numpy(arrays["outputs"]).to(run.device, torch.float32)
            run._outputs = _Growable(tuple(outputs.shape[1:]), torch.float32, run.device, n)
            run._outputs.extend(outputs)
        run.epochs = [int(e) for e in meta["epochs"]]
        run.history = {k: [math.nan if v is None else float(v) for v in vals] for k, vals in meta["history"].items()}
        for k, name in enumerate(meta.get("custom_dynamics", [])):
            run.custom_dynamics[name] = list(arrays[f"custom_{k}"])
        if "batch_counts" in arrays:
            run.batch_dynamics = list(np.split(arrays["batch_dynamics"], np.cumsum(arrays["batch_counts"])[:-1]))
        elif "batch_dynamics" in arrays:
            run.batch_dynamics = list(arrays["batch_dynamics"])
        return run


def load_run(path: PathLike, device: str | torch.device = "cpu") -> Run:
    """Open a run file (:meth:`Run.save`, ``ib.record(..., path=...)`` or an engine's recording with ``path=``);
    of a file still being written, the epochs complete so far."""
    return Run.load(path, device)
