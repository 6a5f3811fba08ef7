"""Plot helpers with one consistent style: image grids (no torchvision needed), PNG bytes of a
figure, and figure sizes that fit the book's column. The GAN plots are in `dlbook.gan_plots`."""
from __future__ import annotations

import io
import math
import matplotlib
import numpy as np

STYLE = {
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "figure.figsize": (6.4, 4.0),
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "font.size": 10,
    "legend.frameon": False,
    "image.cmap": "gray",
}


# Figure sizes for the book's column. The book shows a figure at its natural size (PNG pixels as
# CSS pixels) and scales a wider one down to the text column, so a 10 pt label on a figure
# `width_in` inches wide ends up 10/72 * COLUMN_PX / width_in screen pixels tall, whatever the dpi.
# The browser check (.ci/browser_check.py) fails a figure whose 10 pt label is under MIN_LABEL_PX.

#: Width of the text column in CSS px (sphinx-book-theme in a 1280 px window, as measured).
COLUMN_PX = 688
#: The smallest screen size, in px, of a 10 pt label that the book accepts.
MIN_LABEL_PX = 8.0
#: A figure this wide (inches) fills the column with 10 pt labels at about 13.7 px.
COLUMN_IN = 7.0
#: The widest figure (inches, any dpi) whose 10 pt labels stay >= MIN_LABEL_PX in the column
#: (10/72 * COLUMN_PX / MIN_LABEL_PX = 11.9 in), less 0.4 in that `bbox_inches="tight"` may add
#: for titles and legends outside the axes.
MAX_WIDTH_IN = 11.5
#: A panel narrower than this (inches) has no room for 10 pt tick labels.
MIN_PANEL_IN = 2.3


def label_px(width_in: float, dpi: float = 100.0, pt: float = 10.0, column_px: float = COLUMN_PX) -> float:
    """Screen px of a `pt` label on a figure `width_in` inches wide saved at `dpi`, shown at its
    natural width or, if wider, at the column's width (what the browser check measures)."""
    if width_in <= 0 or dpi <= 0:
        raise ValueError(f"label_px: need a positive width and dpi, got {width_in} in at {dpi} dpi")
    natural = width_in * dpi
    return pt / 72 * dpi * min(natural, column_px) / natural


def figsize(ncols: int = 1, nrows: int = 1, aspect: float = 0.7) -> tuple[float, float]:
    """`figsize` for a grid of `ncols` x `nrows` panels that is legible in the book's column.

    The width is the column's (COLUMN_IN) or, for more panels than fit there at MIN_PANEL_IN
    each, ncols * MIN_PANEL_IN up to MAX_WIDTH_IN; `aspect` is each panel's height / width.
    ``fig, axes = plt.subplots(1, 4, figsize=plots.figsize(4))`` gives (9.2, 1.61): shown 688 px
    wide, its 10 pt labels are 10.4 px. Too many panels for one row is an error that says how
    many rows to use instead."""
    if ncols < 1 or nrows < 1 or aspect <= 0:
        raise ValueError(f"figsize: need ncols, nrows >= 1 and aspect > 0, got {ncols}, {nrows}, {aspect}")
    width = max(COLUMN_IN, min(ncols * MIN_PANEL_IN, MAX_WIDTH_IN))
    if width / ncols < 0.8 * MIN_PANEL_IN:
        per_row = int(MAX_WIDTH_IN // MIN_PANEL_IN)
        raise ValueError(f"figsize: {ncols} panels in a row are {width / ncols:.2f} in each, too narrow for "
                         f"10 pt labels in the book's column; use {math.ceil(ncols / per_row)} rows of at "
                         f"most {per_row}")
    return round(width, 2), round(nrows * aspect * width / ncols, 2)


def style() -> None:
    """Apply the book's matplotlib style."""
    matplotlib.rcParams.update(STYLE)


def _as_numpy(images) -> np.ndarray:
    try:
        import torch

        if isinstance(images, torch.Tensor):
            images = images.detach().float().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    return np.asarray(images)


def make_grid(images, nrow: int = 8, padding: int = 2, pad_value: float = 1.0,
              value_range: tuple[float, float] | None = None) -> np.ndarray:
    """Tile (N, C, H, W), (N, H, W) or (N, H, W, C) images into one (H', W', C) array in [0, 1].
    Channels-first input is detected by C in {1, 3} on axis 1."""
    x = _as_numpy(images).astype(np.float32)
    if x.ndim == 3:
        x = x[..., None]
    elif x.ndim == 4 and x.shape[1] in (1, 3) and x.shape[-1] not in (1, 3):
        x = x.transpose(0, 2, 3, 1)
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(f"make_grid: expected (N,C,H,W), (N,H,W,C) or (N,H,W) images, got {x.shape}")
    if x.dtype == np.uint8 or x.max(initial=0) > 1.5:
        x = x / 255.0
    if value_range is not None:
        lo, hi = value_range
        x = (x - lo) / (hi - lo)
    x = np.clip(x, 0.0, 1.0)
    n, h, w, c = x.shape
    ncol = min(nrow, n)
    rows = -(-n // ncol)
    grid = np.full((rows * (h + padding) + padding, ncol * (w + padding) + padding, c), pad_value, np.float32)
    for i in range(n):
        r, q = divmod(i, ncol)
        y0, x0 = padding + r * (h + padding), padding + q * (w + padding)
        grid[y0:y0 + h, x0:x0 + w] = x[i]
    return grid


def show_grid(images, nrow: int = 8, title: str | None = None, ax=None, **kw):
    """Draw `make_grid(images)` on an axis (a new figure if none); returns the axis."""
    import matplotlib.pyplot as plt

    grid = make_grid(images, nrow=nrow, **kw)
    if ax is None:
        _, ax = plt.subplots(figsize=(min(MAX_WIDTH_IN, 0.9 * grid.shape[1] / 30 + 1),
                                      min(12, 0.9 * grid.shape[0] / 30 + 1)))
    ax.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0, vmax=1,
              interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


def fig_to_png(fig, close: bool = True) -> bytes:
    """PNG bytes of a figure (for image widgets that must work from stored outputs)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    if close:
        plt.close(fig)
    return buf.getvalue()
