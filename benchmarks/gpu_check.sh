#!/usr/bin/env bash
# GPU check, one prepared script for a bare CUDA machine (torch preinstalled, no network).
# Carry the PyGlow wheel in .whl/ (see README "GPU check"); everything else is this checkout.
# Prints: the device, the CUDA variants of the estimator, engine and HSIC-bottleneck tests (a non-finite loss on the
# device path, layer-wise training on the device against the CPU),
# the precision tests (every estimator at sigma 0.05 ... 500 against float64), the seed-model tracking benchmark
# for full 750-batch epochs (plain PyTorch vs ibwidget untracked, tracked, tracked and compiled, vs PyGlow
# tracked; targets: tracked <= 1.05x untracked, compiled <= 1.0 s an epoch), re-estimation latency and the default
# grid of a 20-epoch run (what PlaneView and reports compute) on the GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
DEVICE="${DEVICE:-cuda}" BATCHES="${BATCHES:-750}"   # DEVICE=cpu BATCHES=3 for a dry run on a CPU machine
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/ibw-site .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/ibw-site"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
echo "== CUDA variants of the estimator and engine tests"
python3 -m pytest -q -p no:cacheprovider -k cuda tests/test_kernels.py tests/test_estimators.py \
  tests/test_estimator_errors.py tests/test_engine_reliability.py tests/test_hsic_network.py \
  tests/test_snapshot_stream.py tests/test_diagnostics.py 2>&1 | tail -3
echo "== precision at every sigma"
python3 -m pytest -q -p no:cacheprovider tests/test_precision.py 2>&1 | tail -3
echo "== tracking overhead, full epochs"
python3 benchmarks/bench_tracking.py --device "$DEVICE" --batches "$BATCHES" --epochs 3 --compile
echo "== re-estimation on the GPU"
python3 benchmarks/bench_reestimate.py --device "$DEVICE" --epochs 100
echo "== the default grid on the GPU (20 epochs x 5 layers, probe 512)"
python3 benchmarks/bench_planeview.py --device "$DEVICE" --skip-direct
