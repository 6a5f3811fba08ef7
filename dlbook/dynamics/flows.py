"""Exact flows and the discrete schemes that follow them: gradient flow and GD (Euler), the
modified flow, the Polyak-type flow, heavy-ball momentum (leapfrog), part II's sign steps, the
optimiser steps (NumPy, float64, deterministic) and steepest descent under a norm."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .functions import Objective

Array = np.ndarray
Field = Callable[[Array], Array]


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


def first_arrival(xs: Array, target: float, h: float, tol: float = 1e-3) -> float:
    """The first time t = k h at which the iterates come within `tol` of `target` (inf if never)."""
    near = np.flatnonzero(np.abs(np.asarray(xs) - target) < tol)
    return float(near[0] * h) if len(near) else math.inf


def escape_times(f: Callable[[float], float], df: Callable[[float], float], target: float, Ms, hs, x0s,
                 t_end: float = 60.0, tol: float = 1e-3) -> dict:
    """The truncated flow (eq-08-polyak-trunc) for every truncation M, step h and start x0:
    {(M, h, x0): first time within `tol` of `target`, inf if not before `t_end`}."""
    out = {}
    for M in Ms:
        for h in hs:
            for x0 in x0s:
                xs = truncated_polyak_1d(f, df, x0, h, M, int(round(t_end / h)))
                out[(M, h, x0)] = first_arrival(xs, target, h, tol)
    return out


def escape_table(times: dict) -> str:
    """`escape_times` as a narrow Markdown table: a row per M, a column per h, and in each cell
    the times from every start x0 separated by a slash (two decimals; ∞: not before the end)."""
    Ms = sorted({k[0] for k in times})
    hs = sorted({k[1] for k in times}, reverse=True)
    x0s = sorted({k[2] for k in times})
    cell = lambda t: "∞" if math.isinf(t) else f"{t:.2f}"
    lines = ["| M | " + " | ".join(f"h = {h:g}" for h in hs) + " |", "|---|" + "---|" * len(hs)]
    for M in Ms:
        lines.append(f"| {M:g} | " + " | ".join(" / ".join(cell(times[(M, h, x0)]) for x0 in x0s) for h in hs) + " |")
    return "\n".join(lines)


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


def noisy_final_losses(L: Callable[[Array], Array], grad: Callable[[Array], Array], theta0, runs: dict,
                       n: int, noise: float, seeds, tail: int = 2000) -> dict:
    """Every optimiser of `runs` ({name: (optimiser, lr)}) for `n` steps on gradients plus
    N(0, noise^2) noise, once per seed (the same noise sequence for every optimiser of a seed,
    so runs pair by seed): {name: [mean loss over the last `tail` iterates, per seed]}."""
    out = {}
    for label, (name, lr) in runs.items():
        out[label] = [float(np.mean(L(run_optimizer(name, grad, theta0, lr, n, noise=noise, seed=s)[-tail:])))
                      for s in seeds]
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

