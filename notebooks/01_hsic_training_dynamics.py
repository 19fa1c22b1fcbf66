# %% [markdown]
# # Training dynamics in the information plane, measured with HSIC
#
# This notebook rebuilds PyGlow's tutorial *Analysing training dynamics using HSIC criterion* on **ibwidget**.
# We train the tutorial's network (Conv2d(16) → Flatten → Dense 1000 / 500 / 200 → Dense 10, SGD, batch 64)
# and watch, **live**, how every layer's representation moves in the *information plane* while it learns.
# Afterwards we read the trajectories — is there a *fitting* phase, a *compression* phase? — save the run and
# open it again.
#
# It runs anywhere: on **MNIST** when its files (or the network) are available, otherwise on the offline
# **digits** data that ships with scikit-learn (the output below says which); on a **CUDA** GPU when there is
# one, else on the CPU. The default settings are small so that the whole notebook runs in under a minute on
# a laptop; the parameter cell says how to use the tutorial's full settings.

# %% [markdown]
# ## 1. The information plane
#
# A feed-forward network is a chain: the input $X$ goes through layer after layer, each producing a new
# *representation* $T_1, T_2, \dots$ (the layer's output), and the last one predicts the label $Y$. For each
# layer we ask two questions:
#
# * **How much does $T$ still depend on the input $X$?** (x-axis: *complexity* of the representation)
# * **How much does $T$ depend on the label $Y$?** (y-axis: how *relevant* — useful for generalisation — it is)
#
# Every epoch gives one point per layer, so training draws one trajectory per layer. Tishby and co-authors
# measured both axes with mutual information, $I(T;X)$ and $I(T;Y)$ (Tishby & Zaslavsky 2015; Shwartz-Ziv &
# Tishby 2017, *Opening the black box of deep neural networks via information*). They reported two phases:
# first the layers **fit** (both quantities grow: up and to the right), then they **compress** (dependence on
# $X$ falls while dependence on $Y$ stays: to the left) — the network forgets input details the label does not
# need. Mutual information is hard to estimate for continuous, deterministic networks, so, like the tutorial,
# we use a kernel dependence measure instead and keep the name "information plane" even though HSIC is not an
# information quantity.

# %% [markdown]
# ## 2. What HSIC measures
#
# Take $m$ samples. For the representation $T$ build the $m \times m$ *kernel matrix*
# $K_{ij} = k(t_i, t_j)$, a similarity between samples $i$ and $j$; here the Gaussian kernel
# $k(t, t') = \exp\left(-\lVert t - t' \rVert^2 / 2\sigma^2\right)$. Build $L$ the same way for the other
# variable ($X$, or $Y$). The **Hilbert–Schmidt Independence Criterion** (Gretton et al. 2005) is
#
# $$\mathrm{HSIC}(T, Y) = \frac{1}{(m-1)^2}\,\operatorname{tr}(K H L H),
# \qquad H = I - \tfrac{1}{m}\mathbf{1}\mathbf{1}^\top .$$
#
# $H$ centres the kernels; the trace then adds up, over all pairs of samples, "are these two similar in $T$"
# times "are they similar in $Y$". It is large when samples that look alike to the layer also share a label,
# and (for a Gaussian kernel, with enough samples) zero exactly when $T$ and $Y$ are independent. It is a
# *dependence* measure, not an amount of information: its scale depends on the kernel, on $\sigma$ and on the
# normaliser (PyGlow divided by $m-1$ instead of $(m-1)^2$, so its values are $m-1$ times larger).
# The HSIC-bottleneck paper (Ma, Lewis & Kleijn 2020) trains networks with these quantities directly.

# %% [markdown]
# ## 3. Why a probe set
#
# PyGlow computed HSIC on every training batch, in training mode, and averaged. ibwidget instead keeps a
# fixed, seeded **probe**: a subset of the validation data (`probe=` samples). After every epoch (and once
# before training: epoch 0) the network runs on the probe in evaluation mode and ibwidget stores each layer's
# Gram matrix $G = TT^\top$ of the probe. Three consequences:
#
# * every point of a trajectory is measured on *the same* samples, so epochs are comparable;
# * evaluation mode means no dropout noise and fixed batch-norm statistics in the measurement;
# * all the estimators in this project need only these Gram matrices, so **the estimator, $\sigma$ and the
#   target can be changed after training**, for every recorded epoch, without retraining. Try it with the
#   widget's controls below.
#
# The price: memory grows with $m^2$ per layer and epoch, and a probe of $m$ samples gives estimates whose
# noise shrinks like $1/\sqrt{m}$.

# %% [markdown]
# ## 4. Parameters
#
# The tutorial's full settings are `EPOCHS = 7`, `PROBE = 512`, `DATASET = "mnist"` (7 epochs of MNIST's
# 750 batches; expect several minutes per epoch on a CPU, seconds on a GPU). The digits data has only 18
# batches of 64 per epoch, so we train for more epochs on it.

# %% tags=["parameters"]
EPOCHS = 12  # seed tutorial: 7 (on MNIST)
BATCH_SIZE = 64  # seed tutorial: 64
PROBE = 256  # probe samples; seed settings: 512 (PyGlow used every training batch instead)
SIGMA = 5.0  # Gaussian kernel width for T, X (and the output) under the "fixed" rule; seed tutorial: 5
SIGMA_RULE = "median_d2"  # the widgets open on it: sigma^2 = median squared distance, per layer and epoch;
# "fixed": SIGMA for every layer, as in the seed tutorial (too small for its wide layers: see section 7)
LR = 0.01  # SGD learning rate (momentum 0.9)
DATASET = "auto"  # "auto": MNIST if its files or the network are there, else digits; or "mnist", "digits"
DOWNLOAD_MNIST = True  # try to download MNIST when its files are missing (fails fast without a network)
DEVICE = "auto"  # "auto": CUDA when present, else the CPU
SEED = 0

# %%
import numpy as np
import torch

import ibwidget as ib
from ibwidget.information_bottleneck.estimator import HSIC
from ibwidget.layers import Conv2d, Dense, Flatten
from ibwidget.plane.table import trajectory_table

torch.manual_seed(SEED)
print(f"ibwidget {ib.__version__}, torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}")


# %% [markdown]
# ## 5. The data
#
# MNIST has 70,000 handwritten digits of 28×28 pixels. When its files are not on this machine and cannot be
# downloaded (or torchvision, which reads them, is not installed), we fall back to scikit-learn's **digits**:
# 1,797 real handwritten digits of 8×8 pixels, the same task at a smaller scale. 20% of the training images are
# held out for validation; the probe is drawn from them.


# %%
def load(dataset):
    """(name, train, val): MNIST when possible (dataset "auto" or "mnist"), else the offline digits."""
    if dataset in ("auto", "mnist"):
        try:
            train, val, _ = ib.datasets.mnist.load_data(
                BATCH_SIZE, validation_split=0.2, download=DOWNLOAD_MNIST, seed=SEED
            )
            return "MNIST", train, val
        except ib.datasets.TorchvisionMissingError:
            if dataset == "mnist":
                raise
            print("MNIST is not available here: torchvision, which reads it, is not installed ('ibwidget[vision]').")
        except (ib.datasets.DatasetNotFoundError, FileNotFoundError) as err:
            if dataset == "mnist":
                raise
            where = ib.datasets.default_root() / "MNIST" / "raw"
            how = "no network to download them" if DOWNLOAD_MNIST else "download switched off"
            print(f"MNIST is not available here: no files in {where} and {how} ({type(err).__name__}).")
    train, val, _ = ib.datasets.digits.load_data(BATCH_SIZE, validation_split=0.2, seed=SEED)
    return "digits", train, val


DATA_NAME, train, val = load(DATASET)
x0, _ = next(iter(train))
INPUT_SHAPE = tuple(x0.shape[1:])
what = "MNIST" if DATA_NAME == "MNIST" else "the offline digits data (scikit-learn, 8x8 pixels)"
print(
    f"Using {what}: {len(train.dataset)} training and {len(val.dataset)} validation images, input shape {INPUT_SHAPE}"
)

# %% [markdown]
# ## 6. The model
#
# The tutorial's network, layer for layer, with one deliberate change: the last layer returns **logits**
# (`Dense(10)` without softmax), because the cross-entropy loss applies the softmax itself. PyGlow's
# `Dense(10, activation='softmax')` with `cross_entropy` applied it twice, which flattened the loss (ibwidget
# warns and skips the second softmax if you write it that way).
#
# We also attach PyGlow's HSIC evaluator, exactly as the tutorial does, so `model.evaluated_dynamics` will hold
# PyGlow's array. ibwidget tracks every layer with parameters — the convolution and the four dense layers —
# so we get the tutorial's five trajectories.

# %%
model = ib.IBSequential(input_shape=INPUT_SHAPE, device=DEVICE, name=f"seed model on {DATA_NAME}")
model.add(Conv2d(filters=16, kernel_size=3, stride=1, padding=1, activation="relu"))
model.add(Flatten())
model.add(Dense(1000, activation="relu"))
model.add(Dense(500, activation="relu"))
model.add(Dense(200, activation="relu"))
model.add(Dense(10))  # logits: the loss applies the softmax
model.compile(optimizer="SGD", loss="cross_entropy", metrics=["accuracy"], lr=LR, momentum=0.9)
model.attach_evaluator(HSIC(kernel="gaussian", gpu=torch.cuda.is_available(), sigma=SIGMA))
print("device:", model.device, "| tracked layers:", model.tracked_layer_names)

# %% [markdown]
# ## 7. Train and watch
#
# The `Trainer` widget trains in a background thread. From top to bottom:
#
# * **run bar** — Start / Pause / Stop, the epoch, a progress bar with speed and time left, the device, the
#   status;
# * **layer toggles** — one per tracked layer, in its plot colour: click to hide or show a trajectory;
# * **estimator**, **σ** (log slider) and **σ rule**, **target Y** (true labels, or the network's own output as
#   PyGlow used) — changing any of them redraws every recorded epoch at once, even during training; the
#   *kernel saturation* gauge beside them tells whether σ is sensible (more in notebook 03 and below);
# * **figures** — the information plane (one line per layer, points coloured by epoch: hover for values),
#   the dependence on X and on Y against the epoch (the tutorial's second set of plots), loss and accuracy.
#
# **Which σ?** The widget opens on the **median rule** (`SIGMA_RULE = "median_d2"`): for every layer and epoch
# σ² is the median squared distance between probe samples, so the kernel always sees some pairs as close and
# some as far — the gauge reads about 0.6. The tutorial's choice, a **fixed σ = 5** for every layer, is one
# click away: choose `fixed` as the σ rule (the slider holds 5). The gauge then falls from about 0.8 before
# training to about 0.03 — *σ too small* — by the end (on digits): training spreads the probe samples about
# 20 units apart in every layer (before training, from 11 in the convolution down to 0.03 at the output), so
# at σ = 5 every pair looks unrelated and the kernel matrix is almost the identity, whatever the layer
# learned. One σ for all layers and epochs cannot suit distances that change this much; the median rule
# follows them. The cell after training prints both readings per layer.
#
# The next cell displays the widget; the one after starts training and waits for the end (`wait()` blocks
# this notebook until training ends; leave it out to keep working while the model trains — the buttons work
# either way).

# %%
trainer = ib.Trainer(
    model,
    train,
    val,
    epochs=EPOCHS,
    probe=PROBE,
    sigma=SIGMA,
    sigma_rule=SIGMA_RULE,
    estimators=("hsic", "hsic_pyglow", "cka"),
    seed=SEED,
)
trainer

# %%
trainer.start()
run = trainer.wait()
print(
    f"{trainer.status}: {len(run.epochs) - 1} epochs, final validation accuracy {run.history['val_accuracy'][-1]:.3f}"
)

# %%
# The gauge's reading (mean off-diagonal kernel value; informative between about 0.05 and 0.9), per layer
print(f"{'sigma':>24}  {'epoch':>5}  " + "".join(f"{name:>10}" for name in run.layer_names))
for rule, what in ((SIGMA_RULE, f"{SIGMA_RULE} (widget)"), ("fixed", f"fixed {SIGMA:g} (tutorial)")):
    saturation = run.saturation(SIGMA, rule)
    for row in (0, -1):
        cells = "".join(f"{value:>10.3f}" for value in saturation[row])
        print(f"{what:>24}  {run.epochs[row]:>5}  {cells}")


# %% [markdown]
# ## 8. The numbers behind the plot
#
# `run.trajectories(estimator, sigma=..., target=...)` returns an array of shape (epochs + 1, layers, 2):
# `[..., 0]` is each layer's dependence on X, `[..., 1]` on Y. Here it is as a table (epoch 0 is the untrained
# network), with the tutorial's fixed σ = 5 as in its plots.


# %%
traj = run.trajectories("hsic", sigma=SIGMA)
print(trajectory_table(run, "hsic", sigma=SIGMA))
print("\narray shape:", traj.shape)

# %% [markdown]
# PyGlow's own layout is still there: `model.evaluated_dynamics` has shape (epochs, batches, evaluators,
# layers, 2) — with one "batch" (the probe) per epoch — and the tutorial's `np.mean(..., 1)` gives
# (epochs, evaluators, layers, 2). Its values are PyGlow's: HSIC with the $1/(m-1)$ normaliser, measured
# against the **network's output**, not the labels.

# %%
evaluated_dynamics = np.mean(model.evaluated_dynamics, 1)  # averaged over batches, as in the tutorial
print(evaluated_dynamics.shape)

# %% [markdown]
# ## 9. Reading the plane: fitting and compression
#
# The tutorial's reading: the first layers at once gain dependence on $Y$ while their dependence on $X$ drops;
# the later layers show two phases — a fast **fitting** (generalisation) phase in which both grow, then a
# **compression** phase in which HSIC(T, X) falls. In its run without regularisation the last layers kept
# increasing their complexity while their HSIC(T, Y) fell back. The cell below looks for these phases in our
# run: for each layer, the epoch at which HSIC(T, X) peaked and how much it fell afterwards.

# %%
for i, name in enumerate(run.layer_names):
    x, y = traj[:, i, 0], traj[:, i, 1]
    peak = int(np.argmax(x))
    drop = (x[peak] - x[-1]) / x[peak] if x[peak] > 0 else 0.0
    phase = (
        "fitting, then compression"
        if 0 < peak < len(x) - 1 and drop > 0.02
        else ("still fitting (HSIC(T,X) rising at the end)" if peak == len(x) - 1 else "no clear compression")
    )
    print(
        f"{name:>9}: HSIC(T,X) peaks at epoch {run.epochs[peak]:>2} and then falls {100 * drop:4.1f}%; "
        f"HSIC(T,Y) {y[0]:.4f} -> {y[-1]:.4f}: {phase}"
    )

# %% [markdown]
# **Be careful with conclusions.** Whether a compression phase appears depends on more than the network:
#
# * on the **activation** — Saxe et al. (2018, *On the information bottleneck theory of deep learning*) found
#   compression with saturating tanh units but not with ReLU, and traced much of it to the estimator;
# * on the **estimator and its normaliser** (HSIC, CKA, mutual-information estimates…), on **σ** (a too small or
#   too large width makes every layer look alike) and on the **target** (labels or the network's output) —
#   notebook 03 shows the same run under each choice;
# * on the **probe**, the data set, the number of epochs and the random seed.
#
# Use the widget's controls now: choose the `fixed` σ rule and set σ to 0.5 or 50, switch the target to
# `output` (PyGlow's choice) or the estimator to `cka`, and watch whether the phases survive.

# %% [markdown]
# ## 10. Save the run and look at it again
#
# A run file (`.ibrun`) holds the configuration, the history and every epoch's snapshot (no pickle). `RunView`
# shows saved runs with the same figures and controls — give it several runs to compare them, as notebook 02
# does.

# %%
from pathlib import Path

Path("runs").mkdir(exist_ok=True)
path = run.save(f"runs/01_seed_{DATA_NAME.lower()}.ibrun")
print(f"Saved the run to {path} ({path.stat().st_size / 1e6:.1f} MB)")
saved = ib.load_run(path)
print(saved)
ib.RunView(saved, estimators=("hsic", "hsic_pyglow", "cka"), sigma=SIGMA, sigma_rule=SIGMA_RULE)

# %% [markdown]
# ## What next
#
# * **02_dropout_and_regularization** — the tutorial's "future work": train with and without dropout and
#   compare the trajectories.
# * **03_estimators_and_sigma** — the same run under HSIC, CKA, nHSIC, Rényi and KDE mutual information; σ too
#   small and too large; labels versus the output as Y.
# * **04_custom_estimator** — register your own dependence measure and find it in the widget.
# * **05_any_pytorch_model** — track the layers of any `nn.Module` by name.
#
# References: Gretton et al. 2005 (HSIC); Tishby & Zaslavsky 2015; Shwartz-Ziv & Tishby 2017; Saxe et al.
# 2018; Ma, Lewis & Kleijn 2020 (HSIC bottleneck); Kornblith et al. 2019 (CKA).
