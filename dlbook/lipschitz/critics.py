"""Critics fitted on fixed 2-D samples (chapter 02, L8, L10, the 25-Gaussians probe) and the
cost of a critic step (L11)."""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from .. import gan
from ..config import Settings, require
from ..train import run_jobs
from .norms import ExactSN, ProjectedWGAN, exact_spectral_normalise, grad_norms, project_spectral_

CRITICS = ("exact-sn", "sn-1step", "none", "gp", "gp-one-sided", "clip")


def toy_critic(kind: str, width: int = 128, depth: int = 2, seed: int = 0,
               lam: float = 10.0) -> tuple[nn.Module, gan.GANLoss]:
    """A 2 -> width x depth -> 1 LeakyReLU(0.2) critic and its loss for one of `CRITICS`:
    exact SN (`ExactSN`), the toolkit's SN (PyTorch's, one power iteration per training
    forward), unconstrained, WGAN-GP (``lam``, two- or one-sided) or clipping (c = 0.01)."""
    if kind not in CRITICS:
        raise ValueError(f"toy_critic: kind must be one of {CRITICS}, got {kind!r}")
    torch.manual_seed(seed)
    T = gan.mlp(2, 1, width, depth, "lrelu", norm="sn" if kind == "sn-1step" else "none")
    if kind == "exact-sn":
        exact_spectral_normalise(T)
    loss = {"gp": lambda: gan.WGANGP(lam), "gp-one-sided": lambda: gan.WGANGP(lam, one_sided=True),
            "clip": lambda: gan.WGANClip(0.01)}.get(kind, gan.WGAN)()
    return T, loss


def _has_exact_sn(net: nn.Module) -> bool:
    return any(isinstance(p, ExactSN) for m in net.modules() if parametrize.is_parametrized(m)
               for plist in m.parametrizations.values() for p in plist)


def dual_value(T: nn.Module, xr: torch.Tensor, xf: torch.Tensor) -> float:
    """mean T(real) - mean T(fake) with the critic in eval mode (no power-iteration update)."""
    was = T.training
    T.eval()
    with torch.no_grad():
        d = float(T(xr).mean() - T(xf).mean())
    T.train(was)
    return d


def fit_critic(T: nn.Module, loss: gan.GANLoss, xr: torch.Tensor, xf: torch.Tensor, steps: int, lr: float = 2e-4,
               betas: tuple[float, float] = (0.5, 0.999), seed: int = 0, every: int = 1,
               probe: Callable[[nn.Module], dict] | None = None) -> dict[str, np.ndarray]:
    """Adam on ``loss.critic_loss`` with the full fixed samples as the batch, ``steps`` times
    (then ``loss.after_critic_step``); the dual value on the same samples (and ``probe(T)``)
    every ``every`` steps, step 0 included."""
    require("fit_critic", positive={"steps": steps, "every": every}, whole=True)
    opt = torch.optim.Adam(T.parameters(), lr, betas=betas)
    torch.manual_seed(seed)  # penalty points
    T.train()
    out: dict[str, list] = {"step": [], "dual": []}
    # ExactSN: one SVD per layer and step, shared by the passes on the real and the fake points
    cached = parametrize.cached if _has_exact_sn(T) else contextlib.nullcontext

    def log(s):
        out["step"].append(s)
        with cached():
            out["dual"].append(dual_value(T, xr, xf))
        for k, v in (probe(T) if probe else {}).items():
            out.setdefault(k, []).append(v)

    log(0)
    for s in range(1, steps + 1):
        with cached():
            lt, _ = loss.critic_loss(T, xr, xf)
        opt.zero_grad(set_to_none=True)
        lt.backward()
        opt.step()
        loss.after_critic_step(T)
        if s % every == 0 or s == steps:
            log(s)
    return {k: np.array(v) for k, v in out.items()}


@dataclass(frozen=True)
class ToyCriticConfig(Settings):
    """L8 and L10: ``n`` real points of 8 Gaussians (radius 2, std ``std``) and ``n`` fake
    points of N(0, fake_std^2 I), fixed; critics of ``width`` x ``depth`` fitted by Adam
    (``lr``, betas (0.5, 0.999)) for ``steps`` steps (L10: ``l10_steps``), from the first of
    ``seeds``. The GP critic also at every penalty weight of ``gp_lams`` (the overshoot of
    the soft penalty). The 25-Gaussians probe: ``probe_steps`` steps per seed of
    ``probe_seeds``, its gradient norms on a ``probe_n`` x ``probe_n`` grid."""

    n: int = 512
    std: float = 0.02
    fake_std: float = 0.5
    width: int = 128
    depth: int = 2
    steps: int = 2000
    l10_steps: int = 200
    lr: float = 2e-4
    every: int = 1
    field_n: int = 101
    seeds: tuple[int, ...] = (0,)
    gp_lams: tuple[float, ...] = (5.0, 10.0, 40.0)
    probe_steps: int = 2000
    probe_seeds: tuple[int, ...] = (0, 1, 2)
    probe_n: int = 121

    SIZES = ("n", "width", "depth", "steps", "l10_steps", "every", "field_n", "probe_steps", "probe_n")
    POSITIVE = ("std", "fake_std", "lr", "gp_lams")
    NONNEG = ("seeds", "probe_seeds")

    @property
    def seed(self) -> int:
        """The seed of the single-run experiments (L8, L10)."""
        return self.seeds[0]


def toy_samples(cfg: ToyCriticConfig) -> tuple[torch.Tensor, torch.Tensor]:
    data = gan.toy_dataset("8gaussians", cfg.std)
    xr = data.sample(cfg.n, torch.Generator().manual_seed(cfg.seed))
    xf = cfg.fake_std * torch.randn(cfg.n, 2, generator=torch.Generator().manual_seed(cfg.seed + 1))
    return xr, xf


def _critic_entry(item) -> dict:
    kind, cfg, lam = item
    from ..gan_plots import critic_field

    torch.set_num_threads(1)
    xr, xf = toy_samples(cfg)
    T, loss = toy_critic(kind, cfg.width, cfg.depth, cfg.seed, lam)
    hist = fit_critic(T, loss, xr, xf, cfg.steps, cfg.lr, seed=cfg.seed, every=cfg.every)
    hist["field"] = critic_field(T, 3.0, cfg.field_n)
    hist["kind"], hist["lam"] = kind, lam
    return hist


def critic_experiment(cfg: ToyCriticConfig, kinds: Sequence[str] = CRITICS, workers: int = 1) -> dict:
    """Fit every critic kind on the same fixed samples (L8; GP with lambda 10), and the
    two-sided GP critic at every other lambda of ``cfg.gp_lams``; heat maps of the final
    critics. Keyed by kind, the extra GP critics by ("gp", lambda)."""
    items = [(k, cfg, 10.0) for k in kinds] + [("gp", cfg, float(l)) for l in cfg.gp_lams if l != 10.0]
    out = run_jobs(_critic_entry, items, workers, "critics")
    return {h["kind"] if h["lam"] == 10.0 or h["kind"] != "gp" else ("gp", h["lam"]): h for h in out}


def gp_optimum(w1: float, lam: float) -> float:
    """The soft penalty's own optimum: scaling a critic of slope 1 on the interpolates by s
    gains s W1 and costs lam (s - 1)^2, so the best dual value is s* W1 with
    s* = 1 + W1 / (2 lam) (eq-02-gp-opt)."""
    require("gp_optimum", positive={"w1": w1, "lam": lam})
    return 1.0 + w1 / (2.0 * lam)  # (eq-02-gp-opt)


def _probe_entry(item) -> dict:
    cfg, seed = item
    from scipy.spatial import Delaunay

    torch.set_num_threads(1)
    data = gan.toy_dataset("25gaussians", cfg.std)
    xr = data.sample(cfg.n, torch.Generator().manual_seed(seed))
    xf = 2 * cfg.fake_std * torch.randn(cfg.n, 2, generator=torch.Generator().manual_seed(seed + 1))
    T, loss = toy_critic("gp", cfg.width, cfg.depth, seed)
    fit_critic(T, loss, xr, xf, cfg.probe_steps, cfg.lr, seed=seed, every=cfg.probe_steps)
    u = torch.linspace(-data.lim, data.lim, cfg.probe_n)
    grid = torch.stack(torch.meshgrid(u, u, indexing="xy"), -1).reshape(-1, 2)
    off = Delaunay(torch.cat([xr, xf]).numpy()).find_simplex(grid.numpy()) < 0  # no interpolate lands there
    g = torch.Generator().manual_seed(seed + 2)
    eps = torch.rand(cfg.n, 1, generator=g)
    inter = eps * xr + (1 - eps) * xf[torch.randperm(cfg.n, generator=g)]
    T.eval()
    gg, gi = grad_norms(T, grid).numpy(), grad_norms(T, inter).numpy()
    return {"seed": seed, "grid": grid.numpy(), "off": off, "grad_grid": gg, "grad_inter": gi,
            "max_off": float(gg[off].max()), "max_on": float(gg[~off].max()), "max_inter": float(gi.max()),
            "share_off_above": float((gg[off] > 1.05).mean()), "xr": xr.numpy(), "xf": xf.numpy()}


def gp_probe(cfg: ToyCriticConfig, workers: int = 1) -> list[dict]:
    """The post's argument against GP on many modes: per seed of ``cfg.probe_seeds``, a GP
    critic (lambda 10) fitted on ``cfg.n`` points of 25 Gaussians against N(0, (2 fake_std)^2
    I) for ``cfg.probe_steps`` steps; its gradient norm on random interpolates (where the
    penalty acts) and on a grid, split into the points inside the convex hull of the samples
    and those outside it, where no interpolate ever lands."""
    return run_jobs(_probe_entry, [(cfg, s) for s in cfg.probe_seeds], workers, "25-Gaussians probe")


def _flat_grads(net: nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None])


def gradient_cosines(width: int = 32, depth: int = 2, seed: int = 0, n: int = 256) -> list[float]:
    """L10, the gradient part: at the same normalised weights, the cosine between the gradient
    of the reparametrised critic (through W / sigma(W), eq-02-sn-grad) and the gradient of the
    plain critic that the post-update projection uses, per layer (float64)."""
    torch.manual_seed(seed)
    plain = gan.mlp(2, 1, width, depth, "lrelu").double()
    project_spectral_(plain, "always")
    rep = gan.mlp(2, 1, width, depth, "lrelu").double()
    rep.load_state_dict(plain.state_dict())
    exact_spectral_normalise(rep)
    g = torch.Generator().manual_seed(seed + 1)
    xr = 2 * torch.randn(n, 2, generator=g, dtype=torch.float64)
    xf = 0.5 * torch.randn(n, 2, generator=g, dtype=torch.float64)
    out = []
    for net in (plain, rep):
        net.zero_grad()
        gan.WGAN().critic_loss(net, xr, xf)[0].backward()
    reps = [m.parametrizations.weight.original.grad for m in rep.modules() if isinstance(m, nn.Linear)]
    for m, gr_ in zip([m for m in plain.modules() if isinstance(m, nn.Linear)], reps):
        gp = m.weight.grad
        out.append(float((gp * gr_).sum() / (gp.norm() * gr_.norm())))
    return out


L10_VARIANTS = ("reparam", "project", "project-above", "project-post")


def _l10_entry(item) -> dict:
    variant, cfg, lip_points = item
    torch.set_num_threads(1)
    xr, xf = toy_samples(cfg)
    torch.manual_seed(cfg.seed)
    T = gan.mlp(2, 1, cfg.width, cfg.depth, "lrelu")
    project_spectral_(T, "always")  # the same normalised start for every variant
    if variant == "reparam":
        exact_spectral_normalise(T)
        loss: gan.GANLoss = gan.WGAN()
    else:
        loss = {"project": ProjectedWGAN("always"), "project-above": ProjectedWGAN("above"),
                "project-post": ProjectedWGAN("always", 5)}[variant]

    def probe(net):
        w = [m.weight.detach() for m in net.modules() if isinstance(m, nn.Linear)]
        return {"prod_sigma": math.prod(float(torch.linalg.matrix_norm(x.double(), 2)) for x in w),
                "max_grad": float(grad_norms(net, lip_points).max()),
                "weights": torch.cat([x.flatten() for x in w]).numpy().copy()}

    hist = fit_critic(T, loss, xr, xf, cfg.l10_steps, cfg.lr, seed=cfg.seed, every=1, probe=probe)
    hist["variant"] = variant
    return hist


def reparam_vs_projection(cfg: ToyCriticConfig, workers: int = 1) -> dict[str, dict]:
    """L10: the same normalised start and the same (full) batch, ``cfg.l10_steps`` Adam steps of
    (i) W / sigma(W) inside the forward pass (exact SVD) and the plain forward with, after every
    step, (ii) W <- W / sigma(W), (iii) W <- W / max(1, sigma(W)) (exact SVD) or (iv) the post's
    W <- W / sigma_hat(W), sigma_hat from 5 rounds from all ones. Per step: the dual value, the
    product of the spectral norms of the weights the forward pass uses, the largest input
    gradient norm on a grid of [-3, 3]^2 and on the samples, and the weights."""
    u = torch.linspace(-3, 3, 41)
    pts = torch.stack(torch.meshgrid(u, u, indexing="xy"), -1).reshape(-1, 2)
    xr, xf = toy_samples(cfg)
    pts = torch.cat([pts, xr, xf])
    out = run_jobs(_l10_entry, [(v, cfg, pts) for v in L10_VARIANTS], workers, "L10")
    return {h["variant"]: h for h in out}


# ======================================================================== 5. the cost of a critic step (L11)


def step_times(critics: dict[str, tuple[nn.Module, gan.GANLoss]], xr: torch.Tensor, xf: torch.Tensor,
               steps: int = 50, warmup: int = 5, lr: float = 2e-4) -> dict[str, np.ndarray]:
    """Seconds of each of ``steps`` critic updates (loss, backward, Adam step, after-step hook)
    after ``warmup`` for each critic, measured in one run: the critics take turns step by step
    (the order flips every step), so that a change of machine load hits all of them and step
    i of one critic pairs with step i of another."""
    require("step_times", positive={"steps": steps}, nonneg={"warmup": warmup}, whole=True)
    opts = {k: torch.optim.Adam(T.parameters(), lr, betas=(0.5, 0.999)) for k, (T, _) in critics.items()}
    times: dict[str, list[float]] = {k: [] for k in critics}
    names = list(critics)
    for i in range(warmup + steps):
        for k in (names if i % 2 == 0 else names[::-1]):
            T, loss = critics[k]
            T.train()
            t0 = time.perf_counter()
            lt, _ = loss.critic_loss(T, xr, xf)
            opts[k].zero_grad(set_to_none=True)
            lt.backward()
            opts[k].step()
            loss.after_critic_step(T)
            if i >= warmup:
                times[k].append(time.perf_counter() - t0)
    return {k: np.array(v) for k, v in times.items()}

