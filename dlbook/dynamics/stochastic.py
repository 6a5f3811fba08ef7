"""Stochastic dynamics: Langevin and Kramers simulations, the distance of a histogram to a
stationary law, and the scaling of minibatch-gradient noise with the batch size."""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

Array = np.ndarray


def langevin(grad: Callable[[Array], Array], x0: Array, sigma: float, h: float, n: int,
             rng: np.random.Generator, burn: int = 0, every: int = 1) -> Array:
    """Euler-Maruyama for d theta = -grad L dt + sigma dW  (eq-08-langevin), vectorised over
    chains. Returns the states after `burn` steps, every `every` steps, shape (k, chains)."""
    x = np.array(x0, dtype=np.float64)
    s = sigma * math.sqrt(h)
    keep = []
    for k in range(n):
        x = x - h * grad(x) + s * rng.standard_normal(x.shape)
        if k + 1 > burn and (k + 1 - burn) % every == 0:
            keep.append(x.copy())
    return np.array(keep)


def kramers(grad: Callable[[Array], Array], x0: Array, lam: float, sigma: float, h: float, n: int,
            rng: np.random.Generator, burn: int = 0, every: int = 1) -> tuple[Array, Array]:
    """Semi-implicit Euler-Maruyama for the Kramers (underdamped Langevin) system
    d theta = eta dt,  d eta = (-lam eta - grad L) dt + sigma dW  (eq-08-kramers)."""
    x = np.array(x0, dtype=np.float64)
    eta = np.zeros_like(x)
    s = sigma * math.sqrt(h)
    xs, es = [], []
    for k in range(n):
        eta = eta + h * (-lam * eta - grad(x)) + s * rng.standard_normal(x.shape)
        x = x + h * eta
        if k + 1 > burn and (k + 1 - burn) % every == 0:
            xs.append(x.copy())
            es.append(eta.copy())
    return np.array(xs), np.array(es)


def tv_to_density(samples: Array, logdensity: Callable[[Array], Array], lo: float, hi: float,
                  bins: int = 60) -> float:
    """Total-variation distance between the histogram of `samples` on [lo, hi] and the density
    exp(logdensity) normalised on the same bins (fine quadrature within each bin)."""
    edges = np.linspace(lo, hi, bins + 1)
    counts, _ = np.histogram(np.ravel(samples), bins=edges)
    p = counts / counts.sum()
    fine = np.linspace(lo, hi, bins * 50 + 1)
    mid = 0.5 * (fine[1:] + fine[:-1])
    w = np.exp(logdensity(mid) - np.max(logdensity(mid)))
    q = w.reshape(bins, 50).sum(1)
    q = q / q.sum()
    return 0.5 * float(np.abs(p - q).sum())


def gradient_noise_scaling(features: Array, labels: Array, theta: Array,
                           batch_sizes: Sequence[int], draws: int, seed: int = 0) -> dict:
    """Softmax regression at a fixed theta: per-example gradients g_i (eq-08-sgdnoise); the
    trace of the covariance of the mean of B examples drawn with replacement, estimated from
    `draws` minibatches, times B, for each B; and the per-example variance tr Cov(g_i)."""
    X = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    n, d = X.shape
    k = theta.shape[0]
    logits = X @ theta.T
    logits -= logits.max(1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(1, keepdims=True)
    p[np.arange(n), y] -= 1.0
    G = (p[:, :, None] * X[:, None, :]).reshape(n, k * d)  # per-example gradients of the CE loss
    mu = G.mean(0)
    Gc = G - mu
    per_example = float((Gc ** 2).sum(1).mean())
    rng = np.random.default_rng(seed)
    out = {"per_example": per_example}
    for B in batch_sizes:
        idx = rng.integers(0, n, size=(draws, B))
        counts = np.zeros((draws, n))
        np.add.at(counts, (np.repeat(np.arange(draws), B), idx.ravel()), 1.0)
        means = counts @ Gc / B  # minibatch mean minus the full mean
        out[B] = float((means ** 2).sum(1).mean()) * B
    return out


def mnist_features(n: int = 1000, pool: int = 4) -> tuple[Array, Array]:
    """The first n MNIST training images, average-pooled by `pool`, scaled to [0, 1], with a
    bias column (float64); identical whether the real files or the bundled sample are used."""
    import warnings

    from .. import data

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = data.load("mnist", "train", limit=n)
    x = ds.x.astype(np.float64) / 255.0
    s = 28 // pool
    x = x[:, :s * pool, :s * pool].reshape(len(x), s, pool, s, pool).mean((2, 4)).reshape(len(x), -1)
    return np.hstack([x, np.ones((len(x), 1))]), ds.y

