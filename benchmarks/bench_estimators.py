"""HSIC evaluation cost: PyGlow 0.1.7's per-batch criterion against ours, side by side in one run.

Scenario: the seed tutorial's network widths (Conv16 on 28x28 -> 12544, Dense 1000, 500, 200) at batch m=64, each
layer against the input X (784) and one-hot Y, Gaussian kernel sigma=5, PyGlow's 1/(m-1) normaliser. Then our
per-epoch evaluation of 5 layers on probes of 256/512/1024 samples (Grams from activations + all layers' HSIC).

Prints a table and a last line of key=value pairs. Usage: python benchmarks/bench_estimators.py [--repeats N]
"""

from __future__ import annotations

import argparse

import torch
from _timing import median_time

from ibwidget.measure import estimators, kernels

WIDTHS = (12544, 1000, 500, 200)
SIGMA = 5.0


def _batch(m: int, widths, generator: torch.Generator):
    # Scaled so that typical distances are comparable to sigma: the kernel is not saturated.
    x = torch.rand(m, 784, generator=generator) * 0.25
    hidden = [torch.relu(torch.randn(m, d, generator=generator)) * (2.0 / d**0.5) for d in widths]
    y = torch.nn.functional.one_hot(torch.randint(0, 10, (m,), generator=generator), 10).float()
    return x, hidden, y


def ours_per_batch(x, hidden, y) -> torch.Tensor:
    """(layers, 2): HSIC(h, X) and HSIC(h, Y) for every layer, one batched estimator call per axis."""
    Kx = kernels.gaussian(kernels.gram(x), SIGMA)
    Ky = kernels.gaussian(kernels.gram(y), SIGMA)
    Kh = torch.stack([kernels.gaussian(kernels.gram(h), SIGMA) for h in hidden])
    return torch.stack([estimators.hsic(Kh, Kx, "pyglow"), estimators.hsic(Kh, Ky, "pyglow")], -1)


def pyglow_per_batch(evaluator, x, hidden, y) -> torch.Tensor:
    pairs = evaluator.eval_dynamics_segment([x, *hidden, y])
    return torch.tensor([[float(a), float(b)] for a, b in pairs])


def ours_per_epoch(activations, y) -> torch.Tensor:
    """One epoch's snapshot and estimate: Grams of every layer, then HSIC vs X and Y for all layers at once."""
    x, *hidden = activations
    grams = [kernels.gram(h) for h in hidden]
    Kx = kernels.gaussian(kernels.gram(x), SIGMA)
    Ky = kernels.label_kernel(y)
    Kh = kernels.gaussian(torch.stack(grams), SIGMA)
    return torch.stack([estimators.hsic(Kh, Kx), estimators.hsic(Kh, Ky)], -1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)

    from glow.information_bottleneck.estimator import HSIC as PyGlowHSIC

    evaluator = PyGlowHSIC(kernel="gaussian", gpu=False, sigma=SIGMA)
    x, hidden, y = _batch(64, WIDTHS, g)
    ref = pyglow_per_batch(evaluator, x, hidden, y)
    ours = ours_per_batch(x, hidden, y)
    rel_err = float(((ours - ref).abs() / ref.abs()).max())
    t_pyglow = median_time(lambda: pyglow_per_batch(evaluator, x, hidden, y), args.repeats)
    t_ours = median_time(lambda: ours_per_batch(x, hidden, y), args.repeats * 5)
    ratio = t_pyglow / t_ours

    print(f"{'scenario':<44}{'ms':>10}")
    print(f"{'PyGlow 0.1.7 per batch (m=64, 4 layers)':<44}{t_pyglow * 1e3:>10.2f}")
    print(f"{'ours per batch (m=64, 4 layers)':<44}{t_ours * 1e3:>10.2f}")
    epoch_ms = {}
    for m in (256, 512, 1024):
        xm, hm, _ = _batch(m, WIDTHS + (10,), g)
        labels = torch.randint(0, 10, (m,), generator=g)
        epoch_ms[m] = (
            median_time(lambda xm=xm, hm=hm, labels=labels: ours_per_epoch([xm, *hm], labels), args.repeats) * 1e3
        )
        print(f"{f'ours per epoch (probe {m}, 5 layers)':<44}{epoch_ms[m]:>10.2f}")
    print(f"max relative difference ours vs PyGlow: {rel_err:.2e}  (HSIC values {ref.min():.4f}..{ref.max():.4f})")
    print(
        f"pyglow_batch_ms={t_pyglow * 1e3:.2f} ours_batch_ms={t_ours * 1e3:.3f} ratio={ratio:.1f} "
        f"max_rel_err={rel_err:.1e} epoch256_ms={epoch_ms[256]:.1f} epoch512_ms={epoch_ms[512]:.1f} "
        f"epoch1024_ms={epoch_ms[1024]:.1f}"
    )


if __name__ == "__main__":
    main()
