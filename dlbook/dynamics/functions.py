"""The chapter's test functions: quadratics, the tilted double well, a saddle, Rosenbrock's
valley and the post's 1-D quartic, each with its gradient and Hessian (float64 NumPy)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

Array = np.ndarray


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

