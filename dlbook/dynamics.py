"""Chapter 08: optimisation as dynamics.

Gradient descent is Euler's method for the gradient flow, momentum is leapfrog for a damped
Newtonian system, SGD is Euler-Maruyama for a Langevin equation, RMSprop is an error-controlled
(sign) flow, Polyak's step uses a known minimum value. This module holds the test functions,
the integrators, the optimiser steps (NumPy, float64, deterministic), steepest descent under a
norm, the stationary-law helpers, the per-profile configuration and the MLP experiment.

Equation labels in comments refer to the chapter notebook ``08_optimization_dynamics``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from .config import ConfigError, Settings, by_profile, require

Array = np.ndarray
Field = Callable[[Array], Array]


# ----------------------------------------------------------------------------- test functions
@dataclass(frozen=True)
class Objective:
    """A smooth loss on R^d with its gradient and Hessian (all float64 NumPy)."""

    name: str
    f: Callable[[Array], float]
    grad: Callable[[Array], Array]
    hess: Callable[[Array], Array]
    minima: tuple = ()

    def __call__(self, theta) -> float:
        return float(self.f(np.asarray(theta, dtype=np.float64)))

    def on_grid(self, X: Array, Y: Array) -> Array:
        """L on a meshgrid (vectorised; for contour plots)."""
        return np.asarray(self.f(np.stack([X, Y]).astype(np.float64)))


def _vec(theta, d: int | None = None) -> Array:
    """A parameter vector (or a stack of them along axis 0, for grids) of length d."""
    t = np.asarray(theta, dtype=np.float64)
    if t.ndim < 1 or (d is not None and t.shape[0] != d):
        raise ValueError(f"expected a parameter vector of length {d}, got shape {t.shape}")
    return t


def quadratic(a: Sequence[float]) -> Objective:
    """L = 1/2 sum_i a_i theta_i^2 (an axis-aligned, possibly ill-conditioned quadratic)."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 1 or np.any(a <= 0):
        raise ValueError("quadratic: a must be a 1-D array of positive curvatures")
    d = len(a)
    return Objective(
        f"quadratic{tuple(float(x) for x in a)}",
        lambda t: 0.5 * np.tensordot(a, _vec(t, d) ** 2, axes=1),
        lambda t: a * _vec(t, d),
        lambda t: np.diag(a),
        (np.zeros(d),))


def _dw_f(t):
    x, y = _vec(t, 2)
    return 0.25 * (x * x - 1) ** 2 + 0.5 * (2 * y - x) ** 2


def _dw_g(t):
    x, y = _vec(t, 2)
    return np.array([x * (x * x - 1) - (2 * y - x), 2 * (2 * y - x)])


def _dw_h(t):
    x, y = _vec(t, 2)
    return np.array([[3 * x * x, -2.0], [-2.0, 4.0]])


#: L = 1/4 (x^2-1)^2 + 1/2 (2y-x)^2: minima +-(1, 1/2) with L = 0, a saddle at 0 with L = 1/4.
DOUBLE_WELL = Objective("tilted double well", _dw_f, _dw_g, _dw_h,
                        (np.array([1.0, 0.5]), np.array([-1.0, -0.5])))

#: L = x^2 - y^2 + y^4/4: a saddle at 0, minima (0, +-sqrt 2) with L = -1.
SADDLE = Objective(
    "saddle",
    lambda t: _vec(t, 2)[0] ** 2 - _vec(t, 2)[1] ** 2 + _vec(t, 2)[1] ** 4 / 4,
    lambda t: np.array([2 * _vec(t, 2)[0], -2 * _vec(t, 2)[1] + _vec(t, 2)[1] ** 3]),
    lambda t: np.diag([2.0, -2.0 + 3 * _vec(t, 2)[1] ** 2]),
    (np.array([0.0, math.sqrt(2)]), np.array([0.0, -math.sqrt(2)])))

def _rb_g(t):
    x, y = _vec(t, 2)
    return np.array([-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)])


def _rb_h(t):
    x, y = _vec(t, 2)
    return np.array([[2 - 400 * (y - 3 * x * x), -400 * x], [-400 * x, 200.0]])


#: Rosenbrock's valley L = (1-x)^2 + 100 (y-x^2)^2, minimum (1, 1).
ROSENBROCK = Objective(
    "Rosenbrock",
    lambda t: (1 - _vec(t, 2)[0]) ** 2 + 100 * (_vec(t, 2)[1] - _vec(t, 2)[0] ** 2) ** 2,
    _rb_g, _rb_h, (np.array([1.0, 1.0]),))

#: the constant that makes the post's quartic vanish (to 6 digits) at its global minimum
QUARTIC_C = 1.62276


def quartic(x):
    """The post's 1-D example f(x) = x (x-1) (x-3)^2 + 1.62276  (eq-08-quartic)."""
    return x * (x - 1) * (x - 3) ** 2 + QUARTIC_C


def quartic_grad(x):
    """f'(x) = 4x^3 - 21x^2 + 30x - 9, evaluated term by term as in the post's code (the escape
    time of the truncated flow is chaotic: even Horner's rounding changes it)."""
    return 4 * x ** 3 - 21 * x ** 2 + 30 * x - 9


def quartic_critical_points() -> Array:
    """The three roots of f', sorted: global min, local max, local min (= 3)."""
    return np.sort(np.roots([4.0, -21.0, 30.0, -9.0]).real)


# ----------------------------------------------------------------------------- exact flows
def gradient_field(obj: Objective) -> Field:
    """The gradient flow  d theta/dt = -grad L  (eq-08-gf)."""
    return lambda t: -obj.grad(t)


def modified_field(obj: Objective, h: float) -> Field:
    """The modified flow that GD with step h follows to O(h^2):
    d theta/dt = -grad L - h/2 H grad L = -grad(L + h/4 |grad L|^2)  (eq-08-modified)."""
    return lambda t: -obj.grad(t) - 0.5 * h * obj.hess(t) @ obj.grad(t)


def polyak_field(obj: Objective, M: float | None = None, L_star: float = 0.0) -> Field:
    """The flow that uses the known minimum value: d theta/dt = -grad L (L - L*) / |grad L|^2
    (eq-08-polyak); with `M`, the truncated version  -grad L/|grad L| (L-L*) min(1/|grad L|, M)
    (eq-08-polyak-trunc)."""
    def fld(t):
        g = obj.grad(t)
        n = float(np.linalg.norm(g))
        gap = obj(t) - L_star
        if M is None:
            return -g * gap / n ** 2
        return -(g / n) * gap * min(1.0 / n, M) if n > 0 else np.zeros_like(g)
    return fld


def preconditioned_field(obj: Objective, P: Callable[[Array], Array]) -> Field:
    """d theta/dt = -P(theta)^{-1} grad L: the steepest-descent flow of the norm |v|_P
    (eq-08-steepest); P = Hessian is the Newton flow."""
    return lambda t: -np.linalg.solve(P(t), obj.grad(t))


def steepest_field(obj: Objective, norm: str, P: Callable[[Array], Array] | None = None) -> Field:
    """The unit-speed steepest-descent flow of a norm, d theta/dt = steepest_direction(grad L)
    (eq-08-steepest), for `euler`. With norm 'P', a P(theta) that is not positive definite
    (Newton's P = H away from a minimum) is replaced by |diag P| + 1e-3 I so that it still
    defines a norm; the flow stops where the gradient vanishes."""
    def fld(t):
        g = obj.grad(t)
        if np.linalg.norm(g) < 1e-12:
            return np.zeros_like(g)
        Pt = P(t) if P is not None else None
        if Pt is not None and not np.all(np.linalg.eigvalsh(Pt) > 0):
            Pt = np.diag(np.abs(np.diag(Pt)) + 1e-3)
        return steepest_direction(g, norm, Pt)
    return fld


def heavy_ball_field(obj: Objective, lam: float) -> Field:
    """First-order form of  theta'' + lam theta' = -grad L  (eq-08-heavy):
    state (theta, eta) -> (eta, -lam eta - grad L)."""
    def fld(s):
        d = len(s) // 2
        th, eta = s[:d], s[d:]
        return np.concatenate([eta, -lam * eta - obj.grad(th)])
    return fld


def integrate(fld: Field, theta0, T: float, t_eval=None, rtol: float = 1e-12,
              atol: float = 1e-12) -> tuple[Array, Array]:
    """A reference solution with SciPy's RK45: returns (t, theta) with theta of shape (len(t), d)."""
    from scipy.integrate import solve_ivp

    theta0 = np.asarray(theta0, dtype=np.float64)
    if t_eval is None:
        t_eval = np.linspace(0.0, T, 201)
    sol = solve_ivp(lambda t, y: fld(y), (0.0, T), theta0, method="RK45", t_eval=t_eval,
                    rtol=rtol, atol=atol)
    if not sol.success:
        raise RuntimeError(f"integrate: solve_ivp failed: {sol.message}")
    return sol.t, sol.y.T


# ----------------------------------------------------------------------------- discrete schemes
def gd(grad: Callable[[Array], Array], theta0, h: float, n: int) -> Array:
    """Gradient descent = explicit Euler for the gradient flow  (eq-08-euler):
    theta_{k+1} = theta_k - h grad L(theta_k). Returns all n+1 iterates."""
    th = np.array(theta0, dtype=np.float64)
    out = np.empty((n + 1,) + th.shape)
    out[0] = th
    for k in range(n):
        th = th - h * grad(th)
        out[k + 1] = th
    return out


def euler(fld: Field, theta0, h: float, n: int) -> Array:
    """Explicit Euler for a general field (the steepest-descent flows of any norm)."""
    th = np.array(theta0, dtype=np.float64)
    out = np.empty((n + 1,) + th.shape)
    out[0] = th
    for k in range(n):
        th = th + h * fld(th)
        out[k + 1] = th
    return out


def steepest_path(obj: Objective, theta0, norm: str, P: Callable[[Array], Array] | None = None,
                  h: float = 0.005, n: int = 1500) -> Array:
    """`n` Euler steps of length h (in the chosen norm) along `steepest_field`, cut after the
    point where the gradient vanishes, so that h x (number of points - 1) is the path length."""
    p = euler(steepest_field(obj, norm, P), theta0, h, n)
    moved = np.flatnonzero(np.any(p[1:] != p[:-1], axis=tuple(range(1, p.ndim))))
    return p[: moved[-1] + 2] if len(moved) else p[:1]


def leapfrog_coefficients(lam: float, gamma: float) -> tuple[float, float]:
    """The (alpha, beta) of heavy-ball momentum that is leapfrog with time step gamma for
    theta'' + lam theta' = -grad L  (eq-08-alphabeta)."""
    if gamma <= 0 or lam < 0:
        raise ValueError("leapfrog_coefficients: need gamma > 0 and lam >= 0")
    c = lam * gamma / 2
    return gamma ** 2 / (1 + c), (1 - c) / (1 + c)


def time_step_of(lam: float, alpha: float) -> float:
    """Invert alpha = gamma^2 / (1 + lam gamma / 2) for the time step gamma > 0."""
    b = lam * alpha / 2
    return (b + math.sqrt(b * b + 4 * alpha)) / 2


def retuned_beta(beta: float, r: float) -> float:
    """The tuning rule: when the learning rate is multiplied by r, beta -> 1 - (1-beta) sqrt(r)."""
    return 1 - (1 - beta) * math.sqrt(r)


def heavy_ball(grad: Callable[[Array], Array], theta0, alpha: float, beta: float, n: int,
               v0=None, last_only: bool = False) -> tuple[Array, Array]:
    """Heavy-ball momentum  v_{k+1} = beta v_k - alpha grad L(theta_k), theta_{k+1} = theta_k + v_{k+1}
    (eq-08-momentum). Works on any array shape (e.g. a batch of 1-D runs; alpha and beta may be
    arrays of the same shape). Returns (theta_0..theta_n, v_1..v_n), or with `last_only` just
    (theta_n, v_n)."""
    th = np.array(theta0, dtype=np.float64)
    v = np.zeros_like(th) if v0 is None else np.array(v0, dtype=np.float64) + np.zeros_like(th)
    if last_only:
        for _ in range(n):
            v = beta * v - alpha * grad(th)
            th = th + v
        return th, v
    thetas = np.empty((n + 1,) + th.shape)
    vs = np.empty((n,) + th.shape)
    thetas[0] = th
    for k in range(n):
        v = beta * v - alpha * grad(th)
        th = th + v
        thetas[k + 1], vs[k] = th, v
    return thetas, vs


def consistent_v0(grad: Callable[[Array], Array], theta0, gamma: float) -> Array:
    """The initial momentum that keeps leapfrog second order when eta(0) = 0:
    v_0 = gamma eta_{-1/2} = gamma^2/2 grad L(theta_0)."""
    return 0.5 * gamma ** 2 * grad(np.asarray(theta0, dtype=np.float64))


def normalized_gd_1d(dL: Callable[[float], float], theta0: float, gamma_t: float,
                     n: int) -> tuple[Array, Array]:
    """Part II's gradient-scaled step, gamma = gamma~/|L'|: theta_{k+1} = theta_k - gamma~ sign L'
    (eq-08-sign1d), with the ODE time it represents, t_{k+1} = t_k + gamma~/|L'(theta_k)|."""
    th, t = float(theta0), 0.0
    ths, ts = [th], [t]
    for _ in range(n):
        g = dL(th)
        if g == 0:
            break
        t += gamma_t / abs(g)
        th -= gamma_t * math.copysign(1.0, g)
        ths.append(th)
        ts.append(t)
    return np.array(ths), np.array(ts)


def truncated_polyak_1d(f: Callable[[float], float], df: Callable[[float], float], x0: float,
                        h: float, M: float, n: int) -> Array:
    """Euler for the truncated flow (eq-08-polyak-trunc) in 1-D, exactly the post's update
    x += h * (-sign f'(x) * min(1/|f'(x)|, M) * f(x)). Returns the n+1 iterates."""
    x = float(x0)
    xs = np.empty(n + 1)
    xs[0] = x
    for k in range(n):
        g = df(x)
        s = 0.0 if g == 0 else math.copysign(1.0, g)
        x += h * (-s * min(1.0 / abs(g) if g != 0 else math.inf, M) * f(x))
        xs[k + 1] = x
    return xs


# ----------------------------------------------------------------------------- optimiser steps
def sign_step(theta: Array, g: Array, lr: float) -> Array:
    """Sign descent, the Euler step of d theta/dt = -sign(grad L)  (eq-08-signflow)."""
    return theta - lr * np.sign(g)


@dataclass
class RMSpropState:
    G: Array


def rmsprop_step(theta: Array, g: Array, state: RMSpropState, lr: float, alpha: float = 0.99,
                 eps: float = 1e-8) -> Array:
    """RMSprop as PyTorch implements it (eq-08-rmsprop; epsilon outside the root):
    G <- alpha G + (1-alpha) g*g,  theta <- theta - lr g / (sqrt(G) + eps)."""
    state.G = alpha * state.G + (1 - alpha) * g * g
    return theta - lr * g / (np.sqrt(state.G) + eps)


@dataclass
class AdamState:
    m: Array
    v: Array
    t: int = 0


def adam_step(theta: Array, g: Array, state: AdamState, lr: float, betas=(0.9, 0.999),
              eps: float = 1e-8) -> Array:
    """Adam = RMSprop + momentum, with bias correction, as in PyTorch."""
    b1, b2 = betas
    state.t += 1
    state.m = b1 * state.m + (1 - b1) * g
    state.v = b2 * state.v + (1 - b2) * g * g
    mhat = state.m / (1 - b1 ** state.t)
    vhat = state.v / (1 - b2 ** state.t)
    return theta - lr * mhat / (np.sqrt(vhat) + eps)


@dataclass
class AdagradState:
    S: Array


def adagrad_step(theta: Array, g: Array, state: AdagradState, lr: float, eps: float = 1e-10) -> Array:
    """Adagrad: divide by the root of the cumulative sum of squared gradients."""
    state.S = state.S + g * g
    return theta - lr * g / (np.sqrt(state.S) + eps)


OPTIMISERS = ("gd", "sign", "sign_decay", "rmsprop", "adam", "adagrad")


def run_optimizer(name: str, grad: Callable[[Array], Array], theta0, lr: float, n: int,
                  noise: float = 0.0, seed: int = 0, **kw) -> Array:
    """n steps of one of OPTIMISERS on a deterministic gradient (plus optional Gaussian gradient
    noise of standard deviation `noise`); returns the n+1 iterates."""
    if name not in OPTIMISERS:
        raise ValueError(f"unknown optimiser {name!r}; choose one of {OPTIMISERS}")
    rng = np.random.default_rng(seed)
    th = np.array(theta0, dtype=np.float64)
    out = np.empty((n + 1,) + th.shape)
    out[0] = th
    z = np.zeros_like(th)
    state = {"rmsprop": RMSpropState(z.copy()), "adam": AdamState(z.copy(), z.copy()),
             "adagrad": AdagradState(z.copy())}.get(name)
    for k in range(n):
        g = grad(th)
        if noise:
            g = g + noise * rng.standard_normal(th.shape)
        if name == "gd":
            th = th - lr * g
        elif name == "sign":
            th = sign_step(th, g, lr)
        elif name == "sign_decay":
            th = sign_step(th, g, lr / math.sqrt(k + 1))
        elif name == "rmsprop":
            th = rmsprop_step(th, g, state, lr, **kw)
        elif name == "adam":
            th = adam_step(th, g, state, lr, **kw)
        else:
            th = adagrad_step(th, g, state, lr, **kw)
        out[k + 1] = th
    return out


# ----------------------------------------------------------------------------- steepest descent
NORMS = ("l2", "linf", "l1", "P")


def steepest_direction(g: Array, norm: str, P: Array | None = None) -> Array:
    """argmin_{|v| <= 1} <g, v> for the given norm on steps  (eq-08-steepest, table row by row):
    l2 -> -g/|g|_2;  linf -> -sign(g);  l1 -> -sign(g_i) e_i at i = argmax |g_j|;
    P (|v|_P = sqrt(v'Pv)) -> -P^{-1} g / sqrt(g' P^{-1} g)."""
    g = np.asarray(g, dtype=np.float64)
    if norm == "l2":
        return -g / np.linalg.norm(g)
    if norm == "linf":
        return -np.sign(g)
    if norm == "l1":
        v = np.zeros_like(g)
        i = int(np.argmax(np.abs(g)))
        v[i] = -np.sign(g[i])
        return v
    if norm == "P":
        if P is None:
            raise ValueError("steepest_direction: norm 'P' needs a positive-definite matrix P")
        w = np.linalg.solve(P, g)
        return -w / math.sqrt(float(g @ w))
    raise ValueError(f"unknown norm {norm!r}; choose one of {NORMS}")


def dual_norm(g: Array, norm: str, P: Array | None = None) -> float:
    """The dual norm |g|_*, which is -min_{|v|<=1} <g, v>: l2 -> l2, linf -> l1, l1 -> linf,
    P -> sqrt(g' P^{-1} g)."""
    g = np.asarray(g, dtype=np.float64)
    if norm == "l2":
        return float(np.linalg.norm(g))
    if norm == "linf":
        return float(np.abs(g).sum())
    if norm == "l1":
        return float(np.abs(g).max())
    if norm == "P":
        if P is None:
            raise ValueError("dual_norm: norm 'P' needs a positive-definite matrix P")
        return math.sqrt(float(g @ np.linalg.solve(P, g)))
    raise ValueError(f"unknown norm {norm!r}; choose one of {NORMS}")


def steepest_step(g: Array, norm: str, P: Array | None = None) -> Array:
    """The un-normalised steepest step |g|_* x direction = argmin_v <g,v> + |v|^2/2:
    -g (GD), -|g|_1 sign(g) (scaled sign descent), -g_i e_i (greedy coordinate descent),
    -P^{-1} g (preconditioned GD)."""
    return dual_norm(g, norm, P) * steepest_direction(g, norm, P)


# ----------------------------------------------------------------------------- stochastic dynamics
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

    from . import data

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = data.load("mnist", "train", limit=n)
    x = ds.x.astype(np.float64) / 255.0
    s = 28 // pool
    x = x[:, :s * pool, :s * pool].reshape(len(x), s, pool, s, pool).mean((2, 4)).reshape(len(x), -1)
    return np.hstack([x, np.ones((len(x), 1))]), ds.y


# ----------------------------------------------------------------------------- the MLP experiments
@dataclass(frozen=True)
class Config(Settings):
    """Per-profile settings of the chapter's training experiments (an MLP on MNIST) and, with
    `light`, fewer widget frames and smaller exploratory tables (the derivation checks never
    change). Data: the first `n_train` training images, the next `n_val` as a validation split
    and the first `n_test` test images."""

    SIZES = ("n_train", "n_val", "n_test", "hidden", "batch", "steps", "log_every", "seeds", "tune_epochs",
             "equal_loss_every", "equal_loss_max_steps")
    POSITIVE = ("sgd_lrs", "tune_momentum_lrs", "tune_adam_lrs", "equal_loss_target")

    n_train: int
    n_val: int
    n_test: int
    hidden: int
    batch: int
    steps: int          # length of the loss-curve comparison of the six optimisers (E1, E2)
    log_every: int
    # optimiser name -> learning rate (the loss-curve comparison)
    lrs: dict = field(default_factory=dict)
    seeds: int = 3
    # E3: momentum SGD against Adam, each at its best rate on the validation split, cosine decay
    tune_epochs: int = 20
    tune_momentum_lrs: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3)
    tune_adam_lrs: tuple[float, ...] = (3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
    # E4: plain SGD at these rates, each run stopped at the same full-batch training loss
    sgd_lrs: tuple[float, ...] = (0.02, 0.05, 0.1)
    equal_loss_target: float = 0.2
    equal_loss_every: int = 25
    equal_loss_max_steps: int = 20_000
    light: bool = False
    # CPU threads for torch, passed to dlbook.config.threads (None: $DLBOOK_THREADS, else every
    # core): an MLP this small gains nothing from a second thread, and on a shared machine the
    # threads only wait for each other.
    threads: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        require("dynamics.Config", positive={"threads": self.threads}, whole=True)
        bad = {k: v for k, v in self.lrs.items() if k not in MLP_OPTIMISERS}
        if bad:
            raise ConfigError(f"dynamics.Config: unknown optimisers {sorted(bad)}; choose from {MLP_OPTIMISERS}")
        require("dynamics.Config", positive={f"lrs[{k}]": v for k, v in self.lrs.items()})


MLP_OPTIMISERS = ("sgd", "momentum", "sign", "rmsprop", "adam", "adagrad")
_LRS = {"sgd": 0.1, "momentum": 0.01, "sign": 3e-4, "rmsprop": 1e-3, "adam": 1e-3, "adagrad": 0.02}

CONFIGS = {
    "smoke": Config(n_train=512, n_val=256, n_test=256, hidden=64, batch=64, steps=20, log_every=5,
                    lrs=dict(_LRS), seeds=2, tune_epochs=1, tune_momentum_lrs=(0.03, 0.1),
                    tune_adam_lrs=(1e-3,), sgd_lrs=(0.05, 0.1), equal_loss_target=1.5,
                    equal_loss_every=4, equal_loss_max_steps=200, light=True, threads=1),
    "cpu": Config(n_train=10000, n_val=2000, n_test=10000, hidden=128, batch=64, steps=1200, log_every=25,
                  lrs=dict(_LRS), threads=1),
    "full": Config(n_train=50000, n_val=10000, n_test=10000, hidden=1024, batch=128, steps=20000,
                   log_every=100, lrs={**_LRS, "sign": 1e-4, "rmsprop": 3e-4, "adam": 3e-4}, tune_epochs=30,
                   equal_loss_target=0.05, equal_loss_every=100, equal_loss_max_steps=200_000),
}


def config(profile: str | None = None) -> Config:
    """The settings of `profile` (None: the resolved profile)."""
    return by_profile(CONFIGS, profile)


def make_mlp(d_in: int = 784, hidden: int = 256, n_out: int = 10):
    """The chapter's network: two hidden ReLU layers."""
    import torch.nn as nn

    require("make_mlp", positive={"d_in": d_in, "hidden": hidden, "n_out": n_out}, whole=True)
    return nn.Sequential(nn.Flatten(), nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                         nn.ReLU(), nn.Linear(hidden, n_out))


def _sign_sgd_class():
    import torch

    class SignSGD(torch.optim.Optimizer):
        """theta <- theta - lr sign(grad): the Euler step of the sign flow (eq-08-signflow)."""

        def __init__(self, params, lr: float = 1e-3):
            if lr <= 0:
                raise ValueError("SignSGD: lr must be positive")
            super().__init__(params, {"lr": lr})

        @torch.no_grad()
        def step(self, closure=None):
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        p.add_(torch.sign(p.grad), alpha=-group["lr"])

    return SignSGD


def make_optimizer(name: str, params, lr: float):
    """sgd, momentum (heavy ball, beta 0.9), sign, rmsprop, adam, adagrad."""
    import torch

    require("make_optimizer", positive={"lr": lr})
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if name == "momentum":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    if name == "sign":
        return _sign_sgd_class()(params, lr=lr)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, alpha=0.99)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=lr)
    raise ValueError(f"unknown optimiser {name!r}; choose one of {', '.join(MLP_OPTIMISERS)}")


def cross_entropy_step(model, batch):
    """The training loss, mean cross-entropy of a minibatch, with its accuracy."""
    import torch.nn.functional as F

    x, y = batch
    logits = model(x)
    return F.cross_entropy(logits, y), {"acc": (logits.argmax(1) == y).float().mean()}


def _full_batch(model, x, y) -> tuple[float, float, float]:
    """Full-batch loss, squared gradient norm |grad L|^2 and accuracy at the current weights."""
    import torch.nn.functional as F

    model.zero_grad(set_to_none=True)
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    g2 = sum(float((p.grad ** 2).sum()) for p in model.parameters() if p.grad is not None)
    model.zero_grad(set_to_none=True)
    return float(loss.detach()), g2, float((logits.argmax(1) == y).float().mean())


@dataclass
class MNISTSplits:
    """Flattened MNIST in [0, 1]: training, validation and test images with labels."""

    x_train: object
    y_train: object
    x_val: object
    y_val: object
    x_test: object
    y_test: object
    source: str


def load_splits(cfg: Config) -> MNISTSplits:
    """The first n_train training images, the next n_val as validation, the first n_test test images."""
    import torch

    from . import data

    tr = data.load("mnist", "train", limit=cfg.n_train + cfg.n_val)
    te = data.load("mnist", "test", limit=cfg.n_test)
    if len(tr) < cfg.n_train + cfg.n_val or len(te) < cfg.n_test:
        raise ValueError(f"mnist holds {len(tr)} training and {len(te)} test images here ({tr.source}); the "
                         f"profile needs {cfg.n_train} + {cfg.n_val} and {cfg.n_test}")
    flat = lambda a: torch.as_tensor(data.to_float(a)).float().reshape(len(a), -1)
    x, y = flat(tr.x), torch.as_tensor(tr.y)
    return MNISTSplits(x[:cfg.n_train], y[:cfg.n_train], x[cfg.n_train:], y[cfg.n_train:], flat(te.x),
                       torch.as_tensor(te.y), tr.source)


def _accuracy(model, x, y) -> float:
    import torch

    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def train_run(d: MNISTSplits, cfg: Config, name: str, lr: float, steps: int, seed: int = 0,
              cosine: bool = False, device=None, progress: bool = True):
    """One MLP trained with optimiser `name` at rate `lr` for `steps` steps (cosine decay of the
    rate to 0 with `cosine`): the same initialisation and data order for every optimiser of a
    seed. Returns (trainer, history); the model is left on the CPU."""
    import torch

    from .config import device as default_device
    from .train import ArrayLoader, Trainer

    require("train_run", positive={"steps": steps}, whole=True)
    dev = torch.device(device) if device is not None else default_device()
    torch.manual_seed(seed)
    model = make_mlp(d.x_train.shape[1], cfg.hidden)
    opt = make_optimizer(name, model.parameters(), lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps) if cosine else None
    trainer = Trainer(model, opt, cross_entropy_step, device=dev, amp=False, scheduler=sched,
                      log_every=cfg.log_every, progress=progress, desc=f"{name} lr={lr:g} seed {seed}")
    hist = trainer.fit(ArrayLoader((d.x_train, d.y_train), cfg.batch, seed=seed), steps)
    trainer.model.cpu()
    return trainer, hist


def optimiser_curves(d: MNISTSplits, cfg: Config, seed: int = 0, progress: bool = True) -> dict:
    """E1 and E2: every optimiser of cfg.lrs for cfg.steps steps at a constant rate, with each seed.
    Returns {name: [per seed: {"steps", "loss", "train_loss", "test_acc"}]}."""
    out: dict = {}
    for name, lr in cfg.lrs.items():
        out[name] = []
        for s_ in range(seed, seed + cfg.seeds):
            tr, hist = train_run(d, cfg, name, lr, cfg.steps, s_, progress=progress)
            loss, _, _ = _full_batch(tr.model, d.x_train, d.y_train)
            out[name].append({"lr": lr, "steps": np.array(hist.steps), "loss": np.array(hist["loss"]),
                              "train_loss": loss, "test_acc": _accuracy(tr.model, d.x_test, d.y_test)})
    return out


def tuned_comparison(d: MNISTSplits, cfg: Config, seed: int = 0, progress: bool = True) -> dict:
    """E3: momentum SGD against Adam at convergence. For each, every rate of its grid is trained
    for cfg.tune_epochs epochs with cosine decay (first seed), the rate with the best validation
    accuracy is kept, and the other seeds are trained at that rate. Returns per optimiser the
    validation accuracy of each rate, the chosen rate and the test accuracy of each seed."""
    steps = cfg.tune_epochs * -(-len(d.x_train) // cfg.batch)
    out = {}
    for name, grid in (("momentum", cfg.tune_momentum_lrs), ("adam", cfg.tune_adam_lrs)):
        val, models = {}, {}
        for lr in grid:
            tr, _ = train_run(d, cfg, name, lr, steps, seed, cosine=True, progress=progress)
            val[lr], models[lr] = _accuracy(tr.model, d.x_val, d.y_val), tr.model
        best = max(grid, key=lambda lr: val[lr])
        test = [_accuracy(models[best], d.x_test, d.y_test)]
        for s_ in range(seed + 1, seed + cfg.seeds):
            tr, _ = train_run(d, cfg, name, best, steps, s_, cosine=True, progress=progress)
            test.append(_accuracy(tr.model, d.x_test, d.y_test))
        out[name] = {"val": val, "lr": best, "test_acc": test, "epochs": cfg.tune_epochs}
    return out


def train_to_loss(d: MNISTSplits, cfg: Config, lr: float, target: float, seed: int = 0,
                  name: str = "sgd", progress: bool = False) -> dict:
    """E4: train until the full-batch training loss first falls to `target` (checked every
    cfg.equal_loss_every steps, at most cfg.equal_loss_max_steps steps), then measure the
    full-batch |grad L|^2 there: runs at different rates compared at the same loss."""
    import torch

    from .config import device as default_device
    from .train import ArrayLoader, Trainer

    require("train_to_loss", positive={"lr": lr, "target": target})
    dev = default_device()
    torch.manual_seed(seed)
    model = make_mlp(d.x_train.shape[1], cfg.hidden)
    trainer = Trainer(model, make_optimizer(name, model.parameters(), lr), cross_entropy_step, device=dev,
                      amp=False, log_every=cfg.equal_loss_every, progress=False)
    loader = ArrayLoader((d.x_train, d.y_train), cfg.batch, seed=seed)
    xtr, ytr = d.x_train.to(dev), d.y_train.to(dev)
    steps, loss = 0, float("inf")
    while steps < cfg.equal_loss_max_steps:
        steps += cfg.equal_loss_every
        trainer.fit(loader, steps)
        loss, g2, _ = _full_batch(trainer.model, xtr, ytr)
        if loss <= target:
            break
    return {"lr": lr, "seed": seed, "steps": steps, "loss": loss, "grad_norm2": g2, "reached": loss <= target}


def equal_loss_runs(d: MNISTSplits, cfg: Config, seed: int = 0, progress: bool = True) -> dict:
    """E4 for every rate of cfg.sgd_lrs and every seed: {lr: [train_to_loss result per seed]}."""
    from tqdm.auto import tqdm

    jobs = [(lr, s_) for lr in cfg.sgd_lrs for s_ in range(seed, seed + cfg.seeds)]
    out: dict = {lr: [] for lr in cfg.sgd_lrs}
    for lr, s_ in tqdm(jobs, desc="SGD to equal loss", disable=not progress):
        out[lr].append(train_to_loss(d, cfg, lr, cfg.equal_loss_target, s_))
    return out
