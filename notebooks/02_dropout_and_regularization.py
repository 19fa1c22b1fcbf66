# %% [markdown]
# # Does regularisation change the trajectories? Dropout, weight decay, and training without back-propagation
#
# The seed tutorial ends with *future work*: "try using some regularization like dropout and observe the
# information plane trajectory". Its run without regularisation showed the later layers *increasing* their
# dependence on the input while their dependence on the label fell back — the signature of a network that
# memorises. Here we train the same network three times, identically except for the regularisation, and
# overlay the three runs in one `RunView`:
#
# * **none** — the tutorial's setting;
# * **dropout** (Srivastava et al. 2014) — each hidden unit is zeroed with probability `DROPOUT` during
#   training, so no unit can rely on exact input details; *information dropout* (Achille & Soatto 2018)
#   makes the link to the information bottleneck explicit;
# * **weight decay** — an L2 penalty on the weights (`weight_decay` in the optimizer).
#
# The hypothesis to test: regularised layers keep less dependence on X (move left in the plane) for the same
# or better dependence on Y. At the end, a fourth network of the same shape learns with no back-propagation at
# all: each layer is trained *for* the information plane (the HSIC bottleneck), and we compare it with the first.

# %% tags=["parameters"]
EPOCHS = 12  # per run; the seed tutorial trained 7 epochs of MNIST
BATCH_SIZE = 64  # seed tutorial: 64
PROBE = 256  # seed settings: 512
SIGMA = 5.0  # seed tutorial: 5
LR = 0.01  # SGD with momentum 0.9
DROPOUT = 0.5  # dropout probability after each hidden Dense layer
WEIGHT_DECAY = 5e-4  # L2 penalty of the third run
HSIC_EPOCHS = 6  # HSIC-bottleneck pre-training of the fourth network's hidden layers
HEAD_EPOCHS = 4  # then its output layer, fitted on them with cross-entropy
BETA = 100.0  # the weight of HSIC(T, Y) against HSIC(T, X) in each layer's objective (PyGlow's notebook: 100)
DATASET = "digits"  # offline; "mnist" needs its files or the network
DEVICE = "auto"  # CUDA when present
SEED = 0

# %%
import torch

import ibwidget as ib
from ibwidget.models import seed_model

train, val, test = getattr(ib.datasets, DATASET).load_data(BATCH_SIZE, validation_split=0.2, seed=SEED)
x0, _ = next(iter(train))
INPUT_SHAPE = tuple(x0.shape[1:])
print(f"{DATASET}: {len(train.dataset)} training and {len(val.dataset)} validation images of shape {INPUT_SHAPE}")


# %% [markdown]
# ## Three runs
#
# Every run starts from the same initial weights (same random seed), sees the batches in the same order and
# is measured on the same probe, so the only difference is the regulariser. Note that dropout is active only
# while training: the probe is evaluated in evaluation mode, so the trajectories describe the deterministic
# network that the dropout-trained weights define. We train without a live widget here
# (`fit_generator(..., progress=False)`); each run takes a few seconds on a CPU.
# `ibwidget.models.seed_model` builds the tutorial's network, with a `Dropout` layer after each hidden Dense
# layer when asked.


# %%
variants = [
    ("no regularisation", 0.0, 0.0),
    (f"dropout {DROPOUT}", DROPOUT, 0.0),
    (f"weight decay {WEIGHT_DECAY:g}", 0.0, WEIGHT_DECAY),
]
runs = []
for name, dropout, weight_decay in variants:
    torch.manual_seed(SEED)  # the same initial weights for every run
    model = seed_model(INPUT_SHAPE, device=DEVICE, dropout=dropout, name=name)  # the tutorial's network
    model.compile(
        optimizer="SGD", loss="cross_entropy", metrics=["accuracy"], lr=LR, momentum=0.9, weight_decay=weight_decay
    )
    model.fit_generator(train, val, EPOCHS, probe=PROBE, seed=SEED, progress=False)
    run = model.run
    runs.append(run)
    h = run.history
    print(
        f"{name:>20}: train acc {h['accuracy'][-1]:.3f}, val acc {h['val_accuracy'][-1]:.3f}, "
        f"val loss {h['val_loss'][-1]:.3f}  (layers {run.layer_names})"
    )

# %% [markdown]
# ## Compare them in one view
#
# `RunView` draws each run with its own line style (see the legend) and the layers in their colours. Hide
# layers with the toggles to compare one layer across runs, and change the estimator or σ: all three runs are
# re-estimated together.

# %%
view = ib.RunView(runs, estimators=("hsic", "cka"), sigma=SIGMA)
view


# %% [markdown]
# ## The same comparison in numbers
#
# For each run and layer: where the layer ends up (HSIC with X and with Y at the last epoch), and how much its
# dependence on X fell from its peak — the size of a compression phase, if any.


# %%
def summary(estimator="hsic", sigma=SIGMA):
    spec = ib.estimators.get(estimator)
    print(
        f"{spec.axis_label('T', 'X')} / {spec.axis_label('T', 'Y')} at the last epoch, sigma={sigma}; "
        "'fall' = drop of the dependence on X from its peak"
    )
    print(f"{'layer':>9} " + "".join(f"{name:>34}" for name, _, _ in variants))
    trajs = [run.trajectories(estimator, sigma=sigma) for run in runs]
    for i, layer in enumerate(runs[0].layer_names):
        cells = ""
        for traj in trajs:
            x, y = traj[:, i, 0], traj[:, i, 1]
            fall = 100 * (x.max() - x[-1]) / x.max()
            cells += f"{x[-1]:>11.4f} {y[-1]:>9.4f} fall {fall:4.1f}%"
        print(f"{layer:>9} {cells}")


summary("hsic")
print()
summary("cka")

plain, dropped = runs[0].trajectories("hsic", sigma=SIGMA), runs[1].trajectories("hsic", sigma=SIGMA)
deep = runs[0].layer_names[-2]  # the last hidden layer
i = runs[0].layer_names.index(deep)
word = "less" if dropped[-1, i, 0] < plain[-1, i, 0] else "more"
print(
    f"\nIn this run, dropout left the last hidden layer ({deep}) with {word} dependence on X "
    f"({dropped[-1, i, 0]:.4f} vs {plain[-1, i, 0]:.4f}) and HSIC(T, Y) {dropped[-1, i, 1]:.4f} vs "
    f"{plain[-1, i, 1]:.4f}."
)

# %% [markdown]
# ## Without back-propagation: the HSIC bottleneck
#
# Ma, Lewis & Kleijn (2020, *The HSIC bottleneck: deep learning without back-propagation*) turn the information
# plane into the training objective. Each layer $i$, fed the previous layer's output *detached* (no gradient
# flows between layers), minimises
#
# $$\mathrm{HSIC}(T_i, X) - \beta\, \mathrm{HSIC}(T_i, Y),$$
#
# i.e. it is pushed straight up and to the left in the plane. Only afterwards is an output layer fitted on the
# last representation, with cross-entropy and back-propagation through that one layer. `HSICSequential` is
# PyGlow's class for this; here it gets the tutorial's layers with an `HSICoutput` as the output layer, and
# PyGlow's criterion (Gaussian kernels of width σ = 5, normaliser $1/(m-1)$). Both phases record into one run.

# %%
from ibwidget.information_bottleneck.estimator import HSIC
from ibwidget.layers import Conv2d, Dense, Flatten, HSICoutput
from ibwidget.models import HSICSequential

torch.manual_seed(SEED)
hsic_net = HSICSequential(INPUT_SHAPE, device=DEVICE, name="HSIC bottleneck", probe=PROBE)
hsic_net.add(Conv2d(filters=16, kernel_size=3, stride=1, padding=1, activation="relu"))
hsic_net.add(Flatten())
hsic_net.add(Dense(1000, activation="relu"))
hsic_net.add(Dense(500, activation="relu"))
hsic_net.add(Dense(200, activation="relu"))
hsic_net.add(HSICoutput(10))
hsic_net.compile(
    loss_criterion=HSIC(kernel="gaussian", sigma=SIGMA), regularize_coeff=BETA, learning_rate=LR, momentum=0.9
)
hsic_net.pre_training_loop(HSIC_EPOCHS, train, val, progress=False, seed=SEED)
fitted = hsic_net.post_training_loop(HEAD_EPOCHS, train, val, progress=False)
bottleneck = hsic_net.run
print(
    f"HSIC bottleneck: val acc {fitted['val_accuracy'][-1]:.3f} after {HSIC_EPOCHS} epochs of layer-wise HSIC "
    f"training and {HEAD_EPOCHS} of fitting the output layer"
)
print(f"back-propagation ({variants[0][0]}): val acc {runs[0].history['val_accuracy'][-1]:.3f}")

# %% [markdown]
# Both networks in one view, each in its own line style (see the legend): in the HSIC-trained one the first
# `HSIC_EPOCHS` epochs move the hidden layers, the last `HEAD_EPOCHS` only its output layer. The last layer's
# names differ (`hsicoutput_1`, `dense_4`): the views match layers by position.

# %%
ib.RunView([runs[0], bottleneck], estimators=("hsic", "cka"), sigma=SIGMA)

# %%
backprop = runs[0].trajectories("hsic", sigma=SIGMA)
layerwise = bottleneck.trajectories("hsic", sigma=SIGMA)
print(f"{'layer':>9}  {'HSIC(T,X), HSIC(T,Y): back-propagation':>40}  {'HSIC bottleneck':>22}")
for i, layer in enumerate(runs[0].layer_names[:-1]):  # the hidden layers
    print(
        f"{layer:>9}  {backprop[-1, i, 0]:>20.4f} {backprop[-1, i, 1]:>19.4f}  "
        f"{layerwise[HSIC_EPOCHS, i, 0]:>11.4f} {layerwise[HSIC_EPOCHS, i, 1]:>10.4f}"
    )

# %% [markdown]
# ## What to look for, and what not to conclude
#
# * **Left–right**: a regulariser that removes input detail should end with lower HSIC(T, X) in the deep
#   layers, or show a larger fall from the peak.
# * **Up–down**: HSIC(T, Y) should not suffer — compare with the validation accuracy printed above.
# * **Which layers**: the first layers barely change between runs; differences, if any, show in the dense
#   layers where dropout acts.
#
# * **The HSIC bottleneck**: its hidden layers end where their objective sends them — more dependence on Y per
#   unit of dependence on X than back-propagation gives them, or not? And does the output layer, which never
#   influenced them, still classify well?
#
# On 1,437 small digits and a dozen epochs the differences are modest and can change with the seed: one run
# per setting is an anecdote, not evidence. Repeat with other `SEED` values, train longer, use
# `DATASET = "mnist"` with the tutorial's settings, and check that a conclusion survives another estimator
# (the CKA table above; notebook 03 for more).
