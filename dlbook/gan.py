"""What the GAN chapters show: 2-D toy data and their mode metrics, generator and critic nets
(including a spectrally normalised critic), penalty points, and the losses, each a
transcription of its equation with the label of the chapter that derives it.

How GAN experiments *run* (the training loop, toy jobs, image experiments, classifier-FID and
KID, plots) lives in `dlbook.gan_runs`.

Sign convention everywhere: the critic ``T`` is trained to be HIGH on real data; every
``critic_loss`` and ``generator_loss`` is a quantity to MINIMISE.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .config import require

# ---------------------------------------------------------------- 2-D toy data


@dataclass(frozen=True)
class Toy2D:
    """A 2-D toy distribution. ``centres`` are the modes (None for a curve such as the
    swiss roll) and ``std`` their standard deviation."""

    name: str
    centres: np.ndarray | None
    std: float
    lim: float  # half-width of the square used for plots

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.centres is not None:
            c = torch.as_tensor(self.centres, dtype=torch.float32)
            idx = torch.randint(len(c), (n,), generator=generator)
            return c[idx] + self.std * torch.randn(n, 2, generator=generator)
        if self.name == "swissroll":
            t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=generator))
            x = torch.stack([t * torch.cos(t), t * torch.sin(t)], 1) / 5.0
            return x + self.std * torch.randn(n, 2, generator=generator)
        raise ValueError(f"Toy2D {self.name!r} has no sampler")


TOYS = ("8gaussians", "25gaussians", "swissroll")


def toy_dataset(name: str, std: float = 0.05) -> Toy2D:
    """'8gaussians' (radius 2), '25gaussians' (5x5 grid, spacing 2) or 'swissroll'."""
    require("toy_dataset", positive={"std": std})
    if name == "8gaussians":
        a = np.arange(8) * (2 * np.pi / 8)
        return Toy2D(name, 2.0 * np.stack([np.cos(a), np.sin(a)], 1), std, 3.0)
    if name == "25gaussians":
        g = np.arange(-2, 3) * 2.0
        return Toy2D(name, np.array([(u, v) for u in g for v in g]), std, 5.5)
    if name == "swissroll":
        return Toy2D(name, None, std, 2.5)
    raise ValueError(f"unknown toy dataset {name!r}: choose one of {', '.join(TOYS)}")


def mode_metrics(x, centres, std: float, nsigma: float = 3.0, min_share: float = 0.2) -> tuple[int, float]:
    """(modes covered, quality). A sample is *good* if it lies within ``nsigma*std`` of some
    centre; quality is the fraction of good samples; a mode is *covered* if it holds at least
    ``min_share`` of its fair share ``n/len(centres)`` of the samples."""
    x = torch.as_tensor(np.asarray(x, dtype=np.float64) if not isinstance(x, torch.Tensor) else x).double()
    c = torch.as_tensor(np.asarray(centres), dtype=torch.float64)
    if x.ndim != 2 or c.ndim != 2 or x.shape[1] != c.shape[1]:
        raise ValueError(f"mode_metrics: need x (N,D) and centres (M,D), got {tuple(x.shape)}, {tuple(c.shape)}")
    d = torch.cdist(x, c)
    dmin, j = d.min(1)
    good = dmin <= nsigma * std
    counts = torch.bincount(j[good], minlength=len(c))
    covered = int((counts >= min_share * len(x) / len(c)).sum())
    return covered, float(good.double().mean())


# ---------------------------------------------------------------- networks

CRITIC_NORMS = ("none", "bn", "ln", "sn")
GEN_NORMS = ("bn", "none")


def spectral_normalise(net: nn.Module) -> nn.Module:
    """Wrap every Linear and Conv layer of ``net`` in spectral normalisation (Miyato et al.):
    the weight is divided by its largest singular value, estimated by one power iteration per
    training forward pass. A conv layer's weight is taken as a (C_out, C_in k k) matrix, as in
    the paper, which bounds but does not equal the conv operator's norm. Returns ``net``."""
    for m in list(net.modules()):
        for name, child in list(m.named_children()):
            if isinstance(child, (nn.Conv2d, nn.Linear)):
                setattr(m, name, nn.utils.parametrizations.spectral_norm(child))
    return net


def mlp(in_dim: int, out_dim: int, width: int = 128, depth: int = 3, act: str = "relu",
        norm: str = "none") -> nn.Sequential:
    """``depth`` hidden layers of ``width`` units; act 'relu', 'lrelu' (slope 0.2) or 'tanh';
    ``norm='sn'`` spectrally normalises every layer (a 1-Lipschitz critic with 'relu'/'lrelu')."""
    require("mlp", positive={"in_dim": in_dim, "out_dim": out_dim, "width": width, "depth": depth}, whole=True)
    acts = {"relu": nn.ReLU, "lrelu": lambda: nn.LeakyReLU(0.2), "tanh": nn.Tanh}
    if act not in acts:
        raise ValueError(f"unknown activation {act!r}: choose one of {sorted(acts)}")
    if norm not in ("none", "sn"):
        raise ValueError(f"mlp: norm must be 'none' or 'sn', got {norm!r}")
    layers, d = [], in_dim
    for _ in range(depth):
        layers += [nn.Linear(d, width), acts[act]()]
        d = width
    layers.append(nn.Linear(d, out_dim))
    net = nn.Sequential(*layers)
    return spectral_normalise(net) if norm == "sn" else net


def _dcgan_init(m: nn.Module) -> None:
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def n_layers(img_size: int) -> int:
    require("conv net", positive={"img_size": img_size}, whole=True)
    n = int(round(math.log2(img_size))) - 3
    if img_size != 2 ** (n + 3) or n < 1:
        raise ValueError(f"img_size must be a power of two >= 16, got {img_size}")
    return n


class ConvCritic(nn.Module):
    """DCGAN-like critic: ``log2(size)-2`` convs (k x k, stride 2, no bias, N(0, 0.02^2)),
    a normalisation after all but the first, LeakyReLU(0.2), global average pooling,
    Linear(1, no bias). ``norm``: 'bn' (BatchNorm, as the WGAN-div post), 'ln' (LayerNorm over
    C,H,W via GroupNorm(1), as WGAN-GP advises), 'none', or 'sn' (no normalisation layers;
    spectral normalisation of every conv and the linear head, as SN-GAN)."""

    def __init__(self, img_size: int = 64, channels: int = 3, base: int = 64, max_ch: int = 1024,
                 kernel: int = 5, norm: str = "bn"):
        super().__init__()
        n = n_layers(img_size)
        require("ConvCritic", positive={"channels": channels, "base": base, "max_ch": max_ch, "kernel": kernel},
                whole=True)
        if norm not in CRITIC_NORMS:
            raise ValueError(f"unknown critic norm {norm!r}: choose one of {', '.join(CRITIC_NORMS)}")
        self.norm = norm
        layers, c_in = [], channels
        for i in range(n + 1):
            c_out = min(base * 2 ** i, max_ch)
            layers.append(nn.Conv2d(c_in, c_out, kernel, 2, (kernel - 1) // 2, bias=False))
            if i > 0 and norm == "bn":
                layers.append(nn.BatchNorm2d(c_out))
            elif i > 0 and norm == "ln":
                layers.append(nn.GroupNorm(1, c_out))
            layers.append(nn.LeakyReLU(0.2))
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, 1, bias=False)
        self.apply(_dcgan_init)
        if norm == "sn":
            spectral_normalise(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((2, 3)))


class ConvGenerator(nn.Module):
    """DCGAN-like generator: z -> Linear(4*4*C) -> BN -> ReLU -> ``log2(size)-3`` transposed
    convs (k x k, stride 2, halving channels, BN, ReLU) -> transposed conv to ``channels`` -> tanh.
    ``norm='none'`` drops the BatchNorm layers."""

    def __init__(self, z_dim: int = 128, img_size: int = 64, channels: int = 3, base: int = 64,
                 max_ch: int = 1024, kernel: int = 5, norm: str = "bn"):
        super().__init__()
        n = n_layers(img_size)
        require("ConvGenerator", positive={"z_dim": z_dim, "channels": channels, "base": base, "max_ch": max_ch,
                                           "kernel": kernel}, whole=True)
        if norm not in GEN_NORMS:
            raise ValueError(f"unknown generator norm {norm!r}: choose one of {', '.join(GEN_NORMS)}")
        bn1 = nn.BatchNorm1d if norm == "bn" else (lambda c: nn.Identity())
        bn2 = nn.BatchNorm2d if norm == "bn" else (lambda c: nn.Identity())
        self.z_dim = z_dim
        c = min(base * 2 ** n, max_ch)
        self.c0 = c
        self.fc = nn.Sequential(nn.Linear(z_dim, 16 * c), bn1(16 * c), nn.ReLU())
        layers = []
        for i in range(n - 1, -1, -1):
            c_out = min(base * 2 ** i, max_ch)
            layers += [nn.ConvTranspose2d(c, c_out, kernel, 2, (kernel - 1) // 2, output_padding=kernel % 2),
                       bn2(c_out), nn.ReLU()]
            c = c_out
        layers += [nn.ConvTranspose2d(c, channels, kernel, 2, (kernel - 1) // 2, output_padding=kernel % 2), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(_dcgan_init)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"ConvGenerator: z must be (N, {self.z_dim}), got {tuple(z.shape)}")
        return self.net(self.fc(z).view(len(z), self.c0, 4, 4))


# ---------------------------------------------------------------- penalty points and gradients

STRATEGIES = ("interp", "interp_same", "interp_pool", "pool", "fake", "real")
STRATEGY_NAMES = {
    "interp": "real-fake interpolates",
    "interp_same": "real-real and fake-fake interpolates",
    "interp_pool": "interpolates of a random pair from the pool",
    "pool": "raw real and fake points",
    "fake": "raw fake points",
    "real": "raw real points",
}


def same_batch(x_real: torch.Tensor, x_fake: torch.Tensor, where: str) -> None:
    if x_real.shape != x_fake.shape:
        raise ValueError(f"{where}: real {tuple(x_real.shape)} and fake {tuple(x_fake.shape)} batches differ "
                         "in shape; pass equal batches (same N and sample shape)")


_SHARD = [0, 1]  # (this process's rank, number of processes) while train_gan runs under DDP


@contextlib.contextmanager
def penalty_shard(rank: int, world: int):
    """Inside the block, random penalty points are drawn for the global batch (``world`` shards)
    and this process keeps shard ``rank``: with every process seeded alike, N processes use the
    points one process fed the whole global batch would use (strategies 'interp', 'pool',
    'real', 'fake'; 'interp_same' and 'interp_pool' pair points within each process's shard)."""
    old = list(_SHARD)
    _SHARD[:] = [int(rank), int(world)]
    try:
        yield
    finally:
        _SHARD[:] = old


def _mix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    rank, world = _SHARD
    n = len(a)
    eps = torch.rand((n * world,) + (1,) * (a.ndim - 1), device=a.device, dtype=a.dtype)[rank * n:(rank + 1) * n]
    return eps * a + (1 - eps) * b


def sample_r(strategy: str, x_real: torch.Tensor, x_fake: torch.Tensor) -> torch.Tensor:
    """Points where the penalty is evaluated (the six strategies of Wu et al., fig. 2).
    Random draws use torch's global generator (the training loop seeds it per step)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown sampling strategy {strategy!r}: choose one of {STRATEGIES}")
    same_batch(x_real, x_fake, "sample_r")
    xr, xf = x_real.detach(), x_fake.detach()
    n = len(xr)
    if strategy == "interp":
        return _mix(xr, xf)
    if strategy == "interp_same":
        pr, pf = torch.randperm(n, device=xr.device), torch.randperm(n, device=xr.device)
        return torch.cat([_mix(xr, xr[pr]), _mix(xf, xf[pf])])
    if strategy == "interp_pool":
        pool = torch.cat([xr, xf])
        i, j = (torch.randint(2 * n, (n,), device=xr.device) for _ in range(2))
        return _mix(pool[i], pool[j])
    if strategy == "pool":
        return torch.cat([xr, xf])
    if strategy == "fake":
        return xf
    return xr


def as_float32(t: torch.Tensor) -> torch.Tensor:
    """Half-precision (AMP) outputs -> float32; float32/float64 unchanged."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def grad_sq_norm(T: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """||grad_x T(x)||^2 per sample, differentiable (create_graph) for a penalty."""
    return scores_and_grad_sq(T, x, "grad_sq_norm")[1]


def scores_and_grad_sq(T: nn.Module, x: torch.Tensor, where: str = "critic") -> tuple[torch.Tensor, torch.Tensor]:
    """(T(x) as (N,), ||grad_x T(x)||^2 per sample) from ONE pass of T, both differentiable in
    T's weights: a critic with BatchNorm sees the batch once, as when a penalty and the scores
    are taken from the same forward pass."""
    x = x.detach().requires_grad_(True)
    out = scores(T(x), len(x), where)
    (g,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    return out, as_float32(g).pow(2).flatten(1).sum(1)


def scores(t: torch.Tensor, n: int, where: str = "critic") -> torch.Tensor:
    """A critic's output for ``n`` samples as a (n,) tensor of at least float32. Anything but
    shape (n,) or (n, 1) is refused: a loss never broadcasts mismatched shapes."""
    if t.shape not in ((n,), (n, 1)):
        raise ValueError(f"{where}: the critic must return one score per sample, shape ({n},) or ({n}, 1); "
                         f"got {tuple(t.shape)}")
    return as_float32(t).reshape(n)


def critic_pair(t_real: torch.Tensor, t_fake: torch.Tensor, where: str = "loss") -> tuple[torch.Tensor, torch.Tensor]:
    """Scores on a real and a fake batch as two (N,) tensors of the same N (else a clear error)."""
    n = len(t_real) if t_real.ndim else -1
    if t_real.shape != t_fake.shape:
        raise ValueError(f"{where}: critic scores on real {tuple(t_real.shape)} and fake {tuple(t_fake.shape)} "
                         "differ in shape; pass equal batches")
    return scores(t_real, n, where), scores(t_fake, n, where)


# ---------------------------------------------------------------- losses


class GANLoss:
    """A loss object: ``critic_loss(T, xr, xf) -> (loss, logs)`` and
    ``generator_loss(T, xr, xf) -> loss`` (both minimised; ``xf`` carries the generator's
    graph in the generator step); ``after_critic_step(T)`` runs after each critic update
    (weight clipping). ``n_critic`` is the usual update ratio of the method."""

    name = "gan"
    n_critic = 1

    def critic_loss(self, T, x_real, x_fake):  # pragma: no cover - interface
        raise NotImplementedError

    def generator_loss(self, T, x_real, x_fake):  # pragma: no cover - interface
        raise NotImplementedError

    def after_critic_step(self, T: nn.Module) -> None:
        pass

    def _both(self, T, x_real, x_fake):
        same_batch(x_real, x_fake, self.name)
        return critic_pair(T(x_real), T(x_fake), self.name)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class StandardGAN(GANLoss):
    """Goodfellow et al.: the critic maximises E_p log s(T) + E_q log(1 - s(T)), the game of
    (eq-06-sgan-game); the generator minimises the non-saturating -E_q log s(T(G(z)))."""

    name = "SGAN"

    def critic_loss(self, T, x_real, x_fake):
        tr, tf = self._both(T, x_real, x_fake)
        loss = F.softplus(-tr).mean() + F.softplus(tf).mean()  # -(eq-06-sgan-game): -log s(t) = softplus(-t)
        return loss, {"critic": loss.detach()}

    def generator_loss(self, T, x_real, x_fake):
        same_batch(x_real, x_fake, self.name)
        return F.softplus(-scores(T(x_fake), len(x_fake), self.name)).mean()  # non-saturating form


class WGAN(GANLoss):
    """Arjovsky et al.: the critic maximises E_p T - E_q T (eq-05-dual) with no penalty; the
    Lipschitz constraint must come from the critic itself (``critic_norm='sn'``: WGAN-SN) or
    from a subclass (clipping). The generator minimises -E_q T (eq-05-gen)."""

    name = "WGAN"
    n_critic = 5

    def critic_loss(self, T, x_real, x_fake):
        tr, tf = self._both(T, x_real, x_fake)
        w = tr.mean() - tf.mean()
        loss = -w  # (eq-05-dual)
        return loss, {"critic": loss.detach(), "w": w.detach()}

    def generator_loss(self, T, x_real, x_fake):
        same_batch(x_real, x_fake, self.name)
        return -scores(T(x_fake), len(x_fake), self.name).mean()  # (eq-05-gen)


class WGANClip(WGAN):
    """Arjovsky et al.: (eq-05-dual), then clip every critic weight to [-c, c]."""

    name = "WGAN-clip"

    def __init__(self, clip: float = 0.01):
        require("WGANClip", positive={"clip": clip})
        self.clip = float(clip)

    @torch.no_grad()
    def after_critic_step(self, T):
        for prm in T.parameters():
            prm.clamp_(-self.clip, self.clip)


class WGANGP(WGAN):
    """Gulrajani et al.: min -E_p T + E_q T + lam E_r (||grad T|| - 1)^2 (eq-05-gp, two-sided);
    ``one_sided`` uses max(0, ||grad T|| - 1)^2."""

    name = "WGAN-GP"

    def __init__(self, lam: float = 10.0, strategy: str = "interp", one_sided: bool = False):
        require("WGANGP", nonneg={"lam": lam})
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown sampling strategy {strategy!r}: choose one of {STRATEGIES}")
        self.lam, self.strategy, self.one_sided = float(lam), strategy, bool(one_sided)

    def penalty(self, T, x):
        norm = (grad_sq_norm(T, x) + 1e-12).sqrt()
        gap = F.relu(norm - 1) if self.one_sided else norm - 1
        return self.lam * gap.pow(2).mean()  # (eq-05-gp)

    def critic_loss(self, T, x_real, x_fake):
        tr, tf = self._both(T, x_real, x_fake)
        w = tr.mean() - tf.mean()
        pen = self.penalty(T, sample_r(self.strategy, x_real, x_fake))
        loss = -w + pen  # (eq-05-gp)
        return loss, {"critic": loss.detach(), "w": w.detach(), "penalty": pen.detach()}


LOSSES = {"sgan": StandardGAN, "wgan": WGAN, "wgan-sn": WGAN, "wgan-clip": WGANClip, "wgan-gp": WGANGP}


def make_loss(name: str, **kw) -> GANLoss:
    """A loss by name (``wgan-sn`` is the plain WGAN loss, for a spectrally normalised critic;
    ``wgan-div`` is chapter 05's `dlbook.wgan_div.WGANDiv`)."""
    if name == "wgan-div":
        from .wgan_div import WGANDiv

        return WGANDiv(**kw)
    if name not in LOSSES:
        raise ValueError(f"unknown GAN loss {name!r}: choose one of {sorted([*LOSSES, 'wgan-div'])}")
    return LOSSES[name](**kw)


def __getattr__(name: str):
    """``gan.WGANDiv``: chapter 05's loss lives in `dlbook.wgan_div` (imported when first asked for)."""
    if name == "WGANDiv":
        from .wgan_div import WGANDiv

        return WGANDiv
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
