"""Norms of layer matrices and spectral normalisation (chapter 02, sections 3-11).

The kernel reshaping, power iteration (the post's from-scratch form and the persistent form),
the operator norm of a convolution, the gradient of the spectral norm and of a spectrally
normalised weight, the product bound, the empirical Lipschitz quotient, the exact empirical W1
and its 1-D Kantorovich-Rubinstein dual; spectral normalisation by the exact SVD inside the
forward pass, the post-update projection of the post's Keras code, and BatchNorm's gain.
Matrices follow PyTorch's layout: a Linear weight is (out, in), so ``u`` lives in the output
space and ``v`` in the input space.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import parametrize

from .. import gan
from ..config import require

# ======================================================================== 1. norms of layer matrices


def as_matrix(w: torch.Tensor, layout: str = "torch") -> torch.Tensor:
    """A kernel as a matrix. ``torch``: (C_out, C_in k_h k_w), as PyTorch's spectral_norm and
    Miyato et al.; ``keras``: (k_h k_w C_in, C_out), as the post's helper (Keras kernels are
    (k_h, k_w, C_in, C_out)). The two are transposes up to a permutation of rows, so they have
    the same singular values. A 1-D tensor (a BatchNorm gamma) is a 1 x C matrix."""
    if layout not in ("torch", "keras"):
        raise ValueError(f"as_matrix: layout must be 'torch' or 'keras', got {layout!r}")
    if w.ndim == 1:
        return w[None, :]
    if w.ndim < 2:
        raise ValueError(f"as_matrix: need a vector, a matrix or a conv kernel, got shape {tuple(w.shape)}")
    if layout == "torch":
        return w.reshape(w.shape[0], -1)
    return w.permute(*range(2, w.ndim), 1, 0).reshape(-1, w.shape[0]) if w.ndim > 2 else w.T


class PowerIteration(NamedTuple):
    sigma: torch.Tensor  # the estimate u^T W v
    u: torch.Tensor  # unit, output space
    v: torch.Tensor  # unit, input space


def _unit(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    return x / x.norm().clamp_min(eps)


def power_iteration(W: torch.Tensor, iters: int = 1, v: torch.Tensor | None = None) -> PowerIteration:
    """(eq-02-power): from a start vector ``v`` of the input space (default: all ones, as the
    post's code), ``iters`` rounds of u <- W v / ||W v||, v <- W^T u / ||W^T u||; the estimate
    is u^T W v = ||W^T u||, which never exceeds sigma_1 (unit u and v). Differentiable: with
    ``v`` detached the gradient flows through the iterations, as in the post's helper."""
    require("power_iteration", positive={"iters": iters}, whole=True)
    if W.ndim != 2:
        raise ValueError(f"power_iteration: W must be a matrix, got shape {tuple(W.shape)}; use as_matrix")
    v = _unit(torch.ones(W.shape[1], dtype=W.dtype, device=W.device) if v is None else v)
    if v.shape != (W.shape[1],):
        raise ValueError(f"power_iteration: v must have shape ({W.shape[1]},), got {tuple(v.shape)}")
    for _ in range(iters):
        u = _unit(W @ v)  # (eq-02-power)
        v = _unit(W.T @ u)  # (eq-02-power)
    return PowerIteration(u @ W @ v, u, v)  # (eq-02-power): sigma ~ u^T W v


def power_curve(W: torch.Tensor, iters: int, v: torch.Tensor | None = None) -> np.ndarray:
    """The estimate of (eq-02-power) after 1, 2, ..., ``iters`` rounds (no gradient)."""
    out = []
    with torch.no_grad():
        for _ in range(iters):
            s, _, v = power_iteration(W, 1, v)
            out.append(float(s))
    return np.array(out)


def post_spectral_norm(w: torch.Tensor, r: int = 5) -> torch.Tensor:
    """The post's Keras helper in PyTorch: reshape to (prod(all dims but last), last) in the
    Keras layout, start from all ones, ``r`` alternating normalised products, return u^T W v.
    Takes a Keras-layout kernel (k_h, k_w, C_in, C_out), a (in, out) Dense kernel or a (C,)
    BatchNorm gamma — for which it returns ||gamma||, so the post's gamma constraint is
    gamma / ||gamma||."""
    m = w.reshape(-1, w.shape[-1]) if w.ndim > 1 else w[None, :]  # (in_dim, out_dim)
    return power_iteration(m.T, r).sigma  # the same rounds as the post, in PyTorch's (out, in) layout


def conv_operator_norm(weight: torch.Tensor, in_shape: Sequence[int], stride: int = 1, padding: int = 0,
                       iters: int = 300, seed: int = 0) -> float:
    """The operator norm of x -> conv2d(x, weight) on inputs of shape (C_in, H, W): power
    iteration (eq-02-power) with conv2d for W and conv_transpose2d for its adjoint W^T, from a
    seeded random start. A lower bound that converges to the norm (like any power iteration)."""
    require("conv_operator_norm", positive={"iters": iters, "stride": stride}, whole=True)
    w = weight.detach().double()
    c, h, wd = in_shape
    if w.ndim != 4 or w.shape[1] != c:
        raise ValueError(f"conv_operator_norm: kernel {tuple(w.shape)} does not take {c} input channels")
    g = torch.Generator().manual_seed(seed)
    x = _unit(torch.randn(1, c, h, wd, dtype=torch.float64, generator=g))
    out = F.conv2d(x, w, stride=stride, padding=padding)
    k = w.shape[2:]
    op = [n - ((o - 1) * stride - 2 * padding + kk) for n, o, kk in zip((h, wd), out.shape[2:], k)]
    s = 0.0
    for _ in range(iters):
        y = F.conv2d(x, w, stride=stride, padding=padding)
        s = float(y.norm())
        x = _unit(F.conv_transpose2d(y, w, stride=stride, padding=padding, output_padding=op))
    return s


def sigma_grad(W: torch.Tensor) -> torch.Tensor:
    """(eq-02-dsigma): d sigma_1 / dW = u_1 v_1^T (top singular vectors of the SVD)."""
    U, _, Vh = torch.linalg.svd(W)
    return torch.outer(U[:, 0], Vh[0])


def sn_grad(W: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """(eq-02-sn-grad): the gradient of L(W / sigma(W)) in W, from G = dL/dW_bar:
    (G - <G, W_bar> u_1 v_1^T) / sigma."""
    U, S, Vh = torch.linalg.svd(W)
    sigma = S[0]
    Wbar = W / sigma
    return (G - (G * Wbar).sum() * torch.outer(U[:, 0], Vh[0])) / sigma  # (eq-02-sn-grad)


def layer_weights(net: nn.Module) -> list[torch.Tensor]:
    """The weights the forward pass uses (after any parametrisation) of every Linear and Conv
    layer, in order."""
    return [m.weight for m in net.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def product_bound(net: nn.Module) -> float:
    """(eq-02-product): prod_l ||W_l||_2 over the Linear layers (exact SVD), a Lipschitz
    bound of a net whose activations are 1-Lipschitz. Conv layers use the reshaped matrix."""
    with torch.no_grad():
        return math.prod(float(torch.linalg.matrix_norm(as_matrix(w).double(), 2)) for w in layer_weights(net))


def frobenius_product(net: nn.Module) -> float:
    """prod_l ||W_l||_F, the looser bound that (eq-02-frob) gives."""
    with torch.no_grad():
        return math.prod(float(w.double().norm()) for w in layer_weights(net))


def difference_quotient(f: Callable, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """|f(x1) - f(x2)| / ||x1 - x2|| per pair (f scalar-valued)."""
    with torch.no_grad():
        return (f(x1) - f(x2)).reshape(len(x1)).abs() / (x1 - x2).flatten(1).norm(dim=1)


def grad_norms(f: Callable, x: torch.Tensor) -> torch.Tensor:
    """||grad_x f(x)|| per sample (f scalar-valued, samples independent)."""
    x = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(f(x).sum(), x)
    return g.flatten(1).norm(dim=1)


def empirical_w1(a, b) -> float:
    """Exact W1 between two empirical measures of equal size: the mean matched Euclidean
    distance of the optimal assignment (scipy's linear_sum_assignment)."""
    from scipy.optimize import linear_sum_assignment

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"empirical_w1: need two (n, d) samples of the same size, got {a.shape}, {b.shape}")
    cost = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    r, c = linear_sum_assignment(cost)
    return float(cost[r, c].mean())


def kr_dual_1d(x_real, x_fake, equal: bool = False) -> tuple[float, np.ndarray, np.ndarray]:
    """(eq-02-kr) on the line as a linear programme over the values f_i at the sorted sample
    points: maximise mean f(real) - mean f(fake) subject to |f_{i+1} - f_i| <= x_{i+1} - x_i
    (which gives |f(x) - f(y)| <= |x - y| for all pairs), f_0 = 0. Returns (value, points,
    f). ``equal=True`` asks instead for a slope of exactly 1 in magnitude on every gap, the
    "= 1" of the post (a non-convex set: searched over all sign patterns, small n only)."""
    from scipy.optimize import linprog

    xr, xf = np.asarray(x_real, np.float64), np.asarray(x_fake, np.float64)
    pts = np.concatenate([xr, xf])
    order = np.argsort(pts, kind="stable")
    x = pts[order]
    wts = np.concatenate([np.full(len(xr), 1 / len(xr)), np.full(len(xf), -1 / len(xf))])[order]
    n, gaps = len(x), np.diff(x)
    if equal:
        if n > 16:
            raise ValueError("kr_dual_1d(equal=True) enumerates 2^(n-1) sign patterns: use n <= 16")
        best, best_f = -np.inf, None
        for signs in range(2 ** (n - 1)):
            s = np.array([1.0 if signs >> i & 1 else -1.0 for i in range(n - 1)])
            f = np.concatenate([[0.0], np.cumsum(s * gaps)])
            if wts @ f > best:
                best, best_f = float(wts @ f), f
        return best, x, best_f
    D = np.zeros((n - 1, n))
    D[np.arange(n - 1), np.arange(n - 1)], D[np.arange(n - 1), np.arange(1, n)] = -1.0, 1.0
    res = linprog(-wts, A_ub=np.vstack([D, -D]), b_ub=np.concatenate([gaps, gaps]),
                  bounds=[(0, 0)] + [(None, None)] * (n - 1), method="highs")
    if not res.success:
        raise RuntimeError(f"kr_dual_1d: the linear programme failed: {res.message}")
    return float(-res.fun), x, res.x


# ======================================================================== 2. spectral normalisation


class ExactSN(nn.Module):
    """A parametrisation W -> W / sigma_1(W) (eq-02-sn) with sigma_1 from the SVD on every
    forward pass (conv kernels as (C_out, C_in k k) matrices): exact, for small nets."""

    def forward(self, W: torch.Tensor) -> torch.Tensor:
        return W / torch.linalg.matrix_norm(as_matrix(W), 2)  # (eq-02-sn)


def exact_spectral_normalise(net: nn.Module) -> nn.Module:
    """Put `ExactSN` on the weight of every Linear and Conv layer of ``net`` (in place)."""
    for m in net.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)) and not parametrize.is_parametrized(m, "weight"):
            parametrize.register_parametrization(m, "weight", ExactSN())
    return net


PROJECTIONS = ("always", "above")


@torch.no_grad()
def project_spectral_(net: nn.Module, mode: str = "always", iters: int | None = None) -> None:
    """The post-update projection: for every Linear and Conv weight, W <- W / sigma_1(W)
    (``always``: the post's Keras ``kernel_constraint``) or W <- W / max(1, sigma_1(W))
    (``above``: the projection onto the set sigma_1 <= 1). sigma_1 of the reshaped kernel by
    the exact SVD, or (``iters``) by the post's estimate: that many rounds of (eq-02-power)
    from all ones. The forward pass then uses W itself, so the gradient lacks the term of
    (eq-02-sn-grad)."""
    if mode not in PROJECTIONS:
        raise ValueError(f"project_spectral_: mode must be one of {PROJECTIONS}, got {mode!r}")
    require("project_spectral_", positive={"iters": iters}, whole=True)
    for m in net.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            W = as_matrix(m.weight)
            s = torch.linalg.matrix_norm(W.float(), 2) if iters is None else power_iteration(W, iters).sigma
            m.weight.div_(s if mode == "always" else s.clamp_min(1.0))


class ProjectedWGAN(gan.WGAN):
    """The WGAN loss (eq-02-kr) with the post's Keras pitfall: an unconstrained critic whose
    weights are projected after every critic update (`project_spectral_` with ``mode`` and
    ``iters``), instead of being normalised inside the forward pass. Use with
    ``critic_norm='none'``."""

    name = "WGAN-proj"

    def __init__(self, mode: str = "always", iters: int | None = None):
        if mode not in PROJECTIONS:
            raise ValueError(f"ProjectedWGAN: mode must be one of {PROJECTIONS}, got {mode!r}")
        require("ProjectedWGAN", positive={"iters": iters}, whole=True)
        self.mode, self.iters = mode, iters

    def after_critic_step(self, T: nn.Module) -> None:
        project_spectral_(T, self.mode, self.iters)


def bn_gain(d: int = 8, n: int = 64, std: float = 0.01, seed: int = 0, bn_eps: float = 1e-5) -> dict[str, float]:
    """L9 (float64): a Linear(d, d) divided by its exact sigma_1 (eq-02-sn), then a train-mode
    BatchNorm1d whose gamma is the post's gamma / ||gamma|| (`post_spectral_norm`) for a gamma
    dominated by channel 0. The batch is N(0, I) orthogonally to the first row w_0 of the
    weight and has standard deviation ``std`` along it, so channel 0 of the pre-BN activations
    has batch standard deviation ``std``. Returns the local gain (the spectral norm of the
    Jacobian of one sample's output with respect to its own input, batch statistics included),
    its prediction gamma_0 ||w_0|| / sqrt(std^2 + eps), gamma_0 / std (the gain from the
    pre-activation) and the layer's sigma_1."""
    require("bn_gain", positive={"d": d, "n": n, "std": std, "bn_eps": bn_eps})
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(d, d, generator=g, dtype=torch.float64)
    W = W / torch.linalg.matrix_norm(W, 2)  # (eq-02-sn), exact
    w0 = W[0]
    e = w0 / w0.norm()
    z = torch.randn(n, d, generator=g, dtype=torch.float64)
    z = z - (z @ e)[:, None] * e
    eps = torch.randn(n, generator=g, dtype=torch.float64)
    eps = (eps - eps.mean()) / eps.std(unbiased=False)
    x = z + (std / w0.norm()) * eps[:, None] * e
    gamma = torch.tensor([1.0] + [0.01] * (d - 1), dtype=torch.float64)
    gamma = gamma / post_spectral_norm(gamma)  # the post's gamma_constraint
    bn = nn.BatchNorm1d(d, eps=bn_eps).double().train()
    with torch.no_grad():
        bn.weight.copy_(gamma)
    J = torch.autograd.functional.jacobian(lambda xb: bn(xb @ W.T), x)
    gain = float(torch.linalg.matrix_norm(J[0, :, 0, :], 2))
    return {"gain": gain, "predicted": float(gamma[0] * w0.norm() / math.sqrt(std ** 2 + bn_eps)),
            "gamma0_over_std": float(gamma[0] / std), "sigma_linear": float(torch.linalg.matrix_norm(W, 2)),
            "gamma_norm": float(gamma.norm())}
