"""The encoder with attention dropout, the tiny BERT and DropToken, the tiny MAE, FLOPs."""
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
        self.seg = nn.Embedding(2, d)          # segment: 0 for [CLS] and the first line, 1 after [SEP]
        nn.init.normal_(self.tok.weight, std=0.02)
        nn.init.normal_(self.seg.weight, std=0.02)
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

    def hidden(self, ids: torch.Tensor, pos: torch.Tensor | None = None, pad: torch.Tensor | None = None,
               seg: torch.Tensor | None = None):
        if ids.ndim != 2:
            raise ValueError(f"TinyBert: expected (batch, length) ids, got shape {tuple(ids.shape)}")
        if pos is None:
            if ids.shape[1] > self.max_len:
                raise ValueError(f"TinyBert: {ids.shape[1]} tokens, more than max_len={self.max_len}")
            pos = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
        x = self.tok(ids) + self.pos(pos)
        if seg is not None:
            x = x + self.seg(seg)
        return self.encoder(x, None if pad is None else ~pad)

    def mlm_logits(self, ids, selected: torch.Tensor | None = None, pos=None, pad=None, seg=None) -> torch.Tensor:
        """MLM logits (B, n, V), or (|S|, V) at the `selected` positions only."""
        h = self.hidden(ids, pos, pad, seg)
        return self.mlm_head(h if selected is None else h[selected])

    def forward(self, ids, pos=None, pad=None, seg=None) -> torch.Tensor:
        """Class logits from the output at [CLS] (the first token)."""
        return self.cls_head(self.hidden(ids, pos, pad, seg)[:, 0])


def drop_tokens(ids: torch.Tensor, pad: torch.Tensor, rate: float, protect: torch.Tensor | None = None,
                generator: torch.Generator | None = None, exact: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DropToken (eq-03-droptoken): drop each real, unprotected token with probability `rate`
    (a *drop* rate, independently per sequence), keep the survivors in order **with their
    original position ids**, and re-pad to the longest kept length of the batch (where the
    speed-up comes from). Returns (ids, pos, pad). With rate 0 on a batch trimmed to its
    longest row, the output is the input itself (pos = 0..n-1).

    With `exact`, each row drops exactly round(rate x its droppable tokens) (a fixed count,
    as MAE does): rows of equal length stay of equal length, so nothing is re-padded."""
    if ids.shape != pad.shape:
        raise ValueError(f"drop_tokens: ids {tuple(ids.shape)} and pad {tuple(pad.shape)} differ")
    require("drop_tokens", unit={"rate": rate})
    if rate >= 1:
        raise ValueError("drop_tokens: rate must be < 1 (a sequence needs a token left)")
    real = ~pad
    droppable = real if protect is None else real & ~protect
    u = torch.rand(ids.shape, generator=generator, device=ids.device)
    if exact:
        k = torch.round(droppable.sum(1, keepdim=True) * rate).long()          # tokens to drop per row
        rank = u.masked_fill(~droppable, 2.0).argsort(1).argsort(1)            # rank among droppable
        keep = real & ~(droppable & (rank < k))
    else:
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
