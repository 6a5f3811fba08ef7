"""Chapter 04: a couplet bot as sequence labelling with a gated CNN.

An upper line x = (x_1..x_n) and its lower line y = (y_1..y_n) have the same length and
correspond position by position, so the lower line is predicted as one label per position:
p(y|x) = prod_t p(y_t|x) (eq-04-tagging). The model is the post's: a character embedding,
dropout, six gated residual 1-D convolutions (eq-04-gate) and a per-position softmax over the
vocabulary; decoding is the per-position argmax (eq-04-map) under the post's prior: never the
unknown id 0, never the upper line's own character at its position (eq-04-prior).

Every loss and rule below is a transcription of one numbered equation of the chapter; the label
is in the comment beside it. Tensors are (batch, length) for ids and (batch, length, V) for
logits; the convolutions see (batch, channels, length).
"""
from __future__ import annotations

import html
import itertools
import math
import time
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import Settings, by_profile, device as default_device, require
from .data import CharVocab, load_text

# The post's monitor lines (printed after every epoch) and its showcase (five inputs).
MONITOR = ("晚风摇树树还挺", "今天天气不错", "鱼跃此时海", "只有香如故")
SHOWCASE = MONITOR + ("科学空间",)
# The post's answers, for the showcase table.
POST_ANSWERS = {"晚风摇树树还挺": "夜雨敲花花更香", "今天天气不错": "昨日人情无明", "鱼跃此时海": "鸟鸣何日人",
                "只有香如故": "不无月若新", "科学空间": "文明大中"}
UNK = "<unk>"  # id 0, as in the post: characters seen fewer than min_count times


# ----------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class Config(Settings):
    """One profile of chapter 04. Steps are optimiser updates on batches of `batch_size` pairs."""

    n_train: int | None = None        # first n training pairs (None: all the split holds)
    maxlen: int = 16                  # the post drops pairs longer than this (tokens)
    min_count: int = 2                # characters seen fewer times map to <unk> (id 0)
    dim: int = 128                    # embedding = conv width d
    blocks: int = 6
    kernel: int = 3
    dropout: float = 0.25             # after the embedding only
    batch_size: int = 64
    lr: float = 1e-3                  # Adam, Keras defaults otherwise
    steps: int = 1000                 # per seed
    eval_every: int = 250             # test cross-entropy and accuracy every so many steps
    seeds: int = 3
    workers: int = 1                  # processes for the seeds (one thread each when > 1)
    threads: int = 1                  # torch threads of a single-process run
    val_pairs: int = 0                # held out from the end of the training split to keep the best weights
    bilstm_hidden: int = 64           # C11: 2-layer BiLSTM, 64 per direction (output width 128)
    bilstm_layers: int = 2
    bilstm_equal_time: bool = False   # C11: train the BiLSTM for the CNN's wall time (full)
    speed_steps: int = 20             # steps timed per model for the time-per-step ratio
    n_gallery: int = 40               # held-out lines in the static dropout gallery

    SIZES = ("maxlen", "min_count", "dim", "blocks", "kernel", "batch_size", "steps", "eval_every", "seeds",
             "workers", "threads", "bilstm_hidden", "bilstm_layers", "speed_steps", "n_gallery")
    POSITIVE = ("lr",)
    NONNEG = ("val_pairs",)
    UNIT = ("dropout",)

    def __post_init__(self) -> None:
        super().__post_init__()
        require("Config", positive={"n_train": self.n_train}, whole=True)
        if self.kernel % 2 != 1:
            raise ValueError(f"Config: kernel must be odd (a 'same' convolution centred on t), got {self.kernel}")


CONFIGS = {
    # seconds: the bundled sample (800 + 200 pairs of the cleaned test split), a few steps
    "smoke": Config(steps=40, eval_every=20, seeds=1, batch_size=32, speed_steps=3, n_gallery=10),
    # minutes on two cores: the first 30,000 training pairs offline, three seeds of 1,000 steps
    "cpu": Config(n_train=30000, steps=1000, eval_every=250, seeds=3, workers=3),
    # one GPU: the full training split, the post's schedule (100 epochs x 1,000 steps), the best
    # weights by loss on 4,000 held-out training pairs, and the BiLSTM for the same wall time
    "full": Config(steps=100_000, eval_every=1000, seeds=1, val_pairs=4000, bilstm_equal_time=True,
                   speed_steps=50, n_gallery=60),
}


def config(profile: str | None = None) -> Config:
    """The settings of `profile` (None: the resolved profile)."""
    return by_profile(CONFIGS, profile)


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
    from .data import SAMPLES, info, resolve
    from .data.registry import Attempts, prefer_sample, shown

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


# ----------------------------------------------------------------------------- the model
def gated_residual(x: torch.Tensor, g: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """The post's gate, as written in its Keras Lambda: x*sigmoid(g) + h*sigmoid(-g)."""
    return x * torch.sigmoid(g) + h * torch.sigmoid(-g)  # (eq-04-gate)


class GatedBlock(nn.Module):
    """One gated residual block: a 'same' convolution with 2d output channels, split into a
    gate g (first d) and a candidate h (last d), mixed with the input by `gated_residual`."""

    def __init__(self, dim: int, kernel: int = 3, dilation: int = 1):
        super().__init__()
        require("GatedBlock", positive={"dim": dim, "kernel": kernel, "dilation": dilation}, whole=True)
        if kernel % 2 != 1:
            raise ValueError(f"GatedBlock: kernel must be odd, got {kernel}")
        self.conv = nn.Conv1d(dim, 2 * dim, kernel, padding=dilation * (kernel - 1) // 2, dilation=dilation)

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(gate logits g, candidate h) for input x of shape (batch, dim, length)."""
        g, h = self.conv(x).chunk(2, dim=1)
        return g, h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g, h = self.split(x)
        return gated_residual(x, g, h)


class CNNTagger(nn.Module):
    """Embedding -> dropout -> gated residual blocks -> per-position linear map to V logits."""

    def __init__(self, vocab_size: int, dim: int = 128, blocks: int = 6, kernel: int = 3,
                 dilations: Sequence[int] | None = None, dropout: float = 0.25, init: str = "keras"):
        super().__init__()
        require("CNNTagger", positive={"vocab_size": vocab_size, "dim": dim, "blocks": blocks}, whole=True)
        require("CNNTagger", unit={"dropout": dropout})
        dil = tuple(dilations) if dilations else (1,) * blocks
        if len(dil) != blocks:
            raise ValueError(f"CNNTagger: {blocks} blocks need {blocks} dilations, got {dil}")
        self.vocab_size, self.kernel, self.dilations = int(vocab_size), int(kernel), dil
        self.embed = nn.Embedding(vocab_size, dim)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(GatedBlock(dim, kernel, d) for d in dil)
        self.out = nn.Linear(dim, vocab_size)
        if init == "keras":
            keras_init(self)
        elif init != "torch":
            raise ValueError(f"CNNTagger: init must be 'keras' or 'torch', got {init!r}")

    @property
    def receptive_field(self) -> int:
        """R = sum over blocks of dilation * (kernel - 1) / 2: output t sees inputs t-R..t+R."""
        return sum(d * (self.kernel - 1) // 2 for d in self.dilations)  # (eq-04-rf)

    def encode(self, ids: torch.Tensor) -> torch.Tensor:
        """Hidden states (batch, length, dim) before the output layer."""
        _check_ids(ids, self.vocab_size)
        h = self.drop(self.embed(ids)).transpose(1, 2)
        for b in self.blocks:
            h = b(h)
        return h.transpose(1, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(self.encode(ids))

    @torch.no_grad()
    def gate_means(self, ids: torch.Tensor) -> list[float]:
        """Mean gate sigmoid(g) of each block over all positions and channels: the share of its
        input a block keeps (1) rather than replaces by its candidate h (0)."""
        h = self.drop(self.embed(ids)).transpose(1, 2)
        out = []
        for b in self.blocks:
            g, c = b.split(h)
            out.append(float(torch.sigmoid(g).mean()))
            h = gated_residual(h, g, c)
        return out


class BiLSTMTagger(nn.Module):
    """C11: the blocks replaced by a bidirectional LSTM (hidden per direction * 2 = dim)."""

    def __init__(self, vocab_size: int, dim: int = 128, hidden: int = 64, layers: int = 2, dropout: float = 0.25,
                 init: str = "keras"):
        super().__init__()
        require("BiLSTMTagger", positive={"vocab_size": vocab_size, "dim": dim, "hidden": hidden,
                                          "layers": layers}, whole=True)
        self.vocab_size = int(vocab_size)
        self.embed = nn.Embedding(vocab_size, dim)
        self.drop = nn.Dropout(dropout)
        self.rnn = nn.LSTM(dim, hidden, num_layers=layers, bidirectional=True, batch_first=True)
        self.out = nn.Linear(2 * hidden, vocab_size)
        if init == "keras":
            keras_init(self)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        _check_ids(ids, self.vocab_size)
        return self.out(self.rnn(self.drop(self.embed(ids)))[0])


def _check_ids(ids: torch.Tensor, vocab_size: int) -> None:
    if not isinstance(ids, torch.Tensor) or ids.dtype not in (torch.int64, torch.int32) or ids.ndim != 2:
        raise ValueError(f"expected token ids as a (batch, length) integer tensor, got "
                         f"{getattr(ids, 'dtype', type(ids).__name__)} of shape {tuple(getattr(ids, 'shape', ()))}")
    if ids.shape[1] == 0:
        raise ValueError("expected at least one character per line, got length 0")
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
        raise ValueError(f"token ids must lie in [0, {vocab_size}), got [{int(ids.min())}, {int(ids.max())}]")


@torch.no_grad()
def keras_init(model: nn.Module) -> nn.Module:
    """Keras defaults, as in the author's code: Glorot-uniform kernels and zero biases for
    convolutions and dense layers, U(-0.05, 0.05) embeddings; for LSTMs Glorot-uniform input
    kernels, orthogonal recurrent kernels and forget-gate biases of 1."""
    for m in model.modules():
        if isinstance(m, nn.Embedding):
            nn.init.uniform_(m.weight, -0.05, 0.05)
        elif isinstance(m, (nn.Conv1d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LSTM):
            for name, p in m.named_parameters():
                if name.startswith("weight_ih"):
                    for chunk in p.chunk(4, 0):
                        nn.init.xavier_uniform_(chunk)
                elif name.startswith("weight_hh"):
                    for chunk in p.chunk(4, 0):
                        nn.init.orthogonal_(chunk)
                elif name.startswith("bias_ih"):
                    p.zero_()
                    p[m.hidden_size:2 * m.hidden_size] = 1.0  # gates i, f, g, o: forget bias 1
                else:
                    p.zero_()
    return model


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def param_formula(vocab_size: int, dim: int = 128, blocks: int = 6, kernel: int = 3) -> int:
    """Embedding d V + blocks (k d 2d + 2d) + output (d + 1) V; 257 V + 591,360 for the post."""
    return dim * vocab_size + blocks * (kernel * dim * 2 * dim + 2 * dim) + (dim + 1) * vocab_size  # (eq-04-params)


# ----------------------------------------------------------------------------- loss and decoding
def tagging_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over positions of -log p(y_t|x): the negative log-likelihood of the factorised
    model divided by the number of characters (the post's sparse categorical cross-entropy)."""
    if logits.ndim != 3 or targets.shape != logits.shape[:2]:
        raise ValueError(f"tagging_nll: logits (batch, length, V) and targets (batch, length) must agree, got "
                         f"{tuple(logits.shape)} and {tuple(targets.shape)}")
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))  # (eq-04-nll)


MASKS = ("none", "post", "exempt")


def prior_mask(x: torch.Tensor, vocab_size: int, mode: str = "post",
               punct_ids: Sequence[int] = ()) -> torch.Tensor:
    """Banned outputs, (batch, length, V) booleans: the unknown id 0 everywhere and, with
    mode "post", the upper line's own character x_t at position t; "exempt" lets
    punctuation through (a comma answers a comma), "none" bans only id 0."""
    if mode not in MASKS:
        raise ValueError(f"prior_mask: mode must be one of {MASKS}, got {mode!r}")
    ban = torch.zeros(*x.shape, vocab_size, dtype=torch.bool, device=x.device)
    ban[..., 0] = True                                     # (eq-04-prior): never <unk>
    if mode != "none":
        own = torch.ones_like(x, dtype=torch.bool)
        if mode == "exempt" and len(punct_ids):
            own = ~torch.isin(x, torch.as_tensor(list(punct_ids), device=x.device))
        ban.scatter_(-1, x.unsqueeze(-1), own.unsqueeze(-1) | ban.gather(-1, x.unsqueeze(-1)))  # (eq-04-prior): y_t != x_t
    return ban


def decode(logits: torch.Tensor, x: torch.Tensor, mode: str = "post", punct_ids: Sequence[int] = ()) -> torch.Tensor:
    """The per-position argmax under the prior: the MAP lower line of the factorised model
    restricted to the allowed characters."""
    ban = prior_mask(x, logits.shape[-1], mode, punct_ids)
    return logits.masked_fill(ban, float("-inf")).argmax(-1)  # (eq-04-map)


def enumerate_map(logp: torch.Tensor, transitions: torch.Tensor | None = None) -> tuple[tuple[int, ...], float]:
    """Brute force over all V^n sequences: the one maximising sum_t logp[t, y_t]
    (+ sum_t A[y_{t-1}, y_t] with a CRF transition matrix A). For tiny n and V only."""
    logp = logp.detach()
    n, V = logp.shape
    if V ** n > 200_000:
        raise ValueError(f"enumerate_map: {V}^{n} sequences is too many to enumerate")
    best, arg = -math.inf, None
    for ys in itertools.product(range(V), repeat=n):
        s = sum(float(logp[t, y]) for t, y in enumerate(ys))
        if transitions is not None:
            s += sum(float(transitions[a, b]) for a, b in zip(ys, ys[1:]))  # (eq-04-crf)
        if s > best:
            best, arg = s, ys
    return arg, best


# ----------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(model: nn.Module, buckets: dict[int, tuple[np.ndarray, np.ndarray]], punct_ids: Sequence[int] = (),
             batch: int = 512, device: torch.device | None = None) -> dict[str, float]:
    """Cross-entropy (nats per character) and per-character accuracy of the decoded lines
    with the post's mask and with the punctuation-exempt mask, over every pair."""
    dev = device or next(model.parameters()).device
    was = model.training
    model.eval()
    nll = n = ok_post = ok_ex = 0.0
    for L, (X, Y) in buckets.items():
        for i in range(0, len(X), batch):
            x, y = torch.from_numpy(X[i:i + batch]).to(dev), torch.from_numpy(Y[i:i + batch]).to(dev)
            logits = model(x).float()
            nll += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum"))
            ok_post += float((decode(logits, x, "post") == y).sum())
            ok_ex += float((decode(logits, x, "exempt", punct_ids) == y).sum())
            n += y.numel()
    model.train(was)
    return {"ce": nll / n, "acc_post": ok_post / n, "acc_exempt": ok_ex / n, "chars": int(n)}


@torch.no_grad()
def answer(model: nn.Module, vocab: CharVocab, line: str, mode: str = "exempt", top: int = 0):
    """The lower line for one upper line (unknown characters count as <unk>); with `top`,
    also the `top` allowed candidates per position with their probabilities."""
    if not line:
        raise ValueError("answer: empty upper line")
    model.eval()
    dev = next(model.parameters()).device
    x = torch.tensor([vocab.encode(line)], device=dev)
    logits = model(x).float()
    punct = [i for i, t in enumerate(vocab.itos) if is_punct(t)]
    ids = decode(logits, x, mode, punct)[0]
    lower = "".join(vocab.itos[int(i)] for i in ids)
    if not top:
        return lower
    p = logits.masked_fill(prior_mask(x, logits.shape[-1], mode, punct), float("-inf")).softmax(-1)[0]
    val, idx = p.topk(top, dim=-1)
    cands = [[(vocab.itos[int(j)], float(v)) for v, j in zip(vr, ir)] for vr, ir in zip(val, idx)]
    return lower, cands


@torch.no_grad()
def answer_many(model: nn.Module, vocab: CharVocab, lines: Sequence[str], mode: str = "exempt") -> list[str]:
    """`answer` for many lines, batched by length; the order of `lines` is kept."""
    model.eval()
    dev = next(model.parameters()).device
    punct = [i for i, t in enumerate(vocab.itos) if is_punct(t)]
    out: list[str | None] = [None] * len(lines)
    by_len: dict[int, list[int]] = {}
    for i, l in enumerate(lines):
        by_len.setdefault(len(l), []).append(i)
    for L, idx in by_len.items():
        for k in range(0, len(idx), 512):
            part = idx[k:k + 512]
            x = torch.tensor([vocab.encode(lines[i]) for i in part], device=dev)
            ids = decode(model(x).float(), x, mode, punct)
            for i, row in zip(part, ids.tolist()):
                out[i] = "".join(vocab.itos[j] for j in row)
    return out  # type: ignore[return-value]


class LookupBaseline:
    """For each upper character, its most frequent lower character at the same position in
    the training pairs (ties by code point), never the character itself except punctuation.
    A character never seen in training gets no answer (counted wrong; shown as ○)."""

    MISSING = "○"

    def __init__(self, pairs: Iterable[tuple[str, str]]):
        counts: dict[str, Counter] = {}
        for up, lo in pairs:
            for a, b in zip(up, lo):
                counts.setdefault(a, Counter())[b] += 1
        self.table: dict[str, str] = {}
        for a, c in counts.items():
            allowed = [(-k, b) for b, k in c.items() if b != a or is_punct(a)]
            if allowed:
                self.table[a] = min(allowed)[1]

    def predict(self, line: str) -> list[str | None]:
        return [self.table.get(a) for a in line]

    def __call__(self, line: str) -> str:
        return "".join(c or self.MISSING for c in self.predict(line))

    def accuracy(self, pairs: Sequence[tuple[str, str]]) -> float:
        """Per-character accuracy on `pairs` (no answer counts as wrong)."""
        hit = tot = 0
        for up, lo in pairs:
            hit += sum(p is not None and p == b for p, b in zip(self.predict(up), lo))
            tot += len(lo)
        return hit / tot


# ----------------------------------------------------------------------------- couplet rules
def rules(upper: str, lower: str) -> dict[str, bool]:
    """The rules of a couplet a program can check:
    - length: the lines have equal length;
    - no_echo: no character of the upper line reappears at its own position (punctuation aside);
    - punctuation: punctuation stands at the same places, as the same marks;
    - repetition: x_i = x_j exactly when y_i = y_j (doubled and repeated characters answered
      by doubled and repeated characters, and no repetition where the upper line has none)."""
    n = len(upper)
    if len(lower) != n:
        return {"length": False, "no_echo": False, "punctuation": False, "repetition": False}
    no_echo = all(a != b or is_punct(a) for a, b in zip(upper, lower))
    punct = all((is_punct(a) or is_punct(b)) <= (a == b) for a, b in zip(upper, lower))
    rep = all((upper[i] == upper[j]) == (lower[i] == lower[j]) for i in range(n) for j in range(i + 1, n))
    return {"length": True, "no_echo": no_echo, "punctuation": punct, "repetition": rep}


RULES = ("length", "no_echo", "punctuation", "repetition")


def rule_shares(uppers: Sequence[str], lowers: Sequence[str]) -> dict[str, float]:
    """Share of lines keeping each rule, and all of them."""
    rs = [rules(u, l) for u, l in zip(uppers, lowers)]
    out = {k: float(np.mean([r[k] for r in rs])) for k in RULES}
    out["all"] = float(np.mean([all(r.values()) for r in rs]))
    return out


def doubling(uppers: Sequence[str], lowers: Sequence[str]) -> dict[str, float]:
    """P(y_i = y_{i+1} | x_i = x_{i+1}) against P(y_i = y_{i+1} | x_i != x_{i+1}), over all
    adjacent positions (punctuation aside): does a doubled character get a doubled answer?"""
    dd = dn = sd = sn = 0
    for u, l in zip(uppers, lowers):
        for i in range(len(u) - 1):
            if is_punct(u[i]) or is_punct(u[i + 1]):
                continue
            if u[i] == u[i + 1]:
                dd += 1
                sd += l[i] == l[i + 1]
            else:
                dn += 1
                sn += l[i] == l[i + 1]
    return {"doubled": sd / dd if dd else float("nan"), "other": sn / dn if dn else float("nan"),
            "n_doubled": dd, "n_other": dn}


# ----------------------------------------------------------------------------- training
def make_model(arch: str, vocab_size: int, cfg: Config) -> nn.Module:
    if arch == "cnn":
        return CNNTagger(vocab_size, cfg.dim, cfg.blocks, cfg.kernel, dropout=cfg.dropout)
    if arch == "bilstm":
        return BiLSTMTagger(vocab_size, cfg.dim, cfg.bilstm_hidden, cfg.bilstm_layers, cfg.dropout)
    raise ValueError(f"arch must be 'cnn' or 'bilstm', got {arch!r}")


def _step(model: nn.Module, batch) -> torch.Tensor:
    x, y = batch
    return tagging_nll(model(x), y)


@dataclass
class RunResult:
    """One training run: the curves, the monitor lines' answers at each evaluation, the final
    (or best, with a validation block) weights, and the time it took."""

    arch: str
    seed: int
    steps: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)   # mean training loss since the last evaluation
    test: list[dict] = field(default_factory=list)          # evaluate(...) on the test pairs
    val_ce: list[float] = field(default_factory=list)
    monitor: dict[str, list[str]] = field(default_factory=dict)
    wall: list[float] = field(default_factory=list)         # seconds of training (not evaluation) so far
    state: dict | None = None
    best_step: int | None = None

    def at(self, step: int) -> dict:
        return self.test[self.steps.index(step)]


def train_tagger(cfg: Config, data: CoupletData, seed: int = 0, arch: str = "cnn", steps: int | None = None,
                 wall_budget: float | None = None, device: torch.device | str | None = None,
                 progress: bool = True, threads: int | None = None) -> RunResult:
    """Train one tagger with Adam on the post's length-bucketed batches; evaluate on the test
    pairs every `eval_every` steps (and at step 0). With `wall_budget` (seconds of training)
    the run stops at the first evaluation past it instead of after `steps`. With a validation
    block (`cfg.val_pairs`) the weights with the lowest validation loss are kept."""
    from .config import seed_everything
    from .train import Trainer

    if threads:
        torch.set_num_threads(int(threads))
    seed_everything(seed)
    dev = torch.device(device) if device is not None else default_device()
    model = make_model(arch, len(data.vocab), cfg).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    loader = BucketBatches(data.train, cfg.batch_size, 1000, seed)
    trainer = Trainer(model, opt, _step, device=dev, progress=False, log_every=cfg.eval_every,
                      run_key={"cfg": cfg, "seed": seed, "arch": arch})
    res = RunResult(arch, seed)
    punct = data.punct_ids
    mon = [m for m in MONITOR]
    total = steps if steps is not None else cfg.steps
    best = math.inf
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=None if wall_budget else total, desc=f"{arch} seed {seed}", leave=False)

    def record(step: int, loss: float, wall: float) -> None:
        nonlocal best
        res.steps.append(step)
        res.train_loss.append(loss)
        res.test.append(evaluate(model, data.test, punct))
        res.wall.append(wall)
        for line, ans in zip(mon, answer_many(model, data.vocab, mon, "post")):
            res.monitor.setdefault(line, []).append(ans)
        if data.val:
            v = evaluate(model, data.val, punct)["ce"]
            res.val_ce.append(v)
            if v < best:
                best, res.best_step = v, step
                res.state = {k: t.detach().cpu().clone() for k, t in model.state_dict().items()}
        model.train()

    record(0, float("nan"), 0.0)
    wall, t0 = 0.0, time.perf_counter()

    def on_eval(tr, step: int, mean: dict) -> None:  # every eval_every steps (the trainer's log interval)
        nonlocal wall, t0
        if dev.type == "cuda":
            torch.cuda.synchronize()
        wall += time.perf_counter() - t0  # training time only: the evaluation below is not counted
        record(step, mean["loss"], wall)
        if bar is not None:
            bar.update(cfg.eval_every if not wall_budget else 1)
            bar.set_postfix(test_ce=f"{res.test[-1]['ce']:.3f}", refresh=False)
        t0 = time.perf_counter()

    trainer.callbacks.append(on_eval)
    # whole evaluation intervals: the run ends at the first evaluation at or past `total` steps,
    # or with `wall_budget` at the first evaluation past the budget
    last = -(-total // cfg.eval_every) * cfg.eval_every if wall_budget is None else 1 << 62
    trainer.fit(loader, steps=last, until=lambda tr: wall_budget is not None and wall >= wall_budget)
    if bar is not None:
        bar.close()
    if res.state is None or not data.val:
        res.state = {k: t.detach().cpu().clone() for k, t in model.state_dict().items()}
        res.best_step = trainer.step
    return res


def _seed_job(spec: dict) -> RunResult:
    return train_tagger(spec["cfg"], spec["data"], spec["seed"], spec.get("arch", "cnn"), progress=False,
                        threads=spec.get("threads"), device=spec.get("device"))


def train_seeds(cfg: Config, data: CoupletData, seeds: Sequence[int] | None = None,
                device: torch.device | str | None = None) -> list[RunResult]:
    """The CNN trained with each seed; on the CPU with `cfg.workers` > 1, the seeds run in
    parallel processes with one thread each (these matrices are too small for two threads
    per process to pay)."""
    from .config import worker_threads
    from .train import run_jobs

    seeds = list(range(cfg.seeds)) if seeds is None else list(seeds)
    dev = torch.device(device) if device is not None else default_device()
    if dev.type != "cpu" or cfg.workers <= 1 or len(seeds) == 1:
        if dev.type == "cpu":
            torch.set_num_threads(cfg.threads)
        return [train_tagger(cfg, data, s, device=dev) for s in seeds]
    workers = min(cfg.workers, len(seeds))
    per = min(cfg.threads, worker_threads(workers))
    specs = [{"cfg": cfg, "data": data, "seed": s, "threads": per, "device": "cpu"} for s in seeds]
    return run_jobs(_seed_job, specs, workers, desc="seeds")


def load_model(cfg: Config, vocab_size: int, state: dict, arch: str = "cnn",
               device: torch.device | str | None = None) -> nn.Module:
    model = make_model(arch, vocab_size, cfg)
    model.load_state_dict(state)
    return model.to(torch.device(device) if device is not None else default_device()).eval()


def step_times(cfg: Config, data: CoupletData, archs: Sequence[str] = ("cnn", "bilstm"), steps: int | None = None,
               rounds: int = 3, device: torch.device | str | None = None, seed: int = 0) -> dict[str, list[float]]:
    """Seconds per optimiser step on the same length-bucketed batches, for each architecture,
    measured in `rounds` interleaved rounds of `steps` steps (after two warm-up steps each),
    so that a change in the machine's load hits every model alike."""
    dev = torch.device(device) if device is not None else default_device()
    steps = steps or cfg.speed_steps
    torch.manual_seed(seed)
    models = {a: make_model(a, len(data.vocab), cfg).to(dev).train() for a in archs}
    opts = {a: torch.optim.Adam(m.parameters(), lr=cfg.lr) for a, m in models.items()}
    batches = list(BucketBatches(data.train, cfg.batch_size, steps + 2, seed))

    def run(a: str, part) -> None:
        for x, y in part:
            loss = tagging_nll(models[a](x.to(dev)), y.to(dev))
            opts[a].zero_grad(set_to_none=True)
            loss.backward()
            opts[a].step()
        if dev.type == "cuda":
            torch.cuda.synchronize()

    for a in archs:
        run(a, batches[:2])
    out: dict[str, list[float]] = {a: [] for a in archs}
    for _ in range(rounds):
        for a in archs:
            t0 = time.perf_counter()
            run(a, batches[2:])
            out[a].append((time.perf_counter() - t0) / steps)
    return out


# ----------------------------------------------------------------------------- receptive field
@torch.no_grad()
def influence(model: CNNTagger, ids: torch.Tensor, replacements: int = 4, seed: int = 0) -> torch.Tensor:
    """(n, n) matrix: entry (s, t) is the mean change of the hidden state h_t (L2 norm) when the
    character at position s is replaced by another one (eval mode, `replacements` draws)."""
    if ids.ndim != 1:
        raise ValueError(f"influence: expected one line of ids, shape (length,), got {tuple(ids.shape)}")
    model.eval()
    g = torch.Generator().manual_seed(seed)
    n = len(ids)
    alt = ids.repeat(n * replacements, 1)                      # row s * replacements + r changes position s
    pos = torch.arange(n).repeat_interleave(replacements)
    new = torch.randint(1, model.vocab_size - 1, (len(alt),), generator=g)
    new = new + (new >= ids[pos]).long()                       # any id in [1, V) but the original
    alt[torch.arange(len(alt)), pos] = new
    dev = next(model.parameters()).device
    h = model.encode(torch.cat([ids[None], alt]).to(dev))       # one batch: the same kernels for every row
    delta = (h[1:] - h[:1]).norm(dim=-1).cpu()                   # (n * replacements, n)
    return delta.view(n, replacements, n).mean(1)


def changed_positions(model: nn.Module, ids: torch.Tensor, s: int, new_id: int, tol: float = 1e-6) -> list[int]:
    """Output positions whose logits move by more than `tol` when input s becomes `new_id`."""
    model.eval()
    alt = ids.clone()
    alt[s] = new_id
    with torch.no_grad():
        a, b = model(torch.stack([ids, alt]))  # one batch: the same kernels for both lines
    return [int(t) for t in torch.nonzero((a - b).abs().amax(-1) > tol).flatten()]


# ----------------------------------------------------------------------------- figures
def plot_influence(mats: Sequence[torch.Tensor], line: str, titles: Sequence[str], radii: Sequence[int], ncols: int = 2):
    """Heat maps of `influence` (rows: the changed position s, columns: the output t), the
    characters of `line` on both axes, with the analytic band |t - s| <= R outlined."""
    import matplotlib.pyplot as plt

    n = len(line)
    rows = -(-len(mats) // ncols)
    fig, axes = plt.subplots(rows, ncols, figsize=(4.6 * ncols, 4.2 * rows), squeeze=False)
    for ax, m, title, R in zip(axes.flat, mats, titles, radii):
        v = m.numpy().copy()
        v[v <= 0] = np.nan  # exactly unchanged: blank
        im = ax.imshow(np.log10(v), cmap="viridis", origin="upper")
        for s_ in range(n):  # the band |t - s| <= R
            lo, hi = max(0, s_ - R), min(n - 1, s_ + R)
            ax.plot([lo - 0.5, hi + 0.5], [s_ - 0.5, s_ - 0.5], color="w", lw=0.6)
            ax.plot([lo - 0.5, hi + 0.5], [s_ + 0.5, s_ + 0.5], color="w", lw=0.6)
        ax.set_xticks(range(n), list(line))
        ax.set_yticks(range(n), list(line))
        ax.set_xlabel("output position t")
        ax.set_ylabel("changed input position s")
        ax.set_title(title, fontsize=10)
        ax.grid(False)
        fig.colorbar(im, ax=ax, shrink=0.8, label="log10 |change of h_t|")
    for ax in list(axes.flat)[len(mats):]:
        ax.set_axis_off()
    fig.tight_layout()
    return fig


def plot_training(runs: Sequence[RunResult], lookup_acc: float | None = None):
    """Left: test cross-entropy and mean training loss per seed; right: per-character test
    accuracy with the post's mask and the punctuation-exempt mask (and the lookup baseline)."""
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9.6, 3.8))
    for k, r in enumerate(runs):
        lab = k == 0
        a1.plot(r.steps, [t["ce"] for t in r.test], "o-", color="C0", ms=3, label="test" if lab else None)
        a1.plot(r.steps[1:], r.train_loss[1:], "s--", color="C1", ms=3, label="training (dropout on)" if lab else None)
        a2.plot(r.steps, [100 * t["acc_post"] for t in r.test], "o-", color="C3", ms=3,
                label="post's mask" if lab else None)
        a2.plot(r.steps, [100 * t["acc_exempt"] for t in r.test], "o-", color="C2", ms=3,
                label="punctuation exempt" if lab else None)
    a1.axhline(6.4, color="gray", lw=0.8, ls=":", label="C9 threshold 6.4")
    if lookup_acc is not None:
        a2.axhline(100 * lookup_acc, color="k", lw=0.8, ls=":", label="lookup table")
    a1.set_xlabel("step")
    a1.set_ylabel("cross-entropy (nats / character)")
    a2.set_xlabel("step")
    a2.set_ylabel("character accuracy (%)")
    a1.legend()
    a2.legend()
    fig.suptitle(f"{len(runs)} seed{'s' if len(runs) > 1 else ''}", fontsize=10)
    fig.tight_layout()
    return fig


def plot_candidates(line: str, cands: Sequence[Sequence[tuple[str, float]]]):
    """The top candidates per position of one answer: bars of their probabilities, each
    labelled with its character."""
    import matplotlib.pyplot as plt

    n, k = len(cands), len(cands[0])
    fig, ax = plt.subplots(figsize=(min(9.6, 1.1 * n + 1.5), 3.2))
    w = 0.8 / k
    for j in range(k):
        xs = np.arange(n) + (j - (k - 1) / 2) * w
        ps = [c[j][1] for c in cands]
        ax.bar(xs, ps, width=w, color=f"C{j}", label=f"candidate {j + 1}")
        for x_, p_, c in zip(xs, ps, cands):
            ax.text(x_, p_ + 0.01, c[j][0], ha="center", va="bottom", fontsize=11)
    ax.set_xticks(range(n), [f"{c}\n(t={t + 1})" for t, c in enumerate(line)])
    ax.set_ylabel("p(y_t = c | x)")
    ax.set_ylim(0, min(1.0, max(c[0][1] for c in cands) * 1.25 + 0.05))
    ax.legend(ncol=k, loc="upper right")
    ax.set_title(f"upper line {line}: the {k} most likely allowed characters per position", fontsize=10)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- fonts and widgets
CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "Source Han Sans CN", "WenQuanYi Zen Hei",
             "WenQuanYi Micro Hei", "SimHei", "Microsoft YaHei", "PingFang SC", "Heiti SC", "Hiragino Sans GB",
             "Arial Unicode MS", "Noto Sans CJK JP", "Noto Sans CJK TC")


def cjk_font(quiet: bool = False) -> str | None:
    """Make matplotlib draw Chinese: find an installed CJK font (registering font files the
    font cache has not seen yet, e.g. installed after matplotlib first ran) and put it after
    the book's Latin font, so each glyph falls back to it. Returns its name, or None with a
    one-line message saying how to install one (figures then show boxes for Chinese)."""
    import os

    import matplotlib
    from matplotlib import font_manager as fm

    known = {f.name for f in fm.fontManager.ttflist}
    name = next((n for n in CJK_FONTS if n in known), None)
    if name is None:
        hints = ("cjk", "wqy", "simhei", "yahei", "sourcehan", "notosanssc", "pingfang", "heiti")
        for path in fm.findSystemFonts():
            if any(h in os.path.basename(path).lower().replace("-", "") for h in hints):
                try:
                    fm.fontManager.addfont(path)
                except (OSError, RuntimeError, ValueError):
                    continue
        known = {f.name for f in fm.fontManager.ttflist}
        name = next((n for n in CJK_FONTS if n in known), None)
    if name is None:
        if not quiet:
            print("No CJK font found: Chinese in figures will show as empty boxes. Install one "
                  "(Debian/Colab: `!apt-get -qq install fonts-noto-cjk`) and run this cell again.")
        return None
    # An explicit list (not the generic "sans-serif", which resolves to one font) makes
    # matplotlib fall back glyph by glyph: Latin from the book's font, Chinese from `name`.
    latin = [f for f in matplotlib.rcParams["font.family"] if f not in CJK_FONTS and f != "sans-serif"]
    matplotlib.rcParams["font.family"] = (latin or ["DejaVu Sans"]) + [name]
    return name


def _pair_html(upper: str, answers: Sequence[tuple[str, str]]) -> str:
    """A small table: the upper line, then each (label, line), characters in aligned cells."""
    cell = "padding:2px 6px;text-align:center;font-size:1.25em"
    row = lambda label, line: (f"<tr><td style='padding:2px 8px;color:#555'>{html.escape(label)}</td>"
                               + "".join(f"<td style='{cell}'>{html.escape(c)}</td>" for c in line) + "</tr>")
    body = row("upper line 上联", upper) + "".join(row(lab, line) for lab, line in answers)
    return f"<table style='border-collapse:collapse'>{body}</table>"


def answer_gallery(rows: Sequence[tuple[str, str, str]], description: str = "upper line"):
    """A dropdown over held-out upper lines showing the model's and the human lower line,
    all precomputed; the dropdown and the pages are linked in the browser (`jslink`), so it
    works in the static book without a kernel. `rows`: (upper, model, human)."""
    import ipywidgets as W

    if not rows:
        raise ValueError("answer_gallery: no rows")
    pages = [W.HTML(_pair_html(u, [("model 模型", m), ("human 原下联", h)])) for u, m, h in rows]
    stack = W.Stack(pages, selected_index=0)
    dd = W.Dropdown(options=[u for u, _, _ in rows], index=0, description=description,
                    style={"description_width": "initial"}, layout=W.Layout(width="420px"))
    W.jslink((dd, "index"), (stack, "selected_index"))
    return W.VBox([dd, stack])


def oov_message(vocab: CharVocab, line: str) -> str | None:
    """None if every character of `line` is in the vocabulary, else a sentence naming the others."""
    bad = [c for c in vocab.unknown(line)]
    if not bad:
        return None
    return (f"Not in the model's vocabulary ({len(vocab) - 1:,} characters seen at least twice in the training "
            f"couplets): {'、'.join(bad)}. They are read as the unknown token, so the answer at "
            f"{'that position' if len(bad) == 1 else 'those positions'} is a guess; try another character.")


MAX_LIVE = 40


def live_reply(model: nn.Module, vocab: CharVocab, text: str, top: int = 3) -> str:
    """The HTML the live box shows for `text`: the answer with the top candidates per position,
    or a message (empty input, too long, characters outside the vocabulary). Never raises on
    what a reader may type."""
    line = normalise(text)
    if not line:
        return "<i>Type an upper line (上联), e.g. 晚风摇树树还挺.</i>"
    if len(line) > MAX_LIVE:
        return f"<b>That line has {len(line)} characters;</b> the box answers lines of up to {MAX_LIVE}."
    msg = oov_message(vocab, line)
    lower, cands = answer(model, vocab, line, "exempt", top=top)
    rows = [("model 模型", lower)] + [(f"top {k + 1}", "".join(c[k][0] for c in cands)) for k in range(1, top)]
    out = _pair_html(line, rows)
    probs = " ".join(f"{c[0][0]} {c[0][1]:.2f}" for c in cands)
    out += f"<div style='color:#555;font-size:0.9em'>p(top 1) per position: {html.escape(probs)}</div>"
    if msg:
        out = f"<div style='color:#a00'><b>Note.</b> {html.escape(msg, quote=False)}</div>" + out
    return out


def live_box(model: nn.Module, vocab: CharVocab, value: str = "晚风摇树树还挺", top: int = 3):
    """A text box wired to the trained model in this kernel: type an upper line, read the
    answer at once. Needs a running kernel (it does nothing in the static book)."""
    import ipywidgets as W

    box = W.Text(value="", placeholder="上联, e.g. 晚风摇树树还挺", description="upper line",
                 continuous_update=True, style={"description_width": "initial"}, layout=W.Layout(width="420px"))
    out = W.HTML()

    def show(change=None):
        try:
            out.value = live_reply(model, vocab, box.value, top)
        except Exception as e:  # a reply must never take the box down
            out.value = f"<b>Could not answer:</b> {html.escape(str(e))}"

    box.observe(show, names="value")
    box.value = value
    show()
    return W.VBox([box, out])
