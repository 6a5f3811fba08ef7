"""A small data registry: name -> canonical URLs, checksums, licence, citation and a
bundled offline sample.

Where a file is looked for, in order:
1. the cache, ``$DLBOOK_DATA/<dataset>/<file>`` (default ``~/.cache/dlbook``), MD5-checked;
2. each folder of ``$DLBOOK_MIRROR`` (``os.pathsep``-separated), same layout, MD5-checked;
3. a download from the canonical URLs into the cache (temp file, checksum, rename),
   unless ``$DLBOOK_OFFLINE=1``;
4. a documented first-N subset in the cache or a mirror (``<file>.firstN`` with its SHA-256);
5. otherwise the whole dataset falls back to the sample bundled with ``dlbook``,
   with one warning that says so.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import socket
import tempfile
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

SAMPLES = Path(__file__).with_name("samples")
_TIMEOUT = 20.0


class DataError(RuntimeError):
    """Base class: every message says what to do next."""


class UnknownDatasetError(DataError, KeyError):
    def __str__(self) -> str:  # KeyError would repr() the message
        return self.args[0]


class ChecksumError(DataError):
    pass


class OfflineWarning(UserWarning):
    pass


class _Unreachable(Exception):
    pass


@dataclass(frozen=True)
class DataFile:
    """One canonical file; `subsets` are documented first-N copies accepted from disk."""

    name: str
    md5: str
    subsets: tuple[tuple[str, str], ...] = ()  # (file name, sha256)


@dataclass(frozen=True)
class Dataset:
    name: str
    urls: tuple[str, ...]  # base URLs, tried in order
    files: dict[str, DataFile]
    reader: Callable[[dict[str, Path], str], tuple[np.ndarray, np.ndarray]]
    licence: str
    citation: str
    homepage: str
    sample: str | None = None  # file in dlbook/samples: x_<split>, y_<split> arrays
    splits: tuple[str, ...] = ("train", "test")
    classes: tuple[str, ...] = field(default=())


@dataclass
class ArrayData:
    """Images as uint8 (N, H, W[, C]) and integer labels, with where they came from."""

    x: np.ndarray
    y: np.ndarray
    source: str
    dataset: str
    split: str

    def __len__(self) -> int:
        return len(self.x)

    def __repr__(self) -> str:
        return (f"ArrayData({self.dataset}/{self.split}: x{tuple(self.x.shape)} {self.x.dtype}, "
                f"source={self.source})")


REGISTRY: dict[str, Dataset] = {}


def register(ds: Dataset) -> Dataset:
    REGISTRY[ds.name] = ds
    return ds


def info(name: str) -> Dataset:
    try:
        return REGISTRY[name]
    except KeyError:
        raise UnknownDatasetError(
            f"unknown dataset {name!r}; registered: {', '.join(sorted(REGISTRY))}. "
            "Register it with dlbook.data.register(Dataset(...)) first."
        ) from None


def data_dir() -> Path:
    return Path(os.environ.get("DLBOOK_DATA") or Path.home() / ".cache" / "dlbook").expanduser()


def mirror_dirs() -> list[Path]:
    raw = os.environ.get("DLBOOK_MIRROR", "")
    return [Path(p).expanduser() for p in raw.split(os.pathsep) if p.strip()]


def offline() -> bool:
    return os.environ.get("DLBOOK_OFFLINE", "").strip().lower() in ("1", "true", "yes")


def file_hash(path: Path, algo: str = "md5") -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _verified(path: Path, algo: str, expected: str) -> bool:
    """True if present and correct, False if absent; a present wrong file is an error."""
    if not path.is_file():
        return False
    got = file_hash(path, algo)
    if got != expected:
        raise ChecksumError(
            f"{path} is corrupt ({algo} {got}, expected {expected}). "
            f"Delete it and run again to download a fresh copy: rm '{path}'"
        )
    return True


def download(url: str, dest: Path, md5: str | None = None, timeout: float = _TIMEOUT) -> Path:
    """Download `url` to `dest` atomically: a temp file in the same folder, checked, then
    renamed. On any failure nothing is left at `dest` and the temp file is removed."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r, os.fdopen(fd, "wb") as out:
                expected = r.headers.get("Content-Length")
                n = 0
                for block in iter(lambda: r.read(1 << 20), b""):
                    out.write(block)
                    n += len(block)
            if expected is not None and n != int(expected):
                raise ChecksumError(
                    f"download of {url} was truncated ({n} of {expected} bytes); "
                    "nothing was saved: run again, or fetch the file by hand into "
                    f"{dest.parent}")
        except (urllib.error.HTTPError,) as e:
            raise _Unreachable(f"{url}: HTTP {e.code}") from e
        except (urllib.error.URLError, socket.timeout, ConnectionError, OSError) as e:
            if isinstance(e, ChecksumError):
                raise
            if "IncompleteRead" in type(e).__name__:
                raise ChecksumError(f"download of {url} was truncated; nothing was saved: run again") from e
            raise _Unreachable(f"{url}: {e}") from e
        except Exception as e:  # http.client.IncompleteRead and friends
            if isinstance(e, ChecksumError):
                raise
            raise ChecksumError(f"download of {url} failed ({e}); nothing was saved: run again") from e
        if md5 is not None:
            got = file_hash(Path(tmp))
            if got != md5:
                raise ChecksumError(
                    f"download of {url} has MD5 {got}, expected {md5}: the server sent a corrupt "
                    f"or different file. Nothing was saved to {dest}; run again later or put a "
                    f"verified copy there by hand.")
        os.replace(tmp, dest)
        return dest
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _find(ds: Dataset, f: DataFile) -> tuple[Path, str] | None:
    roots = [data_dir()] + mirror_dirs()
    for root in roots:
        if _verified(root / ds.name / f.name, "md5", f.md5):
            return root / ds.name / f.name, "cache" if root == data_dir() else f"mirror {root}"
    if not offline():
        for base in ds.urls:
            try:
                p = download(base.rstrip("/") + "/" + f.name, data_dir() / ds.name / f.name, f.md5)
                return p, "download"
            except _Unreachable:
                continue
    for root in roots:
        for sub, sha in f.subsets:
            if _verified(root / ds.name / sub, "sha256", sha):
                return root / ds.name / sub, f"subset {root / ds.name / sub}"
    return None


def load(name: str, split: str = "train", limit: int | None = None,
         allow_sample: bool = True) -> ArrayData:
    """The `split` of dataset `name` as uint8 images and labels (first `limit` records)."""
    ds = info(name)
    if split not in ds.splits:
        raise DataError(f"{name} has splits {ds.splits}, not {split!r}")
    wanted = {k: f for k, f in ds.files.items() if k.startswith(split + "_")}
    found = {k: _find(ds, f) for k, f in wanted.items()}
    if all(v is not None for v in found.values()):
        x, y = ds.reader({k: v[0] for k, v in found.items()}, split)
        sources = sorted({v[1] for v in found.values()})
        source = "; ".join(sources)
    else:
        missing = [wanted[k].name for k, v in found.items() if v is None]
        if not allow_sample or ds.sample is None:
            raise DataError(
                f"{name}/{split}: no copy of {missing} in {data_dir()} or $DLBOOK_MIRROR and the "
                "download failed. Connect to the network, or copy the files into "
                f"{data_dir() / name}.")
        warnings.warn(
            f"{name}/{split}: could not download {missing} (offline?); using the small sample "
            f"bundled with dlbook instead. Results will differ from the full dataset. "
            f"To use the real data, connect to the network or put the files in {data_dir() / name}.",
            OfflineWarning, stacklevel=2)
        with np.load(SAMPLES / ds.sample) as z:
            x, y = z[f"x_{split}"], z[f"y_{split}"]
        source = f"bundled sample {ds.sample}"
    _log_provenance(f"{name}/{split}: {source}")
    n = min(len(x), len(y))
    if limit is not None:
        n = min(n, int(limit))
    return ArrayData(x[:n], y[:n].astype(np.int64), source, name, split)


def _log_provenance(line: str) -> None:
    """`python -m dlbook.record` sets $DLBOOK_PROVENANCE_LOG to learn which data a run used."""
    path = os.environ.get("DLBOOK_PROVENANCE_LOG")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


# ---------------------------------------------------------------- readers
def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzipped or not): magic 0x0000 08 D, D big-endian uint32 dims, bytes."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":  # gzip, whatever the name (subsets are named *.gz.firstN too)
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise DataError(f"{path} is a damaged gzip file ({e}); delete it and download again") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file (bad magic {raw[:4]!r}); "
                        "delete it and download again")
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataError(f"{path}: header says {dims} but holds {body.size} bytes; the file is "
                        "truncated: delete it and download again")
    return body.reshape(dims)


def _idx_reader(paths: dict[str, Path], split: str) -> tuple[np.ndarray, np.ndarray]:
    return read_idx(paths[f"{split}_images"]), read_idx(paths[f"{split}_labels"])


def to_float(x: np.ndarray, channels_first: bool = True):
    """uint8 images -> float32 torch tensor in [0, 1], shape (N, C, H, W)."""
    import torch

    t = torch.from_numpy(np.array(x, copy=True)).float().div_(255.0)  # readers give read-only views
    if t.ndim == 3:
        t = t.unsqueeze(1)
    elif channels_first and t.ndim == 4 and t.shape[-1] in (1, 3):
        t = t.permute(0, 3, 1, 2).contiguous()
    return t


# ---------------------------------------------------------------- the datasets
def _idx_files(md5: dict[str, str], subsets: dict[str, tuple[tuple[str, str], ...]]) -> dict[str, DataFile]:
    names = {"train_images": "train-images-idx3-ubyte.gz", "train_labels": "train-labels-idx1-ubyte.gz",
             "test_images": "t10k-images-idx3-ubyte.gz", "test_labels": "t10k-labels-idx1-ubyte.gz"}
    return {k: DataFile(n, md5[k], subsets.get(k, ())) for k, n in names.items()}


register(Dataset(
    name="mnist",
    urls=("https://ossci-datasets.s3.amazonaws.com/mnist", "http://yann.lecun.com/exdb/mnist"),
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
        raise DataError(f"{path} holds no JPEG images; delete it and fetch img_align_celeba.zip again")
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
