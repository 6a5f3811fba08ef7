"""Chapter 01, figures: retrieval grids, the Gaussian toy's critic and one run's summary."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from .experiments import InfomaxRun
from .identities import LOG2


def retrieval_figure(images: np.ndarray, labels: np.ndarray, rows: Sequence[Sequence[int]],
                     row_names: Sequence[str] = (), class_names: Sequence[str] = (), title: str = "",
                     tile: float = 0.62):
    """Rows of images (a query followed by its neighbours, the query framed in red), each row
    tiled by `dlbook.plots.make_grid`; each tile's label is green when it matches the first
    image of its row, and each row says which fraction of the neighbours shares the query's label."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from ..plots import make_grid

    rows = [list(map(int, r)) for r in rows]
    k = max(len(r) for r in rows)
    h, w = images.shape[1:3]
    pad = 2
    left = 1.5 if row_names else 0.7
    head = 0.45 if title else 0.2   # inches above the first row: the title and the first row's labels
    height = head + tile * 1.3 * len(rows)
    fig, axes = plt.subplots(len(rows), 1, figsize=(left + tile * k, height), squeeze=False)
    for ax, row, r in zip(axes[:, 0], rows, range(len(rows))):
        ax.imshow(make_grid(images[row], nrow=k, padding=pad), interpolation="nearest")
        ax.set_axis_off()
        ax.add_patch(Rectangle((pad - 1, pad - 1), w + 1, h + 1, fill=False, ec="tab:red", lw=1.5))
        for c, j in enumerate(row):
            name = class_names[labels[j]] if len(class_names) else str(labels[j])
            ax.text(pad + c * (w + pad) + w / 2, -1, name, ha="center", va="bottom", fontsize=7,
                    color="tab:green" if labels[j] == labels[row[0]] else "0.35", clip_on=False)
        same = float(np.mean(labels[row[1:]] == labels[row[0]])) if len(row) > 1 else float("nan")
        text = (row_names[r] + "\n" if row_names else "") + f"{same:.0%} same"
        ax.text(-3, pad + h / 2, text, ha="right", va="center", fontsize=8, clip_on=False)
    if title:
        fig.suptitle(title, fontsize=10, y=1 - 0.05 / height, va="top")
    fig.subplots_adjust(left=left / (left + tile * k), right=0.99, top=1 - head / height, bottom=0.01,
                        hspace=0.35)
    return fig


def toy_figure(res: dict, k: int):
    """One panel set per correlation: joint vs shuffled samples, and the MLP critic's T(x, z)
    next to the true log-ratio log p(x,z)/(p(x)p(z))."""
    import matplotlib.pyplot as plt

    rho = res["rho"][k]
    x, z, zn = res["samples"][k]
    fig, ax = plt.subplots(1, 3, figsize=(10, 3.3), gridspec_kw={"wspace": 0.45})
    ax[0].scatter(x, zn, s=4, alpha=0.5, c="tab:orange", label="shuffled (negatives)")
    ax[0].scatter(x, z, s=4, alpha=0.5, c="tab:blue", label="joint (positives)")
    ax[0].set(xlim=(-3.5, 3.5), ylim=(-3.5, 3.5), xlabel="x", ylabel="z", title=f"samples, rho = {rho:g}")
    ax[0].legend(loc="upper left", fontsize=7, markerscale=3)
    g = np.linspace(-3, 3, 121)
    gx, gz = np.meshgrid(g, g)
    with torch.no_grad():
        t = res["critics"][k](torch.as_tensor(gx.ravel(), dtype=torch.float32),
                              torch.as_tensor(gz.ravel(), dtype=torch.float32)).numpy().reshape(gx.shape)
    r2 = 1 - rho * rho
    true = -0.5 * math.log(r2) - (gx ** 2 - 2 * rho * gx * gz + gz ** 2) / (2 * r2) + (gx ** 2 + gz ** 2) / 2
    lv = np.linspace(-4, 4, 17)
    for a, f, title in ((ax[1], t, "learned critic T(x, z)"), (ax[2], true, "true log-ratio")):
        cs = a.contourf(gx, gz, np.clip(f, -4, 4), levels=lv, cmap="RdBu_r")
        a.set(xlabel="x", ylabel="z", title=title)
        a.grid(False)
    fig.colorbar(cs, ax=ax[1:], shrink=0.85)
    fig.suptitle(f"true I = {res['true'][k]:.3f} nats;  plug-in estimates E_joint[T]: "
                 f"quadratic {res['quad'][k]:.3f}, MLP {res['mlp'][k]:.3f}", fontsize=10, y=1.02)
    return fig


def run_figure(run: InfomaxRun, scores: dict | None = None):
    """A summary of one precomputed run for the dropdown: the three loss terms per logged
    step and the mean log sigma^2, with its feature scores in the title."""
    import matplotlib.pyplot as plt

    h = run.history
    fig, ax = plt.subplots(1, 2, figsize=(9.5, 3.3))
    for key, c in (("global", "tab:blue"), ("local", "tab:orange"), ("kl", "tab:green")):
        ax[0].plot(h.steps, h[key], c=c, label=f"{key} term")
    ax[0].axhline(2 * LOG2, ls="--", c="0.5", lw=1, label="2 log 2")
    ax[0].set(xlabel="step", ylabel="loss term", ylim=(0, max(2.0, min(6.0, max(h["kl"]) * 1.05))))
    ax[0].legend(fontsize=8)
    ax[1].plot(h.steps, h["logvar"], c="tab:purple")
    ax[1].set(xlabel="step", ylabel="mean log sigma^2")
    t = f"{run.name}, seed {run.seed}"
    if scores:
        probe = f", probe {scores['probe_acc']:.3f}" if "probe_acc" in scores else ""
        t += (f"\nk-NN acc {scores['knn_acc']:.3f}, top-10 agreement {scores['agreement']:.3f}{probe}, "
              f"aggregate var {scores.get('agg_var', float('nan')):.2f}")
    fig.suptitle(t, fontsize=9)
    fig.tight_layout()
    return fig

