"""The fixed probe set and per-epoch snapshots of each tapped layer.

After every epoch (and once before training, epoch 0) the probe is passed through the model in ``eval()`` mode
without gradients; each tapped layer's Gram matrix ``G = Z Z^T`` (float32, on the training device) goes into the
:class:`~ibwidget.record.run.Run`. Memory is fixed per epoch and checked against a budget before training starts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from ibwidget.measure import kernels as _kernels
from ibwidget.record.run import derives_distances
from ibwidget.record.taps import Tap

__all__ = [
    "make_probe",
    "split_batch",
    "Recorder",
    "PendingSnapshot",
    "DEFAULT_MEMORY_BUDGET",
    "INPUT_KEYS",
    "TARGET_KEYS",
]

DEFAULT_MEMORY_BUDGET = 2 * 1024**3  #: bytes of snapshots a run may hold (2 GiB)
INPUT_KEYS = ("x", "input", "inputs")  #: keys of the inputs in a dict batch or sample, first found wins
TARGET_KEYS = ("y", "label", "labels", "target", "targets")  #: keys of the targets in a dict batch or sample
_KEEP = ("narrow", "all", "none")
_EMPTY_PROBE_SOURCE = (
    "the probe's source has no samples (an empty validation loader, e.g. from validation_split=0?). Pass a "
    "non-empty val_loader, val_loader=None to take the probe from the training data, or probe_data=(x, labels)."
)
_BATCH_FORMATS = (
    f"a pair (inputs, targets) or a dict with an input key ({', '.join(INPUT_KEYS)}) "
    f"and a target key ({', '.join(TARGET_KEYS)})"
)


def split_batch(batch) -> tuple:
    """``(inputs, targets)`` of a batch or sample: a tuple/list ``(x, y, ...)`` or a dict keyed as in
    :data:`INPUT_KEYS` and :data:`TARGET_KEYS`; anything else is a ``TypeError`` naming the formats."""
    if isinstance(batch, Mapping):
        x = next((batch[k] for k in INPUT_KEYS if k in batch), None)
        y = next((batch[k] for k in TARGET_KEYS if k in batch), None)
        if x is None or y is None:
            raise TypeError(f"a dict batch needs {_BATCH_FORMATS}; got the keys {', '.join(map(repr, batch))}.")
        return x, y
    if isinstance(batch, list | tuple) and len(batch) >= 2:
        return batch[0], batch[1]
    raise TypeError(f"each batch must be {_BATCH_FORMATS}; got {type(batch).__name__}.")


def make_probe(data, size: int = 512, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed, seeded subset of ``size`` samples (x, labels) from a DataLoader, Dataset or (x, y) tensors.

    Samples are pairs ``(x, y)`` or dicts (see :func:`split_batch`).
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 4:
        raise ValueError(f"probe must be an integer number of samples >= 4, got {size!r} (512 is the default).")
    if isinstance(data, tuple | list) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        x, y = data
    else:
        dataset = getattr(data, "dataset", data)
        if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
            raise TypeError(
                f"cannot take a probe from {type(data).__name__}; pass a DataLoader, a map-style Dataset, "
                "or a tuple (x, labels) of tensors."
            )
        n = len(dataset)
        if n == 0:
            raise ValueError(_EMPTY_PROBE_SOURCE)
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(n, generator=g)[: min(size, n)].sort().values
        items = [split_batch(dataset[int(i)]) for i in idx]
        x = torch.stack([torch.as_tensor(item_x) for item_x, _ in items])
        y = torch.as_tensor([int(item_y) for _, item_y in items])
        return x.float(), y.long()
    if x.shape[0] == 0:
        raise ValueError(_EMPTY_PROBE_SOURCE)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"probe inputs ({x.shape[0]}) and labels ({y.shape[0]}) differ in length.")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(x.shape[0], generator=g)[: min(size, x.shape[0])].sort().values
    return x[idx].float(), y[idx].long()


#: (Grams of the layers that store distances, the model's raw output, the activations kept, all activations)
SnapshotParts = tuple[dict[str, torch.Tensor], torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]


class PendingSnapshot:
    """A snapshot :meth:`Recorder.begin_snapshot` enqueued; :meth:`result` hands over its tensors.

    On a CUDA device the tensors were made on the recorder's side stream: :meth:`result` makes the caller's stream
    wait for that stream's ``done`` event (a wait on the device, not the host) and marks each tensor as used by the
    caller's stream, so that the caching allocator never hands its memory to the side stream while the caller's
    stream may still read it. Elsewhere ``take`` computes the parts when asked.
    """

    def __init__(
        self,
        take: Callable[[], SnapshotParts],
        done: torch.cuda.Event | None = None,
        device: torch.device | None = None,
    ):
        self._take = take
        self._done = done
        self._device = device
        self._parts: SnapshotParts | None = None

    def result(self) -> SnapshotParts:
        """The snapshot's parts, ready for any work the caller's stream enqueues next (once; later calls repeat)."""
        if self._parts is None:
            self._parts = self._take()
            if self._done is not None:
                caller = torch.cuda.current_stream(self._device)
                caller.wait_event(self._done)
                grams, output, kept, acts = self._parts
                for tensor in (*grams.values(), output, *kept.values(), *acts.values()):
                    tensor.record_stream(caller)
        return self._parts

    def drop(self) -> None:
        """Never take this snapshot, but make the caller's stream wait until it no longer reads the weights."""
        if self._parts is None and self._done is not None:
            torch.cuda.current_stream(self._device).wait_event(self._done)
        self._take = None  # type: ignore[assignment]


class Recorder:
    """Snapshots of ``layers`` of ``model`` on a fixed probe: Grams, the model output, narrow activations.

    ``keep_activations``: ``"narrow"`` keeps activations of layers narrower than the probe (cheap; enables the
    binning estimator), ``"all"`` of every layer, ``"none"`` of none. ``forward`` defaults to ``model``;
    :class:`ibwidget.IBSequential` passes its logits function.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: list[str],
        probe_x: torch.Tensor,
        probe_labels: torch.Tensor,
        device: torch.device,
        keep_activations: str = "narrow",
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        chunk_size: int = 256,
        forward=None,
    ):
        if keep_activations not in _KEEP:
            raise ValueError(f"keep_activations must be one of {_KEEP}, got {keep_activations!r}.")
        if not layers:
            raise ValueError(
                "layers is empty, so there is nothing to record; pass at least one module name as in "
                "model.named_modules(), e.g. layers=['fc1'], or layers=None for every layer with parameters."
            )
        self.model = model
        self.layers = list(layers)
        self.device = torch.device(device)
        self.probe_x = probe_x.to(self.device)
        self.probe_labels = probe_labels
        self.keep_activations = keep_activations
        self.memory_budget = int(memory_budget)
        self.chunk_size = int(chunk_size)
        self.forward = forward or model
        self.m = int(probe_x.shape[0])
        self.layer_dims: list[int] | None = None
        self.output_dim: int | None = None  #: width of the model's flattened output (known after a forward)
        self._side_stream: torch.cuda.Stream | None = None  # the snapshots' stream on a CUDA device

    def _activations(self) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Forward the probe in eval mode, no grad; restore the model's mode after."""
        was_training = self.model.training
        parts: dict[str, list[torch.Tensor]] = {n: [] for n in self.layers}
        outputs = []
        self.model.eval()
        try:
            with torch.no_grad(), Tap(self.model, self.layers, reduce=lambda n, t: t.reshape(t.shape[0], -1)) as tap:
                for start in range(0, self.m, self.chunk_size):
                    tap.clear()
                    out = self.forward(self.probe_x[start : start + self.chunk_size])
                    outputs.append(out.detach().reshape(out.shape[0], -1).float())
                    for n in self.layers:
                        if n not in tap.outputs:
                            raise RuntimeError(
                                f"layer {n!r} was not called in the model's forward pass, so it cannot be tracked; "
                                "choose layers the forward pass uses."
                            )
                        parts[n].append(tap.outputs[n].float())
        finally:
            self.model.train(was_training)
        acts = {n: torch.cat(p) for n, p in parts.items()}
        if self.layer_dims is None:
            self.layer_dims = [int(acts[n].shape[1]) for n in self.layers]
            self.output_dim = int(outputs[0].shape[1])
        return acts, torch.cat(outputs)

    def snapshot(self) -> SnapshotParts:
        """(Grams of the layers that store distances, raw model output (m, C), activations kept, all activations)
        for the current weights: a narrow layer that keeps its activations needs no Gram
        (:func:`~ibwidget.record.run.derives_distances`), computed on the caller's stream."""
        return self._snapshot_parts()

    def begin_snapshot(self) -> PendingSnapshot:
        """The snapshot of the current weights, enqueued: on a CUDA device on a side stream that starts after the
        work already queued on the caller's stream (the last optimizer step) and runs beside what the caller queues
        next (validation), with no host synchronisation; elsewhere it is taken at :meth:`PendingSnapshot.result`.
        Until that call the caller must not change the weights (the engine calls it before the next epoch)."""
        if self.device.type != "cuda":
            return PendingSnapshot(self._snapshot_parts)
        caller = torch.cuda.current_stream(self.device)
        if self._side_stream is None:
            self._side_stream = torch.cuda.Stream(self.device)
        side = self._side_stream
        side.wait_stream(caller)
        with torch.cuda.stream(side):
            parts = self._snapshot_parts()
        done = torch.cuda.Event()
        done.record(side)
        return PendingSnapshot(lambda: parts, done, self.device)

    def _snapshot_parts(self) -> SnapshotParts:
        acts, output = self._activations()
        kept = {n: a for n, a in acts.items() if self._keeps(a.shape[1])}
        grams = {n: _kernels.gram(a) for n, a in acts.items() if not self._derives(a.shape[1])}
        return grams, output, kept, acts

    def _keeps(self, dim: int, m: int | None = None) -> bool:
        return self.keep_activations == "all" or (self.keep_activations == "narrow" and dim < (m or self.m))

    def _derives(self, dim: int, m: int | None = None) -> bool:
        return self._keeps(dim, m) and derives_distances(dim, m or self.m)

    def bytes_per_epoch(self, probe: int | None = None) -> int:
        """Bytes one snapshot adds to the run, all float32 (probed once if unknown): per layer its kept activations
        (m d) and, unless those hold its Gram, the packed squared distances and squared norms (m(m-1)/2 + m); plus
        the model's output on the probe (m C). ``probe``: the same for a probe of that size instead of m."""
        if self.layer_dims is None:
            self._activations()
        assert self.layer_dims is not None and self.output_dim is not None
        m = probe or self.m
        P = m * (m - 1) // 2
        per_layer = sum(
            (m * d if self._keeps(d, m) else 0) + (0 if self._derives(d, m) else P + m) for d in self.layer_dims
        )
        return 4 * (per_layer + m * self.output_dim)

    def _bytes_once(self) -> int:
        """Bytes a run holds whatever its length: the probe inputs and their packed distances and norms."""
        return 4 * (self.probe_x[0].numel() * self.m + self.m * (self.m - 1) // 2 + self.m)

    def check_budget(self, total_snapshots: int) -> None:
        """Refuse, with advice, a run whose snapshots would exceed the memory budget."""
        need = self._bytes_once() + self.bytes_per_epoch() * int(total_snapshots)
        if need > self.memory_budget:
            smaller = ", ".join(
                f"probe={m}: {self.bytes_per_epoch(m) / 2**20:.1f} MiB" for m in (self.m // 2, self.m // 4) if m >= 4
            )
            raise MemoryError(
                f"recording {len(self.layers)} layers and the model's {self.output_dim}-wide output on a probe of "
                f"{self.m} for {total_snapshots} snapshots needs {need / 2**20:.0f} MiB, over the memory budget of "
                f"{self.memory_budget / 2**20:.0f} MiB ({self.bytes_per_epoch() / 2**20:.1f} MiB a snapshot; with a "
                f"smaller probe, {smaller}: a layer keeps m(m-1)/2 distances, a narrow one its m x width "
                "activations instead). Use a smaller probe, track fewer layers (layers=[...]), "
                "fewer epochs or snapshots (every_n_epochs=..., snapshot_epochs=[...]), or raise memory_budget=..."
            )
