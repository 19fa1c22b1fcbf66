"""A Lightning job with the InformationPlane callback: ``python lightning_ddp.py PATH DEVICES`` trains 2 epochs with
``strategy="ddp"`` on DEVICES CPU processes (Lightning re-launches this script for the other ranks)."""

import sys

import lightning.pytorch as L
import torch
from classifier import make_classifier  # beside this script

from ibwidget.lightning import InformationPlane

path, devices = sys.argv[1], int(sys.argv[2])
torch.manual_seed(0)
x = torch.randn(256, 20)
y = x[:, :5].argmax(1)


loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)
plane = InformationPlane(probe=(x[:64], y[:64]), layers=["net.0", "net.2"], path=path, name="lightning ddp")
trainer = L.Trainer(
    max_epochs=2,
    accelerator="cpu",
    devices=devices,
    strategy="ddp" if devices > 1 else "auto",
    logger=False,
    enable_checkpointing=False,
    enable_progress_bar=False,
    enable_model_summary=False,
    callbacks=[plane],
)
trainer.fit(make_classifier(L, sync_dist=True), loader)
print(f"rank {trainer.global_rank}: {0 if plane.run is None else plane.run.num_snapshots} snapshots", flush=True)
