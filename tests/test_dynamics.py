"""Tests for dlbook.dynamics (chapter 08): test functions, integrators, optimiser steps,
steepest descent, stochastic dynamics, configuration and the MLP experiment."""
import math

import numpy as np
import pytest
import torch

import dlbook.dynamics as D


# ------------------------------------------------------------------ test functions
def test_double_well_values_and_critical_points():
    dw = D.DOUBLE_WELL
    assert dw([0.0, 0.0]) == pytest.approx(0.25)
    assert dw([1.0, 0.5]) == 0.0 and dw([-1.0, -0.5]) == 0.0
    # hand value: x=2, y=-1: 1/4 (4-1)^2 + 1/2 (-2-2)^2 = 9/4 + 8
    assert dw([2.0, -1.0]) == pytest.approx(10.25)
    for m in dw.minima:
        assert np.allclose(dw.grad(m), 0)
        assert np.all(np.linalg.eigvalsh(dw.hess(m)) > 0)


@pytest.mark.parametrize("obj,point", [(D.DOUBLE_WELL, [0.3, -0.7]), (D.SADDLE, [0.4, 1.1]),
                                       (D.ROSENBROCK, [-0.5, 0.8]), (D.quadratic([1.0, 7.0, 30.0]), [0.2, -0.3, 0.5])])
def test_gradient_and_hessian_match_finite_differences(obj, point):
    th = np.array(point)
    eps = 1e-6
    d = len(th)
    fd = np.array([(obj(th + eps * e) - obj(th - eps * e)) / (2 * eps) for e in np.eye(d)])
    assert np.allclose(obj.grad(th), fd, rtol=1e-6, atol=1e-6)
    fh = np.array([(obj.grad(th + eps * e) - obj.grad(th - eps * e)) / (2 * eps) for e in np.eye(d)])
    assert np.allclose(obj.hess(th), fh, rtol=1e-5, atol=1e-4)


def test_grid_evaluation_matches_pointwise():
    xs, ys = np.meshgrid(np.linspace(-1, 1, 5), np.linspace(-2, 2, 4))
    for obj in (D.DOUBLE_WELL, D.SADDLE, D.ROSENBROCK, D.quadratic([1.0, 10.0])):
        Z = obj.on_grid(xs, ys)
        assert Z.shape == xs.shape
        assert Z[2, 3] == pytest.approx(obj([xs[2, 3], ys[2, 3]]))


def test_quartic_critical_points():
    cp = D.quartic_critical_points()
    assert np.allclose(cp, [(9 - math.sqrt(33)) / 8, (9 + math.sqrt(33)) / 8, 3.0])
    assert np.allclose(D.quartic_grad(cp), 0, atol=1e-12)
    assert D.quartic(cp[0]) < 1e-6 and D.quartic(3.0) == pytest.approx(1.62276)


def test_bad_inputs_give_clear_errors():
    with pytest.raises(ValueError, match="length 2"):
        D.DOUBLE_WELL.grad(np.zeros(3))
    with pytest.raises(ValueError, match="positive"):
        D.quadratic([1.0, -1.0])
    with pytest.raises(ValueError, match="unknown norm"):
        D.steepest_direction(np.ones(3), "l3")
    with pytest.raises(ValueError, match="needs a positive-definite"):
        D.dual_norm(np.ones(3), "P")
    with pytest.raises(ValueError, match="unknown optimiser"):
        D.run_optimizer("lion", lambda t: t, np.ones(2), 0.1, 3)
    with pytest.raises(ValueError, match="unknown optimiser"):
        D.make_optimizer("lion", [torch.zeros(1, requires_grad=True)], 0.1)
    with pytest.raises(ValueError, match="gamma > 0"):
        D.leapfrog_coefficients(1.0, 0.0)
    from dlbook.config import ConfigError
    with pytest.raises(ConfigError, match="lr"):
        D.make_optimizer("sgd", [torch.zeros(1, requires_grad=True)], 0.0)
    with pytest.raises(ConfigError, match="hidden"):
        D.make_mlp(784, 0)


# ------------------------------------------------------------------ integrators
def test_gd_is_euler_and_error_halves_with_h():
    q = D.quadratic([1.0, 4.0])
    it = D.gd(q.grad, [1.0, 1.0], 0.1, 3)
    assert np.allclose(it[-1], [0.9 ** 3, 0.6 ** 3])  # hand-computed Euler steps
    # exact flow of the quadratic: theta_i(t) = exp(-a_i t) theta_i(0)
    errs = []
    for h in (0.02, 0.01, 0.005):
        n = int(round(1 / h))
        it = D.gd(q.grad, [1.0, 1.0], h, n)
        ex = np.exp(-np.outer(h * np.arange(n + 1), [1.0, 4.0]))
        errs.append(np.abs(it - ex).max())
    r = np.array(errs[:-1]) / np.array(errs[1:])
    assert np.all((r > 1.9) & (r < 2.1))


def test_leapfrog_error_quarters_with_consistent_start():
    q = D.quadratic([1.0, 3.0])
    lam, T = 1.0, 2.0
    _, ref = D.integrate(D.heavy_ball_field(q, lam), [1.0, -0.5, 0.0, 0.0], T, t_eval=np.linspace(0, T, 401))
    errs = []
    for g in (0.02, 0.01, 0.005):
        a, b = D.leapfrog_coefficients(lam, g)
        th, _ = D.heavy_ball(q.grad, [1.0, -0.5], a, b, int(round(T / g)),
                             D.consistent_v0(q.grad, [1.0, -0.5], g))
        errs.append(np.abs(th - ref[::int(round(g / 0.005)), :2]).max())
    r = np.array(errs[:-1]) / np.array(errs[1:])
    assert np.all((r > 3.7) & (r < 4.3))


def test_leapfrog_coefficients_and_inverse():
    a, b = D.leapfrog_coefficients(2.0, 0.1)
    assert a == pytest.approx(0.01 / 1.1) and b == pytest.approx(0.9 / 1.1)
    assert D.time_step_of(2.0, a) == pytest.approx(0.1)
    assert D.leapfrog_coefficients(0.0, 0.1) == pytest.approx((0.01, 1.0))
    assert D.retuned_beta(0.9, 0.25) == pytest.approx(0.95)


def test_heavy_ball_last_only_matches_full():
    q = D.quadratic([1.0, 2.0])
    th, v = D.heavy_ball(q.grad, [1.0, 1.0], 0.01, 0.9, 50)
    th1, v1 = D.heavy_ball(q.grad, [1.0, 1.0], 0.01, 0.9, 50, last_only=True)
    assert np.allclose(th[-1], th1) and np.allclose(v[-1], v1)


def test_modified_field_is_gradient_of_modified_loss():
    dw, h = D.DOUBLE_WELL, 0.05
    th = np.array([0.7, -0.2])
    Lt = lambda t: dw(t) + h / 4 * float(dw.grad(t) @ dw.grad(t))
    eps = 1e-6
    fd = np.array([(Lt(th + eps * e) - Lt(th - eps * e)) / (2 * eps) for e in np.eye(2)])
    assert np.allclose(D.modified_field(dw, h)(th), -fd, atol=1e-6)


def test_polyak_field_gives_exponential_decay_rate():
    dw = D.DOUBLE_WELL
    th = np.array([1.7, 0.3])
    # dL/dt = <grad L, field> = -L exactly
    assert float(dw.grad(th) @ D.polyak_field(dw)(th)) == pytest.approx(-dw(th))
    # the truncated field caps the speed at M L
    v = D.polyak_field(dw, M=0.01)(th)
    assert np.linalg.norm(v) == pytest.approx(0.01 * dw(th))


def test_truncated_polyak_1d_step_by_hand():
    x0, h, M = 4.0, 0.01, 1000.0
    xs = D.truncated_polyak_1d(D.quartic, D.quartic_grad, x0, h, M, 1)
    g = D.quartic_grad(x0)
    assert xs[1] == pytest.approx(x0 - h * min(1 / abs(g), M) * D.quartic(x0))


def test_normalized_gd_accumulates_time():
    ths, ts = D.normalized_gd_1d(lambda x: 2 * x, 1.0, 0.25, 2)
    assert np.allclose(ths, [1.0, 0.75, 0.5])
    assert np.allclose(ts, [0.0, 0.25 / 2.0, 0.25 / 2.0 + 0.25 / 1.5])


# ------------------------------------------------------------------ optimiser steps
def test_rmsprop_and_adam_with_zero_averaging_are_sign_descent():
    rng = np.random.default_rng(0)
    g = rng.standard_normal(20)
    g[np.abs(g) < 1e-3] = 0.5
    th = rng.standard_normal(20)
    z = np.zeros(20)
    r = D.rmsprop_step(th, g, D.RMSpropState(z.copy()), 0.01, alpha=0.0, eps=1e-12)
    a = D.adam_step(th, g, D.AdamState(z.copy(), z.copy()), 0.01, betas=(0.0, 0.0), eps=1e-12)
    s = D.sign_step(th, g, 0.01)
    assert np.abs(r - s).max() < 1e-9 and np.abs(a - s).max() < 1e-9


@pytest.mark.parametrize("name,ours,kw,torch_cls,tkw", [
    ("rmsprop", D.rmsprop_step, {"alpha": 0.9, "eps": 1e-8}, torch.optim.RMSprop, {"alpha": 0.9, "eps": 1e-8}),
    ("adam", D.adam_step, {"betas": (0.9, 0.999), "eps": 1e-8}, torch.optim.Adam, {"betas": (0.9, 0.999), "eps": 1e-8}),
    ("adagrad", D.adagrad_step, {"eps": 1e-10}, torch.optim.Adagrad, {"eps": 1e-10}),
])
def test_numpy_steps_match_torch(name, ours, kw, torch_cls, tkw):
    q = D.quadratic([1.0, 10.0, 100.0])
    th = np.array([1.0, -0.5, 0.25])
    z = np.zeros(3)
    state = {"rmsprop": lambda: D.RMSpropState(z.copy()), "adam": lambda: D.AdamState(z.copy(), z.copy()),
             "adagrad": lambda: D.AdagradState(z.copy())}[name]()
    p = torch.tensor(th.copy(), requires_grad=True)
    opt = torch_cls([p], lr=0.01, **tkw)
    for _ in range(5):
        th = ours(th, q.grad(th), state, 0.01, **kw)
        opt.zero_grad()
        (0.5 * (torch.tensor([1.0, 10.0, 100.0], dtype=torch.float64) * p ** 2).sum()).backward()
        opt.step()
    assert np.allclose(th, p.detach().numpy(), atol=1e-12)


def test_sign_descent_stalls_at_order_h_and_gd_converges():
    q = D.quadratic([1.0, 10.0, 100.0])
    s0 = np.array([1.0037, 0.7071, 0.5123])
    it = D.run_optimizer("sign", q.grad, s0, 0.01, 2000)
    assert np.all(np.abs(it[-1]) <= 0.01) and np.all(np.abs(it[-1]) > 0)
    it = D.run_optimizer("gd", q.grad, s0, 0.01, 2000)
    assert q(it[-1]) < 1e-15


# ------------------------------------------------------------------ steepest descent
def test_steepest_direction_attains_dual_norm():
    rng = np.random.default_rng(1)
    A = rng.standard_normal((5, 5))
    P = A @ A.T + np.eye(5)
    for _ in range(20):
        g = rng.standard_normal(5)
        for norm in D.NORMS:
            Pn = P if norm == "P" else None
            v = D.steepest_direction(g, norm, Pn)
            assert g @ v == pytest.approx(-D.dual_norm(g, norm, Pn))
        assert np.abs(D.steepest_direction(g, "linf")).max() == 1.0
        assert np.abs(D.steepest_direction(g, "l1")).sum() == 1.0
        v = D.steepest_direction(g, "P", P)
        assert v @ P @ v == pytest.approx(1.0)
    # unnormalised steps: GD and preconditioned GD
    g = rng.standard_normal(5)
    assert np.allclose(D.steepest_step(g, "l2"), -g)
    assert np.allclose(D.steepest_step(g, "P", P), -np.linalg.solve(P, g))


def test_steepest_path_unit_speed_stops_at_the_minimum_and_repairs_indefinite_P():
    q = D.quadratic([1.0, 100.0])
    # sign descent from (1, 0.8) with h = 0.005 reaches the minimum (up to rounding) in 200 steps
    # and the path ends there instead of repeating the point for the remaining steps
    p = D.steepest_path(q, np.array([1.0, 0.8]), "linf", h=0.005, n=1500)
    assert len(p) == 201 and np.abs(p[-1]).max() < 1e-14 and np.linalg.norm(q.grad(p[-1])) < 1e-12
    assert np.allclose(np.abs(np.diff(p, axis=0)).max(1), 0.005)       # unit speed in the max-norm
    p2 = D.steepest_path(q, np.array([1.0, 0.8]), "l2", h=0.005, n=50)
    assert len(p2) == 51 and np.allclose(np.linalg.norm(np.diff(p2, axis=0), axis=1), 0.005)
    assert np.array_equal(D.steepest_field(q, "l2")(np.zeros(2)), [0.0, 0.0])
    # Newton's P = H is indefinite on Rosenbrock at (0, 1): the field uses |diag H| + 1e-3 I instead
    t = np.array([0.0, 1.0])
    H = D.ROSENBROCK.hess(t)
    assert np.linalg.eigvalsh(H).min() < 0
    Pfix = np.diag(np.abs(np.diag(H)) + 1e-3)
    want = D.steepest_direction(D.ROSENBROCK.grad(t), "P", Pfix)
    assert np.allclose(D.steepest_field(D.ROSENBROCK, "P", D.ROSENBROCK.hess)(t), want)


# ------------------------------------------------------------------ stochastic dynamics
def test_tv_distance_is_zero_for_exact_samples_and_one_for_disjoint():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(200_000)
    assert D.tv_to_density(x, lambda z: -z * z / 2, -4, 4, bins=40) < 0.01
    assert D.tv_to_density(np.full(100, 3.5), lambda z: -z * z / 2, -4, 4, bins=40) > 0.99


def test_langevin_on_a_quadratic_has_variance_sigma2_over_2():
    rng = np.random.default_rng(0)
    xs = D.langevin(lambda x: x, np.zeros(2000), 1.0, 1e-2, 3000, rng, burn=1000, every=20)
    assert xs.var() == pytest.approx(0.5, rel=0.05)


def test_gradient_noise_scaling_on_synthetic_data():
    rng = np.random.default_rng(0)
    X = np.hstack([rng.standard_normal((300, 4)), np.ones((300, 1))])
    y = rng.integers(0, 3, 300)
    out = D.gradient_noise_scaling(X, y, 0.1 * rng.standard_normal((3, 5)), [4, 16], draws=3000)
    for B in (4, 16):
        assert out[B] / out["per_example"] == pytest.approx(1.0, abs=0.1)


# ------------------------------------------------------------------ config and the MLP experiment
def test_config_profiles():
    assert D.config("smoke").light and not D.config("cpu").light
    assert D.config("full").n_train >= D.config("cpu").n_train >= D.config("smoke").n_train
    assert D.config("cpu").seeds >= 3 and D.config("cpu").n_test == 10_000
    with pytest.raises(ValueError):
        D.config("huge")


@pytest.mark.parametrize("bad", [dict(steps=0), dict(batch=-1), dict(seeds=0), dict(sgd_lrs=(0.1, 0.0)),
                                 dict(lrs={"sgd": -0.1}), dict(lrs={"lion": 0.1}), dict(equal_loss_target=0.0),
                                 dict(tune_epochs=0), dict(threads=0)])
def test_config_refuses_bad_settings(bad):
    from dataclasses import replace

    from dlbook.config import ConfigError

    with pytest.raises(ConfigError):
        replace(D.config("smoke"), **bad)


def test_sign_sgd_optimizer_step():
    p = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    opt = D.make_optimizer("sign", [p], 0.1)
    (p * torch.tensor([2.0, 0.5, -1.0])).sum().backward()
    opt.step()
    assert torch.allclose(p.detach(), torch.tensor([0.9, -2.1, 3.1]))


def test_mlp_training_few_steps_lowers_loss():
    torch.manual_seed(0)
    x = torch.randn(256, 20)
    y = (x[:, 0] > 0).long()
    model = D.make_mlp(20, 32, 2)
    opt = D.make_optimizer("adam", model.parameters(), 1e-2)
    from dlbook.train import ArrayLoader, Trainer

    tr = Trainer(model, opt, D.cross_entropy_step, device="cpu", progress=False)
    hist = tr.fit(ArrayLoader((x, y), 32), 40)
    loss = np.array(hist["loss"])
    assert np.all(np.isfinite(loss)) and loss[-5:].mean() < loss[:5].mean()
    out = model(x)
    assert out.shape == (256, 2)


def _tiny_splits(n=256):
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (3 * n,), generator=g)
    x = torch.randn(3 * n, 20, generator=g) + 2 * torch.nn.functional.one_hot(y, 20).float()
    return D.MNISTSplits(x[:n], y[:n], x[n:2 * n], y[n:2 * n], x[2 * n:], y[2 * n:], "synthetic")


def test_training_experiments_on_tiny_data():
    from dataclasses import replace

    cfg = replace(D.config("smoke"), hidden=16, steps=8, log_every=4, seeds=2, lrs={"sgd": 0.1, "adam": 1e-2},
                  tune_epochs=1, tune_momentum_lrs=(0.01, 0.1), tune_adam_lrs=(1e-2,), sgd_lrs=(0.05, 0.2),
                  equal_loss_target=0.9, equal_loss_every=2, equal_loss_max_steps=400)
    d = _tiny_splits()
    curves = D.optimiser_curves(d, cfg, progress=False)
    assert set(curves) == {"sgd", "adam"} and all(len(v) == 2 for v in curves.values())
    assert all(np.isfinite(r["train_loss"]) and 0 <= r["test_acc"] <= 1 for v in curves.values() for r in v)
    tuned = D.tuned_comparison(d, cfg, progress=False)
    assert tuned["momentum"]["lr"] in (0.01, 0.1) and len(tuned["adam"]["test_acc"]) == 2
    assert set(tuned["momentum"]["val"]) == {0.01, 0.1}
    eq = D.equal_loss_runs(d, cfg, progress=False)
    for lr, runs in eq.items():
        assert len(runs) == 2 and all(r["reached"] and r["loss"] <= 0.9 and r["grad_norm2"] > 0 for r in runs)
    # the larger rate reaches the same loss in fewer steps
    assert np.mean([r["steps"] for r in eq[0.2]]) < np.mean([r["steps"] for r in eq[0.05]])
    # the experiment claims read these plain results: every row is made, nothing breaks
    rows = D.claims({"curves": curves, "tuned": tuned, "equal_loss": eq})
    assert [c.id for c in rows] == ["E1", "E2a", "E3", "E4", "R1", "R2", "R3"]  # no RMSprop run: no E2b


# ------------------------------------------------------------------ escape times and noisy runs
def test_first_arrival_and_escape_table():
    assert D.first_arrival(np.array([3.0, 2.0, 0.4, 0.4]), 0.4, 0.5) == 1.0
    assert math.isinf(D.first_arrival(np.array([3.0, 2.0]), 0.4, 0.5))
    cp = D.quartic_critical_points()
    t = D.escape_times(D.quartic, D.quartic_grad, cp[0], [10.0, 1000.0], [0.01], [4.0], t_end=60.0)
    assert math.isinf(t[(10.0, 0.01, 4.0)]) and 0 < t[(1000.0, 0.01, 4.0)] < 60
    times = {(M, h, x0): v for M in (10.0, 1e4) for h in (0.02, 0.01) for x0, v in ((3.5, 1.234), (4.0, math.inf))}
    lines = D.escape_table(times).splitlines()
    assert lines[0] == "| M | h = 0.02 | h = 0.01 |" and len(lines) == 4
    assert lines[2] == "| 10 | 1.23 / ∞ | 1.23 / ∞ |" and lines[3].startswith("| 10000 |")


def test_noisy_final_losses_pair_by_seed():
    q = D.quadratic([1.0, 10.0])
    L = lambda it: 0.5 * (np.array([1.0, 10.0]) * it ** 2).sum(-1)
    runs = {"GD": ("gd", 0.01), "GD again": ("gd", 0.01), "Adagrad": ("adagrad", 0.3)}
    out = D.noisy_final_losses(L, q.grad, [1.0, 1.0], runs, 500, 0.3, [0, 1, 2], tail=100)
    assert all(len(v) == 3 for v in out.values())
    assert out["GD"] == out["GD again"]  # the same noise for every optimiser of a seed
    assert len(set(out["GD"])) == 3      # and other noise for another seed


# ------------------------------------------------------------------ the experiment claims
def _curves(adam_early, sgd_early, final=0.2, n=5):
    mk = lambda early, s: {"lr": 0.1, "n_steps": 100, "loss": np.r_[np.full(10, early), np.full(90, 0.1)],
                           "train_loss": final + 0.01 * s, "test_acc": 0.9}
    return {"sgd": [mk(sgd_early[s], s) for s in range(n)], "adam": [mk(adam_early[s], s) for s in range(n)],
            "rmsprop": [mk(sgd_early[s], s) for s in range(n)]}


def test_claims_e1_e2_pass_fail_inconclusive():
    sgd = [1.0, 1.1, 0.9, 1.05, 0.95]
    rows = {c.id: c for c in D.claims({"curves": _curves([0.4, 0.42, 0.38, 0.41, 0.39], sgd)})}
    assert rows["E1"].verdict == "PASS" and rows["E1"].n == 5           # worst loss 0.2..0.24 < 0.5
    assert rows["E2a"].verdict == "PASS" and rows["E2a"].estimate == pytest.approx(0.4, abs=0.01)
    assert rows["E2b"].verdict == "FAIL"                                  # the same loss as SGD: ratio 1
    assert rows["R1"].kind == "report"
    assert D.claims({"curves": _curves([0.4] * 5, sgd, final=0.9)})[0].verdict == "FAIL"
    noisy = [1.5, 0.6, 1.3, 0.5, 0.9]
    e2 = {c.id: c for c in D.claims({"curves": _curves([a * s for a, s in zip(noisy, sgd)], sgd)})}["E2a"]
    assert e2.verdict == "INCONCLUSIVE" and "80 %" in e2.note
    assert D.early_loss({"loss": np.arange(20.0)}) == 0.5  # the first 10 % of 20 logged steps


def _tuned(diff, n=5):
    mom = [0.96 + 0.001 * s for s in range(n)]
    return {"momentum": {"lr": 0.1, "val": {0.01: 0.9, 0.1: 0.97, 0.3: 0.9}, "test_acc": mom, "epochs": 20},
            "adam": {"lr": 0.3, "val": {0.01: 0.9, 0.3: 0.97}, "test_acc": [m - d for m, d in zip(mom, diff)],
                     "epochs": 20}}


def test_claims_e3_is_paired_and_states_the_grid_edge():
    ok = {c.id: c for c in D.claims({"tuned": _tuned([0.002, 0.003, 0.0025, 0.002, 0.003])})}
    assert ok["E3"].verdict == "PASS" and ok["E3"].measured.endswith("pp") and "pairs" in ok["E3"].rule
    assert "Adam 0.3 (grid edge)" in ok["R2"].measured and "momentum 0.1:" in ok["R2"].measured
    assert D.claims({"tuned": _tuned([-0.002, -0.003, -0.0025, -0.002, -0.003])})[0].verdict == "FAIL"
    assert D.claims({"tuned": _tuned([0.004, -0.003, 0.001, -0.002, 0.0005])})[0].verdict == "INCONCLUSIVE"


def _eq(ratio, reached=True):
    run = lambda lr, s, g2: {"lr": lr, "seed": s, "steps": 100, "loss": 0.2, "grad_norm2": g2, "target": 0.2,
                             "reached": reached}
    return {0.02: [run(0.02, s, 0.04) for s in range(len(ratio))],
            0.1: [run(0.1, s, 0.04 * r) for s, r in enumerate(ratio)]}


def test_claims_e4_on_the_log_ratio():
    assert D.claims({"equal_loss": _eq([0.5, 0.6, 0.55, 0.45, 0.5])})[0].verdict == "PASS"
    bad = D.claims({"equal_loss": _eq([3.0, 2.5, 4.0, 3.5, 2.8])})
    assert bad[0].verdict == "FAIL" and bad[0].estimate > 0 and bad[1].id == "R3"
    rows = D.claims({"equal_loss": _eq([3.0] * 3), "noisy": {"GD": [1.0, 2.0], "Adagrad": [0.5, 0.9]}})
    assert [c.kind for c in rows] == ["experiment", "experiment", "report"]  # grouped as the table shows them
    assert D.claims({"equal_loss": _eq([0.5, 2.0, 0.7, 1.8, 1.0])})[0].verdict == "INCONCLUSIVE"
    assert [c.id for c in D.claims({"equal_loss": _eq([0.5, 0.6], reached=False)})] == ["R3"]


def test_claims_e5_and_missing_runs():
    gd = [1e-3, 1.1e-3, 0.9e-3, 1e-3]
    rows = D.claims({"noisy": {"GD": gd, "Adagrad": [0.5 * g for g in gd]}})
    assert rows[0].id == "E5" and rows[0].verdict == "PASS" and rows[0].estimate == pytest.approx(math.log(0.5))
    assert D.claims({"noisy": {"GD": gd, "Adagrad": [2 * g for g in gd]}})[0].verdict == "FAIL"
    assert D.claims({}) == []
