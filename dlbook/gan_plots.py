"""Plots of GAN runs: generated 2-D points, a critic's field with its gradient-norm contours,
and image-metric curves over seeds."""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
from torch import nn

from . import gan

if TYPE_CHECKING:
    from .gan_runs import ImageResult


# ======================================================================== summaries and plots


def plot_samples(ax, fake, data: gan.Toy2D | None = None, real=None, title: str | None = None,
                 lim: float | None = None):
    """Scatter of generated points (and real points / mode centres, if given)."""
    fake = np.asarray(fake)
    if real is not None:
        real = np.asarray(real)
        ax.scatter(real[:, 0], real[:, 1], s=2, c="0.7", label="real")
    ax.scatter(fake[:, 0], fake[:, 1], s=2, c="C0", alpha=0.5, label="generated")
    if data is not None and data.centres is not None:
        ax.scatter(data.centres[:, 0], data.centres[:, 1], marker="x", c="k", s=25, label="modes")
    lim = lim or (data.lim if data is not None else None)
    if lim:
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    if title:
        ax.set_title(title)
    return ax


def critic_field(T: nn.Module, lim: float, n: int = 121) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(grid axis, T on the grid, ||grad T|| on the grid) over [-lim, lim]^2."""
    u = torch.linspace(-lim, lim, n)
    xx, yy = torch.meshgrid(u, u, indexing="xy")
    pts = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)
    dev = next(T.parameters()).device
    was = T.training
    T.eval()
    pts = pts.to(dev).requires_grad_(True)
    out = gan.as_float32(T(pts))
    (g,) = torch.autograd.grad(out.sum(), pts)
    T.train(was)
    return (u.numpy(), out.detach().cpu().reshape(n, n).numpy(), g.norm(dim=1).cpu().reshape(n, n).numpy())


def plot_critic(ax, field_, fake=None, data: gan.Toy2D | None = None, levels: Sequence[float] = (0.5, 1.0, 2.0),
                title: str | None = None, colorbar: bool = False):
    """Heat map of the critic with labelled contours of its gradient norm."""
    u, t, gn = field_
    im = ax.imshow(t, extent=(u[0], u[-1], u[0], u[-1]), origin="lower", cmap="viridis")
    cs = ax.contour(u, u, gn, levels=sorted(set(levels)), colors="w", linewidths=0.8)
    ax.clabel(cs, fmt="|∇T|=%g", fontsize=9)
    if fake is not None:
        f = np.asarray(fake)
        ax.scatter(f[:, 0], f[:, 1], s=1, c="r", alpha=0.3)
    if data is not None and data.centres is not None:
        ax.scatter(data.centres[:, 0], data.centres[:, 1], marker="x", c="k", s=20)
    ax.set_xlim(u[0], u[-1])
    ax.set_ylim(u[0], u[-1])
    ax.set_aspect("equal")
    ax.grid(False)
    if title:
        ax.set_title(title)
    if colorbar:
        ax.figure.colorbar(im, ax=ax, fraction=0.046)
    return ax


def plot_image_curves(result: ImageResult, key: str = "fd", x: str = "step", ax=None, floor: bool = True,
                      log: bool = True):
    """Mean over seeds (line) and min-max over seeds (band) of ``key`` ('fd', 'kid', 'confident') against
    generator ``step`` or training wall time (``x='seconds'``), one line per method; the floor
    of held-out real images as a dotted line."""
    import matplotlib.pyplot as plt

    if x not in ("step", "seconds"):
        raise ValueError(f"plot_image_curves: x must be 'step' or 'seconds', got {x!r}")
    ax = ax or plt.subplots(figsize=(5, 3.4))[1]
    for i, name in enumerate(result.names):
        rs = [result.runs[(name, s)] for s in result.seeds(name)]
        ys = np.array([r.curve(key)[1] for r in rs])
        xs = np.array([r.curve(key)[0] if x == "step" else np.array(r.evals["seconds"]) for r in rs]).mean(0)
        ax.plot(xs, ys.mean(0), "o-", ms=3, c=f"C{i}", label=f"{name} ({len(rs)} seed{'s' * (len(rs) > 1)})")
        if len(rs) > 1:
            ax.fill_between(xs, ys.min(0), ys.max(0), color=f"C{i}", alpha=0.2)
    if floor and result.metric and key in result.metric.get("floor", {}):
        ax.axhline(result.metric["floor"][key], c="k", ls=":", lw=0.8, label="held-out real images")
    names = {"fd": result.metric.get("name", "FD") if result.metric else "FD",
             "kid": result.metric.get("kid_name", "KID") if result.metric else "KID",
             "confident": "share read as one class (p ≥ 0.9)"}
    ax.set_ylabel(names.get(key, key))
    ax.set_xlabel("generator step" if x == "step" else "training wall time (s)")
    if log:
        ax.set_yscale("log")
    ax.legend(fontsize=9)
    return ax
