"""Following run files that other processes write: a file, or a folder whose new ``.ibrun`` files join as they appear.

A :class:`Follower` polls in a daemon thread (plain reads, so it works on network file systems): each complete epoch
appended to a followed file is appended to that file's :class:`~ibwidget.Run`, and its callback says what changed.
The views (``RunView.follow``, ``PlaneView.follow``) take it from there.
"""

from __future__ import annotations

import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

from ibwidget.measure._typing import PathLike
from ibwidget.record import _runlog, runfile
from ibwidget.record.run import Run

__all__ = ["Follower", "SUFFIX"]

SUFFIX = ".ibrun"  #: the run files a followed folder is scanned for

#: ``on_change(new_runs, grew)``: runs that appeared (a folder's new files), and whether any run gained epochs
ChangeListener = Callable[[list[Run], bool], None]


class Follower:
    """The runs in ``source`` (a run file, perhaps not yet created, or a folder of them), kept up to date by
    :meth:`scan`, or every ``interval`` seconds in a thread once started (:meth:`start`). A file that is not a
    readable run yet (being created, or not a run file at all) is skipped and tried again at the next scan."""

    def __init__(self, source: PathLike, interval: float = 0.5):
        self.source = Path(source)
        if not self.source.exists() and not self.source.parent.is_dir():
            raise FileNotFoundError(
                f"nothing to follow at {self.source}: pass a run file (one a job is about to write will do) or a "
                "folder of them."
            )
        self.interval = float(interval)
        self.runs: list[Run] = []
        self.problems: dict[Path, str] = {}  #: files skipped at the last scan, and why
        self._tails: dict[Path, runfile.RunTail | None] = {}  # None: a schema-1 file, read once
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _files(self) -> list[Path]:
        if self.source.is_dir():
            return sorted(p for p in self.source.iterdir() if p.suffix == SUFFIX and p.is_file())
        return [self.source] if self.source.exists() else []  # a run file a job has not created yet

    def scan(self) -> tuple[list[Run], bool]:
        """One pass: read what every followed file gained; returns (the runs that appeared, whether any grew)."""
        added: list[Run] = []
        grew = False
        for path in self._files():
            try:
                if path not in self._tails:
                    if zipfile.is_zipfile(path):  # schema 1: written whole, never appended
                        added.append(runfile.load(path))
                        self._tails[path] = None
                        continue
                    self._tails[path] = runfile.RunTail(path)
                tail = self._tails[path]
                if tail is None:
                    continue
                had_run = tail.run is not None
                new = tail.poll()
                if tail.run is not None and not had_run:
                    added.append(tail.run)
                elif new:
                    grew = True
                self.problems.pop(path, None)
            except (ValueError, OSError, _runlog.LogError) as exc:
                self.problems[path] = str(exc)  # e.g. a stray file in the folder; retried at the next scan
                tail = self._tails.get(path)
                if tail is not None and tail.run is None:
                    del self._tails[path]
        self.runs += added
        return added, grew

    def wait_for_runs(self, timeout: float | None = 60.0) -> list[Run]:
        """Scan until at least one run is readable (or ``timeout`` seconds pass: ``TimeoutError``)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self.scan()
            if self.runs:
                return list(self.runs)
            if deadline is not None and time.monotonic() >= deadline:
                why = "; ".join(f"{p.name}: {text}" for p, text in self.problems.items()) or "no .ibrun file yet"
                raise TimeoutError(f"no readable run in {self.source} after {timeout} s ({why}).")
            time.sleep(min(self.interval, 0.2))

    def start(self, on_change: ChangeListener) -> None:
        """Scan every ``interval`` seconds in a daemon thread, calling ``on_change`` when something changed."""
        if self._thread is not None:
            raise RuntimeError("this follower already runs.")

        def loop() -> None:
            while not self._stop.wait(self.interval):
                added, grew = self.scan()
                if added or grew:
                    on_change(added, grew)

        self._thread = threading.Thread(target=loop, name="ibwidget-follow", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop following (the runs keep what they have)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()
