"""Re-estimation latency: every recorded epoch of every layer, recomputed for a new sigma or estimator.

A run of 100 epochs x 5 layers on a probe of 512 (snapshots from random activations of the seed model's widths),
then ``run.trajectories(...)`` timed for a sigma change (the widget's slider) and for each estimator, side by side
with the direct computation (unpack every Gram, build kernels, call the estimator) the snapshots make unnecessary.
Target: a sigma change <= 100 ms on CPU. Prints a table and a last line of key=value pairs.
"""

from __future__ import annotations

import argparse

import torch
from _timing import median_time

from ibwidget.measure import estimators, kernels
from ibwidget.measure._packed import unpack
from ibwidget.record.run import Run, derives_distances

WIDTHS = (12544, 1000, 500, 200, 10)


def build_run(epochs: int, m: int, seed: int = 0, device: str = "cpu") -> Run:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(m, 1, 28, 28, generator=g)
    labels = torch.randint(0, 10, (m,), generator=g)
    names = [f"layer{i}" for i in range(len(WIDTHS))]
    run = Run("bench", names, list(WIDTHS), x, labels, num_classes=10, capacity=epochs + 1, device=device)
    # Grams of low-rank activations: cheap to make, same storage and estimation cost as real ones. A narrow layer
    # keeps its activations instead, as a recording does (ibwidget.record.run.derives_distances).
    bases = [torch.randn(m, 32, generator=g) for _ in WIDTHS]
    for e in range(epochs + 1):
        grams, acts = {}, {}
        for name, base, width in zip(names, bases, WIDTHS, strict=True):
            z = torch.relu(base + 0.05 * e * torch.randn(m, 32, generator=g))
            if derives_distances(width, m):
                acts[name] = z[:, :width]
            else:
                grams[name] = kernels.gram(z)
        run.add_snapshot(e, grams, torch.randn(m, 10, generator=g), acts)
    return run


def direct(run: Run, sigma: float) -> torch.Tensor:
    """What a tool without packed snapshots does: every Gram unpacked and estimated one by one."""
    Kx = kernels.gaussian(kernels.gram(run.probe_x), sigma)
    Ky = kernels.label_kernel(run.probe_labels, 10)
    dist = run.snapshots().dist
    out = torch.empty(dist.shape[0], dist.shape[1], 2, device=dist.device)
    for e in range(dist.shape[0]):
        for layer in range(dist.shape[1]):
            D = unpack(dist[e, layer], run.m)
            K = torch.exp(-D / (2 * sigma**2))
            out[e, layer, 0] = estimators.hsic(K, Kx)
            out[e, layer, 1] = estimators.hsic(K, Ky)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--probe", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    run = build_run(args.epochs, args.probe, device=args.device)
    sigmas = iter([4.0 + 0.01 * i for i in range(1000)])
    t_sigma = median_time(lambda: run.trajectories("hsic", sigma=next(sigmas)), args.repeats)
    t_direct = median_time(lambda: direct(run, 4.5).cpu(), 1)
    check = abs(run.trajectories("hsic", sigma=4.5) - direct(run, 4.5).cpu().numpy()).max()
    print(
        f"run: {args.epochs + 1} snapshots x {len(WIDTHS)} layers, probe {args.probe}, {run.nbytes() / 2**20:.0f} MiB"
    )
    print(f"{'re-estimation':<46}{'ms':>10}")
    print(f"{'hsic, new sigma (packed snapshots)':<46}{t_sigma * 1e3:>10.1f}")
    print(f"{'hsic, new sigma (unpack + estimate each)':<46}{t_direct * 1e3:>10.1f}")
    timings = {}
    for name, kwargs in [
        ("hsic median_d2", dict(estimator="hsic", sigma_rule="median_d2")),
        ("hsic target=output", dict(estimator="hsic", target="output")),
        ("cka", dict(estimator="cka")),
        ("kde_upper", dict(estimator="kde_upper", sigma=1.0)),
    ]:
        timings[name] = median_time(lambda kwargs=kwargs: run.trajectories(**kwargs), 1)
        print(f"{name:<46}{timings[name] * 1e3:>10.1f}")
    print(f"max |packed - direct| = {check:.2e}")
    print(
        f"device={args.device} sigma_change_ms={t_sigma * 1e3:.1f} direct_ms={t_direct * 1e3:.0f} "
        f"speedup={t_direct / t_sigma:.1f} "
        f"cka_ms={timings['cka'] * 1e3:.0f} target_ms=100 epochs={args.epochs} layers={len(WIDTHS)} probe={args.probe}"
    )


if __name__ == "__main__":
    main()
