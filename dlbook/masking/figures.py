"""The chapter's figures."""
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
from .settings import *  # noqa: F403
from .dropout import *  # noqa: F403
from .models import *  # noqa: F403

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


def droptoken_figure(pair: tuple[str, str], vocab, line_len: int = 7, rate: float = 0.4, seed: int = 3):
    """A couplet's tokens with their position ids: as input, after DropToken (the survivors keep
    their ids) and after deletion (renumbered ids). Character j of the first line is drawn as
    a_j and of the second as b_j (the figure needs no Chinese font)."""
    from .text import encode_pairs

    ids, pad, pos, seg = encode_pairs([pair], vocab, line_len)
    n = int((~pad).sum())
    ids, pad, pos, seg = ids[:, :n], pad[:, :n], pos[:, :n], seg[:, :n]
    new, order, _ = drop_tokens(ids, pad, rate, protect=(ids == CLS) | (ids == SEP),
                                generator=torch.Generator().manual_seed(seed))
    label = ["[CLS]" if t == CLS else "[SEP]" if t == SEP else f"{'ab'[int(g)]}{int(p)}"
             for t, p, g in zip(ids[0].tolist(), pos[0].tolist(), seg[0].tolist())]
    kept = order[0].tolist()
    rows = [("input", label, pos[0].tolist()),
            ("DropToken", [label[k] for k in kept], [int(pos[0, k]) for k in kept]),
            ("deletion", [label[k] for k in kept], list(range(len(kept))))]
    w = 0.5
    total = w * n
    fig, ax = _fig(min(10.0, total + 1.3), 2.3)
    ax = ax[0, 0]
    for r, (name, toks, ps) in enumerate(rows):
        y = -r
        ax.text(-0.1, y, name, ha="right", va="center", fontsize=10)
        for j, (t, p) in enumerate(zip(toks, ps)):
            x = j * w + w / 2
            ax.text(x, y + 0.14, t, ha="center", va="center", fontsize=9, family="monospace")
            moved = name == "deletion" and p != rows[1][2][j]
            ax.text(x, y - 0.24, str(p), ha="center", va="center", fontsize=9, color="C3" if moved else "0.45")
    ax.set_xlim(-1.2, total)
    ax.set_ylim(-2.55, 0.5)
    ax.axis("off")
    return fig


def reconstruction_figure(model: TinyMAE, images: torch.Tensor, mask_ratio: float, seed: int = 0):
    """Rows: the image, what the encoder sees (masked patches grey), the decoder's output, and
    the output with the visible patches pasted back."""
    from ..plots import make_grid

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
