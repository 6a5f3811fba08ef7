"""Chapter 01, the derivation side: discrete identities (C1-C4), the Gaussian toy with its
quadratic and MLP critics (C5), and negatives by shuffling the batch (C6). Equation labels
refer to notebooks/01_infomax.md."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..config import require

LOG2 = math.log(2.0)


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


# =============================================================== the estimator (eq-01-bce)
def bce_mi_loss(pos_logits: torch.Tensor, neg_logits: torch.Tensor) -> torch.Tensor:
    """-(E_joint log sigma(T) + E_marg log(1 - sigma(T)))  (eq-01-bce), via stable softplus:
    -log sigma(t) = softplus(-t), -log(1 - sigma(t)) = softplus(t). Its minimum is 2 log 2 - 2 JS.
    Positive and negative logits come from the same batch and must have the same shape."""
    if pos_logits.shape != neg_logits.shape:
        raise ValueError(f"bce_mi_loss: positive logits {tuple(pos_logits.shape)} and negative logits "
                         f"{tuple(neg_logits.shape)} differ in shape; score one negative per positive pair")
    return F.softplus(-pos_logits).mean() + F.softplus(neg_logits).mean()


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

