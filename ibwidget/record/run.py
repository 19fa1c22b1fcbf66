"""``Run``: a training run's config, history and per-epoch snapshots, re-estimable for any estimator and sigma.

A snapshot keeps, for each tracked layer and the fixed probe of m samples, the packed upper triangle of the
squared-distance matrix ``D2`` (m(m-1)/2 float32 values) and the squared norms ``diag(G)``: together they are the
Gram matrix ``G = Z Z^T`` (``G_ij = (n_i + n_j - D2_ij) / 2``), so every Gram-based estimator can be recomputed for
every epoch, later, for any sigma. Layers narrower than the probe also keep their activations (for binning).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ibwidget._vocabulary import KERNELS, MEDIAN_RULES, TARGETS
from ibwidget.measure import _packed
from ibwidget.measure import estimators as _estimators
from ibwidget.measure import kernels as _kernels
from ibwidget.measure._packed import unpack
from ibwidget.measure._validate import check_sigma, clean_text, resolve_name, unknown_name
from ibwidget.record import _runfile

__all__ = ["Run", "load_run", "TARGETS", "KERNELS"]

_HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")
_FAST_HSIC = {"biased", "pyglow"}
_CHUNK = 32  # matrices unpacked at once on the generic path


def _median_sigma(dist: torch.Tensor, rule: str) -> torch.Tensor:
    """Median-heuristic sigma from packed squared distances (..., P) (mean of the two middle values)."""
    values = dist if rule == "median_d2" else dist.sqrt()
    n = values.shape[-1]
    lo = values.kthvalue((n + 1) // 2, dim=-1).values
    hi = values.kthvalue(n // 2 + 1, dim=-1).values if n % 2 == 0 else lo
    med = 0.5 * (lo + hi)
    med = med.sqrt() if rule == "median_d2" else med
    return torch.where(med > 0, med, torch.ones_like(med))  # a dead layer: any width gives K = 1


def pack_gram(G: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gram (..., m, m) -> (packed squared distances (..., P), squared norms (..., m)), P = m(m-1)/2."""
    return _packed.pack(_kernels._sq_distances(G)).contiguous(), torch.diagonal(G, dim1=-2, dim2=-1).contiguous()


_report_writer = None  # write_html(runs, path, title, notes, **grid_kwargs), from the plane layer above this one


def set_report_writer(writer) -> None:
    """Register the function :meth:`Run.to_html` calls (:mod:`ibwidget.plane` does, on import)."""
    global _report_writer
    _report_writer = writer


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
    other thread may call :meth:`trajectories` meanwhile.
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
        self._lock = threading.RLock()
        self._median_cache: dict = {}
        self.probe_x = probe_x.detach().to(self.device, torch.float32)
        self.probe_labels = probe_labels.detach().to(self.device, torch.long)
        self.m = int(self.probe_x.shape[0])
        if self.m < 4:
            raise ValueError(f"the probe has {self.m} samples; use at least 4 (512 is the default).")
        if self.probe_labels.shape != (self.m,):
            raise ValueError(f"probe labels must have shape ({self.m},), got {tuple(self.probe_labels.shape)}.")
        self.num_classes = int(num_classes or int(self.probe_labels.max()) + 1)
        self.input_dim = int(self.probe_x[0].numel())
        self._x_dist, self._x_norms = pack_gram(_kernels.gram(self.probe_x))
        P = self.m * (self.m - 1) // 2
        L = len(self.layer_names)
        self._dist = _Growable((L, P), torch.float32, self.device, capacity)  # packed D2 per epoch and layer
        self._norms = _Growable((L, self.m), torch.float32, self.device, capacity)  # diag(G)
        self._acts: dict[str, _Growable] = {}
        self._outputs: _Growable | None = None
        self.epochs: list[int] = []

    # ------------------------------------------------------------------------------------------ recording

    def add_snapshot(self, epoch: int, grams: dict, output: torch.Tensor, activations: dict | None = None) -> None:
        """Record one epoch: a Gram (m, m) per layer, the model's raw output (m, C), optional narrow activations."""
        missing = [n for n in self.layer_names if n not in grams]
        if missing:
            raise ValueError(f"add_snapshot needs a Gram for every tracked layer; missing {missing}.")
        dist, norms = pack_gram(torch.stack([grams[n].to(self.device, torch.float32) for n in self.layer_names]))
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
            arrays = [g.view() for g in (self._dist, self._norms, *self._acts.values())]
            arrays += [self._outputs.view()] if self._outputs is not None else []
            return sum(a.numel() * a.element_size() for a in arrays)

    def __repr__(self) -> str:
        return f"Run({self.name!r}, {self.num_snapshots} snapshots, layers={self.layer_names}, probe={self.m})"

    # ------------------------------------------------------------------------------------------ estimation

    def _view(self, layers):
        """A consistent copy-free view of the snapshots: (dist (E, L, P), norms (E, L, m), outputs (E, m, C))."""
        with self._lock:
            n = len(self.epochs)
            if n == 0:
                raise ValueError("this run has no snapshot yet; train at least until epoch 0 is recorded.")
            dist, norms = self._dist.view(n), self._norms.view(n)
            if layers != self.layer_names:
                index = torch.tensor([self.layer_names.index(name) for name in layers], device=self.device)
                dist, norms = dist.index_select(1, index), norms.index_select(1, index)
            outputs = self._outputs.view(n)
            acts = {name: self._acts[name].view(n) for name in layers if name in self._acts}
        return dist, norms, outputs, acts

    def _resolve_layers(self, layers):
        if layers is None:
            return list(self.layer_names)
        unknown = [n for n in layers if n not in self.layer_names]
        if unknown:
            raise unknown_name("layer", unknown[0], self.layer_names)
        return list(layers)

    def _sigma(self, rule, sigma, dist: torch.Tensor, norms: torch.Tensor, dims, key=None) -> torch.Tensor | float:
        """Kernel width per matrix (a float, or a tensor of dist's batch shape)."""
        if rule == "fixed":
            return check_sigma(sigma)
        if rule == "sqrt_d":
            s = check_sigma(sigma)
            if dist.ndim == 1:  # the input X
                return s * math.sqrt(self.input_dim)
            root_d = torch.tensor([math.sqrt(d) for d in dims], dtype=dist.dtype, device=dist.device)
            return (s * root_d).expand(dist.shape[:-1])
        if rule in MEDIAN_RULES:
            if key is None:
                return _median_sigma(dist, rule)
            key = (rule, key)
            if key not in self._median_cache:  # keyed by layers and snapshot count: snapshots never change
                self._median_cache[key] = _median_sigma(dist, rule)
            return self._median_cache[key]
        raise unknown_name("sigma rule", rule, _kernels.SIGMA_RULES)

    def _target_kernel(self, target, kernel, sigma_rule, sigma, outputs) -> torch.Tensor:
        """Kernel of Y: (m, m) for labels (one-hot, linear), (E, m, m) for the network's output (float64)."""
        if target == "labels":
            return _kernels.label_kernel(self.probe_labels, self.num_classes).to(self.device)
        outputs = outputs.double()  # a saturated output kernel (values near 1) needs float64 to keep its structure
        probs = outputs if self.output_is_probabilities else torch.softmax(outputs, -1)
        G = probs @ probs.transpose(-1, -2)
        if kernel == "linear":
            return G
        D = _kernels._sq_distances(G)
        if sigma_rule in MEDIAN_RULES:
            s = _median_sigma(_packed.pack(D), sigma_rule)[..., None, None]
        else:  # fixed, or sqrt_d with d = the number of outputs
            s = check_sigma(sigma) * (math.sqrt(probs.shape[-1]) if sigma_rule == "sqrt_d" else 1.0)
        return D.mul_(_kernels.exponent_factor(s)).exp_()

    def _x_kernel(self, kernel, sigma_x) -> torch.Tensor:
        """Kernel of the probe inputs X, (m, m), in float64 (a wide kernel keeps its structure near 1)."""
        if kernel == "linear":
            return _kernels.gram(self.probe_x.double())
        return unpack(torch.exp(self._x_dist.double() * _kernels.exponent_factor(sigma_x)), self.m, 1.0)

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
        spec = _estimators.get(estimator)
        target = resolve_name("target", target, TARGETS)
        kernel = resolve_name("kernel", kernel, KERNELS)
        sigma_rule = resolve_name("sigma rule", sigma_rule, _kernels.SIGMA_RULES)
        layers = self._resolve_layers(layers)
        dims = [self.layer_dims[self.layer_names.index(n)] for n in layers]
        dist, norms, outputs, acts = self._view(layers)
        if spec.needs == "activations":
            return self._activation_trajectories(spec, layers, acts, outputs, target)
        sigma_h = self._sigma(sigma_rule, sigma, dist, norms, dims, key=(tuple(layers), dist.shape[0]))
        E, L, P = dist.shape
        epoch_of = torch.arange(E, device=self.device).repeat_interleave(L)
        flat_sigma = (
            sigma_h.reshape(E * L)
            if isinstance(sigma_h, torch.Tensor)
            else torch.full((E * L,), sigma_h, dtype=torch.float64)
        )
        flat_sigma = flat_sigma.to(self.device, torch.float64)
        if spec.needs == "distances":  # KDE: sigma^2 is the noise variance, 4x for the lower bound
            labels = self.probe_labels if target == "labels" else outputs.argmax(-1)
            targets = (_packed.Target.of_labels(None), _packed.Target.of_labels(labels))
            factor = _kernels.exponent_factor(flat_sigma, 4.0 if spec.options.get("bound") == "lower" else 1.0)
            return self._estimate_chunks(spec, dist, factor.reshape(E, L), targets)
        s_x = self._sigma(sigma_rule, sigma if sigma_x is None else sigma_x, self._x_dist, self._x_norms, [], "X")
        K_x = self._x_kernel(kernel, s_x)
        K_y = self._target_kernel(target, kernel, sigma_rule, sigma if sigma_y is None else sigma_y, outputs)
        option = next(iter(spec.options.values()), None)
        if spec.fn in (_estimators.hsic, _estimators.cka) and option in _packed.PACKED[spec.fn.__name__]:
            unbiased = option in ("unbiased", True)
            targets = (_packed.Target.of(K_x, unbiased), _packed.Target.of(K_y, unbiased))
            gaussian = kernel == "gaussian"
            factor = _kernels.exponent_factor(flat_sigma) if gaussian else torch.full_like(flat_sigma, -0.5)
            return self._estimate_chunks(spec, dist, factor.reshape(E, L), targets, gaussian)
        return self._generic(spec, kernel, dist, norms, flat_sigma, epoch_of, K_x, K_y)

    def _estimate_chunks(self, spec, dist, factor, targets, gaussian=True) -> np.ndarray:
        """Packed estimation of distance rows (E, L, P) in cache-sized chunks of epochs; returns (E, L, 2).

        The kernel values come from ``factor * D2`` in the form that keeps each matrix's precision: see
        :func:`ibwidget.measure._packed.kernel_chunks`.
        """
        E, L, _ = dist.shape
        name, option = spec.fn.__name__, next(iter(spec.options.values()), None)
        out = torch.empty(E, L, 2, dtype=torch.float64, device=self.device)
        for start, stop, _, k, shift in _packed.kernel_chunks(dist, factor, gaussian):
            rows = [t.epochs(start, stop) for t in targets]
            out[start:stop] = _packed.estimate(name, option, k, self.m, rows, shift)
        return out.cpu().numpy()

    def _generic(self, spec, kernel, dist, norms, flat_sigma, epoch_of, K_x, K_y) -> np.ndarray:
        """Any registered estimator: float64 kernels unpacked to (chunk, m, m) and passed to its function.

        float64, because estimators such as Rényi's read K itself (its eigenvalues), not only ``K - 1``: near 1, a
        float32 kernel has lost the structure they measure.
        """
        E, L, P = dist.shape
        flat_dist, flat_norms = dist.reshape(E * L, P).double(), norms.reshape(E * L, -1).double()
        factor = _kernels.exponent_factor(flat_sigma)
        out = torch.empty(E * L, 2, dtype=torch.float64)
        for start in range(0, E * L, _CHUNK):
            sl = slice(start, start + _CHUNK)
            if kernel == "linear":
                K = 0.5 * (flat_norms[sl, :, None] + flat_norms[sl, None, :]) - 0.5 * unpack(flat_dist[sl], self.m)
                K.diagonal(dim1=-2, dim2=-1).copy_(flat_norms[sl])
            else:
                K = unpack(torch.exp(flat_dist[sl] * factor[sl, None]), self.m, 1.0)
            ky = K_y if K_y.ndim == 2 else K_y[epoch_of[sl]]
            out[sl, 0] = torch.as_tensor(spec(K, K_x.to(K.dtype))).double().cpu()
            out[sl, 1] = torch.as_tensor(spec(K, ky.to(K.dtype))).double().cpu()
        return out.reshape(E, L, 2).numpy()

    def _activation_trajectories(self, spec, layers, acts, outputs, target) -> np.ndarray:
        missing = [n for n in layers if n not in acts]
        if missing:
            raise ValueError(
                f"{spec.name!r} reads activations, which this run kept only for layers narrower than the probe; "
                f"missing: {missing}. Record with keep_activations='all', or pass layers=[...] of narrow layers."
            )
        E = len(next(iter(acts.values())))
        x_codes = torch.arange(self.m)  # probe inputs are distinct samples: I(T;X) = H(T)
        out = np.empty((E, len(layers), 2))
        for e in range(E):
            labels = self.probe_labels if target == "labels" else outputs[e].argmax(-1)
            for li, name in enumerate(layers):
                out[e, li, 0] = float(spec(acts[name][e], x_codes))
                out[e, li, 1] = float(spec(acts[name][e], labels))
        return out

    def saturation(self, sigma: float = 5.0, sigma_rule: str = "fixed") -> np.ndarray:
        """Mean off-diagonal Gaussian kernel value per (epoch, layer): ~1 sigma too large, ~0 too small."""
        dist, norms, _, _ = self._view(self.layer_names)
        s = self._sigma(sigma_rule, sigma, dist, norms, self.layer_dims)
        factor = _kernels.exponent_factor(s if isinstance(s, torch.Tensor) else torch.tensor(s)).expand(dist.shape[:-1])
        out = torch.empty(dist.shape[:-1], dtype=torch.float64, device=self.device)
        for start, stop, k32, _, shift in _packed.kernel_chunks(dist, factor):
            out[start:stop] = k32.mean(-1, dtype=torch.float64) + shift
        return out.cpu().numpy()

    # ------------------------------------------------------------------------------------------ files

    def to_html(self, path, title: str | None = None, notes: str | None = None, **grid_kwargs) -> Path:
        """Write a one-file HTML page of this run's information plane that works offline, with no kernel.

        Toggles (layer, estimator, sigma, target) and an epoch player run in the browser over a precomputed grid
        (``grid_kwargs``: ``estimators``, ``sigmas``, ``targets``, ``sigma_rules``, ``kernel``; see
        :class:`ibwidget.PlaneView`). Atomic, like :meth:`save`. Returns the path.
        """
        if _report_writer is None:
            raise RuntimeError("no report writer is registered; import ibwidget (or ibwidget.plane) first.")
        return _report_writer([self], path, title=title, notes=notes, **grid_kwargs)

    def save(self, path) -> Path:
        """Write the run to ``path`` (``.ibrun``: a zip of ``meta.json`` and ``.npy`` arrays; no pickle).

        Atomic: written to a hidden temporary file beside ``path`` (``.NAME.*.tmp``), flushed to disk, then renamed
        over it, so a crash mid-save never leaves a broken file in place of a good one; a hard crash (power loss,
        ``kill -9``) can leave only that temporary file behind, safe to delete. An existing file keeps its
        permissions; a new one gets the usual ones (0666 less the umask).
        """
        with self._lock:
            n = len(self.epochs)
            meta = {
                "name": self.name,
                "layer_names": self.layer_names,
                "layer_dims": self.layer_dims,
                "num_classes": self.num_classes,
                "epochs": self.epochs,
                "history": self.history,
                "config": _runfile.jsonable(self.config),
                "output_is_probabilities": self.output_is_probabilities,
                "activations": sorted(self._acts),
                "custom_dynamics": sorted(self.custom_dynamics),
            }
            arrays = {"probe_x": self.probe_x, "probe_labels": self.probe_labels}
            if n:
                arrays["outputs"] = self._outputs.view(n)
            arrays["dist"] = self._dist.view(n)
            arrays["norms"] = self._norms.view(n)
            for i, name in enumerate(self.layer_names):
                if name in self._acts:
                    arrays[f"acts_{i}"] = self._acts[name].view(n)
            for k, name in enumerate(meta["custom_dynamics"]):
                arrays[f"custom_{k}"] = np.asarray(self.custom_dynamics[name], dtype=np.float64)
            if self.batch_dynamics:  # epochs may differ in batch count: concatenated, with the counts
                arrays["batch_dynamics"] = np.concatenate([np.asarray(b, np.float64) for b in self.batch_dynamics])
                arrays["batch_counts"] = np.asarray([len(b) for b in self.batch_dynamics], dtype=np.int64)
            arrays = {k: v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v for k, v in arrays.items()}
        return _runfile.write(path, meta, arrays)

    @classmethod
    def load(cls, path, device: str | torch.device = "cpu") -> Run:
        """Read a run written by :meth:`save`; a damaged or unknown file raises ``ValueError`` saying why.

        Every size is checked against the file's metadata before anything is inflated, and members the format
        does not know are skipped.
        """
        meta, arrays = _runfile.read(path)
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


def load_run(path, device: str | torch.device = "cpu") -> Run:
    """Open a run saved with :meth:`Run.save`."""
    return Run.load(path, device)
