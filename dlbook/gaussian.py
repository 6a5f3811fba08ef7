"""Diagonal-Gaussian codes against the standard normal prior: the closed-form KL, the
reparameterised sample, a Monte-Carlo estimate of the same KL, the linear-Gaussian channel whose
information terms have closed forms, the Gaussian total correlation and the statistics of a set
of codes. Chapters 01 (Deep INFOMAX) and 07 (VAE and the information bottleneck) both use them.

Everything works on torch tensors (any dtype) except where stated; information is in nats.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .config import require


def _same_shape(where: str, mu: torch.Tensor, logvar: torch.Tensor) -> None:
    if mu.shape != logvar.shape:
        raise ValueError(f"{where}: mu {tuple(mu.shape)} and logvar {tuple(logvar.shape)} must have the "
                         "same shape (one mean and one log-variance per code coordinate)")


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) coordinate by coordinate: a tensor of the shape of `mu`.
    Sum over the last axis for the KL of the diagonal Gaussian, as in (eq-07-kl) and
    (eq-01-kl-gauss); Deep INFOMAX's author averages it instead."""
    _same_shape("gaussian_kl", mu, logvar)
    return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0)  # (eq-07-kl), (eq-01-kl-gauss): one term per k


def reparameterise(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor | None = None,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """z = mu + exp(logvar / 2) * eps with eps ~ N(0, I)  (eq-07-reparam, eq-01-reparam).
    Pass `eps` to fix the noise, or a `generator` to draw it reproducibly."""
    _same_shape("reparameterise", mu, logvar)
    if eps is None:
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
    elif mu.ndim and tuple(eps.shape[-mu.ndim:]) != tuple(mu.shape):
        raise ValueError(f"reparameterise: eps {tuple(eps.shape)} does not end with the shape of mu {tuple(mu.shape)}")
    return mu + torch.exp(0.5 * logvar) * eps  # (eq-07-reparam)


def kl_monte_carlo(mu: torch.Tensor, logvar: torch.Tensor, n: int, seed: int = 0,
                   chunk: int = 50_000) -> tuple[float, float]:
    """Monte-Carlo estimate of the KL of one diagonal Gaussian (vectors `mu`, `logvar`) against
    N(0, I): the mean of log p(z) - log q(z) over `n` reparameterised draws, in float64, and its
    standard error. The closed form `gaussian_kl(mu, logvar).sum()` must lie within a few
    standard errors of it."""
    require("kl_monte_carlo", positive={"n": n, "chunk": chunk}, whole=True)
    mu, logvar = torch.as_tensor(mu, dtype=torch.float64), torch.as_tensor(logvar, dtype=torch.float64)
    _same_shape("kl_monte_carlo", mu, logvar)
    if mu.ndim != 1:
        raise ValueError(f"kl_monte_carlo: one Gaussian at a time (1-D mu), got shape {tuple(mu.shape)}")
    g = torch.Generator().manual_seed(int(seed))
    parts = []
    for s in range(0, n, chunk):
        eps = torch.randn(min(chunk, n - s), len(mu), generator=g, dtype=torch.float64)
        z = reparameterise(mu, logvar, eps)
        parts.append((0.5 * (z ** 2 - eps ** 2 - logvar)).sum(-1))  # log p(z) - log q(z); 2 pi cancels
    r = torch.cat(parts)
    return float(r.mean()), float(r.std() / math.sqrt(len(r)))


def linear_gaussian_terms(a, s) -> dict[str, np.ndarray | float]:
    """The linear-Gaussian channel x ~ N(0, 1), z | x ~ N(a x, s^2), prior q = N(0, 1), where
    p(z) = N(0, a^2 + s^2). Closed forms of I(X;Z) ("mi"), E_x KL(p(z|x) || q) ("E_kl") and
    KL(p(z) || q) ("kl_agg"); the identity E_kl = mi + kl_agg (eq-07-mi-identity,
    eq-01-prior-identity) holds exactly. Works elementwise on arrays (floats in, floats out)."""
    a_, s_ = np.asarray(a, dtype=np.float64), np.asarray(s, dtype=np.float64)
    if np.any(s_ <= 0) or not np.all(np.isfinite(a_)):
        raise ValueError("linear_gaussian_terms: the noise s must be > 0 and the gain a finite")
    v = a_ ** 2 + s_ ** 2
    out = {"mi": 0.5 * np.log1p(a_ ** 2 / s_ ** 2),
           "E_kl": 0.5 * (v - 1.0 - np.log(s_ ** 2)),
           "kl_agg": 0.5 * (v - 1.0 - np.log(v))}
    scalar = np.ndim(a) == 0 and np.ndim(s) == 0
    return {k: float(x) for k, x in out.items()} if scalar else out


def total_correlation(z) -> float:
    """Gaussian total correlation TC_G = 1/2 (sum_k log Sigma_kk - log det Sigma) of the sample
    covariance of codes z (N, K), N > K  (eq-07-tc): zero for uncorrelated coordinates."""
    z = np.asarray(z.detach().cpu() if isinstance(z, torch.Tensor) else z, dtype=np.float64)
    if z.ndim != 2 or z.shape[0] <= z.shape[1]:
        raise ValueError(f"total_correlation: need (N, K) codes with N > K, got shape {z.shape}")
    cov = np.cov(z, rowvar=False)
    _, logdet = np.linalg.slogdet(cov)
    return float(0.5 * (np.log(np.diag(cov)).sum() - logdet))  # (eq-07-tc)


def code_statistics(mu, logvar, seed: int = 0) -> dict[str, float]:
    """Statistics of the codes of a data set under a diagonal Gaussian encoder, from the means
    `mu` and log-variances `logvar` (N, K): the prior diagnostics |mean mu| ("abs_mean_mu",
    averaged over coordinates), the aggregate variance Var[mu] + E[sigma^2] ("agg_var", averaged
    over coordinates), the mean log sigma^2, the overall mean and standard deviation of mu (the
    post's printout), and, on one sample z ~ p(z|x) per row, the Gaussian total correlation
    ("tc", nan when N <= K), the mean absolute off-diagonal correlation and E|z|^2 / K."""
    to_np = lambda a: np.asarray(a.detach().cpu() if isinstance(a, torch.Tensor) else a, dtype=np.float64)
    mu, logvar = to_np(mu), to_np(logvar)
    if mu.shape != logvar.shape or mu.ndim != 2:
        raise ValueError(f"code_statistics: mu and logvar must both be (N, K), got {mu.shape} and {logvar.shape}")
    z = mu + np.exp(0.5 * logvar) * np.random.default_rng(seed).standard_normal(mu.shape)
    n, k = z.shape
    if k > 1 and n > 2:
        c = np.corrcoef(z, rowvar=False)
        corr = float(np.abs(c[~np.eye(k, dtype=bool)]).mean())
    else:
        corr = float("nan")
    return {"abs_mean_mu": float(np.abs(mu.mean(0)).mean()),
            "agg_var": float((mu.var(0) + np.exp(logvar).mean(0)).mean()),
            "mean_logvar": float(logvar.mean()),
            "feature_mean": float(mu.mean()), "feature_std": float(mu.std()),
            "tc": total_correlation(z) if n > k else float("nan"),
            "mean_abs_corr": corr,
            "sq_norm": float((z ** 2).sum(1).mean() / k)}
