"""The image experiment of chapter 02 (L12) and what the trained SN critic is measured on (C1,
C2): PyTorch's power-iteration estimates, the convolutions' operator norms and the critic's
largest input gradient."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .. import gan_runs as gr
from .norms import as_matrix, conv_operator_norm, grad_norms
from .settings import Config, image_table


def image_experiment(cfg: Config) -> gr.ImageResult:
    """L12 through `dlbook.gan_runs.image_experiment` on ``cfg.image`` and `image_table`, in
    the toolkit's worker pool (``cfg.image.workers`` processes of ``cfg.image.threads``); the
    trained nets come back with the runs, in eval mode for the probes below."""
    res = gr.image_experiment(cfg.image, image_table(cfg))
    for r in res.runs.values():
        r.G.eval(), r.T.eval()
    return res


def sn_layers(T: nn.Module, img_size: int, iters: int = 200) -> list[dict]:
    """Per convolution of a critic spectrally normalised by PyTorch (`gan.spectral_normalise`):
    the estimate sigma_hat = u^T W v from its stored (persistent) vectors, the exact sigma_1 of
    the reshaped kernel W, the norm of the kernel the forward pass uses, ||W / sigma_hat||_2 =
    sigma_1 / sigma_hat, and the operator norm of that convolution on the input size the layer
    sees (`conv_operator_norm`)."""
    out, size = [], img_size
    for m in T.modules():
        if not isinstance(m, nn.Conv2d):
            continue
        p = m.parametrizations.weight
        W = as_matrix(p.original.detach()).double()
        u, v = p[0]._u.detach().double(), p[0]._v.detach().double()
        with torch.no_grad():
            w_used = m.weight.detach()
        sigma_hat, sigma = float(u @ W @ v), float(torch.linalg.matrix_norm(W, 2))
        op = conv_operator_norm(w_used, (w_used.shape[1], size, size), m.stride[0], m.padding[0], iters=iters)
        out.append({"c_in": w_used.shape[1], "c_out": w_used.shape[0], "size": size, "sigma_hat": sigma_hat,
                    "sigma": sigma, "reshaped": sigma / sigma_hat, "operator": op})
        size //= m.stride[0]
    return out


def largest_input_gradient(T: nn.Module, x: torch.Tensor, steps: int = 200, lr: float = 1e-2,
                           seed: int = 0) -> dict[str, float]:
    """Lower bounds on the Lipschitz constant of a critic (eval mode): the largest ||grad_x T||
    on the images ``x``, and after ``steps`` Adam steps of gradient ascent on the difference
    quotient |T(x1) - T(x2)| / ||x1 - x2|| from the pairs (x, x + a little noise) (the
    gradient norm of a piecewise-linear critic is piecewise constant, so it is the quotient
    that is climbed), the largest quotient seen and the largest ||grad_x T|| at the end."""
    T.eval()
    g = torch.Generator().manual_seed(seed)
    x1 = x.detach().clone().requires_grad_(True)
    x2 = (x.detach() + 0.05 * torch.randn(x.shape, generator=g)).requires_grad_(True)
    opt = torch.optim.Adam([x1, x2], lr)
    best = 0.0
    for _ in range(steps):
        q = (T(x1) - T(x2)).reshape(-1).abs() / (x1 - x2).flatten(1).norm(dim=1)
        best = max(best, float(q.detach().max()))
        g1, g2 = torch.autograd.grad(-q.sum(), [x1, x2])
        x1.grad, x2.grad = g1, g2
        opt.step()
    after = torch.cat([grad_norms(T, x1.detach()), grad_norms(T, x2.detach())])
    return {"on_data": float(grad_norms(T, x).max()), "quotient": best, "after_ascent": float(after.max())}


def floor(res: gr.ImageResult) -> dict[str, float]:
    """The metric's floor on held-out real images: FD, KID and KID's standard error, and the
    share the classifier reads as one digit (``confident``, labelled data only)."""
    f = res.metric.get("floor") or {}
    return {k: float(f[k]) for k in ("fd", "kid", "kid_se", "confident") if k in f}


def trained_sn_critic(T: nn.Module, x: torch.Tensor, img_size: int, steps: int = 200) -> tuple[list[dict], dict]:
    """C1 and C2 for a trained SN critic: `sn_layers`, the product bounds from the operator
    norms and from the reshaped kernels (convolutions, global average pooling over the last
    s x s map, whose norm is 1/s, and the dense head; LeakyReLU is 1-Lipschitz), and
    `largest_input_gradient` on the images ``x``."""
    layers = sn_layers(T, img_size)
    s = layers[-1]["size"] // 2
    head = float(torch.linalg.matrix_norm(T.head.weight.detach().double(), 2))
    bounds = {"bound_op": float(np.prod([l["operator"] for l in layers])) * head / s,
              "bound_mat": float(np.prod([l["reshaped"] for l in layers])) * head / s}
    return layers, {**bounds, **largest_input_gradient(T, x, steps)}
