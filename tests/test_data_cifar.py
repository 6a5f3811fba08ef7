"""The CIFAR-10 registration: tar reader (checked, NumPy-only unpickling), the documented
offline subset, and the clear error offline when no copy exists (no images are bundled)."""
import hashlib
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from dlbook import data

SUBSET = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "cifar-10" / "cifar10_subset.npz"


def _fake_tar(tmp_path, n=4, evil=False):
    rng = np.random.default_rng(0)
    md5, path = {}, tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            rows = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
            d = {b"data": rows, b"labels": list(range(n))}
            if evil:
                d[b"x"] = os.system  # a global that must never be resolved
            raw = pickle.dumps(d, protocol=2)
            md5[name] = hashlib.md5(raw).hexdigest()
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return path, md5


def test_registered():
    ds = data.info("cifar-10")
    assert ds.sample == "cifar-10_sample.npz" and len(ds.classes) == 10
    f = ds.files["train_archive"]
    assert f.md5 == "c58f30108f718f92721af3b95e74349a"
    assert f.subsets[0][0] == "cifar10_subset.npz"


def test_tar_reader_layout(tmp_path):
    path, md5 = _fake_tar(tmp_path)
    x, y = data.read_cifar10_tar(path, "train", md5)
    assert x.shape == (20, 32, 32, 3) and x.dtype == np.uint8
    assert list(y[:4]) == [0, 1, 2, 3]
    x1, _ = data.read_cifar10_tar(path, "test", md5)
    assert x1.shape == (4, 32, 32, 3)


def test_tar_reader_member_checksum(tmp_path):
    path, md5 = _fake_tar(tmp_path)
    md5["test_batch"] = "0" * 32
    with pytest.raises(data.ChecksumError, match="test_batch"):
        data.read_cifar10_tar(path, "test", md5)


def test_tar_reader_refuses_foreign_globals(tmp_path):
    path, md5 = _fake_tar(tmp_path, evil=True)
    with pytest.raises(data.DataError, match="refusing"):
        data.read_cifar10_tar(path, "test", md5)


def test_rows_to_hwc_channel_order():
    rows = np.zeros((1, 3072), np.uint8)
    rows[0, :1024] = 10       # red plane
    rows[0, 1024:2048] = 20   # green
    rows[0, 2048:] = 30       # blue
    img = data._cifar_rows_to_hwc(rows)
    assert img.shape == (1, 32, 32, 3) and list(img[0, 5, 7]) == [10, 20, 30]
    with pytest.raises(data.DataError):
        data._cifar_rows_to_hwc(np.zeros((2, 100), np.uint8))


def test_offline_without_copy_falls_back_to_the_sample(tmp_path, monkeypatch):
    monkeypatch.setenv("DLBOOK_PROFILE", "cpu")
    monkeypatch.setenv("DLBOOK_DATA", str(tmp_path / "cache"))
    monkeypatch.setenv("DLBOOK_MIRROR", str(tmp_path / "mirror"))
    monkeypatch.setenv("DLBOOK_OFFLINE", "1")
    with pytest.warns(data.OfflineWarning, match=r"cifar-10/train: .*DLBOOK_OFFLINE"):
        d = data.load("cifar-10", "train")
    assert len(d) == 250 and d.source == "cifar-10_sample.npz, bundled sample"
    with pytest.raises(data.DataError, match="cifar-10/train: no usable copy"):
        data.load("cifar-10", "train", allow_sample=False)


@pytest.mark.skipif(not SUBSET.is_file(), reason="offline CIFAR-10 subset not present")
def test_offline_subset(tmp_path, monkeypatch):
    monkeypatch.setenv("DLBOOK_PROFILE", "cpu")
    monkeypatch.setenv("DLBOOK_DATA", str(tmp_path / "cache"))
    monkeypatch.setenv("DLBOOK_MIRROR", str(SUBSET.parent.parent))
    monkeypatch.setenv("DLBOOK_OFFLINE", "1")
    tr = data.load("cifar-10", "train")
    te = data.load("cifar-10", "test", limit=50)
    assert tr.x.shape == (4500, 32, 32, 3) and len(te) == 50
    assert tr.source == "cifar10_subset.npz, offline subset" and list(tr.index[899:902]) == [899, 10000, 10001]
    assert list(tr.y[:10]) == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    assert list(te.y[:10]) == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
