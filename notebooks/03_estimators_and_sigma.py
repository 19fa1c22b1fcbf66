# %% [markdown]
# # Same run, different lenses: estimators, σ and the target
#
# An information-plane picture is a measurement, and every measurement has settings. Because ibwidget keeps
# each epoch's Gram matrices of the probe, we can train **once** and look at the same training under
#
# 1. different **estimators**: HSIC with three normalisers, CKA, normalised HSIC, matrix-based Rényi mutual
#    information and kernel-density (KDE) mutual-information bounds;
# 2. different **kernel widths σ**, with the *saturation gauge* that tells a useful σ from a useless one;
# 3. different **targets Y**: the true labels, or — as PyGlow did — the network's own output.
#
# The point of this notebook: conclusions such as "this layer compresses" can appear or disappear with these
# choices, so a plot should always say which ones it used.

# %% tags=["parameters"]
EPOCHS = 12  # the seed tutorial trained 7 epochs of MNIST
BATCH_SIZE = 64  # seed tutorial: 64
PROBE = 128  # small: the Rényi estimator needs eigenvalues of m x m matrices; seed settings: 512
SIGMA = 5.0  # seed tutorial: 5
LR = 0.01
DATASET = "digits"  # offline; "mnist" needs its files or the network
DEVICE = "auto"  # CUDA when present
SEED = 0

# %%
import numpy as np
import torch

import ibwidget as ib
from ibwidget.models import seed_model

train, val, test = getattr(ib.datasets, DATASET).load_data(BATCH_SIZE, validation_split=0.2, seed=SEED)
x0, _ = next(iter(train))
INPUT_SHAPE = tuple(x0.shape[1:])
print(f"{DATASET}: {len(train.dataset)} training and {len(val.dataset)} validation images of shape {INPUT_SHAPE}")

torch.manual_seed(SEED)
model = seed_model(INPUT_SHAPE, device=DEVICE, name="seed model")  # the tutorial's network, ending in logits
model.compile(optimizer="SGD", loss="cross_entropy", metrics=["accuracy"], lr=LR, momentum=0.9)
model.fit_generator(train, val, EPOCHS, probe=PROBE, seed=SEED, progress=False)
run = model.run
print(run, "| final val acc", round(run.history["val_accuracy"][-1], 3))

# %% [markdown]
# ## 1. Estimators
#
# | name | what it computes | reference |
# |---|---|---|
# | `hsic` | $\operatorname{tr}(KHLH)/(m-1)^2$, biased | Gretton et al. 2005 |
# | `hsic_unbiased` | unbiased HSIC (can be slightly negative) | Song et al. 2012 |
# | `hsic_pyglow` | $\operatorname{tr}(KHLH)/(m-1)$: PyGlow's scale, $m-1$ times `hsic` | PyGlow 0.1.7 |
# | `cka` | centred kernel alignment: HSIC normalised to $[0, 1]$ | Cortes et al. 2012; Kornblith et al. 2019 |
# | `nhsic` | normalised HSIC with a small regulariser ε | Fukumizu et al. 2008; Ma et al. 2020 |
# | `renyi_mi` | matrix-based Rényi α-mutual information, bits | Sanchez Giraldo et al. 2015; Yu et al. 2019 |
# | `kde_upper`, `kde_lower` | pairwise KDE bounds, noise variance σ², bits | Kolchinsky & Tracey 2017 |
#
# The cell below computes every layer's trajectory under each of them (from the stored snapshots: no
# retraining) and reduces it to three readings a paper might report:
#
# * **X trend**: did the layer's dependence on X go up or down over training (last epoch vs. epoch 1)?
# * **compresses?**: did that dependence peak and then fall by more than 2%?
# * **deepest layer on top?**: is the last layer the most dependent on Y at the end?

# %%
ESTIMATORS = ["hsic", "hsic_unbiased", "hsic_pyglow", "cka", "nhsic", "renyi_mi", "kde_upper", "kde_lower"]


def readings(traj):
    x = traj[:, :, 0]
    trend = "".join("↑" if x[-1, i] > x[1, i] else "↓" for i in range(x.shape[1]))
    falls = (x.max(0) - x[-1]) / np.abs(x.max(0)).clip(1e-12)
    peaked_early = x.argmax(0) < len(x) - 1
    compresses = "".join("C" if (f > 0.02 and early) else "." for f, early in zip(falls, peaked_early, strict=True))
    top = "yes" if traj[-1, -1, 1] >= traj[-1, :, 1].max() - 1e-12 else "no"
    return trend, compresses, top


print("layers:", run.layer_names, "| arrows and C/. per layer, first to last\n")
print(
    f"{'estimator':>14} {'X trend':>8} {'compresses?':>12} {'last on top?':>13}   "
    f"{'last layer at the end: vs X':>28} {'vs Y':>10}"
)
results = {}
for name in ESTIMATORS:
    traj = run.trajectories(name, sigma=SIGMA)
    results[name] = traj
    trend, comp, top = readings(traj)
    unit = ib.estimators.get(name).units or "-"
    x_end, y_end = traj[-1, -1]
    print(f"{name:>14} {trend:>8} {comp:>12} {top:>13}   {x_end:>22.4g} [{unit:>4}] {y_end:>9.4g}")

ratio = results["hsic_pyglow"] / results["hsic"]
print(
    f"\nhsic_pyglow / hsic = {ratio.min():.2f} .. {ratio.max():.2f} (= m - 1 = {run.m - 1}): same shape, another scale"
)

# %% [markdown]
# What to notice:
#
# * the three HSIC variants draw the same *shapes* at different scales (and the unbiased one removes a small
#   positive bias): never compare HSIC numbers between tools without the normaliser;
# * CKA divides by the kernels' own sizes; a layer whose kernel simply gets "bigger" (more spread) gains HSIC
#   but not necessarily CKA, so trends can flip between the two;
# * the mutual-information estimators are in bits and are bounded by $\log_2 m$ — with a probe of
#   $m$ = 128 distinct inputs, $I(T;X)$ of a deterministic layer saturates near 7 bits, so "compression" of
#   $I(T;X)$ often measures only how the estimator's noise or kernel width compares to the layer's scale
#   (Saxe et al. 2018; Goldfeld et al. 2019).

# %% [markdown]
# ## 2. The kernel width σ and the saturation gauge
#
# The Gaussian kernel $\exp(-d^2/2\sigma^2)$ compares a distance $d$ between two samples with σ:
#
# * **σ far below the typical distance** → every off-diagonal kernel value is ≈ 0: each sample is similar only to
#   itself, every layer looks like "all samples are different", and all trajectories collapse together;
# * **σ far above the typical distance** → every kernel value is ≈ 1: nothing can be told apart, HSIC → 0;
# * useful σ lie in between. The **saturation gauge** is the mean off-diagonal kernel value: near 0 or near 1
#   means σ is too small or too large for that layer.
#
# A fixed σ = 5 (the tutorial's) suits some layers better than others — a 1000-unit layer has larger distances
# than a 10-unit one. The median rules (`sigma_rule="median_d2"`: σ² = median squared distance) adapt σ per
# layer and epoch.


# %%
def sigma_row(label: str, **width) -> str:
    """Saturation and HSIC(T, Y) per layer at the last epoch, and the compression reading, for one sigma."""
    sat = run.saturation(**width)[-1]
    traj = run.trajectories("hsic", **width)
    cells = " ".join(f"{s:8.3f}" for s in sat) + "   " + " ".join(f"{v:7.4f}" for v in traj[-1, :, 1])
    return f"{label:>9} {cells}  {readings(traj)[1]}"


print(f"{'sigma':>9} {'saturation per layer (last epoch)':>44}   {'HSIC(T,Y) per layer (last epoch)':>39}  compresses?")
for sigma in (0.05, 0.5, 2.0, SIGMA, 20.0, 100.0, 1000.0):
    print(sigma_row(f"{sigma:g}", sigma=sigma))
print(sigma_row("median_d2", sigma_rule="median_d2"))

# %% [markdown]
# Read the table row by row. Where the gauge is near 0 (σ far too small) every layer gets the same value —
# HSIC(T, Y) no longer depends on the layer at all — and near 1 (σ far too large) everything goes to 0. Check the
# row of the tutorial's σ = 5: for the wide hidden layers of this network its gauge is close to 0, so that
# choice sits at the edge of the useful range, and the "compresses?" column changes between neighbouring
# values of σ. A conclusion that holds only for one σ is a property of σ, not of the network.
#
# The widget shows the same gauge next to its controls. Below, a `RunView` of this run; the next cell moves its
# σ slider to a too small and a too large value, reads the gauge, and finally switches to the `median_d2`
# rule (try the slider yourself: every epoch is redrawn at once).

# %%
view = ib.RunView(run, estimators=("hsic", "cka", "renyi_mi", "kde_upper"), sigma=SIGMA)
view

# %%
for sigma in (0.05, 1000.0, SIGMA):
    view.controls.sigma.value = sigma
    view.sync()
    print(f"sigma = {sigma:>7g}: {view.saturation.value}")
view.controls.sigma_rule.value = "median_d2"
view.sync()
print(f"rule median_d2: {view.saturation.value}")

# %% [markdown]
# ## 3. The target: labels or the network's output?
#
# ibwidget's default Y is the **true label** (one-hot, linear kernel). PyGlow measured "HSIC(H, Y)" against the
# **network's own softmax output**, with the same Gaussian σ = 5. Two problems with that choice:
#
# * the output is a function of $T$ itself, so the dependence grows as the network becomes *confident* — also
#   when it is confidently wrong; it is not a measure of generalisation;
# * a softmax output lives in a tiny box (distances ≤ √2), so with σ = 5 its kernel values are all between
#   0.96 and 1: the kernel is saturated and HSIC values are minute.

# %%
model.eval()
with torch.no_grad():
    probs = torch.softmax(model(run.probe_x.to(model.device)), -1).cpu()
K = ib.kernels.gaussian(ib.kernels.gram(probs), SIGMA)
off = K[~torch.eye(len(K), dtype=torch.bool)]
print(f"Gaussian kernel of the softmax output, sigma={SIGMA}: values in [{off.min():.3f}, {off.max():.3f}]")

labels = run.trajectories("hsic", sigma=SIGMA, target="labels")
output = run.trajectories("hsic", sigma=SIGMA, target="output")
cka_out = run.trajectories("cka", sigma=SIGMA, target="output")
print(f"\n{'layer':>9} {'HSIC(T, labels)':>16} {'HSIC(T, output)':>16} {'CKA(T, output)':>15}   (last epoch)")
for i, name in enumerate(run.layer_names):
    print(f"{name:>9} {labels[-1, i, 1]:>16.4g} {output[-1, i, 1]:>16.4g} {cka_out[-1, i, 1]:>15.4g}")
# readings() looks at [..., 0]: reversing the last axis makes it read the dependence on Y
print("\nY trend (labels):", readings(labels[..., ::-1])[0], "  Y trend (output):", readings(output[..., ::-1])[0])

# %% [markdown]
# ## Why conclusions depend on these choices
#
# * **Scale** is arbitrary: normalisers differ by factors of $m$ between tools, kernels by their σ.
# * **Shape** can change: centred (HSIC) versus normalised (CKA, nHSIC) measures, kernel versus
#   mutual-information estimators, and σ can each turn a rise into a fall for a given layer.
# * **Y** matters: dependence on the labels measures what the layer knows about the task; dependence on the
#   output measures agreement with the network's own (maybe wrong) predictions.
# * Mutual information of a deterministic network is infinite (or $\log_2 m$ on a finite probe) in
#   principle; finite values come from binning, noise or kernel width — the estimator *defines* the quantity
#   (Saxe et al. 2018; Goldfeld et al. 2019; Geiger 2021, *On information plane analyses of neural network
#   classifiers — a review*).
#
# Report the estimator, its normaliser, σ (or its rule), the target and the probe size with every information
# plane, and check that a claim survives a change of each.
