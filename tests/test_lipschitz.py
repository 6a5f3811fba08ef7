"""Chapter 02 (dlbook.lipschitz): power iteration and its bound, the gradients of sigma and of
W / sigma, the product bound, BatchNorm's loophole (L9), the post-update projection, the
classifier's penalties, the critics on fixed samples, the settings and the image table."""
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from dlbook import gan, gan_runs as gr
from dlbook import lipschitz as lp
from dlbook.config import ConfigError


pytestmark = pytest.mark.usefixtures("one_thread")


def spectrum(n=32, m=24, s=(2.0, 1.0), seed=0):
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(m, m, generator=g, dtype=torch.float64))
    k = min(n, m)
    sv = torch.cat([torch.tensor(s, dtype=torch.float64), torch.linspace(0.9, 0.1, k - len(s), dtype=torch.float64)])
    return U[:, :k] @ torch.diag(sv) @ V[:, :k].T


# ---------------------------------------------------------------- power iteration


def test_power_iteration_converges_at_the_rate_of_the_gap():
    W = spectrum()
    err = np.abs(lp.power_curve(W, 10) - 2.0) / 2.0
    assert err[7] < 1e-8
    ratios = err[2:8] / err[1:7]
    assert np.all(ratios < 0.08) and abs(ratios[-1] - 0.0625) < 0.01  # (s2/s1)^4


def test_the_estimate_never_exceeds_sigma_1():
    g = torch.Generator().manual_seed(1)
    worst = -1.0
    for i in range(300):
        n, m = (int(v) for v in torch.randint(1, 40, (2,), generator=g))
        W = torch.randn(n, m, generator=g, dtype=torch.float64) * float(torch.rand(1, generator=g) * 5)
        v0 = torch.randn(m, generator=g, dtype=torch.float64) if i % 2 else None
        r = int(torch.randint(1, 6, (1,), generator=g))
        s = float(lp.power_iteration(W, r, v0).sigma)
        worst = max(worst, (s - float(torch.linalg.matrix_norm(W, 2))) / max(float(torch.linalg.matrix_norm(W, 2)), 1e-300))
    assert worst <= 1e-12


def test_power_iteration_outputs_unit_vectors_and_a_rank_one_kernel_is_exact_at_once():
    W = torch.randn(1, 8192, dtype=torch.float64)
    s, u, v = lp.power_iteration(W, 1)
    assert abs(float(s) - float(W.norm())) < 1e-12 * float(W.norm())
    assert abs(float(u.norm()) - 1) < 1e-12 and abs(float(v.norm()) - 1) < 1e-12


def test_persistent_vector_tracks_a_drifting_matrix():
    W = spectrum(seed=2)
    g = torch.Generator().manual_seed(3)
    v = None
    for _ in range(50):
        W = W + 1e-3 * torch.randn(W.shape, generator=g, dtype=torch.float64)
        s, _, v = lp.power_iteration(W, 1, v)
    assert abs(float(s) / float(torch.linalg.matrix_norm(W, 2)) - 1) < 1e-4


def test_the_posts_helper_and_the_layouts():
    w = torch.randn(5, 5, 3, 8, dtype=torch.float64)  # Keras (k, k, C_in, C_out)
    torch_kernel = w.permute(3, 2, 0, 1)  # (C_out, C_in, k, k)
    s_keras = torch.linalg.svdvals(lp.as_matrix(torch_kernel, "keras"))
    s_torch = torch.linalg.svdvals(lp.as_matrix(torch_kernel))
    assert torch.allclose(s_keras, s_torch)
    assert torch.equal(lp.as_matrix(torch_kernel, "keras"), w.reshape(-1, 8))
    assert abs(float(lp.post_spectral_norm(w, 200)) - float(s_torch[0])) < 1e-8
    gamma = torch.tensor([3.0, -4.0], dtype=torch.float64)
    assert float(lp.post_spectral_norm(gamma)) == pytest.approx(5.0, rel=1e-12)  # the BN constraint is gamma/||gamma||


def test_conv_operator_norm_of_a_1x1_conv_is_its_matrix_norm_and_uses_the_adjoint():
    w = torch.randn(6, 4, 1, 1, dtype=torch.float64)
    s = lp.conv_operator_norm(w, (4, 5, 5), iters=500)
    assert s == pytest.approx(float(torch.linalg.matrix_norm(w[:, :, 0, 0], 2)), rel=1e-8)
    # a strided 4x4 kernel: the true operator norm is larger than the reshaped matrix's norm here
    torch.manual_seed(0)
    k = torch.randn(8, 1, 4, 4, dtype=torch.float64)
    assert lp.conv_operator_norm(k, (1, 16, 16), 2, 1) > float(torch.linalg.matrix_norm(lp.as_matrix(k), 2))
    with pytest.raises(ValueError, match="input channels"):
        lp.conv_operator_norm(k, (3, 16, 16), 2, 1)


# ---------------------------------------------------------------- gradients


def test_sigma_gradient_is_u1_v1_transposed():
    W = spectrum(seed=4).requires_grad_(True)
    (g,) = torch.autograd.grad(torch.linalg.svdvals(W)[0], W)
    assert torch.allclose(g, lp.sigma_grad(W.detach()), atol=1e-10)


def test_sn_gradient_formula_matches_autograd_through_w_over_sigma():
    W = spectrum(seed=5).requires_grad_(True)
    G = torch.randn(W.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    loss = (G * (W / torch.linalg.matrix_norm(W, 2))).sum()  # dL/dWbar = G
    (auto,) = torch.autograd.grad(loss, W)
    assert torch.allclose(auto, lp.sn_grad(W.detach(), G), atol=1e-10)
    # the projection's gradient is G itself: the cosine with the true one is below 1
    cos = lp.gradient_cosines(width=16)
    assert all(0 < c < 1 for c in cos)


# ---------------------------------------------------------------- bounds and constructions


def test_product_bound_and_exact_normalisation():
    torch.manual_seed(0)
    net = gan.mlp(2, 1, 32, 2, "lrelu").double()
    x = torch.randn(20000, 2, dtype=torch.float64)
    q = lp.difference_quotient(net, x, x + 1e-4 * torch.randn_like(x))
    assert float(q.max()) <= lp.product_bound(net) and float(lp.grad_norms(net, x).max()) <= lp.product_bound(net)
    assert lp.product_bound(net) <= lp.frobenius_product(net)
    lp.exact_spectral_normalise(net)
    assert lp.product_bound(net) == pytest.approx(1.0, abs=1e-12)
    assert float(lp.grad_norms(net, x).max()) <= 1 + 1e-9


def test_batchnorm_breaks_the_bound_l9():
    r = lp.bn_gain()
    assert r["sigma_linear"] == pytest.approx(1.0, abs=1e-12) and r["gamma_norm"] == pytest.approx(1.0, abs=1e-12)
    assert r["gain"] > 10 and r["gain"] == pytest.approx(r["predicted"], rel=0.05)
    assert lp.bn_gain(bn_eps=1e-3)["gain"] < r["gain"]  # Keras' epsilon caps the gain lower, still > 1


def test_projection_normalises_after_the_step():
    torch.manual_seed(0)
    net = gan.mlp(2, 1, 16, 2, "lrelu")
    with torch.no_grad():
        net[0].weight.mul_(0.01)
    lp.project_spectral_(net, "above")
    assert float(torch.linalg.matrix_norm(net[0].weight.detach(), 2)) < 0.5  # below 1: left alone
    assert all(float(torch.linalg.matrix_norm(m.weight.detach(), 2)) <= 1 + 1e-6 for m in net if isinstance(m, nn.Linear))
    lp.project_spectral_(net, "always")
    assert all(abs(float(torch.linalg.matrix_norm(m.weight.detach(), 2)) - 1) < 1e-5 for m in net if isinstance(m, nn.Linear))
    with pytest.raises(ValueError, match="mode"):
        lp.project_spectral_(net, "sometimes")
    with pytest.raises(ValueError, match="mode"):
        lp.ProjectedWGAN("never")
    torch.manual_seed(1)
    wide = gan.mlp(2, 1, 64, 1, "lrelu")
    lp.project_spectral_(wide, "always", iters=5)  # the post's estimate is low: sigma ends >= 1
    assert all(float(torch.linalg.matrix_norm(m.weight.detach(), 2)) >= 1 - 1e-6 for m in wide if isinstance(m, nn.Linear))


def test_projected_wgan_runs_in_the_toolkit_loop_and_keeps_the_critic_normalised():
    torch.manual_seed(0)
    G = gan.ConvGenerator(8, 16, 1, 4, 8, 4)
    T = gan.ConvCritic(16, 1, 4, 8, 4, "none")
    x = torch.rand(64, 1, 16, 16) * 2 - 1
    cfg = gr.LoopConfig(steps=4, batch=16, n_critic=2, z_dim=8, log_every=2, eval_every=2, progress=False)
    run = gr.train_gan(G, T, lp.ProjectedWGAN(), lambda n, g: x[torch.randint(64, (n,), generator=g)], cfg,
                       device="cpu")
    assert np.isfinite(run.history["critic"]).all()
    for m in T.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            assert abs(float(torch.linalg.matrix_norm(lp.as_matrix(m.weight.detach()), 2)) - 1) < 1e-5


# ---------------------------------------------------------------- Wasserstein


def test_empirical_w1_and_the_one_dimensional_dual():
    g = np.random.default_rng(0)
    a, b = g.normal(0, 1, 7), g.normal(1.5, 0.5, 7)
    w_sorted = float(np.mean(np.abs(np.sort(a) - np.sort(b))))
    assert lp.empirical_w1(a[:, None], b[:, None]) == pytest.approx(w_sorted, rel=1e-12)
    assert lp.kr_dual_1d(a, b)[0] == pytest.approx(w_sorted, rel=1e-9)
    assert lp.kr_dual_1d(a, b, equal=True)[0] == pytest.approx(w_sorted, rel=1e-9)
    with pytest.raises(ValueError, match="same size"):
        lp.empirical_w1(a[:, None], b[:3, None])


def test_exact_sn_critic_stays_below_w1_and_an_unconstrained_one_does_not():
    cfg = lp.ToyCriticConfig(n=64, width=16, steps=150, every=10)
    xr, xf = lp.toy_samples(cfg)
    w1 = lp.empirical_w1(xr, xf)
    T, loss = lp.toy_critic("exact-sn", 16, 2)
    h = lp.fit_critic(T, loss, xr, xf, 150, lr=1e-2, every=10)
    assert h["dual"].max() <= w1 * (1 + 1e-5) and h["dual"][-1] > h["dual"][0]
    T, loss = lp.toy_critic("none", 16, 2)
    assert lp.fit_critic(T, loss, xr, xf, 150, lr=1e-2, every=10)["dual"][-1] > w1


def test_reparametrisation_and_projection_part_from_the_same_start():
    cfg = lp.ToyCriticConfig(n=64, width=16, l10_steps=15)
    out = lp.reparam_vs_projection(cfg)
    assert set(out) == set(lp.L10_VARIANTS)
    assert np.allclose(out["reparam"]["weights"][0], out["project"]["weights"][0])
    assert not np.allclose(out["reparam"]["weights"][-1], out["project"]["weights"][-1])
    assert (out["reparam"]["prod_sigma"] <= 1 + 1e-5).all()


# ---------------------------------------------------------------- classifier


def test_classifier_penalties_by_hand():
    torch.manual_seed(0)
    net = lp.Classifier(6, 5, 2, 3).double()
    weights = [lin.weight.detach() for lin in net.layers]
    wd = sum(float((w ** 2).sum()) for w in weights)
    assert float(net.penalty("wd").detach()) == pytest.approx(wd, rel=1e-12)
    for _ in range(200):
        p = net.penalty("snr").detach()
    exact = sum(float(torch.linalg.matrix_norm(w, 2)) ** 2 for w in weights)
    assert float(p) == pytest.approx(exact, rel=1e-9)
    net.zero_grad()
    net.penalty("snr").backward()
    want = 2 * float(torch.linalg.matrix_norm(weights[0], 2)) * lp.sigma_grad(weights[0])
    assert torch.allclose(net.layers[0].weight.grad, want, atol=1e-8)  # 2 sigma u v^T
    with pytest.raises(ValueError, match="kind"):
        net.penalty("l1")


def test_weight_decay_gradient_is_the_sgd_weight_decay_update():
    torch.manual_seed(0)
    W0 = torch.randn(4, 3, dtype=torch.float64)
    x = torch.randn(3, dtype=torch.float64)
    lam = 0.3
    a = W0.clone().requires_grad_(True)
    opt = torch.optim.SGD([a], lr=0.1)
    ((a @ x).sum() + lam * a.pow(2).sum()).backward()
    opt.step()
    b = W0.clone().requires_grad_(True)
    opt = torch.optim.SGD([b], lr=0.1, weight_decay=2 * lam)
    (b @ x).sum().backward()
    opt.step()
    assert torch.allclose(a, b, atol=1e-14)


def test_a_short_classifier_run_learns_and_weight_decay_shrinks_the_norms():
    cfg = lp.config("smoke").classifier
    cfg = replace(cfg, epochs=4)
    data = lp.classifier_data(cfg)
    runs = {reg: lp.train_classifier(cfg, reg, lam, 0, data) for reg, lam in
            (("none", 0.0), ("wd", 0.05), ("snr", 0.05))}
    assert runs["none"]["ce"][-1] < runs["none"]["ce"][0] and runs["none"]["train_acc"] > 0.5
    assert runs["wd"]["prod_frob"] < runs["none"]["prod_frob"]
    assert runs["snr"]["prod_sigma"] < runs["none"]["prod_sigma"]
    assert all(np.isfinite(r["grad_x"]) for r in runs.values())
    with pytest.raises(ValueError, match="reg"):
        lp.train_classifier(cfg, "dropout", 0.1, 0, data)
    assert lp.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)


# ---------------------------------------------------------------- settings and table


def test_settings_refuse_bad_values():
    with pytest.raises(ConfigError):
        lp.ClassifierConfig(epochs=0)
    with pytest.raises(ConfigError):
        lp.ClassifierConfig(wd_grid=(-1e-3,))
    with pytest.raises(ValueError, match="mnist"):
        lp.ClassifierConfig(data="cifar-10")
    with pytest.raises(ConfigError):
        lp.ToyCriticConfig(n=0)
    with pytest.raises(ValueError, match="gp_norm"):
        lp.Config(gp_norm="group")
    with pytest.raises(ValueError, match="kind"):
        lp.toy_critic("spectral")
    with pytest.raises(ValueError, match="matrix"):
        lp.power_iteration(torch.ones(3))
    with pytest.raises(ValueError, match="layout"):
        lp.as_matrix(torch.ones(2, 2), "caffe")
    for p in ("smoke", "cpu", "full"):
        assert isinstance(lp.config(p), lp.Config)


def test_image_table_runs_each_method_on_its_papers_recipe_and_full_is_the_posts_data():
    for p in ("cpu", "full"):
        cfg = lp.config(p)
        table = lp.image_table(cfg)
        assert list(table) == ["WGAN-SN", "WGAN-GP", "WGAN + projection"]
        assert [m.critic_norm for m in table.values()] == ["sn", cfg.gp_norm, "none"]
        sn, gp, proj = table.values()
        assert (gp.n_critic, gp.lr, gp.betas, gp.loss.lam) == (5, 1e-4, (0.5, 0.9), 10.0)  # Gulrajani et al.
        assert (sn.n_critic, sn.lr, sn.betas) == (1, 2e-4, (0.5, 0.999))  # Miyato et al.'s standard setting
        assert (proj.n_critic, proj.lr, proj.betas) == (sn.n_critic, sn.lr, sn.betas)
    ic = lp.config("full").image
    assert (ic.data, ic.img_size, ic.z_dim, ic.kernel, ic.batch, ic.max_ch) == ("celeba", 64, 100, 5, 64, 512)
    assert ic.steps >= 20000 and ic.eval_every == 1000


def test_config_seeds_follow_the_notebook_seed():
    from dlbook.config import seeded

    cfg = seeded(lp.config("cpu"), 7)
    assert cfg.image.seeds == (7, 8, 9) and cfg.classifier.seeds == (7, 8, 9)
    assert cfg.toy.seed == 7 and cfg.toy.probe_seeds == (7, 8, 9)
    assert seeded(lp.config("cpu"), 0) == lp.config("cpu")


def test_gp_optimum_is_where_the_scaled_critic_pays_off():
    w1, lam = 1.38, 10.0
    s = np.linspace(0.5, 2.0, 150001)
    assert lp.gp_optimum(w1, lam) == pytest.approx(s[np.argmax(s * w1 - lam * (s - 1) ** 2)], abs=1e-5)
    with pytest.raises(ConfigError):
        lp.gp_optimum(w1, 0.0)


def test_gp_probe_splits_the_grid_at_the_hull():
    cfg = lp.ToyCriticConfig(n=64, width=16, probe_steps=10, probe_seeds=(0,), probe_n=21)
    (p,) = lp.gp_probe(cfg)
    assert p["off"].any() and (~p["off"]).any() and p["off"][0]  # a corner of the square lies outside the hull
    assert p["max_off"] == pytest.approx(p["grad_grid"][p["off"]].max())


def test_trained_sn_critic_measurements_bound_the_constant_from_both_sides():
    torch.manual_seed(0)
    T = gan.ConvCritic(16, 1, 4, 8, 4, "sn")
    T.train()
    x = torch.randn(8, 1, 16, 16)
    for _ in range(3):
        T(x)  # power-iteration updates
    layers, g = lp.trained_sn_critic(T.eval(), x, 16, steps=5)
    assert len(layers) == 2 and all(l["sigma_hat"] <= l["sigma"] * (1 + 1e-9) for l in layers)
    assert g["on_data"] <= g["bound_op"] * (1 + 1e-6) and g["quotient"] <= g["bound_op"] * (1 + 1e-6)


def test_image_experiment_smoke_runs_every_method(tmp_path, monkeypatch):
    monkeypatch.setenv("DLBOOK_DATA", str(tmp_path / "data"))
    cfg = lp.config("smoke")
    cfg = replace(cfg, image=replace(cfg.image, steps=2, eval_every=2))
    res = lp.image_experiment(cfg)
    assert res.names == list(lp.image_table(cfg)) and all(np.isfinite(res.final(n)).all() for n in res.names)


def _synthetic_results(sn_better: bool = True) -> dict:
    """The shape `results_of` gives, with made-up numbers whose verdicts are known."""
    seeds = [0, 1, 2]
    c = lambda base, k=0.0: [base * (1 + 0.01 * (i - 1)) + k for i in range(3)]
    clf = {"none:0": dict(prod_frob=c(1000), prod_sigma=c(50), val_acc=c(0.95), test_acc=c(0.94), gap=c(0.05),
                          grad_x=c(1.2)),
           "wd:0.001": dict(prod_frob=c(250), prod_sigma=c(15), val_acc=c(0.949), test_acc=c(0.94), gap=c(0.05),
                            grad_x=c(0.5)),
           "wd:0.01": dict(prod_frob=c(55), prod_sigma=c(5), val_acc=c(0.90), test_acc=c(0.9), gap=c(0.03),
                           grad_x=c(0.5)),
           "snr:0.01": dict(prod_frob=c(300), prod_sigma=c(9), val_acc=c(0.951), test_acc=c(0.944), gap=c(0.05),
                            grad_x=c(0.48))}
    steps = [0.0, 200.0, 400.0, 600.0]
    fd = lambda end: [[1400.0, 1000.0, 800.0, end + 10 * i] for i in range(3)]
    share = lambda end: [[0.0, 0.1, 0.3, end + 0.01 * i] for i in range(3)]
    runs = {"WGAN-SN": {"step": steps, "fd": fd(500 if sn_better else 900), "kid": fd(200), "seconds": [50.0] * 3,
                        "confident": share(0.7)},
            "WGAN-GP": {"step": steps, "fd": fd(700), "kid": fd(300), "seconds": [250.0] * 3, "confident": share(0.2)},
            "WGAN + projection": {"step": steps, "fd": fd(1200), "kid": fd(500), "seconds": [45.0] * 3,
                                  "confident": share(0.1)}}
    rng = np.random.default_rng(0)
    return {"profile": "cpu", "seeds": seeds, "wd_grid": [0.0, 1e-3, 1e-2], "snr_grid": [1e-2], "lam_wd": 1e-3,
            "lam_snr": 1e-2, "clf": clf, "w1": 1.38, "steps": 100,
            "dual": {"exact-sn": ([0, 100], [0.1, 0.44]), "sn-1step": ([0, 100], [0.1, 0.45]),
                     "none": (list(range(11)), [0.5 * k for k in range(11)]), "gp": ([0, 100], [0.5, 1.07]),
                     "gp-one-sided": ([0, 100], [0.5, 1.07]), "clip": ([0, 100], [0.0, 0.004])},
            "gp_lams": {5.0: 1.14, 10.0: 1.07, 40.0: 1.015},
            "probe": [dict(seed=s, max_off=1.2, max_on=1.2, max_inter=1.2 - 0.001 * s, share_off_above=1.0)
                      for s in seeds],
            "l10": {k: {"dual": 0.3, "prod_sigma": p, "max_grad": 0.5} for k, p in
                    (("reparam", 1.0), ("project", 1.0), ("project-above", 1.0), ("project-post", 1.09))},
            "l10_steps": 20, "times": {"toy": {"GP": list(2 + 0.1 * rng.random(50)), "SN": list(1 + 0.1 * rng.random(50))},
                                       "img": {"GP": list(2 + 0.1 * rng.random(50)), "SN": list(1 + 0.1 * rng.random(50))}},
            "image": {"steps": 600, "seeds": seeds, "metric": "classifier-FID",
                      "floor": {"fd": 13.0, "kid": 9.0, "kid_se": 7.0, "confident": 0.93, "n": 1000},
                      "runs": runs},
            "layers": [dict(c_in=1, c_out=8, size=32, sigma_hat=0.99, sigma=1.0, reshaped=1 / 0.99, operator=2.0)],
            "grads": dict(bound_op=1.8, bound_mat=0.27, on_data=0.6, quotient=0.65, after_ascent=0.68)}


def test_claims_decide_by_the_books_rule():
    got = {c.id: c for c in lp.claims(_synthetic_results())}
    assert got["L6a"].verdict == got["L6b"].verdict == "PASS"
    assert got["L7a-0.001"].verdict == "PASS"  # SNR at no lower validation accuracy, smaller product
    assert got["L7a-0.01"].verdict == "FAIL"  # the SNR setting that matches is less constrained than WD 1e-2
    assert got["L8a"].kind == "construction" and got["L8a"].verdict == "holds by construction"
    assert got["L8e"].verdict == "PASS"  # the overshoot is s* within the margin
    assert got["L8f"].verdict == "FAIL"  # no excess off the segments
    assert got["L10d"].verdict == "holds by construction" and got["L10e"].kind == "report"
    assert got["L11a"].verdict == got["L11b"].verdict == "PASS"
    assert got["L12a-fd"].verdict == "PASS" and got["L12b"].verdict == "PASS" and got["L12c-fd"].verdict == "PASS"
    assert got["L12-full"].verdict == "n/a (full profile)"
    assert got["L12p"].kind == "report" and "L12s-kid" in got and "L12s-confident" in got
    # readable digits: SN's 0.70-0.72 clear half the real share (0.465), GP's 0.20-0.22 fall short
    assert got["L12r-sn"].verdict == "PASS" and got["L12r-gp"].verdict == "FAIL" and got["L12r"].kind == "report"
    assert lp.claims(_synthetic_results(sn_better=False))[0].id == "L6a"
    assert {c.id: c for c in lp.claims(_synthetic_results(sn_better=False))}["L12a-fd"].verdict == "FAIL"
