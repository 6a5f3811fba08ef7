"""Chapter 01: Deep INFOMAX with an analytic KL prior.

Discrete identities for the derivation checks, the convolutional encoder, the global and local
critics, the three-term loss (on the images, or on two random views of each), per-profile
settings and one entry point per experiment (Gaussian toy, false negatives of in-batch
shuffling, CIFAR-10 training over several seeds, feature evaluation against the strongest simple
pixel baseline, retrieval figures). The Gaussian pieces (KL, reparameterisation, the
linear-Gaussian channel, code statistics) live in `dlbook.gaussian`. Equation labels refer to
notebooks/01_infomax.md.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from . import metrics
from .metrics import mean_sd  # noqa: F401  (the chapter calls infomax.mean_sd)
from .config import ConfigError, Settings, by_profile, require
from .config import device as default_device
from .data import load
from .gaussian import code_statistics, gaussian_kl, reparameterise
from .train import ArrayLoader, History, Trainer

LOG2 = math.log(2.0)


# =============================================================== per-profile settings
@dataclass(frozen=True)
class Config(Settings):
    """One profile of chapter 01. The post's recipe trains `epochs` epochs per seed; the
    two-view run trains `view_epochs` epochs on two views of each image, and is compared with
    the post's recipe after `2 * view_epochs` epochs (a snapshot of the same runs): the same
    number of encoder passes (images through the encoder)."""

    SIZES = ("n_test", "z_dim", "critic_width", "batch_size", "epochs", "view_epochs", "seeds", "sweep_epochs",
             "knn_every", "toy_n", "toy_steps", "toy_batch", "fn_trials", "knn_k", "slider_queries")
    POSITIVE = ("width", "lr")
    NONNEG = ("alpha", "beta", "gamma", "view_jitter")
    UNIT = ("view_gray",)

    # data: CIFAR-10; `per_batch` images from the start of each of the 5 training batches
    # (None = all 50 000) and the first `n_test` test images (every test image of the source)
    per_batch: int | None = 900
    n_test: int = 900
    # encoder: channel widths of the post (64, 128, 256, 256, 256) times `width`
    width: float = 0.25
    z_dim: int = 64
    critic_width: int = 64
    # loss weights of the post (eq-01-total)
    alpha: float = 0.5
    beta: float = 1.5
    gamma: float = 0.01
    # optimisation
    batch_size: int = 64
    lr: float = 1e-3
    epochs: int = 24       # the post's recipe (one view)
    view_epochs: int = 6   # two views; compared with the post's recipe at 2 x view_epochs (equal passes)
    seeds: int = 3         # every training run is repeated with seeds seed, seed + 1, ...
    sweep_epochs: int = 3  # length of the extra runs; the main run is also evaluated at this epoch
    knn_every: int = 6     # k-NN accuracy tracked every this many epochs' worth of encoder passes
    # random views (eq-01-views): crop area fraction, colour jitter strength, greyscale probability
    view_scale: tuple[float, float] = (0.35, 1.0)
    view_jitter: float = 0.4
    view_gray: float = 0.2
    # the extra runs, each with every seed: (gamma, global critic input) with the post's alpha, beta;
    # (0.01, "paper") adds the paper's global critic at the same length (G1-train)
    sweep: tuple[tuple[float, str], ...] = ((0.0, "post"), (1.0, "post"))
    # Gaussian toy (MLP critic) and false-negative simulation
    toy_n: int = 20_000
    toy_rhos: tuple[float, ...] = (0.0, 0.5, 0.8, 0.9, 0.95)  # the sweep (seed 0 only)
    toy_claim_rhos: tuple[float, ...] = (0.5, 0.8, 0.95)      # C5: every seed
    toy_steps: int = 1500
    toy_batch: int = 512
    fn_batches: tuple[int, ...] = (2, 4, 8, 16, 32, 64, 128, 256, 512)
    fn_trials: int = 2000
    knn_k: int = 10
    slider_queries: int = 8
    # CPU threads for torch, passed to dlbook.config.threads (None: $DLBOOK_THREADS, else every
    # core); the smoke profile's tiny model runs faster on one
    threads: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        where = "infomax.Config"
        require(where, positive={"threads": self.threads}, whole=True)
        require(where, positive={"per_batch": self.per_batch, "fn_batches": self.fn_batches}, whole=True)
        require(where, positive={"view_scale": self.view_scale})
        require(where, unit={"view_scale": self.view_scale, "toy_rhos": self.toy_rhos + self.toy_claim_rhos})
        if 2 * self.view_epochs > self.epochs or self.knn_every % 2:
            raise ConfigError(f"{where}: the post's recipe ({self.epochs} epochs) must run at least 2 x view_epochs "
                              f"({2 * self.view_epochs}), the encoder passes of the two-view run, and knn_every "
                              f"({self.knn_every}) must be even")
        if max(self.toy_rhos + self.toy_claim_rhos) >= 1:
            raise ConfigError(f"{where}: toy correlations must be < 1 (the mutual information is infinite at 1)")
        for g, gi in self.sweep:
            require(where, nonneg={"sweep gamma": g})
            if gi not in GLOBAL_INPUTS:
                raise ConfigError(f"{where}: sweep global input {gi!r}: choose one of {GLOBAL_INPUTS}")

    @property
    def equal_pass_epochs(self) -> int:
        """Epochs of the post's recipe with the encoder passes of the two-view run."""
        return 2 * self.view_epochs


GLOBAL_INPUTS = ("post", "paper")

CONFIGS = {
    # the bundled sample: 250 training images (the first 50 of each batch), 100 test images
    "smoke": Config(per_batch=50, n_test=100, width=0.125, z_dim=16, critic_width=32, batch_size=32,
                    epochs=2, view_epochs=1, seeds=2, sweep_epochs=1, knn_every=2, sweep=((0.0, "post"),),
                    toy_n=2000, toy_rhos=(0.0, 0.5, 0.9), toy_steps=60, toy_batch=256,
                    fn_batches=(2, 8, 64), fn_trials=200, slider_queries=2, threads=1),
    # the offline subset: 4 500 training images (the first 900 of each batch), 900 test images
    "cpu": Config(),
    # the post's CIFAR-10 script: full widths, 256-d code, critics 256 wide, batch 64, 50 epochs
    # (the two-view run: 25 epochs, the same encoder passes); one seed fits the GPU budget
    "full": Config(per_batch=None, n_test=10_000, width=1.0, z_dim=256, critic_width=256,
                   epochs=50, view_epochs=25, seeds=1, sweep_epochs=10, knn_every=10, toy_steps=4000,
                   sweep=((0.0, "post"), (1.0, "post"), (0.01, "paper"))),
}


def config(profile: str | None = None) -> Config:
    """The settings of `profile` (None: the resolved profile)."""
    return by_profile(CONFIGS, profile)


# =============================================================== discrete identities (C1-C4)
def _check_prob(p: np.ndarray, axis: int = -1) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    if np.any(p < 0) or not np.allclose(p.sum(axis), 1.0, atol=1e-9):
        raise ValueError("not a probability table: entries must be >= 0 and sum to 1 along the last axis")
    return p


def kl_discrete(p, q) -> float:
    """KL(p || q) in nats for discrete distributions, with 0 log 0 = 0."""
    p, q = _check_prob(p), _check_prob(q)
    if p.shape != q.shape:
        raise ValueError(f"kl_discrete: p {p.shape} and q {q.shape} must have the same shape")
    m = p > 0
    return float(np.sum(p[m] * np.log(p[m] / q[m])))


def mutual_information(px, pz_x) -> float:
    """I(X;Z) = KL(p(z|x)p(x) || p(z)p(x))  (eq-01-mi-kl)."""
    px, pz_x = _check_prob(px), _check_prob(pz_x)
    joint = px[:, None] * pz_x
    prod = px[:, None] * (px @ pz_x)[None, :]
    return kl_discrete(joint.ravel(), prod.ravel())


def prior_identity_terms(px, pz_x, qz) -> dict[str, float]:
    """The three quantities of the prior identity (eq-01-prior-identity):
    E_x KL(p(z|x)||q), I(X;Z) and KL(p(z)||q)."""
    px, pz_x, qz = _check_prob(px), _check_prob(pz_x), _check_prob(qz)
    pz = px @ pz_x
    e_kl = float(sum(px[i] * kl_discrete(pz_x[i], qz) for i in range(len(px))))
    return {"E_kl": e_kl, "mi": mutual_information(px, pz_x), "kl_agg": kl_discrete(pz, qz)}


def js_divergence(p, q) -> float:
    """JS(P,Q) = 1/2 KL(P||M) + 1/2 KL(Q||M), M = (P+Q)/2, in nats  (eq-01-js)."""
    p, q = _check_prob(p), _check_prob(q)
    m = 0.5 * (p + q)
    return 0.5 * kl_discrete(p, m) + 0.5 * kl_discrete(q, m)


def js_divergence_batch(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Row-wise JS of two (N, K) stacks of distributions, vectorised  (eq-01-js)."""
    p, q = _check_prob(p), _check_prob(q)
    if p.shape != q.shape:
        raise ValueError(f"js_divergence_batch: p {p.shape} and q {q.shape} must have the same shape")
    m = 0.5 * (p + q)
    with np.errstate(divide="ignore", invalid="ignore"):
        kp = np.where(p > 0, p * np.log(p / m), 0.0).sum(-1)
        kq = np.where(q > 0, q * np.log(q / m), 0.0).sum(-1)
    return 0.5 * kp + 0.5 * kq


def bce_objective(p, q, t) -> float:
    """E_P log sigma(T) + E_Q log(1 - sigma(T)) for a discrete critic vector t  (eq-01-bce-objective)."""
    p, q, t = _check_prob(p), _check_prob(q), np.asarray(t, dtype=np.float64)
    if not p.shape == q.shape == t.shape:
        raise ValueError(f"bce_objective: p {p.shape}, q {q.shape} and t {t.shape} must have the same shape")
    log_sig = -np.logaddexp(0.0, -t)      # log sigma(t)
    log_1m = -np.logaddexp(0.0, t)        # log(1 - sigma(t))
    return float(np.sum(p * log_sig) + np.sum(q * log_1m))


# =============================================================== the Gaussian toy (C5)
def gaussian_mi(rho: float) -> float:
    """I(X;Z) for a bivariate standard normal with correlation rho: -1/2 log(1 - rho^2)."""
    if not -1 < rho < 1:
        raise ValueError(f"gaussian_mi: the correlation must be in (-1, 1), got {rho}")
    return -0.5 * math.log(1.0 - rho * rho) + 0.0  # + 0.0 turns -0.0 into 0.0


def correlated_pairs(rho: float, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x, z = rho x + sqrt(1-rho^2) eps, and z shuffled (negatives)."""
    require("correlated_pairs", positive={"n": n}, whole=True)
    if not -1 < rho < 1:
        raise ValueError(f"correlated_pairs: the correlation must be in (-1, 1), got {rho}")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n)
    z = rho * x + math.sqrt(1 - rho * rho) * rng.standard_normal(n)
    return x, z, z[rng.permutation(n)]


def _quad_features(x, z):
    return np.stack([np.ones_like(x), x * x, z * z, x * z], axis=1)


def fit_quadratic_critic(x, z, z_neg, iters: int = 50) -> dict[str, float]:
    """Logistic critic T = w . (1, x^2, z^2, xz) fitted by Newton's method on the balanced
    BCE (joint pairs vs shuffled pairs); this family contains the true log density ratio.
    Returns the plug-in MI estimate E_joint[T] and the maximised objective (eq-01-bce-objective)."""
    require("fit_quadratic_critic", positive={"iters": iters}, whole=True)
    f_pos, f_neg = _quad_features(x, z), _quad_features(x, z_neg)
    feats = np.concatenate([f_pos, f_neg])
    lab = np.concatenate([np.ones(len(x)), np.zeros(len(x))])
    w = np.zeros(4)
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-feats @ w))
        grad = feats.T @ (lab - p)
        hess = (feats * (p * (1 - p))[:, None]).T @ feats
        step = np.linalg.solve(hess + 1e-9 * np.eye(4), grad)
        w = w + step
        if np.max(np.abs(step)) < 1e-12:
            break
    t_pos, t_neg = f_pos @ w, f_neg @ w
    obj = float(np.mean(-np.logaddexp(0, -t_pos)) + np.mean(-np.logaddexp(0, t_neg)))
    return {"mi_est": float(np.mean(t_pos)), "objective": obj, "w": w}


class MLPCritic2D(nn.Module):
    """T(x, z): two hidden layers of width 64 (the toy critic)."""

    def __init__(self, width: int = 64):
        super().__init__()
        require("MLPCritic2D", positive={"width": width}, whole=True)
        self.net = nn.Sequential(nn.Linear(2, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                                 nn.Linear(width, 1))

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.net(torch.stack([x, z], dim=-1)).squeeze(-1)


def fit_mlp_critic(x, z, z_neg, steps: int = 1500, batch: int = 512, lr: float = 3e-3,
                   seed: int = 0) -> dict:
    """Train the MLP critic with the BCE of (eq-01-bce) by Adam; plug-in MI = E_joint[T]."""
    require("fit_mlp_critic", positive={"steps": steps, "batch": batch}, whole=True)
    require("fit_mlp_critic", positive={"lr": lr})
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    crit = MLPCritic2D()
    opt = torch.optim.Adam(crit.parameters(), lr=lr)
    xt, zt, znt = (torch.as_tensor(a, dtype=torch.float32) for a in (x, z, z_neg))
    n = len(xt)
    for _ in range(steps):
        i = torch.randint(0, n, (batch,), generator=g)
        j = torch.randint(0, n, (batch,), generator=g)
        loss = bce_mi_loss(crit(xt[i], zt[i]), crit(xt[j], znt[j]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        t_pos, t_neg = crit(xt, zt), crit(xt, znt)
        obj = -bce_mi_loss(t_pos, t_neg).item()
    return {"mi_est": float(t_pos.mean()), "objective": obj, "critic": crit}


def gaussian_toy(rhos: Sequence[float], n: int = 20_000, steps: int = 1500, batch: int = 512,
                 seed: int = 0, progress: bool = True) -> dict:
    """Experiment 1: for each correlation, the true MI, the quadratic and MLP critics'
    plug-in estimates, and their maximised objectives (2 JS - 2 log 2). The k-th correlation
    draws its data and initialises its critic with 1000 seed + k, so that runs with different
    seeds share no draws."""
    from tqdm.auto import tqdm

    require("gaussian_toy", positive={"n": n, "steps": steps, "batch": batch}, whole=True)

    out = {"rho": [], "true": [], "quad": [], "mlp": [], "obj_quad": [], "obj_mlp": [], "critics": [],
           "samples": []}
    for k, rho in enumerate(tqdm(list(rhos), desc="Gaussian toy", disable=not progress, leave=False)):
        x, z, zn = correlated_pairs(rho, n, 1000 * seed + k)
        q = fit_quadratic_critic(x, z, zn)
        m = fit_mlp_critic(x, z, zn, steps=steps, batch=batch, seed=1000 * seed + k)
        out["rho"].append(rho)
        out["true"].append(gaussian_mi(rho))
        out["quad"].append(q["mi_est"])
        out["mlp"].append(m["mi_est"])
        out["obj_quad"].append(q["objective"])
        out["obj_mlp"].append(m["objective"])
        out["critics"].append(m["critic"])
        out["samples"].append((x[:600], z[:600], zn[:600]))
    return out


# =============================================================== negatives: shuffling (C6)
def shuffle_batch(t: torch.Tensor, mode: str = "randperm", generator: torch.Generator | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Negatives by permuting the batch axis: `randperm` (the post; may keep some i -> i) or
    `roll` (shift by one: never a fixed point). Returns (shuffled tensor, permutation)."""
    b = t.shape[0]
    if mode == "randperm":
        perm = torch.randperm(b, generator=generator, device="cpu").to(t.device)
    elif mode == "roll":
        perm = torch.roll(torch.arange(b, device=t.device), 1)
    else:
        raise ValueError(f"unknown shuffle mode {mode!r}; choose 'randperm' or 'roll'")
    return t[perm], perm


def false_negative_rates(batch_sizes: Sequence[int], trials: int = 2000, seed: int = 0) -> dict:
    """Fraction of 'negative' pairs that are positives (fixed points of the permutation)."""
    require("false_negative_rates", positive={"batch_sizes": tuple(batch_sizes), "trials": trials}, whole=True)
    g = torch.Generator().manual_seed(seed)
    rate_perm, rate_roll = [], []
    for b in batch_sizes:
        fp = sum(int((torch.randperm(b, generator=g) == torch.arange(b)).sum()) for _ in range(trials))
        rate_perm.append(fp / (trials * b))
        rate_roll.append(float((torch.roll(torch.arange(b), 1) == torch.arange(b)).float().mean()))
    return {"batch": list(batch_sizes), "randperm": rate_perm, "roll": rate_roll,
            "theory": [1.0 / b for b in batch_sizes]}


# =============================================================== encoder and critics
def _block(cin: int, cout: int, pool: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """The post's CIFAR-10 encoder: 3 x [conv3x3-BN-LeakyReLU(0.2)-maxpool2] -> local map C(x)
    (4x4 for 32x32 input), 2 x [conv3x3-BN-LeakyReLU] -> global max-pool -> mu, log sigma^2."""

    def __init__(self, width: float = 1.0, z_dim: int = 256, in_ch: int = 3):
        super().__init__()
        require("Encoder", positive={"width": width})
        require("Encoder", positive={"z_dim": z_dim, "in_ch": in_ch}, whole=True)
        c = [max(4, int(round(w * width))) for w in (64, 128, 256, 256, 256)]
        self.local = nn.Sequential(_block(in_ch, c[0], True), _block(c[0], c[1], True), _block(c[1], c[2], True))
        self.top = nn.Sequential(_block(c[2], c[3], False), _block(c[3], c[4], False))
        self.mu = nn.Linear(c[4], z_dim)
        self.logvar = nn.Linear(c[4], z_dim)
        self.local_ch, self.z_dim = c[2], z_dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if x.ndim != 4:
            raise ValueError(f"Encoder expects (B, C, H, W) images, got shape {tuple(x.shape)}")
        c = self.local(x)
        h = self.top(c).amax(dim=(2, 3))  # global max pooling
        return c, self.mu(h), self.logvar(h)


class GlobalCritic(nn.Module):
    """T1: an MLP (3 hidden ReLU layers) on a concatenated pair, one logit per pair."""

    def __init__(self, in_dim: int, width: int = 256):
        super().__init__()
        require("GlobalCritic", positive={"in_dim": in_dim, "width": width}, whole=True)
        self.in_dim = in_dim
        self.net = nn.Sequential(nn.Linear(in_dim, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                                 nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 1))

    def forward(self, pair: torch.Tensor) -> torch.Tensor:
        if pair.ndim != 2 or pair.shape[1] != self.in_dim:
            raise ValueError(f"GlobalCritic expects (B, {self.in_dim}) pairs, got {tuple(pair.shape)}")
        return self.net(pair).squeeze(1)


class LocalCritic(nn.Module):
    """T2: the same MLP applied at every location = a stack of 1x1 convolutions."""

    def __init__(self, in_ch: int, width: int = 256):
        super().__init__()
        require("LocalCritic", positive={"in_ch": in_ch, "width": width}, whole=True)
        self.in_ch = in_ch
        self.net = nn.Sequential(nn.Conv2d(in_ch, width, 1), nn.ReLU(), nn.Conv2d(width, width, 1), nn.ReLU(),
                                 nn.Conv2d(width, width, 1), nn.ReLU(), nn.Conv2d(width, 1, 1))

    def forward(self, pair: torch.Tensor) -> torch.Tensor:
        if pair.ndim != 4 or pair.shape[1] != self.in_ch:
            raise ValueError(f"LocalCritic expects (B, {self.in_ch}, h, w) maps, got {tuple(pair.shape)}")
        return self.net(pair)


def global_pairs(z: torch.Tensor, c: torch.Tensor, perm: torch.Tensor, mode: str = "post",
                 other: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs of the global critic.
    post (author's code): positive [z, z], negative [z, z_perm];
    paper (DIM): positive [flatten C(x), z], negative [flatten C(x_perm), z].
    With two views (eq-01-views), `other` is the code of the second view and `c` its local map:
    the post's pair becomes [z_a, z_b] against [z_a, z_b perm]."""
    if mode == "post":
        o = z if other is None else other
        return torch.cat([z, o], 1), torch.cat([z, o[perm]], 1)
    if mode == "paper":
        flat = c.flatten(1)
        return torch.cat([flat, z], 1), torch.cat([flat[perm], z], 1)
    raise ValueError(f"unknown global critic input {mode!r}; choose 'post' or 'paper'")


def local_pairs(z: torch.Tensor, c: torch.Tensor, perm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Concat-and-convolve: broadcast z to every cell of C(x); positive [z, C(x)],
    negative [z, C(x_perm)] along channels. With two views, C is the other view's map."""
    zb = z[:, :, None, None].expand(-1, -1, c.shape[2], c.shape[3])
    return torch.cat([zb, c], 1), torch.cat([zb, c[perm]], 1)


def random_views(x: torch.Tensor, scale: tuple[float, float] = (0.35, 1.0), jitter: float = 0.4,
                 gray: float = 0.2, ratio: float = 4 / 3) -> torch.Tensor:
    """One random view per image of a batch in [-0.5, 0.5] (eq-01-views): a crop covering a
    fraction `scale` of the area with aspect ratio in [1/ratio, ratio], resized back bilinearly
    (reflected borders), a horizontal flip with probability 1/2, brightness, contrast and
    saturation each scaled by a factor in [1 - jitter, 1 + jitter], and greyscale with
    probability `gray`. Uses the global torch RNG, so checkpoint/resume replays it."""
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"random_views expects (B, 3, H, W) colour images, got shape {tuple(x.shape)}")
    require("random_views", positive={"scale": tuple(scale), "ratio": ratio}, nonneg={"jitter": jitter})
    require("random_views", unit={"scale": tuple(scale), "gray": gray})
    b, dev = x.shape[0], x.device
    u = lambda *shape: torch.rand(*shape, device=dev)  # noqa: E731
    area = scale[0] + (scale[1] - scale[0]) * u(b)
    aspect = torch.exp((u(b) * 2 - 1) * math.log(ratio))
    sx, sy = (area * aspect).sqrt().clamp(max=1), (area / aspect).sqrt().clamp(max=1)
    flip = torch.where(u(b) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3, device=dev)
    theta[:, 0, 0], theta[:, 1, 1] = sx * flip, sy
    theta[:, 0, 2], theta[:, 1, 2] = (u(b) * 2 - 1) * (1 - sx), (u(b) * 2 - 1) * (1 - sy)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    v = F.grid_sample(x + 0.5, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    factor = lambda: 1 + (u(b, 1, 1, 1) * 2 - 1) * jitter  # noqa: E731
    v = v * factor()                                             # brightness
    mean = v.mean((1, 2, 3), keepdim=True)
    v = (v - mean) * factor() + mean                             # contrast
    grey = (v * torch.tensor([0.299, 0.587, 0.114], device=dev)[None, :, None, None]).sum(1, keepdim=True)
    v = (v - grey) * factor() + grey                             # saturation
    v = torch.where(u(b, 1, 1, 1) < gray, grey.expand_as(v), v)
    return v.clamp(0, 1) - 0.5


# =============================================================== losses
def bce_mi_loss(pos_logits: torch.Tensor, neg_logits: torch.Tensor) -> torch.Tensor:
    """-(E_joint log sigma(T) + E_marg log(1 - sigma(T)))  (eq-01-bce), via stable softplus:
    -log sigma(t) = softplus(-t), -log(1 - sigma(t)) = softplus(t). Its minimum is 2 log 2 - 2 JS.
    Positive and negative logits come from the same batch and must have the same shape."""
    if pos_logits.shape != neg_logits.shape:
        raise ValueError(f"bce_mi_loss: positive logits {tuple(pos_logits.shape)} and negative logits "
                         f"{tuple(neg_logits.shape)} differ in shape; score one negative per positive pair")
    return F.softplus(-pos_logits).mean() + F.softplus(neg_logits).mean()


class InfoMax(nn.Module):
    """Encoder + global critic T1 + local critic T2 with the weights of (eq-01-total).
    views=1 is the post; views=2 pairs the code of one random view with the other view
    (eq-01-views)."""

    def __init__(self, width: float = 1.0, z_dim: int = 256, critic_width: int = 256,
                 alpha: float = 0.5, beta: float = 1.5, gamma: float = 0.01,
                 global_input: str = "post", shuffle: str = "randperm", image_size: int = 32,
                 views: int = 1, view_scale: tuple[float, float] = (0.35, 1.0), view_jitter: float = 0.4,
                 view_gray: float = 0.2):
        super().__init__()
        require("InfoMax", nonneg={"alpha": alpha, "beta": beta, "gamma": gamma})
        require("InfoMax", positive={"image_size": image_size}, whole=True)
        if image_size % 8:
            raise ValueError(f"InfoMax: image_size must be a multiple of 8 (three 2x2 pools), got {image_size}")
        if global_input not in GLOBAL_INPUTS:
            raise ValueError(f"unknown global critic input {global_input!r}; choose 'post' or 'paper'")
        if views not in (1, 2):
            raise ValueError(f"views must be 1 (the post) or 2 (two random views), got {views!r}")
        self.encoder = Encoder(width, z_dim)
        cl, hw = self.encoder.local_ch, (image_size // 8) ** 2
        g_in = 2 * z_dim if global_input == "post" else cl * hw + z_dim
        self.global_critic = GlobalCritic(g_in, critic_width)
        self.local_critic = LocalCritic(z_dim + cl, critic_width)
        self.alpha, self.beta, self.gamma = alpha, beta, gamma
        self.global_input, self.shuffle = global_input, shuffle
        self.views, self.view_args = views, (tuple(view_scale), view_jitter, view_gray)

    def losses(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.views == 2:  # (eq-01-views): both views in one pass, so BatchNorm sees both
            b = x.shape[0]
            xv = torch.cat([random_views(x, *self.view_args), random_views(x, *self.view_args)])
            c, mu, logvar = self.encoder(xv)
            z = reparameterise(mu, logvar)
            z_a, z_b, c_b = z[:b], z[b:], c[b:]
        else:
            c, mu, logvar = self.encoder(x)
            z_a = z_b = reparameterise(mu, logvar)
            c_b = c
        _, perm_g = shuffle_batch(z_a, self.shuffle)
        _, perm_l = shuffle_batch(z_a, self.shuffle)
        g_pos, g_neg = global_pairs(z_a, c_b, perm_g, self.global_input, other=z_b)
        l_pos, l_neg = local_pairs(z_a, c_b, perm_l)
        glob = bce_mi_loss(self.global_critic(g_pos), self.global_critic(g_neg))
        loc = bce_mi_loss(self.local_critic(l_pos), self.local_critic(l_neg))
        # (eq-01-kl-gauss) averaged over the code dimensions as in the post's code (over both
        # views when there are two): gamma = 0.01 weighs the textbook KL by 0.01 / z_dim
        kl = gaussian_kl(mu, logvar).mean()
        # (eq-01-total)
        total = self.alpha * glob + self.beta * loc + self.gamma * kl
        return {"loss": total, "global": glob, "local": loc, "kl": kl, "logvar": logvar.mean()}


def infomax_step(model: InfoMax, batch) -> tuple[torch.Tensor, dict]:
    """The Trainer's step function: one minibatch of images (labels ignored)."""
    x = batch[0] if isinstance(batch, (tuple, list)) else batch
    out = model.losses(x)
    return out["loss"], {k: v.detach() for k, v in out.items() if k != "loss"}


# =============================================================== data
def images_to_input(x_uint8: np.ndarray) -> torch.Tensor:
    """uint8 (N, 32, 32, 3) -> float (N, 3, 32, 32) in [-0.5, 0.5] as in the post."""
    from .data import to_float

    return to_float(x_uint8) - 0.5


def input_to_images(x: torch.Tensor) -> torch.Tensor:
    """The inverse of `images_to_input` (the post's figure code used (x+1)/2, a contrast bug)."""
    return (x + 0.5).clamp(0, 1)


@dataclass
class CifarData:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str


CIFAR_BATCH = 10_000  # images per training batch file of CIFAR-10 (canonical indices 0..49 999)


def load_cifar(cfg: Config) -> CifarData:
    """The profile's CIFAR-10 data: with `per_batch` = k, the first k images of each of the five
    training batches, chosen by their canonical record index, so that the bundled sample (k = 50),
    the offline subset (k = 900) and the full archive give the same images; and the first
    `n_test` test images. A source holding fewer of them is refused rather than silently used."""
    tr, te = load("cifar-10", "train"), load("cifar-10", "test", limit=cfg.n_test)
    x, y = tr.x, tr.y
    if cfg.per_batch is not None:
        idx = tr.canonical_index()
        keep = np.flatnonzero(idx % CIFAR_BATCH < cfg.per_batch)
        counts = np.bincount(idx[keep] // CIFAR_BATCH, minlength=5)
        if len(counts) != 5 or np.any(counts != cfg.per_batch):
            raise ValueError(f"cifar-10/train ({tr.source}) holds {counts.tolist()} of the first {cfg.per_batch} "
                             "images of the five batches: use a profile whose per_batch it holds (smoke: 50, "
                             "cpu: 900) or provide the full archive")
        x, y = x[keep], y[keep]
    if len(te) != cfg.n_test:
        raise ValueError(f"cifar-10/test ({te.source}) holds {len(te)} images, the profile asks for {cfg.n_test}")
    return CifarData(x, y, te.x, te.y, tr.source)


# =============================================================== training
@dataclass
class InfomaxRun:
    name: str
    alpha: float
    beta: float
    gamma: float
    global_input: str
    model: InfoMax
    history: History
    initial: dict[str, float]
    seconds: float
    epochs: list[dict[str, float]] = field(default_factory=list)
    snapshots: dict[int, dict] = field(default_factory=dict)  # epoch -> encoder state_dict
    views: int = 1
    seed: int = 0

    def passes(self, epoch: int) -> int:
        """Encoder passes after `epoch` epochs, in units of the training set (epochs x views)."""
        return epoch * self.views


def run_label(alpha: float, beta: float, gamma: float, global_input: str, views: int = 1) -> str:
    return (f"alpha={alpha:g}, beta={beta:g}, gamma={gamma:g}, global critic={global_input}"
            + (", two views" if views == 2 else ""))


def train_infomax(cfg: Config, x_train: torch.Tensor, alpha: float | None = None,
                  beta: float | None = None, gamma: float | None = None, global_input: str = "post",
                  epochs: int | None = None, snapshot_epochs: Sequence[int] = (), seed: int = 0,
                  views: int = 1, progress: bool = True) -> InfomaxRun:
    """Experiment 3: train encoder + critics jointly with Adam on (eq-01-total) through
    `dlbook.train.Trainer`, on the images themselves (views=1, the post) or on pairs of
    random views (views=2, eq-01-views). Logs every quarter epoch; `epochs` of the result
    holds per-epoch means; `snapshot_epochs` keeps copies of the encoder after those epochs."""
    a = cfg.alpha if alpha is None else alpha
    b = cfg.beta if beta is None else beta
    g = cfg.gamma if gamma is None else gamma
    n_ep = cfg.epochs if epochs is None else epochs
    require("train_infomax", positive={"epochs": n_ep}, whole=True)
    require("train_infomax", nonneg={"alpha": a, "beta": b, "gamma": g})
    if x_train.ndim != 4 or len(x_train) < cfg.batch_size:
        raise ValueError(f"train_infomax: need (N, 3, H, W) images with N >= batch_size ({cfg.batch_size}), "
                         f"got shape {tuple(x_train.shape)}")
    torch.manual_seed(seed)
    model = InfoMax(cfg.width, cfg.z_dim, cfg.critic_width, a, b, g, global_input,
                    image_size=x_train.shape[-1], views=views, view_scale=cfg.view_scale,
                    view_jitter=cfg.view_jitter, view_gray=cfg.view_gray)
    loader = ArrayLoader(x_train, cfg.batch_size, shuffle=True, seed=seed)
    spe = len(loader)
    with torch.no_grad():  # the losses at initialisation (C7), on the first minibatch
        model.train()
        first = next(iter(loader))
        initial = {k: float(v) for k, v in model.losses(first).items()}
    snaps: dict[int, dict] = {}

    def keep(trainer, step, _metrics):
        if step % spe == 0 and step // spe in snapshot_epochs:
            snaps[step // spe] = {k: v.detach().cpu().clone()
                                  for k, v in trainer.model.encoder.state_dict().items()}

    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    every = max(d for d in range(1, max(1, spe // 4) + 1) if spe % d == 0)  # divides an epoch
    tr = Trainer(model, opt, infomax_step, log_every=every, progress=progress, callbacks=[keep],
                 desc=f"gamma={g:g} {global_input}" + (" 2 views" if views == 2 else "") + f" seed {seed}")
    t0 = time.perf_counter()
    hist = tr.fit(loader, steps=n_ep * spe)
    secs = time.perf_counter() - t0
    per_epoch = []
    steps = np.asarray(hist.steps)
    for e in range(n_ep):
        m = (steps > e * spe) & (steps <= (e + 1) * spe)
        per_epoch.append({k: float(np.nanmean(np.asarray(v)[m])) for k, v in hist.metrics.items()})
    return InfomaxRun(run_label(a, b, g, global_input, views), a, b, g, global_input, model, hist, initial,
                      secs, per_epoch, snaps, views, seed)


def seeds_of(cfg: Config, seed: int = 0) -> list[int]:
    """The seeds every training experiment of the profile runs with."""
    return [seed + i for i in range(cfg.seeds)]


def train_seeds(cfg: Config, x_train: torch.Tensor, views: int = 1, seed: int = 0,
                progress: bool = True) -> list[InfomaxRun]:
    """Experiments 3 and 6: the post's recipe (views=1, `cfg.epochs` epochs) or the two-view
    run (views=2, `cfg.view_epochs` epochs) once per seed, with encoder snapshots every
    `cfg.knn_every` epochs' worth of encoder passes and at the last epoch (and, for the post's
    recipe, at `cfg.sweep_epochs` and at `cfg.equal_pass_epochs`, the two-view run's passes)."""
    if views not in (1, 2):
        raise ValueError(f"train_seeds: views must be 1 or 2, got {views!r}")
    epochs = cfg.epochs if views == 1 else cfg.view_epochs
    snap = set(range(cfg.knn_every // views, epochs + 1, cfg.knn_every // views)) | {epochs}
    if views == 1:
        snap |= {cfg.sweep_epochs, cfg.equal_pass_epochs}
    return [train_infomax(cfg, x_train, epochs=epochs, snapshot_epochs=sorted(snap), seed=s, views=views,
                          progress=progress) for s in seeds_of(cfg, seed)]


def run_sweep(cfg: Config, x_train: torch.Tensor, seed: int = 0, progress: bool = True) -> list[InfomaxRun]:
    """Experiment 4: every (gamma, global input) of `cfg.sweep` with the post's alpha and beta,
    `cfg.sweep_epochs` long, once per seed (the gamma sweep of C8/C9 and the paper-critic run)."""
    return [train_infomax(cfg, x_train, gamma=g, global_input=gi, epochs=cfg.sweep_epochs, seed=s,
                          progress=progress) for s in seeds_of(cfg, seed) for g, gi in cfg.sweep]


def encoder_from_snapshot(cfg: Config, state: dict) -> Encoder:
    enc = Encoder(cfg.width, cfg.z_dim)
    enc.load_state_dict(state)
    return enc.to(default_device()).eval()


def random_encoder(cfg: Config, seed: int = 0) -> Encoder:
    """The same architecture, freshly initialised (the baseline of C10)."""
    torch.manual_seed(seed + 12345)
    return Encoder(cfg.width, cfg.z_dim).to(default_device()).eval()


# =============================================================== features
@torch.no_grad()
def encode(encoder: Encoder, x: torch.Tensor, batch: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """mu(x) and log sigma^2(x) in eval mode (BatchNorm with running statistics)."""
    was = encoder.training
    encoder.eval()
    dev = next(encoder.parameters()).device
    mus, lvs = [], []
    for s in range(0, len(x), batch):
        _, mu, lv = encoder(x[s:s + batch].to(dev))
        mus.append(mu.cpu())
        lvs.append(lv.cpu())
    encoder.train(was)
    return torch.cat(mus).numpy(), torch.cat(lvs).numpy()


@torch.no_grad()
def encode_local(encoder: Encoder, x: torch.Tensor, batch: int = 500) -> np.ndarray:
    """The flattened local feature map C(x) in eval mode."""
    was = encoder.training
    encoder.eval()
    dev = next(encoder.parameters()).device
    out = torch.cat([encoder.local(x[s:s + batch].to(dev)).flatten(1).cpu() for s in range(0, len(x), batch)])
    encoder.train(was)
    return out.numpy()


PIXEL_KINDS = ("raw", "centred")


def pixel_features(x_uint8: np.ndarray, kind: str = "raw") -> np.ndarray:
    """Raw pixels as features, flattened: `raw` (in [-0.5, 0.5] as the encoder sees them) or
    `centred` (each image minus its own mean over all pixels and channels: brightness removed,
    colour kept). Dividing by the image's own spread as well changes no cosine neighbour."""
    if kind not in PIXEL_KINDS:
        raise ValueError(f"unknown pixel preprocessing {kind!r}; choose one of {PIXEL_KINDS}")
    x = images_to_input(x_uint8).numpy().astype(np.float64)
    if kind == "centred":
        x = x - x.mean(axis=(1, 2, 3), keepdims=True)
    return x.reshape(len(x), -1).astype(np.float32)


def evaluate_features(f_train: np.ndarray, y_train: np.ndarray, f_test: np.ndarray, y_test: np.ndarray,
                      k: int = 10, probe: bool = True) -> dict:
    """Test queries against the training bank: top-k cosine label agreement, k-NN accuracy
    (cosine, majority vote) and a linear probe; with the per-query vectors (`agree_q`,
    `knn_ok`, `probe_ok`) that paired comparisons on the same test images need."""
    agree = metrics.knn_label_agreement(f_train, y_train, f_test, y_test, k, "cosine", per_example=True)
    knn_ok = metrics.knn_correct(f_train, y_train, f_test, y_test, k, "cosine")
    out = {"agreement": float(agree.mean()), "knn_acc": float(knn_ok.mean()), "agree_q": agree, "knn_ok": knn_ok}
    if probe:
        ok = metrics.linear_probe(f_train, y_train, f_test, y_test, per_example=True)
        out.update(probe_acc=float(ok.mean()), probe_ok=ok)
    return out


def compare_features(cfg: Config, data: CifarData, encoders: dict, seed: int = 0,
                     probe: bool = True) -> dict[str, dict]:
    """Experiment 5: label agreement, k-NN accuracy and linear probe for each entry: an
    encoder (its mu(x), with the statistics of the codes on the training set), (encoder, "local")
    for its flattened local map C(x), None for raw pixels or ("pixels", kind) for preprocessed
    pixels (`pixel_features`)."""
    xtr, xte = images_to_input(data.x_train), images_to_input(data.x_test)
    out = {}
    for name, enc in encoders.items():
        stats = {}
        if enc is None:
            enc = ("pixels", "raw")
        if isinstance(enc, tuple) and enc[0] == "pixels":
            ftr, fte = pixel_features(data.x_train, enc[1]), pixel_features(data.x_test, enc[1])
        elif isinstance(enc, tuple):
            if enc[1] != "local":
                raise ValueError(f"unknown feature layer {enc[1]!r}; use (encoder, 'local')")
            ftr, fte = encode_local(enc[0], xtr), encode_local(enc[0], xte)
        else:
            ftr, lv = encode(enc, xtr)
            fte, _ = encode(enc, xte)
            stats = code_statistics(ftr, lv, seed=seed)
        out[name] = {**evaluate_features(ftr, data.y_train, fte, data.y_test, cfg.knn_k, probe), **stats}
    return out


def pixel_baselines(cfg: Config, data: CifarData) -> dict:
    """Every simple pixel baseline: each preprocessing of `PIXEL_KINDS` with the chapter's
    k (all three metrics) and with 2k neighbours (k-NN accuracy). Returns the scores by name
    and, for each metric, the name of the strongest (chosen on the test set itself, which can
    only favour the baseline)."""
    scores = compare_features(cfg, data, {f"pixels, {kind}": ("pixels", kind) for kind in PIXEL_KINDS})
    for kind in PIXEL_KINDS:
        ftr, fte = pixel_features(data.x_train, kind), pixel_features(data.x_test, kind)
        ok = metrics.knn_correct(ftr, data.y_train, fte, data.y_test, 2 * cfg.knn_k, "cosine")
        scores[f"pixels, {kind}, k={2 * cfg.knn_k}"] = {"knn_acc": float(ok.mean()), "knn_ok": ok}
    best = {m: max((n for n in scores if m in scores[n]), key=lambda n: scores[n][m])
            for m in ("agreement", "knn_acc", "probe_acc")}
    return {"scores": scores, "best": best}


def margin(a: Sequence[np.ndarray], b: Sequence[np.ndarray] | np.ndarray) -> dict[str, float]:
    """The difference in points between two scores measured on the same test queries: `a` is
    one per-query vector per seed, `b` one per seed or a single vector (a deterministic
    baseline). Returns the mean over seeds and a standard error that adds the seed-to-seed
    variance of the difference (divided by the number of seeds) and the sampling variance of
    the test queries (the per-query differences, averaged over seeds, divided by their number)."""
    A = np.stack([np.asarray(v, dtype=np.float64) for v in a])
    B = np.asarray(b, dtype=np.float64)
    if B.ndim == 1 and B.shape[0] == A.shape[1]:
        B = np.broadcast_to(B, A.shape)
    if A.shape != B.shape:
        raise ValueError(f"margin: {A.shape} vs {B.shape}: the same seeds and the same test queries are needed")
    d = A - B
    per_seed = d.mean(1)
    s, n = d.shape
    var = (per_seed.var(ddof=1) / s if s > 1 else 0.0) + d.mean(0).var(ddof=1) / n
    return {"mean": 100 * float(per_seed.mean()), "se": 100 * math.sqrt(var), "seeds": s,
            "per_seed": [100 * float(v) for v in per_seed]}


FEATURE_COLUMNS = (("agreement", "top-10 label agreement", 3), ("knn_acc", "10-NN accuracy", 3),
                   ("probe_acc", "linear probe", 3), ("agg_var", "aggregate var", 2),
                   ("mean_logvar", "mean log sigma^2", 2), ("abs_mean_mu", "abs mean mu", 3))


def feature_table(scores: dict, names: Sequence[str]) -> str:
    """Rows `names` of feature scores as a Markdown table. An entry is one score dict or a list
    of them (one per seed), shown as mean ± standard deviation over seeds; rows without a
    column show a dash."""
    from .nb import md_table

    def cell(entry, key, d):
        runs = entry if isinstance(entry, list) else [entry]
        vals = [r[key] for r in runs if key in r and np.isfinite(r[key])]
        if not vals:
            return "-"
        m, sd = mean_sd(vals)
        return f"{m:.{d}f}" + (f" ± {sd:.{d}f}" if len(vals) > 1 else "")

    rows = [[n + (f" ({len(scores[n])} seeds)" if isinstance(scores[n], list) and len(scores[n]) > 1 else "")]
            + [cell(scores[n], k, d) for k, _, d in FEATURE_COLUMNS] for n in names]
    return md_table(["features"] + [h for _, h, _ in FEATURE_COLUMNS], rows)


def knn_by_epoch(cfg: Config, data: CifarData, run: InfomaxRun) -> dict[int, float]:
    """k-NN accuracy (k = cfg.knn_k, cosine, test queries against the training bank) of mu(x)
    from each encoder snapshot of a run, keyed by epoch."""
    xtr, xte = images_to_input(data.x_train), images_to_input(data.x_test)
    out = {}
    for ep, state in sorted(run.snapshots.items()):
        enc = encoder_from_snapshot(cfg, state)
        out[ep] = metrics.knn_accuracy(encode(enc, xtr)[0], data.y_train, encode(enc, xte)[0], data.y_test,
                                       cfg.knn_k, "cosine")
    return out


def retrieval_rows(feats: np.ndarray, queries: Sequence[int], k: int = 10, metric: str = "cosine"
                   ) -> np.ndarray:
    """Indices (Q, k) of each query's k nearest images (itself first) in feature space."""
    return metrics.nearest_neighbours(feats, feats[list(queries)], k, metric)[0]


# =============================================================== figures
def retrieval_figure(images: np.ndarray, labels: np.ndarray, rows: Sequence[Sequence[int]],
                     row_names: Sequence[str] = (), class_names: Sequence[str] = (), title: str = "",
                     tile: float = 0.62):
    """Rows of images (a query followed by its neighbours, the query framed in red), each row
    tiled by `dlbook.plots.make_grid`; each tile's label is green when it matches the first
    image of its row, and each row says which fraction of the neighbours shares the query's label."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from .plots import make_grid

    rows = [list(map(int, r)) for r in rows]
    k = max(len(r) for r in rows)
    h, w = images.shape[1:3]
    pad = 2
    left = 1.5 if row_names else 0.7
    head = 0.45 if title else 0.2   # inches above the first row: the title and the first row's labels
    height = head + tile * 1.3 * len(rows)
    fig, axes = plt.subplots(len(rows), 1, figsize=(left + tile * k, height), squeeze=False)
    for ax, row, r in zip(axes[:, 0], rows, range(len(rows))):
        ax.imshow(make_grid(images[row], nrow=k, padding=pad), interpolation="nearest")
        ax.set_axis_off()
        ax.add_patch(Rectangle((pad - 1, pad - 1), w + 1, h + 1, fill=False, ec="tab:red", lw=1.5))
        for c, j in enumerate(row):
            name = class_names[labels[j]] if len(class_names) else str(labels[j])
            ax.text(pad + c * (w + pad) + w / 2, -1, name, ha="center", va="bottom", fontsize=7,
                    color="tab:green" if labels[j] == labels[row[0]] else "0.35", clip_on=False)
        same = float(np.mean(labels[row[1:]] == labels[row[0]])) if len(row) > 1 else float("nan")
        text = (row_names[r] + "\n" if row_names else "") + f"{same:.0%} same"
        ax.text(-3, pad + h / 2, text, ha="right", va="center", fontsize=8, clip_on=False)
    if title:
        fig.suptitle(title, fontsize=10, y=1 - 0.05 / height, va="top")
    fig.subplots_adjust(left=left / (left + tile * k), right=0.99, top=1 - head / height, bottom=0.01,
                        hspace=0.35)
    return fig


def toy_figure(res: dict, k: int):
    """One panel set per correlation: joint vs shuffled samples, and the MLP critic's T(x, z)
    next to the true log-ratio log p(x,z)/(p(x)p(z))."""
    import matplotlib.pyplot as plt

    rho = res["rho"][k]
    x, z, zn = res["samples"][k]
    fig, ax = plt.subplots(1, 3, figsize=(10, 3.3), gridspec_kw={"wspace": 0.45})
    ax[0].scatter(x, zn, s=4, alpha=0.5, c="tab:orange", label="shuffled (negatives)")
    ax[0].scatter(x, z, s=4, alpha=0.5, c="tab:blue", label="joint (positives)")
    ax[0].set(xlim=(-3.5, 3.5), ylim=(-3.5, 3.5), xlabel="x", ylabel="z", title=f"samples, rho = {rho:g}")
    ax[0].legend(loc="upper left", fontsize=7, markerscale=3)
    g = np.linspace(-3, 3, 121)
    gx, gz = np.meshgrid(g, g)
    with torch.no_grad():
        t = res["critics"][k](torch.as_tensor(gx.ravel(), dtype=torch.float32),
                              torch.as_tensor(gz.ravel(), dtype=torch.float32)).numpy().reshape(gx.shape)
    r2 = 1 - rho * rho
    true = -0.5 * math.log(r2) - (gx ** 2 - 2 * rho * gx * gz + gz ** 2) / (2 * r2) + (gx ** 2 + gz ** 2) / 2
    lv = np.linspace(-4, 4, 17)
    for a, f, title in ((ax[1], t, "learned critic T(x, z)"), (ax[2], true, "true log-ratio")):
        cs = a.contourf(gx, gz, np.clip(f, -4, 4), levels=lv, cmap="RdBu_r")
        a.set(xlabel="x", ylabel="z", title=title)
        a.grid(False)
    fig.colorbar(cs, ax=ax[1:], shrink=0.85)
    fig.suptitle(f"true I = {res['true'][k]:.3f} nats;  plug-in estimates E_joint[T]: "
                 f"quadratic {res['quad'][k]:.3f}, MLP {res['mlp'][k]:.3f}", fontsize=10, y=1.02)
    return fig


def run_figure(run: InfomaxRun, scores: dict | None = None):
    """A summary of one precomputed run for the dropdown: the three loss terms per logged
    step and the mean log sigma^2, with its feature scores in the title."""
    import matplotlib.pyplot as plt

    h = run.history
    fig, ax = plt.subplots(1, 2, figsize=(9.5, 3.3))
    for key, c in (("global", "tab:blue"), ("local", "tab:orange"), ("kl", "tab:green")):
        ax[0].plot(h.steps, h[key], c=c, label=f"{key} term")
    ax[0].axhline(2 * LOG2, ls="--", c="0.5", lw=1, label="2 log 2")
    ax[0].set(xlabel="step", ylabel="loss term", ylim=(0, max(2.0, min(6.0, max(h["kl"]) * 1.05))))
    ax[0].legend(fontsize=8)
    ax[1].plot(h.steps, h["logvar"], c="tab:purple")
    ax[1].set(xlabel="step", ylabel="mean log sigma^2")
    t = f"{run.name}, seed {run.seed}"
    if scores:
        probe = f", probe {scores['probe_acc']:.3f}" if "probe_acc" in scores else ""
        t += (f"\nk-NN acc {scores['knn_acc']:.3f}, top-10 agreement {scores['agreement']:.3f}{probe}, "
              f"aggregate var {scores.get('agg_var', float('nan')):.2f}")
    fig.suptitle(t, fontsize=9)
    fig.tight_layout()
    return fig


# =============================================================== several seeds
def compare_seeds(cfg: Config, data: CifarData, entries: dict[str, Sequence],
                  probe: bool = True) -> dict[str, list[dict]]:
    """`compare_features` for entries holding one encoder (or (encoder, "local")) per seed:
    {name: [scores of seed 0, seed 1, ...]}."""
    return {name: [compare_features(cfg, data, {name: e}, seed=i, probe=probe)[name] for i, e in enumerate(encs)]
            for name, encs in entries.items()}


def knn_by_passes(cfg: Config, data: CifarData, runs: Sequence[InfomaxRun]) -> dict[int, list[float]]:
    """k-NN accuracy of the snapshots of several runs (one per seed), keyed by encoder passes
    (epochs x views, in units of the training set): {passes: [accuracy of each run]}."""
    out: dict[int, list[float]] = {}
    for run in runs:
        for ep, acc in knn_by_epoch(cfg, data, run).items():
            out.setdefault(run.passes(ep), []).append(acc)
    return dict(sorted(out.items()))


def per_epoch(runs: Sequence[InfomaxRun], key: str) -> np.ndarray:
    """The per-epoch means of one logged quantity for several runs: an array (runs, epochs)."""
    return np.array([[e[key] for e in r.epochs] for r in runs])
