# %% [markdown]
# # Bring your own estimator
#
# Every dependence measure in ibwidget lives in a registry. Register a function under a name and it appears in
# the widget's estimator dropdown, in `run.trajectories(name)` and in `ibwidget info --estimator name` — and
# because runs store Gram matrices, it applies to **every recorded epoch**, also of runs trained before you
# wrote it.
#
# As an example we add **kernel alignment without centring** (Cristianini et al. 2002):
#
# $$A(K, L) = \frac{\langle K, L \rangle_F}{\lVert K \rVert_F \, \lVert L \rVert_F}.$$
#
# It is CKA without the centring matrix $H$ — and comparing the two shows why HSIC and CKA centre.

# %% tags=["parameters"]
EPOCHS = 10  # the seed tutorial trained 7 epochs of MNIST
BATCH_SIZE = 64  # seed tutorial: 64
PROBE = 128  # seed settings: 512
SIGMA = 5.0  # seed tutorial: 5
DATASET = "digits"  # offline; "mnist" needs its files or the network
DEVICE = "auto"  # CUDA when present
SEED = 0

# %%
import torch

import ibwidget as ib

# %% [markdown]
# ## Write and register it
#
# An estimator with `needs="kernels"` receives two kernel matrices built from the stored snapshots with the
# widget's current σ and target: $K_T$ of the layer and $K_Z$ of X or Y. $K_T$ may come as a batch of shape
# (…, m, m) — several epochs and layers at once — so write it with operations over the last two dimensions and
# return one value per matrix. `label` is the axis label (`{a}` and `{b}` are filled in), `variant` and `units`
# are added to it. `overwrite=True` lets you re-run the cell after editing the function.
#
# Other kinds: `needs="distances"` gets squared distances and a noise variance (like the KDE bounds),
# `needs="activations"` gets the raw activations (like binning; only for layers the run kept), and
# `uses_sigma=False` greys out the σ slider.


# %%
@ib.estimators.register("alignment", label="A({a}, {b})", variant="uncentred", overwrite=True)
def kernel_alignment(K, L):
    """Kernel alignment without centring (Cristianini et al. 2002): <K, L>_F / (|K|_F |L|_F)."""
    inner = (K * L).sum((-2, -1))
    return inner / (K.square().sum((-2, -1)).sqrt() * L.square().sum((-2, -1)).sqrt())


print("registered:", ib.estimators.names())
print("axis label:", ib.estimators.get("alignment").axis_label("T", "Y"))

# %% [markdown]
# ## Check it before trusting it
#
# Two quick checks on random data: a representation is perfectly aligned with itself, and two **independent**
# representations should score near zero. The second check fails for the uncentred alignment — Gaussian kernel
# values are all positive, so any two kernels "agree" a lot — while CKA, which centres first, passes. That is
# exactly why HSIC and CKA use $H$.

# %%
g = torch.Generator().manual_seed(0)
A = torch.randn(200, 30, generator=g, dtype=torch.float64)
B = torch.randn(200, 30, generator=g, dtype=torch.float64)  # independent of A
sigma = 8.0  # about the typical distance between these samples
KA, KB = ib.kernels.gaussian(ib.kernels.gram(A), sigma), ib.kernels.gaussian(ib.kernels.gram(B), sigma)
alignment = ib.estimators.get("alignment")
print(f"alignment(K, K) = {float(alignment(KA, KA)):.4f}   cka(K, K) = {float(ib.estimators.cka(KA, KA)):.4f}")
print(f"independent A, B: alignment = {float(alignment(KA, KB)):.4f}   cka = {float(ib.estimators.cka(KA, KB)):.4f}")

# %% [markdown]
# ## Find it in the widget
#
# Estimators named in `estimators=` come first in the dropdown, then every other registered one. We train
# the seed model on the digits data with our estimator selected.

# %%
from ibwidget.models import seed_model

train, val, _ = getattr(ib.datasets, DATASET).load_data(BATCH_SIZE, seed=SEED)
x0, _ = next(iter(train))
torch.manual_seed(SEED)
model = seed_model(tuple(x0.shape[1:]), device=DEVICE)
trainer = ib.Trainer(
    model,
    train,
    val,
    epochs=EPOCHS,
    probe=PROBE,
    sigma=SIGMA,
    estimators=("alignment", "cka", "hsic"),
    name="seed model, custom estimator",
)
print("dropdown:", list(trainer.controls.estimator.options))
trainer

# %%
trainer.start()
run = trainer.wait()
print(trainer.status, "| estimator shown:", trainer.controls.estimator.value)

# %% [markdown]
# Switching the dropdown from code does what a click does; `sync()` waits until the figures are redrawn. We
# compare the two measures in numbers too: the uncentred alignment sits high for every layer and moves little,
# CKA spreads the layers apart.

# %%
trainer.controls.estimator.value = "cka"
trainer.sync()
trainer.controls.estimator.value = "alignment"
trainer.sync()

align, cka = run.trajectories("alignment", sigma=SIGMA), run.trajectories("cka", sigma=SIGMA)
print(f"{'layer':>9} {'A(T,X)':>8} {'A(T,Y)':>8} {'CKA(T,X)':>9} {'CKA(T,Y)':>9}   (last epoch)")
for i, name in enumerate(run.layer_names):
    a, c = align[-1, i], cka[-1, i]
    print(f"{name:>9} {a[0]:>8.4f} {a[1]:>8.4f} {c[0]:>9.4f} {c[1]:>9.4f}")

# %% [markdown]
# ## Going further
#
# * Keep an estimator for later sessions by putting its `register(...)` in a module you import.
# * PyGlow's way still works: subclass `ibwidget.estimators.Estimator`, define `criterion(x, y)` on
#   activations and `model.attach_evaluator(...)`. Such criteria are evaluated once per epoch during training
#   and, unlike registered estimators, cannot be re-estimated with another σ afterwards.
# * Ideas: HSIC with a linear kernel on T, the distance correlation, or a mutual-information estimator of your
#   own; check each against cases with a known answer first, as above.
