"""Chapter 04's data: reading the couplet corpus, the post's vocabulary, length buckets."""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from ..config import require
from ..data import CharVocab, load_text
from .settings import UNK, Config


# ----------------------------------------------------------------------------- text helpers
def is_punct(ch: str) -> bool:
    """Punctuation (Unicode category P*): ，、？：！；。 and the like."""
    return len(ch) == 1 and unicodedata.category(ch).startswith("P")


# Half-width punctuation a reader may type, mapped to the full-width forms of the corpus.
_FULL_WIDTH = str.maketrans({",": "，", "?": "？", "!": "！", ";": "；", ":": "：", ".": "。"})


def normalise(line: str) -> str:
    """An upper line as typed: surrounding and inner spaces removed, ASCII punctuation made
    full-width (the corpus writes ，？！；：)."""
    return "".join(line.split()).translate(_FULL_WIDTH)


def build_vocab(texts: Iterable[str], min_count: int = 2) -> CharVocab:
    """The post's vocabulary: characters seen at least `min_count` times, `<unk>` as id 0
    (so V = |kept characters| + 1); ids by frequency, ties by code point."""
    require("build_vocab", positive={"min_count": min_count}, whole=True)
    return CharVocab.build(texts, specials=(UNK,), min_count=min_count)


# ----------------------------------------------------------------------------- data
@dataclass
class CoupletData:
    """Encoded pairs of one run, bucketed by length (no padding anywhere).

    `train` / `test` / `val`: length -> (X, Y) int64 arrays of shape (pairs, length)."""

    vocab: CharVocab
    train_pairs: list[tuple[str, str]]
    test_pairs: list[tuple[str, str]]
    val_pairs: list[tuple[str, str]]
    train: dict[int, tuple[np.ndarray, np.ndarray]]
    test: dict[int, tuple[np.ndarray, np.ndarray]]
    val: dict[int, tuple[np.ndarray, np.ndarray]]
    source: str
    n_read: dict[str, int]

    @property
    def punct_ids(self) -> list[int]:
        return [i for i, t in enumerate(self.vocab.itos) if is_punct(t)]


def encode_buckets(pairs: Sequence[tuple[str, str]], vocab: CharVocab) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Pairs -> {length: (X, Y)}; unknown characters map to id 0."""
    by_len: dict[int, list[tuple[list[int], list[int]]]] = {}
    for up, lo in pairs:
        if len(up) != len(lo):
            raise ValueError(f"encode_buckets: {up!r} and {lo!r} differ in length; a tagger needs equal lengths")
        by_len.setdefault(len(up), []).append((vocab.encode(up), vocab.encode(lo)))
    return {n: (np.array([a for a, _ in v], dtype=np.int64), np.array([b for _, b in v], dtype=np.int64))
            for n, v in sorted(by_len.items())}


def prepare(cfg: Config) -> CoupletData:
    """Load the couplet corpus through the registry, keep pairs of at most `maxlen`
    characters, and build the post's vocabulary over the four files (train and test, upper
    and lower lines, counted after the length filter; see the chapter for that leak)."""
    tr, te = load_text("couplet", "train", limit=cfg.n_train), load_text("couplet", "test")
    keep = lambda ps: [p for p in ps if len(p[0]) <= cfg.maxlen]
    train, test = keep(tr.records), keep(te.records)
    val: list[tuple[str, str]] = []
    if cfg.val_pairs:
        if cfg.val_pairs >= len(train):
            raise ValueError(f"val_pairs={cfg.val_pairs} leaves no training pairs (the split holds {len(train)})")
        train, val = train[:-cfg.val_pairs], train[-cfg.val_pairs:]
    vocab = build_vocab((s for ps in (train, val, test) for p in ps for s in p), cfg.min_count)
    source = tr.source if tr.source == te.source else f"{tr.source}; {te.source}"
    return CoupletData(vocab, train, test, val, encode_buckets(train, vocab), encode_buckets(test, vocab),
                       encode_buckets(val, vocab), source,
                       {"train": len(tr), "test": len(te)})


class BucketBatches:
    """The post's batches: a length drawn with probability proportional to its bucket's size,
    then `batch_size` pairs of that length drawn with replacement, so every batch has a
    single length and needs no padding. `len()` batches make an epoch; the draws depend only
    on (seed, epoch), so a resumed run sees the batches an uninterrupted one would."""

    def __init__(self, buckets: dict[int, tuple[np.ndarray, np.ndarray]], batch_size: int,
                 steps_per_epoch: int = 1000, seed: int = 0):
        require("BucketBatches", positive={"batch_size": batch_size, "steps_per_epoch": steps_per_epoch},
                whole=True)
        if not buckets or not any(len(x) for x, _ in buckets.values()):
            raise ValueError("BucketBatches: no pairs to draw from")
        self.lengths = np.array(sorted(n for n, (x, _) in buckets.items() if len(x)))
        self.sizes = np.array([len(buckets[n][0]) for n in self.lengths])
        self.probs = self.sizes / self.sizes.sum()
        self.buckets = {n: (torch.from_numpy(x), torch.from_numpy(y)) for n, (x, y) in buckets.items()}
        self.batch_size, self.steps_per_epoch, self.seed = int(batch_size), int(steps_per_epoch), int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.steps_per_epoch

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        for _ in range(self.steps_per_epoch):
            n = int(rng.choice(self.lengths, p=self.probs))
            x, y = self.buckets[n]
            idx = torch.from_numpy(rng.integers(0, len(x), self.batch_size))
            yield x[idx], y[idx]


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    """TV(p, q) = 1/2 sum |p - q| of two histograms (normalised here)."""
    p, q = np.asarray(p, float), np.asarray(q, float)
    return 0.5 * float(np.abs(p / p.sum() - q / q.sum()).sum())


def format_report() -> dict:
    """Claim C7 on the files a load would read (the offline copies, a download, or under the
    smoke profile the bundled sample): lines per file, lines ending with a space, pairs of
    equal length, and whether every character occurs in the corpus's `vocabs` (when that
    file is available)."""
    from ..data import SAMPLES, info, resolve
    from ..data.registry import Attempts, prefer_sample, shown

    ds = info("couplet")
    if prefer_sample():
        stem = SAMPLES / "couplet" / "clean-test-first1000"
        files = {"sample upper": Path(f"{stem}.in.txt"), "sample lower": Path(f"{stem}.out.txt")}
        vocab_path = None
    else:
        tries = Attempts()
        found = {k: resolve(ds, k, tries) for k in ds.files}
        files = {k.replace("_", " "): v.path for k, v in found.items() if v is not None and k != "vocab_tokens"}
        vocab_path = found["vocab_tokens"].path if found.get("vocab_tokens") else None
    out: dict = {"files": {}}
    texts = {}
    for k, path in files.items():
        raw = path.read_text(encoding="utf-8").split("\n")
        lines = raw[:-1] if raw[-1] == "" else raw
        texts[k] = lines
        out["files"][k] = {"file": shown(path), "lines": len(lines),
                           "trailing_space": sum(l.endswith(" ") for l in lines)}
    ups = sorted(k for k in texts if k.endswith("upper"))
    out["pairs"] = sum(len(texts[u]) for u in ups)
    out["equal_length"] = sum(len(a.split()) == len(b.split())
                              for u in ups for a, b in zip(texts[u], texts[u.replace("upper", "lower")]))
    if vocab_path is not None:
        vocab = set(vocab_path.read_text(encoding="utf-8").split("\n"))
        chars = {c for lines in texts.values() for l in lines for c in l.split()}
        out["vocab_tokens"] = len(vocab - {""})
        out["outside_vocab"] = len(chars - vocab)
    return out

