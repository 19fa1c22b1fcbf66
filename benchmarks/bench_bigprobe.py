"""A probe of every input (Tishby's 12-bit task: m = 4096) through the parts that scale with it, old way and new way
side by side in one run (CPU).

- binning: the codes of the distinct rows of binned activations, ``torch.unique(dim=0)`` (before) against
  ``_row_codes`` (columns packed into one int64 key, 1-d sorts), over the layers of 12-10-7-5-4-3 tanh activations;
- the median width rules: the middle pair of m(m-1)/2 squared distances by two ``kthvalue`` calls (before) against
  one ``np.partition`` (ties are many here: binary inputs have 13 distinct distances);
- a RunView of binning estimators: the grid's widths, 27 (before: every default width, for the gauge) against 1.

Prints a table and a last line of key=value pairs (speed-ups, best of ``--rounds``). Usage:
python benchmarks/bench_bigprobe.py [--rounds 3]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from _timing import median_time

import ibwidget as ib
from ibwidget.measure import _packed, kernels
from ibwidget.measure.estimators import _row_codes
from ibwidget.measure.kernels import _middle, _middle_cache
from ibwidget.widget._viewmodel import fast_builder


def _activations(m: int) -> list[torch.Tensor]:
    x, _ = ib.datasets.ib12.patterns()
    torch.manual_seed(0)
    out, h = [], x[:m]
    for width in (10, 7, 5, 4, 3):
        h = torch.tanh(torch.nn.Linear(h.shape[1], width)(h) * 3).detach()
        out.append(h)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    m = 4096
    layers = [torch.floor(a.double() / 0.07).long() for a in _activations(m)]

    def rows_before():
        for codes in layers:
            torch.unique(codes, dim=0, return_inverse=True)

    def rows_after():
        for codes in layers:
            _row_codes(codes)

    for codes in layers:  # the same partition of the samples
        a, b = _row_codes(codes), torch.unique(codes, dim=0, return_inverse=True)[1]
        assert len(set(zip(a.tolist(), b.tolist(), strict=True))) == len(set(b.tolist()))
    x, _ = ib.datasets.ib12.patterns()
    dist = _packed.pack(kernels.sq_distances(kernels.gram(x)))[None]  # (1, P): 13 distinct values

    def median_before():
        n = dist.shape[-1]
        dist.kthvalue((n + 1) // 2, dim=-1)
        dist.kthvalue(n // 2 + 1, dim=-1)

    def median_after():
        _middle_cache.clear()
        _middle(dist)

    rows = [
        ("binning codes, 5 layers", median_time(rows_before, args.rounds), median_time(rows_after, args.rounds)),
        ("median of 8.4 M distances", median_time(median_before, args.rounds), median_time(median_after, args.rounds)),
    ]
    before_slots = len(fast_builder(("hsic",), 5.0, "fixed", live=False).slots)
    after_slots = len(fast_builder(("binning_saxe", "binning"), 5.0, "fixed", live=False).slots)
    print(f"probe m = {m} (every 12-bit pattern); median of {args.rounds} rounds after a warm-up\n")
    print(f"{'part':<28} {'before':>10} {'after':>10} {'speed-up':>9}")
    for name, before, after in rows:
        print(f"{name:<28} {before * 1e3:>8.1f}ms {after * 1e3:>8.1f}ms {before / after:>8.1f}x")
    ratio = before_slots / after_slots
    print(f"{'binning RunView grid widths':<28} {before_slots:>10} {after_slots:>10} {ratio:>8.1f}x")
    speedups = [before / after for _, before, after in rows]
    print(
        f"binning_speedup={speedups[0]:.1f} median_speedup={speedups[1]:.1f} "
        f"binning_view_widths_before={before_slots} binning_view_widths_after={after_slots}"
    )


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
