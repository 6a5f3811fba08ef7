"""Chapter 02 — Lipschitz constraints: from weight decay to spectral normalisation.

What only this chapter needs:

1. norms of layer matrices: the kernel reshaping, power iteration (the post's from-scratch
   form and the persistent form), the operator norm of a convolution, the gradient of the
   spectral norm and of a spectrally normalised weight, the product bound, the empirical
   Lipschitz quotient, the exact empirical W1 and its 1-D Kantorovich–Rubinstein dual;
2. spectral normalisation by the exact SVD inside the forward pass, and the post-update
   projection of the post's Keras code (a critic wrapper for the toolkit's loop);
3. the classifier with weight decay or spectral-norm regularisation (L6, L7);
4. critics fitted on fixed 2-D samples (L8, L10) and the per-step timing of L11;
5. the per-profile settings and the image loss table (L12).

The SN critic, the other losses and the GAN loops come from `dlbook.gan` / `dlbook.gan_runs`.
Matrices follow PyTorch's layout: a Linear weight is (out, in), so ``u`` lives in the output
space and ``v`` in the input space.
"""
from __future__ import annotations

import contextlib
import math
import statistics
import time
from dataclasses import dataclass, field, replace
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import parametrize

from . import gan
from .config import Settings, by_profile, require
from .gan_runs import ImageConfig, Method

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


# ======================================================================== 3. the regularised classifier

REGULARISERS = ("none", "wd", "snr")


class Classifier(nn.Module):
    """An MLP ``in_dim -> width x depth -> n_classes`` with ReLU, and its Lipschitz penalties.
    Each Linear layer keeps a persistent input-space vector for one power-iteration round per
    penalty evaluation (Yoshida & Miyato's scheme)."""

    def __init__(self, in_dim: int = 784, width: int = 256, depth: int = 2, n_classes: int = 10):
        super().__init__()
        require("Classifier", positive={"in_dim": in_dim, "width": width, "depth": depth, "n_classes": n_classes},
                whole=True)
        dims = [in_dim] + [width] * depth + [n_classes]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        for i, lin in enumerate(self.layers):
            self.register_buffer(f"v{i}", _unit(torch.randn(lin.in_features)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for lin in self.layers[:-1]:
            x = F.relu(lin(x))
        return self.layers[-1](x)

    def penalty(self, kind: str) -> torch.Tensor:
        """``wd``: sum_l ||W_l||_F^2 (eq-02-wd); ``snr``: sum_l sigma_l^2 (eq-02-snr) with
        sigma_l = u^T W_l v from one power-iteration round (eq-02-power) on a persistent v;
        u and v are constants for the gradient, so d sigma / dW = u v^T (eq-02-dsigma)."""
        if kind == "wd":
            return sum(lin.weight.pow(2).sum() for lin in self.layers)  # (eq-02-wd)
        if kind != "snr":
            raise ValueError(f"Classifier.penalty: kind must be 'wd' or 'snr', got {kind!r}")
        total = 0.0
        for i, lin in enumerate(self.layers):
            with torch.no_grad():
                _, u, v = power_iteration(lin.weight, 1, getattr(self, f"v{i}"))
                getattr(self, f"v{i}").copy_(v)
            total = total + (u @ lin.weight @ v).pow(2)  # (eq-02-snr), gradient 2 sigma u v^T (eq-02-dsigma)
        return total


@dataclass(frozen=True)
class ClassifierConfig(Settings):
    """The supervised experiment of L6/L7: ``data`` (MNIST or Fashion-MNIST), the first
    ``n_train`` training images for training and the next ``n_val`` for choosing lambda, the
    complete test split (or its first ``n_test``) for the final numbers; the MLP and Adam."""

    data: str = "mnist"
    n_train: int = 5000
    n_val: int = 1000
    n_test: int | None = None
    width: int = 256
    depth: int = 2
    epochs: int = 30
    batch: int = 64
    lr: float = 1e-3
    wd_grid: tuple[float, ...] = (0.0, 1e-4, 1e-3, 1e-2)
    snr_grid: tuple[float, ...] = (1e-3, 1e-2, 1e-1)
    seeds: tuple[int, ...] = (0, 1, 2)

    SIZES = ("n_train", "n_val", "n_test", "width", "depth", "epochs", "batch")
    POSITIVE = ("lr",)
    NONNEG = ("wd_grid", "snr_grid", "seeds")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.data not in ("mnist", "fashion-mnist"):
            raise ValueError(f"ClassifierConfig: data must be 'mnist' or 'fashion-mnist', got {self.data!r}")
        if not self.seeds:
            raise ValueError("ClassifierConfig: seeds must name at least one seed")


def classifier_data(cfg: ClassifierConfig) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """train / val / test as (x in [0, 1] flattened, y) float32 tensors."""
    from . import data as D

    tr = D.load(cfg.data, "train", limit=cfg.n_train + cfg.n_val)
    if len(tr.x) < cfg.n_train + cfg.n_val:
        raise ValueError(f"classifier_data: {len(tr.x)} training images for n_train + n_val = "
                         f"{cfg.n_train + cfg.n_val}; lower them")
    te = D.load(cfg.data, "test", limit=cfg.n_test)
    x, xt = D.to_float(tr.x).flatten(1), D.to_float(te.x).flatten(1)
    y, yt = torch.as_tensor(tr.y).long(), torch.as_tensor(te.y).long()
    n = cfg.n_train
    return {"train": (x[:n], y[:n]), "val": (x[n:], y[n:]), "test": (xt, yt),
            "source": f"{cfg.data}: {tr.source}; {te.source}"}


@torch.no_grad()
def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((net(x).argmax(1) == y).double().mean())


def input_grad_norm(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean over samples of ||grad_x loss(y, f(x))|| (cross-entropy): the input sensitivity."""
    x = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(net(x), y, reduction="sum"), x)
    return float(g.norm(dim=1).mean())


def train_classifier(cfg: ClassifierConfig, reg: str, lam: float, seed: int,
                     data: dict | None = None, threads: int | None = 1) -> dict:
    """Train `Classifier` with cross-entropy + lam * penalty (``reg``: 'none', 'wd' (eq-02-wd)
    or 'snr' (eq-02-snr)) for ``cfg.epochs`` epochs with `dlbook.train.Trainer` (Adam); return
    the final product of spectral norms, product of Frobenius norms, accuracies, the mean input
    gradient norm of the loss on the test set and the per-epoch product of spectral norms."""
    from .train import ArrayLoader, Trainer

    if reg not in REGULARISERS:
        raise ValueError(f"train_classifier: reg must be one of {REGULARISERS}, got {reg!r}")
    require("train_classifier", nonneg={"lam": lam})
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        data = data or classifier_data(cfg)
        xtr, ytr = data["train"]
        torch.manual_seed(seed)
        net = Classifier(xtr.shape[1], cfg.width, cfg.depth, int(ytr.max()) + 1)
        opt = torch.optim.Adam(net.parameters(), cfg.lr)

        def step(model, batch):
            xb, yb = batch
            ce = F.cross_entropy(model(xb), yb)
            if reg == "none" or lam == 0:
                return ce, {"ce": ce.detach()}
            return ce + lam * model.penalty(reg), {"ce": ce.detach()}

        loader = ArrayLoader((xtr, ytr), cfg.batch, seed=seed)
        per_epoch = len(loader)
        curve = []

        def track(trainer, s, metrics):
            if s % per_epoch == 0:
                curve.append(product_bound(trainer.model))

        tr = Trainer(net, opt, step, device="cpu", log_every=per_epoch, progress=False, callbacks=[track],
                     run_key={"reg": reg, "lam": lam, "seed": seed})
        tr.fit(loader, cfg.epochs * per_epoch)
        net.eval()
        xv, yv = data["val"]
        xte, yte = data["test"]
        acc_tr, acc_te = accuracy(net, xtr, ytr), accuracy(net, xte, yte)
        return {"reg": reg, "lam": float(lam), "seed": seed, "prod_sigma": product_bound(net),
                "prod_frob": frobenius_product(net),
                "sigmas": [float(torch.linalg.matrix_norm(w.detach().double(), 2)) for w in layer_weights(net)],
                "train_acc": acc_tr, "val_acc": accuracy(net, xv, yv), "test_acc": acc_te, "gap": acc_tr - acc_te,
                "grad_x": input_grad_norm(net, xte, yte), "curve": curve, "ce": tr.history["ce"]}
    finally:
        torch.set_num_threads(old)


def _classifier_entry(item) -> dict:
    cfg, reg, lam, seed = item
    return train_classifier(cfg, reg, lam, seed)


def classifier_experiment(cfg: ClassifierConfig, workers: int = 1) -> dict[tuple[str, float, int], dict]:
    """Every (reg, lambda, seed): weight decay over ``wd_grid`` (0 is 'none') and SNR over
    ``snr_grid``, each for every seed; ``workers`` processes of one thread. Keyed by
    (reg, lam, seed)."""
    from .gan_runs import run_jobs

    items = [(cfg, "none" if lam == 0 else "wd", float(lam), s) for lam in cfg.wd_grid for s in cfg.seeds]
    items += [(cfg, "snr", float(lam), s) for lam in cfg.snr_grid for s in cfg.seeds]
    runs = run_jobs(_classifier_entry, items, workers, "classifiers")
    return {(r["reg"], r["lam"], r["seed"]): r for r in runs}


def pick_lambda(runs: dict, reg: str) -> float:
    """The lambda of ``reg`` with the best mean validation accuracy over seeds."""
    lams = sorted({k[1] for k in runs if k[0] == reg})
    if not lams:
        raise KeyError(f"pick_lambda: no runs of {reg!r}")
    return max(lams, key=lambda l: np.mean([r["val_acc"] for k, r in runs.items() if k[:2] == (reg, l)]))


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation (no ties expected)."""
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


# ======================================================================== 4. critics on fixed 2-D samples


CRITICS = ("exact-sn", "sn-1step", "none", "gp", "gp-one-sided", "clip")


def toy_critic(kind: str, width: int = 128, depth: int = 2, seed: int = 0) -> tuple[nn.Module, gan.GANLoss]:
    """A 2 -> width x depth -> 1 LeakyReLU(0.2) critic and its loss for one of `CRITICS`:
    exact SN (`ExactSN`), the toolkit's SN (PyTorch's, one power iteration per training
    forward), unconstrained, WGAN-GP (lambda 10, two- or one-sided) or clipping (c = 0.01)."""
    if kind not in CRITICS:
        raise ValueError(f"toy_critic: kind must be one of {CRITICS}, got {kind!r}")
    torch.manual_seed(seed)
    T = gan.mlp(2, 1, width, depth, "lrelu", norm="sn" if kind == "sn-1step" else "none")
    if kind == "exact-sn":
        exact_spectral_normalise(T)
    loss = {"gp": lambda: gan.WGANGP(10.0), "gp-one-sided": lambda: gan.WGANGP(10.0, one_sided=True),
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
    (``lr``, betas (0.5, 0.999)) for ``steps`` steps (L10: ``l10_steps``)."""

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
    seed: int = 0

    SIZES = ("n", "width", "depth", "steps", "l10_steps", "every", "field_n")
    POSITIVE = ("std", "fake_std", "lr")
    NONNEG = ("seed",)


def toy_samples(cfg: ToyCriticConfig) -> tuple[torch.Tensor, torch.Tensor]:
    data = gan.toy_dataset("8gaussians", cfg.std)
    xr = data.sample(cfg.n, torch.Generator().manual_seed(cfg.seed))
    xf = cfg.fake_std * torch.randn(cfg.n, 2, generator=torch.Generator().manual_seed(cfg.seed + 1))
    return xr, xf


def _critic_entry(item) -> dict:
    kind, cfg = item
    from .gan_runs import critic_field

    torch.set_num_threads(1)
    xr, xf = toy_samples(cfg)
    T, loss = toy_critic(kind, cfg.width, cfg.depth, cfg.seed)
    hist = fit_critic(T, loss, xr, xf, cfg.steps, cfg.lr, seed=cfg.seed, every=cfg.every)
    hist["field"] = critic_field(T, 3.0, cfg.field_n)
    hist["kind"] = kind
    return hist


def critic_experiment(cfg: ToyCriticConfig, kinds: Sequence[str] = CRITICS, workers: int = 1) -> dict[str, dict]:
    """Fit every critic kind on the same fixed samples (L8); heat maps of the final critics."""
    from .gan_runs import run_jobs

    out = run_jobs(_critic_entry, [(k, cfg) for k in kinds], workers, "critics")
    return {h["kind"]: h for h in out}


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
    from .gan_runs import run_jobs

    u = torch.linspace(-3, 3, 41)
    pts = torch.stack(torch.meshgrid(u, u, indexing="xy"), -1).reshape(-1, 2)
    xr, xf = toy_samples(cfg)
    pts = torch.cat([pts, xr, xf])
    out = run_jobs(_l10_entry, [(v, cfg, pts) for v in L10_VARIANTS], workers, "L10")
    return {h["variant"]: h for h in out}


# ======================================================================== 5. the cost of a critic step (L11)


def step_times(critics: dict[str, tuple[nn.Module, gan.GANLoss]], xr: torch.Tensor, xf: torch.Tensor,
               steps: int = 50, warmup: int = 5, lr: float = 2e-4) -> dict[str, float]:
    """Median seconds of one critic update (loss, backward, Adam step, after-step hook) for
    each critic, measured in one run: the critics take turns step by step (the order flips
    every step), so that a change of machine load hits all of them."""
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
    return {k: statistics.median(v) for k, v in times.items()}


# ======================================================================== 6. settings per profile


@dataclass(frozen=True)
class Config(Settings):
    """Chapter 02's settings: the classifier experiment (L6, L7), the critics on fixed 2-D
    samples (L8, L10), the timing (``timing_steps`` after ``timing_warmup``, L11), the image
    experiment (L12: WGAN-SN, WGAN-GP with ``lam``, the projection variant; ``n_critic``
    critic updates per generator update) and ``workers`` processes for the small runs."""

    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    toy: ToyCriticConfig = field(default_factory=ToyCriticConfig)
    image: ImageConfig = field(default_factory=ImageConfig)
    lam: float = 10.0
    n_critic: int = 5
    gp_norm: str = "ln"
    timing_steps: int = 50
    timing_warmup: int = 5
    workers: int = 2

    SIZES = ("n_critic", "timing_steps", "workers")
    POSITIVE = ("lam",)
    NONNEG = ("timing_warmup",)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.gp_norm not in gan.CRITIC_NORMS:
            raise ValueError(f"Config: gp_norm must be one of {gan.CRITIC_NORMS}, got {self.gp_norm!r}")


CONFIGS = {
    "smoke": Config(
        ClassifierConfig(n_train=200, n_val=50, n_test=100, width=32, epochs=2, batch=32, wd_grid=(0.0, 1e-2),
                         snr_grid=(1e-2,), seeds=(0,)),
        ToyCriticConfig(n=64, width=16, steps=40, l10_steps=20, every=5, field_n=31),
        replace(ImageConfig().smoke(), steps=4), timing_steps=5, timing_warmup=1, workers=1),
    # MNIST: 5,000 training images for the classifiers; the image GAN at the book's MNIST 32x32
    # setting with a smaller pair (8 to 32 channels), three seeds.
    "cpu": Config(ClassifierConfig(epochs=20), ToyCriticConfig(),
                  ImageConfig(base=8, max_ch=32, steps=600, eval_every=100, seeds=(0, 1, 2), threads=1)),
    # The post's setting (brief 3.1): CelebA 64x64, z 100, 5x5 kernels, 64 to 512 channels, batch
    # 64, Adam 2e-4 / 0.5, 5:1, >= 20,000 generator steps, Inception FID every 1,000 steps.
    "full": Config(
        ClassifierConfig(n_train=12000, n_val=2000, epochs=60),
        ToyCriticConfig(),
        ImageConfig(data="celeba", img_size=64, fit="resize", n_train=None, z_dim=100, base=64, max_ch=512,
                    kernel=5, batch=64, steps=20000, eval_every=1000, n_eval=10000, metric="inception",
                    seeds=(0, 1)),
        workers=1),
}


def config(profile: str | None = None) -> Config:
    return by_profile(CONFIGS, profile)


def _image_seed(item) -> tuple[dict, dict]:
    from .gan_runs import image_experiment as run_images

    cfg, seed = item
    res = run_images(replace(cfg.image, seeds=(seed,)), image_table(cfg))
    nets = {f"{n}\x1f{s}": {"G": r.G.state_dict(), "T": r.T.state_dict()} for (n, s), r in res.runs.items()}
    return res.state_dict(), nets


def image_experiment(cfg: Config, workers: int = 1):
    """L12 through `dlbook.gan_runs.image_experiment` on ``cfg.image`` and `image_table`; with
    ``workers`` > 1 the seeds run in that many processes (each with ``cfg.image.threads``) and
    the results are merged in the order one process would give (methods, then seeds). The
    trained nets come back with the runs."""
    from .gan_runs import GANRun, ImageResult, image_experiment as run_images, run_jobs

    seeds = cfg.image.seeds
    if workers <= 1 or len(seeds) == 1:
        return run_images(cfg.image, image_table(cfg))
    t0 = time.perf_counter()
    parts = run_jobs(_image_seed, [(cfg, s) for s in seeds], min(workers, len(seeds)), "image seeds")
    runs: dict = {}
    for state, nets in parts:
        part = ImageResult.from_state_dict(state)
        for key, r in part.runs.items():
            runs[key] = r
            r.G, r.T = _image_nets(cfg, key[0], part.x_shape[1], nets[f"{key[0]}\x1f{key[1]}"])
    names = list(image_table(cfg))
    ordered = {(n, s): runs[(n, s)] for n in names for s in seeds}
    first = ImageResult.from_state_dict(parts[0][0])
    return ImageResult(ordered, first.metric, first.source, first.x_shape, time.perf_counter() - t0)


def _image_nets(cfg: Config, name: str, channels: int, states: dict) -> tuple[nn.Module, nn.Module]:
    ic, row = cfg.image, image_table(cfg)[name]
    G = gan.ConvGenerator(ic.z_dim, ic.img_size, channels, ic.base, ic.max_ch, ic.kernel, ic.gen_norm)
    T = gan.ConvCritic(ic.img_size, channels, ic.base, ic.max_ch, ic.kernel, row.critic_norm)
    G.load_state_dict(states["G"])
    T.load_state_dict(states["T"])
    return G.eval(), T.eval()


def image_table(cfg: Config) -> dict[str, Method]:
    """L12: WGAN-SN (the toolkit's SN critic, the plain WGAN loss), WGAN-GP (lambda, interpolates,
    ``cfg.gp_norm`` critic) and the post's pitfall (plain critic projected after each update),
    all at ``cfg.n_critic`` critic updates per generator update."""
    return {"WGAN-SN": Method(gan.WGAN(), cfg.n_critic, "sn"),
            "WGAN-GP": Method(gan.WGANGP(cfg.lam, "interp"), cfg.n_critic, cfg.gp_norm),
            "WGAN + projection": Method(ProjectedWGAN("always"), cfg.n_critic, "none")}
