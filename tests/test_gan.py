"""What the GAN chapters show (dlbook.gan): losses against hand-computed values, shape and
setting errors, penalty points, nets (including the spectrally normalised critic), toy data."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from dlbook import gan
from dlbook.config import ConfigError


def val(t) -> float:
    """A scalar tensor's value (detached: some carry gradients)."""
    return float(t.detach()) if isinstance(t, torch.Tensor) else float(t)


class Linear(nn.Module):
    """T(x) = a . x + b, with a known gradient a everywhere."""

    def __init__(self, a, b=0.0):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a, dtype=torch.float64))
        self.b = nn.Parameter(torch.tensor(b, dtype=torch.float64))

    def forward(self, x):
        return (x.flatten(1) @ self.a + self.b)[:, None]


XR = torch.tensor([[1.0, 2.0], [3.0, -1.0]], dtype=torch.float64)
XF = torch.tensor([[0.0, 1.0], [-2.0, 0.5]], dtype=torch.float64)
A = [0.6, -0.8]  # ||a|| = 1


def test_wdiv_penalty_linear_critic_is_k_norm_a_to_the_p():
    T = Linear([3.0, 4.0])  # ||a|| = 5
    for strategy in gan.STRATEGIES:
        loss = gan.WGANDiv(k=2.0, p=6.0, strategy=strategy)
        pen = loss.penalty(T, gan.sample_r(strategy, XR, XF))
        assert val(pen) == pytest.approx(2.0 * 5.0 ** 6, rel=1e-12)
    sep, _ = gan.WGANDiv(2.0, 6.0, "pool", separate=True).critic_loss(T, XR, XF)
    joint, _ = gan.WGANDiv(2.0, 6.0, "pool").critic_loss(T, XR, XF)
    assert val(sep) == pytest.approx(val(joint), rel=1e-12)  # equal halves: same mean


def test_wdiv_separate_passes_are_the_posts_batchnorm_computation():
    """separate=True: scores and penalty gradients from one pass per batch, as the post's Keras
    code (BatchNorm in training mode sees the real batch alone and the fake batch alone)."""
    torch.manual_seed(0)
    T = gan.ConvCritic(16, 1, base=4, max_ch=8, norm="bn").double().train()
    xr, xf = torch.rand(8, 1, 16, 16, dtype=torch.float64), 0.1 * torch.randn(8, 1, 16, 16, dtype=torch.float64)
    want_pen, tr_tf = 0.0, []
    for x in (xr, xf):
        x = x.clone().requires_grad_(True)
        t = T(x)
        (g,) = torch.autograd.grad(t.sum(), x, create_graph=True)
        want_pen = want_pen + g.pow(2).flatten(1).sum(1).pow(3).mean() * 2.0 / 2
        tr_tf.append(t.mean())
    loss, logs = gan.WGANDiv(2.0, 6.0, "pool", separate=True).critic_loss(T, xr, xf)
    assert val(logs["penalty"]) == pytest.approx(val(want_pen), rel=1e-10)
    assert val(loss) == pytest.approx(val(-(tr_tf[0] - tr_tf[1]) + want_pen), rel=1e-10)
    joint = gan.WGANDiv(2.0, 6.0, "pool").critic_loss(T, xr, xf)[1]["penalty"]
    assert abs(val(joint) / val(want_pen) - 1) > 1e-3  # one joint pass normalises with both batches
    loss.backward()  # differentiable in the critic's weights
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in T.parameters())


def test_wdiv_critic_loss_hand_value():
    T = Linear([3.0, 4.0], b=0.7)
    loss, logs = gan.WGANDiv(k=0.5, p=3.0).critic_loss(T, XR, XF)
    mean_r = (3 + 8 + 9 - 4) / 2
    mean_f = (0 + 4 - 6 + 2) / 2
    want = -(mean_r - mean_f) + 0.5 * 125.0
    assert val(loss) == pytest.approx(want, rel=1e-12)
    assert val(logs["w"]) == pytest.approx(mean_r - mean_f)


def test_gp_penalty_linear_critic():
    T = Linear([3.0, 4.0])
    loss = gan.WGANGP(lam=10.0)
    assert val(loss.penalty(T, XR)) == pytest.approx(10.0 * (5 - 1) ** 2, rel=1e-9)
    assert val(loss.penalty(Linear(A), XR)) == pytest.approx(0.0, abs=1e-9)
    T2 = Linear([0.3, 0.4])  # ||a|| = 0.5: two-sided penalises, one-sided does not
    assert val(loss.penalty(T2, XR)) == pytest.approx(10 * 0.25, rel=1e-9)
    assert val(gan.WGANGP(10.0, one_sided=True).penalty(T2, XR)) == pytest.approx(0.0, abs=1e-12)
    full, _ = loss.critic_loss(T, XR, XF)
    assert val(full) == pytest.approx(-(8.0 - 0.0) + 160.0, rel=1e-9)


def test_sgan_losses_hand_values():
    T = Linear([0.0, 0.0], b=0.0)  # T = 0: D = 1/2 everywhere
    lt, _ = gan.StandardGAN().critic_loss(T, XR, XF)
    assert val(lt) == pytest.approx(2 * math.log(2), rel=1e-12)
    assert val(gan.StandardGAN().generator_loss(T, XR, XF)) == pytest.approx(math.log(2), rel=1e-12)
    T = Linear([1.0, 0.0])
    lt, _ = gan.StandardGAN().critic_loss(T, XR, XF)
    sp = lambda v: math.log1p(math.exp(v))  # noqa: E731
    want = (sp(-1) + sp(-3)) / 2 + (sp(0) + sp(-2)) / 2
    assert val(lt) == pytest.approx(want, rel=1e-12)


def test_wgan_plain_clip_and_sn_name():
    T = Linear([3.0, -4.0], b=0.01)
    mr = ((3 - 8) + (9 + 4)) / 2
    mf = ((0 - 4) + (-6 - 2)) / 2
    assert val(gan.WGAN().critic_loss(T, XR, XF)[0]) == pytest.approx(-(mr - mf))
    assert isinstance(gan.make_loss("wgan-sn"), gan.WGAN) and gan.make_loss("wgan-sn").n_critic == 5
    loss = gan.WGANClip(clip=0.5)
    lt, _ = loss.critic_loss(T, XR, XF)
    assert val(lt) == pytest.approx(-(mr - mf))
    loss.after_critic_step(T)
    assert T.a.tolist() == [0.5, -0.5] and val(T.b) == pytest.approx(0.01)


def test_generator_losses_ignore_the_penalty():
    T = Linear([3.0, 4.0])
    for loss in (gan.WGANDiv(), gan.WGANGP(), gan.WGANClip(), gan.WGAN()):
        assert val(loss.generator_loss(T, XR, XF)) == pytest.approx(-val(T(XF).mean()))


def test_penalty_gradient_matches_derivative():
    # d/da of k ||a||^p = k p ||a||^(p-2) a
    T = Linear([0.3, -0.2])
    pen = gan.WGANDiv(k=2.0, p=6.0).penalty(T, XR)
    (g,) = torch.autograd.grad(pen, T.a)
    a = T.a.detach()
    assert torch.allclose(g, 2.0 * 6.0 * a.norm() ** 4 * a, rtol=1e-10)


def test_sample_r_shapes_and_support():
    xr, xf = torch.zeros(5, 2), torch.ones(5, 2)
    shapes = {s: tuple(gan.sample_r(s, xr, xf).shape) for s in gan.STRATEGIES}
    assert shapes == {"interp": (5, 2), "interp_same": (10, 2), "interp_pool": (5, 2), "pool": (10, 2),
                      "fake": (5, 2), "real": (5, 2)}
    x = gan.sample_r("interp", xr, xf)
    assert torch.all((x >= 0) & (x <= 1)) and torch.allclose(x[:, 0], x[:, 1])
    assert torch.equal(gan.sample_r("interp_same", xr, xf)[:5], xr)  # real-real stays at 0
    with pytest.raises(ValueError, match="unknown sampling strategy"):
        gan.sample_r("uniform", xr, xf)
    with pytest.raises(ValueError, match="differ"):
        gan.sample_r("interp", xr, torch.ones(4, 2))


class Wide(nn.Module):
    """A critic that wrongly returns two scores per sample."""

    def forward(self, x):
        return torch.cat([x[:, :1], x[:, :1]], 1)


@pytest.mark.parametrize("loss", [gan.StandardGAN(), gan.WGAN(), gan.WGANClip(), gan.WGANGP(), gan.WGANDiv()])
def test_every_loss_refuses_mismatched_shapes(loss):
    T = Linear([1.0, 2.0])
    with pytest.raises(ValueError, match="batches"):
        loss.critic_loss(T, XR, XF[:1])
    with pytest.raises(ValueError, match="batches"):
        loss.generator_loss(T, XR, XF[:1])
    with pytest.raises(ValueError, match="one score per sample"):
        loss.critic_loss(Wide(), XR, XF)
    with pytest.raises(ValueError, match="one score per sample"):
        loss.generator_loss(Wide(), XR, XF)
    with pytest.raises(ValueError, match="differ in shape"):
        gan.critic_pair(torch.zeros(4, 1), torch.zeros(1, 1))


def test_bad_settings_are_refused_where_they_enter():
    with pytest.raises(ValueError, match="k > 0 and p > 1"):
        gan.WGANDiv(k=2, p=1)
    with pytest.raises(ConfigError, match="k"):
        gan.WGANDiv(k=-1)
    with pytest.raises(ConfigError, match="lam"):
        gan.WGANGP(lam=-1.0)
    with pytest.raises(ConfigError, match="clip"):
        gan.WGANClip(clip=-0.01)
    with pytest.raises(ValueError, match="separate"):
        gan.WGANDiv(strategy="interp", separate=True)
    with pytest.raises(ValueError, match="unknown sampling strategy"):
        gan.WGANGP(strategy="everywhere")
    with pytest.raises(ValueError, match="unknown GAN loss"):
        gan.make_loss("lsgan")
    with pytest.raises(ValueError, match="unknown toy dataset"):
        gan.toy_dataset("moons")
    with pytest.raises(ValueError, match="activation"):
        gan.mlp(2, 1, act="gelu")
    with pytest.raises(ConfigError, match="depth"):
        gan.mlp(2, 1, depth=0)
    with pytest.raises(ConfigError, match="width"):
        gan.mlp(2, 1, width=-3)
    with pytest.raises(ValueError, match="power of two"):
        gan.ConvCritic(img_size=48)
    with pytest.raises(ConfigError, match="img_size"):
        gan.ConvCritic(img_size=0)
    with pytest.raises(ValueError, match="critic norm"):
        gan.ConvCritic(img_size=16, norm="wn")
    with pytest.raises(ValueError, match="generator norm"):
        gan.ConvGenerator(img_size=16, norm="ln")
    with pytest.raises(ValueError, match=r"z must be \(N, 8\)"):
        gan.ConvGenerator(z_dim=8, img_size=16, base=4, max_ch=8)(torch.zeros(2, 3))


def test_toy_datasets_and_mode_metrics():
    d = gan.toy_dataset("8gaussians")
    assert d.centres.shape == (8, 2) and np.allclose(np.linalg.norm(d.centres, axis=1), 2.0)
    assert gan.toy_dataset("25gaussians").centres.shape == (25, 2)
    x = d.sample(4000, torch.Generator().manual_seed(0))
    assert x.shape == (4000, 2)
    m, q = gan.mode_metrics(x, d.centres, d.std)
    assert m == 8 and q > 0.99  # 3 sigma holds 98.9% of a 2-D Gaussian
    # hand-made: 6 points at mode 0, 1 at mode 1, 3 far away; fair share 10/8 = 1.25, 20% = 0.25
    c = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    pts = np.array([[0, 0]] * 6 + [[10, 0.1]] + [[5, 5]] * 3, dtype=float)
    assert gan.mode_metrics(pts, c, std=0.05) == (2, 0.7)
    assert gan.mode_metrics(pts, c, std=0.05, min_share=0.5)[0] == 1
    assert gan.toy_dataset("swissroll").sample(10).shape == (10, 2)
    with pytest.raises(ValueError):
        gan.mode_metrics(np.zeros((3, 3)), c, 0.1)


@pytest.mark.parametrize("size,kernel", [(32, 4), (32, 5), (64, 5)])
@pytest.mark.parametrize("norm", gan.CRITIC_NORMS)
def test_conv_nets_shapes(size, kernel, norm):
    G = gan.ConvGenerator(z_dim=16, img_size=size, channels=3, base=4, max_ch=16, kernel=kernel)
    T = gan.ConvCritic(img_size=size, channels=3, base=4, max_ch=16, kernel=kernel, norm=norm)
    x = G(torch.randn(3, 16))
    assert x.shape == (3, 3, size, size) and x.abs().max() <= 1
    assert T(x).shape == (3, 1)
    n_conv = sum(isinstance(m, nn.Conv2d) for m in T.modules())
    n_up = sum(isinstance(m, nn.ConvTranspose2d) for m in G.modules())
    assert n_conv == int(math.log2(size)) - 2 and n_up == int(math.log2(size)) - 2
    has = {k: any(isinstance(m, t) for m in T.modules())
           for k, t in (("bn", nn.BatchNorm2d), ("ln", nn.GroupNorm))}
    assert has == {"bn": norm == "bn", "ln": norm == "ln"}
    g0 = gan.ConvGenerator(z_dim=16, img_size=size, base=4, max_ch=16, kernel=kernel, norm="none")
    assert not any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in g0.modules())


def test_spectral_critic_layers_have_unit_spectral_norm():
    torch.manual_seed(0)
    T = gan.ConvCritic(img_size=16, channels=1, base=8, max_ch=16, kernel=4, norm="sn")
    layers = [m for m in T.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert layers and all(nn.utils.parametrize.is_parametrized(m, "weight") for m in layers)
    T.train()
    for _ in range(30):  # power iterations converge during training forwards
        T(torch.randn(4, 1, 16, 16))
    T.eval()
    for m in layers:
        s = torch.linalg.matrix_norm(m.weight.reshape(m.weight.shape[0], -1), ord=2)
        assert float(s.detach()) == pytest.approx(1.0, abs=0.02)
    mlp = gan.mlp(2, 1, 16, 2, "lrelu", norm="sn")
    assert sum(nn.utils.parametrize.is_parametrized(m, "weight") for m in mlp.modules()) == 3
