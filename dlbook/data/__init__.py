"""Datasets by name: a registry with canonical URLs, checksums, licences and offline copies
(`registry`), image datasets (`images`: `load`, `to_float`) and text datasets (`text`:
`load_text`, `CharVocab`, `WordVocab`). See `book/data.md` for sources and licences."""
from .registry import (GIT_BLOB, REGISTRY, SAMPLES, ChecksumError, DataError, DataFile, Dataset, DataWarning,
                       OfflineWarning, UnknownDatasetError, atomic_path, data_dir, download, extract_member,
                       file_hash, info, mirror_dirs, offline, register, resolve, shown)
from .registry import _Unreachable  # noqa: F401  (tests)
from .images import (ArrayData, _cifar_rows_to_hwc, _idx_reader, load, read_cifar10_npz,  # noqa: F401
                     read_cifar10_tar, read_idx, to_float)
from .text import (CharVocab, TextData, WordVocab, contiguous_split, load_text, read_couplet_lines,  # noqa: F401
                   read_couplet_sample, read_speeches)
