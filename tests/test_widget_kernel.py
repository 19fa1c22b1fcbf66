"""The Trainer in a real kernel, executed by nbclient as nbconvert does: the widget state that reaches the client.

Widget messages sent by the UI thread while a cell runs are recorded by nbclient into the notebook's widget state;
bqplot's arrays travel as binary buffers (base64 in the saved state, with their path in each model's ``buffers``).
"""

from __future__ import annotations

import base64
import json
import sys
import textwrap
from pathlib import Path

import nbformat
import numpy as np
import pytest

nbclient = pytest.importorskip("nbclient")

EPOCHS = 3
PROBE = 64
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"

SETUP = f"""
import json, sys, threading
import numpy as np
import ipywidgets as widgets
import ibwidget as ib
from ibwidget.widget import Trainer

SENDS = []  # (thread name, widget class) of every widget message sent by this kernel
_send = widgets.Widget._send
def _recording_send(self, msg, buffers=None):
    SENDS.append((threading.current_thread().name, type(self).__name__))
    return _send(self, msg, buffers)
widgets.Widget._send = _recording_send

def small_model():
    model = ib.IBSequential(input_shape=(1, 8, 8), device="cpu")
    model.add(ib.layers.Flatten())
    model.add(ib.layers.Dense(32, activation="relu"))
    model.add(ib.layers.Dense(16, activation="relu"))
    model.add(ib.layers.Dense(10))
    return model

train, val, _ = ib.datasets.digits.load_data(batch_size=64, seed=0)
trainer = Trainer(small_model(), train, val, epochs={EPOCHS}, probe={PROBE}, device="cpu", name="kernel run")
print(sys.executable)
trainer
"""
TRAIN = "trainer.start()\ntrainer.wait(timeout=240)"
CHANGE = 'trainer.controls.estimator.value = "cka"\ntrainer.sync()'
# A second trainer whose training runs between cells (its messages may miss nbclient); the last cell's wait()
# must still leave its final state in the notebook.
BETWEEN = """
second = Trainer(small_model(), train, val, epochs=2, probe=48, device="cpu", name="second", autostart=True)
second.engine.wait(timeout=240)
"""
SAVE = """
np.save("traj.npy", trainer.run.trajectories("cka", sigma=5.0))
np.save("second.npy", second.run.trajectories("hsic", sigma=5.0))
json.dump({"sends": SENDS, "layers": trainer.run.layer_names}, open("kernel.json", "w"))
second.wait(timeout=240)
"""


class RecordingClient(nbclient.NotebookClient):
    """Records which comm messages reached the client, per cell."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.comm_log: list[tuple[int, str, str, list[str]]] = []

    def handle_comm_msg(self, outs, msg, cell_index):
        data = msg["content"].get("data", {})
        self.comm_log.append((cell_index, msg["msg_type"], msg["content"]["comm_id"], sorted(data.get("state", {}))))
        return super().handle_comm_msg(outs, msg, cell_index)


def decode(model: dict, key: str) -> np.ndarray:
    """An array trait of a saved bqplot model: its buffer (base64) with the dtype from the state."""
    for buffer in model.get("buffers", []):
        if buffer["path"] == [key, "value"]:
            return np.frombuffer(base64.b64decode(buffer["data"]), dtype=model["state"][key]["dtype"])
    raise KeyError(f"no buffer for {key!r}")


def ref_id(ref: str) -> str:
    assert ref.startswith("IPY_MODEL_"), ref
    return ref[len("IPY_MODEL_") :]


def below(state: dict, root_id: str, cls: str) -> dict:
    """The first model with CSS class ``cls`` inside the widget ``root_id`` (through children)."""
    todo, seen = [root_id], set()
    while todo:
        mid = todo.pop(0)
        if mid in seen or mid not in state:
            continue
        seen.add(mid)
        model = state[mid]["state"]
        if cls in model.get("_dom_classes", []):
            return model
        todo += [ref_id(r) for r in model.get("children", [])]
    raise AssertionError(f"no {cls} below {root_id}")


def trainers(state: dict) -> dict[str, str]:
    """The Trainer roots in the saved state, by the text of their epoch label."""
    roots = [k for k, v in state.items() if "ibw-trainer" in v["state"].get("_dom_classes", [])]
    return {below(state, k, "ibw-epoch")["value"]: k for k in roots}


def plane_scatters(state: dict, root_id: str) -> dict[str, dict]:
    """The Scatter models of the information plane of the Trainer ``root_id``, by layer name."""
    plane = below(state, root_id, "ibw-plane")
    marks = [state[ref_id(r)] for r in plane["marks"]]
    return {m["state"]["names"][0]: m for m in marks if m["model_name"] == "ScatterModel" and m["state"]["names"]}


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kernel")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell(textwrap.dedent(src).strip()) for src in (SETUP, TRAIN, CHANGE, BETWEEN, SAVE)
    ]
    client = RecordingClient(
        nb, kernel_name="python3", store_widget_state=True, timeout=300, resources={"metadata": {"path": str(tmp)}}
    )
    client.execute()
    nbformat.write(nb, tmp / "executed.ipynb")
    return nb, client, tmp


def test_the_kernel_is_this_interpreter(executed):
    nb, _, _ = executed
    printed = "".join(o.get("text", "") for o in nb.cells[0].outputs if o.output_type == "stream").strip()
    assert Path(printed).resolve() == Path(sys.executable).resolve()
    plain = [o["data"]["text/plain"] for o in nb.cells[0].outputs if o.output_type == "execute_result"]
    assert plain == [f"Trainer(epoch 0/{EPOCHS}, 3 layers, idle)"]


def test_final_state_has_every_epoch_and_equals_the_run(executed):
    nb, _, tmp = executed
    state = nb.metadata["widgets"][WIDGET_STATE]["state"]
    layers = json.loads((tmp / "kernel.json").read_text())["layers"]
    traj = np.load(tmp / "traj.npy")
    assert traj.shape == (EPOCHS + 1, len(layers), 2)
    roots = trainers(state)
    assert sorted(roots) == ["epoch 2/2", f"epoch {EPOCHS}/{EPOCHS}"]
    root_id = roots[f"epoch {EPOCHS}/{EPOCHS}"]
    assert below(state, root_id, "ibw-status")["value"] == "finished"
    estimator = below(state, root_id, "ibw-estimator")
    assert estimator["_options_labels"][estimator["index"]] == "cka"  # the cell that changed it
    scatters = plane_scatters(state, root_id)
    assert sorted(scatters) == sorted(layers)
    for i, name in enumerate(layers):
        model = scatters[name]
        x, y, color = decode(model, "x"), decode(model, "y"), decode(model, "color")
        assert x.dtype == np.float32 and x.shape == (EPOCHS + 1,)
        np.testing.assert_allclose(x, traj[:, i, 0].astype(np.float32), rtol=1e-6)
        np.testing.assert_allclose(y, traj[:, i, 1].astype(np.float32), rtol=1e-6)
        np.testing.assert_array_equal(color, np.arange(EPOCHS + 1, dtype=np.float32))


def test_state_of_a_run_trained_between_cells_is_restored_by_wait(executed):
    nb, _, tmp = executed
    state = nb.metadata["widgets"][WIDGET_STATE]["state"]
    traj = np.load(tmp / "second.npy")
    root_id = trainers(state)["epoch 2/2"]
    assert below(state, root_id, "ibw-status")["value"] == "finished"
    scatters = plane_scatters(state, root_id)
    for i, model in enumerate(scatters.values()):
        np.testing.assert_allclose(decode(model, "x"), traj[:, i, 0].astype(np.float32), rtol=1e-6)
        assert decode(model, "x").shape == (3,)


def test_messages_from_the_training_run_arrive_while_it_trains(executed):
    nb, client, tmp = executed
    state = nb.metadata["widgets"][WIDGET_STATE]["state"]
    scatter_ids = {k for k, v in state.items() if v["model_name"] == "ScatterModel"}
    during_training = [c for c in client.comm_log if c[0] == 1 and c[1] == "comm_msg" and c[2] in scatter_ids]
    assert during_training and all("x" in keys for _, _, _, keys in during_training)
    print(f"{len(during_training)} plane point updates reached the client while training")
    sends = json.loads((tmp / "kernel.json").read_text())["sends"]
    threads = {thread for thread, _ in sends}
    assert "ibwidget-ui" in threads and "ibwidget-training" not in threads
    assert any(thread == "ibwidget-ui" and cls == "Scatter" for thread, cls in sends)
