"""The LightningModule the Lightning tests and jobs train: a two-layer classifier that logs its loss (and, given
validation data, its accuracy)."""

import torch
from torch import nn


def make_classifier(package, sync_dist: bool = False):
    """A fresh, seeded module for ``package`` (``lightning.pytorch`` or ``pytorch_lightning``)."""

    class Classifier(package.LightningModule):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.net = nn.Sequential(nn.Linear(20, 32), nn.Tanh(), nn.Linear(32, 5))

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, index):
            xb, yb = batch
            loss = nn.functional.cross_entropy(self(xb), yb)
            self.log("train_loss", loss, on_epoch=True, on_step=False, sync_dist=sync_dist)
            return loss

        def validation_step(self, batch, index):
            xb, yb = batch
            self.log("val_acc", (self(xb).argmax(1) == yb).float().mean(), sync_dist=sync_dist)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    return Classifier()
