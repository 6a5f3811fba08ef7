"""Chapter 05 — WGAN-div: the Wasserstein divergence without a Lipschitz constraint.

1-D closed form and its numerical check (float64), per-profile experiment settings, and the
experiment entry points (2-D toys, images). Losses and training loop live in `dlbook.gan`.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from . import gan
from .config import by_profile

# ---------------------------------------------------------------- 1-D W-divergence (float64)


@dataclass(frozen=True)
class Grid1D:
    """Nodes x_0..x_{n-1} on [lo, hi]; cell masses of p~ and q around each node; G and r on
    the n-1 intervals (x_j, x_{j+1})."""

    x: np.ndarray
    h: float
    mp: np.ndarray  # masses of p~ per node cell
    mq: np.ndarray  # masses of q per node cell
    G: np.ndarray  # F_q - F_p at interval midpoints
    r: np.ndarray  # density of r at interval midpoints
    xm: np.ndarray  # interval midpoints


def normal_cdf(x, mu, sd):
    from scipy.special import ndtr
    return ndtr((np.asarray(x, np.float64) - mu) / sd)


def normal_pdf(x, mu, sd):
    z = (np.asarray(x, np.float64) - mu) / sd
    return np.exp(-0.5 * z * z) / (sd * math.sqrt(2 * math.pi))


def make_grid1d(p=(2.0, 0.5), q=(-1.0, 0.7), n: int = 801, lo: float = -5.0, hi: float = 5.0,
                r=None) -> Grid1D:
    """Two Gaussians p~ = N(p), q = N(q) on a grid. ``r``: None (uniform on [lo, hi]) or a
    function of the midpoints returning an (unnormalised) density."""
    x = np.linspace(lo, hi, n)
    h = (hi - lo) / (n - 1)
    edges = np.concatenate([[-np.inf], (x[:-1] + x[1:]) / 2, [np.inf]])
    mp, mq = np.diff(normal_cdf(edges, *p)), np.diff(normal_cdf(edges, *q))
    xm = (x[:-1] + x[1:]) / 2
    G = normal_cdf(xm, *q) - normal_cdf(xm, *p)
    rr = np.ones_like(xm) if r is None else np.asarray(r(xm), np.float64)
    rr = rr / (rr.sum() * h)
    return Grid1D(x, h, mp, mq, G, rr, xm)


def closed_form(G, r, h: float, k: float, p: float) -> tuple[float, np.ndarray]:
    """(eq-05-slope) and (eq-05-w1d): optimal slope T*' = sign G (|G|/(k p r))^(1/(p-1)) and
    W_{k,p} = (1 - 1/p) (k p)^(-1/(p-1)) \\int |G|^(p/(p-1)) / r^(1/(p-1)) dx (midpoint rule)."""
    G, r = np.asarray(G, np.float64), np.asarray(r, np.float64)
    slope = np.sign(G) * (np.abs(G) / (k * p * r)) ** (1 / (p - 1))  # (eq-05-slope)
    W = (1 - 1 / p) * (k * p) ** (-1 / (p - 1)) * h * np.sum(np.abs(G) ** (p / (p - 1)) / r ** (1 / (p - 1)))  # (eq-05-w1d)
    return float(W), slope


def objective_1d(T, g: Grid1D, k: float, p: float) -> tuple[float, np.ndarray]:
    """Discretised (eq-05-wdiv) and its gradient in the node values T:
    J = sum_i (m~_i - m_i) T_i - k h sum_j r_j |(T_{j+1} - T_j)/h|^p."""
    D = np.diff(T) / g.h
    J = np.dot(g.mp - g.mq, T) - k * g.h * np.sum(g.r * np.abs(D) ** p)
    dD = -k * g.h * g.r * p * np.abs(D) ** (p - 1) * np.sign(D) / g.h  # dJ/dT_{j+1}; minus for T_j
    grad = g.mp - g.mq
    grad = grad.copy()
    grad[1:] += dD
    grad[:-1] -= dD
    return float(J), grad


def solve_1d(g: Grid1D, k: float, p: float, iters: int = 200, tol: float = 1e-13) -> tuple[float, np.ndarray]:
    """Maximise the discretised objective over the grid values of T (T_0 = 0 fixes the free
    constant) by damped Newton steps: the Hessian is tridiagonal, so each step is O(n).
    Starts from the p = 2 maximiser (one Newton step). Returns (max value, slope)."""
    from scipy.linalg import solveh_banded

    n = len(g.x)

    def newton(T, pp):
        for _ in range(iters):
            J, grad = objective_1d(T, g, k, pp)
            D = np.diff(T) / g.h
            c = k * g.r * pp * (pp - 1) * np.abs(D) ** (pp - 2) / g.h  # -d2J/dD2 * h / h^2
            c = np.maximum(c, max(1e-10 * c.max(), 1e-30))  # Levenberg floor where the slope vanishes (p > 2)
            # -Hessian in T_1..T_{n-1}: A^T diag(c) A with A the difference operator
            diag = c.copy()
            diag[:-1] += c[1:]
            ab = np.zeros((2, n - 1))
            ab[1] = diag
            ab[0, 1:] = -c[1:]
            step = np.zeros(n)
            step[1:] = solveh_banded(ab, grad[1:])
            t = 1.0
            while t > 1e-12:
                Jn, _ = objective_1d(T + t * step, g, k, pp)
                if Jn >= J:
                    break
                t *= 0.5
            T = T + t * step
            if Jn - J <= tol * max(1.0, abs(J)) and t == 1.0:
                break
        return T

    T = newton(np.zeros(n), 2.0)
    if p != 2:
        T = newton(T, p)
    J, _ = objective_1d(T, g, k, p)
    return J, np.diff(T) / g.h


def w1_1d(g: Grid1D) -> float:
    """W_1 = \\int |F_q - F_p| dx (midpoint rule)."""
    return float(g.h * np.abs(g.G).sum())


def gap_r(eps: float, a: float = 0.0, b: float = 1.0):
    """An r with density eps on (a, b) and 1 elsewhere (normalised later)."""
    return lambda xm: np.where((xm > a) & (xm < b), eps, 1.0)


def envelope_check(beta: float = -1.0, k: float = 2.0, p: float = 6.0, d: float = 1e-4, n: int = 801,
                   sd_q: float = 0.7) -> tuple[float, float]:
    """(finite-difference dW/dbeta, -E_{q_beta}[T*'] with T* frozen) for q_beta = N(beta, sd_q^2)."""
    def W(b):
        g = make_grid1d(q=(b, sd_q), n=n)
        return closed_form(g.G, g.r, g.h, k, p)
    fd = (W(beta + d)[0] - W(beta - d)[0]) / (2 * d)
    g = make_grid1d(q=(beta, sd_q), n=n)
    _, slope = W(beta)
    env = -float(g.h * np.sum(normal_pdf(g.xm, beta, sd_q) * slope))  # (eq-05-envelope)
    return fd, env


def gp_pointwise_max(g: float, k: float, r: float) -> float:
    """max_s g s - k r (|s| - 1)^2 = |g| + g^2 / (4 k r)  (the 1-D pointwise GP objective)."""
    return abs(g) + g * g / (4 * k * r)


# ---------------------------------------------------------------- settings per profile


@dataclass(frozen=True)
class ToyConfig:
    data: str = "8gaussians"
    steps: int = 4000  # generator steps for 1:1 methods
    gp_steps: int = 800  # generator steps for WGAN-GP at 5:1 (4,000 critic updates, as WGAN-div)
    gp_n_critic: int = 5
    batch: int = 256
    width: int = 128
    depth: int = 3
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    k: float = 2.0
    p: float = 6.0
    lam: float = 10.0
    seeds: tuple[int, ...] = (0, 1)
    sweep_seeds: tuple[int, ...] = (0,)
    gp_seeds: tuple[int, ...] = (0,)
    eval_every: int = 500
    n_eval: int = 4000
    n_show: int = 1500
    field_n: int = 101
    workers: int = 2
    extras: tuple[str, ...] = ()  # extra toy datasets for WGAN-div (e.g. 25gaussians, swissroll)


@dataclass(frozen=True)
class ImageConfig:
    data: str = "mnist"
    img_size: int = 32
    channels: int = 1
    n_train: int = 14000
    z_dim: int = 64
    base: int = 8
    max_ch: int = 32
    kernel: int = 4
    norm: str = "bn"
    batch: int = 64
    steps: int = 500
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    k: float = 2.0
    p: float = 6.0
    lam: float = 10.0
    eval_every: int = 100
    n_fid: int = 1000
    fid_steps: int = 300
    fid_width: int = 8
    grid_kp: tuple[tuple[float, float], ...] = ()  # (k, p) settings for W9 (full)
    compare_gp: bool = False  # W10 (full)


@dataclass(frozen=True)
class Config:
    toy: ToyConfig
    image: ImageConfig


CONFIGS = {
    "smoke": Config(
        ToyConfig(steps=40, gp_steps=10, batch=32, width=16, eval_every=20, n_eval=300, n_show=200,
                  field_n=31, seeds=(0,), workers=1),
        ImageConfig(n_train=512, steps=6, batch=16, eval_every=3, n_fid=64, fid_steps=5, base=4, max_ch=8)),
    "cpu": Config(
        ToyConfig(workers=2),
        ImageConfig()),
    "full": Config(
        ToyConfig(gp_steps=4000, sweep_seeds=(0, 1, 2), seeds=(0, 1, 2), gp_seeds=(0, 1, 2), workers=1,
                  extras=("25gaussians", "swissroll")),
        ImageConfig(data="celeba", img_size=64, channels=3, n_train=202599, z_dim=128, base=64, max_ch=1024,
                    kernel=5, batch=64, steps=20000, eval_every=1000, n_fid=10000, fid_steps=3000, fid_width=32,
                    grid_kp=((1, 2), (1, 4), (1, 6), (2, 2), (2, 4), (2, 6), (10, 2), (10, 4), (10, 6)),
                    compare_gp=True)),
}


def config(profile: str | None = None) -> Config:
    return by_profile(CONFIGS, profile)


# ---------------------------------------------------------------- 2-D toy experiments


def _toy_job(spec: dict) -> dict:
    """One toy run (top-level so that worker processes can run it)."""
    torch.set_num_threads(1)
    cfg = ToyConfig(**spec["cfg"])
    data = gan.toy_dataset(spec.get("data", cfg.data))
    method, strategy, seed = spec["method"], spec["strategy"], spec["seed"]
    torch.manual_seed(seed)
    G = gan.mlp(2, 2, cfg.width, cfg.depth, "relu")
    T = gan.mlp(2, 1, cfg.width, cfg.depth, "lrelu")
    if method == "wgan-div":
        loss = gan.WGANDiv(cfg.k, cfg.p, strategy)
        steps, n_critic = cfg.steps, 1
    elif method == "wgan-gp":
        loss = gan.WGANGP(cfg.lam, strategy)
        steps, n_critic = cfg.gp_steps, cfg.gp_n_critic
    elif method == "sgan":
        loss = gan.StandardGAN()
        steps, n_critic = cfg.steps, 1
    else:
        raise ValueError(f"unknown toy method {method!r}")
    gcfg = gan.GANConfig(steps=steps, n_critic=n_critic, batch=cfg.batch, lr=cfg.lr, betas=cfg.betas, z_dim=2,
                         eval_every=cfg.eval_every, snapshot_every=cfg.eval_every, progress=False)
    zeval = torch.randn(cfg.n_eval, 2, generator=torch.Generator().manual_seed(10_000 + seed))

    def evaluate(Gm, step):
        with torch.no_grad():
            x = Gm(zeval)
        if data.centres is None:
            return {}
        m, qual = gan.mode_metrics(x, data.centres, data.std)
        return {"modes": m, "quality": qual}

    def snapshot(Gm, step):
        with torch.no_grad():
            x = Gm(zeval[: cfg.n_show]).numpy()
        return {"x": x, "field": gan.critic_field(T, data.lim, cfg.field_n) if spec.get("fields") else None}

    hist = gan.train_gan(G, T, loss, data.sample, gcfg, seed=seed, evaluate=evaluate, snapshot=snapshot)
    return {"spec": {k: v for k, v in spec.items() if k != "cfg"}, "steps": steps, "n_critic": n_critic,
            "evals": hist.evals, "snapshots": hist.snapshots, "metrics": hist.metrics, "log_steps": hist.steps,
            "seconds": hist.seconds}


def run_jobs(specs: list[dict], workers: int = 1, desc: str = "toy runs") -> list[dict]:
    """Run the toy jobs `specs` (see `gan.run_jobs`)."""
    return gan.run_jobs(_toy_job, specs, workers, desc)


def toy_specs(cfg: ToyConfig) -> list[dict]:
    """W7 (main runs, every seed) and W8 (six sampling strategies per method)."""
    c = asdict(cfg)
    specs = []
    for seed in cfg.seeds:
        specs += [dict(method="wgan-div", strategy="pool", seed=seed, fields=True),
                  dict(method="wgan-div", strategy="interp", seed=seed, fields=seed == cfg.seeds[0]),
                  dict(method="sgan", strategy="-", seed=seed, fields=seed == cfg.seeds[0])]
        if seed in cfg.gp_seeds:
            specs.append(dict(method="wgan-gp", strategy="interp", seed=seed, fields=seed == cfg.seeds[0]))
    have = {(s["method"], s["strategy"], s["seed"]) for s in specs}
    for seed in cfg.sweep_seeds:
        for method in ("wgan-div", "wgan-gp"):
            for st in gan.STRATEGIES:
                if (method, st, seed) not in have:
                    specs.append(dict(method=method, strategy=st, seed=seed, fields=False))
    for name in cfg.extras:
        specs.append(dict(method="wgan-div", strategy="pool", seed=cfg.seeds[0], fields=True, data=name))
    # longest first keeps the worker pool busy
    specs.sort(key=lambda s: -(cfg.gp_steps * cfg.gp_n_critic * 1.2 if s["method"] == "wgan-gp" else cfg.steps))
    return [dict(s, cfg=c) for s in specs]


def toy_experiment(cfg: ToyConfig) -> dict:
    """All toy runs; result keyed by (data, method, strategy, seed)."""
    t0 = time.perf_counter()
    runs = run_jobs(toy_specs(cfg), cfg.workers)
    out = {}
    for r in runs:
        s = r["spec"]
        out[(s.get("data", cfg.data), s["method"], s["strategy"], s["seed"])] = r
    return {"runs": out, "seconds": time.perf_counter() - t0, "cfg": cfg}


def first_full_coverage(run: dict, n_modes: int) -> int | None:
    """The first evaluated step with every mode covered (None if never)."""
    for step in sorted(run["evals"]):
        if run["evals"][step].get("modes") == n_modes:
            return step
    return None


def quality_at(run: dict, step: int | None = None) -> float:
    ev = run["evals"]
    s = max(ev) if step is None else step
    return float(ev[s]["quality"])


# ---------------------------------------------------------------- images


def image_run(cfg: ImageConfig, x: torch.Tensor, fid: gan.ProxyFID | None, loss: gan.GANLoss, seed: int = 0,
              n_critic: int | None = None, device=None, checkpoint=None, desc: str = "") -> dict:
    """Train the DCGAN-style pair with one loss; proxy-FID and a sample grid every eval_every steps."""
    from .config import device as default_device

    dev = torch.device(device or default_device())
    torch.manual_seed(seed)
    G = gan.ConvGenerator(cfg.z_dim, cfg.img_size, cfg.channels, cfg.base, cfg.max_ch, cfg.kernel)
    T = gan.ConvCritic(cfg.img_size, cfg.channels, cfg.base, cfg.max_ch, cfg.kernel, cfg.norm)
    hist = gan.train_image_gan(G, T, loss, x, cfg, fid, n_critic, seed, dev, checkpoint, desc)
    return {"history": hist, "G": G.cpu(), "T": T.cpu()}


def image_experiment(cfg: ImageConfig, seed: int = 0, device=None) -> dict:
    """cpu: WGAN-div (post's form, 1:1) on MNIST 32x32; full: also the (k, p) grid (W9) and
    WGAN-GP (interpolates, 5:1) for W10."""
    from .config import device as default_device

    dev = torch.device(device or default_device())
    t0 = time.perf_counter()
    x, y, source = gan.load_images(cfg.data, cfg.n_train, cfg.img_size)
    nf = min(len(x), max(cfg.n_fid, 2000))
    fid = gan.ProxyFID(x[:nf] if y is None else x, None if y is None else y, key=f"{cfg.data}{cfg.img_size}",
                       steps=cfg.fid_steps, device=dev, seed=seed, width=cfg.fid_width)
    runs = {"wgan-div k=2 p=6": image_run(cfg, x, fid, gan.WGANDiv(cfg.k, cfg.p, "pool"), seed, 1, dev)}
    for k, p in cfg.grid_kp:
        name = f"wgan-div k={k:g} p={p:g}"
        if name not in runs:
            runs[name] = image_run(cfg, x, fid, gan.WGANDiv(k, p, "pool"), seed, 1, dev)
    if cfg.compare_gp:
        runs["wgan-gp"] = image_run(cfg, x, fid, gan.WGANGP(cfg.lam, "interp"), seed, 5, dev)
    return {"runs": runs, "source": source, "seconds": time.perf_counter() - t0, "x_shape": tuple(x.shape),
            "fid_floor": fid(x[-min(len(x) - 1, cfg.n_fid):]) if len(x) > cfg.n_fid else float("nan")}
