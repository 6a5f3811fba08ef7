"""Dropout algebra, BERT's corruption and the embedding correction, attention dropout."""
from __future__ import annotations

import math
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import Settings, by_profile, device as default_device, require, worker_threads
from .settings import SPECIALS, PAD, UNK, CLS, MASK

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
    try:
        shape = torch.broadcast_shapes(x.shape, eps.shape)
    except RuntimeError:
        shape = None
    if shape != eps.shape:  # one draw of eps per entry of x (leading sample dimensions allowed)
        raise ValueError(f"dropout: eps {tuple(eps.shape)} must hold one draw per entry of x {tuple(x.shape)} "
                         "(x's shape, optionally with leading sample dimensions); a smaller eps would be "
                         "shared between entries")
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
    require("bert_corrupt", unit={"select": select, "split": tuple(split)}, nonneg={"random_low": random_low})
    if vocab_size <= random_low:
        raise ValueError(f"bert_corrupt: random tokens are drawn from ids [random_low, vocab_size) = "
                         f"[{random_low}, {vocab_size}), which is empty; vocab_size must exceed random_low")
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
    total = AM.sum(-1, keepdim=True)
    if bool((total == 0).any()):
        raise ValueError(f"renormalise: {int((total == 0).sum())} row(s) of A (x) M keep no weight (an all-zero "
                         "mask row): their renormalisation is undefined; keep at least one key per row")
    return AM / total  # (eq-03-attention-dropout)
