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
    return settings[resolve_profile(profile)]


def device(prefer: str | None = None) -> torch.device:
    """cuda > mps > cpu, unless `prefer` (or $DLBOOK_DEVICE) names one."""
    want = prefer or os.environ.get("DLBOOK_DEVICE")
    if want:
        return torch.device(want)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


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
        return f"profile={self.profile}  device={self.device}  seed={self.seed}"


def setup(profile: str | None = None, seed: int = 0) -> RunInfo:
    """What a notebook's setup cell calls: resolve the profile, seed, report."""
    prof = resolve_profile(profile)
    seed_everything(seed)
    return RunInfo(prof, device_name(), seed)


def as_dict(obj: Any) -> dict:
    from dataclasses import asdict, is_dataclass

    return asdict(obj) if is_dataclass(obj) else dict(obj)
