"""Schema-1 ``.ibrun`` files: a zip of ``meta.json`` and ``.npy`` arrays (no pickle), read defensively.

Runs are saved as schema 3 now (:mod:`ibwidget.record.runfile`); this module still reads the files of earlier
versions, and :func:`write` writes one (for tests of that reading).

:class:`ibwidget.Run` says what goes in (``meta`` and ``arrays``); this module writes and reads them.

Reading trusts nothing in the file: ``meta.json`` is checked against a schema (a wrong type or value raises
``ValueError`` naming the field), every array's shape and dtype are read from its ``.npy`` header and checked
against what the metadata implies before any data is inflated (so a small file cannot claim gigabytes), members
the format does not know are never read, and array values are checked (finite, non-negative distances, labels
in range).
"""

from __future__ import annotations

import io
import json
import math
import zipfile
import zlib
from pathlib import Path

import numpy as np

from ibwidget.record._atomic import atomic_write

FORMAT = "ibwidget.record.run"
SCHEMA_VERSION = 1
MAX_META_BYTES = 64 * 1024**2  #: a larger meta.json is refused before it is read
_FLOAT = ("<f4", "<f8")
_INTEGER = ("<i8", "<i4")


def write(path, meta: dict, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``meta`` and ``arrays`` to ``path`` atomically (see :func:`ibwidget.record._atomic.atomic_write`)."""
    path = Path(path)
    with (
        atomic_write(path) as fh,
        zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf,
    ):
        zf.writestr("meta.json", json.dumps({"format": FORMAT, "schema_version": SCHEMA_VERSION, **meta}, indent=1))
        for key, arr in arrays.items():
            buf = io.BytesIO()
            np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
            zf.writestr(f"arrays/{key}.npy", buf.getvalue())
    return path


def read(path) -> tuple[dict, dict[str, np.ndarray]]:
    """``(meta, arrays)`` of a run file, checked; a damaged or hostile file raises ``ValueError`` saying why."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no run file at {path}; save one with run.save(path).")
    try:
        with zipfile.ZipFile(path) as zf:
            meta = _read_meta(zf, path)
            return meta, _read_arrays(zf, meta, path)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:  # zlib: damaged data, found before the CRC check
        raise ValueError(f"{path} is not a readable ibwidget run file (truncated or corrupted: {exc}).") from None
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(f"{path} is truncated or corrupted ({exc}).") from None


class Invalid(Exception):
    """What is wrong with a run file, said in words."""


# ----------------------------------------------------------------------------------------------- meta.json


def _read_meta(zf: zipfile.ZipFile, path: Path) -> dict:
    try:
        info = zf.getinfo("meta.json")
    except KeyError:
        raise ValueError(f"{path} is a zip archive but not an ibwidget run (no meta.json).") from None
    if info.file_size > MAX_META_BYTES:
        raise ValueError(f"{path} declares a {info.file_size}-byte meta.json (at most {MAX_META_BYTES}); corrupted.")
    try:
        meta = json.loads(zf.read(info))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ValueError(f"{path} has a corrupted meta.json ({type(exc).__name__}: {exc}).") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path} has a corrupted meta.json (a JSON {type(meta).__name__}, not an object).")
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not an ibwidget run file (format {str(meta.get('format'))[:80]!r}).")
    version = meta.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"{path} has an invalid schema_version {str(version)[:40]!r}; the file is corrupted.")
    if version > SCHEMA_VERSION:
        raise ValueError(
            f"{path} was written with run-file schema {version}, newer than this ibwidget reads ({SCHEMA_VERSION}); "
            "upgrade ibwidget to open it."
        )
    try:
        check_meta(meta)
    except Invalid as exc:
        raise ValueError(f"{path} has an invalid meta.json: {exc}") from None
    return meta


def check_meta(meta: dict, header: bool = False) -> None:
    """Types and ranges of every field a Run is built from (``header``: a schema-2 or 3 header, which has no epochs or
    history: those come in its epoch records)."""
    _expect(meta, "name", str)
    names = _expect(meta, "layer_names", list)
    if not names or not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
        raise Invalid("'layer_names' must be a non-empty list of distinct strings")
    dims = _expect(meta, "layer_dims", list)
    if len(dims) != len(names) or not all(is_int(d) and d >= 1 for d in dims):
        raise Invalid("'layer_dims' must hold one positive integer per layer")
    classes = meta.get("num_classes")
    if not (is_int(classes) and 1 <= classes <= 2**31):
        raise Invalid(f"'num_classes' must be a positive integer, got {str(classes)[:40]!r}")
    if header:
        width = meta.get("output_width")
        if not (is_int(width) and width >= 0):
            raise Invalid(f"'output_width' must be a non-negative integer, got {str(width)[:40]!r}")
    epochs = [] if header else _expect(meta, "epochs", list)
    if not all(is_int(e) and e >= 0 for e in epochs):
        raise Invalid("'epochs' must be a list of non-negative integers")
    history = {} if header else _expect(meta, "history", dict)
    for key, values in history.items():
        if not isinstance(values, list) or not all(v is None or is_number(v) for v in values):
            raise Invalid(f"history[{key[:40]!r}] must be a list of numbers")
    if not isinstance(meta.get("config", {}), dict):
        raise Invalid("'config' must be an object")
    if not isinstance(meta.get("output_is_probabilities", False), bool):
        raise Invalid("'output_is_probabilities' must be true or false")
    kept = meta.get("activations", [])
    if not isinstance(kept, list) or not all(isinstance(n, str) and n in names for n in kept):
        raise Invalid("'activations' must list tracked layer names")
    derived = meta.get("derived_layers", [])
    if not isinstance(derived, list) or not all(isinstance(n, str) and n in kept for n in derived):
        raise Invalid("'derived_layers' must list layers that keep their activations")
    custom = meta.get("custom_dynamics", [])
    if not isinstance(custom, list) or not all(isinstance(n, str) for n in custom):
        raise Invalid("'custom_dynamics' must be a list of names")


def _expect(meta: dict, key: str, kind: type):
    if key not in meta:
        raise Invalid(f"an incomplete run file: the field {key!r} is missing")
    value = meta.get(key)
    if not isinstance(value, kind):
        raise Invalid(f"{key!r} must be a JSON {kind.__name__}, got {type(value).__name__}")
    return value


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


# ----------------------------------------------------------------------------------------------- arrays


def _read_arrays(zf: zipfile.ZipFile, meta: dict, path: Path) -> dict[str, np.ndarray]:
    """The arrays the metadata calls for, each checked from its header before its data is inflated."""
    members = {i.filename: i for i in zf.infolist()}
    n, L = len(meta["epochs"]), len(meta["layer_names"])

    def read(key: str, dtypes, shape_ok, what: str, required: bool = True) -> np.ndarray | None:
        entry = f"arrays/{key}.npy"
        info = members.get(entry)
        if info is None:
            if required:
                raise ValueError(f"{path} is an incomplete run file: the array {key} is missing.")
            return None
        with zf.open(info) as fh:
            try:
                version = np.lib.format.read_magic(fh)
                read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
                if version not in read_header:
                    raise ValueError(f"unsupported .npy version {version}")
                shape, fortran, dtype = read_header[version](fh, max_header_size=10_000)
            except (ValueError, SyntaxError) as exc:
                raise ValueError(f"{path}: the array {entry} is corrupted ({exc}).") from None
            if dtype.str not in dtypes or fortran:
                raise ValueError(f"{path}: the array {entry} has dtype {dtype}, expected one of {', '.join(dtypes)}.")
            if not shape_ok(shape):
                raise ValueError(f"{path}: the array {entry} has shape {shape}, expected {what}.")
            count = math.prod(shape)
            if info.file_size != fh.tell() + count * dtype.itemsize:
                raise ValueError(
                    f"{path}: the array {entry} declares {info.file_size} bytes, but its header says {shape} {dtype}."
                )
            data = bytearray(count * dtype.itemsize)
            if fh.readinto(data) != len(data) or fh.read(1):  # reading to the end checks the CRC
                raise ValueError(f"{path}: the array {entry} is truncated.")
        return np.frombuffer(data, dtype=dtype).reshape(shape)

    arrays = {"probe_x": read("probe_x", _FLOAT, lambda s: len(s) >= 1 and s[0] >= 4, "(m >= 4, ...)")}
    m = arrays["probe_x"].shape[0]
    P = m * (m - 1) // 2
    arrays["probe_labels"] = read("probe_labels", _INTEGER, lambda s: s == (m,), f"({m},)")
    arrays["dist"] = read("dist", _FLOAT, lambda s: s == (n, L, P), f"({n}, {L}, {P})")
    arrays["norms"] = read("norms", _FLOAT, lambda s: s == (n, L, m), f"({n}, {L}, {m})")
    if n:
        arrays["outputs"] = read("outputs", _FLOAT, lambda s: len(s) == 3 and s[:2] == (n, m), f"({n}, {m}, classes)")
    for i, name in enumerate(meta["layer_names"]):
        if name in meta.get("activations", []):
            d = meta["layer_dims"][i]
            arrays[f"acts_{i}"] = read(f"acts_{i}", _FLOAT, lambda s, d=d: s == (n, m, d), f"({n}, {m}, {d})")
    for k, _ in enumerate(meta.get("custom_dynamics", [])):
        arrays[f"custom_{k}"] = read(f"custom_{k}", _FLOAT, lambda s: len(s) == 3 and s[1:] == (L, 2), f"(n, {L}, 2)")
    counts = read("batch_counts", _INTEGER, lambda s: len(s) == 1, "(epochs,)", required=False)
    if counts is not None:
        if (counts < 0).any():
            raise ValueError(f"{path}: batch_counts holds negative counts.")
        total = int(counts.sum())
        arrays["batch_counts"] = counts
        rows_ok = lambda s: len(s) == 4 and s[0] == total and s[2:] == (L, 2)  # noqa: E731
        arrays["batch_dynamics"] = read("batch_dynamics", _FLOAT, rows_ok, f"({total}, evaluators, {L}, 2)")
    elif "arrays/batch_dynamics.npy" in members:  # written before batch counts were stored: equal counts
        arrays["batch_dynamics"] = read(
            "batch_dynamics", _FLOAT, lambda s: len(s) == 5 and s[3:] == (L, 2), f"(epochs, batches, e, {L}, 2)"
        )
    _check_values(arrays, meta)
    return arrays


def _check_values(arrays: dict, meta: dict) -> None:
    for key, arr in arrays.items():
        if (key in ("probe_x", "dist", "norms", "outputs") or key.startswith("acts_")) and not np.isfinite(arr).all():
            raise ValueError(f"the run file's array {key} holds NaN or infinite values; it is corrupted.")
    for key in ("dist", "norms"):
        if (arrays[key] < 0).any():
            raise ValueError(f"the run file's array {key} holds negative squared distances or norms; it is corrupted.")
    labels = arrays["probe_labels"]
    if labels.size and (labels.min() < 0 or labels.max() >= meta["num_classes"]):
        raise ValueError(f"the run file's probe labels are outside 0..{meta['num_classes'] - 1} (num_classes).")


def jsonable(value):
    """Config values as JSON: numbers, strings, lists and dicts as they are; anything else by its repr."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return repr(value)
