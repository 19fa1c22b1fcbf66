"""Run files, schemas 2 and 3: an append-only log of framed, checksummed records (no pickle, no locks on the data).

Why an own record log, not a zip, Arrow IPC or zarr: a zip's directory sits at the end (an append rewrites it, and a
crash mid-append loses the whole file); zarr is a folder of many files (no single shareable file, and a reader can
catch a half-updated chunk set); an Arrow IPC stream appends well but adds a heavy dependency and has no per-message
checksum. A log of records, each written with one ``write`` then ``fsync``, makes an append cost that epoch only,
lets a crash at any instant lose at most the record in flight (its checksum or length gives it away), and lets a
reader in another process take the complete records and stop at the first incomplete one, with nothing but plain
reads and writes (it works on NFS and Lustre, where ``flock`` and shared memory do not).

Layout: the 8 bytes :data:`MAGIC`, then records. A record is a 16-byte frame, ``<BxxxIQ``: kind, CRC-32 of the
payload, payload length; then the payload: a little-endian u32 length, a UTF-8 JSON object, then the ``.npy``
blobs its ``"arrays"`` list declares (``[[key, nbytes], ...]``, no pickle). Kinds: :data:`HEADER` (once, first: the
run's name, layers, class count, config, probe inputs and labels) and :data:`EPOCH` (an epoch's ``logs``, and, when
it was snapshotted, its packed distances, norms, model output and optional per-epoch arrays). Readers skip record
kinds and array keys they do not know, so later versions can add per-epoch fields without a new schema. Schema 3
changes what ``dist`` and ``norms`` hold: the rows of the layers the header does not list as ``derived_layers``
(those keep their activations only, which hold their Gram in less room); a schema-2 header has none.

A second writer on one path is refused by an ``O_EXCL`` sidecar lock file (``<name>.lock``) naming host and pid.
"""

from __future__ import annotations

import io
import json
import os
import socket
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FORMAT = "ibwidget.record.run"
SCHEMA_VERSION = 3
MAGIC = b"IBRUN\x002\n"  #: the first 8 bytes of a run file of schema 2 or 3
HEADER, EPOCH = 1, 2  #: record kinds
_FRAME = struct.Struct("<BxxxIQ")
MAX_JSON_BYTES = 64 * 1024**2  #: a record's JSON part is refused beyond this, before it is read
MAX_HEADER_BYTES = 2 * 1024**3  #: the header record (JSON and probe arrays) is refused beyond this
_NPY_HEADER_MAX = 10_000


class LogError(ValueError):
    """A run file that is not a readable record log (schema 2 or 3), said in words."""


@dataclass
class Record:
    """One record's kind, JSON object and arrays (by key)."""

    kind: int
    meta: dict
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------ encoding


def encode(kind: int, meta: dict, arrays: dict[str, np.ndarray] | None = None) -> bytes:
    """A record's bytes: frame, then payload (JSON declaring the arrays, then their ``.npy`` blobs)."""
    blobs = []
    declared = []
    for key, arr in (arrays or {}).items():
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
        blobs.append(buf.getvalue())
        declared.append([key, len(blobs[-1])])
    text = json.dumps({**meta, "arrays": declared}, allow_nan=True).encode()
    payload = b"".join([struct.pack("<I", len(text)), text, *blobs])
    return _FRAME.pack(kind, zlib.crc32(payload), len(payload)) + payload


def decode(kind: int, payload: bytes, where: str) -> Record:
    """A record from its payload (checksum already verified); malformed content raises :class:`LogError`."""
    if len(payload) < 4:
        raise LogError(f"{where}: a record too short to hold its JSON length.")
    (n,) = struct.unpack_from("<I", payload)
    if n > MAX_JSON_BYTES or 4 + n > len(payload):
        raise LogError(f"{where}: a record declares {n} bytes of JSON, more than it holds.")
    try:
        meta = json.loads(payload[4 : 4 + n])
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise LogError(f"{where}: a record's JSON is corrupted ({type(exc).__name__}).") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("arrays", []), list):
        raise LogError(f"{where}: a record's JSON is not an object with an 'arrays' list.")
    arrays: dict[str, np.ndarray] = {}
    offset = 4 + n
    for entry in meta.pop("arrays", []):
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str) and is_int(entry[1])):
            raise LogError(f"{where}: a record declares an array as {str(entry)[:60]!r}, not [key, nbytes].")
        key, nbytes = entry
        if nbytes < 0 or offset + nbytes > len(payload):
            raise LogError(f"{where}: the array {key[:40]!r} declares {nbytes} bytes, more than the record holds.")
        arrays[key] = _npy(memoryview(payload)[offset : offset + nbytes], f"{where}, array {key[:40]!r}")
        offset += nbytes
    if offset != len(payload):
        raise LogError(f"{where}: a record holds {len(payload) - offset} bytes its JSON does not declare.")
    return Record(kind, meta, arrays)


def _npy(blob: memoryview, where: str) -> np.ndarray:
    fh = io.BytesIO(blob)
    try:
        version = np.lib.format.read_magic(fh)
        readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in readers:
            raise ValueError(f"unsupported .npy version {version}")
        shape, fortran, dtype = readers[version](fh, max_header_size=_NPY_HEADER_MAX)
    except (ValueError, SyntaxError) as exc:
        raise LogError(f"{where} is corrupted ({exc}).") from None
    if fortran or dtype.hasobject or dtype.kind not in "fiub":
        raise LogError(f"{where} has dtype {dtype}; a run file holds plain numbers only.")
    start = fh.tell()
    count = int(np.prod(shape, dtype=np.int64))
    if count < 0 or start + count * dtype.itemsize != len(blob):
        raise LogError(f"{where} declares {len(blob) - start} bytes of data but its header says {shape} {dtype}.")
    return np.frombuffer(blob[start:], dtype=dtype).reshape(shape).copy()


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# ------------------------------------------------------------------------------------------ reading


def is_log(path: Path) -> bool:
    """Whether ``path`` starts like a record-log run file (schema 2 or 3)."""
    with open(path, "rb") as fh:
        return fh.read(len(MAGIC)) == MAGIC


class LogReader:
    """Reads the complete records of a run file, from where it stopped last time: a file another process is
    appending to yields each record once it is whole (an incomplete or torn tail is left for later, never an
    error)."""

    def __init__(self, path: os.PathLike | str):
        self.path = Path(path)
        self.offset = 0  #: the end of the last complete record read
        self.header: Record | None = None

    def read(self) -> list[Record]:
        """The records completed since the last call."""
        try:
            fh = open(self.path, "rb")  # noqa: SIM115 - closed below; FileNotFoundError propagates
        except IsADirectoryError:
            raise LogError(f"{self.path} is a folder, not a run file.") from None
        with fh:
            size = os.fstat(fh.fileno()).st_size
            if self.offset == 0:
                start = fh.read(len(MAGIC))
                if len(start) < len(MAGIC):
                    return []  # being created
                if start != MAGIC:
                    raise LogError(f"{self.path} is not a readable ibwidget run file (neither schema 1 nor 2).")
                self.offset = len(MAGIC)
            out = []
            for record, end in self._records(fh, size):
                out.append(record)
                self.offset = end
            return out

    def _records(self, fh, size: int) -> Iterator[tuple[Record, int]]:
        offset = self.offset
        while offset + _FRAME.size <= size:
            fh.seek(offset)
            kind, crc, length = _FRAME.unpack(fh.read(_FRAME.size))
            limit = MAX_HEADER_BYTES if self.header is None else self._epoch_limit()
            if length > limit:
                raise LogError(f"{self.path}: a record at byte {offset} declares {length} bytes (at most {limit}).")
            end = offset + _FRAME.size + length
            if end > size:
                return  # not written yet (or torn): a later read, or a resume, sees it
            payload = fh.read(length)
            if len(payload) != length or zlib.crc32(payload) != crc:
                if end == size:
                    return  # the last record, torn by a crash mid-write
                raise LogError(f"{self.path}: the record at byte {offset} fails its checksum; the file is corrupted.")
            where = f"{self.path} (record at byte {offset})"
            if self.header is None and kind != HEADER:
                raise LogError(f"{where}: the first record is not the run's header.")
            if kind in (HEADER, EPOCH):
                record = decode(kind, payload, where)
                if kind == HEADER:
                    if self.header is not None:
                        raise LogError(f"{where}: a second header record.")
                    self.header = record
                yield record, end
            offset = end  # a kind this version does not know: skipped

    def _epoch_limit(self) -> int:
        """The most bytes an epoch record may take: its arrays at the header's sizes, with room for its JSON."""
        assert self.header is not None
        meta, probe = self.header.meta, self.header.arrays.get("probe_x")
        m = int(probe.shape[0]) if probe is not None else 0
        L = len(meta.get("layer_names", []))
        dims = meta.get("layer_dims", [])
        acts = sum(m * int(d) for d in dims if is_int(d))
        classes = int(meta.get("output_width", m)) if is_int(meta.get("output_width", m)) else m
        floats = L * (m * (m - 1) // 2 + m) + acts + m * max(classes, 1)
        return 8 * floats + MAX_JSON_BYTES + 1024 * (L + 16) + 64 * 1024**2  # extra per-epoch fields, bounded


# ------------------------------------------------------------------------------------------ writing


def append(fd: int, data: bytes) -> None:
    """Write all of ``data`` at the end of the file open as ``fd`` (O_APPEND), then flush it to the disk."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
    os.fsync(fd)


class WriterLock:
    """``<path>.lock``, created with ``O_EXCL``: one writer per run file, across processes and hosts.

    The lock file holds ``{"host", "pid", "since"}``. A lock left by a process of this host that no longer runs is
    stale and taken over; one from another host cannot be checked from here and is refused (delete the lock file
    once that job is gone). ``O_EXCL`` is atomic on local file systems and on NFS v3 and later; on older NFS
    clients two writers could both succeed.
    """

    def __init__(self, path: Path):
        self.path = path.with_name(path.name + ".lock")
        self.held = False

    def acquire(self) -> None:
        body = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}).encode()
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if self._stale():
                    self.path.unlink(missing_ok=True)
                    continue
                raise RuntimeError(self._refusal()) from None
            try:
                os.write(fd, body)
                os.fsync(fd)
            finally:
                os.close(fd)
            self.held = True
            return
        raise RuntimeError(self._refusal())

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def owner(self) -> dict:
        try:
            owner = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return owner if isinstance(owner, dict) else {}

    def _stale(self) -> bool:
        owner = self.owner()
        if owner.get("host") != socket.gethostname() or not is_int(owner.get("pid")):
            return False
        try:
            os.kill(owner["pid"], 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def _refusal(self) -> str:
        owner = self.owner()
        who = f"pid {owner.get('pid')} on {owner.get('host')}" if owner else "another writer"
        run_file = self.path.with_name(self.path.name[: -len(".lock")])
        return (
            f"{run_file} is being written by {who} (lock file {self.path}). One writer per run file: choose another "
            "path, or, if that job is gone (a crash on another host), delete the lock file and retry."
        )
