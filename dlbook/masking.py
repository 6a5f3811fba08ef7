"""Chapter 03: masking is dropout (MLM, MAE and DropToken).

Notation follows the post: ``p`` is the **keep** probability of a Bernoulli mask
``eps ~ Bernoulli(p)``, and a dropout layer trains ``f(x * eps / p)``. PyTorch's
``nn.Dropout(p)`` takes the **drop** probability ``1 - p``; so does the DropToken rate ``r``
of this module (``r = 1 - p``) and the MAE mask ratio (0.75 masked, ``p = 0.25`` kept).

What is here, each piece with the label of the chapter's equation it transcribes:

- dropout algebra: Bernoulli masks, the model average and the weight average, the Taylor gap;
- BERT's 80/10/10 corruption, the MLM loss and the embedding correction;
- a small pre-LN Transformer encoder whose attention can drop key columns (attention dropout),
  a tiny BERT (token and position embeddings, MLM head, classification head), DropToken;
- a small MAE (patch encoder on the visible patches, light decoder) and its FLOP count;
- the speaker task drawn from Tiny Shakespeare, and the chapter's experiments.
"""
from __future__ import annotations

import math
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import Settings, by_profile, device as default_device, require, worker_threads
from .metrics import mean_sd, paired  # noqa: F401  (the chapter calls masking.paired / mean_sd)
from .train import ArrayLoader, Trainer, run_jobs

SPECIALS = ("<pad>", "<unk>", "<cls>", "<mask>")
PAD, UNK, CLS, MASK = range(4)


# ----------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class Config(Settings):
    """Everything one profile of chapter 03 runs. Lengths and sizes are in tokens."""

    # the speaker task and the tiny BERT
    speakers: int = 4                 # K most frequent speakers of the whole play text
    vocab_words: int = 3000           # words in the vocabulary (other words are spelled out)
    max_len: int = 64                 # tokens per example, [CLS] included
    d_model: int = 64
    depth: int = 2
    heads: int = 4
    ffn: int = 256
    pretrain_steps: int = 1000
    pretrain_batch: int = 64
    pretrain_lr: float = 2e-3
    select: float = 0.15              # BERT: 15 % of the characters are selected ...
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)   # ... and become [MASK] / stay / random
    finetune_epochs: int = 8
    finetune_batch: int = 32
    finetune_lr: float = 1e-3
    seeds: int = 5                    # fine-tuning seeds of D11 (one pre-trained model)
    sweep_seeds: int = 3              # fine-tuning seeds per DropToken rate (D12)
    workers: int = 1                  # fine-tuning runs side by side (processes)
    drop_rates: tuple[float, ...] = (0.0, 0.1, 0.15, 0.25, 0.5)
    mask_rates: tuple[float, ...] = ()  # extra pre-training selection rates for D11 (full profile)
    local_init: bool = True           # attention that starts local (see TinyBert)
    # timing (D8, D9): the brief's small encoder
    time_d: int = 128
    time_depth: int = 4
    time_n: int = 256
    time_batch: int = 16
    time_steps: int = 60
    time_warmup: int = 3
    # the tiny MAE on MNIST
    mae_train: int = 10000
    mae_test: int = 2000
    patch: int = 4
    mae_d: int = 64
    mae_depth: int = 4
    mae_heads: int = 4
    dec_d: int = 32
    dec_depth: int = 1
    mae_mask: float = 0.75
    mae_epochs: int = 15
    mae_batch: int = 128
    mae_lr: float = 1.5e-3
    ft_epochs: int = 2
    ft_seeds: int = 3
    ft_lr: float = 1e-3
    # CPU threads for torch (None: dlbook.config.threads' policy, every core). Models this small
    # run faster on one thread than on two that wait for each other.
    threads: int | None = None

    SIZES = ("speakers", "vocab_words", "max_len", "d_model", "depth", "heads", "ffn", "pretrain_steps", "pretrain_batch",
             "finetune_epochs", "finetune_batch", "seeds", "sweep_seeds", "workers", "time_d", "time_depth", "time_n", "time_batch",
             "time_steps", "time_warmup", "mae_train", "mae_test", "patch", "mae_d", "mae_depth", "mae_heads",
             "dec_d", "dec_depth", "mae_epochs", "mae_batch", "ft_epochs", "ft_seeds", "threads")
    POSITIVE = ("pretrain_lr", "finetune_lr", "mae_lr", "ft_lr")
    UNIT = ("select", "split", "drop_rates", "mask_rates", "mae_mask")

    def __post_init__(self) -> None:
        super().__post_init__()
        if abs(sum(self.split) - 1) > 1e-9 or len(self.split) != 3:
            raise ValueError(f"Config: split is (mask, keep, random) and must sum to 1, got {self.split}")
        for name, d, h in (("d_model", self.d_model, self.heads), ("time_d", self.time_d, self.heads),
                           ("mae_d", self.mae_d, self.mae_heads), ("dec_d", self.dec_d, self.mae_heads)):
            if d % h:
                raise ValueError(f"Config: {name}={d} is not divisible by the number of heads {h}")
        if 28 % self.patch:
            raise ValueError(f"Config: patch={self.patch} must divide the 28-pixel MNIST side")
        if not 0 < self.mae_mask < 1:
            raise ValueError(f"Config: mae_mask must be in (0, 1), got {self.mae_mask}")
        if any(not 0 <= r < 1 for r in self.drop_rates):
            raise ValueError(f"Config: drop rates must be in [0, 1), got {self.drop_rates}")


CONFIGS = {
    # seconds, from what the package ships: a few steps of every code path
    "smoke": Config(speakers=4, vocab_words=200, max_len=32, d_model=32, depth=1, heads=2, ffn=64, pretrain_steps=6,
                    pretrain_batch=16, finetune_epochs=1, finetune_batch=16, seeds=1, sweep_seeds=1,
                    drop_rates=(0.0, 0.5),
                    time_d=32, time_depth=1, time_n=64, time_batch=4, time_steps=3, time_warmup=1,
                    mae_train=250, mae_test=100, mae_d=32, mae_depth=1, mae_heads=2, dec_d=16,
                    mae_epochs=1, mae_batch=50, ft_epochs=1, ft_seeds=1, threads=1),
    # about 8 minutes on two CPU cores; fine-tuning runs two at a time, one thread each. Ten
    # paired seeds for D11 (the seed-to-seed spread of a fine-tuning run is several points).
    "cpu": Config(workers=2, seeds=10, sweep_seeds=5),
    # one GPU: a larger encoder and longer schedules on the same data, plus D11's masking rates.
    # Not measured here (no GPU was available when the chapter was recorded).
    "full": Config(max_len=256, d_model=256, depth=4, heads=8, ffn=1024, pretrain_steps=20000,
                   pretrain_batch=128, pretrain_lr=5e-4, finetune_epochs=10, finetune_lr=2e-4, seeds=10, sweep_seeds=5,
                   mask_rates=(0.4, 0.6), time_steps=60, mae_train=60000, mae_test=10000, mae_d=192,
                   mae_depth=6, mae_heads=4, dec_d=128, dec_depth=2, mae_epochs=60, mae_batch=256,
                   mae_lr=1.5e-3, ft_epochs=5, ft_seeds=3, ft_lr=5e-4),
}


def config(profile: str | None = None) -> Config:
    """The settings of `profile` (None: the resolved profile)."""
    return by_profile(CONFIGS, profile)


# ----------------------------------------------------------------------------- dropout algebra
def bernoulli(shape: Sequence[int] | int, p: float, generator: torch.Generator | None = None,
              dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Samples of eps ~ Bernoulli(p): 1 with probability p (the *keep* probability), else 0."""
    require("bernoulli", unit={"p": p})
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    return (torch.rand(shape, generator=generator, dtype=torch.float64) < p).to(dtype)  # (eq-03-bernoulli)


def dropout(x: torch.Tensor, eps: torch.Tensor, p: float) -> torch.Tensor:
    """x eps / p: inverted dropout with keep probability p (eq-03-dropout)."""
    require("dropout", positive={"p": p}, unit={"p": p})
    return x * eps / p  # (eq-03-dropout)


def model_average(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, p: float, samples: int,
                  generator: torch.Generator | None = None, chunk: int = 50_000) -> torch.Tensor:
    """Monte-Carlo estimate of the model average E_eps f(x eps / p) (eq-03-model-average),
    with an independent Bernoulli(p) mask on every entry of `x`."""
    require("model_average", positive={"samples": samples}, whole=True)
    total, done = 0.0, 0
    while done < samples:
        m = min(chunk, samples - done)
        eps = bernoulli((m, *x.shape), p, generator, x.dtype)
        total = total + f(dropout(x, eps, p)).sum(0)
        done += m
    return total / samples  # (eq-03-model-average)


def tanh_averages(a: float, x, p) -> dict[str, np.ndarray]:
    """For f(z) = tanh(a z) with one scalar mask: the weight average f(x) (eq-03-weight-average),
    the exact model average p f(x/p) + (1-p) f(0) (eq-03-model-average) and its second-order
    Taylor approximation f(x) + f''(x) x^2 (1-p) / (2p) (eq-03-taylor)."""
    x, p = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(p, dtype=np.float64))
    if (p <= 0).any() or (p > 1).any():
        raise ValueError("tanh_averages: keep probabilities must be in (0, 1]")
    t = np.tanh(a * x)
    f2 = -2.0 * a * a * t * (1.0 - t * t)  # f''(z) of tanh(a z)
    return {"weight": t, "model": p * np.tanh(a * x / p), "taylor": t + 0.5 * f2 * x * x * (1 - p) / p}


# ----------------------------------------------------------------------------- MLM as dropout
def correction_coefficients(select: float = 0.15, split: Sequence[float] = (0.8, 0.1, 0.1)) -> tuple[float, float, float]:
    """Coefficients (token, [MASK], mean row) of the expected MLM input: a token is selected
    with probability `select`, then replaced by [MASK], kept or replaced by a random token with
    the probabilities of `split` (eq-03-expected-input). BERT: (0.865, 0.12, 0.015)."""
    require("correction_coefficients", unit={"select": select, "split": tuple(split)})
    a, b, c = split
    if abs(a + b + c - 1) > 1e-9:
        raise ValueError(f"correction_coefficients: split (mask, keep, random) must sum to 1, got {tuple(split)}")
    return 1 - select + select * b, select * a, select * c  # (eq-03-expected-input)


@torch.no_grad()
def corrected_embeddings(weight: torch.Tensor, mask_id: int, select: float = 0.15,
                         split: Sequence[float] = (0.8, 0.1, 0.1), random_rows: slice = slice(None)) -> torch.Tensor:
    """The post's embedding correction (eq-03-correction): every row e_i (special tokens and
    [MASK] included) becomes c_t e_i + c_m e_[MASK] + c_r e_bar, where e_bar is the mean of the
    rows that random replacement draws from (`random_rows`; the whole table in the post)."""
    if weight.ndim != 2:
        raise ValueError(f"corrected_embeddings: expected a (vocab, dim) table, got shape {tuple(weight.shape)}")
    ct, cm, cr = correction_coefficients(select, split)
    e_bar = weight[random_rows].mean(0)
    return ct * weight + cm * weight[mask_id] + cr * e_bar  # (eq-03-correction)


def bert_corrupt(ids: torch.Tensor, maskable: torch.Tensor, vocab_size: int, mask_id: int = MASK,
                 select: float = 0.15, split: Sequence[float] = (0.8, 0.1, 0.1), random_low: int = len(SPECIALS),
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's corruption (eq-03-bert-rule): each maskable token is selected with probability
    `select`; a selected token becomes [MASK] (split[0]), stays (split[1]) or becomes a token
    drawn uniformly from ids [random_low, vocab_size) (split[2]). Returns (corrupted ids,
    selected) where `selected` marks the positions the MLM loss predicts."""
    if ids.shape != maskable.shape:
        raise ValueError(f"bert_corrupt: ids {tuple(ids.shape)} and maskable {tuple(maskable.shape)} differ")
    require("bert_corrupt", unit={"select": select, "split": tuple(split)})
    a, b, _ = split
    dev = ids.device
    selected = (torch.rand(ids.shape, generator=generator, device=dev) < select) & maskable
    u = torch.rand(ids.shape, generator=generator, device=dev)
    rand_tok = torch.randint(random_low, vocab_size, ids.shape, generator=generator, device=dev)
    out = torch.where(selected & (u < a), torch.full_like(ids, mask_id), ids)       # 80 %: [MASK]
    out = torch.where(selected & (u >= a + b), rand_tok, out)                        # 10 %: random; 10 %: kept
    return out, selected  # (eq-03-bert-rule)


def mlm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the selected positions S (eq-03-mlm-loss): `logits` (|S|, V) of
    the selected positions only (the head never runs elsewhere), `targets` (|S|,) the tokens
    that stood there before the corruption."""
    if logits.ndim != 2 or targets.shape != logits.shape[:1]:
        raise ValueError(f"mlm_loss: logits {tuple(logits.shape)} (|S|, V) and targets {tuple(targets.shape)} (|S|,) "
                         "do not match")
    if len(targets) == 0:
        return logits.sum() * 0.0
    return F.cross_entropy(logits, targets)  # (eq-03-mlm-loss)


# ----------------------------------------------------------------------------- attention dropout
def renormalise(A: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    """Norm(A (x) M): zero the entries where M is 0 and rescale each row to sum 1
    (eq-03-attention-dropout). A: row-stochastic (..., n, n); M broadcasts against it."""
    AM = A * M
    return AM / AM.sum(-1, keepdim=True)  # (eq-03-attention-dropout)


# ----------------------------------------------------------------------------- argument checks
# The chapter shows the functions above next to their equations; what they refuse is checked
# here, before they run (`show_source` unwraps to the equation code).
def _checked(fn: Callable, check: Callable) -> Callable:
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        check(*args, **kwargs)
        return fn(*args, **kwargs)

    return wrapper


def _dropout_args(x: torch.Tensor, eps: torch.Tensor, p: float) -> None:
    try:
        shape = torch.broadcast_shapes(x.shape, eps.shape)
    except RuntimeError:
        shape = None
    if shape != eps.shape:  # one draw of eps per entry of x (leading sample dimensions allowed)
        raise ValueError(f"dropout: eps {tuple(eps.shape)} must hold one draw per entry of x {tuple(x.shape)} "
                         "(x's shape, optionally with leading sample dimensions); a smaller eps would be "
                         "shared between entries")


def _renormalise_args(A: torch.Tensor, M: torch.Tensor) -> None:
    total = (A * M).sum(-1)
    if bool((total == 0).any()):
        raise ValueError(f"renormalise: {int((total == 0).sum())} row(s) of A (x) M keep no weight (an all-zero "
                         "mask row): their renormalisation is undefined; keep at least one key per row")


def _bert_corrupt_args(ids, maskable, vocab_size: int, mask_id: int = MASK, select: float = 0.15,
                       split: Sequence[float] = (0.8, 0.1, 0.1), random_low: int = len(SPECIALS),
                       generator=None) -> None:
    require("bert_corrupt", nonneg={"random_low": random_low})
    if vocab_size <= random_low:
        raise ValueError(f"bert_corrupt: random tokens are drawn from ids [random_low, vocab_size) = "
                         f"[{random_low}, {vocab_size}), which is empty; vocab_size must exceed random_low")


dropout = _checked(dropout, _dropout_args)
renormalise = _checked(renormalise, _renormalise_args)
bert_corrupt = _checked(bert_corrupt, _bert_corrupt_args)


class Block(nn.Module):
    """A pre-LN Transformer block: x + Attn(LN(x)), then x + FFN(LN(x)). Attention sees only
    the keys marked in `keep` (B, n): softmax with the other columns at -inf, which is exactly
    Norm(A (x) M) of (eq-03-attention-dropout). Everything else acts token by token."""

    def __init__(self, d: int, heads: int, ffn: int):
        super().__init__()
        if d % heads:
            raise ValueError(f"Block: width {d} is not divisible by {heads} heads")
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.out = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, ffn), nn.GELU(), nn.Linear(ffn, d))

    def _qkv(self, x):
        B, n, d = x.shape
        return self.qkv(self.ln1(x)).view(B, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        q, k, v = self._qkv(x)
        mask = None if keep is None else keep[:, None, None, :]
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (eq-03-attention-dropout)
        x = x + self.out(a.transpose(1, 2).flatten(2))
        return x + self.mlp(self.ln2(x))

    @torch.no_grad()
    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The unmasked attention probabilities A (B, heads, n, n) of this block's input."""
        q, k, _ = self._qkv(x)
        return (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(-1)


class Encoder(nn.Module):
    """A stack of pre-LN blocks and a final LayerNorm, on already embedded tokens (B, n, d).
    `keep` (B, n) removes the other key columns in the layers listed in `mask_layers` (every
    layer by default: that is MAE read as attention dropout)."""

    def __init__(self, d: int, depth: int, heads: int, ffn: int):
        super().__init__()
        self.blocks = nn.ModuleList([Block(d, heads, ffn) for _ in range(depth)])
        self.norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None,
                mask_layers: Sequence[int] | None = None) -> torch.Tensor:
        if keep is not None and keep.shape != x.shape[:2]:
            raise ValueError(f"Encoder: keep {tuple(keep.shape)} does not match tokens {tuple(x.shape[:2])}")
        for i, blk in enumerate(self.blocks):
            x = blk(x, keep if (mask_layers is None or i in mask_layers) else None)
        return self.norm(x)


# ----------------------------------------------------------------------------- tiny BERT
def sinusoids(n: int, d: int) -> torch.Tensor:
    """The Transformer's sinusoidal position table (n, d): row i holds sin and cos of i w_k."""
    pos = torch.arange(n, dtype=torch.float64)[:, None]
    omega = 1.0 / 10000 ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
    table = torch.zeros(n, d, dtype=torch.float64)
    table[:, 0::2], table[:, 1::2] = (pos * omega).sin(), (pos * omega).cos()
    return table.float()


class TinyBert(nn.Module):
    """Token and position embeddings, a pre-LN encoder, an MLM head and a classification head
    on the [CLS] output. `pos` gives each token's position id (default 0..n-1); DropToken passes
    the original positions of the kept tokens. `pad` (B, n) marks padding, never attended to.

    With `local_init` (default) the learned position table starts as sinusoids and each block's
    query and key projections start equal, so that attention starts local. With BERT's random
    initialisation a model this small stays on the unigram plateau of masked-character
    prediction for the whole CPU budget: without a [MASK]ed token's own identity, only
    position-selective attention helps, and uniform attention gives it almost no gradient."""

    def __init__(self, vocab: int, max_len: int, d: int = 64, depth: int = 2, heads: int = 4, ffn: int = 256,
                 n_classes: int = 2, local_init: bool = True):
        super().__init__()
        self.max_len = max_len
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(max_len, d)
        nn.init.normal_(self.tok.weight, std=0.02)
        self.encoder = Encoder(d, depth, heads, ffn)
        self.mlm_head = nn.Linear(d, vocab)
        self.cls_head = nn.Linear(d, n_classes)
        if local_init:
            # Attention that starts local: sinusoidal rows (p_i . p_j falls with |i - j|) and equal
            # query and key projections, so q_i . k_j starts near p_i . p_j. Both stay trainable.
            with torch.no_grad():
                self.pos.weight.copy_(sinusoids(max_len, d))
                for blk in self.encoder.blocks:
                    blk.qkv.weight[d:2 * d].copy_(blk.qkv.weight[:d])
                    blk.qkv.bias[d:2 * d].copy_(blk.qkv.bias[:d])
        else:
            nn.init.normal_(self.pos.weight, std=0.02)

    def hidden(self, ids: torch.Tensor, pos: torch.Tensor | None = None, pad: torch.Tensor | None = None):
        if ids.ndim != 2:
            raise ValueError(f"TinyBert: expected (batch, length) ids, got shape {tuple(ids.shape)}")
        if pos is None:
            if ids.shape[1] > self.max_len:
                raise ValueError(f"TinyBert: {ids.shape[1]} tokens, more than max_len={self.max_len}")
            pos = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
        x = self.tok(ids) + self.pos(pos)
        return self.encoder(x, None if pad is None else ~pad)

    def mlm_logits(self, ids, selected: torch.Tensor | None = None, pos=None, pad=None) -> torch.Tensor:
        """MLM logits (B, n, V), or (|S|, V) at the `selected` positions only."""
        h = self.hidden(ids, pos, pad)
        return self.mlm_head(h if selected is None else h[selected])

    def forward(self, ids, pos=None, pad=None) -> torch.Tensor:
        """Class logits from the output at [CLS] (the first token)."""
        return self.cls_head(self.hidden(ids, pos, pad)[:, 0])


def drop_tokens(ids: torch.Tensor, pad: torch.Tensor, rate: float, protect: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DropToken (eq-03-droptoken): drop each real, unprotected token with probability `rate`
    (a *drop* rate, independently per sequence), keep the survivors in order **with their
    original position ids**, and re-pad to the longest kept length of the batch (where the
    speed-up comes from). Returns (ids, pos, pad). With rate 0 on a batch trimmed to its
    longest row, the output is the input itself (pos = 0..n-1)."""
    if ids.shape != pad.shape:
        raise ValueError(f"drop_tokens: ids {tuple(ids.shape)} and pad {tuple(pad.shape)} differ")
    require("drop_tokens", unit={"rate": rate})
    if rate >= 1:
        raise ValueError("drop_tokens: rate must be < 1 (a sequence needs a token left)")
    real = ~pad
    droppable = real if protect is None else real & ~protect
    u = torch.rand(ids.shape, generator=generator, device=ids.device)
    keep = real & ~(droppable & (u < rate))
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices   # kept first, in order
    length = max(int(keep.sum(1).max()), 1)
    order = order[:, :length]
    new_pad = ~keep.gather(1, order)
    new_ids = ids.gather(1, order).masked_fill(new_pad, PAD)
    return new_ids, order, new_pad  # (eq-03-droptoken): positions are the original indices


def trim(ids: torch.Tensor, pad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut a right-padded batch to its longest row."""
    n = max(int((~pad).sum(1).max()), 1)
    return ids[:, :n], pad[:, :n]


# ----------------------------------------------------------------------------- MAE
def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, H W / patch^2, patch^2 C) patches in row-major order."""
    if images.ndim != 4 or images.shape[2] % patch or images.shape[3] % patch:
        raise ValueError(f"patchify: need (N, C, H, W) with H, W divisible by {patch}, got {tuple(images.shape)}")
    N, C, H, W = images.shape
    x = images.reshape(N, C, H // patch, patch, W // patch, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(N, (H // patch) * (W // patch), patch * patch * C)


def unpatchify(patches: torch.Tensor, patch: int, channels: int = 1) -> torch.Tensor:
    """Inverse of `patchify` for square images."""
    N, n, _ = patches.shape
    g = int(round(math.sqrt(n)))
    x = patches.reshape(N, g, g, patch, patch, channels).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(N, channels, g * patch, g * patch)


def sincos_2d(grid: int, d: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embeddings (grid^2, d), as in MAE."""
    if d % 4:
        raise ValueError(f"sincos_2d: width {d} must be divisible by 4")
    omega = 1.0 / 10000 ** (torch.arange(d // 4, dtype=torch.float64) / (d // 4))
    ys, xs = torch.meshgrid(torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64),
                            indexing="ij")
    parts = []
    for c in (ys.flatten(), xs.flatten()):
        ang = c[:, None] * omega[None]
        parts += [ang.sin(), ang.cos()]
    return torch.cat(parts, 1).float()


def random_keep(n_images: int, n_tokens: int, mask_ratio: float, generator: torch.Generator | None = None,
                device=None) -> torch.Tensor:
    """MAE's masking: for each image, the sorted indices of the int(n (1 - ratio)) patches kept,
    sampled uniformly without replacement (a fixed count, not independent Bernoullis)."""
    n_keep = max(1, int(n_tokens * (1 - mask_ratio)))
    noise = torch.rand(n_images, n_tokens, generator=generator, device=device)
    return noise.argsort(1)[:, :n_keep].sort(1).values


class TinyMAE(nn.Module):
    """A small masked autoencoder: patch embedding + fixed 2-D sin-cos positions, a pre-LN
    encoder that sees only the visible patches, and a light decoder that gets the encoded
    visible tokens plus a shared mask token at every masked position."""

    def __init__(self, image: int = 28, patch: int = 4, channels: int = 1, d: int = 64, depth: int = 4,
                 heads: int = 4, dec_d: int = 32, dec_depth: int = 1):
        super().__init__()
        self.patch, self.channels, self.grid = patch, channels, image // patch
        self.n = self.grid ** 2
        dim = patch * patch * channels
        self.embed = nn.Linear(dim, d)
        self.register_buffer("pos", sincos_2d(self.grid, d), persistent=False)
        self.encoder = Encoder(d, depth, heads, 4 * d)
        self.dec_embed = nn.Linear(d, dec_d)
        self.mask_token = nn.Parameter(torch.zeros(dec_d))
        nn.init.normal_(self.mask_token, std=0.02)
        self.register_buffer("dec_pos", sincos_2d(self.grid, dec_d), persistent=False)
        self.decoder = Encoder(dec_d, dec_depth, heads, 4 * dec_d)
        self.pred = nn.Linear(dec_d, dim)

    def encode(self, images: torch.Tensor, keep_idx: torch.Tensor | None = None) -> torch.Tensor:
        """Encoder outputs of the visible patches `keep_idx` (N, k), or of all patches."""
        x = self.embed(patchify(images, self.patch)) + self.pos
        if keep_idx is not None:
            x = x.gather(1, keep_idx[..., None].expand(-1, -1, x.shape[-1]))
        return self.encoder(x)

    def decode(self, latent: torch.Tensor, keep_idx: torch.Tensor) -> torch.Tensor:
        """Predicted patches (N, n, patch^2 C) from the visible tokens' codes."""
        y = self.dec_embed(latent)
        full = self.mask_token.expand(len(y), self.n, -1).clone()
        full = full.scatter(1, keep_idx[..., None].expand(-1, -1, y.shape[-1]), y)
        return self.pred(self.decoder(full + self.dec_pos))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Mean of the encoder outputs over all patches (no masking: the weight average)."""
        return self.encode(images).mean(1)


def mae_loss(pred: torch.Tensor, target: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the pixels of the masked patches only (eq-03-mae-loss):
    pred and target (N, n, P), masked (N, n) True where a patch was hidden."""
    if pred.shape != target.shape or masked.shape != pred.shape[:2]:
        raise ValueError(f"mae_loss: pred {tuple(pred.shape)}, target {tuple(target.shape)} and masked "
                         f"{tuple(masked.shape)} do not match")
    per_patch = (pred - target).pow(2).mean(-1)
    return (per_patch * masked).sum() / masked.sum().clamp_min(1)  # (eq-03-mae-loss)


def mae_forward(model: TinyMAE, images: torch.Tensor, mask_ratio: float,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One MAE pass: (loss, predicted patches, masked) with a fresh fixed-count mask."""
    keep_idx = random_keep(len(images), model.n, mask_ratio, generator, images.device)
    masked = torch.ones(len(images), model.n, dtype=torch.bool, device=images.device)
    masked.scatter_(1, keep_idx, False)
    pred = model.decode(model.encode(images, keep_idx), keep_idx)
    return mae_loss(pred, patchify(images, model.patch), masked), pred, masked


class PatchClassifier(nn.Module):
    """An MAE encoder (no masking, all patches) with mean pooling and a linear head."""

    def __init__(self, mae: TinyMAE, n_classes: int = 10):
        super().__init__()
        self.mae = mae
        self.head = nn.Linear(mae.embed.out_features, n_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.mae.features(images))


# ----------------------------------------------------------------------------- FLOPs
def layer_flops(n: int, d: int) -> int:
    """Multiply-adds x 2 of one Transformer layer on n tokens of width d with a 4d FFN:
    QKV and output projections 8 n d^2, FFN 16 n d^2, scores and weighted sum 4 n^2 d
    (eq-03-flops)."""
    require("layer_flops", positive={"n": n, "d": d}, whole=True)
    return 24 * n * d * d + 4 * n * n * d  # (eq-03-flops)


def mae_flops(n: int = 196, d: int = 1024, depth: int = 24, mask_ratio: float = 0.75, dec_d: int = 512,
              dec_depth: int = 8) -> dict[str, float]:
    """FLOPs of MAE pre-training by (eq-03-flops): the encoder on all n tokens or on the
    int(n (1 - ratio)) visible ones, and the decoder on all n tokens. Defaults: ViT-L/16, 224 px."""
    require("mae_flops", unit={"mask_ratio": mask_ratio})
    k = max(1, int(n * (1 - mask_ratio)))
    enc_full = depth * layer_flops(n, d)
    enc_vis = depth * layer_flops(k, d)
    dec = dec_depth * layer_flops(n, dec_d) if dec_depth else 0
    return {"visible": k, "enc_full": enc_full, "enc_visible": enc_vis, "dec": dec,
            "encoder_speedup": enc_full / enc_vis, "total_speedup": (enc_full + dec) / (enc_vis + dec)}


# ----------------------------------------------------------------------------- the speaker task
@dataclass
class SpeakerTask:
    """Which of the K most frequent speakers of the play text says a speech.

    The K speakers are counted over the whole corpus (all three splits, in play order); the
    speeches of each speaker are cut, in order, into train / validation / test blocks of
    70 / 15 / 15 %, so every speaker is in every split and no split sees another's lines.
    `pretrain` holds the speech texts for MLM pre-training: the corpus' train split without the
    task's validation and test speeches (nor any speech with the same text); `heldout` is the
    corpus' validation split, for the MLM evaluation, without them too."""

    speakers: list[str]
    texts: dict[str, list[str]]
    labels: dict[str, list[int]]
    index: dict[str, list[int]]       # corpus positions (speech number in play order)
    pretrain: list[str]
    heldout: list[str]
    source: str

    def counts(self, split: str) -> list[int]:
        return [self.labels[split].count(k) for k in range(len(self.speakers))]


TASK_FRACTIONS = (0.7, 0.15, 0.15)


def speaker_task(k: int, fractions: tuple[float, float, float] = TASK_FRACTIONS) -> SpeakerTask:
    """Build the speaker task on Tiny Shakespeare (see `SpeakerTask`)."""
    from .data import contiguous_split, load_text

    require("speaker_task", positive={"k": k}, whole=True)
    parts = {s: load_text("tinyshakespeare", s) for s in ("train", "validation", "test")}
    corpus = [r for s in ("train", "validation", "test") for r in parts[s].records]
    n_train, n_val = len(parts["train"]), len(parts["validation"])
    counts = Counter(sp for sp, _ in corpus)
    if k > len(counts):
        raise ValueError(f"speaker_task: the corpus has {len(counts)} speakers, fewer than k={k}")
    top = [sp for sp, _ in sorted(counts.items(), key=lambda t: (-t[1], t[0]))[:k]]
    texts = {s: [] for s in ("train", "validation", "test")}
    labels = {s: [] for s in texts}
    index = {s: [] for s in texts}
    for lab, sp in enumerate(top):
        where = [i for i, (who, _) in enumerate(corpus) if who == sp]
        for s in texts:
            for i in where[contiguous_split(len(where), s, fractions)]:
                texts[s].append(corpus[i][1])
                labels[s].append(lab)
                index[s].append(i)
    for s in texts:  # play order inside each split
        order = sorted(range(len(index[s])), key=lambda j: index[s][j])
        texts[s] = [texts[s][j] for j in order]
        labels[s] = [labels[s][j] for j in order]
        index[s] = [index[s][j] for j in order]
    # no held-out speech, nor any speech with the same text (short ones recur), is pre-trained on
    held = set(texts["validation"]) | set(texts["test"])
    pretrain = [t for _, t in corpus[:n_train] if t not in held]
    heldout = [t for _, t in corpus[n_train:n_train + n_val] if t not in held]
    return SpeakerTask(top, texts, labels, index, pretrain, heldout, parts["train"].source)


def make_vocab(task: SpeakerTask, words: int):
    """The vocabulary of the pre-training text: [PAD], [UNK], [CLS], [MASK], its `words` most
    frequent words and every character (a word outside the list is spelled out)."""
    from .data import WordVocab

    return WordVocab.build(task.pretrain, words, specials=SPECIALS)


def encode_examples(texts: Sequence[str], vocab, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[CLS] + the first max_len - 1 tokens of each text, right-padded: (ids, pad)."""
    ids = torch.full((len(texts), max_len), PAD, dtype=torch.long)
    for i, t in enumerate(texts):
        e = [CLS] + vocab.encode(t)[:max_len - 1]
        ids[i, :len(e)] = torch.tensor(e)
    return ids, ids == PAD


def pretrain_windows(texts: Sequence[str], vocab, max_len: int) -> torch.Tensor:
    """The pre-training text (speeches joined by blank lines) cut into non-overlapping windows
    of max_len - 1 tokens, each after a [CLS]: (N, max_len)."""
    stream = torch.tensor(vocab.encode("\n\n".join(texts)), dtype=torch.long)
    w = max_len - 1
    n = len(stream) // w
    if n < 1:
        raise ValueError(f"pretrain_windows: {len(stream)} tokens make no window of {w}")
    win = stream[:n * w].view(n, w)
    return torch.cat([torch.full((n, 1), CLS, dtype=torch.long), win], 1)


# ----------------------------------------------------------------------------- MLM pre-training
def new_bert(cfg: Config, vocab_size: int, n_classes: int) -> TinyBert:
    return TinyBert(vocab_size, cfg.max_len, cfg.d_model, cfg.depth, cfg.heads, cfg.ffn, n_classes, cfg.local_init)


def mlm_step(cfg: Config, vocab_size: int, select: float | None = None):
    """A `Trainer` step: corrupt a batch by (eq-03-bert-rule), predict the selected characters."""
    sel = cfg.select if select is None else select

    def step(model: TinyBert, ids: torch.Tensor):
        maskable = ids >= len(SPECIALS)
        x, selected = bert_corrupt(ids, maskable, vocab_size, MASK, sel, cfg.split)
        loss = mlm_loss(model.mlm_logits(x, selected), ids[selected])
        return loss, {}
    return step


def pretrain_mlm(task: SpeakerTask, vocab, cfg: Config, seed: int = 0, select: float | None = None,
                 progress: bool = True, device=None):
    """Pre-train the tiny BERT with MLM on the task's pre-training text. Returns (model, history)."""
    dev = torch.device(device) if device is not None else default_device()
    torch.manual_seed(seed)
    model = new_bert(cfg, len(vocab), len(task.speakers))
    windows = pretrain_windows(task.pretrain, vocab, cfg.max_len)
    loader = ArrayLoader(windows, cfg.pretrain_batch, seed=seed, device=dev)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.pretrain_lr, weight_decay=0.01)
    warm = max(1, cfg.pretrain_steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / cfg.pretrain_steps))))
    tr = Trainer(model, opt, mlm_step(cfg, len(vocab), select), device=dev, scheduler=sched, grad_clip=1.0,
                 log_every=max(1, cfg.pretrain_steps // 50), progress=progress,
                 desc=f"MLM pre-training ({select if select is not None else cfg.select:.0%} selected)")
    hist = tr.fit(loader, steps=cfg.pretrain_steps)
    return tr.model.eval(), hist


@torch.no_grad()
def mlm_accuracy(model: TinyBert, texts: Sequence[str], vocab, cfg: Config, seed: int = 0,
                 select: float | None = None) -> dict[str, float]:
    """Accuracy and loss of the MLM head on the selected tokens of held-out windows, with a fixed
    corruption (seed). Returns the corrupted windows too, for `mlm_baselines`."""
    model.eval()
    dev = next(model.parameters()).device
    ids = pretrain_windows(texts, vocab, cfg.max_len).to(dev)
    g = torch.Generator(device=dev).manual_seed(seed)
    x, sel = bert_corrupt(ids, ids >= len(SPECIALS), len(vocab), MASK, cfg.select if select is None else select,
                          cfg.split, generator=g)
    correct, loss, n = 0, 0.0, 0
    for i in range(0, len(ids), 256):
        s = sel[i:i + 256]
        lg, tgt = model.mlm_logits(x[i:i + 256], s), ids[i:i + 256][s]
        correct += int((lg.argmax(-1) == tgt).sum())
        loss += float(F.cross_entropy(lg, tgt, reduction="sum"))
        n += int(s.sum())
    return {"accuracy": correct / max(n, 1), "loss": loss / max(n, 1), "n": n,
            "corrupted": x.cpu(), "selected": sel.cpu(), "ids": ids.cpu()}


def mlm_baselines(train_texts: Sequence[str], ids: torch.Tensor, x: torch.Tensor, selected: torch.Tensor,
                  vocab) -> dict[str, float]:
    """Accuracy on the same selected positions of two count models fitted on the pre-training
    text: the most frequent token, and the most frequent token between the same left and right
    neighbours (a trigram with the middle missing) as the corrupted input shows them."""
    s = np.asarray(vocab.encode("\n\n".join(train_texts)))
    uni = int(np.bincount(s, minlength=len(vocab)).argmax())
    between: dict[tuple[int, int], Counter] = {}
    for a, m, b in zip(s[:-2].tolist(), s[1:-1].tolist(), s[2:].tolist()):
        between.setdefault((a, b), Counter())[m] += 1
    best = {k: c.most_common(1)[0][0] for k, c in between.items()}
    ids, x, sel = ids.numpy(), x.numpy(), selected.numpy()
    rows, cols = np.nonzero(sel)
    inner = (cols > 0) & (cols < ids.shape[1] - 1)
    rows, cols = rows[inner], cols[inner]
    truth = ids[rows, cols]
    pred = np.array([best.get((int(l), int(r)), uni) for l, r in zip(x[rows, cols - 1], x[rows, cols + 1])])
    return {"unigram": float((truth == uni).mean()), "neighbours": float((pred == truth).mean())}


# ----------------------------------------------------------------------------- fine-tuning
def finetune_step(drop_rate: float):
    """A `Trainer` step on a batch (ids, pad, labels): trim the padding, apply DropToken at
    `drop_rate` (never dropping [CLS]) and take the cross-entropy of the [CLS] logits."""
    def step(model: TinyBert, batch):
        ids, pad, y = batch
        ids, pad = trim(ids, pad)
        ids, pos, pad = drop_tokens(ids, pad, drop_rate, protect=ids == CLS)
        return F.cross_entropy(model(ids, pos, pad), y), {}
    return step


@torch.no_grad()
def accuracy(model: TinyBert, ids: torch.Tensor, pad: torch.Tensor, y: torch.Tensor, batch: int = 256) -> float:
    """Classification accuracy with every token (no DropToken at test time)."""
    model.eval()
    dev = next(model.parameters()).device
    hits = 0
    for i in range(0, len(ids), batch):
        a, p = trim(ids[i:i + batch].to(dev), pad[i:i + batch].to(dev))
        hits += int((model(a, None, p).argmax(-1) == y[i:i + batch].to(dev)).sum())
    return hits / len(ids)


@dataclass
class FinetuneResult:
    """One fine-tuning run: accuracies at the epoch of best validation accuracy."""

    correction: bool
    drop_rate: float
    seed: int
    best_epoch: int
    train: float
    validation: float
    test: float
    curve: list[tuple[float, float]]   # (train, validation) per epoch
    seconds: float

    @property
    def gap(self) -> float:
        return self.train - self.validation


def finetune(state: dict | None, data: dict, cfg: Config, vocab_size: int, n_classes: int, seed: int = 0,
             correction: bool = False, drop_rate: float = 0.0, select: float | None = None, progress: bool = False,
             device=None) -> FinetuneResult:
    """Fine-tune on the speaker task from a pre-trained state (None: from scratch), optionally
    after the embedding correction (eq-03-correction, e_bar over the characters that random
    replacement draws; `select` is the pre-training selection rate, cfg.select by default) and
    with DropToken at `drop_rate`. `data[split] = (ids, pad, labels)`.
    Keeps the epoch with the best validation accuracy, as the post's baseline scripts do."""
    dev = torch.device(device) if device is not None else default_device()
    torch.manual_seed(seed)
    model = new_bert(cfg, vocab_size, n_classes)
    if state is not None:
        model.load_state_dict({k: v for k, v in state.items() if not k.startswith("cls_head")}, strict=False)
    if correction:
        if state is None:
            raise ValueError("finetune: the embedding correction needs a pre-trained state")
        sel = cfg.select if select is None else select
        model.tok.weight.data.copy_(corrected_embeddings(model.tok.weight, MASK, sel, cfg.split,
                                                         slice(len(SPECIALS), None)))
    model.to(dev)
    ids, pad, y = data["train"]
    loader = ArrayLoader((ids, pad, y), cfg.finetune_batch, seed=seed, device=dev)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.finetune_lr, weight_decay=0.01)
    tr = Trainer(model, opt, finetune_step(drop_rate), device=dev, grad_clip=1.0, log_every=len(loader),
                 progress=progress, desc=f"fine-tune r={drop_rate:g}{' +fix' if correction else ''}")
    t0 = time.perf_counter()
    best, curve = None, []
    for ep in range(1, cfg.finetune_epochs + 1):
        tr.fit(loader, steps=ep * len(loader))
        acc = {s: accuracy(model, *data[s]) for s in ("train", "validation", "test")}
        curve.append((acc["train"], acc["validation"]))
        if best is None or acc["validation"] > best[1]["validation"]:
            best = (ep, acc)
    ep, acc = best
    return FinetuneResult(correction, drop_rate, seed, ep, acc["train"], acc["validation"], acc["test"], curve,
                          time.perf_counter() - t0)


def task_tensors(task: SpeakerTask, vocab, cfg: Config) -> dict:
    """`data[split] = (ids, pad, labels)` for `finetune`."""
    out = {}
    for s in ("train", "validation", "test"):
        ids, pad = encode_examples(task.texts[s], vocab, cfg.max_len)
        out[s] = (ids, pad, torch.tensor(task.labels[s]))
    return out


def bag_of_tokens(texts: Sequence[str], vocab, max_len: int | None = None) -> np.ndarray:
    """Which tokens occur in each text (first `max_len` - 1 tokens, what the model sees): a
    bag-of-words baseline for logistic regression."""
    out = np.zeros((len(texts), len(vocab)), dtype=np.float32)
    for i, t in enumerate(texts):
        e = vocab.encode(t)
        out[i, e[:max_len - 1] if max_len else e] = 1.0
    return out


# ----------------------------------------------------------------------------- MAE experiments
def load_mnist(cfg: Config) -> dict:
    """The first `mae_train` training and `mae_test` test images (N, 1, 28, 28) in [0, 1]."""
    from .data import load, to_float

    tr = load("mnist", "train", limit=cfg.mae_train)
    te = load("mnist", "test", limit=cfg.mae_test)
    return {"x_train": to_float(tr.x), "y_train": torch.from_numpy(tr.y).long(),
            "x_test": to_float(te.x), "y_test": torch.from_numpy(te.y).long(),
            "source": f"train: {tr.source} ({len(tr)}); test: {te.source} ({len(te)})"}


def new_mae(cfg: Config) -> TinyMAE:
    return TinyMAE(28, cfg.patch, 1, cfg.mae_d, cfg.mae_depth, cfg.mae_heads, cfg.dec_d, cfg.dec_depth)


def pretrain_mae(x: torch.Tensor, cfg: Config, seed: int = 0, progress: bool = True, device=None):
    """MAE pre-training on images `x` at cfg.mae_mask. Returns (model, history)."""
    dev = torch.device(device) if device is not None else default_device()
    torch.manual_seed(seed)
    model = new_mae(cfg)
    loader = ArrayLoader(x, cfg.mae_batch, seed=seed, device=dev)
    steps = cfg.mae_epochs * len(loader)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.mae_lr, betas=(0.9, 0.95), weight_decay=0.05)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))

    def step(m, xb):
        return mae_forward(m, xb, cfg.mae_mask)[0], {}
    tr = Trainer(model, opt, step, device=dev, scheduler=sched, log_every=len(loader), progress=progress,
                 desc=f"MAE pre-training ({cfg.mae_mask:.0%} masked)")
    hist = tr.fit(loader, steps=steps)
    return tr.model.eval(), hist


@torch.no_grad()
def mae_eval(model: TinyMAE, x: torch.Tensor, mask_ratio: float, seed: int = 0, batch: int = 500) -> dict:
    """Masked-patch MSE on `x` with fixed masks, against two baselines: the mean training
    image's patch at each position (`mean_image`, pass it) is added by the caller; here the
    per-image mean of the visible pixels fills every masked patch."""
    model.eval()
    dev = next(model.parameters()).device
    g = torch.Generator(device=dev).manual_seed(seed)
    mse, base, n = 0.0, 0.0, 0
    for i in range(0, len(x), batch):
        xb = x[i:i + batch].to(dev)
        loss, pred, masked = mae_forward(model, xb, mask_ratio, g)
        tgt = patchify(xb, model.patch)
        vis_mean = (tgt * (~masked)[..., None]).sum((1, 2)) / ((~masked).sum(1) * tgt.shape[-1])
        base += float(mae_loss(vis_mean[:, None, None].expand_as(tgt), tgt, masked)) * len(xb)
        mse += float(loss) * len(xb)
        n += len(xb)
    return {"mse": mse / n, "visible_mean_baseline": base / n}


@torch.no_grad()
def mae_features(model: TinyMAE, x: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    model.eval()
    dev = next(model.parameters()).device
    return torch.cat([model.features(x[i:i + batch].to(dev)).cpu() for i in range(0, len(x), batch)])


def finetune_mae(state: dict | None, mnist: dict, cfg: Config, seed: int = 0, progress: bool = False,
                 device=None) -> float:
    """Fine-tune the MAE encoder on labels, every patch visible (no masking), from `state` (None:
    from scratch, the equal-budget baseline). Returns the test accuracy."""
    dev = torch.device(device) if device is not None else default_device()
    torch.manual_seed(seed)
    mae = new_mae(cfg)
    if state is not None:
        mae.load_state_dict(state)
    model = PatchClassifier(mae).to(dev)
    params = [p for n_, p in model.named_parameters() if not n_.startswith(("mae.dec", "mae.decoder", "mae.pred",
                                                                             "mae.mask_token"))]
    loader = ArrayLoader((mnist["x_train"], mnist["y_train"]), cfg.mae_batch, seed=seed, device=dev)
    opt = torch.optim.AdamW(params, lr=cfg.ft_lr, weight_decay=0.05)
    tr = Trainer(model, opt, lambda m, b: F.cross_entropy(m(b[0]), b[1]), device=dev, log_every=len(loader),
                 progress=progress, desc="fine-tune MAE encoder")
    tr.fit(loader, steps=cfg.ft_epochs * len(loader))
    model.eval()
    hits = 0
    with torch.no_grad():
        for i in range(0, len(mnist["x_test"]), 1000):
            hits += int((model(mnist["x_test"][i:i + 1000].to(dev)).argmax(-1).cpu()
                         == mnist["y_test"][i:i + 1000]).sum())
    return hits / len(mnist["x_test"])


# ----------------------------------------------------------------------------- timing (D8, D9)
def _median_times(fns: dict, steps: int, warmup: int) -> dict[str, float]:
    """Median seconds per call of each function, called round-robin (so that drifts in the
    machine's load hit every candidate alike), the order rotated every round (so that no
    candidate always runs right after the same one)."""
    for _ in range(warmup):
        for f in fns.values():
            f()
    times = {k: [] for k in fns}
    keys = list(fns)
    for i in range(steps):
        for k in keys[i % len(keys):] + keys[:i % len(keys)]:
            t0 = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def time_encoder(cfg: Config, fractions: Sequence[float] = (1.0, 0.25), seed: int = 0) -> dict[float, float]:
    """D8: median seconds of a forward + backward pass of the small encoder (time_d, time_depth,
    time_n tokens, time_batch) on a random `fraction` of the tokens (gathered, as MAE does)."""
    torch.manual_seed(seed)
    enc = Encoder(cfg.time_d, cfg.time_depth, cfg.heads, 4 * cfg.time_d)
    x = torch.randn(cfg.time_batch, cfg.time_n, cfg.time_d)

    def make(frac):
        idx = random_keep(cfg.time_batch, cfg.time_n, 1 - frac)
        def f():
            enc.zero_grad(set_to_none=True)
            xs = x.gather(1, idx[..., None].expand(-1, -1, cfg.time_d))
            enc(xs).pow(2).mean().backward()
        return f
    return _median_times({f: make(f) for f in fractions}, cfg.time_steps, cfg.time_warmup)


def time_droptoken(cfg: Config, rates: Sequence[float] = (0.0, 0.1, 0.25, 0.5), seed: int = 0) -> dict[float, float]:
    """D9: median seconds of one fine-tuning step (DropToken, forward, backward, AdamW) of a
    tiny BERT of the timing size on full-length sequences, at each drop rate."""
    torch.manual_seed(seed)
    n = cfg.time_n
    model = TinyBert(80, n, cfg.time_d, cfg.time_depth, cfg.heads, 4 * cfg.time_d, 4)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(len(SPECIALS), 80, (cfg.time_batch, n))
    ids[:, 0] = CLS
    pad = torch.zeros_like(ids, dtype=torch.bool)
    y = torch.randint(0, 4, (cfg.time_batch,))
    step = {r: finetune_step(r) for r in rates}

    def make(r):
        def f():
            loss, _ = step[r](model, (ids, pad, y))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return f
    return _median_times({r: make(r) for r in rates}, cfg.time_steps, cfg.time_warmup)



# ----------------------------------------------------------------------------- experiment drivers
@dataclass
class TextSetup:
    """The speaker task, its vocabulary and its tensors."""

    task: SpeakerTask
    vocab: object
    data: dict

    @property
    def n_classes(self) -> int:
        return len(self.task.speakers)


def text_setup(cfg: Config) -> TextSetup:
    task = speaker_task(cfg.speakers)
    vocab = make_vocab(task, cfg.vocab_words)
    return TextSetup(task, vocab, task_tensors(task, vocab, cfg))


def _progress(iterable, total: int, desc: str, on: bool):
    if not on:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False)


def _finetune_job(spec: dict) -> FinetuneResult:
    """One fine-tuning run (top level, so that spawned worker processes can run it)."""
    if spec["workers"] > 1:
        torch.set_num_threads(worker_threads(spec["workers"]))
    return finetune(spec["state"], spec["data"], spec["cfg"], spec["vocab_size"], spec["n_classes"],
                    seed=spec["seed"], correction=spec["correction"], drop_rate=spec["drop_rate"],
                    select=spec["select"])


def _run_finetunes(specs: list[dict], setup: TextSetup, cfg: Config, desc: str) -> list[FinetuneResult]:
    """`finetune` for every spec, in cfg.workers processes side by side (each seeds itself, so
    the runs do not depend on where they run)."""
    common = dict(data=setup.data, cfg=cfg, vocab_size=len(setup.vocab), n_classes=setup.n_classes,
                  workers=cfg.workers, select=None, correction=False, drop_rate=0.0)
    return run_jobs(_finetune_job, [{**common, **s} for s in specs], workers=cfg.workers, desc=desc)


def correction_runs(state: dict, setup: TextSetup, cfg: Config, select: float | None = None,
                    scratch: bool = True) -> dict[str, list[FinetuneResult]]:
    """D11: fine-tune from the same pre-trained state with and without the embedding correction
    (for a model pre-trained at selection rate `select`), seeds 0..cfg.seeds-1: the same seed
    gives both runs the same head and the same batches, a paired design. With `scratch`, also
    the same model from scratch, the equal-budget baseline without pre-training."""
    names = ("base", "corrected", "scratch") if scratch else ("base", "corrected")
    specs = [dict(name=name, seed=s, state=None if name == "scratch" else state, correction=name == "corrected",
                  select=select) for s in range(cfg.seeds) for name in names]
    results = _run_finetunes([{k: v for k, v in sp.items() if k != "name"} for sp in specs], setup, cfg,
                             "fine-tuning (D11)")
    out: dict[str, list[FinetuneResult]] = {name: [] for name in names}
    for sp, r in zip(specs, results):
        out[sp["name"]].append(r)
    return out


def droptoken_runs(state: dict, setup: TextSetup, cfg: Config,
                   base: Sequence[FinetuneResult] = ()) -> dict[float, list[FinetuneResult]]:
    """D12: fine-tune at every DropToken rate, seeds 0..cfg.sweep_seeds-1. Runs at rate 0 are
    taken from `base` (the uncorrected runs of D11, the same setting) when given."""
    reuse = {r.seed: r for r in base if r.drop_rate == 0 and not r.correction}
    out: dict[float, list[FinetuneResult]] = {
        r: [reuse[s] for s in range(cfg.sweep_seeds) if r == 0 and s in reuse] for r in cfg.drop_rates}
    specs = [dict(seed=s, state=state, drop_rate=r) for r in cfg.drop_rates for s in range(cfg.sweep_seeds)
             if not (r == 0 and s in reuse)]
    for sp, res in zip(specs, _run_finetunes(specs, setup, cfg, "fine-tuning (DropToken)")):
        out[sp["drop_rate"]].append(res)
    for r in out:
        out[r].sort(key=lambda x: x.seed)
    return out


def probe_scores(model: TinyMAE, mnist: dict, cfg: Config, seed: int = 0) -> dict[str, float]:
    """Linear-probe accuracy (dlbook.metrics.linear_probe) of the frozen encoder's mean-pooled
    features, all patches visible, against the same architecture at random initialisation."""
    from .metrics import linear_probe

    torch.manual_seed(seed + 1000)
    rand = new_mae(cfg).to(next(model.parameters()).device)
    out = {}
    for name, m in (("trained", model), ("random", rand)):
        ftr, fte = mae_features(m, mnist["x_train"]), mae_features(m, mnist["x_test"])
        out[name] = linear_probe(ftr, mnist["y_train"], fte, mnist["y_test"], seed=seed)
    return out


def mae_finetune_runs(state: dict, mnist: dict, cfg: Config, progress: bool = True) -> dict[str, list[float]]:
    """Fine-tune the pre-trained encoder without masking, and the same encoder from scratch
    (equal steps), seeds 0..cfg.ft_seeds-1: test accuracies."""
    jobs = [(name, s) for s in range(cfg.ft_seeds) for name in ("pre-trained", "scratch")]
    out: dict[str, list[float]] = {"pre-trained": [], "scratch": []}
    for name, s in _progress(jobs, len(jobs), "fine-tuning the MAE encoder", progress):
        out[name].append(finetune_mae(state if name == "pre-trained" else None, mnist, cfg, seed=s))
    return out


# ----------------------------------------------------------------------------- figures
def _fig(w: float, h: float, ncols: int = 1, nrows: int = 1):
    import matplotlib.pyplot as plt

    return plt.subplots(nrows, ncols, figsize=(w, h), squeeze=False)


def averages_figure(a: float, p: float, x0: float = 0.4):
    """Weight average tanh(a x), exact model average and its Taylor approximation, over x."""
    xs = np.linspace(-1.0, 1.0, 201)
    t = tanh_averages(a, xs, p)
    t0 = tanh_averages(a, x0, p)
    fig, ax = _fig(6.0, 3.2)
    ax = ax[0, 0]
    ax.plot(xs, t["weight"], label="weight average f(x)")
    ax.plot(xs, t["model"], "--", label="model average E f(x eps/p)")
    ax.plot(xs, t["taylor"], ":", label="2nd-order Taylor")
    ax.plot([x0, x0], [t0["model"], t0["weight"]], "k-", lw=2)
    ax.set_xlabel("x")
    ax.set_ylim(-1.6, 1.6)
    ax.set_title(f"f(z) = tanh({a:g} z), keep p = {p:g}: gap at x = {x0:g} is "
                 f"{float(t0['weight'] - t0['model']):.3f}", fontsize=10)
    ax.legend(loc="lower right", fontsize=9)
    return fig


def expected_input_figure(select: float, split: Sequence[float]):
    """Where the expected MLM input sits between e_i, e_[MASK] and the mean row e_bar (a 2-D
    picture with fixed points), with the coefficients of (eq-03-expected-input)."""
    ct, cm, cr = correction_coefficients(select, split)
    e_i, e_m, e_bar = np.array([1.0, 0.1]), np.array([-0.6, 0.9]), np.array([-0.2, -0.7])
    mean = ct * e_i + cm * e_m + cr * e_bar
    fig, ax = _fig(6.0, 3.4)
    ax = ax[0, 0]
    tri = np.stack([e_i, e_m, e_bar, e_i])
    ax.plot(tri[:, 0], tri[:, 1], color="0.8", lw=1)
    for pt, name in ((e_i, "$e_i$ (fine-tuning input)"), (e_m, "$e_{[MASK]}$"), (e_bar, r"$\bar e$")):
        ax.plot(*pt, "o", ms=8)
        ax.annotate(name, pt, textcoords="offset points", xytext=(6, 6))
    ax.plot(*mean, "k*", ms=14)
    ax.annotate("expected pre-training input\n= corrected embedding", mean, textcoords="offset points",
                xytext=(-60, -34), fontsize=9)
    ax.set_aspect("equal")
    ax.set_xlim(-1.1, 1.6)
    ax.set_ylim(-1.0, 1.2)
    ax.set_title(f"selected {select:.0%}, split {split[0]:.0%}/{split[1]:.0%}/{split[2]:.0%}: "
                 f"{ct:.3f} e_i + {cm:.3f} e_[MASK] + {cr:.3f} e_bar", fontsize=10)
    return fig


def attention_panels(A: torch.Tensor, keep: torch.Tensor, model_avg: torch.Tensor | None = None):
    """A, A (x) M, Norm(A (x) M) and, when given, the model average E Norm(A (x) M~)."""
    M = keep.to(A.dtype).expand_as(A)
    panels = [(A, "A"), (A * M, "A ⊗ M"), (renormalise(A, M), "Norm(A ⊗ M)")]
    if model_avg is not None:
        panels.append((model_avg, "E Norm(A ⊗ M~)"))
    fig, axes = _fig(2.45 * len(panels), 2.8, ncols=len(panels))
    vmax = float(max(p.max() for p, _ in panels))
    for ax, (P, title) in zip(axes[0], panels):
        ax.imshow(P.numpy(), cmap="viridis", vmin=0, vmax=vmax)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("key")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
    axes[0, 0].set_ylabel("query")
    return fig


def flops_table_html(name: str, n: int, d: int, depth: int, dec_d: int, dec_depth: int, ratio: float) -> str:
    """The FLOP calculator's page for one model and mask ratio (eq-03-flops)."""
    f = mae_flops(n, d, depth, ratio, dec_d, dec_depth)
    g = lambda v: f"{v / 1e9:,.2f}" if v >= 1e7 else f"{v / 1e6:,.3f} M"
    rows = [("tokens seen by the encoder", f"{f['visible']} of {n}"),
            ("encoder on all tokens (GFLOPs)", g(f["enc_full"])),
            ("encoder on the visible tokens (GFLOPs)", g(f["enc_visible"])),
            (f"decoder, {dec_depth} x {dec_d} wide, all tokens (GFLOPs)", g(f["dec"])),
            ("encoder speed-up", f"{f['encoder_speedup']:.2f}x"),
            ("speed-up with the decoder", f"{f['total_speedup']:.2f}x")]
    body = "".join(f"<tr><td style='padding:2px 12px 2px 0'>{a}</td><td style='text-align:right'>{b}</td></tr>"
                   for a, b in rows)
    return (f"<div><b>{name}</b>: depth {depth}, width {d}, mask ratio {ratio:.0%}"
            f"<table style='margin-top:4px'>{body}</table></div>")


def droptoken_figure(text: str, vocab, rate: float = 0.4, seed: int = 3, max_tokens: int = 16):
    """The first tokens of a speech with their position ids: as input, after DropToken (the
    survivors keep their ids) and after deletion (renumbered ids)."""
    ids = torch.tensor([[CLS] + vocab.encode(text)[:max_tokens - 1]])
    pad = torch.zeros_like(ids, dtype=torch.bool)
    new, pos, _ = drop_tokens(ids, pad, rate, protect=ids == CLS, generator=torch.Generator().manual_seed(seed))
    rows = [("input", ids[0].tolist(), list(range(ids.shape[1]))),
            ("DropToken", new[0].tolist(), pos[0].tolist()),
            ("deletion", new[0].tolist(), list(range(new.shape[1])))]
    name = lambda t: "[CLS]" if t == CLS else vocab.itos[t].replace("\n", "\u23ce")
    width = lambda t: 0.085 * max(len(name(t)), 2) + 0.12      # inches per token at 9 pt
    total = sum(width(t) for t in rows[0][1])
    fig, ax = _fig(min(10.0, total + 1.3), 2.3)
    ax = ax[0, 0]
    for r, (label, toks, ps) in enumerate(rows):
        y, x = -r, 0.0
        ax.text(-0.1, y, label, ha="right", va="center", fontsize=10)
        for j, (t, p) in enumerate(zip(toks, ps)):
            w = width(t)
            ax.text(x + w / 2, y + 0.14, name(t), ha="center", va="center", fontsize=9, family="monospace")
            ax.text(x + w / 2, y - 0.24, str(p), ha="center", va="center", fontsize=9,
                    color="C3" if label != "input" and p != j else "0.45")
            x += w
    ax.set_xlim(-1.2, total)
    ax.set_ylim(-2.55, 0.5)
    ax.axis("off")
    return fig


def reconstruction_figure(model: TinyMAE, images: torch.Tensor, mask_ratio: float, seed: int = 0):
    """Rows: the image, what the encoder sees (masked patches grey), the decoder's output, and
    the output with the visible patches pasted back."""
    from .plots import make_grid

    g = torch.Generator().manual_seed(seed)
    model.eval()
    with torch.no_grad():
        _, pred, masked = mae_forward(model, images, mask_ratio, g)
    tgt = patchify(images, model.patch)
    shown = torch.where(masked[..., None], torch.full_like(tgt, 0.5), tgt)
    pasted = torch.where(masked[..., None], pred.clamp(0, 1), tgt)
    rows = [images, unpatchify(shown, model.patch), unpatchify(pred.clamp(0, 1), model.patch),
            unpatchify(pasted, model.patch)]
    names = ["image", f"visible ({1 - mask_ratio:.0%})", "reconstruction", "visible + reconstructed"]
    fig, axes = _fig(8.0, 4.6, nrows=4)
    for ax, r, name in zip(axes[:, 0], rows, names):
        ax.imshow(make_grid(r, nrow=len(images), padding=1)[..., 0], cmap="gray", vmin=0, vmax=1)
        ax.set_axis_off()
        ax.set_title(name, fontsize=10, loc="left")
    return fig
