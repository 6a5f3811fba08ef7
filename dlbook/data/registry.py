"""The data registry: name -> canonical URLs, checksums, licence, citation, offline copies,
and how one file of a dataset is found.

Where a file is looked for, in order (`resolve`):
1. the cache, ``$DLBOOK_DATA/<dataset>/<file>`` (default ``~/.cache/dlbook``), checked;
2. each folder of ``$DLBOOK_MIRROR`` (``os.pathsep``-separated, may be read-only), checked;
3. a download from each canonical URL in turn into the cache (temp file, checksum, rename),
   unless ``$DLBOOK_OFFLINE=1``;
4. a documented first-N subset in the cache or a mirror (``<file>.firstN`` with its SHA-256);
5. otherwise the caller falls back to the sample bundled with ``dlbook``, with one warning
   that says what was tried.

A file that the canonical source ships only inside an archive with no published checksum
(`DataFile.archive`) is verified as a member: the archive is downloaded once into the cache,
the member extracted and checked against its own checksum (SHA-256, MD5, or the git blob id
``sha1(b"blob <size>\0" + content)`` that public copies of the file were committed under).

A file that fails its checksum never blocks a later load: in the cache it is moved aside to
``<file>.corrupt`` (kept for inspection, not deleted) and the search goes on; in a mirror it is
reported and skipped. Messages and provenance name data by dataset and file, never by the
absolute path of the machine that ran them.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

SAMPLES = Path(__file__).with_name("samples")
_TIMEOUT = 20.0
_STALE_PART_S = 3600.0  # a .part file older than this belongs to a run that died
MAX_MEMBER_BYTES = 1 << 29  # an archive member without its own `max_bytes` may not exceed 512 MiB


class DataError(RuntimeError):
    """Base class: every message says what to do next."""


class UnknownDatasetError(DataError, KeyError):
    def __str__(self) -> str:  # KeyError would repr() the message
        return self.args[0]


class ChecksumError(DataError):
    pass


class OfflineWarning(UserWarning):
    """The real data could not be used: a smaller copy stands in (the message says which)."""


class DataWarning(UserWarning):
    """Something was wrong with a copy on disk or with the size asked for; the load went on."""


class _Unreachable(Exception):
    pass


@dataclass(frozen=True)
class DataFile:
    """One canonical file; `subsets` are documented first-N copies accepted from disk.
    `algo` is the checksum of the canonical file (md5 for the published ones)."""

    name: str
    checksum: str
    subsets: tuple[tuple[str, str], ...] = ()  # (file name, sha256)
    algo: str = "md5"  # any hashlib name, or GIT_BLOB
    # (archive name at each of the dataset's URLs, member path inside it): the file is taken out
    # of that archive (tar, any compression) and verified against `checksum`; the archive
    # itself carries no checksum.
    archive: tuple[str, str] | None = None
    # the most bytes the file may have (its size where known): an archive member is refused as
    # soon as it declares or writes more, so a crafted archive cannot fill the disk
    max_bytes: int | None = None

    @property
    def md5(self) -> str:  # the published checksums of the image datasets are MD5s
        return self.checksum


@dataclass(frozen=True)
class Dataset:
    """A registered dataset. `kind` says which loader reads it ("images": `data.load`,
    "text": `data.load_text`); `reader(paths, split)` turns the resolved files into records."""

    name: str
    urls: tuple[str, ...]  # base URLs, tried in order
    files: dict[str, DataFile]
    reader: Callable[[dict[str, Path], str], Any]
    licence: str
    citation: str
    homepage: str
    sample: str | None = None  # file in dlbook/data/samples holding the bundled sample
    splits: tuple[str, ...] = ("train", "test")
    classes: tuple[str, ...] = field(default=())
    kind: str = "images"


REGISTRY: dict[str, Dataset] = {}


def register(ds: Dataset) -> Dataset:
    if ds.kind not in ("images", "text"):
        raise ValueError(f"register: unknown kind {ds.kind!r} for {ds.name}; use 'images' or 'text'")
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


def shown(path: Path) -> str:
    """A path as messages print it: relative to ``$DLBOOK_DATA``, a mirror or the home folder,
    so that no stored output carries the absolute paths of the machine that made it."""
    path = Path(path)
    for root, label in [(data_dir(), "$DLBOOK_DATA")] + [(m, "$DLBOOK_MIRROR") for m in mirror_dirs()] + \
            [(SAMPLES, "dlbook/data/samples"), (Path.home(), "~")]:
        with contextlib.suppress(ValueError, OSError):
            return f"{label}/{path.resolve().relative_to(root.resolve()).as_posix()}"
    return path.name


GIT_BLOB = "git-blob"  # the id git gives a committed file: sha1(b"blob <size>\0" + content)


def file_hash(path: Path, algo: str = "md5") -> str:
    """Hex digest of a file: a hashlib algorithm (md5, sha256, ...) or `GIT_BLOB`."""
    if algo == GIT_BLOB:
        h = hashlib.sha1(b"blob %d\0" % os.path.getsize(path))
    else:
        h = hashlib.new(algo)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_path(dest: Path) -> Iterator[Path]:
    """Yield a temp path beside `dest`; on success it is renamed onto `dest` in one step, on
    any error it is removed. Readers never see a half-written file."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _clean_stale_parts(folder: Path) -> None:
    """Remove temp files that a killed run left behind (older than an hour)."""
    if not folder.is_dir():
        return
    now = time.time()
    for p in folder.glob(".*.part"):
        with contextlib.suppress(OSError):
            if now - p.stat().st_mtime > _STALE_PART_S:
                p.unlink()


def download(url: str, dest: Path, md5: str | None = None, timeout: float = _TIMEOUT,
             algo: str = "md5") -> Path:
    """Download `url` to `dest` atomically: a temp file in the same folder, checked, then
    renamed. On any failure nothing is left at `dest` and the temp file is removed.
    Raises `_Unreachable` when the server cannot be reached and `ChecksumError` when what
    arrived is truncated or not the expected file."""
    _clean_stale_parts(dest.parent)
    with atomic_path(dest) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r, open(tmp, "wb") as out:
                expected = r.headers.get("Content-Length")
                n = 0
                for block in iter(lambda: r.read(1 << 20), b""):
                    out.write(block)
                    n += len(block)
        except urllib.error.HTTPError as e:
            raise _Unreachable(f"{url}: HTTP {e.code}") from e
        except (urllib.error.URLError, socket.timeout, ConnectionError) as e:
            raise _Unreachable(f"{url}: {getattr(e, 'reason', e)}") from e
        except Exception as e:  # http.client.IncompleteRead and friends: the body broke off
            raise ChecksumError(f"download of {url} broke off ({type(e).__name__}); nothing was saved") from e
        if expected is not None and n != int(expected):
            raise ChecksumError(f"download of {url} was truncated ({n} of {expected} bytes); nothing was saved")
        if md5 is not None:
            got = file_hash(tmp, algo)
            if got != md5:
                raise ChecksumError(f"download of {url} has {algo} {got}, expected {md5}: the server sent a "
                                    "corrupt or different file; nothing was saved")
    return dest


@dataclass
class Found:
    """Where a file was found: the path to read, and a label for provenance."""

    path: Path
    label: str  # e.g. "train-images-idx3-ubyte.first14000.gz, offline subset"


@dataclass
class Attempts:
    """What was tried for a load, for the one message that reports a fallback."""

    notes: list[str] = field(default_factory=list)

    def add(self, note: str) -> None:
        if note not in self.notes:
            self.notes.append(note)

    def __str__(self) -> str:
        return "; ".join(self.notes) if self.notes else "no copy on disk and no download"


def aside_name(path: Path) -> Path:
    """Where a corrupt file is moved: ``<file>.corrupt``, or ``<file>.corrupt.N`` when earlier
    corrupt copies are already kept there (none is overwritten)."""
    target, n = path.with_name(path.name + ".corrupt"), 1
    while target.exists():
        target, n = path.with_name(f"{path.name}.corrupt.{n}"), n + 1
    return target


def _quarantine(path: Path, algo: str, got: str, expected: str, tries: Attempts) -> None:
    """Move a corrupt file of the cache aside (never silently deleted); a mirror or the
    bundled copies are someone else's folder: there it is only reported. Either way the
    search goes on."""
    target = aside_name(path)
    where = "left in place (not in the cache), skipped"
    if data_dir().resolve() in path.resolve().parents:  # also members kept in subfolders
        try:
            os.replace(path, target)
            where = f"moved aside to {shown(target)}"
        except OSError:
            where = "left in place (read-only), skipped"
    msg = f"{shown(path)} is corrupt ({algo} {got[:12]}…, expected {expected[:12]}…): {where}"
    tries.add(msg)
    warnings.warn(msg + "; looking for another copy", DataWarning, stacklevel=4)


def _check(path: Path, algo: str, expected: str, tries: Attempts) -> bool:
    """True if `path` holds the expected bytes; a wrong file is quarantined, never returned."""
    if not path.is_file():
        return False
    got = file_hash(path, algo)
    if got == expected:
        return True
    _quarantine(path, algo, got, expected, tries)
    return False


def resolve(ds: Dataset, key: str, tries: Attempts | None = None) -> Found | None:
    """Find file `key` of `ds`: the full file in the cache or a mirror, a download, then a
    documented subset; None if there is no usable copy (`tries` says what was tried)."""
    f = ds.files[key]
    tries = tries if tries is not None else Attempts()
    cache = data_dir()
    roots = ([(cache, "cached copy")] + [(m, "offline copy") for m in mirror_dirs()]
             + [(SAMPLES, "copy bundled with dlbook")])
    for root, label in roots:
        if _check(root / ds.name / f.name, f.algo, f.checksum, tries):
            return Found(root / ds.name / f.name, f"{f.name}, {label}")
    if offline():
        tries.add(f"no download of {f.name} ($DLBOOK_OFFLINE=1)")
    else:
        if not ds.urls:
            tries.add(f"{f.name} has no download address (fetch it by hand, see {ds.homepage})")
        for base in ds.urls:
            url = base.rstrip("/") + "/" + f.name
            try:
                if f.archive is not None:
                    extract_member(base, ds.name, f)
                    return Found(cache / ds.name / f.name, f"{f.name}, from {f.archive[0]}")
                download(url, cache / ds.name / f.name, f.checksum, algo=f.algo)
                return Found(cache / ds.name / f.name, f"{f.name}, downloaded")
            except (_Unreachable, ChecksumError) as e:
                tries.add(str(e))  # the next address may serve a good copy
    for root, _ in roots:
        for sub, sha in f.subsets:
            if _check(root / ds.name / sub, "sha256", sha, tries):
                return Found(root / ds.name / sub, f"{sub}, offline subset")
    looked = ["$DLBOOK_DATA"] + (["$DLBOOK_MIRROR"] if mirror_dirs() else [])
    tries.add(f"no verified copy of {f.name} in {' or '.join(looked)}")
    return None


def extract_member(base: str, dataset: str, f: DataFile) -> Path:
    """Put file `f` of `dataset` into the cache from its archive: download the archive from
    `base` unless the cache holds it, extract the member atomically, verify it. A member
    that is missing or fails its checksum means the archive is not the release the checksums
    describe: the archive is moved aside (``.corrupt``) and `ChecksumError` raised, so the next
    address, or the next run, fetches it afresh."""
    import tarfile
    import zlib

    name, member = f.archive
    folder = data_dir() / dataset
    arch, dest = folder / name, folder / f.name
    if not arch.is_file():
        download(base.rstrip("/") + "/" + name, arch, None)  # no published checksum: members are checked
    try:
        with tarfile.open(arch) as tar, atomic_path(dest) as tmp:
            limit = f.max_bytes if f.max_bytes is not None else MAX_MEMBER_BYTES
            info = tar.getmember(member)
            if info.size > limit:
                raise ChecksumError(f"{name}: member {member} declares {info.size:,} bytes, more than the "
                                    f"{limit:,} the file can have")
            src = tar.extractfile(info)
            if src is None:
                raise KeyError(member)
            n = 0
            with open(tmp, "wb") as out:
                for block in iter(lambda: src.read(1 << 20), b""):
                    n += len(block)
                    if n > limit:  # checked as it is written: never more than `limit` on disk
                        raise ChecksumError(f"{name}: member {member} runs past {limit:,} bytes, more than "
                                            "the file can have")
                    out.write(block)
            got = file_hash(tmp, f.algo)
            if got != f.checksum:
                raise ChecksumError(f"{name}: member {member} has {f.algo} {got[:12]}…, expected "
                                    f"{f.checksum[:12]}…")
    except (ChecksumError, KeyError, tarfile.TarError, EOFError, zlib.error, OSError) as e:
        target = aside_name(arch)
        with contextlib.suppress(OSError):
            os.replace(arch, target)
        why = str(e) if isinstance(e, ChecksumError) else f"{name}: cannot read member {member} ({type(e).__name__})"
        raise ChecksumError(f"{why}: not the release these checksums describe; the archive was moved "
                            f"aside to {shown(target)} and nothing was extracted") from e
    return dest


_SOURCES: dict[str, str] = {}


def sources() -> dict[str, str]:
    """Where each dataset/split this process loaded came from (``"mnist/train"`` -> its
    label): `dlbook.claims` decides no experiment that ran on a bundled sample."""
    return dict(_SOURCES)


def log_provenance(line: str) -> None:
    """`python -m dlbook.record` sets $DLBOOK_PROVENANCE_LOG to learn which data a run used."""
    key, _, label = line.partition(": ")
    _SOURCES[key] = label
    path = os.environ.get("DLBOOK_PROVENANCE_LOG")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


def prefer_sample() -> bool:
    """The smoke profile runs from what the repository ships: bundled samples first, so a
    test run never downloads a large archive and reads the same data on every machine."""
    from ..config import resolve_profile

    return resolve_profile() == "smoke"  # an unknown $DLBOOK_PROFILE is an error, not "not smoke"


def no_sample_fallback(name: str, split: str, tries) -> None:
    """Raise when the run may not fall back to a bundled sample: the record step sets
    ``DLBOOK_REAL_DATA=1`` for the cpu and full profiles, whose published numbers must come
    from the real data, not from a few hundred bundled images."""
    if os.environ.get("DLBOOK_REAL_DATA") == "1":
        raise DataError(f"{name}/{split}: no usable copy of the real data ({tries}), and a recording under "
                        f"this profile may not use the bundled sample. Connect to the network, or point "
                        f"$DLBOOK_MIRROR at an offline copy, or put the files in $DLBOOK_DATA/{name}.")


def fewer_than_asked(name: str, split: str, have: int, limit: int | None, where: str) -> None:
    """Say once that a copy holds fewer records than asked (the run goes on with them)."""
    if limit is not None and have < limit:
        warnings.warn(f"{name}/{split}: {where} holds {have} records, fewer than the {limit} asked; "
                      f"using all {have}", DataWarning, stacklevel=3)
