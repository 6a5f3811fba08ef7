"""Chapter 01 (Deep INFOMAX): identities, losses against hand values, shapes of both
critics' inputs, gradients, a short training run and clear errors."""
import math

import numpy as np
import pytest
import torch

from dlbook import gaussian as G
from dlbook import infomax as im
from dlbook.infomax import experiments
from dlbook.metrics import spread
from dlbook.config import ConfigError, ProfileError
from dlbook.data import ArrayData

LOG2 = math.log(2)


# ------------------------------------------------------------------ identities
def test_prior_identity_discrete():
    rng = np.random.default_rng(0)
    for _ in range(20):
        px, pz_x, qz = rng.dirichlet(np.ones(4)), rng.dirichlet(np.ones(6), 4), rng.dirichlet(np.ones(6))
        t = im.prior_identity_terms(px, pz_x, qz)
        assert t["E_kl"] == pytest.approx(t["mi"] + t["kl_agg"], abs=1e-12)
        assert t["mi"] >= 0


def test_gaussian_mi():
    assert im.gaussian_mi(0.8) == pytest.approx(0.5108256, abs=1e-6)
    with pytest.raises(ValueError, match="correlation"):
        im.gaussian_mi(1.0)


def test_js_bounds_and_batch():
    assert im.js_divergence([1, 0], [0, 1]) == pytest.approx(LOG2, abs=1e-14)
    assert im.js_divergence([0.3, 0.7], [0.3, 0.7]) == pytest.approx(0.0, abs=1e-15)
    rng = np.random.default_rng(1)
    p, q = rng.dirichlet(np.ones(5), 50), rng.dirichlet(np.ones(5), 50)
    batch = im.js_divergence_batch(p, q)
    assert np.allclose(batch, [im.js_divergence(a, b) for a, b in zip(p, q)], atol=1e-14)
    assert np.all((batch >= 0) & (batch <= LOG2))


def test_bad_probability_table():
    with pytest.raises(ValueError, match="probability"):
        im.js_divergence([0.5, 0.6], [0.5, 0.5])


# ------------------------------------------------------------------ losses
def test_bce_hand_values():
    z = torch.zeros(5)
    assert im.bce_mi_loss(z, z).item() == pytest.approx(2 * LOG2, abs=1e-6)
    # -log sigma(log 3) = log(4/3) and -log(1 - sigma(-log 3)) = log(4/3)
    t = torch.tensor([math.log(3)], dtype=torch.float64)
    assert im.bce_mi_loss(t, -t).item() == pytest.approx(2 * math.log(4 / 3), abs=1e-12)


def test_bce_form_equals_2js_minus_2log2_at_optimum():
    """Discrete toy: P = (1/2, 1/4, 1/4), Q = (1/4, 1/4, 1/2) as equally weighted samples; at
    the optimal critic T* = log p/q the torch BCE equals 2 log 2 - 2 JS."""
    p, q = np.array([0.5, 0.25, 0.25]), np.array([0.25, 0.25, 0.5])
    t_star = torch.tensor(np.log(p / q), dtype=torch.float64)
    pos = t_star.repeat_interleave(torch.tensor([2, 1, 1]))   # samples from P
    neg = t_star.repeat_interleave(torch.tensor([1, 1, 2]))   # samples from Q
    js = im.js_divergence(p, q)
    assert im.bce_mi_loss(pos, neg).item() == pytest.approx(2 * LOG2 - 2 * js, abs=1e-12)
    assert im.bce_objective(p, q, t_star.numpy()) == pytest.approx(2 * js - 2 * LOG2, abs=1e-12)
    # any other critic is worse
    for d in (0.3, -0.5):
        assert im.bce_mi_loss(pos + d, neg + d).item() > 2 * LOG2 - 2 * js


def test_bce_gradient_is_sigmoid_minus_label():
    t = torch.tensor([0.7, -1.2], dtype=torch.float64, requires_grad=True)
    s = torch.tensor([0.1, 2.0], dtype=torch.float64, requires_grad=True)
    im.bce_mi_loss(t, s).backward()
    assert torch.allclose(t.grad, (torch.sigmoid(t) - 1) / 2)
    assert torch.allclose(s.grad, torch.sigmoid(s) / 2)


def test_bce_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="differ in shape"):
        im.bce_mi_loss(torch.zeros(4), torch.zeros(4, 1))   # would broadcast to (4, 4) silently


def test_post_kl_is_the_mean_of_the_shared_gaussian_kl():
    """The loss averages dlbook.gaussian.gaussian_kl over batch and code dimensions (the post's
    convention): gamma weighs the textbook KL by gamma / z_dim."""
    torch.manual_seed(0)
    m = im.InfoMax(width=0.125, z_dim=8, critic_width=8, alpha=0.0, beta=0.0, gamma=1.0)
    x = torch.rand(6, 3, 32, 32) - 0.5
    out = m.losses(x)
    _, mu, lv = m.encoder(x)
    assert out["kl"].item() == pytest.approx(G.gaussian_kl(mu, lv).mean().item(), rel=1e-6)
    assert out["loss"].item() == pytest.approx(G.gaussian_kl(mu, lv).sum(1).mean().item() / 8, rel=1e-5)


def test_quadratic_critic_recovers_mi():
    x, z, zn = im.correlated_pairs(0.8, 20_000, seed=0)
    est = im.fit_quadratic_critic(x, z, zn)
    assert abs(est["mi_est"] - im.gaussian_mi(0.8)) / im.gaussian_mi(0.8) < 0.05
    assert -2 * LOG2 < est["objective"] < 0


# ------------------------------------------------------------------ negatives
def test_shuffle_modes():
    t = torch.arange(10.0)[:, None]
    rolled, perm = im.shuffle_batch(t, "roll")
    assert not torch.any(perm == torch.arange(10))
    shuffled, perm = im.shuffle_batch(t, "randperm", torch.Generator().manual_seed(0))
    assert torch.equal(shuffled[:, 0], perm.float())
    with pytest.raises(ValueError, match="shuffle mode"):
        im.shuffle_batch(t, "sort")
    fn = im.false_negative_rates([4, 64], trials=500)
    assert fn["roll"] == [0.0, 0.0] and abs(fn["randperm"][1] - 1 / 64) < 0.01


# ------------------------------------------------------------------ shapes
def test_encoder_and_critic_input_shapes():
    torch.manual_seed(0)
    m = im.InfoMax(width=0.125, z_dim=16, critic_width=8)
    x = torch.rand(6, 3, 32, 32) - 0.5
    c, mu, lv = m.encoder(x)
    assert c.shape == (6, 32, 4, 4) and mu.shape == lv.shape == (6, 16)
    z = G.reparameterise(mu, lv)
    perm = torch.roll(torch.arange(6), 1)
    gp, gn = im.global_pairs(z, c, perm, "post")
    assert gp.shape == gn.shape == (6, 32)
    assert torch.equal(gp[:, :16], gp[:, 16:])             # the post's positive pair is [z, z]
    assert torch.equal(gn[:, 16:], z[perm])
    pp, pn = im.global_pairs(z, c, perm, "paper")
    assert pp.shape == pn.shape == (6, 32 * 16 + 16)
    assert torch.equal(pn[:, :512], c.flatten(1)[perm])
    lp, ln = im.local_pairs(z, c, perm)
    assert lp.shape == ln.shape == (6, 48, 4, 4)
    assert torch.equal(lp[:, :16, 2, 3], z) and torch.equal(ln[:, 16:], c[perm])
    assert m.global_critic(gp).shape == (6,)
    assert m.local_critic(lp).shape == (6, 1, 4, 4)
    paper = im.InfoMax(width=0.125, z_dim=16, critic_width=8, global_input="paper")
    assert paper.global_critic.in_dim == 32 * 16 + 16


def test_two_view_pairs_and_losses():
    torch.manual_seed(0)
    z_a, z_b = torch.randn(5, 4), torch.randn(5, 4)
    c_b = torch.randn(5, 3, 4, 4)
    perm = torch.roll(torch.arange(5), 1)
    gp, gn = im.global_pairs(z_a, c_b, perm, "post", other=z_b)
    assert torch.equal(gp, torch.cat([z_a, z_b], 1)) and torch.equal(gn, torch.cat([z_a, z_b[perm]], 1))
    pp, pn = im.global_pairs(z_a, c_b, perm, "paper", other=z_b)   # the paper pairs C of view b with z_a
    assert torch.equal(pp[:, :48], c_b.flatten(1)) and torch.equal(pn[:, 48:], z_a)
    m = im.InfoMax(width=0.125, z_dim=8, critic_width=8, views=2)
    out = m.losses(torch.rand(6, 3, 32, 32) - 0.5)
    assert all(torch.isfinite(v) for v in out.values())
    assert abs(out["global"].item() - 2 * LOG2) < 0.1 and abs(out["local"].item() - 2 * LOG2) < 0.1
    with pytest.raises(ValueError, match="views"):
        im.InfoMax(views=3)


def test_one_view_model_is_the_post_bit_for_bit():
    """views=1 draws the same random numbers as the post's recipe: [z, z] global pairs."""
    torch.manual_seed(3)
    m = im.InfoMax(width=0.125, z_dim=8, critic_width=8)
    x = torch.rand(6, 3, 32, 32) - 0.5
    torch.manual_seed(4)
    out = m.losses(x)
    torch.manual_seed(4)
    c, mu, lv = m.encoder(x)
    z = G.reparameterise(mu, lv)
    _, pg = im.shuffle_batch(z)
    _, pl = im.shuffle_batch(z)
    gp, gn = im.global_pairs(z, c, pg, "post")
    lp, ln = im.local_pairs(z, c, pl)
    glob = im.bce_mi_loss(m.global_critic(gp), m.global_critic(gn))
    loc = im.bce_mi_loss(m.local_critic(lp), m.local_critic(ln))
    assert out["global"].item() == glob.item() and out["local"].item() == loc.item()


def test_random_views():
    torch.manual_seed(0)
    x = torch.rand(16, 3, 32, 32) - 0.5
    v = im.random_views(x)
    assert v.shape == x.shape and v.min() >= -0.5 and v.max() <= 0.5
    assert not torch.allclose(v, x)
    # whole image, square, no jitter, no greyscale: each view is the image or its mirror image
    v = im.random_views(x, scale=(1.0, 1.0), jitter=0.0, gray=0.0, ratio=1.0)
    same = [torch.allclose(v[i], x[i], atol=1e-5) for i in range(16)]
    mirror = [torch.allclose(v[i], x[i].flip(-1), atol=1e-5) for i in range(16)]
    assert all(s or m for s, m in zip(same, mirror)) and any(same) and any(mirror)
    g = im.random_views(x, jitter=0.0, gray=1.0)   # always greyscale: the three channels agree
    assert torch.allclose(g[:, 0], g[:, 1]) and torch.allclose(g[:, 1], g[:, 2])
    with pytest.raises(ValueError, match="colour images"):
        im.random_views(torch.zeros(2, 1, 32, 32))


def test_full_size_local_map_is_4x4x256():
    enc = im.Encoder(width=1.0, z_dim=256)
    with torch.no_grad():
        c, mu, _ = enc(torch.zeros(2, 3, 32, 32))
    assert c.shape == (2, 256, 4, 4) and mu.shape == (2, 256)


def test_losses_and_initial_bce():
    torch.manual_seed(0)
    m = im.InfoMax(width=0.125, z_dim=16, critic_width=8)
    out = m.losses(torch.rand(16, 3, 32, 32) - 0.5)
    assert set(out) == {"loss", "global", "local", "kl", "logvar"}
    total = 0.5 * out["global"] + 1.5 * out["local"] + 0.01 * out["kl"]
    assert out["loss"].item() == pytest.approx(total.item(), rel=1e-6)
    assert abs(out["global"].item() - 2 * LOG2) < 0.1 and abs(out["local"].item() - 2 * LOG2) < 0.1


def test_bad_inputs():
    m = im.InfoMax(width=0.125, z_dim=8, critic_width=8)
    with pytest.raises(ValueError, match="global critic input"):
        im.global_pairs(torch.zeros(2, 8), torch.zeros(2, 4, 4, 4), torch.arange(2), "both")
    with pytest.raises(ValueError, match="global critic input"):
        im.InfoMax(global_input="both")
    with pytest.raises(ValueError, match="GlobalCritic expects"):
        m.global_critic(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="LocalCritic expects"):
        m.local_critic(torch.zeros(2, 5, 4, 4))
    with pytest.raises(ValueError, match="Encoder expects"):
        m.encoder(torch.zeros(3, 32, 32))
    with pytest.raises(ProfileError):
        im.config("huge")
    with pytest.raises(ValueError, match="multiple of 8"):
        im.InfoMax(image_size=30)
    with pytest.raises(ConfigError, match="gamma"):
        im.InfoMax(gamma=-0.01)


@pytest.mark.parametrize("bad", [dict(epochs=0), dict(batch_size=-1), dict(seeds=0), dict(gamma=-1.0),
                                 dict(per_batch=0), dict(width=0.0), dict(view_gray=1.5), dict(epochs=10),
                                 dict(sweep_seeds=6), dict(sweep_epochs=30), dict(view_epochs=0),
                                 dict(toy_rhos=(0.5, 1.0)), dict(sweep=((0.0, "both"),))])
def test_config_refuses_bad_settings(bad):
    with pytest.raises(ConfigError):
        im.Config(**bad)


def test_equal_encoder_passes():
    for p in ("smoke", "cpu", "full"):
        cfg = im.config(p)
        assert cfg.equal_pass_epochs == 2 * cfg.view_epochs <= cfg.epochs
    assert im.config("full").equal_pass_epochs == im.config("full").epochs == 50


# ------------------------------------------------------------------ training
def test_short_training_run_moves_the_loss_down():
    cfg = im.Config(width=0.125, z_dim=8, critic_width=16, batch_size=16, epochs=4, view_epochs=2, lr=3e-3)
    torch.manual_seed(0)
    x = torch.rand(64, 3, 32, 32) - 0.5
    run = im.train_infomax(cfg, x, snapshot_epochs=(2,), progress=False)
    losses = [e["loss"] for e in run.epochs]
    assert all(np.isfinite(losses)) and len(losses) == 4
    assert losses[-1] < run.initial["loss"]
    assert 2 in run.snapshots
    enc = im.encoder_from_snapshot(cfg, run.snapshots[2])
    mu, lv = im.encode(enc, x)
    assert mu.shape == (64, 8) and lv.shape == (64, 8) and not enc.training
    s = G.code_statistics(mu, lv)
    assert s["agg_var"] > 0 and np.isfinite(s["mean_logvar"])
    with pytest.raises(ConfigError, match="epochs"):
        im.train_infomax(cfg, x, epochs=0, progress=False)


def test_two_view_training_and_knn_by_epoch():
    rng = np.random.default_rng(0)
    data = im.CifarData(rng.integers(0, 256, (48, 32, 32, 3), dtype=np.uint8), np.arange(48) % 4,
                        rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8), np.arange(12) % 4, "test")
    cfg = im.Config(width=0.125, z_dim=8, critic_width=16, batch_size=16, knn_k=3, epochs=4, view_epochs=2,
                    sweep_epochs=2, seeds=2, sweep_seeds=2)
    runs = im.train_seeds(cfg, im.images_to_input(data.x_train), views=2, progress=False)
    run = runs[0]
    assert [r.seed for r in runs] == [0, 1] and run.views == 2 and run.name.endswith("two views")
    assert len(run.epochs) == cfg.view_epochs == 2 and sorted(run.snapshots) == [2]
    curve = im.knn_by_epoch(cfg, data, run)
    assert sorted(curve) == [2] and all(0 <= v <= 1 for v in curve.values())
    by_pass = im.knn_by_passes(cfg, data, runs)     # epoch 2 of two views = 4 encoder passes
    assert sorted(by_pass) == [4] and all(len(v) == 2 for v in by_pass.values())


def test_load_cifar_picks_first_images_of_each_batch_by_canonical_index(monkeypatch):
    # an offline-subset-like source: the first 3 images of each batch, with canonical indices
    idx = np.concatenate([b * 10_000 + np.arange(3) for b in range(5)])
    tr = ArrayData(np.zeros((15, 1, 1, 3), np.uint8), idx % 10, "subset", "cifar-10", "train", idx)
    te = ArrayData(np.zeros((7, 1, 1, 3), np.uint8), np.zeros(7, np.int64), "subset", "cifar-10", "test")
    monkeypatch.setattr(experiments, "load", lambda name, split, limit=None: tr if split == "train" else te)
    d = im.load_cifar(im.Config(per_batch=2, n_test=7))
    assert list(d.y_train) == [0, 1] * 5
    with pytest.raises(ValueError, match="holds"):
        im.load_cifar(im.Config(per_batch=4, n_test=7))
    with pytest.raises(ValueError, match="asks for"):
        im.load_cifar(im.Config(per_batch=2, n_test=8))


def test_smoke_profile_reads_the_bundled_sample(monkeypatch):
    monkeypatch.setenv("DLBOOK_PROFILE", "smoke")
    d = im.load_cifar(im.config("smoke"))
    assert d.x_train.shape == (250, 32, 32, 3) and d.x_test.shape == (100, 32, 32, 3) and "sample" in d.source


def test_profiles_exist_and_full_is_the_post():
    full = im.config("full")
    assert (full.width, full.z_dim, full.batch_size, full.epochs, full.lr) == (1.0, 256, 64, 50, 1e-3)
    assert (full.alpha, full.beta, full.gamma) == (0.5, 1.5, 0.01) and full.per_batch is None
    assert im.config("smoke").epochs <= im.config("cpu").epochs and im.config("cpu").seeds >= 5
    assert im.config("cpu").lengths == (6, 12, 24) and im.config("full").lengths == (12, 25, 50)


def test_compare_features_entries_and_table():
    rng = np.random.default_rng(0)
    data = im.CifarData(rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8), np.arange(40) % 4,
                        rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8), np.arange(12) % 4, "test")
    cfg = im.Config(width=0.125, z_dim=8, knn_k=3)
    enc = im.random_encoder(cfg)
    out = im.compare_features(cfg, data, {"pix": None, "cen": ("pixels", "centred"), "mu": enc, "loc": (enc, "local")})
    assert set(out) == {"pix", "cen", "mu", "loc"} and "agg_var" in out["mu"] and "agg_var" not in out["loc"]
    assert all(0 <= out[k]["knn_acc"] <= 1 for k in out)
    assert out["mu"]["knn_ok"].shape == (12,) and out["mu"]["knn_acc"] == out["mu"]["knn_ok"].mean()
    table = im.feature_table({**out, "two": [out["mu"], out["mu"]]}, ["pix", "mu", "two"]).splitlines()
    assert len(table) == 5 and table[0].startswith("| features | top-10 label agreement | 10-NN accuracy")
    assert table[2].startswith(f"| pix | {spread([out['pix']['agreement']])} |") and table[2].endswith("| - |")
    assert table[3].endswith(f"| {spread([out['mu']['abs_mean_mu']])} |")
    assert table[4].startswith("| two (2 seeds) |") and " ± 0 [" in table[4]
    with pytest.raises(ValueError, match="layer"):
        im.compare_features(cfg, data, {"bad": (enc, "top")})
    pix = im.pixel_baselines(cfg, data)
    assert set(pix["best"]) == {"agreement", "knn_acc", "probe_acc"} and "pixels, raw, k=6" in pix["scores"]


def test_pixel_features():
    x = np.random.default_rng(0).integers(0, 256, (5, 4, 4, 3), dtype=np.uint8)
    raw, cen = (im.pixel_features(x, k) for k in im.PIXEL_KINDS)
    assert raw.shape == (5, 48) and raw.min() >= -0.5 and raw.max() <= 0.5
    assert np.allclose(cen.mean(1), 0, atol=1e-6) and np.allclose(raw - cen, (raw - cen)[:, :1], atol=1e-6)
    with pytest.raises(ValueError, match="preprocessing"):
        im.pixel_features(x, "whitened")


def test_retrieval_figure_tiles_rows_with_make_grid():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.random.default_rng(0).integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    fig = im.retrieval_figure(x, np.arange(20) % 3, [[0, 1, 2, 3], [4, 5, 6, 7]], ["a", "b"], [str(i) for i in range(3)])
    assert len(fig.axes) == 2 and fig.get_size_inches()[0] <= 10
    assert fig.axes[0].images[0].get_array().shape[:2] == (36, 4 * 34 + 2)
    plt.close(fig)


# ------------------------------------------------------------------ claims
def _results(gap, spread_pts=0.5, seeds=5, view_gain=5.0, toy_err=0.05):
    """Plain results as `gather` returns them: the post's recipe `gap` points above a random
    encoder after its full length (half that after half, a quarter after a quarter), seed
    noise of `spread_pts` points."""
    rng = np.random.default_rng(0)
    perms = iter(rng.permutation(np.linspace(-1.2, 1.2, seeds)) for _ in range(100))
    noise = lambda: spread_pts / 100 * next(perms)   # mean exactly zero: estimates sit on their means
    rnd = {m: 0.3 + noise() for m in ("agreement", "knn_acc", "probe_acc")}
    post = {ep: {m: rnd[m] + gap / 100 * ep / 24 + noise() for m in rnd} for ep in (6, 12, 24)}
    views = {m: post[12][m] + view_gain / 100 + noise() for m in rnd}
    return {"toy": {"rhos": [0.5, 0.8], "rel": {0.5: list(toy_err + 2 * noise()), 0.8: list(0.02 + noise())},
                    "obj": [[-1.3, -1.1]] * seeds},
            "fn": {"batch": 64, "rate": 0.0157}, "epochs": 24, "lengths": [6, 12, 24], "view_epochs": 6,
            "equal_pass_epochs": 12, "sweep_epochs": 3, "self_first": True,
            "init_dev": list(0.005 + rng.uniform(0, 0.002, seeds)), "local_end": list(0.6 + noise()),
            "global_end": list(0.05 + noise()), "global_below_0.1": [8, 9, None, 7, 10][:seeds],
            "surrogate": {"first": [-1.2] * seeds, "last": [-0.4] * seeds, "drop": [0.0] * seeds},
            "gamma": {0.0: {"abs_mean_mu": [0.5, 0.6, 0.55], "agg_var": [3.0, 3.2, 2.9], "mean_logvar": [-4, -4.2, -3.9]},
                      0.01: {"abs_mean_mu": [0.4, 0.45, 0.5], "agg_var": [2.0, 2.1, 1.9], "mean_logvar": [-2, -2.1, -2.2]},
                      1.0: {"abs_mean_mu": [0.1, 0.12, 0.09], "agg_var": [1.1, 1.2, 1.05], "mean_logvar": [-0.5, -0.4, -0.6]}},
            "logvar_last_change": [-0.2, -0.3, -0.25], "random": rnd, "post": post, "views": views,
            "pixels": {"agreement": ("pixels, raw", 0.25), "knn_acc": ("pixels, centred, k=20", 0.37),
                       "probe_acc": ("pixels, raw", 0.31)},
            "paper_global": [], "post_global_short": []}


def _verdicts(res, **kw):
    return {c.id: c.verdict for c in im.claims(res, **kw)}


def test_claims_pass_fail_and_inconclusive_on_synthetic_results():
    big = _verdicts(_results(gap=10.0))
    assert big["C10 agreement 24ep"] == big["C10 probe 24ep"] == big["C10 trend agreement"] == "PASS"
    assert big["C10 knn 24ep"] == "PASS" and big["V1"] == big["V3"] == "PASS"
    assert big["C7a"] == big["C7b"] == big["C7c"] == big["C7d"] == "PASS"
    assert big["C8a"] == big["C8b"] == big["C9a"] == big["C9b"] == "PASS"
    assert big["C5-MLP 0.5"] == big["C5-MLP 0.8"] == big["C5-MLP mono"] == "PASS"
    none = _verdicts(_results(gap=0.0, spread_pts=0.3))
    assert none["C10 agreement 24ep"] == none["C10 probe 24ep"] == "FAIL"   # the interval lies below 3 points
    assert none["C10 knn-pixels"] == "FAIL" and none["V2"] == "FAIL"          # pixels are ahead
    noisy = _verdicts(_results(gap=3.0, spread_pts=6.0, toy_err=0.15))
    assert noisy["C10 agreement 24ep"] == "INCONCLUSIVE" and noisy["C5-MLP 0.5"] == "INCONCLUSIVE"
    assert none["C12"] == "n/a (full profile)" and none["G1-train"] == "n/a (full profile)"
    assert none["C11"] == "holds by construction"


def test_claims_rows_carry_the_mde_and_the_scaling_slope():
    cl = {c.id: c for c in im.claims(_results(gap=3.0, spread_pts=6.0))}
    c = cl["C10 agreement 24ep"]
    assert c.n == 5 and c.mde > 0 and "80 %" in c.note and c.measured.endswith(" pt")
    # the slope per doubling of epochs: 6 -> 12 -> 24 adds gap / 4 then gap / 2
    res = _results(gap=8.0, spread_pts=0.0)
    slope = {c.id: c for c in im.claims(res)}["C10 trend probe"].estimate
    x = np.log2([6, 12, 24])
    want = np.polyfit(x, [8 * 6 / 24, 8 * 12 / 24, 8.0], 1)[0]
    assert slope == pytest.approx(want, abs=1e-6)


def test_claims_full_profile_decides_c12_and_the_paper_critic():
    res = _results(gap=12.0)
    res["paper_global"], res["post_global_short"] = [1.2, 1.3, 1.25], [0.1, 0.2, 0.15]
    v = _verdicts(res, full=True)
    assert v["C12"] == "PASS" and v["G1-train"] == "PASS"


def test_gather_reads_runs_and_scores():
    from types import SimpleNamespace as NS

    cfg = im.Config(epochs=4, view_epochs=2, sweep_epochs=2, seeds=2, sweep_seeds=2)
    ep = lambda g, l, lv: {"global": g, "local": l, "logvar": lv}
    main = [NS(initial={"global": 1.39, "local": 1.38}, epochs=[ep(0.5, 1.2, 0), ep(0.08, 1.0, -0.1), ep(0.05, 0.9, -0.2),
                                                                ep(0.04, 0.8, -0.3)]) for _ in range(2)]
    sweep = [NS(gamma=g, global_input="post", epochs=[ep(0.1, 1, -1), ep(0.1, 1, -2)]) for _ in range(2) for g in (0.0, 1.0)]
    sc = lambda v: {"agreement": v, "knn_acc": v, "probe_acc": v, "abs_mean_mu": v, "agg_var": 1 + v, "mean_logvar": -v}
    names = [im.post_name(e) for e in (1, 2, 4)] + ["random encoder", im.VIEW_NAME] + \
        [im.sweep_name(g, "post", 2) for g in (0.0, 1.0)]
    scores = {n: [sc(0.3), sc(0.32)] for n in names}
    pix = {"best": {m: "pixels, raw" for m in ("agreement", "knn_acc", "probe_acc")},
           "scores": {"pixels, raw": sc(0.25)}}
    toys = [{"rho": [0.5, 0.8, 0.95], "true": [0.144, 0.511, 1.164], "mlp": [0.15, 0.5, 1.1],
             "obj_mlp": [-1.3, -1.1, -0.8]}] * 2
    fn = {"batch": [8, 64], "randperm": [0.12, 0.016]}
    res = im.gather(cfg, toys, fn, main, sweep, scores, pix, True)
    assert res["global_below_0.1"] == [2, 2] and res["init_dev"][0] == pytest.approx(2 * LOG2 - 1.38)
    assert sorted(res["gamma"]) == [0.0, 0.01, 1.0] and res["logvar_last_change"] == [-1.0, -1.0]
    assert res["toy"]["rel"][0.5][0] == pytest.approx(abs(0.15 - 0.144) / 0.144)
    assert res["fn"]["rate"] == 0.016 and res["pixels"]["knn_acc"] == ("pixels, raw", 0.25)
    assert {c.id for c in im.claims(res)} >= {"C7a", "C9a", "C10 trend knn", "V4"}


def test_claims_mark_a_rho_no_seed_ran():
    res = _results(gap=10.0)
    res["toy"]["rel"][0.95] = []  # a short sweep (a rehearsal of the full profile) skips it
    assert _verdicts(res)["C5-MLP 0.95"] == "n/a (no run at this rho)"
