"""ibwidget.datasets: real torchvision loaders over tiny files written by fixtures, and the offline digits."""

from __future__ import annotations

import http.server
import math
import pickle
import subprocess
import sys
import threading
import urllib.request

import numpy as np
import pytest
import torch
from _mnist import write_idx_images, write_idx_labels
from torch.utils.data import DataLoader, SubsetRandomSampler, TensorDataset

import ibwidget as ib
from ibwidget.datasets import DatasetNotFoundError, cifar10, digits, mnist, num_classes, to_tensors

N_MNIST_TRAIN, N_MNIST_TEST = 60, 20
N_CIFAR_BATCH, N_CIFAR_TEST = 8, 10


@pytest.fixture(scope="module")
def mnist_files(tmp_path_factory, torchvision_loads):
    """A root with tiny MNIST idx files (uncompressed, as torchvision reads them from MNIST/raw/)."""
    root = tmp_path_factory.mktemp("mnist_root")
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    data = {}
    for split, n in (("train", N_MNIST_TRAIN), ("t10k", N_MNIST_TEST)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = np.arange(n) % 10
        write_idx_images(raw / f"{split}-images-idx3-ubyte", images)
        write_idx_labels(raw / f"{split}-labels-idx1-ubyte", labels)
        data[split] = (images, labels)
    return root, data


@pytest.fixture(scope="module")
def cifar_files(tmp_path_factory, torchvision_loads):
    """A root with tiny CIFAR-10 pickles in the python-version format (5 train batches, a test batch, meta)."""
    root = tmp_path_factory.mktemp("cifar_root")
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(1)

    def batch(name, n, offset):
        data = rng.integers(0, 256, size=(n, 3 * 32 * 32), dtype=np.uint8)  # rows: R plane, G plane, B plane
        labels = [(offset + i) % 10 for i in range(n)]
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": name, "data": data, "labels": labels}, f)
        return data, labels

    train = [batch(f"data_batch_{i}", N_CIFAR_BATCH, i) for i in range(1, 6)]
    test = batch("test_batch", N_CIFAR_TEST, 0)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": names, "num_cases_per_batch": N_CIFAR_BATCH, "num_vis": 3072}, f)
    return root, train, test


def _labels_in_order(loader):
    return torch.cat([y for _, y in loader]).tolist()


def _check_batch(loader, shape):
    x, y = next(iter(loader))
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert tuple(x.shape[1:]) == shape
    assert x.shape[0] == y.shape[0]


# ---------------------------------------------------------------------------------------------------------- digits


def test_digits_offline_sizes_shapes_classes():
    train, val, test = digits.load_data(batch_size=64, validation_split=0.2, seed=0)
    sizes = [len(loader.dataset) for loader in (train, val, test)]
    assert sum(sizes) == 1797
    assert sizes[2] == math.ceil(0.2 * 1797)  # scikit-learn rounds the test share up
    assert sizes[1] == math.floor(0.2 * (1797 - sizes[2]))
    for loader in (train, val, test):
        _check_batch(loader, (1, 8, 8))
    assert num_classes(train) == 10
    assert set(train.dataset.targets.tolist()) == set(range(10))
    # disjoint, and together they are every row of load_digits()
    idx = [set(loader.dataset.indices.tolist()) for loader in (train, val, test)]
    assert not (idx[0] & idx[1]) and not (idx[0] & idx[2]) and not (idx[1] & idx[2])
    assert idx[0] | idx[1] | idx[2] == set(range(1797))


def test_digits_normalised_with_training_statistics():
    from sklearn.datasets import load_digits

    train, val, test = digits.load_data(validation_split=0.25, seed=3)
    x_train = train.dataset.tensors[0]
    assert abs(float(x_train.mean())) < 1e-4 and abs(float(x_train.std(unbiased=False)) - 1) < 1e-4
    raw = load_digits().data.astype(np.float32).reshape(-1, 1, 8, 8) / 16
    rows = train.dataset.indices.numpy()
    mean, std = raw[rows].mean(), raw[rows].std()
    for loader in (val, test):
        ds = loader.dataset
        expected = (raw[ds.indices.numpy()] - mean) / std
        np.testing.assert_allclose(ds.tensors[0].numpy(), expected, atol=1e-5)
        np.testing.assert_array_equal(ds.targets.numpy(), load_digits().target[ds.indices.numpy()])


def test_digits_deterministic_per_seed_and_test_split_fixed():
    a = digits.load_data(batch_size=32, seed=5)
    b = digits.load_data(batch_size=32, seed=5)
    c = digits.load_data(batch_size=32, seed=6)
    for la, lb in zip(a, b, strict=True):
        assert torch.equal(la.dataset.indices, lb.dataset.indices)
    assert _labels_in_order(a[0]) == _labels_in_order(b[0])  # same shuffled order
    assert not torch.equal(a[1].dataset.indices, c[1].dataset.indices)  # another seed, another validation set
    assert torch.equal(a[2].dataset.indices, c[2].dataset.indices)  # the test set never moves


def test_digits_positional_pyglow_call_and_uniform_keywords():
    train, val, test = digits.load_data(16, 0, 0.1, root="/nonexistent", download=True)
    assert train.batch_size == 16
    assert len(val.dataset) == math.floor(0.1 * (len(train.dataset) + len(val.dataset)))
    train, val, _ = digits.load_data(validation_split=0)
    assert len(val.dataset) == 0 and list(val) == []


def test_digits_with_a_worker_process():
    train, _, _ = digits.load_data(batch_size=256, num_workers=1, seed=2)
    again, _, _ = digits.load_data(batch_size=256, num_workers=0, seed=2)
    assert _labels_in_order(train) == _labels_in_order(again)


# ----------------------------------------------------------------------------------------------------------- mnist


def test_mnist_shapes_dtypes_sizes(mnist_files):
    root, _ = mnist_files
    train, val, test = mnist.load_data(batch_size=8, validation_split=0.2, root=root, download=False)
    assert (len(train.dataset), len(val.dataset), len(test.dataset)) == (48, 12, N_MNIST_TEST)
    for loader in (train, val, test):
        _check_batch(loader, (1, 28, 28))
    assert num_classes(val) == 10


def test_mnist_normalisation(mnist_files):
    root, data = mnist_files
    _, _, test = mnist.load_data(batch_size=N_MNIST_TEST, root=root, download=False)
    x, y = next(iter(test))
    images, labels = data["t10k"]
    expected = (images.astype(np.float32) / 255 - 0.1307) / 0.3081
    np.testing.assert_allclose(x[:, 0].numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(y.numpy(), labels)


def test_mnist_splits_disjoint_deterministic_and_seeded(mnist_files):
    root, _ = mnist_files
    a = mnist.load_data(batch_size=7, root=root, download=False, seed=1)
    b = mnist.load_data(batch_size=7, root=root, download=False, seed=1)
    c = mnist.load_data(batch_size=7, root=root, download=False, seed=2)
    tr, va = set(a[0].dataset.indices), set(a[1].dataset.indices)
    assert not tr & va and tr | va == set(range(N_MNIST_TRAIN))
    assert a[0].dataset.indices == b[0].dataset.indices and a[1].dataset.indices == b[1].dataset.indices
    assert _labels_in_order(a[0]) == _labels_in_order(b[0])
    assert a[1].dataset.indices != c[1].dataset.indices


def test_mnist_pyglow_positional_call(mnist_files):
    root, _ = mnist_files
    train, val, test = mnist.load_data(64, 0, 0.2, root=root)  # download=True, but the files are there: no network
    assert train.batch_size == 64 and train.num_workers == 0
    assert len(val.dataset) == math.floor(0.2 * N_MNIST_TRAIN)


def test_mnist_default_root_from_environment(mnist_files, monkeypatch):
    root, _ = mnist_files
    monkeypatch.setenv("IBWIDGET_DATA", str(root))
    _, _, test = mnist.load_data(download=False)
    assert len(test.dataset) == N_MNIST_TEST


def test_mnist_missing_files_clear_error(tmp_path, torchvision_loads):
    with pytest.raises(DatasetNotFoundError) as info:
        mnist.load_data(root=tmp_path, download=False)
    message = str(info.value)
    assert str(tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte") in message
    assert "t10k-labels-idx1-ubyte" in message
    assert "ib.datasets.digits.load_data()" in message
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, RuntimeError)


@pytest.fixture
def mirror():
    """A real HTTP server on a free local port that answers 404 to everything, recording what was asked for."""
    asked: list[str] = []

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # the name http.server calls
            asked.append(self.path)
            self.send_error(404, "no MNIST here")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/mnist/", asked
    finally:
        server.shutdown()
        server.server_close()


def test_mnist_failed_download_clear_error(tmp_path, monkeypatch, mirror, torchvision_loads):
    """The download is really attempted, from a mirror that has no files, and fails with an error saying so."""
    from torchvision import datasets

    url, asked = mirror
    monkeypatch.setattr(datasets.MNIST, "mirrors", [url])
    # straight to the local server, whatever proxies the environment or an earlier opener had
    monkeypatch.setattr(urllib.request, "_opener", urllib.request.build_opener(urllib.request.ProxyHandler({})))
    with pytest.raises(DatasetNotFoundError) as info:
        mnist.load_data(root=tmp_path, download=True)
    assert asked and asked[0] == "/mnist/train-images-idx3-ubyte.gz"  # the download was attempted
    message = str(info.value)
    assert "could not be loaded" in message and url in message and "404" in message  # what failed, and where from
    assert str(tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte") in message  # where the files go
    assert "download=False" in message and "ib.datasets.digits.load_data()" in message  # what to do instead
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # nothing half-downloaded left behind


# --------------------------------------------------------------------------------------------------------- cifar10


def test_cifar10_unverified_user_files(cifar_files):
    root, train_batches, test_batch = cifar_files
    train, val, test = cifar10.load_data(batch_size=4, validation_split=0.25, root=root, download=False, verify=False)
    assert (len(train.dataset), len(val.dataset), len(test.dataset)) == (30, 10, N_CIFAR_TEST)
    for loader in (train, val, test):
        _check_batch(loader, (3, 32, 32))
    assert num_classes(train) == 10
    # normalisation per channel, on the unshuffled test set
    x, y = to_tensors(test)
    raw, labels = test_batch
    expected = raw.reshape(-1, 3, 32, 32).astype(np.float32) / 255
    mean, std = np.array(cifar10.MEAN).reshape(1, 3, 1, 1), np.array(cifar10.STD).reshape(1, 3, 1, 1)
    np.testing.assert_allclose(x.numpy(), (expected - mean) / std, atol=1e-5)
    assert y.tolist() == labels
    # splits
    tr, va = set(train.dataset.indices), set(val.dataset.indices)
    assert not tr & va and tr | va == set(range(5 * N_CIFAR_BATCH))
    again = cifar10.load_data(4, 0, 0.25, root=root, download=False, verify=False)
    assert again[1].dataset.indices == val.dataset.indices


def test_cifar10_md5_verified_by_default(cifar_files):
    root, _, _ = cifar_files
    with pytest.raises(DatasetNotFoundError, match="verify=False"):
        cifar10.load_data(root=root, download=False)


def test_cifar10_missing_files_clear_error(tmp_path, torchvision_loads):
    with pytest.raises(FileNotFoundError) as info:
        cifar10.load_data(root=tmp_path, download=False)
    message = str(info.value)
    assert str(tmp_path / "cifar-10-batches-py" / "data_batch_1") in message
    assert "batches.meta" in message and "ib.datasets.digits.load_data()" in message


# -------------------------------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize("module", [digits, mnist, cifar10])
@pytest.mark.parametrize("bad", [1.0, 1.5, -0.1, float("nan"), "0.2", True])
def test_bad_validation_split(module, bad, tmp_path):
    with pytest.raises(ValueError, match=r"validation_split.*\[0, 1\)"):
        module.load_data(validation_split=bad, root=tmp_path, download=False)


@pytest.mark.parametrize("kwargs", [{"batch_size": 0}, {"batch_size": 2.5}, {"batch_size": True}, {"num_workers": -1}])
def test_bad_batch_size_or_workers(kwargs, tmp_path):
    for module in (digits, mnist):
        with pytest.raises(ValueError, match="Pass"):
            module.load_data(root=tmp_path, download=False, **kwargs)


# -------------------------------------------------------------------------------------------------------- helpers


def test_to_tensors_from_loaders_and_datasets(mnist_files):
    root, data = mnist_files
    _, val, _ = mnist.load_data(batch_size=5, root=root, download=False)
    x, y = to_tensors(val, limit=7)
    assert x.shape == (7, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    x_all, y_all = to_tensors(val)
    loaded = list(val)
    assert torch.equal(x_all, torch.cat([b[0] for b in loaded]))
    assert torch.equal(y_all, torch.cat([b[1] for b in loaded]))
    assert torch.equal(x, x_all[:7])
    assert y_all.tolist() == [int(data["train"][1][i]) for i in val.dataset.indices]

    train, _, _ = digits.load_data(seed=0)
    xd, yd = to_tensors(train, limit=10_000)  # shuffling is ignored: dataset order, all samples
    assert torch.equal(xd, train.dataset.tensors[0]) and torch.equal(yd, train.dataset.targets)


def test_to_tensors_pyglow_style_sampler_and_num_classes():
    ds = TensorDataset(torch.arange(20.0).reshape(20, 1), torch.arange(20) % 3)
    loader = DataLoader(ds, batch_size=4, sampler=SubsetRandomSampler([5, 2, 9]))
    x, y = to_tensors(loader)
    assert x.squeeze(1).tolist() == [5.0, 2.0, 9.0] and y.tolist() == [2, 2, 0]
    assert num_classes(ds) == 3 and num_classes(loader) == 3
    with pytest.raises(ValueError, match="limit"):
        to_tensors(ds, limit=-1)


def test_import_is_cheap():
    # Importing ibwidget.datasets must not import torchvision or scikit-learn (they load lazily, inside load_data);
    # block whichever of them the rest of ibwidget has not already imported, then re-import the package.
    code = (
        "import importlib, sys, ibwidget\n"
        "for m in [m for m in sys.modules if m.startswith('ibwidget.datasets')]: del sys.modules[m]\n"
        "for m in ('torchvision', 'sklearn'): sys.modules.setdefault(m, None)\n"
        "d = importlib.import_module('ibwidget.datasets')\n"
        "print(callable(d.mnist.load_data) and callable(d.digits.load_data))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True"]


def test_mnist_legacy_processed_files(tmp_path, torchvision_loads):
    processed = tmp_path / "MNIST" / "processed"
    processed.mkdir(parents=True)
    for name, n in (("training.pt", 30), ("test.pt", 10)):
        torch.save((torch.zeros(n, 28, 28, dtype=torch.uint8), torch.arange(n) % 10), processed / name)
    train, val, test = mnist.load_data(root=tmp_path, download=False)
    assert (len(train.dataset), len(val.dataset), len(test.dataset)) == (24, 6, 10)
    _check_batch(test, (1, 28, 28))


def test_loaders_without_torchvision_say_what_to_install(tmp_path):
    # torchvision is optional (the 'vision' extra): where it is missing, both loaders and the CLI say what to install
    code = (
        "import sys\n"
        "sys.modules['torchvision'] = None\n"
        "import ibwidget as ib\n"
        "from ibwidget.cli import main\n"
        "for load in (ib.datasets.mnist.load_data, ib.datasets.cifar10.load_data):\n"
        "    try:\n"
        f"        load(root={str(tmp_path)!r}, download=False)\n"
        "    except ib.datasets.TorchvisionMissingError as e:\n"
        "        assert isinstance(e, ImportError)\n"
        "        print(str(e).replace(chr(10), ' '))\n"
        f"print('exit', main(['train', '--dataset', 'mnist', '--data-root', {str(tmp_path)!r}]))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    mnist_line, cifar_line, exit_line = run.stdout.splitlines()
    for line, name in ((mnist_line, "MNIST"), (cifar_line, "CIFAR-10")):
        assert line.startswith(f"{name} is read through torchvision, which is not installed"), line
        assert f"built for torch {torch.__version__}" in line and "pip install 'ibwidget[vision]'" in line
        assert "ib.datasets.digits.load_data()" in line  # the offline alternative
    assert exit_line == "exit 2"
    (error,) = run.stderr.strip().splitlines()  # one line, no traceback
    assert error.startswith("ibwidget train: error: MNIST is read through torchvision") and "[vision]" in error
    assert list(tmp_path.iterdir()) == []  # nothing written


# ------------------------------------------------------------------------------------------ ib12


def _vertex_permutation(rotation: np.ndarray) -> np.ndarray:
    """The permutation of the icosahedron's vertices a rotation makes (each vertex lands on a vertex)."""
    p = ib.datasets.ib12.vertices()
    moved = p @ rotation.T
    distances = np.linalg.norm(moved[:, None, :] - p[None, :, :], axis=-1)
    assert np.allclose(distances.min(1), 0.0, atol=1e-9), "not a symmetry of the icosahedron"
    return distances.argmin(1)


def test_ib12_holds_every_pattern_once_balanced_and_invariant_under_the_icosahedrons_rotations():
    x, y = ib.datasets.ib12.patterns()
    assert x.shape == (4096, 12) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert set(x.unique().tolist()) == {0.0, 1.0} and set(y.unique().tolist()) == {0, 1}
    assert len({tuple(row) for row in x.int().tolist()}) == 4096
    assert x[5].tolist() == [0.0] * 9 + [1.0, 0.0, 1.0]  # pattern k holds the bits of k
    assert abs(float(y.float().mean()) - 0.5) < 0.01  # the threshold closest to balance
    p = ib.datasets.ib12.vertices()
    assert np.allclose(np.linalg.norm(p, axis=1), 1.0)
    nearest = np.sort(np.linalg.norm(p[0] - p[1:], axis=1))[:5]
    assert np.allclose(nearest, nearest[0])  # a regular icosahedron: each vertex has five nearest neighbours
    axis, angle = p[0], 2 * np.pi / 5  # a fifth of a turn about a vertex (Rodrigues' formula)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k
    for symmetry in (rotation, -np.eye(3)):
        perm = _vertex_permutation(symmetry)
        moved = torch.zeros_like(x)
        moved[:, torch.from_numpy(perm)] = x  # bit i goes to the vertex the symmetry takes vertex i to
        index = (moved.long() * (2 ** torch.arange(11, -1, -1))).sum(1)
        assert torch.equal(y[index], y) and not torch.equal(index, torch.arange(4096))


def test_ib12_loaders_split_stratified_seeded_and_hold_every_pattern_third():
    train, val, every = ib.datasets.ib12.load_data(batch_size=128, validation_split=0.25, seed=3)
    tr, va = train.dataset, val.dataset
    assert len(tr) + len(va) == 4096 and len(every.dataset) == 4096
    assert set(tr.indices.tolist()).isdisjoint(va.indices.tolist())
    _, y = ib.datasets.ib12.patterns()
    for label in (0, 1):
        assert int((va.targets == label).sum()) == int(0.25 * int((y == label).sum()))  # stratified
    assert torch.equal(every.dataset.targets, y) and torch.equal(every.dataset.indices, torch.arange(4096))
    again = ib.datasets.ib12.load_data(batch_size=128, validation_split=0.25, seed=3)[1].dataset
    other = ib.datasets.ib12.load_data(batch_size=128, validation_split=0.25, seed=4)[1].dataset
    assert torch.equal(again.indices, va.indices) and not torch.equal(other.indices, va.indices)
    x0, y0 = next(iter(train))
    assert x0.shape == (128, 12) and y0.shape == (128,)
    with pytest.raises(ValueError, match="validation_split"):
        ib.datasets.ib12.load_data(validation_split=1.0)
