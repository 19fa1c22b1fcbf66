"""A run-file writer in a child process: ``ib.record`` in a plain loop, saying after each epoch that
``snapshot()`` returned; optionally resuming, and holding the file open until told."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_WRITER = textwrap.dedent(
    """
    import sys, torch
    from torch import nn
    import ibwidget as ib
    path, epochs, probe = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    flags = dict(f.partition("=")[::2] for f in sys.argv[4:])
    torch.manual_seed(int(flags.get("seed") or 0))
    x = torch.randn(probe, 20); y = torch.arange(probe) % 5
    model = nn.Sequential(nn.Linear(20, 256), nn.Tanh(), nn.Linear(256, 256), nn.Tanh(), nn.Linear(256, 5))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    name = flags.get("name") or "child"
    with ib.record(model, probe=(x, y), path=path, name=name, resume="resume" in flags) as rec:
        print("entered", flush=True)
        for epoch in range(epochs):
            if "step" in flags:
                sys.stdin.readline()  # one epoch per line read
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(); loss.backward(); opt.step()
            rec.snapshot(logs={"loss": float(loss.detach())})
            print("returned", rec.epoch, flush=True)
        if "hold" in flags:
            sys.stdin.readline()  # hold the file open until told
    print("done", flush=True)
    """
)


def start_writer(tmp_path, path, epochs: int, probe: int = 256, *extra: str) -> subprocess.Popen:
    """Start the writer of ``path`` for ``epochs`` epochs. ``extra`` flags: "resume"; "step" (an epoch per line
    written to its stdin); "hold" (keep the file open until a line comes); "name=...", "seed=..."."""
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, str(script), str(path), str(epochs), str(probe), *extra],
        stdout=subprocess.PIPE,
        stdin=subprocess.PIPE,
        text=True,
        env=env,
    )
