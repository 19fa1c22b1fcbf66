"""Widget messages, timed: a recording comm replaces ipykernel's (import this module before ibwidget).

The widgets serialise their state exactly as in a kernel; only the socket write is skipped. Each message is kept as
(time, comm id, {state key: array shape or None}).
"""

from __future__ import annotations

import threading
import time

import comm

MESSAGES: list[tuple[float, str, dict]] = []
_LOCK = threading.Lock()


class _RecordingComm(comm.DummyComm):
    def publish_msg(self, msg_type, data=None, metadata=None, buffers=None, **keys):
        state = (data or {}).get("state", {})
        summary = {k: (tuple(v["shape"]) if isinstance(v, dict) and "shape" in v else None) for k, v in state.items()}
        with _LOCK:
            MESSAGES.append((time.perf_counter(), self.comm_id, summary))


comm.create_comm = lambda *args, **kwargs: _RecordingComm(*args, **kwargs)


def first_message(comm_id: str, after: float, key: str = "x", length: int | None = None) -> float | None:
    """The time of the first message on ``comm_id`` after ``after`` that sets ``key`` with at least ``length``
    points (an update that lags behind may bring several epochs at once), or None."""
    with _LOCK:
        for t, cid, summary in MESSAGES:
            shape = summary.get(key)
            if cid == comm_id and t >= after and key in summary and (length is None or (shape and shape[0] >= length)):
                return t
    return None
