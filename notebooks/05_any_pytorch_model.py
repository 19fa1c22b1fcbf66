# %% [markdown]
# # Any PyTorch model: tracking layers by name
#
# `IBSequential` mirrors PyGlow, but ibwidget does not need it: the `Trainer` takes **any `nn.Module`** and a
# list of submodule names. It attaches forward hooks to those submodules while it measures the probe, stores
# their outputs' Gram matrices, and removes the hooks again — the model's code and outputs stay untouched.

# %% tags=["parameters"]
EPOCHS = 10  # the seed tutorial trained 7 epochs of MNIST
BATCH_SIZE = 64  # seed tutorial: 64
PROBE = 256  # seed settings: 512
SIGMA = 5.0  # seed tutorial: 5
LR = 1e-3  # Adam
DATASET = "digits"  # offline; "mnist" needs its files or the network (28x28 inputs work too)
DEVICE = "auto"  # CUDA when present
SEED = 0

# %%
import torch
from torch import nn

import ibwidget as ib
from ibwidget.plane.table import trajectory_table

train, val, test = getattr(ib.datasets, DATASET).load_data(BATCH_SIZE, validation_split=0.2, seed=SEED)
x0, _ = next(iter(train))
INPUT_SHAPE = tuple(x0.shape[1:])
print(f"{DATASET}: {len(train.dataset)} training and {len(val.dataset)} validation images of shape {INPUT_SHAPE}")


# %% [markdown]
# ## A plain CNN
#
# Nothing ibwidget-specific: two convolution blocks and two linear layers, with a functional ReLU in
# `forward` to show that only *modules* can be tracked.


# %%
class SmallCNN(nn.Module):
    def __init__(self, in_channels=1, num_classes=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
        )
        self.fc1 = nn.Linear(32 * 2 * 2, 64)
        self.fc2 = nn.Linear(64, num_classes)

    def forward(self, x):
        h = self.features(x).flatten(1)
        h = torch.relu(self.fc1(h))  # functional: there is no module for this ReLU
        return self.fc2(h)


torch.manual_seed(SEED)
cnn = SmallCNN(in_channels=INPUT_SHAPE[0])
for name, module in cnn.named_modules():
    if name:
        print(f"{name:>12}  {module}")

# %% [markdown]
# ## Choosing the layers
#
# A hook records a module's **output**. So `"features.0"` (the first `Conv2d`) gives the convolution *before*
# its ReLU, and `"features.1"` the activation after it. Here we track what the next layer actually receives:
# both ReLUs of the feature extractor, then `fc1` (pre-activation — its ReLU is functional) and the logits
# `fc2`. Without `layers=`, the Trainer tracks every leaf module that has parameters (`features.0`,
# `features.3`, `fc1`, `fc2`). Misspelled names are refused with a suggestion.

# %%
LAYERS = ["features.1", "features.4", "fc1", "fc2"]
trainer = ib.Trainer(
    cnn,
    train,
    val,
    epochs=EPOCHS,
    layers=LAYERS,
    loss="cross_entropy",
    optimizer="Adam",
    lr=LR,
    probe=PROBE,
    sigma=SIGMA,
    estimators=("hsic", "cka"),
    device=DEVICE,
    seed=SEED,
    name="SmallCNN",
)
trainer

# %%
trainer.start()
run = trainer.wait()
print(trainer.status, "| tracked:", run.layer_names, "| widths:", run.layer_dims)
print(f"final validation accuracy {run.history['val_accuracy'][-1]:.3f}")


# %%
print(trajectory_table(run, "hsic", sigma=SIGMA))
print()
print(trajectory_table(run, "cka", sigma=SIGMA))

# %% [markdown]
# ## Nothing left behind
#
# The hooks exist only while the probe is measured: after training, `cnn` is an ordinary PyTorch model again —
# evaluate it, save it, train it further. Here it classifies the held-out test images, and the run is saved
# for a later `RunView`.

# %%
from pathlib import Path

cnn.eval()
device = next(cnn.parameters()).device
correct = total = 0
with torch.no_grad():
    for x, y in test:
        correct += int((cnn(x.to(device)).argmax(1).cpu() == y).sum())
        total += len(y)
print(f"test accuracy: {correct / total:.3f} on {total} images")

Path("runs").mkdir(exist_ok=True)
print("saved the run to", run.save("runs/05_small_cnn.ibrun"))

# %% [markdown]
# ## Without a widget
#
# The same tracking runs headless with the engine — in a script, on a cluster, from a test:
#
# ```python
# engine = ib.Engine(cnn, train, val, epochs=10, layers=LAYERS, optimizer="Adam", lr=1e-3, probe=512)
# engine.on("epoch_end", lambda e: print(e.epoch, e.logs))
# engine.start(); engine.wait()
# engine.run.save("runs/cnn.ibrun")     # open later with ib.RunView("runs/cnn.ibrun")
# ```
