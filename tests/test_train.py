import math

import pytest
import torch
from torch import nn

from dlbook.config import seed_everything
from dlbook.train import ArrayLoader, History, Trainer


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
