"""The grids the server extension answers: one session per run file or folder, kept up to date as files grow.

A session is what ``PlaneView.follow`` builds in a kernel, held by the server instead: a
:class:`~ibwidget.record.follow.Follower` reads the epochs appended to the file (or the folder's files) and a
:class:`~ibwidget.widget._viewmodel.PlaneModel` computes their grid, the slot a viewer shows first and the others
behind it in its filler thread. Every function here blocks: the handlers call them in an executor, never on the
server's event loop. This module imports torch (through ibwidget); the package's ``__init__`` does not.
"""

from __future__ import annotations

import json
import struct
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ibwidget.plane._grid import GridBuilder, band_payload, checked_band_request, cka_payload
from ibwidget.plane._report import grid_html
from ibwidget.record._runfile import jsonable
from ibwidget.record.follow import SUFFIX, Follower
from ibwidget.widget._viewmodel import PlaneModel

__all__ = ["MAGIC", "RunProblem", "Sessions", "encode"]

MAGIC = b"IBWG"  #: first bytes of a grid answer: MAGIC, uint32 LE header length, header JSON, values, saturation
SLOT_WAIT_S = 60.0  #: how long an answer waits for the slot its viewer shows (the rest fill in behind)
REPORT_WAIT_S = 300.0  #: how long a report waits for the whole grid
MAX_SESSIONS = 8  #: sessions kept (least recently used first out); each holds its runs' snapshots


class RunProblem(Exception):
    """A path that holds no readable run: the message says what is wrong (shown in the viewer's tab)."""


def encode(header: dict, values: np.ndarray, saturation: np.ndarray) -> bytes:
    """``MAGIC``, the header's length (uint32 LE), the header (UTF-8 JSON, padded with spaces to a multiple of 4
    bytes), then the float32 LE values and saturation, as ``header["meta"]`` describes them."""
    text = json.dumps(header, separators=(",", ":"), allow_nan=False).encode("utf-8")
    text += b" " * (-(len(MAGIC) + 4 + len(text)) % 4)
    return b"".join(
        (
            MAGIC,
            struct.pack("<I", len(text)),
            text,
            np.ascontiguousarray(values, dtype="<f4").tobytes(),
            np.ascontiguousarray(saturation, dtype="<f4").tobytes(),
        )
    )


class _Session:
    """The runs at ``path`` (a run file or a folder of them) and their grid."""

    def __init__(self, path: Path):
        self.path = path
        self.identity = _identity(path)
        self.follower = Follower(path)
        runs, _ = self.follower.scan()
        if not runs:
            raise RunProblem(self._why_empty())
        self.model = PlaneModel(runs, GridBuilder(keep_targets=True), {})

    def _why_empty(self) -> str:
        if self.follower.problems:
            return "; ".join(f"{p.name}: {why}" for p, why in self.follower.problems.items())
        if self.path.is_dir():
            return f"the folder {self.path.name or '/'} holds no readable {SUFFIX} run files."
        return f"{self.path.name} holds no complete run yet (a job may be creating it): try again in a moment."

    def replaced(self) -> bool:
        """Whether the run file is another file than the one read (written anew, or shorter than it was)."""
        now = _identity(self.path)
        if self.path.is_dir() or now is None or self.identity is None:
            return now != self.identity
        (inode, size), (read_inode, read_size) = now, self.identity
        self.identity = now
        return inode != read_inode or size < read_size

    def update(self) -> None:
        """Read what the files gained; compute the new epochs of the viewed slots."""
        new_runs, _ = self.follower.scan()
        if new_runs:
            self.model.add_runs(new_runs)
        self.model.catch_up()

    def answer(self, slot: int | None) -> tuple[str, bytes]:
        """(ETag, grid answer) with ``slot`` (the viewer's σ) computed for every epoch, other slots as filled."""
        if slot is not None:
            self.model.view("lab", [slot])
        self.update()
        self.model.wait_idle(SLOT_WAIT_S, viewed_only=True)
        with self.model.lock:
            meta = self.model.meta()
            tag = f'"{self.model.version}-{self.model.fills}-{"-".join(map(str, self.model.counts))}"'
            header = {
                "meta": meta,
                "configs": [_jsonable(run.config) for run in self.model.runs],
                "problems": {p.name: why for p, why in self.follower.problems.items()},
            }
            return tag, encode(header, self.model.values, self.model.saturation)

    def band(self, request: dict) -> dict:
        """The chance floor of one selection (``request``: estimator, slot, target) of these runs' grid."""
        self.update()
        meta = self.model.meta()
        try:
            estimator, slot, target = checked_band_request(meta, request)
        except ValueError as exc:
            raise RunProblem(str(exc)) from exc
        return band_payload(self.model.runs, meta, estimator, slot, target)

    def cka(self) -> dict:
        """The runs' layer-to-layer CKA at every recorded epoch."""
        self.update()
        return cka_payload(self.model.runs)

    def report(self, title: str) -> str:
        """The one-file HTML report of every slot (waits for the filler)."""
        self.update()
        grid = self.model.whole_grid(REPORT_WAIT_S)
        if grid is None:
            raise RunProblem("the runs grew while their report was computed; try again once they pause or end.")
        return grid_html(grid, title=title, runs=self.model.runs)

    def close(self) -> None:
        self.model.close()


def _identity(path: Path) -> tuple[int, int] | None:
    """(inode, size) of a run file; None for a folder (its files are followed one by one) or a missing path."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return None if path.is_dir() else (stat.st_ino, stat.st_size)


def _jsonable(config: dict) -> dict:
    """The run's configuration as strict JSON: what a run file would write, with null for NaN and infinities."""
    return json.loads(json.dumps(jsonable(config)), parse_constant=lambda _: None)


class Sessions:
    """The server's sessions by real path, at most :data:`MAX_SESSIONS` (the least recently used is closed); a run
    file written anew in place (another inode, or shorter) gets a new session."""

    def __init__(self, limit: int = MAX_SESSIONS):
        self.limit = limit
        self._sessions: OrderedDict[Path, _Session] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: Path) -> _Session:
        with self._lock:
            session = self._sessions.pop(path, None)
        if session is not None and session.replaced():
            session.close()
            session = None
        if session is None:
            session = _Session(path)
        with self._lock:
            self._sessions[path] = session
            while len(self._sessions) > self.limit:
                _, old = self._sessions.popitem(last=False)
                old.close()
        return session

    def close(self) -> None:
        with self._lock:
            sessions, self._sessions = list(self._sessions.values()), OrderedDict()
        for session in sessions:
            session.close()
