# %% [markdown]
# # Your own training loop, Lightning, and torchrun
#
# The `Trainer` widget trains for you. Most research code has its own loop, a Lightning module, or a
# `torchrun` launch on several processes or machines. ibwidget records from all of them the same way: after each
# epoch it passes a fixed probe through the model, keeps each chosen layer's Gram matrix, and appends the epoch
# to a run file. The file is the channel: a notebook follows it live, wherever the training runs.
#
# 1. a plain PyTorch loop with `ib.record`;
# 2. a Lightning module with the `InformationPlane` callback;
# 3. a `torchrun` job (DDP on 2 CPU processes) written to disk, launched, and **followed live** from here.

# %% tags=["parameters"]
EPOCHS = 8  # epochs of each run
BATCH_SIZE = 64
PROBE = 256  # probe samples
LR = 0.05  # SGD
NPROC = 2  # torchrun processes (CPU, gloo)
SEED = 0

# %%
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import torch
from torch import nn

import ibwidget as ib

train, val, _ = ib.datasets.digits.load_data(BATCH_SIZE, validation_split=0.2, seed=SEED)
runs_dir = Path("runs/06")
runs_dir.mkdir(parents=True, exist_ok=True)
for old in runs_dir.glob("*.ibrun"):  # a fresh start each time the notebook runs (files are never overwritten)
    old.unlink()
print(f"digits: {len(train.dataset)} training and {len(val.dataset)} validation images")


# %% [markdown]
# ## 1. A plain loop
#
# `ib.record` wraps your loop: epoch 0 is recorded on entry, `rec.snapshot(logs=...)` records one epoch (the
# probe goes through the model in eval mode, without gradients; the model's mode is restored), and the epoch is
# in the file before `snapshot` returns. Nothing in the loop changes.


# %%
def mlp():
    torch.manual_seed(SEED)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.Tanh(), nn.Linear(128, 64), nn.Tanh(), nn.Linear(64, 10))


model = mlp()
opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
with ib.record(model, probe=val, probe_size=PROBE, path=runs_dir / "loop.ibrun", name="plain loop") as rec:
    for _ in range(EPOCHS):
        model.train()
        for x, y in train:
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        rec.snapshot(logs={"loss": float(loss.detach())})
loop_run = rec.run
print(loop_run, "->", loop_run.layer_names)
ib.RunView(loop_run)

# %% [markdown]
# ## 2. Lightning
#
# `InformationPlane` is a Lightning callback: it probes the LightningModule itself (never the strategy's wrapper),
# records at the start and after every epoch with the metrics you `self.log`, and, under a multi-process
# strategy, only rank 0 records. Layers are named inside the LightningModule (`net.1` is `self.net[1]`).

# %%
try:
    import lightning.pytorch as L

    from ibwidget.lightning import InformationPlane
except ImportError:
    L = None
    print("Lightning is not installed here: pip install 'ibwidget[lightning]' to run this section.")

if L is not None:

    class DigitsModule(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = mlp()

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, index):
            x, y = batch
            loss = nn.functional.cross_entropy(self(x), y)
            self.log("train_loss", loss, on_epoch=True, on_step=False)
            return loss

        def validation_step(self, batch, index):
            x, y = batch
            self.log("val_accuracy", (self(x).argmax(1) == y).float().mean())

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=LR, momentum=0.9)

    plane = InformationPlane(probe=val, probe_size=PROBE, path=runs_dir / "lightning.ibrun", name="Lightning")
    trainer = L.Trainer(
        max_epochs=EPOCHS,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[plane],
    )
    trainer.fit(DigitsModule(), train, val)
    print(plane.run, "history:", sorted(k for k, v in plane.run.history.items() if any(x == x for x in v)))

# %% [markdown]
# ## 3. torchrun, followed live
#
# A distributed job cannot reach this notebook's widgets, but it can write a run file. We write a small DDP
# script to disk and launch it with `torchrun` on `NPROC` CPU processes. Every rank calls `ib.record` with the
# same arguments: rank 0 probes the unwrapped module and writes the file; the other ranks return at once.
# `RunView.follow` reads each epoch as it lands (a folder works too: each new run file joins the view). On a
# cluster, the same script runs under Slurm (see the README) and the notebook follows its file on the shared
# file system.

# %%
job, followed_path = runs_dir / "ddp_job.py", runs_dir / "torchrun.ibrun"
job.write_text(
    textwrap.dedent(
        f"""
        import torch, torch.distributed as dist
        from torch import nn
        import ibwidget as ib

        dist.init_process_group("gloo")
        train, val, _ = ib.datasets.digits.load_data({BATCH_SIZE}, validation_split=0.2, seed={SEED})
        sampler = torch.utils.data.DistributedSampler(train.dataset, shuffle=True, seed={SEED})
        loader = torch.utils.data.DataLoader(train.dataset, batch_size={BATCH_SIZE} // dist.get_world_size(),
                                             sampler=sampler)
        torch.manual_seed({SEED})
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.Tanh(), nn.Linear(128, 64), nn.Tanh(),
                              nn.Linear(64, 10))
        ddp = nn.parallel.DistributedDataParallel(model)
        opt = torch.optim.SGD(ddp.parameters(), lr={LR}, momentum=0.9)
        with ib.record(ddp, probe=val, probe_size={PROBE}, path="{followed_path}", name="torchrun") as rec:
            for epoch in range({EPOCHS}):
                sampler.set_epoch(epoch)
                for x, y in loader:
                    loss = nn.functional.cross_entropy(ddp(x), y)
                    opt.zero_grad(); loss.backward(); opt.step()
                rec.snapshot(logs={{"loss": float(loss.detach())}})
        dist.barrier()  # the ranks leave together
        dist.destroy_process_group()
        """
    )
)
launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={NPROC}", str(job)]
job_process = subprocess.Popen(launch, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
live = ib.RunView.follow(followed_path, timeout=120)
live

# %% [markdown]
# The view above grows while the job trains. The next cell waits for the job, then compares the three runs in
# one view: the same network trained by three kinds of training code.

# %%
output, _ = job_process.communicate(timeout=600)
print("torchrun exit status:", job_process.returncode)
if job_process.returncode:  # what the job printed says why
    print(output[-3000:])
followed = live.runs[0]
deadline = time.monotonic() + 30
while len(followed.epochs) < EPOCHS + 1 and time.monotonic() < deadline:  # the view reads every 0.5 s
    time.sleep(0.2)
live.sync()
print(
    f"followed {len(followed.epochs) - 1} epochs of {followed.name!r} ({followed.config.get('parallel')}, "
    f"{followed.config.get('world_size')} processes)"
)
runs = [loop_run, followed] + ([plane.run] if L is not None else [])
ib.RunView(runs, estimators=("hsic", "cka"))
