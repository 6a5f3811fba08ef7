"""The data registry against a loopback HTTP server: good, corrupt and truncated files,
a server that is down, and what is (not) left in the cache."""
import gzip
import hashlib
import http.server
import socket
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest

from dlbook import data


def _idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return gzip.compress(header + arr.astype(np.uint8).tobytes(), mtime=0)


@pytest.fixture
def env(tmp_path, monkeypatch):
    # the cpu profile: under smoke the loaders read the bundled samples first
    monkeypatch.setenv("DLBOOK_PROFILE", "cpu")
    monkeypatch.setenv("DLBOOK_DATA", str(tmp_path / "cache"))
    monkeypatch.delenv("DLBOOK_MIRROR", raising=False)
    monkeypatch.delenv("DLBOOK_OFFLINE", raising=False)
    return tmp_path


class _Server:
    """Serves a dict path -> bytes; `truncate` cuts a body short while promising all of it."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.truncate: set[str] = set()
        srv = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = srv.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if self.path in srv.truncate else body)

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = _Server()
    yield s
    s.close()


def _toy(name: str, urls, images: bytes, labels: bytes, sample: str | None = None):
    md5 = lambda b: hashlib.md5(b).hexdigest()
    files = {"train_images": data.DataFile("img.gz", md5(images)),
             "train_labels": data.DataFile("lab.gz", md5(labels))}
    return data.register(data.Dataset(name=name, urls=tuple(urls), files=files, reader=data._idx_reader,
                                      licence="test", citation="test", homepage="test", sample=sample,
                                      splits=("train",)))


@pytest.fixture
def toy(server):
    x = np.arange(5 * 4 * 4).reshape(5, 4, 4) % 256
    y = np.arange(5)
    img, lab = _idx_bytes(x), _idx_bytes(y)
    server.files = {"/d/img.gz": img, "/d/lab.gz": lab}
    ds = _toy("toy", [server.url + "/d"], img, lab)
    yield ds, x, y
    data.REGISTRY.pop("toy", None)


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_download_good_file_then_cache(env, toy, server):
    ds, x, y = toy
    d = data.load("toy")
    assert d.source == "img.gz, downloaded; lab.gz, downloaded"
    assert np.array_equal(d.x, x) and np.array_equal(d.y, y)
    assert sorted(p.name for p in (env / "cache" / "toy").iterdir()) == ["img.gz", "lab.gz"]
    server.files.clear()  # the second load must not need the server
    d2 = data.load("toy", limit=3)
    assert d2.source == "img.gz, cached copy; lab.gz, cached copy" and len(d2) == 3


def test_corrupt_download_leaves_nothing(env, toy, server):
    server.files["/d/img.gz"] = b"not the file at all"
    with pytest.raises(data.DataError, match="md5"):
        data.load("toy")
    leftovers = list((env / "cache" / "toy").glob("*img*"))
    assert leftovers == [], leftovers


def test_truncated_download_leaves_nothing(env, toy, server):
    server.truncate.add("/d/img.gz")
    with pytest.raises(data.DataError, match="truncated"):
        data.load("toy")
    assert list((env / "cache" / "toy").glob("*img*")) == []


def test_truncated_first_url_falls_through_to_the_second(env, server):
    x, y = np.arange(32).reshape(2, 4, 4), np.arange(2)
    img, lab = _idx_bytes(x), _idx_bytes(y)
    server.files = {"/a/img.gz": img, "/a/lab.gz": lab, "/b/img.gz": img, "/b/lab.gz": lab}
    server.truncate.add("/a/img.gz")
    _toy("toy3", [server.url + "/a", server.url + "/b"], img, lab)
    try:
        d = data.load("toy3")
        assert np.array_equal(d.x, x) and d.source == "img.gz, downloaded; lab.gz, downloaded"
    finally:
        data.REGISTRY.pop("toy3", None)


def test_corrupt_cached_file_is_moved_aside_and_the_next_source_used(env, toy):
    ds, x, y = toy
    bad = env / "cache" / "toy" / "img.gz"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"junk")
    with pytest.warns(data.DataWarning, match=r"\$DLBOOK_DATA/toy/img.gz is corrupt.*moved aside") as w:
        d = data.load("toy")
    assert np.array_equal(d.x, x) and "downloaded" in d.source
    assert (env / "cache" / "toy" / "img.gz.corrupt").read_bytes() == b"junk"
    assert str(env) not in str(w[0].message)  # no absolute paths in messages
    d2 = data.load("toy")  # the good copy is now in the cache: no warning, no download
    assert "cached copy" in d2.source


def test_corrupt_file_in_a_read_only_mirror_is_reported_and_skipped(env, toy, tmp_path, monkeypatch):
    ds, x, y = toy
    mirror = tmp_path / "mirror"
    (mirror / "toy").mkdir(parents=True)
    (mirror / "toy" / "img.gz").write_bytes(b"junk")
    (mirror / "toy").chmod(0o555)
    monkeypatch.setenv("DLBOOK_MIRROR", str(mirror))
    try:
        with pytest.warns(data.DataWarning, match=r"\$DLBOOK_MIRROR/toy/img.gz is corrupt.*skipped"):
            d = data.load("toy")
        assert np.array_equal(d.x, x) and (mirror / "toy" / "img.gz").read_bytes() == b"junk"
    finally:
        (mirror / "toy").chmod(0o755)


def test_stale_part_files_are_cleaned(env, toy):
    folder = env / "cache" / "toy"
    folder.mkdir(parents=True)
    stale = folder / ".img.gz.abc.part"
    stale.write_bytes(b"half")
    import os
    os.utime(stale, (0, 0))
    data.load("toy")
    assert not stale.exists()


def test_server_down_falls_back_to_bundled_sample_with_one_warning(env, monkeypatch):
    ds = data.REGISTRY["mnist"]
    port = _free_port()
    monkeypatch.setitem(data.REGISTRY, "mnist",
                        data.Dataset(**{**ds.__dict__, "urls": (f"http://127.0.0.1:{port}/x",)}))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        d = data.load("mnist", "test", limit=10)
    offline = [x for x in w if issubclass(x.category, data.OfflineWarning)]
    assert len(offline) == 1 and "bundled" in str(offline[0].message)
    assert f"127.0.0.1:{port}" in str(offline[0].message)  # it says what was tried
    assert d.source == "mnist_sample.npz, bundled sample" and d.x.shape == (10, 28, 28)
    assert not any((env / "cache" / "mnist").glob("*")) if (env / "cache" / "mnist").exists() else True


def test_smoke_profile_reads_the_bundled_sample_without_network(env, monkeypatch):
    monkeypatch.setenv("DLBOOK_PROFILE", "smoke")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no download attempt, no fallback warning
        d = data.load("cifar-10", "train", limit=20)
    assert d.source == "cifar-10_sample.npz, bundled sample" and d.x.shape == (20, 32, 32, 3)
    assert not (env / "cache").exists()


def test_fewer_records_than_asked_is_said_once(env, monkeypatch):
    monkeypatch.setenv("DLBOOK_PROFILE", "smoke")
    with pytest.warns(data.DataWarning, match="holds 1000 records, fewer than the 5000 asked") as w:
        d = data.load("mnist", "test", limit=5000)
    assert len(d) == 1000 and len([x for x in w if issubclass(x.category, data.DataWarning)]) == 1


def test_bad_limit_is_refused(env):
    for bad in (-1, 2.5, True):
        with pytest.raises(data.DataError, match="limit"):
            data.load("mnist", "test", limit=bad)


def test_no_sample_and_no_network_is_a_clear_error(env, server):
    server.files = {}
    _toy("toy2", [f"http://127.0.0.1:{_free_port()}/d"], b"a", b"b")
    try:
        with pytest.raises(data.DataError, match=r"no usable copy \(http://127.0.0.1:\d+/d/img.gz"):
            data.load("toy2")
    finally:
        data.REGISTRY.pop("toy2", None)


def test_offline_flag_skips_download(env, toy, server, monkeypatch):
    monkeypatch.setenv("DLBOOK_OFFLINE", "1")
    with pytest.raises(data.DataError):
        data.load("toy", allow_sample=False)
    assert not (env / "cache" / "toy").exists()


def test_mirror_and_subset_copies(env, toy, monkeypatch, tmp_path):
    ds, x, y = toy
    mirror = tmp_path / "mirror"
    (mirror / "toy").mkdir(parents=True)
    sub = _idx_bytes(x[:2])
    (mirror / "toy" / "img.gz.first2").write_bytes(sub)
    (mirror / "toy" / "lab.gz").write_bytes(_idx_bytes(y))
    f = ds.files["train_images"]
    monkeypatch.setitem(ds.files, "train_images",
                        data.DataFile(f.name, f.md5, (("img.gz.first2", hashlib.sha256(sub).hexdigest()),)))
    monkeypatch.setenv("DLBOOK_MIRROR", str(mirror))
    monkeypatch.setenv("DLBOOK_OFFLINE", "1")
    with pytest.warns(data.DataWarning, match="offline subset holds 2 records, fewer than the 5"):
        d = data.load("toy", limit=5)
    assert len(d) == 2 and np.array_equal(d.y, y[:2])
    assert d.source == "img.gz.first2, offline subset; lab.gz, offline copy"


def test_unknown_dataset_and_split():
    with pytest.raises(data.UnknownDatasetError, match="registered: .*mnist"):
        data.load("imagenet")
    with pytest.raises(data.DataError, match="splits"):
        data.load("mnist", "validation")


def test_read_idx_rejects_bad_files(tmp_path):
    p = tmp_path / "bad.gz"
    p.write_bytes(gzip.compress(b"\x01\x02\x03\x04"))
    with pytest.raises(data.DataError, match="magic"):
        data.read_idx(p)
    q = tmp_path / "short"
    q.write_bytes(bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big") + b"\x00" * 3)
    with pytest.raises(data.DataError, match="truncated"):
        data.read_idx(q)


def test_bundled_samples_match_the_registry():
    for name, shape, n_test in (("mnist", (28, 28), 1000), ("fashion-mnist", (28, 28), 1000),
                                ("cifar-10", (32, 32, 3), 100)):
        ds = data.info(name)
        with np.load(data.SAMPLES / ds.sample) as z:
            assert z["x_train"].dtype == np.uint8 and z["x_train"].shape[1:] == shape
            assert len(z["x_test"]) == len(z["y_test"]) == n_test
            assert set(np.unique(z["y_train"])) == set(range(10))
        assert ds.licence and ds.citation
        assert ds.sample in (data.SAMPLES / "README.md").read_text()


def test_cifar_sample_keeps_canonical_indices(env, monkeypatch):
    monkeypatch.setenv("DLBOOK_PROFILE", "smoke")
    d = data.load("cifar-10", "train")
    assert len(d) == 250 and list(d.index[48:52]) == [48, 49, 10000, 10001]


def test_to_float_shapes():
    x = np.zeros((2, 28, 28), np.uint8)
    x[0, 0, 0] = 255
    t = data.to_float(x)
    assert t.shape == (2, 1, 28, 28) and float(t.max()) == 1.0
    assert data.to_float(np.zeros((2, 8, 8, 3), np.uint8)).shape == (2, 3, 8, 8)


def test_to_float_size_fit_and_range():
    x = np.full((3, 28, 28), 255, np.uint8)
    p = data.to_float(x, size=32, fit="pad", value_range=(-1, 1))
    assert p.shape == (3, 1, 32, 32) and float(p[0, 0, 0, 0]) == -1.0 and float(p[0, 0, 16, 16]) == 1.0
    r = data.to_float(np.full((2, 64, 48, 3), 128, np.uint8), size=16)
    assert r.shape == (2, 3, 16, 16) and abs(float(r.mean()) - 128 / 255) < 1e-6
    for kw in ({"size": 0}, {"fit": "crop"}, {"value_range": (1, 1)}, {"size": 16, "fit": "pad"}):
        with pytest.raises(ValueError):
            data.to_float(x, **kw)


@pytest.mark.skipif(not (Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist").is_dir(),
                    reason="offline copies of the data are not beside the checkout")
def test_shared_offline_copies_verify(env, monkeypatch):
    monkeypatch.setenv("DLBOOK_MIRROR", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    monkeypatch.setenv("DLBOOK_OFFLINE", "1")
    d = data.load("mnist", "test")
    assert len(d) == 10000 and d.source == ("t10k-images-idx3-ubyte.gz, offline copy; "
                                            "t10k-labels-idx1-ubyte.gz, offline copy")


def test_an_unknown_profile_is_an_error_for_the_loaders(env, toy, monkeypatch):
    monkeypatch.setenv("DLBOOK_PROFILE", "bogus")
    with pytest.raises(ValueError, match="bogus"):
        data.load("toy")
    with pytest.raises(ValueError, match="bogus"):
        data.load_text("tinyshakespeare")
