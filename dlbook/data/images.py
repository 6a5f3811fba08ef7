"""Image datasets: MNIST, Fashion-MNIST, CIFAR-10 and CelebA, read into uint8 arrays with
integer labels, and turned into float tensors of a given size and value range.

`load` resolves every file of a split through the registry (cache, mirrors, download,
documented subset) and falls back to the sample bundled with dlbook. Under the smoke profile
the bundled sample comes first, so tests never download and read the same data everywhere.
"""
from __future__ import annotations

import gzip
import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .registry import (SAMPLES, Attempts, shown, ChecksumError, DataError, DataFile, Dataset, OfflineWarning,
                       fewer_than_asked, info, no_sample_fallback, log_provenance, prefer_sample, register, resolve)


@dataclass
class ArrayData:
    """Images as uint8 (N, H, W[, C]) and integer labels, with where they came from.
    `index` holds each record's position in the canonical dataset (None: 0..N-1)."""

    x: np.ndarray
    y: np.ndarray
    source: str
    dataset: str
    split: str
    index: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.x)

    def __repr__(self) -> str:
        return (f"ArrayData({self.dataset}/{self.split}: x{tuple(self.x.shape)} {self.x.dtype}, "
                f"source={self.source})")

    def canonical_index(self) -> np.ndarray:
        return np.arange(len(self.x)) if self.index is None else self.index


def _read_sample(ds: Dataset, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    path = SAMPLES / ds.sample
    with np.load(path, allow_pickle=False) as z:
        idx = z[f"i_{split}"] if f"i_{split}" in z.files else None
        return z[f"x_{split}"], z[f"y_{split}"], idx


def load(name: str, split: str = "train", limit: int | None = None,
         allow_sample: bool = True) -> ArrayData:
    """The `split` of image dataset `name` as uint8 images and labels (first `limit` records)."""
    ds = info(name)
    if ds.kind != "images":
        raise DataError(f"{name} is a {ds.kind} dataset: read it with dlbook.data.load_text({name!r})")
    if split not in ds.splits:
        raise DataError(f"{name} has splits {ds.splits}, not {split!r}")
    if limit is not None and (isinstance(limit, bool) or int(limit) != limit or limit < 0):
        raise DataError(f"{name}/{split}: limit must be a whole number >= 0 (or None for all), got {limit!r}")
    index = None
    smoke = prefer_sample()  # resolves the profile first: an unknown $DLBOOK_PROFILE is an error
    if allow_sample and ds.sample is not None and smoke:
        x, y, index = _read_sample(ds, split)
        source = f"{ds.sample}, bundled sample"
        fewer_than_asked(name, split, len(x), limit, "the bundled sample")
    else:
        wanted = [k for k in ds.files if k.startswith(split + "_")]
        tries = Attempts()
        found = {k: resolve(ds, k, tries) for k in wanted}
        if all(v is not None for v in found.values()):
            out = ds.reader({k: v.path for k, v in found.items()}, split)
            x, y = out[0], out[1]
            index = out[2] if len(out) > 2 else None
            source = "; ".join(sorted({v.label for v in found.values()}))
            if any("subset" in v.label for v in found.values()):
                fewer_than_asked(name, split, len(x), limit, "the offline subset")
        else:
            if not allow_sample or ds.sample is None:
                raise DataError(
                    f"{name}/{split}: no usable copy ({tries}). Connect to the network, or put the "
                    f"files in $DLBOOK_DATA/{name} (see {ds.homepage}).")
            no_sample_fallback(name, split, tries)
            warnings.warn(
                f"{name}/{split}: the real data is not available ({tries}); using the small sample "
                f"bundled with dlbook instead ({ds.sample}). Results will differ from the full "
                f"dataset. To use the real data, connect to the network or put the files in "
                f"$DLBOOK_DATA/{name}.", OfflineWarning, stacklevel=2)
            x, y, index = _read_sample(ds, split)
            source = f"{ds.sample}, bundled sample"
            fewer_than_asked(name, split, len(x), limit, "the bundled sample")
    log_provenance(f"{name}/{split}: {source}")
    n = min(len(x), len(y))
    if limit is not None:
        n = min(n, int(limit))
    return ArrayData(x[:n], np.asarray(y[:n]).astype(np.int64), source, name, split,
                     None if index is None else np.asarray(index[:n], dtype=np.int64))


# ---------------------------------------------------------------- readers
def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzipped or not): magic 0x0000 08 D, D big-endian uint32 dims, bytes."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":  # gzip, whatever the name (subsets are named *.gz.firstN too)
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise DataError(f"{shown(path)} is a damaged gzip file ({e}); delete it and download again") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{shown(path)} is not an unsigned-byte IDX file (bad magic {raw[:4]!r}); "
                        "delete it and download again")
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataError(f"{shown(path)}: header says {dims} but holds {body.size} bytes; the file is "
                        "truncated: delete it and download again")
    return body.reshape(dims)


def _idx_reader(paths: dict[str, Path], split: str) -> tuple[np.ndarray, np.ndarray]:
    return read_idx(paths[f"{split}_images"]), read_idx(paths[f"{split}_labels"])


def to_float(x: np.ndarray, channels_first: bool = True, size: int | None = None, fit: str = "resize",
             value_range: tuple[float, float] = (0.0, 1.0)):
    """uint8 images -> float32 torch tensor (N, C, H, W) scaled to `value_range`.

    With `size`, square images are brought to size x size: ``fit="resize"`` resamples
    (antialiased bilinear), ``fit="pad"`` centres them on a background of the range's low end
    (for 28x28 digits drawn on black inside a 32x32 network, as DCGAN-style code does)."""
    import torch
    from torch.nn import functional as F

    if fit not in ("resize", "pad"):
        raise ValueError(f"to_float: fit must be 'resize' or 'pad', got {fit!r}")
    lo, hi = (float(v) for v in value_range)
    if not hi > lo:
        raise ValueError(f"to_float: value_range must be (low, high) with low < high, got {value_range}")
    if size is not None and (isinstance(size, bool) or int(size) != size or size < 1):
        raise ValueError(f"to_float: size must be a whole number >= 1, got {size!r}")
    t = torch.from_numpy(np.array(x, copy=True)).float().div_(255.0)  # readers give read-only views
    if t.ndim == 3:
        t = t.unsqueeze(1)
    elif channels_first and t.ndim == 4 and t.shape[-1] in (1, 3):
        t = t.permute(0, 3, 1, 2).contiguous()
    if t.ndim != 4:
        raise ValueError(f"to_float: expected (N, H, W) or (N, H, W, C) images, got shape {tuple(x.shape)}")
    if size is not None and tuple(t.shape[-2:]) != (size, size):
        h, w = t.shape[-2:]
        if fit == "pad":
            if h > size or w > size:
                raise ValueError(f"to_float: cannot pad {h}x{w} images to {size}x{size}; use fit='resize'")
            top, left = (size - h) // 2, (size - w) // 2
            t = F.pad(t, (left, size - w - left, top, size - h - top))
        else:
            s = min(h, w)  # centre square, then resample
            t = t[..., (h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
            t = F.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
            t = t.clamp_(0.0, 1.0)
    return t * (hi - lo) + lo if (lo, hi) != (0.0, 1.0) else t


# ---------------------------------------------------------------- the datasets
def _idx_files(md5: dict[str, str], subsets: dict[str, tuple[tuple[str, str], ...]]) -> dict[str, DataFile]:
    names = {"train_images": "train-images-idx3-ubyte.gz", "train_labels": "train-labels-idx1-ubyte.gz",
             "test_images": "t10k-images-idx3-ubyte.gz", "test_labels": "t10k-labels-idx1-ubyte.gz"}
    return {k: DataFile(n, md5[k], subsets.get(k, ())) for k, n in names.items()}


register(Dataset(
    name="mnist",
    urls=("https://ossci-datasets.s3.amazonaws.com/mnist", "https://yann.lecun.com/exdb/mnist"),
    files=_idx_files(
        {"train_images": "f68b3c2dcbeaaa9fbdd348bbdeb94873", "train_labels": "d53e105ee54ea40749a09fcbcd1e9432",
         "test_images": "9fb629c4189551a2d022fa330f9573f3", "test_labels": "ec29112dd5afa0611ce80d1b7f02629c"},
        {"train_images": (("train-images-idx3-ubyte.first14000.gz",
                           "2b758c873c752d38eb54bd9f60021835ec129ad7fec0553f1fa014aec3249f72"),),
         "train_labels": (("train-labels-idx1-ubyte.first14000.gz",
                           "c640568770c4d993d291078befc349d9a0e112effe99b817228e688a7035cd6d"),)}),
    reader=_idx_reader,
    licence="CC BY-SA 3.0 (Y. LeCun and C. Cortes)",
    citation="Y. LeCun, L. Bottou, Y. Bengio, P. Haffner. Gradient-based learning applied to "
             "document recognition. Proc. IEEE 86(11), 1998.",
    homepage="http://yann.lecun.com/exdb/mnist/",
    sample="mnist_sample.npz",
    classes=tuple(str(i) for i in range(10)),
))

register(Dataset(
    name="fashion-mnist",
    # The S3 website endpoint serves plain http only; the MD5 check makes that safe.
    urls=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com",),
    files=_idx_files(
        {"train_images": "8d4fb7e6c68d591d4c3dfef9ec88bf0d", "train_labels": "25c81989df183df01b3e8a0aad5dffbe",
         "test_images": "bef4ecab320f06d8554ea6380940ec79", "test_labels": "bb300cfdad3c16e7a12a480ee83cd310"},
        {"train_images": (("train-images-idx3-ubyte.first1800.gz",
                           "128158622bd931076ca2a606b1006b7db522b2f381edcf372c59c6e21e64adf9"),),
         "train_labels": (("train-labels-idx1-ubyte.first1800.gz",
                           "38ae2e3555cacddeca64a08de6c90f4440d3e82b4afa60c640dab3fe0fdae141"),),
         "test_images": (("t10k-images-idx3-ubyte.first4000.gz",
                          "9a6a85b757b3031597e5370705f91d41217f20830e531c66f23ae6089a7cd01d"),),
         "test_labels": (("t10k-labels-idx1-ubyte.first4000.gz",
                          "85972b28a2cf7671b89f71a242939a85c520247179be6ab663c92c34972d0384"),)}),
    reader=_idx_reader,
    licence="MIT (Zalando SE)",
    citation="H. Xiao, K. Rasul, R. Vollgraf. Fashion-MNIST: a novel image dataset for "
             "benchmarking machine learning algorithms. arXiv:1708.07747, 2017.",
    homepage="https://github.com/zalandoresearch/fashion-mnist",
    sample="fashion-mnist_sample.npz",
    classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
             "Bag", "Ankle boot"),
))


# ---------------------------------------------------------------- CIFAR-10
# One canonical archive serves both splits. The archive's MD5 is verified by `_find` before
# the reader sees it, each member's MD5 is verified again before it is parsed, and the
# pickles are read with an unpickler that only rebuilds NumPy arrays (no other globals), so
# no untrusted bytes are ever unpickled. The offline copy is a documented subset
# (`cifar10_subset.npz`: first 900 images of every batch, a plain NumPy archive, no pickles).
_CIFAR10_MEMBER_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
_CIFAR10_SUBSET = ("cifar10_subset.npz", "aa506f55d0da18fc954eef1a73718a6e0a3dfa1ebaabe968325bd1757918b983")


def _cifar_rows_to_hwc(rows: np.ndarray) -> np.ndarray:
    """(N, 3072) rows (1024 R, 1024 G, 1024 B, row-major planes) -> (N, 32, 32, 3) uint8."""
    rows = np.asarray(rows, dtype=np.uint8)
    if rows.ndim != 2 or rows.shape[1] != 3072:
        raise DataError(f"CIFAR-10 rows must have shape (N, 3072), got {rows.shape}")
    return rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()


def _cifar_unpickle_numpy_only(raw: bytes) -> dict:
    """Parse one CIFAR batch pickle, allowing only the globals that rebuild a NumPy array."""
    import io
    import pickle

    allowed = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"),
               ("_codecs", "encode")}  # how Python 3 pickles bytes inside an ndarray state

    class _NumpyOnly(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) not in allowed:
                raise DataError(f"CIFAR-10 batch refers to {module}.{name}; refusing to load it")
            if module.startswith("numpy.core"):
                module = "numpy._core.multiarray" if hasattr(np, "_core") else module
            return super().find_class(module, name)

    return _NumpyOnly(io.BytesIO(raw), encoding="bytes").load()


def read_cifar10_tar(path: Path, split: str, member_md5: dict[str, str] | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 32, 32, 3) uint8 and labels of `split` from the python-version tarball."""
    import tarfile

    member_md5 = _CIFAR10_MEMBER_MD5 if member_md5 is None else member_md5
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    xs, ys = [], []
    with tarfile.open(path, "r:gz") as tar:
        for n in names:
            try:
                raw = tar.extractfile(f"cifar-10-batches-py/{n}").read()
            except (KeyError, AttributeError):
                raise DataError(f"{shown(path)} has no member cifar-10-batches-py/{n}; delete it and download again") from None
            got = hashlib.md5(raw).hexdigest()
            if n in member_md5 and got != member_md5[n]:
                raise ChecksumError(f"{shown(path)}: member {n} has MD5 {got}, expected {member_md5[n]}; "
                                    "delete the archive and download again")
            d = _cifar_unpickle_numpy_only(raw)
            xs.append(_cifar_rows_to_hwc(d[b"data"]))
            ys.append(np.asarray(d[b"labels"], dtype=np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def read_cifar10_npz(path: Path, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The documented offline subset (plain arrays, `allow_pickle=False`): images, labels and
    each image's canonical index ((batch - 1) * 10000 + index in batch for train)."""
    with np.load(path, allow_pickle=False) as z:
        x, y = _cifar_rows_to_hwc(z[f"{split}_data"]), z[f"{split}_labels"].astype(np.int64)
        if split == "train":
            idx = (z["train_batch"].astype(np.int64) - 1) * 10_000 + z["train_index"].astype(np.int64)
        else:
            idx = np.arange(len(x), dtype=np.int64)
    return x, y, idx


def _cifar10_reader(paths: dict[str, Path], split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    p = paths[f"{split}_archive"]
    if p.suffix == ".npz":
        return read_cifar10_npz(p, split)
    x, y = read_cifar10_tar(p, split)
    return x, y, np.arange(len(x), dtype=np.int64)


register(Dataset(
    name="cifar-10",
    urls=("https://www.cs.toronto.edu/~kriz",),
    files={f"{s}_archive": DataFile("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
                                    (_CIFAR10_SUBSET,)) for s in ("train", "test")},
    reader=_cifar10_reader,
    licence="none stated by the authors; cite Krizhevsky (2009)",
    citation="A. Krizhevsky. Learning Multiple Layers of Features from Tiny Images. Technical report, "
             "University of Toronto, 2009.",
    homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
    # The first 50 images of each training batch and the first 100 test images, with their
    # canonical indices (i_train, i_test), attributed to Krizhevsky (2009): dlbook/data/samples.
    sample="cifar-10_sample.npz",
    classes=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
))


# ---------------------------------------------------------------- CelebA (aligned faces)
# CelebA may not be redistributed: nothing of it ships with dlbook. The registry reads the
# official img_align_celeba.zip from the cache or a mirror, or the documented 10,000-image
# half-resolution subset (89x109) as a stand-in. Images are centre-cropped to a square around
# the face and resized to 64x64 when read (202,599 x 64 x 64 x 3 uint8 = 2.5 GB).
CELEBA_SIZE = 64


def _celeba_reader(paths: dict[str, Path], split: str) -> tuple[np.ndarray, np.ndarray]:
    import io
    import zipfile

    from PIL import Image

    path = paths[f"{split}_images"]
    out = []
    with zipfile.ZipFile(path) as z:
        names = sorted(n for n in z.namelist() if n.lower().endswith(".jpg"))
        for n in names:
            im = Image.open(io.BytesIO(z.read(n))).convert("RGB")
            w, h = im.size  # 178x218 (official) or 89x109 (subset): crop a w x w square around the face
            top = (h - w) // 2 + round(0.06 * h)
            im = im.crop((0, top, w, top + w)).resize((CELEBA_SIZE, CELEBA_SIZE), Image.BILINEAR)
            out.append(np.asarray(im, dtype=np.uint8))
    if not out:
        raise DataError(f"{shown(path)} holds no JPEG images; delete it and fetch img_align_celeba.zip again")
    return np.stack(out), np.zeros(len(out), dtype=np.int64)


register(Dataset(
    name="celeba",
    urls=(),  # Google Drive refuses scripted downloads of the 1.4 GB zip: fetch it by hand
    files={"train_images": DataFile(
        "img_align_celeba.zip", "00d2c5bc6d35e252742224ab0c1e8fcb",
        (("img_align_celeba_89x109_000001-010000.zip",
          "b2e4bcd0714a5b1f545817414a8ed39797249a91cacfc891a6504318d3fc328c"),))},
    reader=_celeba_reader,
    licence="CelebA Dataset Agreement (MMLAB, CUHK): non-commercial research only, no redistribution",
    citation="Z. Liu, P. Luo, X. Wang, X. Tang. Deep learning face attributes in the wild. ICCV 2015.",
    homepage="https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html",
    sample=None,
    splits=("train",),
))
