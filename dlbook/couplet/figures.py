"""Chapter 04's figures and the receptive-field probes behind them."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from .model import CNNTagger


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
    characters of `line` on both axes, with the analytic band |t - s| <= R outlined (orange on black)."""
    import matplotlib.pyplot as plt

    n = len(line)
    rows = -(-len(mats) // ncols)
    fig, axes = plt.subplots(rows, ncols, figsize=(4.6 * ncols, 4.2 * rows), squeeze=False)
    for ax, m, title, R in zip(axes.flat, mats, titles, radii):
        v = m.numpy().copy()
        v[v <= 0] = np.nan  # exactly unchanged: blank
        im = ax.imshow(np.log10(v), cmap="viridis", origin="upper")
        ax.set_facecolor("0.93")  # unchanged cells: light grey, so the outline shows on them too
        left = [(max(0, s_ - R) - 0.5, y) for s_ in range(n) for y in (s_ - 0.5, s_ + 0.5)]
        right = [(min(n - 1, s_ + R) + 0.5, y) for s_ in range(n) for y in (s_ - 0.5, s_ + 0.5)]
        xs, ys = zip(*(left + right[::-1] + left[:1]))  # the band |t - s| <= R as one closed outline
        ax.plot(xs, ys, color="k", lw=2.2)
        ax.plot(xs, ys, color="#ff5a36", lw=1.1)
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


def plot_training(runs: Sequence, lookup_acc: float | None = None, threshold: float | None = None):
    """Left: validation and test cross-entropy and the mean training loss per seed, the kept
    (best validation) step marked; right: per-character test accuracy under the copy prior and
    the post's, with the lookup table's."""
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9.8, 3.9))
    for k, r in enumerate(runs):
        lab = k == 0
        a1.plot(r.steps, [t["ce"] for t in r.test], "o-", color="C0", ms=3, label="test" if lab else None)
        if r.val_ce:
            a1.plot(r.steps, r.val_ce, "^-", color="C4", ms=3, label="validation" if lab else None)
        a1.plot(r.steps[1:], r.train_loss[1:], "s--", color="C1", ms=3, label="training (dropout on)" if lab else None)
        a1.axvline(r.best_step, color="0.5", lw=0.8, ls="--", label="kept weights (lowest validation)" if lab else None)
        a2.plot(r.steps, [100 * t["acc_copy"] for t in r.test], "o-", color="C2", ms=3,
                label="copy prior" if lab else None)
        a2.plot(r.steps, [100 * t["acc_post"] for t in r.test], "o-", color="C3", ms=3,
                label="post's prior" if lab else None)
        a2.axvline(r.best_step, color="0.5", lw=0.8, ls="--")
    if threshold is not None:
        a1.axhline(threshold, color="gray", lw=0.8, ls=":", label=f"C9a threshold {threshold:g}")
    if lookup_acc is not None:
        a2.axhline(100 * lookup_acc, color="k", lw=0.8, ls=":", label="lookup table")
    a1.set_xlabel("step")
    a1.set_ylabel("cross-entropy (nats / character)")
    a1.set_ylim(top=min(9.0, a1.get_ylim()[1]))
    a2.set_xlabel("step")
    a2.set_ylabel("character accuracy (%)")
    a1.legend(fontsize=8)
    a2.legend(fontsize=8)
    fig.suptitle(f"{len(runs)} seed{'s' if len(runs) > 1 else ''}, each until its validation loss turns", fontsize=10)
    fig.tight_layout()
    return fig


def plot_scaling(sc, cross: dict | None = None):
    """Test accuracy (copy prior) of the CNN at its best checkpoint and of the lookup table
    against the number of training pairs (log scale), one line per seed, with the fitted
    lines extended to the crossover estimate."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.6, 3.8))
    n = np.asarray(sc.sizes, float)
    cnn, look = 100 * sc.acc("cnn"), 100 * sc.acc("lookup")
    for k in range(cnn.shape[1]):
        ax.plot(n, cnn[:, k], "o-", color="C0", ms=4, alpha=0.8, label="gated CNN (best checkpoint)" if k == 0 else None)
        ax.plot(n, look[:, k], "s-", color="k", ms=4, alpha=0.8, label="lookup table" if k == 0 else None)
    if cross is not None:
        top = max(n.max() * 4, min(cross["at"], cross["n_star"] * 2 if np.isfinite(cross["n_star"]) else cross["at"]))
        grid = np.geomspace(n.min(), top, 50)
        from .training import loglinear

        for vals, col in ((cnn, "C0"), (look, "k")):
            a, b = loglinear(sc.sizes, vals).mean(0)
            ax.plot(grid, a + b * np.log2(grid), ls=":", color=col, lw=1)
        if np.isfinite(cross["n_star"]) and cross["n_star"] <= top:
            ax.axvline(cross["n_star"], color="C3", lw=0.8, ls="--", label=f"fitted crossover ~{cross['n_star']:,.0f}")
    ax.set_xscale("log")
    ax.set_xticks(n, [f"{int(v):,}" for v in n])
    ax.minorticks_off()
    ax.set_xlabel("training pairs")
    ax.set_ylabel("test character accuracy (%)")
    ax.legend(fontsize=8)
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

