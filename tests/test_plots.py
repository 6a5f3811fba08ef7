import matplotlib

matplotlib.use("Agg")
import numpy as np
import pytest
import torch

from dlbook import plots
from dlbook.train import History


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


def test_curves_and_png():
    import matplotlib.pyplot as plt

    h = History()
    for s in range(1, 6):
        h.log(s, {"loss": 1.0 / s})
    ax = plots.plot_curves(h, ["loss"], logy=True)
    assert ax.get_yscale() == "log" and len(ax.lines) == 1
    png = plots.fig_to_png(ax.figure)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    plots.style()
    assert matplotlib.rcParams["axes.spines.top"] is False
    plt.close("all")


def test_live_plot_redraws_in_place(monkeypatch):
    import IPython.display as disp

    shown = []

    class Handle:
        def update(self, fig):
            shown.append("update")

    monkeypatch.setattr(disp, "display", lambda fig, display_id=None: shown.append("display") or Handle())
    h = History()
    trainer = type("T", (), {"history": h})()
    live = plots.LivePlot(keys=("loss", "missing"), every=2)
    for s in range(1, 7):
        h.log(s, {"loss": 1.0 / s})
        live(trainer, s, {"loss": 1.0 / s})
    assert shown == ["display", "update", "update"]
