"""Chapter 08: optimisation as dynamics.

Gradient descent is Euler's method for the gradient flow, momentum is leapfrog for a damped
Newtonian system, SGD is Euler-Maruyama for a Langevin equation, RMSprop is an error-controlled
(sign) flow, Polyak's step uses a known minimum value. The package is split by concern:

- `functions`: the test functions (quadratics, double well, saddle, Rosenbrock, the post's quartic);
- `flows`: exact flows, integrators, the discrete schemes and optimiser steps (NumPy, float64,
  deterministic), steepest descent under a norm, the escape times of the truncated Polyak flow;
- `stochastic`: Langevin and Kramers simulations, stationary laws, minibatch-gradient noise;
- `mlp`: the per-profile configuration and the MLP experiments on MNIST;
- `verdicts`: the experiment claims, decided by `dlbook.claims` (`claims(results)`).

Everything is re-exported here, so ``import dlbook.dynamics as D`` reaches every name. Equation
labels in comments refer to the chapter notebook ``08_optimization_dynamics``.
"""
from .functions import (DOUBLE_WELL, QUARTIC_C, ROSENBROCK, SADDLE, Objective, quadratic, quartic,
                        quartic_critical_points, quartic_grad)
from .flows import (NORMS, OPTIMISERS, AdagradState, AdamState, RMSpropState, adagrad_step, adam_step,
                    consistent_v0, dual_norm, escape_table, escape_times, euler, first_arrival, gd,
                    gradient_field, heavy_ball, heavy_ball_field, integrate, leapfrog_coefficients,
                    modified_field, noisy_final_losses, normalized_gd_1d, polyak_field, preconditioned_field,
                    retuned_beta, rmsprop_step, run_optimizer, sign_step, steepest_direction, steepest_field,
                    steepest_path, steepest_step, time_step_of, truncated_polyak_1d)
from .stochastic import gradient_noise_scaling, kramers, langevin, mnist_features, tv_to_density
from .mlp import (CONFIGS, MLP_OPTIMISERS, Config, MNISTSplits, config, cross_entropy_step, equal_loss_runs,
                  load_splits, make_mlp, make_optimizer, optimiser_curves, train_run, train_to_loss,
                  tuned_comparison)
from .verdicts import NOISE, NOISE_STEPS, NOISE_TAIL, NOISY_RUNS, claims, early_loss

__all__ = [n for n in dir() if not n.startswith("_")]
