"""Bad input fails early, with a message that says what was wrong (and what to pass instead)."""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
import torch

from ibwidget import estimators  # the public path: functions and PyGlow's evaluator classes
from ibwidget.measure import estimators as measure_estimators
from ibwidget.measure import kernels
from ibwidget.measure.estimators import binning_mi, cka, hsic, kde_mi, nhsic, renyi_entropy, renyi_mi


def _kernel(m: int, seed: int = 0) -> torch.Tensor:
    Z = torch.randn(m, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return kernels.gaussian(kernels.gram(Z), 1.0)


PAIR_FUNCS = {
    "hsic": hsic,
    "hsic_unbiased": lambda K, L: hsic(K, L, "unbiased"),
    "cka": cka,
    "cka_debiased": lambda K, L: cka(K, L, debiased=True),
    "nhsic": nhsic,
    "renyi_mi": renyi_mi,
}


# ------------------------------------------------------------------------------------------ matrix shape


@pytest.mark.parametrize("name", PAIR_FUNCS)
def test_mismatched_sample_counts(name):
    with pytest.raises(ValueError, match=r"K is 6x6 but L is 7x7.*same m samples"):
        PAIR_FUNCS[name](_kernel(6), _kernel(7))


@pytest.mark.parametrize("name", PAIR_FUNCS)
def test_non_square_kernel(name):
    K = torch.ones(6, 5, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"K must be a square kernel matrix.*got shape \(6, 5\)"):
        PAIR_FUNCS[name](K, _kernel(6))
    with pytest.raises(ValueError, match=r"L must be a square kernel matrix"):
        PAIR_FUNCS[name](_kernel(6), K)


def _kernels(*batch: int, m: int = 6, seed: int = 0) -> torch.Tensor:
    """A batch of Gaussian kernels, shape ``(*batch, m, m)``, each of its own random representation."""
    Z = torch.randn(*batch, m, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return kernels.gaussian(Z @ Z.transpose(-1, -2), 1.0)


@pytest.mark.parametrize("name", PAIR_FUNCS)
def test_batches_that_do_not_pair_up_say_both_shapes(name):
    message = (
        r"K has shape \(3, 6, 6\) but L has shape \(2, 6, 6\): batches of \(3,\) and \(2,\) matrices do not "
        r"pair up\. Pass batches of the same shape .* or one \(6, 6\) matrix"
    )
    with pytest.raises(ValueError, match=message):
        PAIR_FUNCS[name](_kernels(3), _kernels(2, seed=1))
    with pytest.raises(ValueError, match=r"K has shape \(2, 3, 6, 6\) but L has shape \(4, 6, 6\)"):
        PAIR_FUNCS[name](_kernels(2, 3), _kernels(4, seed=1))


@pytest.mark.parametrize("name", PAIR_FUNCS)
def test_one_matrix_pairs_with_every_matrix_of_a_batch(name):
    fn, batch, single = PAIR_FUNCS[name], _kernels(3), _kernels(seed=1)
    each = torch.stack([fn(K, single) for K in batch])
    torch.testing.assert_close(fn(batch, single), each, rtol=1e-12, atol=0)
    torch.testing.assert_close(fn(single, batch), each, rtol=1e-12, atol=0)  # every estimator here is symmetric
    torch.testing.assert_close(fn(batch, single[None]), each, rtol=1e-12, atol=0)  # a batch of one broadcasts too


@pytest.mark.parametrize("labels", [torch.tensor(1), 3, (torch.arange(18) % 2).reshape(3, 6)])
def test_kde_labels_are_one_per_sample(labels):
    Z = torch.randn(3, 6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    D = kernels.sq_distances(Z @ Z.transpose(-1, -2))
    shape = tuple(torch.as_tensor(labels).shape)
    count = "a single value" if not shape else "3 samples"
    message = (
        rf"labels has {count} but the representation has 6; pass one per sample: shape \(6,\) of class ids, or "
        rf"\(6, k\) .*got shape {re.escape(str(shape))}\. The same labels apply to every matrix of the batch \(3,\)"
    )
    with pytest.raises(ValueError, match=message):
        kde_mi(D, 1.0, labels=labels)
    shared = torch.tensor([0, 1, 0, 1, 2, 2])
    each = torch.stack([kde_mi(Db, 1.0, labels=shared) for Db in D])
    torch.testing.assert_close(kde_mi(D, 1.0, labels=shared), each, rtol=1e-12, atol=0)


def test_one_dimensional_kernel_is_not_square():
    with pytest.raises(ValueError, match="square kernel matrix"):
        hsic(torch.ones(5), torch.ones(5))


@pytest.mark.parametrize("name", PAIR_FUNCS)
def test_non_symmetric_kernel(name):
    K = _kernel(6).clone()
    K[0, 1] += 0.5
    with pytest.raises(ValueError, match="K is not symmetric"):
        PAIR_FUNCS[name](K, _kernel(6, seed=1))


def test_non_symmetric_matrices_in_kernel_helpers():
    A = torch.arange(16.0).reshape(4, 4)
    for fn in (kernels.sq_distances, kernels.linear, lambda G: kernels.gaussian(G, 1.0), renyi_entropy):
        with pytest.raises(ValueError, match="not symmetric"):
            fn(A)
    with pytest.raises(ValueError, match="D is not symmetric"):
        kde_mi(A, 1.0)


@pytest.mark.parametrize("name", ["hsic_unbiased", "cka_debiased"])
@pytest.mark.parametrize("m", [2, 3])
def test_unbiased_estimators_need_four_samples(name, m):
    with pytest.raises(ValueError, match=rf"{m}x{m}.*at least 4 samples"):
        PAIR_FUNCS[name](_kernel(m), _kernel(m, 1))
    PAIR_FUNCS[name](_kernel(4), _kernel(4, 1))  # m = 4 is enough


def test_biased_hsic_needs_two_samples():
    with pytest.raises(ValueError, match="at least 2 samples"):
        hsic(torch.ones(1, 1), torch.ones(1, 1))


# --------------------------------------------------------------------------------------------- values


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("name", PAIR_FUNCS)
def test_non_finite_kernel_entries(name, bad):
    K = _kernel(6).clone()
    K[2, 3] = K[3, 2] = bad
    with pytest.raises(ValueError, match=r"K contains 2 NaN or infinite value"):
        PAIR_FUNCS[name](K, _kernel(6, 1))
    with pytest.raises(ValueError, match=r"L contains 2 NaN or infinite value"):
        PAIR_FUNCS[name](_kernel(6, 1), K)


def test_non_finite_values_in_kernel_helpers_and_activations():
    G = kernels.gram(torch.randn(5, 2, dtype=torch.float64))
    G[1, 1] = float("nan")
    for fn in (kernels.sq_distances, lambda G: kernels.gaussian(G, 1.0), kernels.sigma_median, renyi_entropy):
        with pytest.raises(ValueError, match="NaN or infinite"):
            fn(G)
    T = torch.randn(6, 2)
    T[0, 0] = float("inf")
    with pytest.raises(ValueError, match="T contains 1 NaN or infinite"):
        binning_mi(T, torch.arange(6) % 2)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool])
def test_integer_kernel_dtype(dtype):
    K = torch.eye(5).to(dtype)
    with pytest.raises(TypeError, match=rf"K has dtype {dtype}.*floating point.*\.float\(\)"):
        hsic(K, torch.eye(5))
    with pytest.raises(TypeError, match="L has dtype .*floating point"):
        cka(torch.eye(5), K)
    with pytest.raises(TypeError, match="G has dtype .*floating point"):
        kernels.gaussian(K, 1.0)
    with pytest.raises(TypeError, match="Z has dtype .*floating point"):
        kernels.gram(torch.ones(4, 3, dtype=dtype))


def test_integer_numpy_kernel_and_non_array_inputs():
    with pytest.raises(TypeError, match="K has dtype torch.int64"):
        hsic(np.eye(4, dtype=np.int64), np.eye(4))
    with pytest.raises(TypeError, match="K must be a torch.Tensor or numpy.ndarray, got list"):
        hsic([[1.0, 0.0], [0.0, 1.0]], np.eye(2))
    with pytest.raises(TypeError, match="numpy array of objects"):
        hsic(np.eye(3).astype(object), np.eye(3))


# ------------------------------------------------------------------------------------------------ sigma


@pytest.mark.parametrize("sigma", [0.0, -1.0, -5, float("nan"), float("inf")])
def test_bad_sigma_values(sigma):
    G = kernels.gram(torch.randn(5, 2))
    with pytest.raises(ValueError, match=r"sigma must be positive and finite.*sigma=5\.0"):
        kernels.gaussian(G, sigma)
    with pytest.raises(ValueError, match="sigma must be positive and finite"):
        kernels.sigma_from_rule(G, "fixed", sigma=sigma)
    with pytest.raises(ValueError, match="sigma must be positive and finite"):
        kernels.sigma_from_rule(G, "sqrt_d", sigma=sigma, dim=4)


@pytest.mark.parametrize("sigma", ["5", None, [5.0], True])
def test_sigma_of_the_wrong_type(sigma):
    with pytest.raises(TypeError, match=r"sigma must be a positive number, got"):
        kernels.gaussian(kernels.gram(torch.randn(5, 2)), sigma)


@pytest.mark.parametrize(
    "sigma", [torch.tensor([1.0, 0.0]), torch.tensor([1.0, float("nan")]), np.array([-1.0, 2.0]), torch.tensor([])]
)
def test_bad_sigma_tensors(sigma):
    Z = torch.randn(2, 5, 3)
    with pytest.raises(ValueError, match="sigma must be positive and finite"):
        kernels.gaussian(Z @ Z.transpose(-1, -2), sigma)


@pytest.mark.parametrize("sigma", [np.float32(2.5), np.float64(2.5), np.int64(3), torch.tensor(2.5)])
def test_sigma_as_numpy_or_torch_scalar_is_accepted(sigma):
    # a width computed with numpy (np.median of a float32 array is an np.float32) is an ordinary number
    G = kernels.gram(torch.randn(5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    torch.testing.assert_close(kernels.gaussian(G, sigma), kernels.gaussian(G, float(sigma)), rtol=1e-7, atol=0)


def test_unknown_sigma_rule_lists_the_known_ones():
    G = kernels.gram(torch.randn(5, 2))
    message = r"Unknown sigma rule 'median'.*'fixed'.*'sqrt_d'.*'median_d2'.*'median_d'\. Did you mean 'median_d2' or"
    with pytest.raises(ValueError, match=message):
        kernels.sigma_from_rule(G, "median")
    with pytest.raises(ValueError, match=r"Unknown median rule 'fixed'.*'median_d2', 'median_d'"):
        kernels.sigma_median(G, "fixed")


def test_sqrt_d_rule_needs_the_dimension():
    G = kernels.gram(torch.randn(5, 2))
    for dim in (None, 0):
        with pytest.raises(ValueError, match=r"sqrt_d.*pass dim=d"):
            kernels.sigma_from_rule(G, "sqrt_d", sigma=5.0, dim=dim)


def test_median_sigma_of_collapsed_representation():
    G = kernels.gram(torch.ones(6, 3))
    with pytest.raises(ValueError, match=r"median_d2 rule gives sigma = 0.*fixed"):
        kernels.sigma_median(G, "median_d2")
    with pytest.raises(ValueError, match="at least 2 samples"):
        kernels.sigma_median(torch.ones(1, 1))


# ------------------------------------------------------------------------------------------- options


def test_unknown_hsic_normalizer_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"Unknown HSIC normalizer 'gretton'.*'biased', 'unbiased', 'pyglow'"):
        hsic(_kernel(5), _kernel(5), normalizer="gretton")


@pytest.mark.parametrize("eps", [0, -1e-5, float("nan"), float("inf"), "1e-5", None])
def test_bad_nhsic_eps(eps):
    with pytest.raises(ValueError, match=r"eps must be a small positive number.*eps=1e-5"):
        nhsic(_kernel(5), _kernel(5, 1), eps=eps)


@pytest.mark.parametrize("alpha", [0, -1.0, float("nan"), float("inf"), "2"])
def test_bad_renyi_alpha(alpha):
    with pytest.raises(ValueError, match="alpha must be a positive number"):
        renyi_entropy(_kernel(5), alpha=alpha)
    with pytest.raises(ValueError, match="alpha must be a positive number"):
        renyi_mi(_kernel(5), _kernel(5, 1), alpha=alpha)


def test_renyi_needs_a_positive_trace():
    with pytest.raises(ValueError, match="positive trace"):
        renyi_entropy(torch.zeros(4, 4))
    with pytest.raises(ValueError, match="positive trace"):
        renyi_mi(torch.zeros(4, 4), _kernel(4))


def test_kde_argument_errors():
    D = kernels.sq_distances(kernels.gram(torch.randn(6, 2, dtype=torch.float64)))
    with pytest.raises(ValueError, match=r"Unknown KDE bound 'middle'.*'upper', 'lower'"):
        kde_mi(D, 1.0, bound="middle")
    for v in (0.0, -1.0, float("nan"), float("inf"), "1"):
        with pytest.raises(ValueError, match="noise_var must be a positive number"):
            kde_mi(D, v)
    with pytest.raises(ValueError, match=r"D must hold squared distances \(>= 0\)"):
        kde_mi(-D, 1.0)
    with pytest.raises(ValueError, match="labels has 5 samples but the representation has 6"):
        kde_mi(D, 1.0, labels=torch.arange(5))


def test_binning_argument_errors():
    T = torch.randn(6, 2)
    for bins in (0, -3, 2.5, True, "30"):
        with pytest.raises(ValueError, match="bins must be a positive integer"):
            binning_mi(T, torch.arange(6), bins=bins)
    with pytest.raises(ValueError, match="Z has 4 samples but the representation has 6"):
        binning_mi(T, torch.arange(4))


def test_gram_and_label_errors():
    with pytest.raises(ValueError, match=r"Z must have shape \(m, \.\.\.\) with m >= 1"):
        kernels.gram(torch.ones(0, 3))
    with pytest.raises(TypeError, match="labels must be a 1-d tensor of integer class ids"):
        kernels.one_hot(torch.tensor([0.0, 1.0]))
    with pytest.raises(TypeError, match="labels must be a 1-d tensor of integer class ids"):
        kernels.one_hot(torch.tensor([[0, 1]]))
    with pytest.raises(ValueError, match="non-negative class ids"):
        kernels.one_hot(torch.tensor([0, -1, 2]))
    with pytest.raises(ValueError, match=r"label 3 is out of range for num_classes=3"):
        kernels.label_kernel(torch.tensor([0, 3, 1]), num_classes=3)


def test_saturation_needs_two_samples():
    with pytest.raises(ValueError, match="at least 2 samples"):
        kernels.saturation(torch.ones(1, 1))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
def test_kernels_on_different_devices():
    with pytest.raises(ValueError, match=r"K is on cpu but L is on cuda.*move both to one device"):
        hsic(_kernel(5), _kernel(5).cuda())


# ------------------------------------------------------------------------------------------- registry


def test_unknown_estimator_name_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"Unknown estimator 'hsci'\. Known: .*'hsic'.*'cka'"):
        estimators.get("hsci")
    with pytest.raises(ValueError, match="Unknown estimator"):
        estimators.get(None)


@pytest.mark.parametrize(
    ("asked", "meant"),
    [("hsci", "'hsic'"), ("HSCI", "'hsic'"), ("kde", "'kde_upper' or 'kde_lower'"), ("renyi", "'renyi_mi'")],
)
def test_unknown_estimator_name_suggests_the_closest(asked, meant):
    with pytest.raises(ValueError, match=rf"Unknown estimator '{asked}'\. Known: 'hsic', .*\. Did you mean {meant}\?$"):
        estimators.get(asked)


def test_nothing_close_suggests_nothing():
    with pytest.raises(ValueError, match=r"Unknown estimator 'zzz'\. Known: [^?]*\.$"):
        estimators.get("zzz")


@pytest.mark.parametrize(
    ("asked", "name"), [("HSIC", "hsic"), ("CKA_Debiased", "cka_debiased"), ("Kde_Upper", "kde_upper")]
)
def test_estimator_names_ignore_case(asked, name):
    assert estimators.get(asked) is estimators.get(name)


def test_case_is_ignored_only_when_one_name_matches():
    try:
        estimators.register("Mean_Product_Case", lambda K, L: (K * L).mean())
        estimators.register("mean_product_case", lambda K, L: (K * L).sum())
        assert estimators.get("Mean_Product_Case").name == "Mean_Product_Case"  # an exact name wins
        message = r"Unknown estimator 'MEAN_PRODUCT_CASE'.*Did you mean 'Mean_Product_Case' or 'mean_product_case'\?"
        with pytest.raises(ValueError, match=message):
            estimators.get("MEAN_PRODUCT_CASE")
    finally:
        measure_estimators._REGISTRY.pop("Mean_Product_Case", None)
        measure_estimators._REGISTRY.pop("mean_product_case", None)


def test_sigma_rules_kernels_and_options_ignore_case():
    G = kernels.gram(torch.randn(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    assert kernels.sigma_from_rule(G, "FIXED", sigma=2.0) == 2.0
    assert kernels.sigma_from_rule(G, "Sqrt_D", sigma=2.0, dim=4) == 4.0
    torch.testing.assert_close(kernels.sigma_from_rule(G, "Median_D2"), kernels.sigma_median(G, "median_d2"))
    torch.testing.assert_close(kernels.sigma_median(G, "MEDIAN_D"), kernels.sigma_median(G, "median_d"))
    K, L = _kernel(6), _kernel(6, 1)
    torch.testing.assert_close(hsic(K, L, normalizer="Unbiased"), hsic(K, L, normalizer="unbiased"))
    D = kernels.sq_distances(G)
    torch.testing.assert_close(kde_mi(D, 1.0, bound="Lower"), kde_mi(D, 1.0, bound="lower"))
    assert estimators.HSIC(kernel="Gaussian", sigma=5).kernel == "gaussian"


def test_unknown_option_names_suggest_the_closest():
    G = kernels.gram(torch.randn(5, 2))
    with pytest.raises(ValueError, match=r"Unknown sigma rule 'sqrtd'.*Did you mean 'sqrt_d'\?"):
        kernels.sigma_from_rule(G, "sqrtd")
    with pytest.raises(ValueError, match=r"Unknown HSIC normalizer 'unbaised'.*Did you mean 'unbiased'\?"):
        hsic(_kernel(5), _kernel(5), normalizer="unbaised")
    with pytest.raises(ValueError, match=r"Unknown kernel 'gausian'.*Did you mean 'gaussian'\?"):
        estimators.HSIC(kernel="gausian", sigma=5)


def test_duplicate_registration_is_refused():
    with pytest.raises(ValueError, match=r"'hsic' is already registered; pass overwrite=True"):
        estimators.register("hsic", lambda K, L: K.sum())
    assert estimators.get("hsic").fn is hsic  # the built-in is untouched


def test_register_argument_errors():
    with pytest.raises(ValueError, match="non-empty string name"):
        estimators.register("", lambda K, L: 0)
    with pytest.raises(ValueError, match=r"Unknown 'needs' value 'gram'.*'kernels'"):
        estimators.register("x_needs", lambda K, L: 0, needs="gram")
    with pytest.raises(TypeError, match="must be callable"):
        estimators.register("x_not_callable", 3.0)
    assert "x_needs" not in estimators.names() and "x_not_callable" not in estimators.names()


def test_register_get_round_trip():
    name = "test_mean_product_roundtrip"
    assert name not in estimators.names()
    try:

        @estimators.register(name, label="E[K∘L]({a}, {b})", units="nats", variant="toy", options={"power": 2})
        def mean_product(K, L, power=1):
            """Mean of the elementwise product, raised to a power."""
            return (torch.as_tensor(K) * torch.as_tensor(L)).mean() ** power

        spec = estimators.get(name)
        assert spec.name == name and spec.fn is mean_product
        assert spec.needs == "kernels"
        assert spec.description == "Mean of the elementwise product, raised to a power."
        assert spec.axis_label("T", "Y") == "E[K∘L](T, Y) · toy [nats]"
        K = torch.full((3, 3), 2.0)
        assert float(spec(K, K)) == 16.0  # options are applied ...
        assert float(spec(K, K, power=1)) == 4.0  # ... and a call's own keywords win
        assert name in estimators.names()
        with pytest.raises(ValueError, match="already registered"):
            estimators.register(name, mean_product)
        estimators.register(name, lambda K, L: torch.tensor(0.0), overwrite=True)
        assert float(estimators.get(name)(K, K)) == 0.0
    finally:
        measure_estimators._REGISTRY.pop(name, None)
    assert name not in estimators.names()


# ---------------------------------------------------------------------------------- PyGlow evaluators


def test_pyglow_hsic_evaluator_arguments():
    with pytest.raises(ValueError, match=r"needs a width: pass sigma=5"):
        estimators.HSIC(kernel="gaussian")
    with pytest.raises(ValueError, match=r"Unknown kernel 'laplace'.*'gaussian', 'linear'"):
        estimators.HSIC(kernel="laplace", sigma=5)
    with pytest.raises(NotImplementedError, match="criterion"):
        estimators.Estimator().criterion(torch.ones(2, 1), torch.ones(2, 1))


@pytest.mark.skipif(torch.cuda.is_available(), reason="the warning is for machines without CUDA")
def test_gpu_true_without_cuda_warns_and_uses_the_cpu():
    with pytest.warns(RuntimeWarning, match="gpu=True but no CUDA device"):
        ev = estimators.HSIC(kernel="gaussian", gpu=True, sigma=5)
    assert ev.device.type == "cpu"
    x = torch.randn(8, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        v = ev.criterion(x, x)
    assert math.isfinite(float(v))
