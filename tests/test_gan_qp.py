"""Tests for chapter 06 (GAN-QP): losses against hand computations, the derivation helpers,
bad inputs and a short training run."""
import math

import numpy as np
import pytest
import torch

from dataclasses import replace

from dlbook import gan, gan_qp as Q, gan_runs as gr

# A 2-pair batch computed by hand: Delta = (1, 2); Euclidean d = (1, 2);
# L1 (mean |.|) d = (0.5, 1.0); L2 (RMS) d = (sqrt(0.5), sqrt(2)).
T_REAL = torch.tensor([[1.0], [3.0]])
T_FAKE = torch.tensor([[0.0], [1.0]])
X_REAL = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
X_FAKE = torch.tensor([[1.0, 0.0], [1.0, 3.0]])


def test_pair_distances_by_hand():
    assert torch.allclose(Q.pair_distance(X_REAL, X_FAKE, "euclid"), torch.tensor([1.0, 2.0]))
    assert torch.allclose(Q.pair_distance(X_REAL, X_FAKE, "l1"), torch.tensor([0.5, 1.0]))
    assert torch.allclose(Q.pair_distance(X_REAL, X_FAKE, "l2"), torch.tensor([math.sqrt(0.5), math.sqrt(2.0)]))
    # images: per-element averages, so a constant offset c gives d = c for both
    a, b = torch.zeros(3, 1, 4, 4), torch.full((3, 1, 4, 4), 0.5)
    assert torch.allclose(Q.pair_distance(a, b, "l1"), torch.full((3,), 0.5))
    assert torch.allclose(Q.pair_distance(a, b, "l2"), torch.full((3,), 0.5))


def test_critic_loss_pair_by_hand():
    # -mean(1, 2) + mean(1^2/(2*1*1), 2^2/(2*1*2)) = -1.5 + 0.75
    got = Q.qp_critic_loss(T_REAL, T_FAKE, X_REAL, X_FAKE, lam=1.0, dist="euclid", mode="pair")
    assert got.item() == pytest.approx(-0.75, abs=1e-6)
    # lam scales the penalty only: -1.5 + 0.75 / 4
    got4 = Q.qp_critic_loss(T_REAL.reshape(-1), T_FAKE.reshape(-1), X_REAL, X_FAKE, lam=4.0, dist="euclid")
    assert got4.item() == pytest.approx(-1.5 + 0.1875, abs=1e-6)


def test_critic_loss_broadcast_by_hand():
    # mean over i, j of Delta_i^2 / (2 d_j) = (1/2 + 1/4 + 4/2 + 4/4) / 4 = 0.9375
    got = Q.qp_critic_loss(T_REAL, T_FAKE, X_REAL, X_FAKE, lam=1.0, dist="euclid", mode="broadcast")
    assert got.item() == pytest.approx(-1.5 + 0.9375, abs=1e-6)
    # with equal distances the two forms agree only if all Delta_i^2 / d_j are the same pairing-free
    xr, xf = torch.zeros(2, 2), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    a = Q.qp_critic_loss(T_REAL, T_FAKE, xr, xf, 1.0, "euclid", "pair")
    b = Q.qp_critic_loss(T_REAL, T_FAKE, xr, xf, 1.0, "euclid", "broadcast")
    assert a.item() == pytest.approx(b.item(), abs=1e-6)


def test_generator_loss_by_hand():
    assert Q.qp_generator_loss(T_REAL, T_FAKE).item() == pytest.approx(1.5)
    got = Q.qp_generator_loss(T_REAL, T_FAKE, X_REAL, X_FAKE, lam=1.0, dist="euclid", quadratic=True)
    assert got.item() == pytest.approx(0.75, abs=1e-6)


def test_critic_gradient_vanishes_at_lam_d():
    # d loss / d Delta_i = (-1 + Delta_i / (lam d_i)) / N: zero at Delta = lam d (point-mass optimum)
    lam = 3.0
    d = Q.pair_distance(X_REAL, X_FAKE, "euclid")
    t = (lam * d).clone().requires_grad_(True)
    loss = Q.qp_critic_loss(t, torch.zeros(2), X_REAL, X_FAKE, lam, "euclid", eps=0.0)
    loss.backward()
    assert t.grad.abs().max().item() < 1e-6
    assert loss.item() == pytest.approx(-lam * d.mean().item() / 2, rel=1e-6)
    # elsewhere the gradient matches the formula
    t2 = torch.tensor([1.0, 1.0], requires_grad=True)
    Q.qp_critic_loss(t2, torch.zeros(2), X_REAL, X_FAKE, lam, "euclid", eps=0.0).backward()
    want = (-1 + t2.detach() / (lam * d)) / 2
    assert torch.allclose(t2.grad, want, atol=1e-6)


def test_bad_inputs():
    with pytest.raises(ValueError, match="unknown distance"):
        Q.pair_distance(X_REAL, X_FAKE, "cosine")
    with pytest.raises(ValueError, match="differ"):
        Q.pair_distance(X_REAL, X_FAKE[:1], "l1")
    with pytest.raises(ValueError, match="unknown penalty mode"):
        Q.qp_critic_loss(T_REAL, T_FAKE, X_REAL, X_FAKE, mode="sum")
    with pytest.raises(ValueError, match="lam must be > 0"):
        Q.qp_critic_loss(T_REAL, T_FAKE, X_REAL, X_FAKE, lam=0.0)
    with pytest.raises(ValueError, match="lam must be > 0"):
        Q.GANQP(lam=-1.0)
    with pytest.raises(ValueError, match="differ in shape"):
        Q.qp_critic_loss(torch.zeros(2, 2), T_FAKE, X_REAL, X_FAKE)
    with pytest.raises(ValueError, match="one score per sample"):
        Q.qp_critic_loss(torch.zeros(2, 2), torch.zeros(2, 2), X_REAL, X_FAKE)
    # the generator loss never broadcasts: (2,) against (1,) or (2, 1) against (2,) is refused
    with pytest.raises(ValueError, match="differ in shape"):
        Q.qp_generator_loss(torch.zeros(2), torch.zeros(1))
    with pytest.raises(ValueError, match="differ in shape"):
        Q.qp_generator_loss(T_REAL, torch.zeros(2))
    with pytest.raises(ValueError, match="critic outputs for"):
        Q.qp_generator_loss(torch.zeros(3), torch.zeros(3), X_REAL, X_FAKE, quadratic=True)
    with pytest.raises(ValueError, match="batches"):
        Q.qp_generator_loss(T_REAL, T_FAKE, X_REAL, X_FAKE[:1], quadratic=True)
    with pytest.raises(ValueError, match="critic outputs for"):
        Q.qp_critic_loss(torch.zeros(3), torch.zeros(3), X_REAL, X_FAKE)
    with pytest.raises(ValueError, match="needs x_real"):
        Q.qp_generator_loss(T_REAL, T_FAKE, quadratic=True)
    with pytest.raises(ValueError, match="unknown distance"):
        Q.GANQP(dist="linf")
    with pytest.raises(ValueError, match="unknown penalty mode"):
        Q.GANQP(mode="mean")
    with pytest.raises(ValueError, match="unknown critic"):
        Q.qp_point_mass(1.0, 1.0, critic="ternary")


def test_point_masses():
    v = Q.sgan_point_mass(20000)
    assert v[-1] < math.log(2) and v[-1] > math.log(2) - 1e-3
    for lam in (0.5, 1.0, 10.0):
        for critic in ("binary", "unary"):
            val, z = Q.qp_point_mass(lam, 3.0, critic)
            assert val == pytest.approx(lam * 3.0 / 2, abs=1e-9)
            assert z == pytest.approx(lam * 3.0, abs=1e-9)


def test_discrete_closed_form_unary_and_bounds():
    rng = np.random.default_rng(1)
    for _ in range(200):
        pr = Q.random_problem(rng)
        o = Q.qp_binary_optimum(pr)
        val, grad = Q.qp_objective_binary(o["delta"] / 2, pr)  # T = Delta*/2 has antisymmetric part Delta*
        assert val == pytest.approx(o["value"], rel=1e-9)
        assert np.abs(grad).max() < 1e-12  # stationary point of a concave objective
        assert o["e_delta"] == pytest.approx(o["gen_value"], rel=1e-9)
        assert np.all(np.abs(o["delta"]) <= pr.lam * pr.d * (1 + 1e-12))
        u = Q.qp_unary_optimum(pr)
        assert -1e-15 <= u["value"] <= o["value"] * (1 + 1e-12)
        assert u["value"] == pytest.approx(u["value_half_bt"], rel=1e-9)
        lo, hi = Q.qp_bounds(pr)
        assert lo * (1 - 1e-12) <= o["e_delta"] <= hi * (1 + 1e-12)
    pr = Q.random_problem(rng)
    assert Q.maximise_binary(pr) == pytest.approx(Q.qp_binary_optimum(pr)["value"], rel=1e-7)
    for _ in range(50):  # disjoint supports: both bounds are attained
        pr = Q.random_problem(rng, disjoint=True)
        o, (lo, hi) = Q.qp_binary_optimum(pr), Q.qp_bounds(pr)
        assert lo == pytest.approx(o["e_delta"], rel=1e-9) and hi == pytest.approx(o["e_delta"], rel=1e-9)


def test_unary_bound_can_fail():
    rng = np.random.default_rng(0)
    worst = [Q.qp_unary_optimum(Q.random_problem(rng))["worst_ratio"] for _ in range(200)]
    assert max(worst) > 1.0  # the automatic bound is not exact for a one-argument critic


def test_separated_gaussians_coarse():
    for beta in (2.0, 4.0):
        qp = Q.qp_div_gauss(beta, n=401)
        assert qp == pytest.approx(beta / 2, abs=2e-3)
        dqp = (Q.qp_div_gauss(beta + 1e-3, n=401) - Q.qp_div_gauss(beta - 1e-3, n=401)) / 2e-3
        assert dqp == pytest.approx(0.5, abs=1e-3)
        djs = -(Q.js_gauss_deficit(beta + 1e-3) - Q.js_gauss_deficit(beta - 1e-3)) / 2e-3
        assert 0 < djs < 1e-2  # JS saturates at log 2: its gradient vanishes
    assert Q.js_gauss(0.0) == pytest.approx(0.0, abs=1e-12)


def test_ganqp_loss_object_and_short_training():
    torch.manual_seed(0)
    data = gan.toy_dataset("8gaussians")
    G, T = gan.mlp(2, 2, 32, 2), gan.mlp(2, 1, 32, 2, "lrelu")
    loss = Q.GANQP(lam=1.0, dist="euclid")
    assert loss.n_critic == 2
    xr = data.sample(64, torch.Generator().manual_seed(0))
    lt, logs = loss.critic_loss(T, xr, G(torch.randn(64, 2)).detach())
    assert lt.ndim == 0 and set(logs) == {"critic", "delta"}
    cfg = gr.LoopConfig(steps=60, batch=64, n_critic=2, z_dim=2, log_every=10, eval_every=60, progress=False)
    with gr.cpu_threads(1, torch.device("cpu")):  # tiny nets: one thread avoids contention on a shared machine
        run = gr.train_gan(G, T, loss, data.sample, cfg, seed=0, device="cpu")
    c = np.array(run.history["critic"])
    assert np.all(np.isfinite(c)) and np.all(np.isfinite(run.history["generator"]))
    assert c[-1] < 0  # the critic attains a negative loss: a positive QP-div estimate
    assert run.history["delta"][-1] > 0


def test_configs_and_tables():
    for p in ("smoke", "cpu", "full"):
        cfg = Q.config(p)
        assert cfg.n_critic == 2 and cfg.image_lam == 10.0 and cfg.image.fit in ("pad", "resize")
    cpu = Q.config("cpu")
    jobs = Q.toy_table(cpu)
    keys = {j.key for j in jobs}
    assert len(keys) == len(jobs)
    assert ("main", 1.0, 1) in keys and ("1:1", 10.0, 0) in keys and ("broadcast", 10.0, 0) in keys
    assert {j.key: j.n_critic for j in jobs}[("1:1", 10.0, 0)] == 1
    # Q8: at least four seeds of lambda = 100, plain and with T = lambda t
    assert len(cpu.collapse_seeds) >= 4 and len(cpu.seeds) >= 3
    assert all(("main", 100.0, s) in keys and ("scaled", 100.0, s) in keys for s in cpu.collapse_seeds)
    assert all(j.loss.scaled == (j.key[0] == "scaled") for j in jobs)
    # every ablation has its plain twin (Q9, Q10 pair by seed)
    assert all(("main", 10.0, s) in keys for s in cpu.ablation_seeds) and len(cpu.ablation_seeds) >= 6
    full = Q.image_table(Q.config("full"))
    assert list(full) == ["GAN-QP", "WGAN-GP", "SGAN-SN"] and full["SGAN-SN"].critic_norm == "sn"
    # each baseline on its own published recipe: WGAN-GP as Gulrajani et al., SGAN-SN as DCGAN / Miyato's C
    gp, sn = full["WGAN-GP"], full["SGAN-SN"]
    assert (gp.n_critic, gp.lr, gp.betas, gp.loss.lam, gp.critic_norm) == (5, 1e-4, (0.5, 0.9), 10.0, "ln")
    assert (sn.n_critic, sn.lr, sn.betas) == (1, 2e-4, (0.5, 0.999))
    assert list(Q.image_table(cpu)) == ["GAN-QP", "WGAN-GP"] and repr(Q.image_table(cpu)["WGAN-GP"]) == repr(gp)
    with pytest.raises(ValueError, match="unknown comparison"):
        replace(cpu, compare=("lsgan",))
    with pytest.raises(ValueError, match="lams"):
        replace(cpu, lams=(1.0, -10.0))
    with pytest.raises(ValueError, match="n_critic"):
        replace(cpu, n_critic=0)
    with pytest.raises(ValueError, match="collapse_lam"):
        replace(cpu, collapse_lam=30.0)
    with pytest.raises(ValueError, match="collapse_seeds"):
        replace(cpu, collapse_seeds=(0, -2))


def test_scaled_critic_makes_lambda_a_pure_scale_of_both_losses():
    torch.manual_seed(0)
    G, T = gan.mlp(2, 2, 16, 2).double(), gan.mlp(2, 1, 16, 2, "lrelu").double()
    xr, z = torch.randn(32, 2, dtype=torch.float64), torch.randn(32, 2, dtype=torch.float64)
    out = {}
    for lam in (1.0, 100.0):
        loss = Q.GANQP(lam, "euclid", scaled=True)
        lt = loss.critic_loss(T, xr, G(z).detach())[0]
        lg = loss.generator_loss(T, xr, G(z))
        out[lam] = (lt, torch.autograd.grad(lt, list(T.parameters())), lg,
                    torch.autograd.grad(lg, list(G.parameters())))
    assert out[100.0][0].item() == pytest.approx(100 * out[1.0][0].item(), rel=1e-12)
    assert out[100.0][2].item() == pytest.approx(100 * out[1.0][2].item(), rel=1e-12)
    for a, b in zip(out[1.0][1] + out[1.0][3], out[100.0][1] + out[100.0][3]):
        assert torch.allclose(b, 100 * a, rtol=1e-12, atol=0)
    # the critic it trains is lam t, and the slope probe measures that critic
    loss = Q.GANQP(100.0, "euclid", scaled=True)
    assert torch.allclose(loss.critic_values(T, xr), 100 * T(xr))
    r = Q.slope_probe(loss, T, xr, G(z).detach())
    r1 = Q.slope_probe(Q.GANQP(100.0, "euclid"), T, xr, G(z).detach())
    assert r["ratio_max"] == pytest.approx(100 * r1["ratio_max"], rel=1e-5)  # the probe works in float32
    assert "scaled=True" in repr(loss)  # so a checkpoint of the plain run never resumes a scaled one


def test_slope_probe_and_a_toy_job():
    cfg = replace(Q.config("smoke").toy, steps=20, eval_every=10, n_eval=200)
    job = [j for j in Q.toy_table(Q.config("smoke")) if j.key == ("main", 1.0, 0)][0]
    run = gr.toy_job(job, cfg)
    assert run.evals.steps == [0, 10, 20] and run.n_critic == 2
    assert {"modes", "quality", "ratio_q99", "ratio_max"} <= set(run.evals.metrics)
    assert all(r >= q for r, q in zip(run.evals["ratio_max"], run.evals["ratio_q99"]))
    assert run.snapshots[20]["field"][1].shape == (cfg.field_n, cfg.field_n)


def test_seeds_follow_the_notebook_seed():
    from dlbook.config import seeded

    cfg = seeded(Q.config("cpu"), 7)
    assert cfg.seeds == (7, 8, 9) and cfg.image.seeds == tuple(range(7, 15)) and cfg.ablation_seeds[0] == 7
    keys = {j.key for j in Q.toy_table(cfg)}
    assert ("main", 1.0, 7) in keys and ("main", 10.0, 12) in keys and ("broadcast", 10.0, 12) in keys
    assert not any(k[2] < 7 for k in keys)


def _fake_results(q10=0.85, qb=0.8, modes_b=7):
    """Results as `results_of` returns them, for three seeds, without training anything."""
    runs = []
    for s in range(3):
        for name, lam, q, modes, first in (("main", 1.0, 0.86, 8, 1000), ("main", 10.0, q10, 8, 1500),
                                           ("main", 100.0, 0.7, 8, 3500), ("scaled", 100.0, 0.86, 8, 1000),
                                           ("1:1", 10.0, 0.0, 0, None), ("gen-quad", 10.0, 0.77, 8, 2000),
                                           ("broadcast", 10.0, qb, modes_b, None)):
            runs.append({"name": name, "lam": lam, "seed": s, "modes": modes, "quality": q + 0.01 * s,
                         "ratio_q99": 2.4 + 0.1 * s, "first8": first})
    image = {"data": "mnist", "img_size": 32, "steps": 600, "metric": "classifier-FID", "kid_name": "classifier-KID",
             "accuracy": 0.98, "floor": {"fd": 13.0, "kid": 9.0, "kid_se": 7.0, "confident": 0.93, "n": 1000},
             "runs": {"GAN-QP": {"fd": [300.0, 400, 500], "kid": [200.0, 250, 300], "kid_se": [5.0, 5, 5],
                                 "confident": [0.4, 0.5, 0.6]},
                      "WGAN-GP": {"fd": [900.0, 950, 1000], "kid": [700.0, 720, 760], "kid_se": [6.0, 6, 6],
                                  "confident": [0.1, 0.2, 0.3]}}}
    return {"profile": "cpu", "toy_runs": runs, "steps": 4000, "eval_every": 250, "seeds": [0, 1, 2],
            "collapse_seeds": [0, 1, 2], "fail_seeds": [0, 1, 2], "ablation_seeds": [0, 1, 2],
            "plain10_seeds": [0, 1, 2], "collapse_lam": 100.0, "image": image}


def test_claims_decide_by_the_books_rule():
    cl = {c.id: c for c in Q.claims(_fake_results())}
    assert {"Q7", "Q7q", "Q7-1:1", "Q8", "Q8b", "Q8s", "Q9", "Q10", "Q4-toy", "Q11", "Q11k", "R11-floor", "Q11-faces"} <= set(cl)
    assert cl["Q7q"].verdict == "PASS" and cl["Q7-1:1"].verdict == "PASS" and cl["Q4-toy"].verdict == "PASS"
    assert cl["Q8"].verdict == "PASS"  # 3500 vs 1500 steps in every seed
    assert cl["Q8s"].verdict == "PASS"  # identical quality at lambda = 1 and scaled lambda = 100
    assert cl["Q9"].verdict == "PASS" and cl["Q11"].verdict == "PASS" and cl["Q11k"].verdict == "PASS"
    assert cl["Q7"].verdict == "PASS"  # 6 of 6 runs: the exact interval clears one half
    assert cl["Q8b"].verdict == "INCONCLUSIVE" and cl["Q8b"].mde == float("inf")  # 3 seeds cannot decide a rate
    assert cl["Q10"].verdict == "INCONCLUSIVE" and cl["Q10"].measured == "3/3 vs 0/3"
    assert "KID 9 ± 7" in cl["R11-floor"].measured  # the floor KID never without its error
    assert cl["R11-read"].measured == "0.50 / 0.20 / 0.93"  # GAN-QP / WGAN-GP / real images
    assert all(c.kind in ("experiment", "report") for c in cl.values())
