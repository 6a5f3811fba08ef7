"""The shared GAN toolkit: losses against hand-computed values, metrics, nets, the loop."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from dlbook import gan


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
        assert val(pen.detach()) == pytest.approx(2.0 * 5.0 ** 6, rel=1e-12)


def test_wdiv_critic_loss_hand_value():
    T = Linear([3.0, 4.0], b=0.7)
    loss, logs = gan.WGANDiv(k=0.5, p=3.0).critic_loss(T, XR, XF)
    mean_r = (3 + 8 + 9 - 4) / 2
    mean_f = (0 + 4 - 6 + 2) / 2
    want = -(mean_r - mean_f) + 0.5 * 125.0
    assert val(loss.detach()) == pytest.approx(want, rel=1e-12)
    assert val(logs["w"]) == pytest.approx(mean_r - mean_f)


def test_gp_penalty_linear_critic():
    T = Linear([3.0, 4.0])
    loss = gan.WGANGP(lam=10.0)
    assert val(loss.penalty(T, XR)) == pytest.approx(10.0 * (5 - 1) ** 2, rel=1e-9)
    T1 = Linear(A)
    assert val(loss.penalty(T1, XR)) == pytest.approx(0.0, abs=1e-9)
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
    sp = lambda v: math.log1p(math.exp(v))
    want = (sp(-1) + sp(-3)) / 2 + (sp(0) + sp(-2)) / 2
    assert val(lt) == pytest.approx(want, rel=1e-12)


def test_wgan_clip_loss_and_clipping():
    T = Linear([3.0, -4.0], b=0.01)
    loss = gan.WGANClip(clip=0.5)
    lt, _ = loss.critic_loss(T, XR, XF)
    mr = ((3 - 8) + (9 + 4)) / 2
    mf = ((0 - 4) + (-6 - 2)) / 2
    assert val(lt) == pytest.approx(-(mr - mf))
    loss.after_critic_step(T)
    assert T.a.tolist() == [0.5, -0.5] and val(T.b) == pytest.approx(0.01)


def test_generator_losses_ignore_the_penalty():
    T = Linear([3.0, 4.0])
    for loss in (gan.WGANDiv(), gan.WGANGP(), gan.WGANClip()):
        assert val(loss.generator_loss(T, XR, XF)) == pytest.approx(-val(T(XF).mean()))


def test_penalty_gradient_matches_derivative():
    # d/da of k ||a||^p = k p ||a||^(p-2) a
    T = Linear([0.3, -0.2])
    pen = gan.WGANDiv(k=2.0, p=6.0).penalty(T, XR)
    (g,) = torch.autograd.grad(pen, T.a)
    a = T.a.detach()
    want = 2.0 * 6.0 * a.norm() ** 4 * a
    assert torch.allclose(g, want, rtol=1e-10)


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


def test_bad_options():
    with pytest.raises(ValueError, match="k > 0 and p > 1"):
        gan.WGANDiv(k=2, p=1)
    with pytest.raises(ValueError, match="unknown sampling strategy"):
        gan.WGANGP(strategy="everywhere")
    with pytest.raises(ValueError, match="unknown GAN loss"):
        gan.make_loss("lsgan")
    with pytest.raises(ValueError, match="unknown toy dataset"):
        gan.toy_dataset("moons")
    with pytest.raises(ValueError, match="activation"):
        gan.mlp(2, 1, act="gelu")
    with pytest.raises(ValueError, match="power of two"):
        gan.ConvCritic(img_size=48)


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
    # min_share: mode 1 holds 1 sample < 0.5 * 10/3
    assert gan.mode_metrics(pts, c, std=0.05, min_share=0.5)[0] == 1
    assert gan.toy_dataset("swissroll").sample(10).shape == (10, 2)
    with pytest.raises(ValueError):
        gan.mode_metrics(np.zeros((3, 3)), c, 0.1)


@pytest.mark.parametrize("size,kernel", [(32, 4), (32, 5), (64, 5)])
def test_conv_nets_shapes(size, kernel):
    G = gan.ConvGenerator(z_dim=16, img_size=size, channels=3, base=4, max_ch=16, kernel=kernel)
    T = gan.ConvCritic(img_size=size, channels=3, base=4, max_ch=16, kernel=kernel)
    x = G(torch.randn(3, 16))
    assert x.shape == (3, 3, size, size) and x.abs().max() <= 1
    assert T(x).shape == (3, 1)
    n_conv = sum(isinstance(m, nn.Conv2d) for m in T.modules())
    n_up = sum(isinstance(m, nn.ConvTranspose2d) for m in G.modules())
    assert n_conv == int(math.log2(size)) - 2 and n_up == int(math.log2(size)) - 2


def test_frechet_distance():
    rng = np.random.default_rng(0)
    s = np.cov(rng.normal(size=(100, 4)), rowvar=False)
    assert gan.frechet_distance(np.zeros(4), s, np.zeros(4), s) == pytest.approx(0, abs=1e-8)
    # 1-D: (m1-m2)^2 + (s1-s2)^2
    assert gan.frechet_distance([1.0], [[4.0]], [0.0], [[1.0]]) == pytest.approx(1 + 1, rel=1e-12)


def test_proxy_fid_ranks_noise_worse(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(256, 1, 16, 16, generator=g) * 0.2 - 1
    x[:, :, 4:12, 4:12] = 1.0  # a bright square on a dark background
    fid = gan.ProxyFID(x, None, key="t", steps=3, cache_dir=tmp_path, progress=False)
    assert list(tmp_path.glob("proxyfid/*.pt"))
    same = fid(x[:128])
    noise = fid(torch.rand(128, 1, 16, 16, generator=g) * 2 - 1)
    assert same < noise
    fid2 = gan.ProxyFID(x, None, key="t", steps=3, cache_dir=tmp_path, progress=False)  # cached
    assert fid2(x[:128]) == pytest.approx(same, rel=1e-6)


def _toy_setup(seed=0):
    torch.manual_seed(seed)
    return gan.mlp(2, 2, 32, 2), gan.mlp(2, 1, 32, 2, "lrelu"), gan.toy_dataset("8gaussians")


@pytest.mark.parametrize("loss", [gan.WGANDiv(), gan.WGANGP(), gan.StandardGAN(), gan.WGANClip()])
def test_short_training_is_finite(loss):
    G, T, d = _toy_setup()
    cfg = gan.GANConfig(steps=30, n_critic=1, batch=64, log_every=10, eval_every=10, snapshot_every=15,
                        progress=False)
    h = gan.train_gan(G, T, loss, d.sample, cfg, evaluate=lambda g, s: {"s": s}, snapshot=lambda g, s: s)
    assert h.steps == [10, 20, 30]
    assert all(np.isfinite(v) for col in h.metrics.values() for v in col)
    assert sorted(h.evals) == [0, 10, 20, 30] and sorted(h.snapshots) == [0, 15, 30]


def test_wdiv_critic_loss_decreases_with_fixed_generator():
    G, T, d = _toy_setup()
    for prm in G.parameters():
        prm.requires_grad_(False)
    opt = torch.optim.Adam(T.parameters(), 1e-3)
    loss = gan.WGANDiv()
    g = torch.Generator().manual_seed(0)
    vals = []
    for _ in range(100):
        lt, _ = loss.critic_loss(T, d.sample(128, g), G(torch.randn(128, 2, generator=g)))
        opt.zero_grad(); lt.backward(); opt.step()
        vals.append(val(lt))
    assert np.mean(vals[-10:]) < np.mean(vals[:10]) - 0.1


def test_checkpoint_resume_matches_uninterrupted(tmp_path):
    def run(steps, ckpt):
        G, T, d = _toy_setup()
        cfg = gan.GANConfig(steps=steps, batch=32, log_every=5, eval_every=100, snapshot_every=100,
                            checkpoint_every=10, progress=False)
        gan.train_gan(G, T, gan.WGANDiv(), d.sample, cfg, checkpoint=ckpt)
        return G

    g_full = run(20, None)
    run(10, tmp_path / "c.pt")  # stops at 10 with a checkpoint
    g_res = run(20, tmp_path / "c.pt")  # resumes 10 -> 20
    for a, b in zip(g_full.parameters(), g_res.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_critic_field_gradient_of_linear_critic():
    T = nn.Linear(2, 1)
    with torch.no_grad():
        T.weight.copy_(torch.tensor([[3.0, 4.0]]))
    u, t, gn = gan.critic_field(T, 1.0, n=11)
    assert t.shape == (11, 11) and np.allclose(gn, 5.0)
    assert t[0, -1] > t[0, 0]  # x grows along columns


def test_train_image_gan_evaluates_snapshots_and_resumes(tmp_path):
    from types import SimpleNamespace

    cfg = SimpleNamespace(steps=4, batch=8, lr=2e-4, betas=(0.5, 0.999), z_dim=8, eval_every=2, n_fid=16)
    x = torch.rand(32, 1, 16, 16) * 2 - 1

    def pair():
        torch.manual_seed(0)
        return (gan.ConvGenerator(8, 16, 1, 4, 16, 4), gan.ConvCritic(16, 1, 4, 16, 4, "none"))

    calls = []
    fid = lambda imgs: calls.append(tuple(imgs.shape)) or 1.0
    fid.device = "cpu"
    G, T = pair()
    h = gan.train_image_gan(G, T, gan.WGANDiv(2.0, 6.0), x, cfg, fid=fid, n_critic=1, device="cpu")
    assert sorted(h.evals) == [0, 2, 4] and calls == [(16, 1, 16, 16)] * 3
    assert h.snapshots[4].shape == (64, 1, 16, 16) and np.all(np.abs(h.snapshots[4]) <= 1.0)
    # a run stopped at step 2 and resumed from its checkpoint ends where the uninterrupted one did
    ck = tmp_path / "g.pt"
    G2, T2 = pair()
    gan.train_image_gan(G2, T2, gan.WGANDiv(2.0, 6.0), x, SimpleNamespace(**{**vars(cfg), "steps": 2}),
                        n_critic=1, device="cpu", checkpoint=ck)
    G3, T3 = pair()
    gan.train_image_gan(G3, T3, gan.WGANDiv(2.0, 6.0), x, cfg, n_critic=1, device="cpu", checkpoint=ck)
    for a, b in zip(G.parameters(), G3.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_run_jobs_keeps_order_in_and_out_of_process():
    specs = [{"x": i} for i in range(5)]
    assert gan.run_jobs(_square, specs, workers=1) == [0, 1, 4, 9, 16]
    assert gan.run_jobs(_square, specs, workers=2) == [0, 1, 4, 9, 16]


def _square(spec):
    return spec["x"] ** 2


def test_load_images_pads_mnist_to_32():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # offline: the bundled sample is fine here
        x, y, source = gan.load_images("mnist", 64, 32)
    assert x.shape == (64, 1, 32, 32) and y.shape == (64,)
    assert float(x.min()) == -1.0 and float(x.max()) <= 1.0
    assert float(x[:, :, :2].max()) == -1.0  # the padding is background
