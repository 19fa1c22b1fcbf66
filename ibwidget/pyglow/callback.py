"""PyGlow's evaluators as an engine callback: criteria on activations, per epoch on the probe or per batch.

``IBSequential`` adds one to its engine; any engine takes one: ``ib.Engine(model, train, val,
callbacks=[EvaluatorsCallback([MyCriterion()], mode="batches")])``.
"""

from __future__ import annotations

import numpy as np
import torch

from ibwidget.pyglow.evaluators import HSIC, Estimator
from ibwidget.record.taps import Tap
from ibwidget.train.engine import register_moved_keywords

__all__ = ["EvaluatorsCallback", "MODES"]

MODES = ("probe", "batches")  #: where the dynamics are measured: the probe after each epoch, or each training batch


class EvaluatorsCallback:
    """Evaluate PyGlow ``evaluators`` on ``[x, h_1, ..., h_n, output]`` as the engine trains.

    ``mode="probe"`` (default): after every snapshot, on the probe; an ``HSIC`` evaluator is left to
    ``Run.trajectories`` (it is recomputed from the snapshots), the others land in ``run.custom_dynamics``.
    ``mode="batches"``: every evaluator on every training batch, as PyGlow did, into ``run.batch_dynamics``.
    """

    def __init__(self, evaluators=(), mode: str = "probe"):
        if mode not in MODES:
            raise ValueError(
                f"mode must be 'probe' (default) or 'batches' (PyGlow's per-batch averaging), got {mode!r}."
            )
        self.evaluators = list(evaluators)
        for evaluator in self.evaluators:
            if not isinstance(evaluator, Estimator):
                raise TypeError(
                    f"evaluators must be ibwidget.estimators.Estimator instances, got {type(evaluator).__name__}."
                )
        self.mode = mode
        self._engine = None
        self._tap: Tap | None = None
        self._segments: list[np.ndarray] = []

    def setup(self, engine) -> None:
        """Note the mode in the run's config; in probe mode, evaluate after each of the recording's snapshots."""
        self._engine = engine
        engine.run.config["mode"] = self.mode
        if self.mode == "batches":
            self._tap = Tap(engine.model, engine.layers)
        if self.mode == "probe" and any(not isinstance(e, HSIC) for e in self.evaluators):
            engine.recording.add_listener(self._on_snapshot)

    def on_train_epoch_start(self, engine, epoch: int) -> None:
        """In batches mode, start the epoch's list of per-batch values."""
        self._segments = []

    def on_train_batch_start(self, engine, x: torch.Tensor) -> None:
        """In batches mode, tap the tracked layers for this batch's forward pass."""
        if self._tap is not None:
            self._tap.__enter__()

    def on_train_batch_end(self, engine, x: torch.Tensor, output: torch.Tensor) -> None:
        """In batches mode, every evaluator on this batch's activations."""
        if self._tap is not None and self._tap.active:
            hidden = [self._tap.outputs[n] for n in engine.layers]
            self.teardown(engine)
            self._segments.append(self._evaluate(self.evaluators, [x, *hidden, self._output_target(output.detach())]))

    def on_train_epoch_end(self, engine, epoch: int, logs: dict) -> None:
        """In batches mode, the epoch's per-batch values go into ``run.batch_dynamics``."""
        if self._segments:
            engine.run.batch_dynamics.append(np.asarray(self._segments))

    def teardown(self, engine) -> None:
        """Remove the batch's tap (also when a training stops or fails during a batch)."""
        if self._tap is not None and self._tap.active:
            self._tap.__exit__(None, None, None)

    def _on_snapshot(self, epoch: int, output: torch.Tensor, activations: dict) -> None:
        engine = self._engine
        custom = [e for e in self.evaluators if not isinstance(e, HSIC)]
        segment = [engine.recording.recorder.probe_x, *(activations[n] for n in engine.layers)]
        with torch.no_grad():
            values = self._evaluate(custom, [*segment, self._output_target(output)])
        for evaluator, per_layer in zip(custom, values, strict=True):
            engine.run.custom_dynamics.setdefault(type(evaluator).__name__, []).append(per_layer)

    def _output_target(self, output: torch.Tensor) -> torch.Tensor:
        """The network's output as the target Y of the dynamics: its softmax, as ``Run.trajectories(target="output")``
        and PyGlow (whose final softmax layer produced it) use, even when the loss made the model return logits."""
        output = output.reshape(output.shape[0], -1)
        return output if self._engine.run.output_is_probabilities else torch.softmax(output, -1)

    @staticmethod
    def _evaluate(evaluators, segment) -> np.ndarray:
        """(evaluators, layers, 2) for one segment ``[x, h_1, ..., h_n, y]``."""
        return np.asarray([[[float(v) for v in pair] for pair in e.eval_dynamics_segment(segment)] for e in evaluators])


register_moved_keywords(
    ("evaluators", "mode"),
    EvaluatorsCallback,
    "callbacks=[ibwidget.pyglow.callback.EvaluatorsCallback(evaluators, mode=...)]",
)
