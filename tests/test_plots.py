import matplotlib

matplotlib.use("Agg")
import numpy as np
import pytest
import torch

from dlbook import plots


def test_make_grid_layout_and_padding():
    x = np.zeros((5, 1, 4, 5), np.float32)  # (N, C, H, W) with H=4, W=5
    x[2] = 1.0
    g = plots.make_grid(x, nrow=3, padding=1, pad_value=0.5)
    assert g.shape == (2 * 5 + 1, 3 * 6 + 1, 1)
    # image 2 sits in row 0, column 2
    assert np.all(g[1:5, 1 + 2 * 6:1 + 2 * 6 + 5] == 1.0)
    assert g[0, 0, 0] == 0.5


def test_make_grid_accepts_uint8_tensors_and_channels_last():
    u8 = np.full((2, 6, 6, 3), 255, np.uint8)
    assert plots.make_grid(u8).max() == 1.0 and plots.make_grid(u8).shape[-1] == 3
    t = torch.full((3, 1, 6, 6), -1.0)
    assert plots.make_grid(t, value_range=(-1, 1)).max() <= 1.0
    assert np.allclose(plots.make_grid(t, value_range=(-1, 1), padding=0), 0.0)


def test_make_grid_rejects_bad_shapes():
    with pytest.raises(ValueError, match="expected"):
        plots.make_grid(np.zeros((2, 5, 6, 7)))


def test_png_and_style():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([1, 2, 3])
    png = plots.fig_to_png(fig)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    plots.style()
    assert matplotlib.rcParams["axes.spines.top"] is False
    plt.close("all")


def _png_width_and_dpi(png: bytes) -> tuple[int, float]:
    import struct

    width = struct.unpack(">I", png[16:20])[0]
    i = png.index(b"pHYs")
    ppu, _, unit = struct.unpack(">IIB", png[i + 4:i + 13])
    assert unit == 1
    return width, ppu * 0.0254


def test_label_px_follows_the_column():
    # narrower than the column: shown at natural size, 10 pt = 10/72 * dpi px
    assert plots.label_px(5.0, dpi=100) == pytest.approx(1000 / 72)
    # wider: scaled to the column, independent of the dpi
    assert plots.label_px(15.5, dpi=100) == pytest.approx(10 / 72 * 688 / 15.5)
    assert plots.label_px(15.5, dpi=200) == pytest.approx(plots.label_px(15.5, dpi=100))
    assert plots.label_px(15.5) < plots.MIN_LABEL_PX <= plots.label_px(plots.MAX_WIDTH_IN)
    with pytest.raises(ValueError, match="positive"):
        plots.label_px(0)


@pytest.mark.parametrize("ncols", [1, 2, 3, 4, 5, 6])
def test_figsize_is_legible_in_the_column(ncols):
    w, h = plots.figsize(ncols, aspect=0.8)
    assert plots.COLUMN_IN <= w <= plots.MAX_WIDTH_IN
    assert h == pytest.approx(0.8 * w / ncols, abs=0.01)
    assert plots.label_px(w) >= plots.MIN_LABEL_PX
    assert plots.figsize(ncols, nrows=2, aspect=0.8)[1] == pytest.approx(2 * h, abs=0.02)


def test_figsize_refuses_too_many_panels_in_a_row():
    with pytest.raises(ValueError, match="use 2 rows of at most 5"):
        plots.figsize(8)
    with pytest.raises(ValueError, match="aspect"):
        plots.figsize(2, aspect=0)


def test_a_four_panel_figure_saved_like_the_book_passes_the_browser_rule():
    """The rule of .ci/browser_check.py on a real PNG: 10/72 * dpi * min(natural, column) / natural."""
    import matplotlib.pyplot as plt

    plots.style()
    fig, axes = plt.subplots(1, 4, figsize=plots.figsize(4))
    for ax in axes:
        ax.plot([0, 1000], [0, 1])
        ax.set_xlabel("critic updates")
        ax.set_title("a title")
    width, dpi = _png_width_and_dpi(plots.fig_to_png(fig))
    label = 10 / 72 * dpi * min(width, plots.COLUMN_PX) / width
    assert label >= plots.MIN_LABEL_PX, (width, dpi, label)
    # the widest figure the chapters had (15.5 in) fails the same rule
    fig, axes = plt.subplots(1, 4, figsize=(15.5, 3.4))
    for ax in axes:
        ax.plot([0, 1000], [0, 1])
        ax.set_xlabel("critic updates")
        ax.set_title("a title")
    width, dpi = _png_width_and_dpi(plots.fig_to_png(fig))
    assert 10 / 72 * dpi * plots.COLUMN_PX / width < plots.MIN_LABEL_PX
