"""Chapter 06 — GAN-QP: divergences defined in the dual space, the quadratic-potential
divergence and the GAN built on it.

Three parts:

1. float64 NumPy helpers for the derivation checks (point masses, discrete distributions
   with a closed-form optimum, the unary critic as a graph-Laplacian solve, two Gaussians
   by quadrature);
2. the GAN-QP critic and generator losses (torch), each a transcription of its equation;
3. per-profile settings and the experiment entry points (8 Gaussians, images). The networks,
   training loop, toy data, metrics and proxy-FID come from the shared toolkit `dlbook.gan`.

Sign convention (as in `dlbook.gan`): the critic ``T`` is HIGH on real data and every loss
is a quantity to MINIMISE.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from . import gan
from .config import by_profile

LOG2 = math.log(2.0)

# ======================================================================== 1. derivations


def sgan_point_mass(steps: int = 20000, lr: float = 1.0) -> np.ndarray:
    """Gradient ascent on the two free values (T(alpha), T(beta)) of the SGAN divergence
    (eq-06-sgan) for p = delta_alpha, q = delta_beta. Returns the value after every step.

    The objective 1/2 log s(a) + 1/2 log(1 - s(b)) + log 2 involves alpha and beta only
    through which point carries which value, so the trajectory is the same for every
    alpha != beta."""
    a = b = 0.0
    vals = np.empty(steps)
    for k in range(steps):
        ga = 0.5 * (1.0 - _sigmoid(a))  # d/da 1/2 log s(a)
        gb = -0.5 * _sigmoid(b)  # d/db 1/2 log(1 - s(b))
        a, b = a + lr * ga, b + lr * gb
        vals[k] = 0.5 * _log_sigmoid(a) + 0.5 * _log_sigmoid(-b) + LOG2  # (eq-06-sgan)
    return vals


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def qp_point_mass(lam: float, d: float, critic: str = "binary", steps: int = 200) -> tuple[float, float]:
    """Maximise the QP objective (eq-06-qp) for p = delta_alpha, q = delta_beta by gradient
    ascent on the free critic values; returns (value, Delta T at the optimum).

    binary: the two values T(alpha, beta), T(beta, alpha); unary: t(alpha), t(beta). Either
    way only z = Delta T enters: z - z^2 / (2 lam d)."""
    if critic not in ("binary", "unary"):
        raise ValueError(f"unknown critic {critic!r}: choose 'binary' or 'unary'")
    u = np.zeros(2)  # (T(a,b), T(b,a)) or (t(a), t(b)); Delta = u0 - u1 in both cases
    lr = 0.5 * lam * d  # curvature of the objective in u is 2/(lam d): a safe step
    for _ in range(steps):
        z = u[0] - u[1]
        g = 1.0 - z / (lam * d)  # d/dz [z - z^2/(2 lam d)]
        u += lr * np.array([g, -g])
    z = u[0] - u[1]
    return z - z * z / (2 * lam * d), z


# ---------------------------------------------------------------- discrete distributions


@dataclass(frozen=True)
class Discrete:
    """p, q on points x of the line; d = |x_i - x_j|; lam the QP scale."""

    x: np.ndarray
    p: np.ndarray
    q: np.ndarray
    lam: float

    @property
    def d(self) -> np.ndarray:
        return np.abs(self.x[:, None] - self.x[None, :])

    @property
    def A(self) -> np.ndarray:  # A_ij = p_i q_j - p_j q_i
        return np.outer(self.p, self.q) - np.outer(self.q, self.p)

    @property
    def B(self) -> np.ndarray:  # B_ij = p_i q_j + p_j q_i
        return np.outer(self.p, self.q) + np.outer(self.q, self.p)


def random_problem(rng: np.random.Generator, n_max: int = 8, disjoint: bool = False) -> Discrete:
    """n ~ U{2..n_max} distinct points in [0, 1], p, q ~ Dirichlet(1), lam ~ U(0.1, 10).
    ``disjoint``: p and q live on complementary subsets of the points."""
    n = int(rng.integers(2, n_max + 1))
    x = np.sort(rng.uniform(0, 1, n))
    p, q = rng.dirichlet(np.ones(n)), rng.dirichlet(np.ones(n))
    if disjoint:
        k = int(rng.integers(1, n))
        perm = rng.permutation(n)
        mp = np.zeros(n, bool)
        mp[perm[:k]] = True
        p, q = np.where(mp, p, 0.0), np.where(mp, 0.0, q)
        p, q = p / p.sum(), q / q.sum()
    return Discrete(x, p, q, float(rng.uniform(0.1, 10)))


def qp_objective_binary(Tm: np.ndarray, pr: Discrete) -> tuple[float, np.ndarray]:
    """(eq-06-qp) for a free table T_ij = T(x_i, x_j) (real x_i, fake x_j) and its gradient:
    sum_ij p_i q_j [Delta_ij - Delta_ij^2 / (2 lam d_ij)], Delta_ij = T_ij - T_ji.
    Diagonal pairs (d = 0, Delta = 0) contribute nothing."""
    d, W = pr.d, np.outer(pr.p, pr.q)
    off = ~np.eye(len(pr.x), dtype=bool)
    Delta = Tm - Tm.T
    dd = np.where(off, d, 1.0)
    val = np.sum(np.where(off, W * (Delta - Delta ** 2 / (2 * pr.lam * dd)), 0.0))  # (eq-06-qp)
    G = np.where(off, W * (1 - Delta / (pr.lam * dd)), 0.0)  # d val / d Delta_ij, weighted
    return float(val), G - G.T  # Delta_ij depends on T_ij (+) and on T_ji (-)


def qp_binary_optimum(pr: Discrete) -> dict:
    """The closed form (eq-06-opt): Delta*_ij = lam d_ij A_ij / B_ij, with the value
    lam/4 sum d A^2/B (eq-06-value) and E_{p x q}[Delta*] = lam/2 sum d A^2/B (eq-06-gen-value)."""
    d, A, B = pr.d, pr.A, pr.B
    ratio = np.divide(A, B, out=np.zeros_like(A), where=B > 0)
    delta = pr.lam * d * ratio  # (eq-06-opt)
    S = float(np.sum(d * A * ratio))  # sum d A^2 / B over ordered pairs
    return {"delta": delta, "value": pr.lam / 4 * S,  # (eq-06-value)
            "gen_value": pr.lam / 2 * S,  # (eq-06-gen-value)
            "e_delta": float(np.sum(np.outer(pr.p, pr.q) * delta))}


def maximise_binary(pr: Discrete, seed: int = 0) -> float:
    """Generic check of the closed form: maximise (eq-06-qp) over the whole free table T
    (n^2 numbers, random start) with L-BFGS, knowing nothing of the solution."""
    from scipy.optimize import minimize

    n = len(pr.x)
    t0 = np.random.default_rng(seed).normal(size=n * n)

    def f(t):
        v, g = qp_objective_binary(t.reshape(n, n), pr)
        return -v, -g.ravel()

    r = minimize(f, t0, jac=True, method="L-BFGS-B", options={"maxiter": 5000, "gtol": 1e-13, "ftol": 1e-16})
    return float(-r.fun)


def qp_unary_optimum(pr: Discrete) -> dict:
    """The unary critic Delta_ij = t_i - t_j. The objective
    sum_i t_i (p_i - q_i) - 1/2 t^T L t, with L the graph Laplacian of the weights
    w_ij = B_ij / (lam d_ij), is a concave quadratic: L t = p - q (eq-06-unary).
    Returns t* (mean zero), the value 1/2 (p - q).t* and the worst ratio |t_i - t_j| / (lam d_ij)."""
    n = len(pr.x)
    d, B = pr.d, pr.B
    off = ~np.eye(n, dtype=bool)
    w = np.where(off, B / (pr.lam * np.where(off, d, 1.0)), 0.0)
    L = np.diag(w.sum(1)) - w
    b = pr.p - pr.q
    t = np.linalg.lstsq(L, b, rcond=None)[0]  # (eq-06-unary)
    t -= t.mean()
    diff = t[:, None] - t[None, :]
    ratio = np.where(off & (B > 0), np.abs(diff) / (pr.lam * np.where(off, d, 1.0)), 0.0)
    value = float(np.dot(b, t) - 0.5 * t @ L @ t)
    return {"t": t, "value": value, "value_half_bt": 0.5 * float(np.dot(b, t)), "worst_ratio": float(ratio.max())}


def qp_bounds(pr: Discrete) -> tuple[float, float]:
    """(lower, upper) for E_{p x q}[Delta*] (eq-06-bounds):
    lam/4 (sum |A| d)^2 / E_{p x q}[d]  <=  E[Delta*]  <=  lam E_{p x q}[d]."""
    d, A = pr.d, pr.A
    Ed = float(pr.p @ d @ pr.q)
    lower = pr.lam / 4 * float(np.sum(np.abs(A) * d)) ** 2 / Ed
    return lower, pr.lam * Ed


# ---------------------------------------------------------------- two Gaussians by quadrature


def _log_normal(x, mu, sd):
    return -0.5 * ((x - mu) / sd) ** 2 - math.log(sd * math.sqrt(2 * math.pi))


def qp_div_gauss(beta: float, sigma: float = 0.3, lam: float = 1.0, n: int = 1201,
                 lo: float = -3.0, hi: float = 11.0) -> float:
    """QP-div (eq-06-value) between p = N(0, sigma^2) and q = N(beta, sigma^2), d = |x - y|,
    by the trapezoid rule on an n x n grid over [lo, hi]^2. Computed in log space:
    A^2 / B = B tanh^2(u / 2) with u = log(p_r q_f) - log(p_f q_r)."""
    x = np.linspace(lo, hi, n)
    h = x[1] - x[0]
    lp, lq = _log_normal(x, 0.0, sigma), _log_normal(x, beta, sigma)
    l1 = lp[:, None] + lq[None, :]  # log p(x_r) q(x_f)
    l2 = lq[:, None] + lp[None, :]  # log p(x_f) q(x_r)
    logB = np.logaddexp(l1, l2)
    a2b = np.exp(logB) * np.tanh(0.5 * (l1 - l2)) ** 2
    wts = np.full(n, h)
    wts[[0, -1]] = h / 2
    integrand = a2b * np.abs(x[:, None] - x[None, :])
    return float(lam / 4 * wts @ integrand @ wts)  # (eq-06-value)


def js_gauss_deficit(beta: float, sigma: float = 0.3, n: int = 4001, lo: float = -3.0, hi: float = 11.0) -> float:
    """log 2 - JS(p, q) for p = N(0, sigma^2), q = N(beta, sigma^2), computed without
    cancellation: 1/2 E_p log(1 + q/p) + 1/2 E_q log(1 + p/q) (trapezoid rule)."""
    x = np.linspace(lo, hi, n)
    h = x[1] - x[0]
    lp, lq = _log_normal(x, 0.0, sigma), _log_normal(x, beta, sigma)
    f = 0.5 * np.exp(lp) * np.log1p(np.exp(lq - lp)) + 0.5 * np.exp(lq) * np.log1p(np.exp(lp - lq))
    return float(h * (f.sum() - 0.5 * (f[0] + f[-1])))


def js_gauss(beta: float, sigma: float = 0.3, **kw) -> float:
    """JS(p, q) = log 2 - deficit: the value of the SGAN divergence (eq-06-sgan)."""
    return LOG2 - js_gauss_deficit(beta, sigma, **kw)


def separation_curves(betas, sigma: float = 0.3, n: int = 401) -> dict:
    """QP-div at lam = 1 (it is linear in lam) and JS on a beta grid, with derivatives by
    np.gradient: the precomputed curves behind the notebook's sliders (coarser quadrature)."""
    betas = np.asarray(betas, np.float64)
    qp = np.array([qp_div_gauss(b, sigma, 1.0, n) for b in betas])
    js = np.array([js_gauss(b, sigma, n=2001) for b in betas])
    return {"beta": betas, "qp": qp, "js": js, "dqp": np.gradient(qp, betas), "djs": np.gradient(js, betas)}


def separation_table(betas, sigma: float = 0.3, lam: float = 1.0, h: float = 1e-3, n: int = 1201) -> dict:
    """QP-div, JS and their beta-derivatives (central differences) at each beta."""
    rows = {"beta": [], "qp": [], "dqp": [], "js": [], "djs": []}
    for b in betas:
        qp = qp_div_gauss(b, sigma, lam, n)
        dqp = (qp_div_gauss(b + h, sigma, lam, n) - qp_div_gauss(b - h, sigma, lam, n)) / (2 * h)
        js = js_gauss(b, sigma)
        djs = -(js_gauss_deficit(b + h, sigma) - js_gauss_deficit(b - h, sigma)) / (2 * h)
        for k, v in zip(rows, (b, qp, dqp, js, djs)):
            rows[k].append(float(v))
    return {k: np.array(v) for k, v in rows.items()}


# ======================================================================== 2. losses

DISTANCES = ("l1", "l2", "euclid")
MODES = ("pair", "broadcast")


def _wide(t: torch.Tensor) -> torch.Tensor:
    """At least float32 (half/bf16 under autocast are widened; float64 stays float64)."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def pair_distance(x_real: torch.Tensor, x_fake: torch.Tensor, dist: str = "l1") -> torch.Tensor:
    """d(x_r,i, x_f,i) per pair, shape (N,). As in the author's code, 'l1' and 'l2' are
    per-element AVERAGES: mean |x_r - x_f| and sqrt(mean (x_r - x_f)^2); 'euclid' is the
    plain Euclidean norm (used on the 2-D toy)."""
    if dist not in DISTANCES:
        raise ValueError(f"unknown distance {dist!r}: choose one of {DISTANCES}")
    if x_real.shape != x_fake.shape:
        raise ValueError(f"pair_distance: real {tuple(x_real.shape)} and fake {tuple(x_fake.shape)} differ")
    diff = _wide((x_real - x_fake).flatten(1))
    if dist == "l1":
        return diff.abs().mean(1)
    if dist == "l2":
        return diff.pow(2).mean(1).sqrt()
    return diff.pow(2).sum(1).sqrt()


def qp_critic_loss(t_real: torch.Tensor, t_fake: torch.Tensor, x_real: torch.Tensor, x_fake: torch.Tensor,
                   lam: float = 10.0, dist: str = "l1", mode: str = "pair", eps: float = 1e-8) -> torch.Tensor:
    """(eq-06-critic): mean_i [ -Delta_i + Delta_i^2 / (2 lam d_i) ], Delta_i = T(x_r,i) - T(x_f,i).

    ``mode='pair'`` is the theory (each pair's own distance). ``mode='broadcast'`` reproduces
    the first published code, where Delta had shape (N, 1) and d shape (N,), so the penalty
    became mean_{i,j} Delta_i^2 / (2 lam d_j). ``eps`` guards d = 0 (identical pair)."""
    if mode not in MODES:
        raise ValueError(f"unknown penalty mode {mode!r}: choose one of {MODES}")
    if not lam > 0:
        raise ValueError(f"lam must be positive, got {lam}")
    t_real, t_fake = _wide(t_real).reshape(len(t_real), -1), _wide(t_fake).reshape(len(t_fake), -1)
    if t_real.shape != t_fake.shape or t_real.shape[1] != 1:
        raise ValueError(f"critic outputs must both be (N,) or (N, 1), got {tuple(t_real.shape)}, {tuple(t_fake.shape)}")
    if len(x_real) != len(t_real):
        raise ValueError(f"{len(t_real)} critic outputs for {len(x_real)} samples")
    delta = (t_real - t_fake)[:, 0]  # (N,)
    d = pair_distance(x_real, x_fake, dist) + eps  # (N,)
    if mode == "pair":
        pen = delta.pow(2) / (2 * lam * d)  # (eq-06-critic)
    else:
        pen = delta.pow(2)[:, None] / (2 * lam * d[None, :])  # the 2018-11-18 code: (N, N)
    return -delta.mean() + pen.mean()  # (eq-06-critic)


def qp_generator_loss(t_real: torch.Tensor, t_fake: torch.Tensor, x_real: torch.Tensor | None = None,
                      x_fake: torch.Tensor | None = None, lam: float = 10.0, dist: str = "l1",
                      quadratic: bool = False, eps: float = 1e-8) -> torch.Tensor:
    """(eq-06-gen): mean_i Delta_i = mean T(x_r) - mean T(x_f); the quadratic term stays out.

    ``quadratic=True`` is the ablation the post warns against: the generator minimises the
    critic's whole objective mean [Delta - Delta^2 / (2 lam d)] (eq-06-gen-quad)."""
    delta = _wide(t_real).reshape(-1) - _wide(t_fake).reshape(-1)
    if not quadratic:
        return delta.mean()  # (eq-06-gen)
    if x_real is None or x_fake is None:
        raise ValueError("the quadratic generator loss needs x_real and x_fake for the distance")
    d = pair_distance(x_real, x_fake, dist) + eps
    return (delta - delta.pow(2) / (2 * lam * d)).mean()  # (eq-06-gen-quad)


class GANQP(gan.GANLoss):
    """GAN-QP as a `dlbook.gan` loss object: critic (eq-06-critic), generator (eq-06-gen).
    Two critic updates per generator update by default, as in the author's code."""

    name = "GAN-QP"
    n_critic = 2

    def __init__(self, lam: float = 10.0, dist: str = "l1", mode: str = "pair", gen_quadratic: bool = False):
        if dist not in DISTANCES:
            raise ValueError(f"unknown distance {dist!r}: choose one of {DISTANCES}")
        if mode not in MODES:
            raise ValueError(f"unknown penalty mode {mode!r}: choose one of {MODES}")
        if not lam > 0:
            raise ValueError(f"lam must be positive, got {lam}")
        self.lam, self.dist, self.mode, self.gen_quadratic = float(lam), dist, mode, gen_quadratic

    def critic_loss(self, T, x_real, x_fake):
        tr, tf = T(x_real), T(x_fake)
        loss = qp_critic_loss(tr, tf, x_real, x_fake, self.lam, self.dist, self.mode)
        delta = (tr.float() - tf.float()).reshape(-1)
        return loss, {"critic": loss.detach(), "delta": delta.mean().detach()}

    def generator_loss(self, T, x_real, x_fake):
        return qp_generator_loss(T(x_real), T(x_fake), x_real, x_fake, self.lam, self.dist, self.gen_quadratic)


@torch.no_grad()
def slope_ratio(T: nn.Module, x_real: torch.Tensor, x_fake: torch.Tensor, lam: float, dist: str = "euclid") -> np.ndarray:
    """|Delta_i| / (lam d_i) for each (real, fake) pair: the quantity the optimum bounds by 1
    (exactly for a binary critic, approximately for a unary one)."""
    delta = (T(x_real).float() - T(x_fake).float()).reshape(-1)
    return (delta.abs() / (lam * pair_distance(x_real, x_fake, dist) + 1e-12)).cpu().numpy()


# ======================================================================== 3. experiments


@dataclass(frozen=True)
class ToyConfig:
    data: str = "8gaussians"
    steps: int = 4000  # generator steps
    batch: int = 256
    width: int = 128
    depth: int = 3
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    lams: tuple[float, ...] = (1.0, 10.0, 100.0)  # Q7 (1, 10) and Q8 (100)
    seeds: tuple[int, ...] = (0, 1)
    n_critic: int = 2
    fail_seeds: tuple[int, ...] = (0, 1)  # 1:1 at lam = 10 (the failure case)
    ablation_seeds: tuple[int, ...] = (0,)  # Q9 and Q10
    eval_every: int = 250
    n_eval: int = 4000
    n_show: int = 1500
    field_n: int = 81
    workers: int = 2


@dataclass(frozen=True)
class ImageConfig:
    data: str = "mnist"
    img_size: int = 32
    channels: int = 1
    n_train: int = 14000
    z_dim: int = 64
    base: int = 16
    max_ch: int = 64
    kernel: int = 4
    batch: int = 64
    steps: int = 1000  # generator steps
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    lam: float = 10.0
    dist: str = "l1"
    eval_every: int = 200
    n_fid: int = 1000
    fid_steps: int = 400
    compare: tuple[str, ...] = ()  # Q11 (full): "wgan-gp", "sgan-sn"


@dataclass(frozen=True)
class Config:
    toy: ToyConfig
    image: ImageConfig


CONFIGS = {
    "smoke": Config(
        ToyConfig(steps=40, batch=64, width=32, lams=(1.0, 10.0), seeds=(0,), fail_seeds=(0,), eval_every=20,
                  n_eval=500, n_show=300, field_n=31, workers=1),
        ImageConfig(n_train=256, steps=4, batch=16, eval_every=2, n_fid=64, fid_steps=5, base=8, max_ch=16)),
    "cpu": Config(ToyConfig(), ImageConfig()),
    "full": Config(
        ToyConfig(seeds=(0, 1, 2), fail_seeds=(0, 1, 2), ablation_seeds=(0, 1, 2), workers=1),
        # CelebA 64x64, the post's networks at that size; WGAN-GP (5:1) and SGAN-SN (1:1) get the
        # same number of generator steps. Untested here (no GPU): an estimate is ~25 min on an H100.
        ImageConfig(data="celeba", img_size=64, channels=3, n_train=60000, z_dim=128, base=64, max_ch=1024,
                    kernel=5, batch=64, steps=10000, eval_every=1000, n_fid=5000, fid_steps=2000,
                    compare=("wgan-gp", "sgan-sn"))),
}


def config(profile: str | None = None) -> Config:
    return by_profile(CONFIGS, profile)


# ---------------------------------------------------------------- 8 Gaussians


def toy_specs(cfg: ToyConfig) -> list[dict]:
    """Q7/Q8: every lam at 2:1 for every seed; the 1:1 failure case at lam = 10;
    Q9 (quadratic term in the generator) and Q10 (broadcast penalty) at lam = 10."""
    specs = [dict(name="main", lam=lam, seed=s, n_critic=cfg.n_critic, mode="pair", gen_quad=False)
             for lam in cfg.lams for s in cfg.seeds]
    specs += [dict(name="1:1", lam=10.0, seed=s, n_critic=1, mode="pair", gen_quad=False) for s in cfg.fail_seeds]
    specs += [dict(name="gen-quad", lam=10.0, seed=s, n_critic=cfg.n_critic, mode="pair", gen_quad=True)
              for s in cfg.ablation_seeds]
    specs += [dict(name="broadcast", lam=10.0, seed=s, n_critic=cfg.n_critic, mode="broadcast", gen_quad=False)
              for s in cfg.ablation_seeds]
    specs.sort(key=lambda s: -s["n_critic"])  # longest first keeps a worker pool busy
    return [dict(s, cfg=asdict(cfg)) for s in specs]


def _toy_job(spec: dict) -> dict:
    """One toy run (top level, so that spawned worker processes can run it)."""
    torch.set_num_threads(1)
    cfg = ToyConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec["cfg"].items()})
    data = gan.toy_dataset(cfg.data)
    seed, lam = spec["seed"], spec["lam"]
    torch.manual_seed(seed)
    G = gan.mlp(2, 2, cfg.width, cfg.depth, "relu")
    T = gan.mlp(2, 1, cfg.width, cfg.depth, "lrelu")
    loss = GANQP(lam, "euclid", spec["mode"], spec["gen_quad"])
    gcfg = gan.GANConfig(steps=cfg.steps, n_critic=spec["n_critic"], batch=cfg.batch, lr=cfg.lr, betas=cfg.betas,
                         z_dim=2, eval_every=cfg.eval_every, snapshot_every=cfg.eval_every, progress=False)
    zeval = torch.randn(cfg.n_eval, 2, generator=torch.Generator().manual_seed(10_000 + seed))
    xeval = data.sample(cfg.n_eval, torch.Generator().manual_seed(20_000 + seed))

    def evaluate(Gm, step):
        with torch.no_grad():
            x = Gm(zeval)
        modes, qual = gan.mode_metrics(x, data.centres, data.std)
        r = slope_ratio(T, xeval, x, lam, "euclid")
        return {"modes": modes, "quality": qual, "ratio_q99": float(np.quantile(r, 0.99)),
                "ratio_max": float(r.max())}

    def snapshot(Gm, step):
        with torch.no_grad():
            x = Gm(zeval[: cfg.n_show]).numpy()
        return {"x": x, "field": gan.critic_field(T, data.lim, cfg.field_n)}

    hist = gan.train_gan(G, T, loss, data.sample, gcfg, seed=seed, evaluate=evaluate, snapshot=snapshot)
    return {"spec": {k: v for k, v in spec.items() if k != "cfg"}, "evals": hist.evals,
            "snapshots": hist.snapshots, "metrics": hist.metrics, "log_steps": hist.steps,
            "seconds": hist.seconds}


def run_jobs(specs: list[dict], workers: int = 1, desc: str = "GAN-QP toy runs") -> list[dict]:
    """Run the toy jobs `specs` (see `gan.run_jobs`)."""
    return gan.run_jobs(_toy_job, specs, workers, desc)


def toy_experiment(cfg: ToyConfig) -> dict:
    """All toy runs of Q7-Q10, keyed by (name, lam, seed)."""
    t0 = time.perf_counter()
    runs = run_jobs(toy_specs(cfg), cfg.workers)
    out = {(r["spec"]["name"], r["spec"]["lam"], r["spec"]["seed"]): r for r in runs}
    return {"runs": out, "seconds": time.perf_counter() - t0, "cfg": cfg}


def first_full_coverage(run: dict, n_modes: int = 8) -> int | None:
    """The first evaluated step with every mode covered (None if never)."""
    for step in sorted(run["evals"]):
        if run["evals"][step]["modes"] == n_modes:
            return step
    return None


def at_step(run: dict, key: str, step: int | None = None) -> float:
    """An evaluated metric at ``step`` (default: the last evaluation)."""
    ev = run["evals"]
    return float(ev[max(ev) if step is None else step][key])


# ---------------------------------------------------------------- images


def spectral_critic(cfg: ImageConfig) -> nn.Module:
    """The conv critic without normalisation layers and with spectral normalisation on every
    conv and linear layer (the critic of SGAN-SN in the paper's comparison)."""
    T = gan.ConvCritic(cfg.img_size, cfg.channels, cfg.base, cfg.max_ch, cfg.kernel, "none")
    for m in list(T.modules()):
        for name, child in list(m.named_children()):
            if isinstance(child, (nn.Conv2d, nn.Linear)):
                setattr(m, name, nn.utils.parametrizations.spectral_norm(child))
    return T


def image_losses(cfg: ImageConfig) -> dict[str, tuple[gan.GANLoss, int, str]]:
    """name -> (loss, critic updates per generator update, critic kind)."""
    out = {"GAN-QP": (GANQP(cfg.lam, cfg.dist), 2, "bn")}
    if "wgan-gp" in cfg.compare:
        out["WGAN-GP"] = (gan.WGANGP(10.0, "interp"), 5, "ln")
    if "sgan-sn" in cfg.compare:
        out["SGAN-SN"] = (gan.StandardGAN(), 1, "sn")
    return out


def image_run(cfg: ImageConfig, x: torch.Tensor, fid, loss: gan.GANLoss, n_critic: int, critic: str,
              seed: int = 0, device=None, desc: str = "") -> dict:
    """Train the DCGAN-style pair with one loss for ``cfg.steps`` generator steps; proxy-FID
    and a sample grid every ``eval_every`` steps."""
    from .config import device as default_device

    dev = torch.device(device or default_device())
    torch.manual_seed(seed)
    G = gan.ConvGenerator(cfg.z_dim, cfg.img_size, cfg.channels, cfg.base, cfg.max_ch, cfg.kernel)
    T = spectral_critic(cfg) if critic == "sn" else gan.ConvCritic(cfg.img_size, cfg.channels, cfg.base,
                                                                    cfg.max_ch, cfg.kernel, critic)
    hist = gan.train_image_gan(G, T, loss, x, cfg, fid, n_critic, seed, dev, desc=desc)
    return {"history": hist, "n_critic": n_critic}


def image_experiment(cfg: ImageConfig, seed: int = 0, device=None) -> dict:
    """cpu: GAN-QP (L1, lam = 10, 2:1) on MNIST 32x32; full: also WGAN-GP (5:1) and SGAN-SN
    (1:1) under the same number of generator steps on CelebA 64x64 (Q11)."""
    from .config import device as default_device

    dev = torch.device(device or default_device())
    threads = torch.get_num_threads()
    if dev.type == "cpu":
        # One thread: on a shared 2-core machine two OpenMP threads made these small convs
        # ~15x slower (spin-waiting), and one thread is nearly as fast on an idle machine.
        torch.set_num_threads(1)
    try:
        return _image_experiment(cfg, seed, dev)
    finally:
        torch.set_num_threads(threads)


def _image_experiment(cfg: ImageConfig, seed: int, dev: torch.device) -> dict:
    t0 = time.perf_counter()
    x, y, source = gan.load_images(cfg.data, cfg.n_train, cfg.img_size)
    nf = min(len(x), max(cfg.n_fid, 2000))
    fid = gan.ProxyFID(x[:nf] if y is None else x, None if y is None else y, key=f"{cfg.data}{cfg.img_size}",
                       steps=cfg.fid_steps, device=dev, seed=seed)
    runs = {}
    for name, (loss, n_critic, critic) in image_losses(cfg).items():
        runs[name] = image_run(cfg, x, fid, loss, n_critic, critic, seed, dev, desc=name)
    floor = fid(x[-min(len(x) - 1, cfg.n_fid):]) if len(x) > cfg.n_fid else float("nan")
    return {"runs": runs, "source": source, "seconds": time.perf_counter() - t0, "fid_floor": floor,
            "x_shape": tuple(x.shape)}
