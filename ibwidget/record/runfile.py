"""A :class:`~ibwidget.record.run.Run` as a file: saved whole, appended epoch by epoch, read while it grows.

:class:`RunWriter` appends each new epoch of a run to its file as it is recorded (one record, one ``fsync``);
:class:`RunTail` reads a file another process is writing and appends its new epochs to a Run; :func:`save` writes a
finished run as one schema-3 file, atomically; :func:`load` reads schema 1 (the zip of earlier versions), 2 and 3
(3 adds the header's ``derived_layers``: layers whose records hold activations, no distances). The
format itself is :mod:`ibwidget.record._runlog`. Everything here goes through the Run's public interface.
"""

from __future__ import annotations

import math
import os
import zipfile
from itertools import zip_longest
from pathlib import Path

import numpy as np
import torch

from ibwidget._vocabulary import DIAGNOSTICS
from ibwidget.measure._typing import PathLike
from ibwidget.record import _runfile, _runlog
from ibwidget.record._atomic import atomic_write, fsync_directory

__all__ = ["RunWriter", "RunTail", "save", "load", "same_configuration"]

# ------------------------------------------------------------------------------------------ run -> records


def _header(run) -> bytes:
    snap = run.snapshots()
    meta = {
        "format": _runlog.FORMAT,
        "schema_version": _runlog.SCHEMA_VERSION,
        "name": run.name,
        "layer_names": list(run.layer_names),
        "layer_dims": list(run.layer_dims),
        "num_classes": run.num_classes,
        "config": _runfile.jsonable(run.config),
        "output_is_probabilities": run.output_is_probabilities,
        "activations": sorted(snap.activations),
        "derived_layers": [run.layer_names[i] for i in snap.derived_layers],
        "output_width": int(snap.outputs.shape[-1]) if snap.num_snapshots else 0,
    }
    arrays = {"probe_x": _host(run.probe_x), "probe_labels": _host(run.probe_labels)}
    return _runlog.encode(_runlog.HEADER, meta, arrays)


def _epoch_records(run, snapshots: range, logs: range) -> list[bytes]:
    """Records for snapshot indices ``snapshots`` and history rows ``logs``, paired in order (an epoch's snapshot
    and its logs share one record, so one write holds both)."""
    snap = run.snapshots()
    records = []
    for s, row in zip_longest(snapshots, logs):
        meta: dict = {"snapshot": None, "logs": None}
        arrays: dict[str, np.ndarray] = {}
        if s is not None:
            custom = sorted(name for name, values in run.custom_dynamics.items() if len(values) > s)
            diagnostics = run.diagnostics_at(s)
            meta["snapshot"] = {"epoch": snap.epochs[s], "custom": custom, "diagnostics": sorted(diagnostics)}
            arrays["dist"] = _host(snap.stored_dist[s])  # the stored layers' only: derived ones keep activations
            arrays["norms"] = _host(snap.stored_norms[s])
            arrays["output"] = _host(snap.outputs[s])
            for i, name in enumerate(run.layer_names):
                if name in snap.activations:
                    arrays[f"acts/{i}"] = _host(snap.activations[name][s])
            for name in custom:
                arrays[f"custom/{name}"] = np.asarray(run.custom_dynamics[name][s], dtype=np.float64)
            for name, values in diagnostics.items():
                arrays[f"diag/{name}"] = values
        if row is not None:
            if row < _logged(snap):
                meta["logs"] = {key: _number(values[row]) for key, values in snap.history.items() if row < len(values)}
            if row < len(run.batch_dynamics):
                arrays["batch_dynamics"] = np.asarray(run.batch_dynamics[row], dtype=np.float64)
        records.append(_runlog.encode(_runlog.EPOCH, meta, arrays))
    return records


def _logged(snap) -> int:
    """History rows (trained epochs with logs)."""
    return len(snap.history.get("loss", []))


def _rows(run, snap) -> int:
    """Per-epoch rows of a run: its history rows, or its per-batch dynamics where those are longer."""
    return max(_logged(snap), len(run.batch_dynamics))


def _host(t) -> np.ndarray:
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def _number(v: float) -> float | None:
    return None if math.isnan(v) else float(v)


def save(run, path: PathLike) -> Path:
    """Write ``run`` as one schema-3 file, atomically (see :func:`~ibwidget.record._atomic.atomic_write`)."""
    path = Path(path)
    with atomic_write(path) as fh:
        fh.write(_runlog.MAGIC)
        fh.write(_header(run))
        snap = run.snapshots()
        for record in _epoch_records(run, range(snap.num_snapshots), range(_rows(run, snap))):
            fh.write(record)
    return path


# ------------------------------------------------------------------------------------------ records -> run


class RunTail:
    """The run in a file, read so far; :meth:`poll` appends the epochs written since (a file still being written
    yields its complete epochs only, and an incomplete tail is read once it is whole)."""

    def __init__(self, path: PathLike, device: str | torch.device = "cpu"):
        self.path = Path(path)
        self.device = torch.device(device)
        self.run = None  #: the Run, once the file's header has been read
        self._reader = _runlog.LogReader(self.path)

    @property
    def offset(self) -> int:
        """Where the complete records read so far end (a torn or unfinished tail starts there)."""
        return self._reader.offset

    def poll(self) -> int:
        """Read what was appended since the last call into :attr:`run`; returns the number of new snapshots."""
        new = 0
        for record in self._reader.read():
            where = f"{self.path} (epoch record {record.meta.get('snapshot')})"
            if record.kind == _runlog.HEADER:
                self.run = _run_from_header(record, self.path, self.device)
            else:
                new += _apply(self.run, record, where)
        return new


def _run_from_header(record, path: Path, device: torch.device):
    from ibwidget.record.run import Run  # the class this module serves; imported here, where it is needed

    meta = record.meta
    if meta.get("format") != _runlog.FORMAT:
        raise ValueError(f"{path} is not an ibwidget run file (format {str(meta.get('format'))[:80]!r}).")
    version = meta.get("schema_version")
    if not _runlog.is_int(version) or version < 2:
        raise ValueError(f"{path} has an invalid schema_version {str(version)[:40]!r}; the file is corrupted.")
    if version > _runlog.SCHEMA_VERSION:
        raise ValueError(
            f"{path} was written with run-file schema {version}, newer than this ibwidget reads "
            f"({_runlog.SCHEMA_VERSION}); upgrade ibwidget to open it."
        )
    try:
        _runfile.check_meta(meta, header=True)
    except _runfile.Invalid as exc:
        raise ValueError(f"{path} has an invalid header: {exc}") from None
    x, labels = record.arrays.get("probe_x"), record.arrays.get("probe_labels")
    if x is None or labels is None or x.dtype.kind != "f" or labels.dtype.kind not in "iu":
        raise ValueError(f"{path}: the header lacks the probe inputs (floats) or labels (integers).")
    if x.ndim < 1 or x.shape[0] < 4 or labels.shape != (x.shape[0],) or not np.isfinite(x).all():
        raise ValueError(f"{path}: the probe has shape {x.shape} with labels {labels.shape}; corrupted.")
    if labels.size and (labels.min() < 0 or labels.max() >= meta["num_classes"]):
        raise ValueError(f"{path}: the probe labels are outside 0..{meta['num_classes'] - 1} (num_classes).")
    return Run(
        meta["name"],
        meta["layer_names"],
        meta["layer_dims"],
        torch.from_numpy(x),
        torch.from_numpy(labels.astype(np.int64)),
        num_classes=meta["num_classes"],
        config=meta.get("config", {}),
        device=device,
        output_is_probabilities=meta.get("output_is_probabilities", False),
        derived_layers=meta.get("derived_layers", []),  # schema 2 stored every layer's distances
    )


def _apply(run, record, where: str) -> int:
    """Append one epoch record to ``run``; returns 1 for a snapshot, else 0. Shapes are checked against the run."""
    meta, arrays = record.meta, record.arrays
    snapshot, logs = meta.get("snapshot"), meta.get("logs")
    added = 0
    if snapshot is not None:
        if not isinstance(snapshot, dict) or not _runlog.is_int(snapshot.get("epoch")) or snapshot["epoch"] < 0:
            raise ValueError(f"{where}: a snapshot without a valid epoch number.")
        m, L, S = run.m, len(run.layer_names), len(run.stored_layers)
        dist = _checked(arrays, "dist", (S, m * (m - 1) // 2), where, non_negative=True)
        norms = _checked(arrays, "norms", (S, m), where, non_negative=True)
        output = _checked(arrays, "output", None, where)
        if output.ndim != 2 or output.shape[0] != m:
            raise ValueError(f"{where}: the model output has shape {output.shape}, expected ({m}, classes).")
        acts = {}
        for i, name in enumerate(run.layer_names):
            if f"acts/{i}" in arrays or name in (run.derived_layers or []):  # a derived layer's are required
                acts[name] = torch.from_numpy(_checked(arrays, f"acts/{i}", (m, run.layer_dims[i]), where))
        custom = snapshot.get("custom", [])
        if not isinstance(custom, list) or not all(isinstance(n, str) for n in custom):
            raise ValueError(f"{where}: 'custom' must list names.")
        run.add_packed_snapshot(
            snapshot["epoch"], torch.from_numpy(dist), torch.from_numpy(norms), torch.from_numpy(output), acts
        )
        for name in custom:
            values = _checked(arrays, f"custom/{name}", (L, 2), where, finite=False, dtype=np.float64)
            run.custom_dynamics.setdefault(name, []).append(values)
        diagnostics = snapshot.get("diagnostics", [])
        if not isinstance(diagnostics, list) or not all(isinstance(n, str) for n in diagnostics):
            raise ValueError(f"{where}: 'diagnostics' must list names.")
        known = [n for n in diagnostics if n in DIAGNOSTICS]  # names a later version adds are skipped
        if known:
            run.add_diagnostics(
                {n: _checked(arrays, f"diag/{n}", (L,), where, finite=False, dtype=np.float64) for n in known}
            )
        added = 1
    if logs is not None:
        if not isinstance(logs, dict) or not all(v is None or _runfile.is_number(v) for v in logs.values()):
            raise ValueError(f"{where}: the logs must map names to numbers.")
        run.log_epoch({k: math.nan if v is None else float(v) for k, v in logs.items()})
    if "batch_dynamics" in arrays:
        batch = arrays["batch_dynamics"]
        if batch.dtype.kind != "f" or batch.ndim != 4 or batch.shape[2:] != (len(run.layer_names), 2):
            raise ValueError(f"{where}: batch_dynamics has shape {batch.shape}, expected (batches, e, L, 2).")
        run.batch_dynamics.append(batch.astype(np.float64))
    return added


def _checked(
    arrays: dict, key: str, shape, where: str, non_negative: bool = False, finite: bool = True, dtype=np.float32
) -> np.ndarray:
    arr = arrays.get(key)
    if arr is None:
        raise ValueError(f"{where}: the array {key} is missing.")
    if arr.dtype.kind != "f" or (shape is not None and arr.shape != shape):
        raise ValueError(f"{where}: the array {key} is {arr.dtype} {arr.shape}, expected floats of shape {shape}.")
    if finite and not np.isfinite(arr).all():
        raise ValueError(f"{where}: the array {key} holds NaN or infinite values; the file is corrupted.")
    if non_negative and (arr < 0).any():
        raise ValueError(f"{where}: the array {key} holds negative squared distances or norms; corrupted.")
    return np.ascontiguousarray(arr, dtype=dtype)


def load(path: PathLike, device: str | torch.device = "cpu"):
    """The run in ``path``, schema 1, 2 or 3; of a file still being written, the epochs complete so far."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no run file at {path}; save one with run.save(path).")
    if zipfile.is_zipfile(path):
        from ibwidget.record.run import Run

        return Run.from_schema1(*_runfile.read(path), device=device)
    return _read_log(path, device).run


def _read_log(path: Path, device: str | torch.device) -> RunTail:
    """A record-log file (schema 2 or 3) read to the end of its complete records (``.run`` the run, ``.offset``
    where they end)."""
    tail = RunTail(path, device)
    try:
        tail.poll()
    except _runlog.LogError as exc:
        raise ValueError(str(exc)) from None
    if tail.run is None:
        raise ValueError(
            f"{path} is not a readable ibwidget run file: it holds no complete header (truncated or corrupted, or its "
            "writer has only just created it)."
        )
    return tail


def same_configuration(run, other) -> list[str]:
    """What differs between two runs' configurations (name, layers, class count, probe), as phrases; [] if none."""
    diffs = []
    for what in ("name", "layer_names", "num_classes"):
        if getattr(run, what) != getattr(other, what):
            diffs.append(f"{what} {getattr(other, what)!r} (file) vs {getattr(run, what)!r} (now)")
    if run.probe_x.shape != other.probe_x.shape or not torch.equal(run.probe_x.cpu(), other.probe_x.cpu()):
        diffs.append("the probe inputs differ")
    elif not torch.equal(run.probe_labels.cpu(), other.probe_labels.cpu()):
        diffs.append("the probe labels differ")
    return diffs


# ------------------------------------------------------------------------------------------ appending


class RunWriter:
    """Appends a run's epochs to ``path`` as they are recorded: :meth:`write_new` after each epoch.

    :meth:`acquire` takes the path's lock (one writer per path: a sidecar ``O_EXCL`` lock file, see
    :class:`~ibwidget.record._runlog.WriterLock`) and :meth:`release` gives it back; writes happen in between. The
    file is created (parent folders too) at the first :meth:`write_new`, with the run's header; ``resume`` appends to
    an existing file instead (a torn last record, left by a crash, is cut off first). Each append is one ``write``
    and one ``fsync`` (about a millisecond on a local disk, more on network file systems): a crash loses at most the
    epoch being written, and a power loss what the file system had not yet made durable.
    """

    def __init__(self, path: PathLike, resume: bool = False):
        self.path = Path(path)
        self.resume = resume and self.path.exists()
        if self.path.is_dir():
            raise ValueError(f"{self.path} is a folder; pass a run file path such as runs/mine.ibrun.")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PermissionError(f"cannot create the folder {self.path.parent} for {self.path.name}: {exc}") from None
        if not os.access(self.path.parent, os.W_OK):
            raise PermissionError(f"cannot write run files in {self.path.parent} (read-only?); choose another path.")
        self._lock = _runlog.WriterLock(self.path)
        self._fd: int | None = None
        self._snapshots = 0  # snapshots of the run already in the file
        self._rows = 0  # per-epoch rows (logs, per-batch dynamics) already in the file
        self._end: int | None = None  # where the records this writer knows of end (None: no file yet)
        self._torn_tail_allowed = False  # after a resume: bytes past _end are a crashed writer's torn record

    @property
    def held(self) -> bool:
        """Whether this writer holds the path's lock (and may write)."""
        return self._lock.held

    def acquire(self) -> None:
        """Take the path's lock (a no-op if held); another writer's lock is refused with who holds it."""
        if not self._lock.held:
            self._lock.acquire()

    def release(self) -> None:
        """Close the file and give the lock back (the file stays: a complete run, which a later acquire goes on)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._lock.release()

    def existing(self, device: str | torch.device = "cpu"):
        """The run already in the file when resuming, else None (a schema-1 file cannot be appended to: refused)."""
        if not self.resume:
            return None
        if zipfile.is_zipfile(self.path):
            raise ValueError(
                f"{self.path} is a schema-1 run file (a zip), which cannot be appended to: convert it with "
                "ib.load_run(path).save(path), then resume."
            )
        tail = _read_log(self.path, device)
        self._end, self._torn_tail_allowed = tail.offset, True
        return tail.run

    def adopt(self, run) -> None:
        """Go on with ``run``, which holds what the file holds: only its later epochs are appended."""
        self._snapshots = run.num_snapshots
        self._rows = _rows(run, run.snapshots())

    def write_new(self, run) -> None:
        """Append every epoch of ``run`` not yet in the file (creating it with the header first)."""
        if not self._lock.held:
            raise RuntimeError(f"write_new() without the lock of {self.path}; acquire() it first.")
        if self._fd is None:
            self._open(run)
        snap = run.snapshots()
        rows = _rows(run, snap)
        records = _epoch_records(run, range(self._snapshots, snap.num_snapshots), range(self._rows, rows))
        if records:
            assert self._fd is not None
            data = b"".join(records)
            _runlog.append(self._fd, data)
            self._snapshots, self._rows = snap.num_snapshots, rows
            self._end = (self._end or 0) + len(data)

    def _open(self, run) -> None:
        """Open the file for appending: create it with the header, or go on where its known records end."""
        if self._end is not None and self.path.exists():  # resumed, or written before a release
            size = self.path.stat().st_size
            if size > self._end and self._torn_tail_allowed:  # a crash mid-append: cut its torn record off
                with open(self.path, "r+b") as fh:
                    fh.truncate(self._end)
                    os.fsync(fh.fileno())
            elif size != self._end:
                raise RuntimeError(
                    f"{self.path} changed since this recording last wrote it (another writer?); nothing was "
                    "overwritten. Record on with a new recording (resume=True) or to another path."
                )
        else:
            head = _runlog.MAGIC + _header(run)
            with atomic_write(self.path) as fh:  # the header appears whole or not at all
                fh.write(head)
            fsync_directory(self.path.parent)
            self._end = len(head)
        self._torn_tail_allowed = False
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)

    def __del__(self):
        if getattr(self, "_lock", None) is not None:
            self.release()
