"""Schema-1 run files (a zip of ``meta.json`` and ``.npy`` arrays), as ibwidget wrote them before schema 2: the
files that must still load."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ibwidget.record import _runfile


def write_schema1(run, path) -> Path:
    """Write ``run`` the way schema-1 ``Run.save`` did (same members, same layout)."""
    snap = run.snapshots()
    n = snap.num_snapshots
    meta = {
        "name": run.name,
        "layer_names": list(run.layer_names),
        "layer_dims": list(run.layer_dims),
        "num_classes": run.num_classes,
        "epochs": list(snap.epochs),
        "history": {k: list(v) for k, v in snap.history.items()},
        "config": _runfile.jsonable(run.config),
        "output_is_probabilities": run.output_is_probabilities,
        "activations": sorted(snap.activations),
        "custom_dynamics": sorted(run.custom_dynamics),
    }
    arrays = {"probe_x": run.probe_x.cpu().numpy(), "probe_labels": run.probe_labels.cpu().numpy()}
    if n:
        arrays["outputs"] = snap.outputs.cpu().numpy()
    arrays["dist"] = snap.dist.cpu().numpy()
    arrays["norms"] = snap.norms.cpu().numpy()
    for i, name in enumerate(run.layer_names):
        if name in snap.activations:
            arrays[f"acts_{i}"] = snap.activations[name].cpu().numpy()
    for k, name in enumerate(meta["custom_dynamics"]):
        arrays[f"custom_{k}"] = np.asarray(run.custom_dynamics[name], dtype=np.float64)
    if run.batch_dynamics:
        arrays["batch_dynamics"] = np.concatenate([np.asarray(b, np.float64) for b in run.batch_dynamics])
        arrays["batch_counts"] = np.asarray([len(b) for b in run.batch_dynamics], dtype=np.int64)
    return _runfile.write(path, meta, arrays)
