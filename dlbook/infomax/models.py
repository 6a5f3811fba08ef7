"""Chapter 01, the model: the post's encoder, the global and local critics and their
inputs, random views, the BCE estimator and the three-term loss (eq-01-total)."""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ..config import require
from ..gaussian import gaussian_kl, reparameterise
from .identities import bce_mi_loss, shuffle_batch
from .settings import GLOBAL_INPUTS


# =============================================================== encoder and critics
def _block(cin: int, cout: int, pool: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """The post's CIFAR-10 encoder: 3 x [conv3x3-BN-LeakyReLU(0.2)-maxpool2] -> local map C(x)
    (4x4 for 32x32 input), 2 x [conv3x3-BN-LeakyReLU] -> global max-pool -> mu, log sigma^2."""

    def __init__(self, width: float = 1.0, z_dim: int = 256, in_ch: int = 3):
        super().__init__()
        require("Encoder", positive={"width": width})
        require("Encoder", positive={"z_dim": z_dim, "in_ch": in_ch}, whole=True)
        c = [max(4, int(round(w * width))) for w in (64, 128, 256, 256, 256)]
        self.local = nn.Sequential(_block(in_ch, c[0], True), _block(c[0], c[1], True), _block(c[1], c[2], True))
        self.top = nn.Sequential(_block(c[2], c[3], False), _block(c[3], c[4], False))
        self.mu = nn.Linear(c[4], z_dim)
        self.logvar = nn.Linear(c[4], z_dim)
        self.local_ch, self.z_dim = c[2], z_dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if x.ndim != 4:
            raise ValueError(f"Encoder expects (B, C, H, W) images, got shape {tuple(x.shape)}")
        c = self.local(x)
        h = self.top(c).amax(dim=(2, 3))  # global max pooling
        return c, self.mu(h), self.logvar(h)


class GlobalCritic(nn.Module):
    """T1: an MLP (3 hidden ReLU layers) on a concatenated pair, one logit per pair."""

    def __init__(self, in_dim: int, width: int = 256):
        super().__init__()
        require("GlobalCritic", positive={"in_dim": in_dim, "width": width}, whole=True)
        self.in_dim = in_dim
        self.net = nn.Sequential(nn.Linear(in_dim, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                                 nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 1))

    def forward(self, pair: torch.Tensor) -> torch.Tensor:
        if pair.ndim != 2 or pair.shape[1] != self.in_dim:
            raise ValueError(f"GlobalCritic expects (B, {self.in_dim}) pairs, got {tuple(pair.shape)}")
        return self.net(pair).squeeze(1)


class LocalCritic(nn.Module):
    """T2: the same MLP applied at every location = a stack of 1x1 convolutions."""

    def __init__(self, in_ch: int, width: int = 256):
        super().__init__()
        require("LocalCritic", positive={"in_ch": in_ch, "width": width}, whole=True)
        self.in_ch = in_ch
        self.net = nn.Sequential(nn.Conv2d(in_ch, width, 1), nn.ReLU(), nn.Conv2d(width, width, 1), nn.ReLU(),
                                 nn.Conv2d(width, width, 1), nn.ReLU(), nn.Conv2d(width, 1, 1))

    def forward(self, pair: torch.Tensor) -> torch.Tensor:
        if pair.ndim != 4 or pair.shape[1] != self.in_ch:
            raise ValueError(f"LocalCritic expects (B, {self.in_ch}, h, w) maps, got {tuple(pair.shape)}")
        return self.net(pair)


def global_pairs(z: torch.Tensor, c: torch.Tensor, perm: torch.Tensor, mode: str = "post",
                 other: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs of the global critic.
    post (author's code): positive [z, z], negative [z, z_perm];
    paper (DIM): positive [flatten C(x), z], negative [flatten C(x_perm), z].
    With two views (eq-01-views), `other` is the code of the second view and `c` its local map:
    the post's pair becomes [z_a, z_b] against [z_a, z_b perm]."""
    if mode == "post":
        o = z if other is None else other
        return torch.cat([z, o], 1), torch.cat([z, o[perm]], 1)
    if mode == "paper":
        flat = c.flatten(1)
        return torch.cat([flat, z], 1), torch.cat([flat[perm], z], 1)
    raise ValueError(f"unknown global critic input {mode!r}; choose 'post' or 'paper'")


def local_pairs(z: torch.Tensor, c: torch.Tensor, perm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Concat-and-convolve: broadcast z to every cell of C(x); positive [z, C(x)],
    negative [z, C(x_perm)] along channels. With two views, C is the other view's map."""
    zb = z[:, :, None, None].expand(-1, -1, c.shape[2], c.shape[3])
    return torch.cat([zb, c], 1), torch.cat([zb, c[perm]], 1)


def random_views(x: torch.Tensor, scale: tuple[float, float] = (0.35, 1.0), jitter: float = 0.4,
                 gray: float = 0.2, ratio: float = 4 / 3) -> torch.Tensor:
    """One random view per image of a batch in [-0.5, 0.5] (eq-01-views): a crop covering a
    fraction `scale` of the area with aspect ratio in [1/ratio, ratio], resized back bilinearly
    (reflected borders), a horizontal flip with probability 1/2, brightness, contrast and
    saturation each scaled by a factor in [1 - jitter, 1 + jitter], and greyscale with
    probability `gray`. Uses the global torch RNG, so checkpoint/resume replays it."""
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"random_views expects (B, 3, H, W) colour images, got shape {tuple(x.shape)}")
    require("random_views", positive={"scale": tuple(scale), "ratio": ratio}, nonneg={"jitter": jitter})
    require("random_views", unit={"scale": tuple(scale), "gray": gray})
    b, dev = x.shape[0], x.device
    u = lambda *shape: torch.rand(*shape, device=dev)  # noqa: E731
    area = scale[0] + (scale[1] - scale[0]) * u(b)
    aspect = torch.exp((u(b) * 2 - 1) * math.log(ratio))
    sx, sy = (area * aspect).sqrt().clamp(max=1), (area / aspect).sqrt().clamp(max=1)
    flip = torch.where(u(b) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3, device=dev)
    theta[:, 0, 0], theta[:, 1, 1] = sx * flip, sy
    theta[:, 0, 2], theta[:, 1, 2] = (u(b) * 2 - 1) * (1 - sx), (u(b) * 2 - 1) * (1 - sy)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    v = F.grid_sample(x + 0.5, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    factor = lambda: 1 + (u(b, 1, 1, 1) * 2 - 1) * jitter  # noqa: E731
    v = v * factor()                                             # brightness
    mean = v.mean((1, 2, 3), keepdim=True)
    v = (v - mean) * factor() + mean                             # contrast
    grey = (v * torch.tensor([0.299, 0.587, 0.114], device=dev)[None, :, None, None]).sum(1, keepdim=True)
    v = (v - grey) * factor() + grey                             # saturation
    v = torch.where(u(b, 1, 1, 1) < gray, grey.expand_as(v), v)
    return v.clamp(0, 1) - 0.5


# =============================================================== the loss
class InfoMax(nn.Module):
    """Encoder + global critic T1 + local critic T2 with the weights of (eq-01-total).
    views=1 is the post; views=2 pairs the code of one random view with the other view
    (eq-01-views)."""

    def __init__(self, width: float = 1.0, z_dim: int = 256, critic_width: int = 256,
                 alpha: float = 0.5, beta: float = 1.5, gamma: float = 0.01,
                 global_input: str = "post", shuffle: str = "randperm", image_size: int = 32,
                 views: int = 1, view_scale: tuple[float, float] = (0.35, 1.0), view_jitter: float = 0.4,
                 view_gray: float = 0.2):
        super().__init__()
        require("InfoMax", nonneg={"alpha": alpha, "beta": beta, "gamma": gamma})
        require("InfoMax", positive={"image_size": image_size}, whole=True)
        if image_size % 8:
            raise ValueError(f"InfoMax: image_size must be a multiple of 8 (three 2x2 pools), got {image_size}")
        if global_input not in GLOBAL_INPUTS:
            raise ValueError(f"unknown global critic input {global_input!r}; choose 'post' or 'paper'")
        if views not in (1, 2):
            raise ValueError(f"views must be 1 (the post) or 2 (two random views), got {views!r}")
        self.encoder = Encoder(width, z_dim)
        cl, hw = self.encoder.local_ch, (image_size // 8) ** 2
        g_in = 2 * z_dim if global_input == "post" else cl * hw + z_dim
        self.global_critic = GlobalCritic(g_in, critic_width)
        self.local_critic = LocalCritic(z_dim + cl, critic_width)
        self.alpha, self.beta, self.gamma = alpha, beta, gamma
        self.global_input, self.shuffle = global_input, shuffle
        self.views, self.view_args = views, (tuple(view_scale), view_jitter, view_gray)

    def losses(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.views == 2:  # (eq-01-views): both views in one pass, so BatchNorm sees both
            b = x.shape[0]
            xv = torch.cat([random_views(x, *self.view_args), random_views(x, *self.view_args)])
            c, mu, logvar = self.encoder(xv)
            z = reparameterise(mu, logvar)
            z_a, z_b, c_b = z[:b], z[b:], c[b:]
        else:
            c, mu, logvar = self.encoder(x)
            z_a = z_b = reparameterise(mu, logvar)
            c_b = c
        _, perm_g = shuffle_batch(z_a, self.shuffle)
        _, perm_l = shuffle_batch(z_a, self.shuffle)
        g_pos, g_neg = global_pairs(z_a, c_b, perm_g, self.global_input, other=z_b)
        l_pos, l_neg = local_pairs(z_a, c_b, perm_l)
        glob = bce_mi_loss(self.global_critic(g_pos), self.global_critic(g_neg))
        loc = bce_mi_loss(self.local_critic(l_pos), self.local_critic(l_neg))
        # (eq-01-kl-gauss) averaged over the code dimensions as in the post's code (over both
        # views when there are two): gamma = 0.01 weighs the textbook KL by 0.01 / z_dim
        kl = gaussian_kl(mu, logvar).mean()
        # (eq-01-total)
        total = self.alpha * glob + self.beta * loc + self.gamma * kl
        return {"loss": total, "global": glob, "local": loc, "kl": kl, "logvar": logvar.mean()}


def infomax_step(model: InfoMax, batch) -> tuple[torch.Tensor, dict]:
    """The Trainer's step function: one minibatch of images (labels ignored)."""
    x = batch[0] if isinstance(batch, (tuple, list)) else batch
    out = model.losses(x)
    return out["loss"], {k: v.detach() for k, v in out.items() if k != "loss"}

