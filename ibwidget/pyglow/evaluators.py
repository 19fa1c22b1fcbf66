"""PyGlow's evaluators: classes whose ``criterion(x, y)`` reads activations, evaluated on the probe each epoch.

``ibwidget.estimators.HSIC`` / ``Estimator`` and ``ibwidget.information_bottleneck.estimator`` are their public paths.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch

from ibwidget.measure import kernels as _kernels
from ibwidget.measure._validate import check_sigma, resolve_name
from ibwidget.measure.estimators import hsic, nhsic

__all__ = ["Estimator", "HSIC", "NHSIC"]


def _evaluator_device(gpu: bool) -> torch.device:
    if gpu and not torch.cuda.is_available():
        warnings.warn("gpu=True but no CUDA device is available: evaluating on the CPU.", RuntimeWarning, stacklevel=3)
        return torch.device("cpu")
    return torch.device("cuda" if gpu else "cpu")


class Estimator:
    """Base class of PyGlow-style evaluators: subclass it and define ``criterion(x, y)`` on activations.

    Attached with ``IBSequential.attach_evaluator``, a criterion is evaluated on the probe after every epoch
    (it sees activations, so unlike the registered estimators it cannot be re-estimated later for another sigma).
    ``gpu=True`` without CUDA warns and uses the CPU (PyGlow raised).
    """

    def __init__(self, gpu: bool = False, **kwargs):
        self.params_dict = kwargs
        self.device = _evaluator_device(gpu)

    def criterion(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("subclasses of Estimator define criterion(x, y) -> 0-d tensor")

    def eval_dynamics_segment(self, dynamics_segment: Sequence[torch.Tensor]) -> list[list[torch.Tensor]]:
        """PyGlow's layout: ``[x, h_1, ..., h_n, y]`` -> ``[[c(h_1, x), c(h_1, y)], ...]``."""
        x, *hidden, y = dynamics_segment
        m = x.shape[0]
        x, y = x.reshape(m, -1), y.reshape(m, -1)
        return [[self.criterion(h.reshape(m, -1), x), self.criterion(h.reshape(m, -1), y)] for h in hidden]


class HSIC(Estimator):
    """PyGlow's HSIC evaluator: Gaussian kernels of width ``sigma`` and the ``1/(m-1)`` normalizer.

    Equals PyGlow 0.1.7's ``HSIC(kernel="gaussian", sigma=...).criterion`` without its (m, m, d) difference tensor.
    """

    def __init__(self, kernel: str = "gaussian", gpu: bool = False, **kwargs):
        super().__init__(gpu, **kwargs)
        kernel = resolve_name("kernel", kernel, _kernels.KERNELS)
        if kernel == "gaussian" and "sigma" not in kwargs:
            raise ValueError("HSIC(kernel='gaussian') needs a width: pass sigma=5 (PyGlow's tutorial value).")
        self.kernel = kernel
        self.sigma = kwargs.get("sigma")

    def kernel_matrix(self, z: torch.Tensor) -> torch.Tensor:
        G = _kernels.gram(z.to(self.device))
        return G if self.kernel == "linear" or self.sigma is None else _kernels.gaussian(G, self.sigma)

    def criterion(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return hsic(self.kernel_matrix(x), self.kernel_matrix(y), normalizer="pyglow")


class NHSIC(Estimator):
    """The HSIC bottleneck's dependence measure: normalized HSIC (Ma, Lewis & Kleijn 2020, eq. 4; Fukumizu et al.
    2008) of Gaussian kernels of width ``sigma * sqrt(d)``, ``d`` each argument's number of features (the paper's
    code), ridge ``eps``. Differentiable: a criterion for :class:`~ibwidget.pyglow.hsic.HSICSequential` layers.
    """

    def __init__(self, sigma: float = 5.0, eps: float = 1e-5, gpu: bool = False, **kwargs):
        super().__init__(gpu, sigma=sigma, eps=eps, **kwargs)
        self.sigma = float(check_sigma(sigma))
        self.eps = float(eps)

    def kernel_matrix(self, z: torch.Tensor) -> torch.Tensor:
        z = z.to(self.device).reshape(z.shape[0], -1)
        width = _kernels.sigma_from_distances(torch.empty(0), "sqrt_d", self.sigma, dim=z.shape[1])
        return _kernels.gaussian(_kernels.gram(z), width)

    def criterion(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nhsic(self.kernel_matrix(x), self.kernel_matrix(y), eps=self.eps)
