# %% [markdown]
# # The information-bottleneck debate, with numbers
#
# Shwartz-Ziv & Tishby 2017 (*Opening the black box of deep neural networks via information*) trained small tanh
# networks on a 12-bit task and saw two phases in the information plane: layers first gain information about the
# input and the label (**fitting**), then lose information about the input (**compression**), which they tied to
# generalisation. Saxe et al. 2018 (*On the information bottleneck theory of deep learning*, ICLR) replied that
# compression comes from **double-sided saturating nonlinearities**: the same networks with ReLU do not compress,
# and the mutual information measured by binning a deterministic network's activations tracks how the
# activations are spread over the bins, not information. Geiger 2021 (*On information plane analyses of neural
# network classifiers — a review*) sums up: plane "compression" is often geometric (saturation, growing weights).
#
# This notebook trains both networks on the 12-bit task and measures them every way the debate did, on the same
# runs:
#
# 1. the task, and 12-10-7-5-4-3-2 networks with tanh and with ReLU;
# 2. I(X;T) by **binning** under three conventions (ibwidget's adaptive bins, IDNNs' fixed edges on [−1, 1], Saxe
#    et al.'s fixed width 0.07), by a **KDE** bound, by **HSIC** and **CKA**;
# 3. whether the labels' dependence is more than chance (the **null band**);
# 4. the **geometric diagnostics** recorded with each snapshot: saturation, weight norms, gradient signal-to-noise.
#
# Under each figure the cell prints the numbers that carry the argument. The settings are small so that the
# notebook runs in a minute or two on a laptop CPU; the papers' settings are in the comments.

# %% tags=["parameters"]
EPOCHS = 300  # Shwartz-Ziv & Tishby: about 10,000 epochs; Saxe et al.: 8,000
BATCH_SIZE = 256  # the papers: small batches (SGD); full batch works too
PROBE = 4096  # every pattern: I(X;T) can reach its 12-bit ceiling only if each of the 4096 inputs is seen
LR = 0.01  # Adam here (fast); the papers: SGD, lr 0.0004 (Shwartz-Ziv & Tishby), 0.01 (Saxe et al.)
SNAPSHOTS = 20  # log-spaced snapshot epochs (the papers: a log-spaced subset of the epochs too)
KDE_NOISE = 0.1  # Saxe et al.'s noise variance for the KDE estimate of I(X;T)
KERNEL_SIGMA = 1.0  # HSIC's and CKA's Gaussian width, for X (12 bits) and the layer alike
PERMUTATIONS = 20  # of the chance floor; 100 or more for a paper
DEVICE = "auto"  # CUDA when present
SEED = 0

# %%
import numpy as np
import torch

import ibwidget as ib

x_all, y_all = ib.datasets.ib12.patterns()
train, val, _ = ib.datasets.ib12.load_data(BATCH_SIZE, validation_split=0.2, seed=SEED)
print(
    f"ib12: {len(x_all)} patterns of 12 bits, {int(y_all.sum())} labelled 1; "
    f"{len(train.dataset)} train, {len(val.dataset)} validation; the probe is all {PROBE} patterns"
)
schedule = sorted({0, *np.unique(np.logspace(0, np.log10(EPOCHS), SNAPSHOTS).astype(int)).tolist()})
print(f"{len(schedule)} snapshots, at epochs {schedule[:8]} ... {schedule[-3:]}")

# %% [markdown]
# ## 1. The task and the two networks
#
# The 12 inputs sit on the vertices of a regular icosahedron; a pattern's label says whether the squared norm of
# the sum of its active vertices exceeds the threshold that splits the patterns in half, a rule the icosahedron's
# rotations leave unchanged (`ib.datasets.ib12`). Each network is 12-10-7-5-4-3-2, the papers' shape; every layer
# is narrower than the probe, so its activations are kept (binning needs them) and its kernels are computed from
# them.

# %%
WIDTHS = (10, 7, 5, 4, 3)


def twelve_bit_network(activation: str) -> ib.IBSequential:
    torch.manual_seed(SEED)
    model = ib.IBSequential(input_shape=(12,), device=DEVICE, name=activation)
    for width in WIDTHS:
        model.add(ib.layers.Dense(width, activation=activation))
    model.add(ib.layers.Dense(2))  # the logits
    model.compile(optimizer="adam", loss="cross_entropy", metrics=["accuracy"], lr=LR)
    return model


runs = {}
for activation in ("tanh", "relu"):
    model = twelve_bit_network(activation)
    train, val, _ = ib.datasets.ib12.load_data(BATCH_SIZE, validation_split=0.2, seed=SEED)  # the same batches
    model.fit_generator(
        train,
        val,
        EPOCHS,
        probe=PROBE,
        probe_data=(x_all, y_all),
        snapshot_epochs=schedule,
        seed=SEED,
        progress=False,
    )
    runs[activation] = model.run
    history = model.run.history
    print(
        f"{activation}: train accuracy {history['accuracy'][-1]:.3f}, validation {history['val_accuracy'][-1]:.3f}, "
        f"{model.run.num_snapshots} snapshots"
    )
LAST = len(WIDTHS) - 1  # the last hidden layer (3 units): the papers' clearest case
names = runs["tanh"].layer_names
print("layers:", names, "| the last hidden layer is", names[LAST])

# %% [markdown]
# ## 2. I(X;T) by binning, three conventions
#
# The network is deterministic and every input is distinct, so I(X;T) by binning is the entropy of the binned
# activations, H(bin(T)): at most 12 bits. How the bins are laid out decides what it measures. The plane below
# overlays both runs (tanh solid, ReLU dashed); toggle the estimator to compare conventions (a kernel estimator
# picked from the dropdown is computed when asked: at a probe of 4096 that takes a minute), and open the
# **Diagnostics** figure's dropdown for the geometry behind each curve.

# %%
view = ib.RunView([runs["tanh"], runs["relu"]], estimators=("binning_saxe", "binning_idnn", "binning"))
view

# %%
BINNINGS = ("binning", "binning_idnn", "binning_saxe")


def peak_and_end(run, estimator, layer, **options):
    """(peak value, its epoch, last value) of a layer's dependence on X."""
    x = run.trajectories(estimator, layers=[run.layer_names[layer]], **options)[:, 0, 0]
    k = int(np.nanargmax(x))
    return float(x[k]), run.epochs[k], float(x[-1])


print("I(X;T) in bits per layer: peak (epoch) -> end\n")
for estimator in BINNINGS:
    print(estimator)
    for activation, run in runs.items():
        cells = []
        for layer in range(len(WIDTHS)):
            peak, at, end = peak_and_end(run, estimator, layer)
            cells.append(f"{peak:5.2f} ({at:>3}) -> {end:5.2f}")
        print(f"  {activation:>4}: " + " | ".join(cells))
print()
for activation, run in runs.items():
    peak, at, end = peak_and_end(run, "binning_saxe", LAST)
    verdict = "falls" if end < peak - 1.0 else "does not fall"
    print(
        f"last hidden layer I(X;T), binning_saxe, {activation}: peak {peak:.2f} bits (epoch {at}) -> end "
        f"{end:.2f} bits: {verdict}"
    )

# %% [markdown]
# Read the last two lines: with Saxe et al.'s fixed-width bins the tanh network's last hidden layer loses
# I(X;T) late in training while the ReLU network's does not. IDNNs' edges on [−1, 1] suit tanh, whose outputs
# live there; on ReLU layers, whose values grow past 1, they put everything above 1 in one bin and can make a ReLU
# layer seem to compress: a bin layout is a modelling choice, not a detail.

# %% [markdown]
# ## 3. The same runs through a KDE bound, HSIC and CKA
#
# The KDE upper bound (Kolchinsky & Tracey 2017) adds Gaussian noise of variance σ² to the activations, as Saxe
# et al. did; HSIC and CKA measure dependence with Gaussian kernels of one width (`KERNEL_SIGMA`), no bins.
# Each compares all 4096 × 4096 pairs of probe samples at every snapshot, so this cell takes the last hidden layer
# only.

# %%
KERNEL_VIEWS = {
    "kde_upper": {"sigma": float(np.sqrt(KDE_NOISE))},
    "hsic": {"sigma": KERNEL_SIGMA},
    "cka": {"sigma": KERNEL_SIGMA},
}
for estimator, options in KERNEL_VIEWS.items():
    for activation, run in runs.items():
        peak, at, end = peak_and_end(run, estimator, LAST, **options)
        print(
            f"{estimator:>9}, {activation:>4}, {names[LAST]}: dependence on X peaks at {peak:.4g} (epoch {at}), "
            f"ends at {end:.4g} ({(end - peak) / abs(peak):+.0%})"
        )

# %% [markdown]
# Binning and the KDE bound read the same story when their noise scale is small against the spread of the
# activations. HSIC and CKA need not: they compare the layer's geometry with X's at the scale of the kernel's
# width, which training reshapes whatever the nonlinearity (try `sigma_rule="median_d"`, a width per layer and
# epoch from the data). A "compression" that
# one estimator shows and another does not is a statement about the estimator as much as about the network.

# %% [markdown]
# ## 4. Is the label information more than chance?
#
# `run.null_band` permutes the labels (and, for the X axis, the inputs) and recomputes the estimator: the band's
# 95% quantile is what chance alone reaches. With every input distinct, binning's I(X;T) is H(bin(T)) whatever
# the order of X, so its X-axis floor equals the value itself: binning cannot tell dependence on X from
# spread. The Y axis is informative: the last hidden layer's I(T;Y) against its floor.

# %%
for activation, run in runs.items():
    last = [names[LAST]]
    floor = run.null_band("binning_saxe", target="labels", permutations=PERMUTATIONS, layers=last)[:, 0]
    value = run.trajectories("binning_saxe", layers=last)[:, 0]
    print(
        f"{activation}: I(T;Y) of {names[LAST]} at the end {value[-1, 1]:.3f} bits, chance floor "
        f"{floor[-1, 1]:.3f} bits; at epoch 0 {value[0, 1]:.3f} against {floor[0, 1]:.3f}. "
        f"I(X;T) {value[-1, 0]:.2f} bits, its permutation floor {floor[-1, 0]:.2f}"
    )

# %% [markdown]
# ## 5. The geometry behind the curves
#
# Every snapshot also recorded each layer's saturated fraction (|tanh| > 0.99; for ReLU, the units dead on the
# whole probe), mean |activation|, weight norm, and the gradient's mean, spread and signal-to-noise ratio over
# the epoch (`run.diagnostics()`; Saxe et al.'s figure 5 after Shwartz-Ziv & Tishby's figure 4).

# %%
for activation, run in runs.items():
    d = run.diagnostics()
    _, at, _ = peak_and_end(run, "binning_saxe", LAST)
    k = run.epochs.index(at)
    sat = d["saturated_fraction"][:, LAST]
    norms = d["weight_norm"][:, LAST]
    snr = d["grad_snr"][:, LAST]
    print(
        f"{activation}, {names[LAST]}: saturated fraction {sat[k]:.2f} at the I(X;T) peak (epoch {at}) -> "
        f"{sat[-1]:.2f} at the end; weight norm {norms[0]:.2f} -> {norms[-1]:.2f}; gradient SNR "
        f"{snr[1]:.2f} (epoch {run.epochs[1]}) -> {snr[-1]:.2f}"
    )
    print("   saturated fraction per layer at the end:", np.round(d["saturated_fraction"][-1, : len(WIDTHS)], 2))

# %% [markdown]
# Compare the lines: the tanh layer's fall in binned I(X;T) comes with a growing saturated fraction and growing
# weights, its values pushed towards ±1 and into fewer bins, so the entropy of the binned activations drops. That
# is geometry (Geiger 2021); whether it is also the compression of an information bottleneck is what the debate is
# about. ReLU units cannot saturate on the high side (their saturated fraction counts dead units instead), and the
# ReLU network's binned I(X;T) does not fall. Change `EPOCHS`, `LR`, the optimizer or the estimators above and see
# which conclusions survive; `run.diagnostics()` and the RunView's Diagnostics figure show every layer.
