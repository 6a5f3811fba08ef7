import pytest
import torch

from dlbook import config


def test_explicit_profile_wins(monkeypatch):
    monkeypatch.setenv("DLBOOK_PROFILE", "cpu")
    assert config.resolve_profile("full") == "full"
    assert config.resolve_profile(" SMOKE ") == "smoke"


def test_env_profile(monkeypatch):
    monkeypatch.setenv("DLBOOK_PROFILE", "cpu")
    assert config.resolve_profile(None) == "cpu"


def test_pytest_defaults_to_smoke(monkeypatch):
    monkeypatch.delenv("DLBOOK_PROFILE", raising=False)
    assert config.resolve_profile() == "smoke"


def test_default_outside_pytest(monkeypatch):
    monkeypatch.delenv("DLBOOK_PROFILE", raising=False)
    monkeypatch.setattr(config, "_under_pytest", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert config.resolve_profile() == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert config.resolve_profile() == "full"


@pytest.mark.parametrize("bad", ["gpu", "fast", "Smokey"])
def test_unknown_profile_lists_the_valid_ones(monkeypatch, bad):
    with pytest.raises(config.ProfileError, match="smoke, cpu, full"):
        config.resolve_profile(bad)
    monkeypatch.setenv("DLBOOK_PROFILE", bad)
    with pytest.raises(config.ProfileError, match="DLBOOK_PROFILE"):
        config.resolve_profile()


def test_by_profile_needs_every_profile():
    assert config.by_profile({"smoke": 1, "cpu": 2, "full": 3}, "cpu") == 2
    with pytest.raises(config.ProfileError, match="full"):
        config.by_profile({"smoke": 1, "cpu": 2}, "cpu")


def test_device_and_override(monkeypatch):
    assert config.device().type in ("cpu", "cuda", "mps")
    monkeypatch.setenv("DLBOOK_DEVICE", "cpu")
    assert config.device() == torch.device("cpu")
    assert "CPU" in config.device_name(torch.device("cpu"))


def test_seed_everything_repeats_draws():
    config.seed_everything(7)
    a = (torch.randn(3), __import__("numpy").random.rand(), __import__("random").random())
    config.seed_everything(7)
    b = (torch.randn(3), __import__("numpy").random.rand(), __import__("random").random())
    assert torch.equal(a[0], b[0]) and a[1] == b[1] and a[2] == b[2]


def test_setup_reports_profile_and_device():
    run = config.setup("cpu", seed=3)
    assert run.profile == "cpu" and run.seed == 3 and "profile=cpu" in str(run)


def test_device_refuses_what_the_machine_lacks(monkeypatch):
    monkeypatch.setenv("DLBOOK_DEVICE", "tpu")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        config.device()
    if not torch.cuda.is_available():
        monkeypatch.setenv("DLBOOK_DEVICE", "cuda")
        with pytest.raises(ValueError, match="CUDA is not available"):
            config.device()


def test_thread_policy(monkeypatch):
    old = torch.get_num_threads()
    try:
        monkeypatch.setenv("DLBOOK_THREADS", "1")
        assert config.threads() == 1 and torch.get_num_threads() == 1
        assert config.threads(2) == 2
        assert config.worker_threads(4) == 1
        with pytest.raises(ValueError):
            config.threads(0)
    finally:
        torch.set_num_threads(old)


def test_settings_refuse_bad_values():
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Config(config.Settings):
        SIZES = ("steps", "widths")
        POSITIVE = ("lr",)
        NONNEG = ("lam",)
        UNIT = ("p",)
        steps: int = 10
        widths: tuple = (8, 16)
        lr: float = 1e-3
        lam: float = 0.0
        p: float = 0.5

    Config()
    for kw, msg in [({"steps": 0}, "steps must be a whole number > 0"), ({"widths": (8, 0)}, "widths"),
                    ({"steps": 2.5}, "whole number"), ({"lr": -1e-3}, "lr must be > 0"),
                    ({"lam": -1}, "lam must be >= 0"), ({"p": 1.5}, r"p must be in \[0, 1\]"),
                    ({"steps": "10"}, "must be a number")]:
        with pytest.raises(config.ConfigError, match=msg):
            Config(**kw)


@pytest.mark.parametrize("kw", [{"lr": float("inf")}, {"lr": float("nan")}, {"lam": float("inf")},
                                {"betas": (0.5, float("nan"))}])
def test_non_finite_settings_are_refused(kw):
    with pytest.raises(config.ConfigError, match=next(iter(kw))):
        config.require("probe", positive={k: v for k, v in kw.items() if k != "lam"},
                       nonneg={k: v for k, v in kw.items() if k == "lam"})
    from dlbook.gan_runs import LoopConfig

    with pytest.raises(config.ConfigError, match="lr"):
        LoopConfig(lr=float("inf"))


# ------------------------------------------------------------------ rehearsal of the full profile
from dataclasses import dataclass as _dc, field as _field

from dlbook.config import Settings as _Settings, by_profile as _by_profile, rehearse


@_dc(frozen=True)
class _Inner(_Settings):
    data: str = "mnist"
    img_size: int = 32
    steps: int = 100
    n_train: int | None = 1000
    seeds: tuple[int, ...] = (0,)
    SIZES = ("img_size", "steps", "n_train")


@_dc(frozen=True)
class _Outer(_Settings):
    inner: _Inner = _field(default_factory=_Inner)
    width: int = 64
    lr: float = 1e-3
    width_mult: float = 1.0
    val: int = 0
    flag: bool = False
    grid: tuple[tuple[int, int], ...] = ()
    compare: tuple[str, ...] = ()
    SIZES = ("width",)
    REHEARSE_SMALLER = ("width_mult",)


_SMOKE = _Outer(_Inner(steps=4, n_train=None), width=8, lr=1e-2, width_mult=0.125)
_FULL = _Outer(_Inner(data="celeba", img_size=64, steps=20000, n_train=None, seeds=(0, 1, 2)), width=512,
               lr=2e-4, val=4000, flag=True, grid=((1, 2), (2, 6)), compare=("wgan-gp", "sgan-sn"))


def test_rehearse_takes_smoke_sizes_and_keeps_full_choices():
    r = rehearse(_FULL, _SMOKE)
    assert (r.inner.steps, r.width, r.inner.seeds) == (4, 8, (0,))          # sizes: smoke's
    assert (r.inner.data, r.inner.img_size, r.lr, r.flag) == ("celeba", 64, 2e-4, True)  # choices: full's
    assert r.val == 4000            # a part smoke switches off (0) stays on
    assert r.width_mult == 0.125    # a size that is not a whole number, named in REHEARSE_SMALLER
    assert r.grid == ((1, 2),)      # a sweep only full runs still runs once
    assert r.compare == ("wgan-gp", "sgan-sn")
    assert r.inner.n_train is None
    # "all of it" in full stays: the full-size loader path runs on whatever data is at hand
    assert rehearse(_Outer(_Inner(n_train=None)), _Outer(_Inner(n_train=50))).inner.n_train is None


def test_by_profile_rehearses_full_only_under_the_variable(monkeypatch):
    table = {"smoke": _SMOKE, "cpu": _SMOKE, "full": _FULL}
    monkeypatch.delenv("DLBOOK_REHEARSAL", raising=False)
    assert _by_profile(table, "full") is _FULL
    monkeypatch.setenv("DLBOOK_REHEARSAL", "1")
    assert _by_profile(table, "full") == rehearse(_FULL, _SMOKE)
    assert _by_profile(table, "smoke") is _SMOKE
    monkeypatch.setenv("DLBOOK_REHEARSAL", "0")
    assert _by_profile(table, "full") is _FULL


def test_every_chapter_config_rehearses(monkeypatch):
    """Each chapter's full config, rehearsed, is valid and no larger than smoke in its sizes."""
    import importlib
    import pkgutil

    import dlbook

    monkeypatch.setenv("DLBOOK_REHEARSAL", "1")
    n = 0
    for m in pkgutil.iter_modules(dlbook.__path__):
        mod = importlib.import_module(f"dlbook.{m.name}")
        if isinstance(getattr(mod, "CONFIGS", None), dict) and callable(getattr(mod, "config", None)):
            cfg = mod.config("full")
            assert cfg == rehearse(mod.CONFIGS["full"], mod.CONFIGS["smoke"]), m.name
            n += 1
    assert n >= 5


def test_seeded_shifts_every_seed_tuple_recursively():
    from dataclasses import dataclass, field

    from dlbook.config import Settings, seeded

    @dataclass(frozen=True)
    class Inner(Settings):
        seeds: tuple = (0, 1)
        steps: int = 5
        SIZES = ("steps",)

    @dataclass(frozen=True)
    class Outer(Settings):
        inner: Inner = field(default_factory=Inner)
        seeds: tuple = (0, 1, 2)
        gp_seeds: tuple = ()
        lr_grid: tuple = (0, 1)  # not a seed field: unchanged

    out = seeded(Outer(), 7)
    assert out.seeds == (7, 8, 9) and out.inner.seeds == (7, 8) and out.gp_seeds == ()
    assert out.lr_grid == (0, 1) and out.inner.steps == 5
    assert seeded(Outer(), 0) == Outer()  # seed 0 reproduces the recorded runs
    with pytest.raises(ValueError, match="seed must be a whole number"):
        seeded(Outer(), -1)
    with pytest.raises(ValueError, match="whole numbers"):
        seeded(Outer(seeds=(0.5,)), 1)
