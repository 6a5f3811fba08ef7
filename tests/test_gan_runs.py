"""How GAN experiments run (dlbook.gan_runs): the loop, its checkpoints (crafted ones refused),
toy and image experiments from a loss table, classifier-FID and KID, and torchrun."""
import os
import pickle
import re
import subprocess
import sys
import textwrap
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from dlbook import gan, gan_runs as gr
from dlbook.config import ConfigError
from dlbook.train import CheckpointError, load_checkpoint


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A private $DLBOOK_DATA, so classifier caches of one test never serve another."""
    monkeypatch.setenv("DLBOOK_DATA", str(tmp_path / "data"))
    return tmp_path / "data"


def toy(seed=0):
    torch.manual_seed(seed)
    return gan.mlp(2, 2, 32, 2), gan.mlp(2, 1, 32, 2, "lrelu"), gan.toy_dataset("8gaussians")


LOOP = gr.LoopConfig(steps=30, batch=32, z_dim=2, log_every=10, eval_every=10, progress=False)


# ---------------------------------------------------------------- settings


def test_bad_settings_are_refused_where_they_enter():
    for bad, match in [(dict(steps=0), "steps"), (dict(batch=-4), "batch"), (dict(log_every=0), "log_every"),
                       (dict(n_critic=0), "n_critic"), (dict(lr=0.0), "lr"), (dict(checkpoint_every=-1),
                       "checkpoint_every"), (dict(betas=(0.5, 1.5)), "betas"), (dict(eval_every=2.5), "eval_every")]:
        with pytest.raises(ConfigError, match=match):
            gr.LoopConfig(**bad)
    for bad, match in [(dict(img_size=0), "img_size"), (dict(batch=0), "batch"), (dict(steps=-1), "steps"),
                       (dict(n_eval=0), "n_eval"), (dict(seeds=(0, -1)), "seeds")]:
        with pytest.raises(ConfigError, match=match):
            gr.ImageConfig(**bad)
    with pytest.raises(ValueError, match="power of two"):
        gr.ImageConfig(img_size=48)
    with pytest.raises(ValueError, match="fit"):
        gr.ImageConfig(fit="crop")
    with pytest.raises(ValueError, match="metric"):
        gr.ImageConfig(metric="fid")
    with pytest.raises(ValueError, match="at least one seed"):
        gr.ImageConfig(seeds=())
    with pytest.raises(ConfigError, match="workers"):
        gr.ImageConfig(workers=0, threads=1)
    with pytest.raises(ValueError, match="threads per worker"):
        gr.ImageConfig(workers=2)
    with pytest.raises(ConfigError, match="depth"):
        gr.ToyConfig(depth=0)
    with pytest.raises(ValueError, match="unknown toy data"):
        gr.ToyConfig(data="moons")
    with pytest.raises(ConfigError, match="hold_out"):
        gr.ClassifierRecipe(hold_out=1.5)
    with pytest.raises(ConfigError, match="n_critic"):
        gr.ToyJob(("a",), gan.WGANDiv(), n_critic=0)
    with pytest.raises(ValueError, match="critic_norm"):
        gr.as_method("x", (gan.WGANDiv(), 1, "wn"))
    with pytest.raises(TypeError, match="GANLoss"):
        gr.as_method("x", ("wgan-div", 1, "bn"))
    G, T, d = toy()
    with pytest.raises(ConfigError, match="stop_at"):
        gr.train_gan(G, T, gan.WGANDiv(), d.sample, LOOP, stop_at=0)
    with pytest.raises(TypeError, match="LoopConfig"):
        gr.train_gan(G, T, gan.WGANDiv(), d.sample, {"steps": 3})


# ---------------------------------------------------------------- the loop


@pytest.mark.parametrize("loss", [gan.WGANDiv(), gan.WGANGP(), gan.StandardGAN(), gan.WGANClip(), gan.WGAN()])
def test_short_training_is_finite_and_evaluates_on_schedule(loss):
    G, T, d = toy()
    cfg = replace(LOOP, n_critic=2)
    run = gr.train_gan(G, T, loss, d.sample, cfg, device="cpu", evaluate=lambda g, t, s: {"s": s},
                       snapshot=lambda g, t, s: s)
    assert run.history.steps == [10, 20, 30] and run.n_critic == 2 and run.loss == loss.name
    assert all(np.isfinite(v) for col in run.history.metrics.values() for v in col)
    assert run.evals.steps == [0, 10, 20, 30] and run.evals["s"] == [0, 10, 20, 30]
    assert run.evals["critic_updates"] == [0, 20, 40, 60]
    assert sorted(run.snapshots) == [0, 10, 20, 30] and run.at("s") == 30 and run.first_step("s", 15) == 20


def test_critic_learns_with_the_generator_fixed():
    G, T, d = toy()
    for prm in G.parameters():
        prm.requires_grad_(False)
    opt = torch.optim.Adam(T.parameters(), 1e-3)
    loss, g, vals = gan.WGANDiv(), torch.Generator().manual_seed(0), []
    for _ in range(100):
        lt, _ = loss.critic_loss(T, d.sample(128, g), G(torch.randn(128, 2, generator=g)))
        opt.zero_grad()
        lt.backward()
        opt.step()
        vals.append(float(lt.detach()))
    assert np.mean(vals[-10:]) < np.mean(vals[:10]) - 0.1


def test_the_same_seed_repeats_a_run_and_another_seed_does_not():
    runs = []
    for seed in (5, 5, 6):
        G, T, d = toy()
        runs.append(gr.train_gan(G, T, gan.WGANGP(), d.sample, LOOP, seed=seed, device="cpu").G)
    p = [torch.cat([q.flatten() for q in g.parameters()]) for g in runs]
    assert torch.equal(p[0], p[1]) and not torch.equal(p[0], p[2])


def test_resume_repeats_the_uninterrupted_run_exactly(tmp_path):
    def run(ckpt, stop_at=None):
        G, T, d = toy()
        cfg = replace(LOOP, checkpoint_every=10)
        return gr.train_gan(G, T, gan.WGANGP(), d.sample, cfg, seed=1, device="cpu", checkpoint=ckpt,
                            stop_at=stop_at, evaluate=lambda g, t, s: {"m": float(g[0].weight.detach().sum())},
                            snapshot=lambda g, t, s: np.full(3, s))

    full = run(None)
    part = run(tmp_path / "c.pt", stop_at=10)  # a killed session
    assert part.history.steps == [10] and (tmp_path / "c.pt").is_file()
    resumed = run(tmp_path / "c.pt")
    for a, b in zip(full.G.parameters(), resumed.G.parameters()):
        assert torch.equal(a, b)
    assert resumed.evals["m"] == full.evals["m"] and resumed.history.metrics == full.history.metrics
    assert sorted(resumed.snapshots) == [0, 10, 20, 30] and resumed.snapshots[10].tolist() == [10, 10, 10]


def test_a_checkpoint_of_another_run_or_a_longer_one_is_refused(tmp_path):
    G, T, d = toy()
    gr.train_gan(G, T, gan.WGANGP(), d.sample, LOOP, device="cpu", checkpoint=tmp_path / "c.pt")
    G, T, d = toy()
    with pytest.raises(CheckpointError, match="another run"):
        gr.train_gan(G, T, gan.WGANDiv(), d.sample, LOOP, device="cpu", checkpoint=tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="past the 20 steps"):
        gr.train_gan(G, T, gan.WGANGP(), d.sample, replace(LOOP, steps=20), device="cpu",
                     checkpoint=tmp_path / "c.pt")


class Payload:
    """What a crafted checkpoint carries: unpickling it would create a file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_a_crafted_checkpoint_runs_nothing_and_says_so(tmp_path):
    marker = tmp_path / "payload-ran"
    ckpt = tmp_path / "run.pt"
    torch.save({"G": Payload(marker), "step": 1}, ckpt)
    pickle.loads(pickle.dumps(Payload(tmp_path / "probe")))  # the payload is live: an unsafe load runs it
    assert (tmp_path / "probe").exists()
    G, T, d = toy()
    with pytest.raises(CheckpointError, match="Nothing from it was run") as e:
        gr.train_gan(G, T, gan.WGANDiv(), d.sample, LOOP, device="cpu", checkpoint=ckpt)
    assert "run.pt" in str(e.value) and "Delete it" in str(e.value)
    assert not marker.exists()


def test_ganrun_state_round_trip_is_weights_only(tmp_path):
    G, T, d = toy()
    run = gr.train_gan(G, T, gan.WGANDiv(), d.sample, LOOP, device="cpu",
                       snapshot=lambda g, t, s: {"x": np.ones((2, 2)) * s, "field": (np.zeros(2), None)})
    from dlbook.train import save_checkpoint

    save_checkpoint(tmp_path / "r.pt", run.state_dict())
    back = gr.GANRun.from_state_dict(load_checkpoint(tmp_path / "r.pt"))
    assert back.history.metrics == run.history.metrics and back.evals.steps == run.evals.steps
    assert np.array_equal(back.snapshots[30]["x"], run.snapshots[30]["x"])


@pytest.mark.parametrize("stop_at", [3, 5, 7])
def test_a_run_stopped_inside_a_log_interval_resumes_to_the_uninterrupted_history(tmp_path, stop_at):
    cfg = replace(LOOP, steps=12, log_every=4, eval_every=4, checkpoint_every=3)
    full_G, full_T, d = toy()
    full = gr.train_gan(full_G, full_T, gan.WGANGP(), d.sample, cfg, seed=2, device="cpu")
    assert full.history.steps == [4, 8, 12]
    G, T, d = toy()
    part = gr.train_gan(G, T, gan.WGANGP(), d.sample, cfg, seed=2, device="cpu", checkpoint=tmp_path / "c.pt",
                        stop_at=stop_at)
    assert part.history.steps == [4] * (stop_at >= 4)  # no log entry at the stop
    G, T, d = toy()
    resumed = gr.train_gan(G, T, gan.WGANGP(), d.sample, cfg, seed=2, device="cpu", checkpoint=tmp_path / "c.pt")
    assert resumed.history.steps == [4, 8, 12] and resumed.history.metrics == full.history.metrics
    for a, b in zip(full.G.parameters(), resumed.G.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("spoil", ["G", "opt_t", "step", "pending", "history", "shape"])
def test_a_checkpoint_with_a_bad_field_changes_nothing_and_says_so(tmp_path, spoil):
    from dlbook.train import save_checkpoint

    G, T, d = toy()
    gr.train_gan(G, T, gan.WGANGP(), d.sample, LOOP, device="cpu", checkpoint=tmp_path / "c.pt", stop_at=10)
    s = load_checkpoint(tmp_path / "c.pt")
    if spoil == "shape":
        k = next(iter(s["T"]))
        s["T"][k] = torch.zeros(1)
    elif spoil == "history":
        s["history"] = {"steps": [10], "metrics": {"critic": []}}
    else:
        del s[spoil]
    save_checkpoint(tmp_path / "c.pt", s)
    G, T, d = toy(seed=4)
    before = [p.detach().clone() for p in list(G.parameters()) + list(T.parameters())]
    with pytest.raises(CheckpointError):
        gr.train_gan(G, T, gan.WGANGP(), d.sample, LOOP, device="cpu", checkpoint=tmp_path / "c.pt")
    for a, b in zip(before, list(G.parameters()) + list(T.parameters())):
        assert torch.equal(a, b)


def test_a_trainer_checkpoint_is_not_an_image_result(tmp_path):
    from dlbook.train import Trainer, save_checkpoint

    net = torch.nn.Linear(2, 1)
    Trainer(net, torch.optim.SGD(net.parameters(), 0.1), lambda m, b: m(b).sum(), device="cpu",
            progress=False, checkpoint=tmp_path / "t.pt").save()
    with pytest.raises(CheckpointError, match="lacks the field"):
        gr.ImageResult.load(tmp_path / "t.pt")
    save_checkpoint(tmp_path / "r.pt", {"runs": {"a\x1fx": {}}, "metric": {}, "source": "s", "x_shape": [1],
                                        "seconds": 1.0})
    with pytest.raises(CheckpointError, match="image-experiment result"):
        gr.ImageResult.load(tmp_path / "r.pt")


def test_a_diverging_gan_stops_with_a_clear_error():
    G, T, d = toy()
    cfg = replace(LOOP, lr=1e30)
    with pytest.raises(gr.NonFiniteLoss, match="training stopped"):
        gr.train_gan(G, T, gan.WGAN(), d.sample, cfg, device="cpu")


# ---------------------------------------------------------------- toys and jobs


def test_toy_config_takes_its_loop_settings_from_loop_config():
    from dataclasses import fields

    loop_fields = {f.name: f.type for f in fields(gr.LoopConfig)}
    toy_fields = {f.name: f.type for f in fields(gr.ToyConfig)}
    assert all(toy_fields[n] == loop_fields[n] for n in gr.TOY_LOOP)  # the same names and types
    assert not set(gr.TOY_LOOP) & set(gr.ToyConfig.SIZES + gr.ToyConfig.POSITIVE + gr.ToyConfig.UNIT)
    cfg = gr.ToyConfig()
    assert (cfg.lr, cfg.betas, cfg.eval_every) == (gr.LoopConfig.lr, gr.LoopConfig.betas, gr.LoopConfig.eval_every)
    assert (cfg.steps, cfg.batch) == (4000, 256)  # the toy's own defaults, as before
    loop = cfg.loop(5, lr=1e-4, betas=(0.5, 0.9))
    assert isinstance(loop, gr.LoopConfig)
    assert (loop.steps, loop.batch, loop.n_critic, loop.z_dim, loop.lr, loop.betas, loop.eval_every, loop.log_every) \
        == (4000, 256, 5, 2, 1e-4, (0.5, 0.9), 500, 50)
    assert cfg.loop(steps=7).steps == 7 and cfg.loop().lr == cfg.lr and not cfg.loop().progress
    for bad, match in [(dict(steps=0), "steps"), (dict(batch=-4), "batch"), (dict(lr=0.0), "lr"),
                       (dict(betas=(0.5, 1.5)), "betas"), (dict(eval_every=2.5), "eval_every")]:
        with pytest.raises(ConfigError, match=f"ToyConfig: {match}"):
            gr.ToyConfig(**bad)


def test_toy_experiment_keys_runs_by_job_and_refuses_repeats():
    cfg = gr.ToyConfig(steps=10, batch=32, width=16, depth=2, eval_every=5, n_eval=100, n_show=50, field_n=11,
                       workers=1)
    jobs = [gr.ToyJob(("div", 0), gan.WGANDiv(), 0, fields=True),
            gr.ToyJob(("sn", 0), gan.WGAN(), 0, n_critic=2, steps=6, critic_norm="sn")]
    res = gr.toy_experiment(jobs, cfg)
    assert set(res.runs) == {("div", 0), ("sn", 0)}
    assert res.runs[("sn", 0)].steps == 6 and res.runs[("sn", 0)].n_critic == 2
    assert res.runs[("div", 0)].snapshots[10]["field"][1].shape == (11, 11)
    assert res.runs[("sn", 0)].snapshots[6]["field"] is None
    with pytest.raises(ValueError, match="repeat"):
        gr.toy_experiment(jobs + jobs[:1], cfg)


def _square(x):
    return x ** 2


def test_run_jobs_keeps_order_in_and_out_of_process():
    assert gr.run_jobs(_square, list(range(5)), workers=1) == [0, 1, 4, 9, 16]
    assert gr.run_jobs(_square, list(range(5)), workers=2) == [0, 1, 4, 9, 16]


def test_critic_field_gradient_of_linear_critic():
    T = torch.nn.Linear(2, 1)
    with torch.no_grad():
        T.weight.copy_(torch.tensor([[3.0, 4.0]]))
    u, t, gn = gr.critic_field(T, 1.0, n=11)
    assert t.shape == (11, 11) and np.allclose(gn, 5.0)
    assert t[0, -1] > t[0, 0]  # x grows along columns


# ---------------------------------------------------------------- metrics


def test_frechet_distance():
    rng = np.random.default_rng(0)
    s = np.cov(rng.normal(size=(100, 4)), rowvar=False)
    assert gr.frechet_distance(np.zeros(4), s, np.zeros(4), s) == pytest.approx(0, abs=1e-8)
    # 1-D: (m1-m2)^2 + (s1-s2)^2
    assert gr.frechet_distance([1.0], [[4.0]], [0.0], [[1.0]]) == pytest.approx(1 + 1, rel=1e-12)


def test_kid_is_the_unbiased_mmd_and_its_error_is_honest():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 3)), rng.normal(size=(30, 3)) + 0.2
    k = lambda a, b: (a @ b.T / 3 + 1) ** 3  # noqa: E731
    kxx, kyy = k(x, x), k(y, y)
    want = ((kxx.sum() - np.trace(kxx)) / (40 * 39) + (kyy.sum() - np.trace(kyy)) / (30 * 29)
            - 2 * k(x, y).mean())
    value, se = gr.kid(x, y, blocks=4)
    assert value == pytest.approx(want, rel=1e-10) and se > 0
    # unbiased: over independent draws from one distribution the mean is 0 within its error
    vals = [gr.kid(rng.normal(size=(100, 4)), rng.normal(size=(300, 4)))[0] for _ in range(40)]
    assert abs(np.mean(vals)) < 3 * np.std(vals) / np.sqrt(len(vals))
    # the jackknife error matches the spread of the estimate over draws (within a factor 2)
    ses = [gr.kid(rng.normal(size=(100, 4)), rng.normal(size=(300, 4)))[1] for _ in range(10)]
    assert 0.5 < np.mean(ses) / np.std(vals) < 2
    far, far_se = gr.kid(rng.normal(size=(100, 4)) + 1, rng.normal(size=(300, 4)))
    assert far > 3 * far_se
    with pytest.raises(ValueError, match="kid"):
        gr.kid(x[:5], y)


def test_classifier_fid_is_cached_atomically_and_a_torn_cache_is_rebuilt(cache):
    recipe = gr.ClassifierRecipe(width=8, epochs=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean first build warns nothing
        m = gr.ClassifierFID("mnist", 32, "pad", recipe, n_eval=100, progress=False)
    files = list((cache / "classifier-fid").glob("*.pt"))
    assert len(files) == 1 and not m.cached and not list((cache / "classifier-fid").glob(".*part"))
    assert 0.2 < m.accuracy <= 1.0 and m.n_reference > 0 and m.floor["n"] == 100
    again = gr.ClassifierFID("mnist", 32, "pad", recipe, n_eval=100, progress=False)
    assert again.cached and again.accuracy == m.accuracy and again.floor == m.floor
    other = gr.ClassifierFID("mnist", 32, "pad", replace(recipe, seed=1), n_eval=100, progress=False)
    assert len(list((cache / "classifier-fid").glob("*.pt"))) == 2 and not other.cached  # the key holds the recipe
    files[0].write_bytes(files[0].read_bytes()[:200])  # torn
    with pytest.warns(RuntimeWarning, match="unusable.*retraining"):
        rebuilt = gr.ClassifierFID("mnist", 32, "pad", recipe, n_eval=100, progress=False)
    assert not rebuilt.cached and rebuilt.accuracy == m.accuracy  # seeded: the same classifier again
    assert gr.ClassifierFID("mnist", 32, "pad", recipe, n_eval=100, progress=False).cached
    data = bytearray(files[0].read_bytes())  # one flipped bit inside the weights: caught by the checksum
    w = rebuilt.net.state_dict()[next(iter(rebuilt.net.state_dict()))].flatten()[:4].numpy().tobytes()
    data[data.index(w)] ^= 0x01
    files[0].write_bytes(bytes(data))
    with pytest.warns(RuntimeWarning, match="corrupt.*retraining"):
        again = gr.ClassifierFID("mnist", 32, "pad", recipe, n_eval=100, progress=False)
    assert not again.cached and again.accuracy == m.accuracy
    with pytest.raises(ValueError, match=r"expected images \(N, 1, 32, 32\)"):
        m(torch.zeros(4, 1, 28, 28))
    d = m.describe()
    assert d["name"] == "classifier-FID" and "test accuracy" in d["provenance"]
    assert not re.search(r"(?<!classifier-)\bFID\b", d["provenance"])  # never called plain "FID"


def test_classifier_fid_ranks_noise_worse_than_held_out_digits(cache):
    m = gr.ClassifierFID("mnist", 32, "pad", gr.ClassifierRecipe(width=8, epochs=3), n_eval=200, progress=False)
    noise = m(torch.rand(200, 1, 32, 32) * 2 - 1)
    assert noise["fd"] > 3 * m.floor["fd"] and noise["kid"] > m.floor["kid"] + 3 * noise["kid_se"]
    # held-out digits are read as one digit with confidence more often than noise (this small
    # classifier is unsure of most: the recipe's reads 93 % of them with confidence)
    assert 0 <= noise["confident"] < m.floor["confident"] <= 1
    blank = m(-torch.ones(50, 1, 32, 32))
    assert blank["confident"] in (0.0, 1.0)  # one image 50 times: all read alike
    logits = torch.tensor([[5.0, 0.0], [0.0, 0.0]]).repeat(20, 1)  # 0.993 and 0.5 for the top class
    assert m._score(torch.randn(40, m.net.out.in_features).double(), logits)["confident"] == 0.5


def test_an_unlabelled_set_gets_a_rotation_classifier_and_a_held_out_reference(cache, monkeypatch):
    from dlbook import data as D

    rng = np.random.default_rng(0)
    x = (rng.random((600, 16, 16, 3)) * 60).astype(np.uint8)
    x[:, 2:14, 3:6] = 230  # an upright L: its four rotations differ
    x[:, 11:14, 3:13] = 230
    ds = D.Dataset("bars", (), {}, None, "test data", "none", "none", splits=("train",))
    monkeypatch.setattr(D, "info", lambda name: ds)
    monkeypatch.setattr(D, "load", lambda name, split, limit=None: D.ArrayData(
        x[:limit], np.zeros(len(x[:limit]), np.int64), "bars.npz", "bars", split))
    m = gr.ClassifierFID("bars", 16, "resize", gr.ClassifierRecipe(width=8, epochs=8, shift=0), n_eval=100,
                         progress=False)
    assert m.task == "rotation prediction" and m.net.out.out_features == 4
    assert m.n_reference == 150 and m.floor["n"] == 100  # 300 held out: 150 reference, 150 for the floor
    assert m.accuracy > 0.9 and m.describe()["task"] == "rotation prediction"
    assert "confident" not in m.floor  # rotations are not classes an image could be read as


def test_inception_metric_falls_back_and_says_so(cache, monkeypatch):
    monkeypatch.setitem(sys.modules, "pytorch_fid", None)  # as on a machine without the package
    cfg = gr.ImageConfig(n_train=None, n_eval=64, metric="inception", classifier=gr.ClassifierRecipe(width=8, epochs=1))
    with pytest.warns(RuntimeWarning, match="Inception FID unavailable"):
        m = gr.image_metric(cfg, "cpu", progress=False)
    assert isinstance(m, gr.ClassifierFID)
    assert m.describe()["provenance"].startswith("Inception FID unavailable")


# ---------------------------------------------------------------- image experiments


def test_image_experiment_compares_a_loss_table_over_seeds(cache, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    cfg = gr.ImageConfig(data="mnist", img_size=16, fit="resize", n_train=None, z_dim=8, base=4, max_ch=8, batch=8, steps=4,
                         eval_every=2, n_eval=32, seeds=(0, 1), classifier=gr.ClassifierRecipe(width=8, epochs=1))
    table = {"WGAN-div": (gan.WGANDiv(), 1, "bn"), "WGAN-SN": gr.Method(gan.WGAN(), 2, "sn")}
    res = gr.image_experiment(cfg, table, device="cpu", checkpoint_dir=tmp_path / "ck")
    assert set(res.runs) == {("WGAN-div", 0), ("WGAN-div", 1), ("WGAN-SN", 0), ("WGAN-SN", 1)}
    assert res.names == ["WGAN-div", "WGAN-SN"] and res.seeds("WGAN-SN") == [0, 1]
    r = res.runs[("WGAN-SN", 1)]
    assert r.evals.steps == [0, 2, 4] and {"fd", "kid", "kid_se", "seconds", "critic_updates"} <= set(r.evals.metrics)
    assert r.evals["critic_updates"] == [0, 4, 8] and r.snapshots[4].shape == (64, 1, 16, 16)
    assert res.runs[("WGAN-div", 0)].at("fd") != res.runs[("WGAN-div", 1)].at("fd")  # seeds differ
    assert len(res.final("WGAN-div")) == 2 and res.x_shape[1:] == (1, 16, 16)
    fin = res.finals("WGAN-SN")  # every evaluated score, the readable share too (MNIST is labelled)
    assert set(fin) == {"fd", "kid", "kid_se", "confident"} and fin["kid"] == res.final("WGAN-SN", "kid")
    assert set(res.finals("WGAN-SN", ("fd", "no-such-score"))) == {"fd"}
    assert res.metric["name"] == "classifier-FID" and 0 <= res.metric["accuracy"] <= 1
    assert len(list((tmp_path / "ck").glob("*.pt"))) == 4
    res.save(tmp_path / "res.pt")
    back = gr.ImageResult.load(tmp_path / "res.pt")
    assert back.final("WGAN-SN", "kid") == res.final("WGAN-SN", "kid") and back.metric == res.metric
    for x in ("step", "seconds"):
        ax = gr.plot_image_curves(back, "fd", x=x)
        assert ax.get_ylabel() == "classifier-FID"
    with pytest.raises(ValueError, match="empty"):
        gr.image_experiment(cfg, {})


def test_image_runs_in_worker_processes_repeat_the_runs_of_one_process(cache):
    cfg = gr.ImageConfig(data="mnist", img_size=16, fit="resize", n_train=None, z_dim=8, base=4, max_ch=8, batch=8,
                         steps=3, eval_every=3, n_eval=32, seeds=(0, 1), threads=1,
                         classifier=gr.ClassifierRecipe(width=8, epochs=1))
    # an SN critic too: a torch parametrisation does not pickle, so workers send the nets as state dicts
    table = {"WGAN-div": gr.Method(gan.WGANDiv(separate=True), 1, "bn"), "WGAN-SN": gr.Method(gan.WGAN(), 1, "sn")}
    one = gr.image_experiment(cfg, table, device="cpu")
    two = gr.image_experiment(replace(cfg, workers=2), table, device="cpu")
    assert list(two.runs) == list(one.runs) == [(n, s) for n in table for s in (0, 1)]
    for k in one.runs:
        assert two.runs[k].curve("fd")[1].tolist() == one.runs[k].curve("fd")[1].tolist()
        assert two.runs[k].history["critic"] == one.runs[k].history["critic"]
        for a, b in ((one.runs[k].G, two.runs[k].G), (one.runs[k].T, two.runs[k].T)):
            assert type(a) is type(b) and a.training == b.training
            sa, sb = a.state_dict(), b.state_dict()
            assert sa.keys() == sb.keys() and all(torch.equal(sa[n], sb[n]) for n in sa)
    assert {k: v for k, v in two.metric.items() if k != "cached"} == {k: v for k, v in one.metric.items() if k != "cached"}
    assert one.initial("WGAN-div") == [one.runs[("WGAN-div", s)].at("fd", 0) for s in (0, 1)]
    assert one.ratio("WGAN-div") == pytest.approx([b / a for a, b in zip(one.initial("WGAN-div"),
                                                                         one.final("WGAN-div"))])


def test_smoke_settings_are_small_versions_of_the_same_experiment():
    cfg = gr.ImageConfig(seeds=(3, 4), steps=900)
    small = cfg.smoke()
    assert (small.data, small.img_size, small.fit, small.z_dim) == (cfg.data, cfg.img_size, cfg.fit, cfg.z_dim)
    assert small.steps < cfg.steps and small.seeds == (3,) and small.n_train is None
    toy = gr.ToyConfig(data="25gaussians").smoke()
    assert toy.data == "25gaussians" and toy.workers == 1 and toy.steps < gr.ToyConfig().steps


def test_command_line_writes_a_result(cache, tmp_path):
    out = tmp_path / "qp.pt"
    cmd = [sys.executable, "-m", "dlbook.gan_runs", "--chapter", "gan_qp", "--profile", "smoke", "--steps", "2",
           "--seeds", "0", "1", "--out", str(out)]
    p = subprocess.run(cmd, env=dict(os.environ, PYTHONWARNINGS="ignore"), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "classifier-FID" in p.stdout and "GAN-QP: final" in p.stdout
    res = gr.ImageResult.load(out)
    assert res.names == ["GAN-QP"] and res.seeds("GAN-QP") == [0, 1] and res.runs[("GAN-QP", 1)].steps == 2


# ---------------------------------------------------------------- torchrun

WORKER = textwrap.dedent('''
    import sys, torch
    from dlbook import gan, gan_runs as gr
    out, batch = sys.argv[1], int(sys.argv[2])
    procs = gr.init_processes()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x = torch.rand(64, 1, 16, 16) * 2 - 1
    norm = sys.argv[3] if len(sys.argv) > 3 else "none"
    G = gan.ConvGenerator(8, 16, 1, 4, 8, 4, norm=norm)
    T = gan.ConvCritic(16, 1, 4, 8, 4, norm)
    # the book's image nets (BatchNorm in both) with random penalty points, or no norm with the pool
    loss = gan.WGANGP(10.0, "interp") if norm == "bn" else gan.WGANDiv(2.0, 6.0, "pool")
    cfg = gr.LoopConfig(steps=6, batch=batch, n_critic=2, z_dim=8, log_every=2, eval_every=3, progress=False)
    sample = lambda n, g: x[torch.randint(len(x), (n,), generator=g)]
    try:
        run = gr.train_gan(G, T, loss, sample, cfg, seed=3, device="cpu",
                           evaluate=lambda G, T, s: {"w0": float(G.fc[0].weight.sum())},
                           checkpoint=f"{out}/ckpt.pt" if procs.world > 1 else None)
    except ValueError as e:
        print("REFUSED", e)
        raise SystemExit(0)
    torch.save({"G": G.state_dict(), "T": T.state_dict(), "hist": run.history.state_dict(),
                "evals": run.evals.state_dict()}, f"{out}/rank{procs.rank}-of-{procs.world}.pt")
''')


def _torchrun(tmp_path, nproc, batch, norm="none"):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    root = str(Path(__file__).resolve().parent.parent)  # this checkout's dlbook in the workers
    env = dict(os.environ, GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore",
               PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", str(script),
           str(tmp_path), str(batch), norm]
    if nproc == 1:
        cmd = [sys.executable, str(script), str(tmp_path), str(batch), norm]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    return p.stdout


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_torchrun_two_processes_match_one_process_fed_the_same_global_batches(tmp_path):
    _torchrun(tmp_path, 2, 8)
    _torchrun(tmp_path, 1, 8)
    r0, r1, one = (torch.load(tmp_path / f"rank{r}-of-{w}.pt", weights_only=True) for r, w in ((0, 2), (1, 2), (0, 1)))
    for net in ("G", "T"):
        for name, a in r0[net].items():
            assert torch.equal(a, r1[net][name]), f"ranks differ in {net}.{name}"
            assert torch.allclose(a, one[net][name], rtol=1e-4, atol=1e-6), f"{net}.{name} differs from one process"
    assert r0["hist"] == r1["hist"] and r0["evals"] == r1["evals"]  # metrics reduced, evaluations shared
    for k, col in one["hist"]["metrics"].items():
        assert np.allclose(r0["hist"]["metrics"][k], col, rtol=1e-4, atol=1e-7), k
    assert [p.name for p in tmp_path.glob("ckpt*")] == ["ckpt.pt"]  # one checkpoint, by rank 0
    out = _torchrun(tmp_path, 2, 7)  # an odd global batch cannot be split over two processes
    assert out.count("REFUSED") == 2 and "split evenly" in out


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_torchrun_with_batchnorm_nets_and_random_penalty_points_matches_one_process(tmp_path):
    """The book's image setting: BatchNorm in the generator and the critic, WGAN-GP on random
    interpolates. Two processes normalise with the global batch's statistics and draw the
    penalty points of the global batch, so they train as one process fed the same batches."""
    _torchrun(tmp_path, 2, 8, "bn")
    _torchrun(tmp_path, 1, 8, "bn")
    r0, r1, one = (torch.load(tmp_path / f"rank{r}-of-{w}.pt", weights_only=True) for r, w in ((0, 2), (1, 2), (0, 1)))
    for net in ("G", "T"):
        sd = one[net]
        for name, a in r0[net].items():
            assert torch.equal(a, r1[net][name]), f"ranks differ in {net}.{name}"
            prefix, _, leaf = name.rpartition(".")
            head, _, idx = prefix.rpartition(".")
            after = f"{head}.{int(idx) + 1}" if idx.isdigit() else None
            if after and f"{after}.running_mean" in sd and leaf == "bias":
                continue  # a bias right before a BatchNorm has no effect: its gradient is rounding noise
            if name.endswith("running_mean") and f"{head}.{int(idx) - 1}.bias" in sd:
                continue  # ... and the running mean after it follows that bias
            if a.is_floating_point():
                rel = float((a - sd[name]).norm() / sd[name].norm().clamp(min=1e-12))
                assert rel < 1e-5, f"{net}.{name} differs from one process by a relative {rel:.2g}"
            else:
                assert torch.equal(a, sd[name]), f"{net}.{name}"
    # the nets compute the same functions of a batch (batch statistics, as in training; in eval
    # mode the running means carry the pre-BatchNorm biases' noise, in one process as in two)
    G2, G1 = (gan.ConvGenerator(8, 16, 1, 4, 8, 4, norm="bn") for _ in range(2))
    T2, T1 = (gan.ConvCritic(16, 1, 4, 8, 4, "bn") for _ in range(2))
    for m, r in ((G2, r0["G"]), (G1, one["G"]), (T2, r0["T"]), (T1, one["T"])):
        m.load_state_dict(r)
    z = torch.randn(32, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        x2, x1 = G2(z), G1(z)
        assert float((x2 - x1).norm() / x1.norm()) < 1e-5
        assert float((T2(x1) - T1(x1)).norm() / T1(x1).norm()) < 1e-5
    for k, col in one["hist"]["metrics"].items():
        assert np.allclose(r0["hist"]["metrics"][k], col, rtol=1e-4, atol=1e-6), k


def test_a_baseline_runs_on_its_own_recipe():
    """A loss-table row or toy job may carry its own Adam lr and betas (WGAN-GP's 1e-4, (0.5, 0.9));
    the run's optimisers use them, and bad values are refused where the row is built."""
    from dlbook import gan
    from dlbook.config import ConfigError
    from dlbook.gan_runs import Method, ToyConfig, ToyJob, as_method, toy_job

    row = as_method("GP", Method(gan.WGANGP(10.0, "interp"), 5, "none", lr=1e-4, betas=(0.5, 0.9)))
    assert (row.lr, row.betas) == (1e-4, (0.5, 0.9))
    with pytest.raises(ConfigError, match="betas"):
        as_method("bad", Method(gan.WGAN(), 1, "none", betas=(0.5, 1.5)))
    with pytest.raises(ConfigError, match="lr"):
        ToyJob(("x",), gan.WGAN(), lr=float("inf"))
    cfg = replace(ToyConfig().smoke(), steps=2, eval_every=2)
    a = toy_job(ToyJob(("a",), gan.StandardGAN(), seed=0), cfg)
    b = toy_job(ToyJob(("b",), gan.StandardGAN(), seed=0, lr=1e-3, betas=(0.0, 0.9)), cfg)
    c = toy_job(ToyJob(("c",), gan.StandardGAN(), seed=0, lr=cfg.lr, betas=cfg.betas), cfg)
    pa, pb, pc = (r.snapshots[2]["x"] for r in (a, b, c))  # generated points after 2 steps
    assert np.array_equal(pa, pc) and not np.array_equal(pa, pb)
