"""compile() helpers: optimizer/loss/metric resolution, and the softmax + cross_entropy guard."""

import functools
import inspect
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ibwidget.train._compile import (
    DEFAULT_LR,
    DEFAULT_MOMENTUM,
    accuracy,
    check_output_activation,
    resolve_loss,
    resolve_metrics,
    resolve_optimizer,
)


def _params():
    return list(nn.Linear(3, 2).parameters())


@pytest.mark.parametrize(
    "name,cls", [("SGD", torch.optim.SGD), ("sgd", torch.optim.SGD), ("Adam", torch.optim.Adam),
                 ("adam", torch.optim.Adam), ("AdamW", torch.optim.AdamW), ("RMSprop", torch.optim.RMSprop),
                 ("rmsprop", torch.optim.RMSprop)],
)  # fmt: skip
def test_optimizer_names_case_insensitive(name, cls):
    opt = resolve_optimizer(name, _params())
    assert type(opt) is cls
    assert opt.defaults["lr"] == DEFAULT_LR


def test_sgd_keeps_pyglow_defaults_and_accepts_overrides():
    assert (DEFAULT_LR, DEFAULT_MOMENTUM) == (0.001, 0.95)  # PyGlow 0.1.7 Network.compile
    opt = resolve_optimizer("SGD", _params())
    assert opt.defaults["lr"] == 0.001 and opt.defaults["momentum"] == 0.95 and not opt.defaults["nesterov"]
    opt = resolve_optimizer("SGD", _params(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    assert (opt.defaults["lr"], opt.defaults["momentum"], opt.defaults["weight_decay"]) == (0.01, 0.9, 1e-4)
    opt = resolve_optimizer("SGD", _params(), momentum=None)  # None means "not given"
    assert opt.defaults["momentum"] == 0.95
    opt = resolve_optimizer("sgd", _params(), learning_rate=0.05)  # PyGlow's keyword
    assert opt.defaults["lr"] == 0.05
    opt = resolve_optimizer("RMSprop", _params(), momentum=0.5)
    assert opt.defaults["momentum"] == 0.5


def test_adam_ignores_momentum_with_a_warning():
    with pytest.warns(UserWarning, match="no momentum argument"):
        opt = resolve_optimizer("Adam", _params(), lr=0.002, momentum=0.9)
    assert opt.defaults["lr"] == 0.002 and "momentum" not in opt.defaults


def test_optimizer_instance_class_and_factory():
    params = _params()
    inst = torch.optim.SGD(params, lr=0.3)
    assert resolve_optimizer(inst, params) is inst
    with pytest.warns(UserWarning, match="ignoring lr"):
        assert resolve_optimizer(inst, params, lr=0.1) is inst
    with pytest.raises(ValueError, match="none of this model's parameters"):
        resolve_optimizer(inst, _params())
    opt = resolve_optimizer(torch.optim.Adam, params, lr=0.02)
    assert type(opt) is torch.optim.Adam and opt.defaults["lr"] == 0.02
    opt = resolve_optimizer(functools.partial(torch.optim.SGD, lr=0.4, momentum=0.1), params)
    assert opt.defaults["lr"] == 0.4 and opt.defaults["momentum"] == 0.1
    with pytest.raises(TypeError, match="not a torch.optim.Optimizer"):
        resolve_optimizer(lambda p, **kw: "nope", params)


def test_optimizer_steps_the_parameters():
    lin = nn.Linear(3, 1)
    before = lin.weight.detach().clone()
    opt = resolve_optimizer("sgd", lin.parameters(), lr=0.1)  # a generator is fine
    lin(torch.randn(4, 3)).sum().backward()
    opt.step()
    assert not torch.equal(before, lin.weight)


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda p: resolve_optimizer("adagrad", p), ValueError, r"Unknown optimizer 'adagrad'.*'SGD', 'Adam'"),
        (lambda p: resolve_optimizer("SGD", p, lr=0), ValueError, "lr must be a positive number"),
        (lambda p: resolve_optimizer("SGD", p, lr=float("nan")), ValueError, "lr must be a positive number"),
        (lambda p: resolve_optimizer("SGD", p, lr=0.1, learning_rate=0.2), ValueError, "only one of them"),
        (lambda p: resolve_optimizer("SGD", []), ValueError, "No parameters to optimize"),
        (lambda p: resolve_optimizer("SGD", p, bogus=1), TypeError, "Could not build optimizer 'SGD'.*bogus"),
        (lambda p: resolve_optimizer(3, p), TypeError, "optimizer must be a name"),
    ],
)
def test_optimizer_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call(_params())


@pytest.mark.parametrize(
    "name,cls",
    [
        ("cross_entropy", nn.CrossEntropyLoss),
        ("CrossEntropyLoss", nn.CrossEntropyLoss),
        ("nll", nn.NLLLoss),
        ("NLLLoss", nn.NLLLoss),  # PyGlow's name
        ("mse", nn.MSELoss),
        ("MSE", nn.MSELoss),
    ],
)
def test_loss_names(name, cls):
    assert type(resolve_loss(name)) is cls


def test_cross_entropy_is_on_logits():
    logits, y = torch.randn(8, 10), torch.randint(0, 10, (8,))
    torch.testing.assert_close(resolve_loss("cross_entropy")(logits, y), F.cross_entropy(logits, y))


def test_loss_callables_and_errors():
    assert resolve_loss(F.mse_loss) is F.mse_loss
    module = nn.SmoothL1Loss()
    assert resolve_loss(module) is module
    with pytest.raises(ValueError, match=r"Unknown loss 'hinge'.*'cross_entropy', 'nll', 'mse'"):
        resolve_loss("hinge")
    with pytest.raises(ValueError, match="HSIC network"):
        resolve_loss("HSIC_loss")
    with pytest.raises(TypeError, match="loss must be a name"):
        resolve_loss(3)


def test_accuracy_on_logits_probabilities_and_onehot():
    logits = torch.tensor([[2.0, -1.0, 0.0], [0.1, 0.3, -5.0], [-1.0, -2.0, -0.5], [0.0, 1.0, 3.0]])
    y = torch.tensor([0, 1, 0, 2])
    assert accuracy(logits, y) == 0.75
    assert accuracy(F.softmax(logits, 1), y) == 0.75
    assert accuracy(logits, F.one_hot(y, 3).float()) == 0.75
    assert accuracy(y, logits) == 0.75  # PyGlow called metric(y_true, y_pred)
    assert isinstance(accuracy(logits, y), float)
    with pytest.raises(ValueError, match=r"\(batch, classes\)"):
        accuracy(torch.randn(4), y)
    with pytest.raises(ValueError, match="does not match"):
        accuracy(logits, y[:3])


def test_resolve_metrics():
    assert resolve_metrics(None) == {} and resolve_metrics([]) == {}
    metrics = resolve_metrics(["accuracy"])
    assert list(metrics) == ["accuracy"] and metrics["accuracy"] is accuracy
    assert list(resolve_metrics("acc")) == ["accuracy"]

    def top2(out, y):
        return 1.0

    assert resolve_metrics(["accuracy", top2]) == {"accuracy": accuracy, "top2": top2}
    assert resolve_metrics({"acc": "accuracy", "t": top2}) == {"acc": accuracy, "t": top2}
    with pytest.raises(ValueError, match=r"Unknown metric 'f1'.*'accuracy'"):
        resolve_metrics(["f1"])
    with pytest.raises(ValueError, match="given twice"):
        resolve_metrics(["accuracy", "acc"])
    with pytest.raises(TypeError, match="Each metric"):
        resolve_metrics([3])


def _caught(fn):
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        result = fn()
    return result, [w for w in rec if issubclass(w.category, UserWarning)]


def test_softmax_cross_entropy_warns_exactly_once_per_key():
    key = object()
    results, records = [], []
    for loss in ["cross_entropy", "CrossEntropyLoss", nn.CrossEntropyLoss(), F.cross_entropy]:
        skip, rec = _caught(lambda loss=loss: check_output_activation("softmax", loss, once_key=key))
        results.append(skip)
        records += rec
    assert results == [True, True, True, True]  # always skip the final softmax
    assert len(records) == 1  # but say so only once, even with warnings filter "always"
    assert "cross_entropy" in str(records[0].message) and "1.46" in str(records[0].message)
    # another model (another key) is warned too, once
    skip, rec = _caught(lambda: check_output_activation("softmax", "cross_entropy", once_key=object()))
    assert skip and len(rec) == 1


def test_warning_points_at_the_callers_caller():
    def compile_():  # stands for model.compile, called by the user's line below
        return check_output_activation("softmax", "cross_entropy", once_key=object())

    line = inspect.currentframe().f_lineno + 1
    _, rec = _caught(lambda: compile_())
    assert rec[0].filename == __file__ and rec[0].lineno == line


@pytest.mark.parametrize(
    "act,loss",
    [
        ("relu", "cross_entropy"),
        (None, "cross_entropy"),
        ("linear", "cross_entropy"),
        ("log_softmax", "cross_entropy"),
        ("softmax", "mse"),
        ("log_softmax", "nll"),
        ("softmax", nn.SmoothL1Loss()),
    ],
)
def test_no_skip_and_no_warning_otherwise(act, loss):
    skip, rec = _caught(lambda: check_output_activation(act, loss, once_key=object()))
    assert skip is False and rec == []


def test_softmax_with_nll_warns_but_does_not_skip():
    skip, rec = _caught(lambda: check_output_activation("softmax", "NLLLoss", once_key=object()))
    assert skip is False and len(rec) == 1 and "log_softmax" in str(rec[0].message)


def test_skipping_softmax_fixes_the_capped_loss():
    # PyGlow's softmax-then-CrossEntropy: the loss of a perfect, confident prediction stays far above 0.
    logits = torch.full((4, 10), -20.0)
    y = torch.arange(4)
    logits[torch.arange(4), y] = 20.0
    loss = resolve_loss("cross_entropy")
    assert loss(F.softmax(logits, 1), y) > 1.46
    assert loss(logits, y) < 1e-6
