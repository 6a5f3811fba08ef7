"""Profiles, devices and seeds: the three things every chapter asks first."""
from __future__ import annotations

import os
import random
import sys
from dataclasses import dataclass
from typing import Any, Mapping, TypeVar

import numpy as np
import torch

PROFILES = ("smoke", "cpu", "full")
ENV_PROFILE = "DLBOOK_PROFILE"

T = TypeVar("T")


class ProfileError(ValueError):
    """An unknown profile name."""


def _check(name: str) -> str:
    key = str(name).strip().lower()
    if key not in PROFILES:
        raise ProfileError(
            f"unknown profile {name!r}: choose one of {', '.join(PROFILES)} "
            f"(set {ENV_PROFILE} or pass profile=...)"
        )
    return key


def _under_pytest() -> bool:
    return "PYTEST_CURRENT_TEST" in os.environ or "pytest" in sys.modules


def resolve_profile(profile: str | None = None) -> str:
    """The profile to run: explicit argument > $DLBOOK_PROFILE > smoke under pytest
    > full when CUDA is available > cpu."""
    if profile not in (None, ""):
        return _check(profile)
    env = os.environ.get(ENV_PROFILE, "").strip()
    if env:
        return _check(env)
    if _under_pytest():
        return "smoke"
    return "full" if torch.cuda.is_available() else "cpu"


def by_profile(settings: Mapping[str, T], profile: str | None = None) -> T:
    """Pick a chapter's per-profile settings; every profile must be present."""
    missing = [p for p in PROFILES if p not in settings]
    if missing:
        raise ProfileError(f"settings lack profile(s) {missing}; need all of {PROFILES}")
    key = resolve_profile(profile)
    if key == "full" and rehearsal():  # full's code paths at smoke's sizes (see `rehearse`)
        return rehearse(settings["full"], settings["smoke"])
    return settings[key]


DEVICES = ("cpu", "cuda", "mps")
ENV_DEVICE = "DLBOOK_DEVICE"
ENV_THREADS = "DLBOOK_THREADS"


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def device(prefer: str | None = None) -> torch.device:
    """The one place a device is chosen: `prefer`, else $DLBOOK_DEVICE, else cuda > mps > cpu.
    Asking for a device this machine lacks is an error that says what is available."""
    want = (prefer or os.environ.get(ENV_DEVICE, "")).strip()
    if want:
        try:
            dev = torch.device(want)
        except RuntimeError:
            raise ValueError(f"unknown device {want!r}: use one of {', '.join(DEVICES)} "
                             f"(argument or ${ENV_DEVICE})") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {want!r} asked for (argument or ${ENV_DEVICE}) but CUDA is not "
                             "available here; unset it or use cpu")
        if dev.type == "mps" and not _mps_available():
            raise ValueError(f"device {want!r} asked for but MPS is not available here; use cpu")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def threads(n: int | None = None) -> int:
    """The one thread-count policy for torch on the CPU: `n`, else $DLBOOK_THREADS, else every
    core of the machine. Returns the count set. Small per-process jobs that run side by side
    (see `worker_threads`) take their share instead."""
    if n is None:
        env = os.environ.get(ENV_THREADS, "").strip()
        n = int(env) if env else (os.cpu_count() or 1)
    if int(n) != n or n < 1:
        raise ValueError(f"threads must be a whole number >= 1, got {n!r}")
    torch.set_num_threads(int(n))
    return int(n)


def worker_threads(workers: int) -> int:
    """Threads for each of `workers` processes running side by side: the cores divided among
    them (at least one), so that the machine is not oversubscribed."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    total = int(os.environ.get(ENV_THREADS, "").strip() or (os.cpu_count() or 1))
    return max(1, total // workers)


def device_name(dev: torch.device | None = None) -> str:
    dev = dev or device()
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    if dev.type == "cpu":
        import platform

        # The machine's cores, not torch's thread setting: a notebook may lower the latter.
        return f"CPU ({platform.machine()}, {os.cpu_count()} cores)"
    return dev.type


def seed_everything(seed: int = 0, deterministic: bool = True) -> torch.Generator:
    """Seed Python, NumPy and torch; with `deterministic`, ask torch for
    deterministic kernels (needed for bit-identical reruns on GPU)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    return torch.Generator().manual_seed(seed)


@dataclass(frozen=True)
class RunInfo:
    profile: str
    device: str
    seed: int

    def __str__(self) -> str:
        tag = " (rehearsal: full's code paths at smoke's sizes; its numbers mean nothing)" \
            if self.profile == "full" and rehearsal() else ""
        return f"profile={self.profile}{tag}  device={self.device}  seed={self.seed}"


def setup(profile: str | None = None, seed: int = 0) -> RunInfo:
    """What a notebook's setup cell calls: resolve the profile, seed, report."""
    prof = resolve_profile(profile)
    seed_everything(seed)
    return RunInfo(prof, device_name(), seed)


def as_dict(obj: Any) -> dict:
    from dataclasses import asdict, is_dataclass

    return asdict(obj) if is_dataclass(obj) else dict(obj)


class ConfigError(ValueError):
    """A setting that cannot work (a zero batch, a negative weight): refused where it enters."""


def _values(v: Any) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v,)


def require(where: str, positive: Mapping[str, Any] = {}, nonneg: Mapping[str, Any] = {},
            unit: Mapping[str, Any] = {}, whole: bool = False) -> None:
    """Refuse bad sizes and hyperparameters where they enter a function or a config.

    `positive`: each value (or each element of a tuple) must be > 0; with `whole`, also a whole
    number. `nonneg`: >= 0. `unit`: in [0, 1]. Every value must be finite. None means "not set"
    and is accepted."""
    for kind, items in (("> 0", positive), (">= 0", nonneg), ("in [0, 1]", unit)):
        for name, value in items.items():
            for v in _values(value):
                if v is None:
                    continue
                if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                    raise ConfigError(f"{where}: {name} must be a number {kind}, got {value!r}")
                ok = {"> 0": v > 0, ">= 0": v >= 0, "in [0, 1]": 0 <= v <= 1}[kind]
                if whole and kind == "> 0" and int(v) != v:
                    ok = False
                if not ok or v != v or v in (float("inf"), float("-inf")):  # NaN and inf are no setting
                    raise ConfigError(f"{where}: {name} must be {'a whole number ' if whole and kind == '> 0' else ''}"
                                      f"{kind}, got {value!r}")


class Settings:
    """Base of every chapter's `Config` dataclass: the fields named in `SIZES` (whole numbers:
    steps, epochs, batch sizes, widths, depths, image sizes), `POSITIVE` (rates, scales),
    `NONNEG` (weights, clip values) and `UNIT` (probabilities) are checked when the config is
    built, so a bad value fails with one clear message before anything runs."""

    SIZES: tuple[str, ...] = ()
    POSITIVE: tuple[str, ...] = ()
    NONNEG: tuple[str, ...] = ()
    UNIT: tuple[str, ...] = ()
    # kept at the full profile's value in a rehearsal (see `rehearse`): they choose the architecture
    REHEARSE_KEEP: tuple[str, ...] = ("img_size", "kernel")
    # sizes that are not whole numbers (a width multiplier): the smaller of the two in a rehearsal
    REHEARSE_SMALLER: tuple[str, ...] = ("width",)

    def __post_init__(self) -> None:
        where = type(self).__qualname__
        get = lambda names: {n: getattr(self, n) for n in names}
        require(where, positive=get(self.SIZES), whole=True)
        require(where, positive=get(self.POSITIVE), nonneg=get(self.NONNEG), unit=get(self.UNIT))


# ------------------------------------------------------------------ rehearsal of the full profile
ENV_REHEARSAL = "DLBOOK_REHEARSAL"


def rehearsal() -> bool:
    """True when $DLBOOK_REHEARSAL is set (not 0): the full profile is rehearsed on a CPU."""
    return os.environ.get(ENV_REHEARSAL, "").strip() not in ("", "0")


def _numbers(v: Any) -> bool:
    if isinstance(v, (tuple, list)):
        return all(_numbers(x) for x in v)
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def rehearse(full: T, smoke: T) -> T:
    """`full` with every size taken from `smoke`, everything that chooses a code path kept.

    Rules, field by field (recursively through nested dataclasses and dicts): a whole number
    (steps, epochs, widths, sample counts) becomes the smaller of the two (but a part that smoke
    switches off with 0 keeps full's value), and a size that full
    leaves open (None: "all of it") stays open, so the full-size loader path runs on the data
    at hand (the offline copies in CI); a tuple of numbers (seeds, rates, grids)
    becomes smoke's, or full's first element where smoke has none, so that a sweep only full runs
    still runs once; everything else (dataset, architecture and metric names, flags, comparisons,
    learning rates) stays full's. The result is built with `dataclasses.replace`, so the
    chapter's own validation still applies. Fields a class lists in `REHEARSE_KEEP` stay full's;
    those in `REHEARSE_SMALLER` (sizes that are not whole numbers, e.g. a width multiplier) take
    the smaller value.
    """
    from dataclasses import fields, is_dataclass, replace

    if is_dataclass(full) and type(full) is type(smoke):
        keep = set(getattr(full, "REHEARSE_KEEP", ()))
        smaller = set(getattr(full, "REHEARSE_SMALLER", ()))
        changes = {}
        for f in fields(full):
            if not f.init or f.name in keep:
                continue
            a, b = getattr(full, f.name), getattr(smoke, f.name)
            if f.name in smaller and _numbers(a) and _numbers(b) and not isinstance(a, (tuple, list)):
                changes[f.name] = min(a, b)
            else:
                changes[f.name] = rehearse(a, b)
        return replace(full, **changes)
    if isinstance(full, Mapping) and isinstance(smoke, Mapping):
        return type(full)({k: rehearse(v, smoke[k]) if k in smoke else v for k, v in full.items()})
    if isinstance(full, bool) or isinstance(smoke, bool):
        return full
    if full is None:  # "all of it" (every image, every core): full's own path, on the data at hand
        return full
    if isinstance(full, (int, np.integer)) and isinstance(smoke, (int, np.integer)):
        # 0 switches a part off (no held-out split, no checkpoints): what full switches on stays on
        return full if smoke == 0 else min(full, smoke)
    if isinstance(full, (tuple, list)) and _numbers(full) and isinstance(smoke, (tuple, list)) and _numbers(smoke):
        return smoke if len(smoke) else full[:1]
    return full


# ------------------------------------------------------------------ seeds from the notebook's `seed`
def is_seed_field(name: str) -> bool:
    """A field that lists experiment seeds: ``seeds`` or ``<something>_seeds``."""
    return name == "seeds" or name.endswith("_seeds")


def seeded(cfg: T, seed: int) -> T:
    """`cfg` with every seed tuple read as offsets from the notebook's `seed`: a config that
    lists ``seeds=(0, 1, 2)`` runs seeds ``seed, seed + 1, seed + 2``, so a reader who changes
    `seed` gets new runs and ``seed = 0`` reproduces the recorded ones. Applies to every field
    named ``seeds`` or ``*_seeds`` (tuples of whole numbers), recursively through nested
    dataclasses; the result is built with `dataclasses.replace`, so validation still applies."""
    from dataclasses import fields, is_dataclass, replace

    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seeded: seed must be a whole number >= 0, got {seed!r}")
    if not is_dataclass(cfg):
        return cfg
    changes = {}
    for f in fields(cfg):
        if not f.init:
            continue
        v = getattr(cfg, f.name)
        if is_seed_field(f.name) and isinstance(v, (tuple, list)):
            if not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in v):
                raise ValueError(f"seeded: {type(cfg).__qualname__}.{f.name} must hold whole numbers, got {v!r}")
            changes[f.name] = type(v)(int(seed) + int(s) for s in v)
        elif is_dataclass(v):
            changes[f.name] = seeded(v, seed)
    return replace(cfg, **changes) if changes else cfg
