"""Chapter 05: the 1-D closed form (W1-W6 on coarse grids), configs and a toy smoke run."""
from dataclasses import replace

import numpy as np
import pytest

from dlbook import gan_runs as gr, wgan_div as wd


@pytest.fixture(scope="module")
def grid():
    return wd.make_grid1d(n=401)


@pytest.mark.parametrize("k,p", [(0.5, 2), (2, 2), (1, 3), (2, 6)])
def test_closed_form_matches_numerical_maximum(grid, k, p):
    Wn, sn = wd.solve_1d(grid, k, p)
    Wc, sc = wd.closed_form(grid.G, grid.r, grid.h, k, p)
    assert abs(Wn - Wc) / Wc < 1e-6
    m = np.abs(grid.G) > 1e-3
    assert np.max(np.abs(sn[m] - sc[m]) / np.abs(sc[m])) < 1e-4


def test_reference_values():
    g = wd.make_grid1d(n=801)
    assert wd.closed_form(g.G, g.r, g.h, 2, 6)[0] == pytest.approx(2.2562, abs=1e-4)
    assert wd.closed_form(g.G, g.r, g.h, 2, 2)[0] == pytest.approx(2.9039, abs=1e-4)
    assert wd.closed_form(g.G, g.r, g.h, 0.5, 2)[0] == pytest.approx(11.615, abs=1e-3)
    assert wd.w1_1d(g) == pytest.approx(3.0, abs=1e-6)


def test_objective_gradient_by_finite_differences(grid):
    rng = np.random.default_rng(0)
    T = rng.normal(size=grid.x.shape) * 0.1
    _, grad = wd.objective_1d(T, grid, 2.0, 6.0)
    for i in (3, 150, 300):
        e = np.zeros_like(T); e[i] = 1e-6
        fd = (wd.objective_1d(T + e, grid, 2.0, 6.0)[0] - wd.objective_1d(T - e, grid, 2.0, 6.0)[0]) / 2e-6
        assert fd == pytest.approx(grad[i], rel=1e-5, abs=1e-9)


def test_zero_for_equal_distributions_and_symmetry():
    g = wd.make_grid1d(p=(0.3, 0.6), q=(0.3, 0.6), n=401)
    assert wd.solve_1d(g, 2, 6)[0] < 1e-10
    a = wd.solve_1d(wd.make_grid1d(n=401), 2, 6)[0]
    b = wd.solve_1d(wd.make_grid1d(p=(-1, 0.7), q=(2, 0.5), n=401), 2, 6)[0]
    assert abs(a - b) / a < 1e-12


def test_large_p_tends_to_w1_and_gap_sensitivity():
    g = wd.make_grid1d(n=801)
    W = [wd.closed_form(g.G, g.r, g.h, 2, p)[0] for p in (6, 10, 20, 50)]
    assert all(np.diff(W) > 0) and abs(W[-1] - wd.w1_1d(g)) / wd.w1_1d(g) < 0.10
    ratios = []
    for p in (2, 6):
        v = [wd.closed_form((h := wd.make_grid1d(r=wd.gap_r(e))).G, h.r, h.h, 2, p)[0] for e in (1e-2, 1e-4)]
        ratios.append(v[1] / v[0])
    assert ratios[0] == pytest.approx(98.5, rel=0.05) and ratios[1] == pytest.approx(1.86, rel=0.05)


def test_envelope_theorem():
    fd, env = wd.envelope_check(n=401)
    assert fd == pytest.approx(env, rel=1e-4) and env == pytest.approx(-0.8034, abs=2e-3)


def test_gp_pointwise_max_by_brute_force():
    s = np.linspace(-20, 20, 400001)
    for g, k, r in [(0.3, 1.0, 0.5), (-0.7, 2.0, 0.1)]:
        assert np.max(g * s - k * r * (np.abs(s) - 1) ** 2) == pytest.approx(wd.gp_pointwise_max(g, k, r), rel=1e-7)


def test_configs_exist_for_every_profile():
    for prof in ("smoke", "cpu", "full"):
        c = wd.config(prof)
        assert c.k == 2 and c.p == 6
    assert wd.config("full").image.data == "celeba" and wd.config("full").image.img_size == 64
    assert wd.config("full").image.fit == "resize" and wd.config("cpu").image.fit == "pad"
    with pytest.raises(ValueError):
        wd.config("laptop")
    with pytest.raises(ValueError, match="lam"):
        replace(wd.config("cpu"), lam=-1.0)
    with pytest.raises(ValueError, match="gp_steps"):
        replace(wd.config("cpu"), gp_steps=0)


def test_toy_table_covers_w7_and_w8():
    cpu = wd.config("cpu")
    jobs = wd.toy_table(cpu)
    keys = {j.key[1:] for j in jobs}
    assert len(keys) == len(jobs)  # a sweep run that is also a main run is not run twice
    assert {("wgan-div", "pool", 0), ("wgan-div", "pool", 2), ("sgan", "-", 2), ("wgan-gp", "interp", 2)} <= keys
    assert all(("wgan-div", st, s) in keys for st in wd.gan.STRATEGIES for s in cpu.sweep_seeds)
    assert len(cpu.seeds) >= 3 and len(cpu.sweep_seeds) >= 3 and len(cpu.gp_seeds) >= 3
    gp = [j for j in jobs if j.key[1] == "wgan-gp"]
    # WGAN-GP on its paper's recipe under every profile: 5:1, Adam 1e-4, beta = (0.5, 0.9)
    recipe = lambda j: (j.n_critic, j.lr, j.betas) == (5, 1e-4, (0.5, 0.9))
    assert all(recipe(j) and j.steps == cpu.gp_steps for j in gp)
    # W8 under cpu: WGAN-GP's six-strategy sweep for every sweep seed (interpolates: the main runs)
    assert {j.key[2:] for j in gp} == {(st, s) for st in wd.gan.STRATEGIES for s in cpu.gp_sweep_seeds}
    assert set(cpu.gp_sweep_seeds) == set(cpu.sweep_seeds) and len(gp) == 6 * len(cpu.gp_sweep_seeds)
    assert cpu.gp_steps % cpu.toy.eval_every == 0 and cpu.gp_steps <= cpu.toy.steps  # read at equal steps
    full = wd.config("full")
    gp_full = [j for j in wd.toy_table(full) if j.key[1] == "wgan-gp"]
    assert {j.key[2] for j in gp_full} == set(wd.gan.STRATEGIES) and all(recipe(j) for j in gp_full)
    table = wd.image_table(full)
    assert len(table) == 10 and table["wgan-gp"].n_critic == 5 and table["wgan-gp"].critic_norm == "ln"
    assert (table["wgan-gp"].lr, table["wgan-gp"].betas) == (1e-4, (0.5, 0.9))
    assert "wgan-gp" in wd.image_table(wd.config("smoke")) and "wgan-gp" not in wd.image_table(cpu)
    div = wd.image_table(cpu)["wgan-div k=2 p=6"]
    assert div.loss.separate and div.loss.strategy == "pool" and div.critic_norm == "bn"  # as the post's code


def test_image_settings_match_chapter_06():
    from dlbook import gan_qp

    a, b = wd.config("cpu").image, gan_qp.config("cpu").image
    # the same data, nets and metric: the classifier-FIDs compare across chapters (seeds and budgets may differ)
    same = ("data", "img_size", "fit", "n_train", "z_dim", "base", "max_ch", "kernel", "gen_norm", "batch", "n_eval",
            "metric", "classifier")
    assert all(getattr(a, f) == getattr(b, f) for f in same)
    assert len(a.seeds) >= 3 and a.workers == 2 and a.threads == 1


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="seeds"):
        replace(wd.config("cpu"), seeds=())
    with pytest.raises(ValueError, match="gp_sweep_seeds"):
        replace(wd.config("cpu"), gp_sweep_seeds=(-1,))
    with pytest.raises(ValueError, match="p > 1"):
        replace(wd.config("cpu"), p=1.0)
    with pytest.raises(ValueError, match="p > 1"):
        replace(wd.config("full"), grid_kp=((2, 6), (0, 2)))
    with pytest.raises(ValueError, match="separate"):
        wd.gan.WGANDiv(strategy="interp", separate=True)


def test_toy_job_smoke():
    cfg = replace(wd.config("smoke").toy, steps=20, eval_every=10, n_eval=200)
    job = wd.toy_table(wd.config("smoke"))[0]
    assert job.key == ("8gaussians", "wgan-div", "pool", 0) and job.fields
    r = gr.toy_job(job, cfg)
    assert r.evals.steps == [0, 10, 20]
    assert all(0 <= q <= 1 for q in r.evals["quality"])
    assert r.snapshots[20]["field"][1].shape == (cfg.field_n, cfg.field_n)
    assert np.all(np.isfinite(r.history["critic"]))


def test_seeds_count_from_the_notebook_seed():
    from dlbook.config import seeded

    cfg = seeded(wd.config("cpu"), 7)
    assert cfg.seeds == (7, 8, 9) and cfg.gp_seeds == cfg.seeds and cfg.image.seeds == (7, 8, 9)
    keys = {j.key for j in wd.toy_table(cfg)}
    assert ("8gaussians", "wgan-gp", "interp", 9) in keys and all(k[3] >= 7 for k in keys)


def _fake_results(div_sweep, gp_sweep=None, first=(1500, 2000, 1500), gp_modes=(8, 0, 7)):
    n = len(first)
    sweep = {"steps": 2500, "seeds": list(range(n)), "div": div_sweep}
    if gp_sweep is not None:
        sweep.update(gp_seeds=list(range(n)), gp=gp_sweep, gp_steps=3000)
    run = lambda v: {"fd": list(v), "kid": [x / 2 for x in v], "kid_se": [1.0] * n, "seconds": [1.0] * n,
                     "confident": [0.5, 0.6, 0.7]}
    return {"profile": "cpu", "data": "8gaussians", "n_modes": 8, "steps": 4000, "seeds": list(range(n)), "late": 4500,
            "first8": {"pool": list(first), "interp": list(first)},
            "quality": {"pool": [0.8, 0.82, 0.85], "interp": [0.8, 0.81, 0.83]},
            "sgan": {"modes": [8, 7, 6], "quality": [0.9, 0.8, 0.6]},
            "gp": {"seeds": list(range(n)), "steps": 3000, "n_critic": 5, "lr": 1e-4, "betas": [0.5, 0.9], "at": 3000,
                   "modes": list(gp_modes), "quality": [0.7, 0.0, 0.6], "div_modes": [8] * n},
            "sweep": sweep,
            "image": {"data": "mnist", "size": 32, "steps": 600, "seeds": list(range(n)), "metric": "classifier-FID",
                      "accuracy": 0.98, "floor": {"fd": 13.0, "kid": 9.0, "kid_se": 7.0, "confident": 0.93,
                                                          "n": 1000},
                      "runs": {"div": run([300, 280, 230]), "gp": run([500, 520, 480])}, "div": "div", "gp": "gp",
                      "grid": []}}


def test_claims_decide_by_the_rule():
    flat = {st: [0.80, 0.82, 0.81] for st in wd.gan.STRATEGIES}
    flat["fake"] = [0.81, 0.82, 0.80]
    rows = {c.id: c for c in wd.claims(_fake_results(flat))}
    assert rows["W7a"].verdict == "PASS" and rows["W7b"].verdict == "PASS"  # below 2,500 steps, above 0.6
    assert rows["W8a"].verdict == "PASS" and "15 pairs" in rows["W8a"].rule  # every pair inside +-0.05
    assert rows["W8"].verdict.startswith("n/a") and rows["W9"].verdict.startswith("n/a")
    assert rows["I1a"].verdict == "PASS" and rows["I1a"].estimate < 0 and rows["I1b"].kind == "experiment"
    assert rows["W8b"].measured == "3/3 vs 1/3" and rows["W8b"].verdict == "INCONCLUSIVE"
    assert "9 ± 7" in rows["I1-floor"].measured  # the floor's KID carries its error
    assert rows["I1-read"].measured == "0.50, 0.60, 0.70" and "0.93" in rows["I1-read"].statement
    alone = _fake_results(flat)
    alone["image"].update(gp=None, trend={"steps": [200, 400, 600], "slope": [-1.0] * 3, "reach": [9000.0] * 3})
    rows = {c.id: c for c in wd.claims(alone)}
    assert rows["I1a"].verdict == "FAIL" and rows["I1a"].estimate == pytest.approx(810 / 39)  # FD / floor
    assert rows["I1b"].kind == "experiment" and "9e+03" in rows["I1-trend"].measured
    apart = dict(flat, fake=[0.60, 0.61, 0.62])  # one strategy 0.2 below the rest: not equivalent
    assert {c.id: c for c in wd.claims(_fake_results(apart))}["W8a"].verdict == "FAIL"
    gp = {st: [0.1 * i + 0.05 * j for j in range(3)] for i, st in enumerate(wd.gan.STRATEGIES)}
    w8 = {c.id: c for c in wd.claims(_fake_results(flat, gp))}["W8"]
    assert w8.kind == "experiment" and w8.n == 3 and w8.estimate < 0 and "step 3000" in w8.statement
