"""Text datasets: a corpus is a list of records (tuples of strings, one field per column, e.g.
``(speaker, line)`` or ``(upper, lower)``), split into train/validation/test by contiguous
blocks, and a character vocabulary to turn strings into integer ids (`WordVocab`, words with a
character fallback, is the alternative for tasks that need words; its docstring says when).

Why characters: the corpora here are small (Tiny Shakespeare is 1.1 MB, 65 distinct
characters; a couplet is a line of Chinese characters, each a word-like unit). A character
vocabulary has no out-of-vocabulary words, needs no trained tokenizer, and keeps the
position-wise alignment that couplets rely on.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import warnings

from .registry import (GIT_BLOB, SAMPLES, Attempts, DataError, DataFile, Dataset, OfflineWarning,
                       fewer_than_asked, info, no_sample_fallback, log_provenance, prefer_sample, register, resolve, shown)

SPLITS = ("train", "validation", "test")


@dataclass
class TextData:
    """Records of one split of a text dataset, with where they came from."""

    records: list[tuple[str, ...]]
    fields: tuple[str, ...]
    source: str
    dataset: str
    split: str

    def __len__(self) -> int:
        return len(self.records)

    def column(self, field: str) -> list[str]:
        if field not in self.fields:
            raise KeyError(f"{self.dataset} records have fields {self.fields}, not {field!r}")
        i = self.fields.index(field)
        return [r[i] for r in self.records]

    def __repr__(self) -> str:
        return f"TextData({self.dataset}/{self.split}: {len(self)} records {self.fields}, source={self.source})"


def load_text(name: str, split: str = "train", limit: int | None = None,
              allow_sample: bool = True) -> TextData:
    """The `split` of text dataset `name` (first `limit` records).

    A dataset with a bundled sample (`Dataset.sample`, a folder of dlbook/data/samples) reads
    it first under the smoke profile, and falls back to it, with a warning, when no copy of
    the real files can be found; its reader then gets ``{"sample": folder}``."""
    ds = info(name)
    if ds.kind != "text":
        raise DataError(f"{name} is an {ds.kind} dataset: read it with dlbook.data.load({name!r})")
    if split not in ds.splits:
        raise DataError(f"{name} has splits {ds.splits}, not {split!r}")
    if limit is not None and (isinstance(limit, bool) or int(limit) != limit or limit < 0):
        raise DataError(f"{name}/{split}: limit must be a whole number >= 0 (or None for all), got {limit!r}")
    use_sample = allow_sample and ds.sample is not None
    smoke = prefer_sample()  # resolves the profile first: an unknown $DLBOOK_PROFILE is an error
    if use_sample and smoke:
        records, fields = ds.reader({"sample": SAMPLES / ds.sample}, split)
        source = f"{ds.sample}, bundled sample"
        fewer_than_asked(name, split, len(records), limit, "the bundled sample")
    else:
        tries = Attempts()
        keys = [k for k in ds.files if _needed(k, split, ds.splits)]
        found = {k: resolve(ds, k, tries) for k in keys}
        if any(v is None for v in found.values()):
            if not use_sample:
                raise DataError(f"{name}/{split}: no usable copy ({tries}). Connect to the network, or put the "
                                f"files in $DLBOOK_DATA/{name} (see {ds.homepage}).")
            no_sample_fallback(name, split, tries)
            warnings.warn(
                f"{name}/{split}: the real data is not available ({tries}); using the small sample bundled "
                f"with dlbook instead ({ds.sample}). Results will differ from the full dataset. To use the "
                f"real data, connect to the network or put the files in $DLBOOK_DATA/{name}.",
                OfflineWarning, stacklevel=2)
            records, fields = ds.reader({"sample": SAMPLES / ds.sample}, split)
            source = f"{ds.sample}, bundled sample"
            fewer_than_asked(name, split, len(records), limit, "the bundled sample")
        else:
            records, fields = ds.reader({k: v.path for k, v in found.items()}, split)
            source = "; ".join(sorted({v.label for v in found.values()}))
            if any("subset" in v.label for v in found.values()):
                fewer_than_asked(name, split, len(records), limit, "the offline subset")
    log_provenance(f"{name}/{split}: {source}")
    if limit is not None:
        records = records[:int(limit)]
    return TextData(list(records), tuple(fields), source, name, split)


def _needed(key: str, split: str, splits: Sequence[str] = SPLITS) -> bool:
    """A file key ``<split>_<what>`` belongs to that split; any other key (a single corpus
    file, a vocabulary) is needed by every split."""
    head = key.split("_", 1)[0]
    return head == split or head not in splits


def contiguous_split(n: int, split: str, fractions: tuple[float, float, float] = (0.9, 0.05, 0.05)) -> slice:
    """The block of records ``[a, b)`` that `split` owns when `n` records are cut, in order,
    into train / validation / test blocks of the given fractions (no shuffling: neighbouring
    lines of a play never straddle two splits except at the two cuts)."""
    if split not in SPLITS:
        raise DataError(f"split must be one of {SPLITS}, got {split!r}")
    if abs(sum(fractions) - 1) > 1e-9 or min(fractions) < 0:
        raise ValueError(f"fractions must be >= 0 and sum to 1, got {fractions}")
    a = round(n * fractions[0])
    b = round(n * (fractions[0] + fractions[1]))
    return {"train": slice(0, a), "validation": slice(a, b), "test": slice(b, n)}[split]


# ---------------------------------------------------------------- vocabulary
class _Vocab:
    """Tokens <-> integer ids, special tokens first (ids 0, 1, ...). A subclass says how a text
    splits into tokens (`tokens`) and how `decode` joins them (`JOIN`)."""

    JOIN = ""

    def _index(self, toks: list[str], specials: Sequence[str]) -> None:
        if len(set(toks)) != len(toks):
            dup = sorted({t for t in toks if toks.count(t) > 1})
            raise ValueError(f"{type(self).__name__}: duplicate tokens {dup[:10]}")
        self.specials = tuple(specials)
        self.itos: list[str] = toks
        self.stoi: dict[str, int] = {t: i for i, t in enumerate(toks)}

    def tokens(self, text: str) -> list[str]:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi

    def id(self, token: str) -> int:
        return self.stoi[token]

    def unknown(self, text: str) -> list[str]:
        """The tokens of `text` that are not in the vocabulary, in order of appearance."""
        return list(dict.fromkeys(t for t in self.tokens(text) if t not in self.stoi))

    def encode(self, text: str, strict: bool = False) -> list[int]:
        """Ids of the tokens of `text`; an unknown token becomes ``<unk>``, or raises with
        ``strict=True`` (or without an ``<unk>`` token) and names what is unknown."""
        toks = self.tokens(text)
        unk = self.stoi.get("<unk>")
        if strict or unk is None:
            bad = list(dict.fromkeys(t for t in toks if t not in self.stoi))
            if bad:
                why = "" if strict else " (and no <unk> token)"
                raise KeyError(f"characters not in the vocabulary{why}: {''.join(bad)!r}")
        return [self.stoi.get(t, unk) for t in toks]

    def decode(self, ids: Iterable[int], skip_specials: bool = True) -> str:
        """The text of `ids`; an id outside [0, len) is an error (never read from the end)."""
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < len(self.itos)]
        if bad:
            raise IndexError(f"ids {bad[:5]} are not in this vocabulary of {len(self.itos)} tokens (0..{len(self.itos) - 1})")
        toks = (self.itos[i] for i in ids)
        return self.JOIN.join(t for t in toks if not (skip_specials and t in self.specials))


class CharVocab(_Vocab):
    """Characters <-> integer ids, with special tokens first (ids 0, 1, ...).

    ``CharVocab.build(texts)`` orders characters by frequency (ties by code point), so the
    ids are the same on every machine; ``CharVocab(tokens)`` takes a fixed list (e.g. a
    published vocabulary file). ``encode`` maps an unknown character to ``<unk>``, or raises
    with ``strict=True`` and names the characters it does not know."""

    def __init__(self, tokens: Sequence[str], specials: Sequence[str] = ("<pad>", "<unk>")):
        specials = tuple(specials)
        self._index(list(specials) + [t for t in tokens if t not in specials], specials)

    @classmethod
    def build(cls, texts: Iterable[str], specials: Sequence[str] = ("<pad>", "<unk>"),
              min_count: int = 1) -> "CharVocab":
        if min_count < 1:
            raise ValueError(f"CharVocab.build: min_count must be >= 1, got {min_count}")
        counts = Counter()
        for t in texts:
            counts.update(t)
        chars = sorted((c for c, k in counts.items() if k >= min_count), key=lambda c: (-counts[c], c))
        return cls(chars, specials)

    def tokens(self, text: str) -> list[str]:
        return list(text)

    def __repr__(self) -> str:
        return f"CharVocab({len(self)} tokens, specials={self.specials})"


class WordVocab(_Vocab):
    """Words with a character fallback: the `size` most frequent words of a corpus (lower-cased,
    letters and apostrophes) plus every character seen, so that a word outside the list is
    spelled out in characters and nothing is unknown. Spaces only separate tokens and are
    dropped; every other character (punctuation, the line break) is a token of its own.

    Why: a character model needs far more training than a CPU budget allows before its
    features carry topics (who speaks, which play); whole words carry them at once, and the
    character fallback keeps the vocabulary small and closed. ``decode`` joins tokens with
    spaces (lossy: case and spacing are not kept)."""

    WORD = re.compile(r"[a-z']+|\n|\S")
    JOIN = " "

    def __init__(self, words: Sequence[str], chars: Sequence[str], specials: Sequence[str] = ("<pad>", "<unk>")):
        specials = tuple(specials)
        self._index(list(specials) + list(words) + [c for c in chars if c not in set(words)], specials)
        self.n_words = len(words)

    @classmethod
    def build(cls, texts: Iterable[str], size: int, specials: Sequence[str] = ("<pad>", "<unk>")) -> "WordVocab":
        if size < 0 or int(size) != size:
            raise ValueError(f"WordVocab.build: size must be a whole number >= 0, got {size!r}")
        words, chars = Counter(), Counter()
        for t in texts:
            low = t.lower()
            chars.update(c for c in low if not c.isspace() or c == "\n")
            words.update(w for w in cls.WORD.findall(low) if len(w) > 1)
        top = sorted(words, key=lambda w: (-words[w], w))[:int(size)]
        return cls(top, sorted(chars, key=lambda c: (-chars[c], c)), specials)

    def tokens(self, text: str) -> list[str]:
        """The tokens of `text`: known words whole, other words as their characters."""
        out = []
        for w in self.WORD.findall(text.lower()):
            out.extend([w] if w in self.stoi else list(w))
        return out

    def __repr__(self) -> str:
        return f"WordVocab({len(self)} tokens: {self.n_words} words, specials={self.specials})"


# ---------------------------------------------------------------- Tiny Shakespeare
def read_speeches(text: str) -> list[tuple[str, str]]:
    """Tiny Shakespeare as (speaker, speech) records: blocks separated by a blank line whose
    first line is ``Name:``; the speech keeps its line breaks."""
    out = []
    for block in text.split("\n\n"):
        lines = block.strip("\n").split("\n")
        if len(lines) < 2 or not lines[0].endswith(":"):
            continue
        out.append((lines[0][:-1].strip(), "\n".join(lines[1:])))
    return out


def _shakespeare_reader(paths: dict[str, Path], split: str) -> tuple[list[tuple[str, str]], tuple[str, str]]:
    raw = paths["corpus"].read_bytes()
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError as e:
        raise DataError(f"tinyshakespeare: {paths['corpus'].name} is not plain ASCII ({e})") from e
    speeches = read_speeches(text)
    return speeches[contiguous_split(len(speeches), split)], ("speaker", "text")


register(Dataset(
    name="tinyshakespeare",
    urls=("https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare",),
    files={"corpus": DataFile("input.txt", "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
                              algo="sha256")},
    reader=_shakespeare_reader,
    licence="public domain (Shakespeare's text); distributed with char-rnn under MIT",
    citation="A. Karpathy. char-rnn: multi-layer recurrent neural networks for character-level "
             "language models, 2015. https://github.com/karpathy/char-rnn",
    homepage="https://github.com/karpathy/char-rnn/tree/master/data/tinyshakespeare",
    splits=SPLITS,
    kind="text",
))

# The complete corpus ships as dlbook/data/samples/tinyshakespeare/input.txt (byte-identical,
# verified like any other copy), so it never needs a download.


# ---------------------------------------------------------------- Chinese couplets (对联)
# Bin Wang's couplet corpus (wb14123/couplet-dataset). The canonical source is the release
# archive couplet.tar.gz, for which no checksum is published. So the archive is not what is
# verified: each file is registered as a member of it, with the checksum of the unpacked
# file (SHA-256 for the test split and the vocabulary; for the two training files, the git
# blob ids under which several public repositories committed them unchanged). The registry
# downloads the archive once, extracts each member and checks it (`DataFile.archive`); a
# copy in the cache or a mirror is checked the same way, and a wrong one is moved aside
# (cache) or reported (mirror) and skipped. Offline, the documented first 30,000 training
# pairs (`train_first30000/`, SHA-256) stand in for the training split.
#
# Records are (upper, lower) pairs of strings: the file format separates characters with
# single spaces and ends each line with one; the reader removes them. Split "vocab" reads the
# corpus's own vocabulary file (records (token,), `<s>` and `</s>` first).
#
# The bundled sample (smoke profile, or no copy at all) is NOT taken from this corpus, which
# is AGPL-3.0: it is the first 1,000 pairs of the test split of the MIT-licensed cleaned
# variant (v-zich/couplet-clean-dataset), unchanged; see dlbook/data/samples/README.md.
COUPLET_SAMPLE = {"clean-test-first1000.in.txt": "1abe1a2fc55244c48418f5beb43a37dac95af4233c2933478d60f7d6657ec4dd",
                  "clean-test-first1000.out.txt": "86c41a909a881df686ffe1a98e02a7921d5aebc3d1fdfce0e6bbb9b3e29d5236"}
COUPLET_SAMPLE_TRAIN = 800  # sample pairs 1-800 act as its training part, 801-1,000 as its test part


def read_couplet_lines(path: Path) -> list[str]:
    """One half-couplet per line, characters separated by single spaces (each line ends with
    one), as strings without the spaces. A token longer than one character, a line that
    is not space-separated, or bytes that are not UTF-8 raise `DataError` naming the line."""
    name = shown(path)
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{name} is not UTF-8 text ({e}); delete it and fetch it again") from e
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline (the cleaned variant's last line has none)
    out = []
    for i, line in enumerate(lines, 1):
        tokens = line.strip(" ").split(" ")
        if not line.strip(" ") or any(len(t) != 1 for t in tokens):
            raise DataError(f"{name}, line {i}: expected single characters separated by spaces, "
                            f"got {line[:40]!r}")
        out.append("".join(tokens))
    return out


def _couplet_pairs(upper_path: Path, lower_path: Path) -> list[tuple[str, str]]:
    upper, lower = read_couplet_lines(upper_path), read_couplet_lines(lower_path)
    if len(upper) != len(lower):
        raise DataError(f"{shown(upper_path)} has {len(upper)} lines but {shown(lower_path)} has {len(lower)}: "
                        "the two halves of the corpus do not belong together")
    for i, (a, b) in enumerate(zip(upper, lower), 1):
        if len(a) != len(b):
            raise DataError(f"couplet line {i}: upper line {a!r} and lower line {b!r} differ in length")
    return list(zip(upper, lower))


def read_couplet_sample(split: str = "train", folder: Path | None = None) -> list[tuple[str, str]]:
    """The bundled couplet sample's `split` ("train": its pairs 1-800, "test": 801-1,000),
    whatever the profile: for checks that must read the same text on every machine."""
    return _couplet_sample(folder or SAMPLES / "couplet", split)[0]


def _couplet_sample(folder: Path, split: str) -> tuple[list[tuple[str, str]], tuple[str, str]]:
    from .registry import file_hash

    if split == "vocab":
        raise DataError("couplet: the bundled sample has no vocabulary file (the corpus's `vocabs` is "
                        "AGPL-3.0 and is not shipped); build one from the records with CharVocab.build")
    for fname, sha in COUPLET_SAMPLE.items():
        if file_hash(folder / fname, "sha256") != sha:
            raise DataError(f"dlbook/data/samples/couplet/{fname} is damaged; reinstall dlbook")
    pairs = _couplet_pairs(folder / "clean-test-first1000.in.txt", folder / "clean-test-first1000.out.txt")
    part = slice(0, COUPLET_SAMPLE_TRAIN) if split == "train" else slice(COUPLET_SAMPLE_TRAIN, None)
    return pairs[part], ("upper", "lower")


def _couplet_reader(paths: dict[str, Path], split: str):
    if "sample" in paths:
        return _couplet_sample(paths["sample"], split)
    if split == "vocab":
        raw = paths["vocab_tokens"].read_bytes().decode("utf-8").split("\n")
        return [(t,) for t in (raw[:-1] if raw and raw[-1] == "" else raw)], ("token",)
    return _couplet_pairs(paths[f"{split}_upper"], paths[f"{split}_lower"]), ("upper", "lower")


def _couplet_file(name: str, checksum: str, algo: str, subset: str | None = None,
                  max_bytes: int | None = None) -> DataFile:
    return DataFile(name, checksum, ((f"train_first30000/{subset}", COUPLET_FIRST30000[subset]),) if subset else (),
                    algo=algo, archive=("couplet.tar.gz", f"couplet/{name}"), max_bytes=max_bytes)


COUPLET_FIRST30000 = {"in.txt": "d7325dc3548009885c07e99239e063f7386dcf8551604f2b49f0ae7855ca4959",
                      "out.txt": "b5d33656492073d667a5020cfd19c06c005c88e7bca14c106c489a6ef24b94db"}

register(Dataset(
    name="couplet",
    urls=("https://github.com/wb14123/couplet-dataset/releases/download/1.0",),
    files={
        # 770,491 lines of about 38 bytes (the first 30,000 hold 1,151,324): about 30 MB, bounded at 64 MiB
        "train_upper": _couplet_file("train/in.txt", "70950348b6723a78cfad7804efdad1cb9ac0309d", GIT_BLOB, "in.txt",
                                     1 << 26),
        "train_lower": _couplet_file("train/out.txt", "e5e3fd5fb8e61a45175d7c7b8851036728c3e3dc", GIT_BLOB, "out.txt",
                                     1 << 26),
        "test_upper": _couplet_file("test/in.txt", "93eaba3ec04c17b62fdc9b81207ad65fd1666fc3ff39527d7e2fe9e63cd9699c",
                                    "sha256", max_bytes=154_172),
        "test_lower": _couplet_file("test/out.txt", "d8223fdbbd7c19357b680ee0d24557fb66264c797afe287cbf1b4f53e1467e04",
                                    "sha256", max_bytes=154_172),
        "vocab_tokens": _couplet_file("vocabs", "0b12f938796c5d2621582eca527dfaa24f01e7b8e27a8aa8e1e5194e4ad27a19",
                                      "sha256", max_bytes=36_516),
    },
    reader=_couplet_reader,
    licence="AGPL-3.0 (wb14123/couplet-dataset; texts collected from the blog 冯重朴_梨味斋散叶). The bundled "
            "sample comes from the MIT-licensed cleaned variant v-zich/couplet-clean-dataset",
    citation="Bin Wang. couplet-dataset: a dataset of Chinese couplets, release 1.0, 2018. "
             "https://github.com/wb14123/couplet-dataset",
    homepage="https://github.com/wb14123/couplet-dataset",
    sample="couplet",  # folder of dlbook/data/samples
    splits=("train", "test", "vocab"),
    kind="text",
))
