"""The kernel-free information plane: the precomputed grid, PlaneView's synced state, one-file HTML, the CLI."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

import ibwidget as ib
from ibwidget.cli import main
from ibwidget.measure import estimators as measure_estimators
from ibwidget.measure import kernels
from ibwidget.plane import _grid, _report
from ibwidget.record.run import Run

HOSTILE = "<img src=x onerror=alert(1)>"


def synthetic_run(epochs=6, m=48, widths=(200, 20, 10), name="syn", seed=0, layer_names=None) -> Run:
    """Grams of random ReLU features that drift each epoch; layers narrower than m keep activations (binning)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(m, 1, 8, 8, generator=g)
    labels = torch.arange(m) % 10
    names = list(layer_names or [f"layer{i}" for i in range(len(widths))])
    run = Run(name, names, list(widths), x, labels, num_classes=10, capacity=epochs + 1)
    bases = [torch.randn(m, w, generator=g) for w in widths]
    for e in range(epochs + 1):
        grams, acts = {}, {}
        for n, base, w in zip(names, bases, widths, strict=True):
            z = torch.relu(base + 0.15 * e * torch.randn(m, w, generator=g))
            grams[n] = kernels.gram(z)
            if w < m:
                acts[n] = z
        run.add_snapshot(e, grams, torch.randn(m, 10, generator=g) * (1 + e), acts)
        if e:
            run.log_epoch({"loss": 1.0 / e, "accuracy": 0.5 + 0.05 * e, "val_loss": float("nan")})
    return run


@pytest.fixture(scope="module")
def run():
    return synthetic_run()


@pytest.fixture(scope="module")
def grid(run):
    return _grid.plane_grid(run)


def _available(est: dict, r: int = 0) -> list[int]:
    return [i for i, ok in enumerate(est["available"][r]) if ok]


# ------------------------------------------------------------------------------------------------ the grid


def test_default_grid_axes(grid, run):
    meta = grid.meta
    names = [e["name"] for e in meta["estimators"]]
    assert names == _grid.default_estimators()
    assert {"hsic", "cka", "kde_upper", "binning"} <= set(names) and "nhsic" not in names
    assert set(names) <= set(ib.estimators.names())
    assert len(meta["sigmas"]) == 25 and meta["sigmas"] == sorted(meta["sigmas"])
    assert meta["sigmas"][12] == 5.0 and np.allclose(np.diff(np.log(meta["sigmas"])), np.log(10) / 6)
    assert [s["rule"] for s in meta["slots"]] == ["fixed"] * 25 + ["median_d2", "median_d"]
    assert meta["targets"] == ["labels", "output"]
    n_blocks = sum(e["slots"] for e in meta["estimators"]) * 2
    assert grid.values.shape == (1, run.num_snapshots, n_blocks, 3, 2) and grid.values.dtype == np.float32
    assert grid.saturation.shape == (1, run.num_snapshots, 27, 3)
    binning = meta["estimators"][names.index("binning")]
    assert binning["slots"] == 1 and binning["uses_sigma"] is False
    assert binning["available"] == [[False, True, True]] and "narrower" in binning["note"]
    json.dumps(meta, allow_nan=False)  # strictly JSON (NaN history -> null)
    assert meta["runs"][0]["history"]["val_loss"][0] is None


@pytest.mark.parametrize("slot", [0, 7, 12, 24, 25, 26])
def test_grid_equals_run_trajectories(grid, run, slot):
    """Every estimator and target at this slot: the grid holds exactly what Run.trajectories gives (float32)."""
    rule, sigma = grid.meta["slots"][slot]["rule"], grid.meta["slots"][slot]["sigma"]
    for est in grid.meta["estimators"]:
        layers = _available(est)
        for target in ("labels", "output"):
            traj = run.trajectories(
                est["name"],
                sigma=sigma or 5.0,
                target=target,
                sigma_rule=rule if est["uses_sigma"] else "fixed",
                layers=[run.layer_names[i] for i in layers],
            )
            got = grid.block(est["name"], slot, target)[0][:, layers]
            np.testing.assert_allclose(got, traj.astype(np.float32), rtol=2e-6, atol=1e-30, err_msg=est["name"])
            missing = [i for i in range(3) if i not in layers]
            assert np.isnan(grid.block(est["name"], slot, target)[0][:, missing]).all()


def test_the_grid_does_not_depend_on_how_its_pass_is_cut(run, grid, monkeypatch):
    """Windows of one epoch, one layer at a time, and the widths' X statistics one width at a time (what a large
    probe gets) give the grid of one window holding everything."""
    from ibwidget.measure import _packed
    from ibwidget.measure import trajectories as measure_trajectories

    m = run.m
    monkeypatch.setattr(_packed, "CHUNK_ELEMS", m * m)  # one (m, m) matrix per window
    monkeypatch.setattr(measure_trajectories, "_SLOT_TARGET_BYTES", 1)  # one width per group
    cut = _grid.plane_grid(run)
    np.testing.assert_allclose(cut.values, grid.values, rtol=1e-6, atol=1e-30)
    np.testing.assert_allclose(cut.saturation, grid.saturation, atol=1e-7)


def test_saturation_equals_run_saturation(grid, run):
    for slot in (3, 12, 25, 26):
        s = grid.meta["slots"][slot]
        np.testing.assert_allclose(grid.saturation[0, :, slot], run.saturation(s["sigma"] or 5.0, s["rule"]), atol=1e-6)


def test_block_index_and_slot_lookup(grid):
    meta = grid.meta
    T = len(meta["targets"])
    for e in meta["estimators"]:
        assert grid.block_index(e["name"], 3, "output") == e["base"] + (3 if e["slots"] > 1 else 0) * T + 1
    assert grid.slot_index("fixed", 5.2) == 12 and grid.slot_index("median_d") == 26
    with pytest.raises(ValueError, match="Unknown estimator"):
        grid.block_index("nope", 0, "labels")


def test_live_tail_equals_full_grid(run, grid):
    """A live run's new epochs, computed alone, are the same slice as in the full grid."""
    builder = _grid.GridBuilder(keep_targets=True)
    values, sat, _ = builder.compute(run, start=4)
    assert values.shape[0] == run.num_snapshots - 4
    np.testing.assert_allclose(values, grid.values[0, 4:], rtol=1e-6, atol=1e-30)
    np.testing.assert_allclose(sat, grid.saturation[0, 4:], atol=1e-7)
    for k in (12, 3, 12):  # a live view's widths one at a time, X's statistics kept between calls: the same numbers
        again, sat_again, _ = builder.compute(run, start=4, slots=[k])
        blocks = [
            builder.base[i] + k * 2 + t for i, spec in enumerate(builder.specs) if spec.uses_sigma for t in (0, 1)
        ]
        np.testing.assert_allclose(again[:, blocks], values[:, blocks], rtol=1e-6, atol=1e-30)
        np.testing.assert_allclose(sat_again[:, k], sat[:, k], atol=1e-7)
    assert len(builder._targets) == 3  # X at two widths, and the labels


def test_several_runs_are_padded_with_nan():
    a = synthetic_run(epochs=4, widths=(30, 10), name="a", seed=1)
    b = synthetic_run(epochs=2, widths=(30, 10, 6), name="b", seed=2)
    g = _grid.plane_grid([a, b], estimators=["hsic", "cka"], sigmas=[1.0, 5.0], targets=["labels"])
    assert g.values.shape == (2, 5, 2 * 4 * 1, 3, 2)
    assert np.isnan(g.values[0, :, :, 2]).all()  # run a has 2 layers
    assert np.isnan(g.values[1, 3:]).all() and not np.isnan(g.values[1, :3]).any()  # run b has 3 epochs
    traj = b.trajectories("cka", sigma=5.0, sigma_rule="fixed")
    np.testing.assert_allclose(g.block("cka", g.slot_index("fixed", 5.0), "labels")[1, :3], traj, rtol=2e-6)
    assert [r["name"] for r in g.meta["runs"]] == ["a", "b"]


def test_grid_arguments_are_validated(run):
    with pytest.raises(ValueError, match="Unknown estimator"):
        _grid.plane_grid(run, estimators=["nope"])
    with pytest.raises(ValueError, match="positive"):
        _grid.plane_grid(run, sigmas=[0.0])
    with pytest.raises(ValueError, match="Unknown target"):
        _grid.plane_grid(run, targets=["labels", "nope"])
    with pytest.raises(ValueError, match="Unknown sigma rule"):
        _grid.plane_grid(run, sigma_rules=["median"])
    with pytest.raises(TypeError, match="ibwidget.Run"):
        _grid.plane_grid([])


def test_slow_estimators_on_request_and_failures_stay_nan(run):
    g = _grid.plane_grid(run, estimators=["renyi_mi"], sigmas=[5.0], sigma_rules=["fixed"], targets=["labels"])
    np.testing.assert_allclose(g.values[0, :, 0], run.trajectories("renyi_mi", sigma=5.0), rtol=2e-6)

    @ib.estimators.register("ibwp_broken", overwrite=True)
    def broken(K, L):
        raise RuntimeError("singular")

    g = _grid.plane_grid(run, estimators=["hsic", "ibwp_broken"], sigmas=[5.0], targets=["labels"])
    est = g.meta["estimators"][1]
    assert np.isnan(g.block("ibwp_broken", 0, "labels")).all() and "singular" in est["note"]
    assert not np.isnan(g.block("hsic", 0, "labels")).any()


def test_a_grid_of_a_run_that_grows_meanwhile_holds_the_epochs_recorded_when_it_began():
    """A report or grid made while training goes on: the training thread appends mid-computation (here from inside
    an estimator, so the timing is certain); the grid describes and holds exactly the snapshots it began with."""
    live = synthetic_run(epochs=2, m=24, widths=(30, 8))
    extra = synthetic_run(epochs=3, m=24, widths=(30, 8), seed=1)

    @ib.estimators.register("ibwp_appends", overwrite=True)
    def appends(K, L):
        if live.num_snapshots == 3:
            z = {"layer0": torch.eye(24, 30), "layer1": torch.eye(24, 8)}  # layer1 keeps its activations only
            live.add_snapshot(3, {n: kernels.gram(a) for n, a in z.items()}, torch.zeros(24, 10), z)
        return (K * L).mean()

    g = _grid.plane_grid([live, extra], estimators=["hsic", "ibwp_appends"], sigmas=[5.0], targets=["labels"])
    assert live.num_snapshots == 4  # it did grow meanwhile
    assert g.meta["runs"][0]["epochs"] == [0, 1, 2]
    assert np.isnan(g.values[0, 3]).all() and not np.isnan(g.values[0, :3]).any()


# ------------------------------------------------------------------------------------------------ one-file HTML


def _scripts(text: str) -> dict[str, str]:
    return dict(re.findall(r'<script type="application/[^"]+" id="([^"]+)">(.*?)</script>', text, re.S))


def test_html_is_one_self_contained_file(run, tmp_path):
    path = run.to_html(tmp_path / "sub" / "run.html", estimators=["hsic", "cka"], sigmas=[1.0, 5.0])
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and oct(path.stat().st_mode & 0o777) == "0o644"
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text), "the page must load nothing"
    module = re.search(r'<script type="module">(.*?)</script>', text, re.S).group(1)
    assert "export default" in module
    assert module.rstrip().endswith('mountStandalone(document.getElementById("ibwp-root"));')
    digest = base64.b64encode(hashlib.sha256(module.encode()).digest()).decode()
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', text).group(1)
    assert f"script-src 'sha256-{digest}'" in csp and "default-src 'none'" in csp
    assert module.startswith(Path(_report.static_file("planeview.js")).read_text()[:200])
    assert not list(tmp_path.glob("sub/.*.tmp")), "the temporary file was left behind"


def test_html_grid_decodes_to_the_grid(run, tmp_path):
    g = _grid.plane_grid(run, estimators=["hsic", "kde_upper", "binning"], sigmas=[0.5, 5.0, 50.0])
    scripts = _scripts(_report.grid_html(g))
    meta = json.loads(scripts["ibwp-meta"])
    assert meta["encoding"] == "u16" and meta["n_blocks"] == g.values.shape[2]
    codes = np.frombuffer(base64.b64decode(scripts["ibwp-grid"]), "<u2").reshape(g.values.shape)
    scales = np.frombuffer(base64.b64decode(scripts["ibwp-scales"]), "<f8").reshape(-1, 2, 2)
    lo = scales[None, None, :, None, :, 0]
    step = scales[None, None, :, None, :, 1]
    decoded = np.where(codes == 65535, np.nan, lo + codes * step)
    np.testing.assert_array_equal(np.isnan(decoded), np.isnan(g.values))
    span = np.nanmax(np.abs(g.values), axis=(0, 1, 3), keepdims=True)
    assert np.nanmax(np.abs(decoded - g.values) / span) < 1.6e-5  # half a step of 1/65534 of each block's range
    sat = np.frombuffer(base64.b64decode(scripts["ibwp-saturation"]), "<f4").reshape(g.saturation.shape)
    np.testing.assert_array_equal(sat, g.saturation)


def test_user_strings_are_escaped(tmp_path):
    run = synthetic_run(epochs=2, widths=(12, 6), name=f"run {HOSTILE} & co", layer_names=[HOSTILE, "fc</script>"])
    text = run.to_html(tmp_path / "x.html", notes=f"notes {HOSTILE}", estimators=["hsic"], sigmas=[5.0]).read_text()
    assert HOSTILE not in text and "<img" not in text.lower()
    assert text.lower().count("</script>") == 5  # the five script blocks' own ends, none from a name
    assert "&lt;img src=x onerror=alert(1)&gt;" in text  # title and notes: HTML-escaped text
    meta = json.loads(_scripts(text)["ibwp-meta"])
    assert meta["runs"][0]["layer_names"] == [HOSTILE, "fc</script>"]  # JSON-escaped, read back exactly
    assert "\\u003cimg" in text


def test_html_size_of_a_100_epoch_5_layer_run_with_the_default_grid(tmp_path):
    """The size budget: under 2 MB for 100 epochs x 5 layers and the default grid (probe size does not matter)."""
    run = synthetic_run(epochs=100, m=16, widths=(784, 100, 50, 12, 10))
    path = run.to_html(tmp_path / "big.html")
    size = path.stat().st_size
    meta = json.loads(_scripts(path.read_text())["ibwp-meta"])
    print(f"100 epochs x 5 layers, {meta['n_blocks']} blocks: {size / 1e6:.3f} MB")
    assert meta["n_epochs"] == 101 and meta["n_layers"] == 5 and len(meta["sigmas"]) == 25
    assert size < 2_000_000


def test_static_file_and_wheel_force_include():
    path = _report.static_file("planeview.js")
    assert path.name == "planeview.js" and "export default" in path.read_text()
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert '"js/planeview.js" = "ibwidget/static/planeview.js"' in pyproject


# ------------------------------------------------------------------------------------------------ the CLI


def test_report_cli(run, tmp_path, capsys):
    saved = run.save(tmp_path / "run.ibrun")
    out = tmp_path / "run.html"
    assert main(["report", str(saved), "-o", str(out), "--estimators", "hsic,cka", "--sigmas", "1,5"]) == 0
    assert out.is_file() and "Wrote" in capsys.readouterr().out
    meta = json.loads(_scripts(out.read_text())["ibwp-meta"])
    assert [e["name"] for e in meta["estimators"]] == ["hsic", "cka"] and meta["sigmas"] == [1.0, 5.0]
    assert main(["report", str(tmp_path / "missing.ibrun"), "-o", str(out)]) == 2
    assert "no run file" in capsys.readouterr().err
    assert main(["report", str(saved), "--estimators", "nope"]) == 2


# ------------------------------------------------------------------------------------------------ the widget


def _decode(view) -> np.ndarray:
    m = view.meta
    return np.frombuffer(view.grid, "<f4").reshape(m["n_runs"], m["n_epochs"], m["n_blocks"], m["n_layers"], 2)


def test_planeview_traits(run):
    view = ib.PlaneView(run, estimators=["hsic", "cka", "binning"], estimator="cka", sigma=4.0, target="output")
    assert isinstance(view.grid, bytes) and isinstance(view.saturation, bytes)
    assert view.meta["encoding"] == "f32" and view.meta["default"] == {
        "estimator": 1,
        "rule": "fixed",
        "sigma": 4.0,
        "target": "output",
    }
    np.testing.assert_array_equal(_decode(view), view.values)
    assert len(view.saturation) == view.values.shape[1] * 27 * 3 * 4
    state = view.get_state()
    assert {"meta", "grid", "saturation", "_esm"} <= set(state)
    assert "export default" in view._esm
    assert view.meta["runs"][0]["layer_names"] == run.layer_names
    with pytest.raises(TypeError):
        ib.PlaneView("not a run")
    view.close()


def test_planeview_resync_message_resends_everything(run, monkeypatch):
    view = ib.PlaneView(run, estimators=["hsic"], sigmas=[5.0])
    sent = []
    monkeypatch.setattr(type(view), "send_state", lambda self, key=None: sent.append(key))
    view._on_msg(view, {"type": "resync"}, [])
    assert sent == [["meta", "grid", "saturation"]]
    view._on_msg(view, {"type": "something else"}, [])
    assert len(sent) == 1
    view.close()


def test_planeview_refresh_appends_new_epochs(monkeypatch):
    run = synthetic_run(epochs=5)
    partial = synthetic_run(epochs=5)
    partial.epochs = partial.epochs[:3]  # looks like a run with 3 snapshots so far
    view = ib.PlaneView(partial, estimators=["hsic", "cka"])
    assert view.values.shape[1] == 3
    assert view.wait_filled(30)
    partial.epochs = run.epochs  # the run grows
    messages = []
    monkeypatch.setattr(type(view), "send", lambda self, content, buffers=None: messages.append((content, buffers)))
    monkeypatch.setattr("ibwidget.widget.planeview._FULL_SYNC_BYTES", 0)  # force the append path
    before = len(view.grid)
    with view._model.lock:  # the filler waits: the new epochs hold only the viewed slot
        view.refresh()
        assert view.values.shape[1] == 6 and len(view.grid) == before  # traits untouched: the slice went as a message
        ((content, buffers),) = messages
        appended = np.frombuffer(buffers[0], "<f4").reshape(view.values[0, 3:].shape)
        np.testing.assert_array_equal(appended, view.values[0, 3:])
    assert content["type"] == "append" and content["start"] == 3 and content["count"] == 3
    assert content["epochs"] == [3, 4, 5]
    viewed = view._model.builder.nearest_slot("fixed", 5.0)
    assert [k for k, ok in enumerate(content["slot_filled"]) if ok] == [viewed]  # the viewed σ came first
    full = _grid.plane_grid(run, estimators=["hsic", "cka"])
    block = full.block_index("cka", viewed, "labels")
    np.testing.assert_allclose(appended[:, block], full.values[0, 3:, block], rtol=1e-6, atol=1e-30)
    assert view.wait_filled(30)  # then every other slot
    np.testing.assert_allclose(view.values, full.values, rtol=1e-6, atol=1e-30)
    view._catch_up(full=True)  # the run ends: the whole state is set
    np.testing.assert_array_equal(_decode(view), full.values.astype(np.float32))
    view.close()


# ------------------------------------------------------------------------------------------------ in the Trainer


def small_trainer(**kwargs) -> ib.Trainer:
    """A Trainer of a small dense model on digits, 3 epochs, probe of 48 (Dense(24) and the output keep activations)."""
    train, val, _ = ib.datasets.digits.load_data(batch_size=64, seed=0)
    torch.manual_seed(0)
    model = ib.IBSequential(input_shape=(1, 8, 8), device="cpu")
    model.add(ib.layers.Flatten())
    model.add(ib.layers.Dense(24, activation="relu"))
    model.add(ib.layers.Dense(10))
    model.compile(optimizer="SGD", loss="cross_entropy", metrics=["accuracy"], lr=0.05, momentum=0.9)
    return ib.Trainer(model, train, val, epochs=3, probe=48, **kwargs)


@pytest.fixture(scope="module")
def trained():
    trainer = small_trainer(name="planeview")
    view = trainer.plane_view
    threads: list[str] = []
    view.observe(lambda _: threads.append(threading.current_thread().name), names=["meta", "grid", "saturation"])
    trainer.start()
    trainer.wait(timeout=120)
    assert trainer.wait_filled(60)  # training has ended: the widths not viewed are filled in and sent
    yield trainer, threads
    trainer.close()


def test_trainer_shows_a_live_planeview_tab(trained):
    trainer, threads = trained
    view = trainer.plane_view
    tabs = trainer.children[-1]
    assert tabs.children[0] is trainer._figure_box and tabs.children[1] is view and tabs.selected_index == 0
    assert [e["name"] for e in view.meta["estimators"]] == ["hsic", "cka"]
    run = trainer.run
    assert view.meta["n_epochs"] == run.num_snapshots == 4
    assert view.meta["runs"][0]["epochs"] == [0, 1, 2, 3]
    assert len(view.meta["runs"][0]["history"]["loss"]) == 3
    assert view.meta["sigmas"] == list(_grid.DEFAULT_SIGMAS)  # every default width, filled in once training ended
    same = _grid.plane_grid(run, estimators=["hsic", "cka"], sigmas=view.meta["sigmas"])
    np.testing.assert_allclose(_decode(view), same.values, rtol=1e-6)
    traj = run.trajectories("cka", sigma=5.0, target="output")
    grid = _grid.Grid(view.meta, _decode(view), None)
    np.testing.assert_allclose(grid.block("cka", grid.slot_index("fixed", 5.0), "output")[0], traj, rtol=2e-6)
    assert threads and set(threads) == {"ibwidget-ui"}, threads  # the training thread never touched it


def test_trainer_without_planeview():
    train, val, _ = ib.datasets.digits.load_data(batch_size=64, seed=0)
    model = ib.IBSequential(input_shape=(1, 8, 8), device="cpu")
    model.add(ib.layers.Flatten())
    model.add(ib.layers.Dense(10))
    trainer = ib.Trainer(model, train, val, epochs=1, probe=16, plane_view=False)
    assert trainer.plane_view is None and trainer.children[-1] is trainer._figure_box
    trainer.close()


GATE = "ibwp_holds_the_first_catch_up"


def test_live_player_holds_every_recorded_epoch_while_training(monkeypatch):
    """The Player catches up on the UI thread while the training thread keeps recording epochs.

    An activation estimator in the Player's grid holds the first catch-up (one snapshot, epoch 0) until training has
    recorded epoch 1, so the run surely grows in the middle of that computation. Every state the view syncs must
    still be whole (its epochs, grid rows and saturation agree, values finite and equal to the finished run's grid),
    the first one holds exactly epoch 0, after each epoch the view holds every recorded epoch, and no error shows.
    """
    entered, landed = threading.Event(), threading.Event()
    monkeypatch.setattr(
        measure_estimators, "_REGISTRY", dict(measure_estimators._REGISTRY)
    )  # registered for this test only

    @ib.estimators.register(GATE, needs="activations", uses_sigma=False, overwrite=True)
    def gate(T, Z):
        if not entered.is_set():  # the first call only: wait (UI thread) until training recorded one more epoch
            entered.set()
            assert landed.wait(60), "training never recorded epoch 1"
        return torch.zeros((), dtype=T.dtype)

    trainer = small_trainer(estimators=("hsic", GATE), name="live")
    view = trainer.plane_view
    synced: list[tuple[dict, np.ndarray, bytes]] = []  # every state the UI thread set
    view.observe(lambda _: synced.append((view.meta, _decode(view), view.saturation)), names=["saturation"])
    after_epoch: dict[int, int] = {}

    def on_batch_end(event):  # training thread, before epoch 1 is recorded: let the Player start on epoch 0 first
        if event.epoch == 1:
            assert entered.wait(60), "the Player never started its first catch-up"

    def on_epoch_end(event):  # training thread: wait until the widgets applied this epoch, then read the view
        landed.set()
        trainer.sync(timeout=60)
        after_epoch[event.epoch] = view.meta["n_epochs"]

    trainer.engine.on("batch_end", on_batch_end)
    trainer.engine.on("epoch_end", on_epoch_end)
    trainer.start()
    run = trainer.wait(timeout=120)
    assert trainer.status == "finished", trainer.engine.traceback
    assert trainer.last_error == "" and not trainer.notice.value.startswith("display error"), trainer.last_error
    assert after_epoch == {1: 2, 2: 3, 3: 4}  # after each epoch, every recorded epoch (and epoch 0)
    full = _grid.plane_grid(run, estimators=["hsic", GATE], sigmas=view.meta["sigmas"], sigma_rules=view.meta["rules"])
    full = full.values
    counts = [meta["n_epochs"] for meta, _, _ in synced if meta["n_epochs"]]
    assert counts[0] == 1 and counts[-1] == 4 and counts == sorted(counts), counts
    viewed = _grid.Grid(view.meta, full, None).slot_index("fixed", 5.0)
    for meta, values, saturation in synced:
        n = meta["n_epochs"]
        assert meta["runs"][0]["epochs"] == list(range(n)) and values.shape[1] == n
        assert len(saturation) == n * len(meta["slots"]) * meta["n_layers"] * 4
        filled = [k for k, ok in enumerate(meta["slot_filled"]) if ok]
        assert viewed in filled  # the viewed σ is there for every epoch; the others may still be coming
        grid = _grid.Grid(meta, values, None)
        blocks = [grid.block_index(name, k, t) for name in ("hsic", GATE) for k in filled for t in meta["targets"]]
        assert np.isfinite(values[:, :, blocks]).all()
        sat = np.frombuffer(saturation, "<f4").reshape(n, len(meta["slots"]), meta["n_layers"])
        assert np.isfinite(sat[:, filled]).all()
        np.testing.assert_allclose(values[:, :, blocks], full[:, :n, blocks], rtol=1e-6, atol=1e-30)
    assert trainer.wait_filled(60)  # training has ended: every width is filled in
    assert all(view.meta["slot_filled"])
    np.testing.assert_allclose(_decode(view), full, rtol=1e-6, atol=1e-30)
    trainer.close()


# ------------------------------------------------------------------------------------------------ filled in behind


GATED = "ibwp_gated_hsic"


@pytest.fixture
def gated(monkeypatch):
    """A fast estimator whose packed form lets the view's first σ through (computed by the constructor's thread) and
    holds the filler's passes until released; yields (release event, the threads that called it, in order)."""
    monkeypatch.setattr(measure_estimators, "_REGISTRY", dict(measure_estimators._REGISTRY))
    release, calls = threading.Event(), []

    def packed(stats, targets):
        calls.append(threading.current_thread().name)
        if calls[-1] == "ibwidget-grid-fill":
            assert release.wait(60), "the test never released the grid"
        return torch.stack([stats.trace_with(t) for t in targets], -1)

    ib.estimators.register(GATED, lambda K, L: (K * L).mean(), packed=packed, overwrite=True)
    yield release, calls
    release.set()


def test_a_planeview_returns_with_its_first_sigma_and_fills_in_the_rest(run, gated, monkeypatch):
    release, calls = gated
    order: list[list[int]] = []
    compute = _grid.GridBuilder.compute

    def observed(self, snap, start=0, stop=None, slots=None, slotless=True):  # the order the widths come in
        order.append(list(range(len(self.slots)) if slots is None else slots))
        return compute(self, snap, start, stop, slots, slotless)

    monkeypatch.setattr(_grid.GridBuilder, "compute", observed)
    view = ib.PlaneView(run, estimators=["hsic", GATED], sigma=0.5)
    try:
        builder = view._model.builder
        first = builder.nearest_slot("fixed", 0.5)
        assert view.meta["slot_filled"] == [k == first for k in range(len(builder.slots))]
        shown = _decode(view)
        for _ in range(600):  # the filler has taken the next width and waits at the gate
            if "ibwidget-grid-fill" in calls:
                break
            threading.Event().wait(0.05)
        far = builder.nearest_slot("fixed", 400.0)
        view._on_msg(view, {"type": "view", "slot": far}, [])  # the player moved to σ = 400
        release.set()
        assert view.wait_filled(60)
        assert order[0] == [first] and order[2] == [far], order  # after the pass in flight, the viewed σ alone
        done = [k for batch in order for k in batch]
        assert sorted(done) == list(range(len(builder.slots))), order  # then every other width, each once
        assert all(view.meta["slot_filled"])
        full = _grid.plane_grid(run, estimators=["hsic", GATED])
        for name in ("hsic", GATED):  # what the constructor sent: the first σ, and nothing else yet
            block = full.block_index(name, first, "labels")
            np.testing.assert_allclose(shown[:, :, block], full.values[:, :, block], rtol=1e-6, atol=1e-30)
        assert np.isnan(shown[:, :, full.block_index("hsic", far, "labels")]).all()
        np.testing.assert_allclose(_decode(view), full.values, rtol=1e-6, atol=1e-30)
        assert "ibwidget-grid-fill" in calls
    finally:
        view.close()


def test_a_width_that_fails_to_compute_is_noted_and_the_others_still_fill_in(run, monkeypatch):
    """An error in the filler's pass (here: a width whose kernel cannot be evaluated) leaves those slots NaN with a
    note the view shows; the filler goes on, and waiting for it ends."""
    monkeypatch.setattr(measure_estimators, "_REGISTRY", dict(measure_estimators._REGISTRY))
    passes = []

    def fragile(stats, targets):
        passes.append(threading.current_thread().name)
        if passes.count("ibwidget-grid-fill") == 1:  # the filler's first pass
            raise FloatingPointError("no kernel at this width")
        return torch.stack([stats.trace_with(t) for t in targets], -1)

    ib.estimators.register("ibwp_fragile", lambda K, L: (K * L).mean(), packed=fragile, overwrite=True)
    view = ib.PlaneView(run, estimators=["ibwp_fragile"])
    try:
        assert view.wait_filled(60)
        note = view.meta["estimators"][0]["note"]
        assert "could not be computed" in note and "no kernel at this width" in note
        values = _decode(view)
        nan_slots = [k for k in range(27) if np.isnan(values[0, :, k * 2]).all()]
        assert len(nan_slots) == 4 and passes.count("ibwidget-grid-fill") > 1  # one batch of four widths failed
    finally:
        view.close()


def test_a_planeviews_report_is_its_own_grid_once_filled_in(run, tmp_path, monkeypatch):
    """``PlaneView.to_html`` writes the grid the view already computed (no second computation), equal to it to
    the page's quantisation; the report's own grid is computed only while the view's is not whole."""
    view = ib.PlaneView(run, estimators=["hsic", "cka", "binning"])
    try:
        computed = []
        real = _report.plane_grid
        monkeypatch.setattr(_report, "plane_grid", lambda *a, **k: computed.append(1) or real(*a, **k))
        path = view.to_html(tmp_path / "view.html")
        assert computed == []
        scripts = _scripts(path.read_text(encoding="utf-8"))
        values = view.values
        codes = np.frombuffer(base64.b64decode(scripts["ibwp-grid"]), "<u2").reshape(values.shape)
        scales = np.frombuffer(base64.b64decode(scripts["ibwp-scales"]), "<f8").reshape(-1, 2, 2)
        decoded = np.where(
            codes == 65535, np.nan, scales[None, None, :, None, :, 0] + codes * scales[None, None, :, None, :, 1]
        )
        np.testing.assert_array_equal(np.isnan(decoded), np.isnan(values))
        span = np.nanmax(np.abs(values), axis=(0, 1, 3), keepdims=True)
        assert np.nanmax(np.abs(decoded - values) / span) < 1.6e-5
        assert "slot_filled" not in json.loads(scripts["ibwp-meta"])
        partial = synthetic_run(epochs=4)
        partial.epochs = partial.epochs[:3]  # the view holds 3 epochs; the run grows to 5 before the report
        grown = ib.PlaneView(partial, estimators=["hsic"])
        partial.epochs = synthetic_run(epochs=4).epochs
        grown.to_html(tmp_path / "grown.html")  # caught up first: still its own grid, with every epoch
        meta = json.loads(_scripts((tmp_path / "grown.html").read_text(encoding="utf-8"))["ibwp-meta"])
        assert meta["n_epochs"] == 5 and computed == []
        grown.close()
    finally:
        view.close()


def test_the_widths_computed_each_epoch_are_those_still_viewed(run):
    """Each viewer's width is computed first (the latest viewer's first); a viewer that leaves (a Player closed)
    says so with no widths, and its width is no longer computed for each epoch."""
    from ibwidget.widget._viewmodel import PlaneModel

    builder = _grid.GridBuilder(["hsic"])
    model = PlaneModel([run], builder, {"sigma": 5.0, "rule": "fixed"})
    try:
        first = builder.nearest_slot("fixed", 5.0)
        assert model.focus() == [first]  # the first view's width, until a viewer says what it shows
        model.view("figures", [3])
        model.view("player-1", [20])
        assert model.focus() == [20, 3]
        model.view("player-1", [])
        assert model.focus() == [3]
    finally:
        model.close()


def test_a_band_request_is_answered_with_the_selections_null_band(run, monkeypatch):
    view = ib.PlaneView(run, estimators=["hsic", "cka"], sigmas=[1.0, 5.0])
    sent, done = [], threading.Event()

    def send(self, content, buffers=None):
        sent.append(content)
        done.set()

    monkeypatch.setattr(type(view), "send", send)
    slot = view.meta["slots"].index({"rule": "fixed", "sigma": 1.0})
    view._on_msg(view, {"type": "band", "estimator": "cka", "slot": slot, "target": "output"}, [])
    assert done.wait(120)
    (message,) = sent
    band = message["band"]
    assert message["type"] == "band" and (band["estimator"], band["slot"], band["target"]) == ("cka", slot, "output")
    want = run.null_band("cka", sigma=1.0, sigma_rule="fixed", target="output", q=band["q"], permutations=100)
    got = np.array(band["values"], dtype=float)[0]
    np.testing.assert_allclose(got, want, rtol=1e-12, equal_nan=True)
    view._on_msg(view, {"type": "band", "estimator": "nope", "slot": 0, "target": "labels"}, [])  # ignored
    view.close()
    assert len(sent) == 1


def test_a_report_carries_the_chance_floor_of_its_first_view(run, tmp_path):
    page = run.to_html(tmp_path / "r.html").read_text()
    meta = json.loads(re.search(r'<script type="application/json" id="ibwp-meta">(.*?)</script>', page, re.S).group(1))
    (band,) = meta["bands"]
    default = meta["default"]
    est = meta["estimators"][default["estimator"]]
    assert (band["estimator"], band["target"]) == (est["name"], default["target"])
    slot = meta["slots"][band["slot"]]
    assert slot["rule"] == default["rule"] and (slot["sigma"] is None or slot["sigma"] == pytest.approx(5.0, rel=0.1))
    want = run.null_band(
        est["name"],
        sigma=slot["sigma"] or 5.0,
        sigma_rule=slot["rule"],
        target=band["target"],
        q=band["q"],
        permutations=band["permutations"],
    )
    np.testing.assert_allclose(np.array(band["values"], dtype=float)[0], want, rtol=1e-12, equal_nan=True)
    (cka,) = meta["cka"]["runs"]  # and the layers' CKA at every epoch, for its heatmap
    assert cka["names"] == run.cka_names(run.epochs[0]) and len(cka["values"]) == run.num_snapshots
    np.testing.assert_allclose(np.array(cka["values"][-1], dtype=float), run.cka_matrix(run.epochs[-1], None, None))


def test_a_cka_request_is_answered_with_every_epochs_cka_matrix(run, monkeypatch):
    view = ib.PlaneView(run, estimators=["hsic"], sigmas=[5.0])
    sent, done = [], threading.Event()
    monkeypatch.setattr(type(view), "send", lambda self, content, buffers=None: (sent.append(content), done.set()))
    view._on_msg(view, {"type": "cka"}, [])
    assert done.wait(120)
    (payload,) = [m["cka"] for m in sent]
    (one,) = payload["runs"]
    assert payload["kind"] == "linear" and one["names"] == run.cka_names(run.epochs[0])
    for i, epoch in enumerate(run.epochs):
        np.testing.assert_allclose(np.array(one["values"][i], dtype=float), run.cka_matrix(epoch, None, None))
    view.close()
