import math

import pytest
import torch
from torch import nn

from dlbook.config import seed_everything
from dlbook.train import (ArrayLoader, CheckpointError, History, NonFiniteLoss, Trainer, load_checkpoint, rng_state,
                          save_checkpoint, set_rng_state)


def _problem(seed=0):
    g = torch.Generator().manual_seed(123)
    x = torch.randn(96, 5, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0]) + 0.1 * torch.randn(96, generator=g)
    seed_everything(seed)
    model = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Dropout(0.1), nn.Linear(16, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=7, gamma=0.9)
    loader = ArrayLoader((x, y), batch_size=16, seed=seed)

    def step(m, batch):
        xb, yb = batch
        loss = (m(xb).squeeze(-1) - yb).pow(2).mean()
        return loss, {"abs": (m(xb).squeeze(-1) - yb).abs().mean()}

    return model, opt, sched, loader, step


def _params(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_loss_goes_down_and_history_is_logged():
    model, opt, sched, loader, step = _problem()
    h = Trainer(model, opt, step, device="cpu", progress=False, log_every=5).fit(loader, steps=60)
    assert h.steps == list(range(5, 61, 5))
    assert h.last("loss") < 0.5 * h["loss"][0]
    assert len(h["abs"]) == len(h.steps)


def test_two_seeded_runs_are_identical():
    runs = []
    for _ in range(2):
        model, opt, sched, loader, step = _problem(seed=3)
        Trainer(model, opt, step, device="cpu", scheduler=sched, progress=False).fit(loader, steps=25)
        runs.append(_params(model))
    assert torch.equal(runs[0], runs[1])


def test_resume_from_checkpoint_equals_uninterrupted_run(tmp_path):
    model, opt, sched, loader, step = _problem(seed=1)
    full = Trainer(model, opt, step, device="cpu", scheduler=sched, progress=False)
    full.fit(loader, steps=23)  # 23 steps = 3 epochs of 6 batches + 5: resume lands mid-epoch
    want, want_hist = _params(model), full.history.state_dict()

    ckpt = tmp_path / "run.pt"
    model, opt, sched, loader, step = _problem(seed=1)
    t = Trainer(model, opt, step, device="cpu", scheduler=sched, progress=False, checkpoint=ckpt,
                checkpoint_every=4)
    t.fit(loader, steps=23, stop_at=10)  # the session "dies" after step 10
    assert ckpt.exists() and t.step == 10

    torch.manual_seed(999)  # a new session: different global RNG state
    model, opt, sched, loader, step = _problem(seed=1)
    model.apply(lambda m: m.reset_parameters() if hasattr(m, "reset_parameters") else None)
    t2 = Trainer(model, opt, step, device="cpu", scheduler=sched, progress=False, checkpoint=ckpt)
    t2.fit(loader, steps=23)
    assert t2.resumed_from == 10
    assert torch.equal(_params(model), want)
    assert t2.history.state_dict() == want_hist
    assert not list(tmp_path.glob("*.part"))


def test_callbacks_and_grad_clip():
    model, opt, sched, loader, step = _problem()
    seen = []
    Trainer(model, opt, step, device="cpu", progress=False, grad_clip=0.1, log_every=2,
            callbacks=[lambda tr, s, m: seen.append((s, round(m["loss"], 6)))]).fit(loader, steps=6)
    assert [s for s, _ in seen] == [2, 4, 6]


def test_amp_defaults_off_on_cpu_and_runs_bf16_when_asked():
    model, opt, sched, loader, step = _problem()
    t = Trainer(model, opt, step, device="cpu", progress=False)
    assert t.amp is False
    t = Trainer(model, opt, step, device="cpu", progress=False, amp=True)
    h = t.fit(loader, steps=3)
    assert all(math.isfinite(v) for v in h["loss"])


def test_loader_errors_and_order():
    with pytest.raises(ValueError, match="different lengths"):
        ArrayLoader((torch.zeros(4), torch.zeros(5)), batch_size=2)
    with pytest.raises(ValueError, match="does not fit"):
        ArrayLoader(torch.zeros(4), batch_size=8)
    a = ArrayLoader(torch.arange(10), batch_size=5, seed=0)
    a.set_epoch(0)
    e0 = torch.cat(list(a))
    a.set_epoch(1)
    e1 = torch.cat(list(a))
    assert sorted(e0.tolist()) == list(range(10)) and not torch.equal(e0, e1)
    a.set_epoch(0)
    assert torch.equal(torch.cat(list(a)), e0)


def test_one_shot_iterables_that_run_out_are_an_error():
    model, opt, sched, loader, step = _problem()
    batches = iter(list(loader))
    with pytest.raises(ValueError, match="ran out|no batches"):
        Trainer(model, opt, step, device="cpu", progress=False).fit(batches, steps=100)


def test_history_alignment():
    h = History()
    h.log(1, {"a": 1.0})
    h.log(2, {"a": 2.0, "b": 5.0})
    h.log(3, {"b": 6.0})
    assert h["a"][:2] == [1.0, 2.0] and math.isnan(h["a"][2])
    assert math.isnan(h["b"][0]) and h["b"][1:] == [5.0, 6.0]
    assert h.last("a", 3) == 1.5


class _Payload:
    """Unpickling this object would run os.system: a crafted checkpoint must never do that."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.system, (f"touch '{self.marker}'",))


def test_crafted_checkpoint_runs_nothing_and_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "run.pt"
    model, opt, sched, loader, step = _problem()
    good = Trainer(model, opt, step, device="cpu", progress=False).state_dict()
    good["history"] = _Payload(marker)  # a real checkpoint with one poisoned entry
    torch.save(good, ckpt)
    model, opt, sched, loader, step = _problem()
    t = Trainer(model, opt, step, device="cpu", progress=False, checkpoint=ckpt)
    with pytest.raises(CheckpointError, match="Nothing from it was run. Delete it"):
        t.fit(loader, steps=5)
    assert not marker.exists()
    assert t.step == 0


def test_torn_checkpoint_is_a_clear_error(tmp_path):
    ckpt = tmp_path / "run.pt"
    model, opt, sched, loader, step = _problem()
    Trainer(model, opt, step, device="cpu", progress=False, checkpoint=ckpt).fit(loader, steps=3)
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    model, opt, sched, loader, step = _problem()
    with pytest.raises(CheckpointError, match="not a usable dlbook checkpoint"):
        Trainer(model, opt, step, device="cpu", progress=False, checkpoint=ckpt).fit(loader, steps=5)


def test_checkpoint_of_another_run_or_a_longer_run_is_refused(tmp_path):
    ckpt = tmp_path / "run.pt"
    model, opt, sched, loader, step = _problem()
    Trainer(model, opt, step, device="cpu", progress=False, checkpoint=ckpt,
            run_key={"lr": 1e-2, "width": (16,)}).fit(loader, steps=8)
    model, opt, sched, loader, step = _problem()
    with pytest.raises(CheckpointError, match="another run"):
        Trainer(model, opt, step, device="cpu", progress=False, checkpoint=ckpt,
                run_key={"lr": 1e-3, "width": (16,)}).fit(loader, steps=8)
    model, opt, sched, loader, step = _problem()
    with pytest.raises(CheckpointError, match="past the 5 steps"):
        Trainer(model, opt, step, device="cpu", progress=False, checkpoint=ckpt,
                run_key={"lr": 1e-2, "width": (16,)}).fit(loader, steps=5)
    model, opt, sched, loader, step = _problem()  # the same run resumes (tuple vs list is the same key)
    t = Trainer(model, opt, step, device="cpu", progress=False, checkpoint=ckpt,
                run_key={"lr": 1e-2, "width": [16]})
    t.fit(loader, steps=10)
    assert t.resumed_from == 8 and t.step == 10


def test_rng_state_roundtrip_is_plain_data(tmp_path):
    import random

    import numpy as np

    s = rng_state()
    a = (torch.rand(3), np.random.rand(3), random.random(), np.random.randn())
    save_checkpoint(tmp_path / "rng.pt", {"rng": s})
    set_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    b = (torch.rand(3), np.random.rand(3), random.random(), np.random.randn())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2] and a[3] == b[3]


@pytest.mark.parametrize("kw", [{"log_every": 0}, {"log_every": 1.5}, {"grad_clip": -1.0},
                                {"checkpoint_every": -2}])
def test_bad_trainer_settings_are_refused(kw):
    model, opt, sched, loader, step = _problem()
    with pytest.raises(ValueError, match=next(iter(kw))):
        Trainer(model, opt, step, device="cpu", progress=False, **kw)


@pytest.mark.parametrize("steps", [0, -3, 2.5])
def test_bad_step_counts_are_refused(steps):
    model, opt, sched, loader, step = _problem()
    with pytest.raises(ValueError, match="steps"):
        Trainer(model, opt, step, device="cpu", progress=False).fit(loader, steps=steps)


# ---------------------------------------------------------------- reliability probes


def test_a_checkpoint_cut_anywhere_is_a_checkpoint_error(tmp_path):
    ckpt = tmp_path / "run.pt"
    model, opt, sched, loader, step = _problem()
    Trainer(model, opt, step, device="cpu", progress=False, checkpoint=ckpt).fit(loader, steps=3)
    data = ckpt.read_bytes()
    for cut in sorted({0, 1, 10, 100, 512, *range(0, len(data), max(1, len(data) // 41)), len(data) - 1}):
        ckpt.write_bytes(data[:cut])
        with pytest.raises(CheckpointError):
            load_checkpoint(ckpt)


def test_one_flipped_bit_is_caught_by_the_checksum(tmp_path):
    ckpt = tmp_path / "run.pt"
    save_checkpoint(ckpt, {"w": torch.arange(64, dtype=torch.float32), "step": 3})
    data = bytearray(ckpt.read_bytes())
    at = data.index(torch.arange(64, dtype=torch.float32)[5:6].numpy().tobytes())  # inside the tensor's bytes
    data[at] ^= 0x01
    ckpt.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(ckpt)
    torch.save({"w": torch.zeros(2)}, ckpt)  # no checksum: written by something else
    with pytest.raises(CheckpointError, match="no content checksum"):
        load_checkpoint(ckpt)


@pytest.mark.parametrize("crash_at", [3, 5, 6])
def test_a_resumed_run_logs_the_history_of_an_uninterrupted_one(tmp_path, crash_at):
    """checkpoint_every=3, log_every=4: the log interval open at the checkpoint is carried over."""
    model, opt, sched, loader, step = _problem(seed=2)
    full = Trainer(model, opt, step, device="cpu", scheduler=sched, progress=False, log_every=4)
    full.fit(loader, steps=13)
    want = full.history.state_dict()
    assert want["steps"] == [4, 8, 12, 13]

    ckpt = tmp_path / "run.pt"
    model, opt, sched, loader, step = _problem(seed=2)
    t = Trainer(model, opt, step, device="cpu", scheduler=sched, progress=False, log_every=4, checkpoint=ckpt,
                checkpoint_every=3)
    t.fit(loader, steps=13, stop_at=crash_at)
    assert t.history.steps == [4] * (crash_at >= 4)  # an early stop logs no partial interval
    model, opt, sched, loader, step = _problem(seed=2)
    t2 = Trainer(model, opt, step, device="cpu", scheduler=sched, progress=False, log_every=4, checkpoint=ckpt,
                 checkpoint_every=3)
    t2.fit(loader, steps=13)
    assert t2.history.state_dict() == want


@pytest.mark.parametrize("spoil", ["drop-model", "drop-step", "drop-pending", "drop-history", "bad-step",
                                   "bad-history", "bad-rng", "shape", "opt-groups", "drop-scheduler", "drop-rng"])
def test_a_checkpoint_with_a_bad_field_is_refused_before_anything_is_loaded(tmp_path, spoil):
    ckpt = tmp_path / "run.pt"
    model, opt, sched, loader, step = _problem()
    s = Trainer(model, opt, step, device="cpu", scheduler=sched, progress=False).state_dict()
    s["step"] = 2
    field = spoil.split("-", 1)[-1]
    if spoil.startswith("drop"):
        del s[field]
    elif spoil == "bad-step":
        s["step"] = "2"
    elif spoil == "bad-history":
        s["history"] = {"steps": [1, 2], "metrics": {"loss": [0.5]}}
    elif spoil == "bad-rng":
        s["rng"] = {"torch": torch.zeros(3)}
    elif spoil == "shape":
        s["model"]["0.weight"] = torch.zeros(3, 5)
    elif spoil == "opt-groups":
        s["optimizer"]["param_groups"].append(dict(s["optimizer"]["param_groups"][0]))
    save_checkpoint(ckpt, s)
    model, opt, sched, loader, step = _problem(seed=7)
    before = (_params(model), copy_opt(opt), sched.state_dict(), torch.get_rng_state())
    t = Trainer(model, opt, step, device="cpu", scheduler=sched, progress=False, checkpoint=ckpt)
    with pytest.raises(CheckpointError):
        t.fit(loader, steps=5)
    assert torch.equal(_params(model), before[0]) and copy_opt(opt) == before[1]
    assert sched.state_dict() == before[2] and torch.equal(torch.get_rng_state(), before[3]) and t.step == 0


def copy_opt(opt):
    return repr(opt.state_dict())


def test_a_non_finite_loss_stops_the_run_with_a_clear_error():
    model, _, _, loader, step = _problem()
    opt = torch.optim.SGD(model.parameters(), lr=float("nan"))
    t = Trainer(model, opt, step, device="cpu", progress=False)
    with pytest.raises(NonFiniteLoss, match="loss is nan at step 2"):
        t.fit(loader, steps=10)
    assert t.step == 1


def test_the_loop_core_logs_means_keeps_the_open_interval_and_refuses_non_finite_means():
    import types

    from dlbook.train import LoopCore

    h, holder, saved, after = History(), types.SimpleNamespace(pending=({}, 0)), [], []
    core = LoopCore(h, holder, steps=10, log_every=4, stop_at=6, checkpoint_every=3, save=saved.append,
                    save_at_end=True, progress=False, after_step=after.append)
    assert core.run(lambda s: {"a": float(s), "t": torch.tensor(2.0 * s)}) == 6
    assert h.steps == [4] and h["a"] == [2.5] and h["t"] == [5.0]
    assert holder.pending[1] == 2 and holder.pending[0]["a"] == 11.0 and saved == [3, 6] and after == list(range(1, 7))
    LoopCore(h, holder, steps=10, log_every=4, start=6, progress=False).run(lambda s: {"a": float(s), "t": torch.tensor(2.0 * s)})
    assert h.steps == [4, 8, 10] and h["a"] == [2.5, 6.5, 9.5] and holder.pending == ({}, 0)
    with pytest.raises(NonFiniteLoss, match="mean a of steps 1..2 is inf"):
        LoopCore(History(), types.SimpleNamespace(pending=({}, 0)), steps=4, log_every=2, progress=False,
                 what="probe").run(lambda s: {"a": float("inf")})
