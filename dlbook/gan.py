"""A small, shared GAN toolkit: 2-D toy data with mode centres, MLP and DCGAN-style nets,
loss objects (each a transcription of its equation), penalty-point sampling, a training loop
with an update ratio, AMP, snapshots and resumable checkpoints, toy metrics, a proxy-FID and
the usual plots (sample scatter, critic heat map with gradient-norm contours).

Sign convention everywhere: the critic ``T`` is trained to be HIGH on real data; every
``critic_loss`` is a quantity to MINIMISE.
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

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


def toy_dataset(name: str, std: float = 0.05) -> Toy2D:
    """'8gaussians' (radius 2), '25gaussians' (5x5 grid, spacing 2) or 'swissroll'."""
    if name == "8gaussians":
        a = np.arange(8) * (2 * np.pi / 8)
        return Toy2D(name, 2.0 * np.stack([np.cos(a), np.sin(a)], 1), std, 3.0)
    if name == "25gaussians":
        g = np.arange(-2, 3) * 2.0
        return Toy2D(name, np.array([(u, v) for u in g for v in g]), std, 5.5)
    if name == "swissroll":
        return Toy2D(name, None, std, 2.5)
    raise ValueError(f"unknown toy dataset {name!r}: choose 8gaussians, 25gaussians or swissroll")


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


def mlp(in_dim: int, out_dim: int, width: int = 128, depth: int = 3, act: str = "relu") -> nn.Sequential:
    """``depth`` hidden layers of ``width`` units; act 'relu', 'lrelu' (slope 0.2) or 'tanh'."""
    acts = {"relu": nn.ReLU, "lrelu": lambda: nn.LeakyReLU(0.2), "tanh": nn.Tanh}
    if act not in acts:
        raise ValueError(f"unknown activation {act!r}: choose one of {sorted(acts)}")
    layers, d = [], in_dim
    for _ in range(depth):
        layers += [nn.Linear(d, width), acts[act]()]
        d = width
    layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)


def _dcgan_init(m: nn.Module) -> None:
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def _n_layers(img_size: int) -> int:
    n = int(round(math.log2(img_size))) - 3
    if img_size != 2 ** (n + 3) or n < 1:
        raise ValueError(f"img_size must be a power of two >= 16, got {img_size}")
    return n


class ConvCritic(nn.Module):
    """DCGAN-like critic: ``log2(size)-2`` convs (k x k, stride 2, no bias, N(0, 0.02^2)),
    norm after all but the first, LeakyReLU(0.2), global average pooling, Linear(1, no bias).
    ``norm``: 'bn' (as the post), 'ln' (LayerNorm over C,H,W via GroupNorm(1)) or 'none'."""

    def __init__(self, img_size: int = 64, channels: int = 3, base: int = 64, max_ch: int = 1024,
                 kernel: int = 5, norm: str = "bn"):
        super().__init__()
        n = _n_layers(img_size)
        if norm not in ("bn", "ln", "none"):
            raise ValueError(f"unknown norm {norm!r}: choose bn, ln or none")
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((2, 3)))


class ConvGenerator(nn.Module):
    """DCGAN-like generator: z -> Linear(4*4*C) -> BN -> ReLU -> ``log2(size)-3`` transposed
    convs (k x k, stride 2, halving channels, BN, ReLU) -> transposed conv to ``channels`` -> tanh."""

    def __init__(self, z_dim: int = 128, img_size: int = 64, channels: int = 3, base: int = 64,
                 max_ch: int = 1024, kernel: int = 5):
        super().__init__()
        n = _n_layers(img_size)
        self.z_dim = z_dim
        c = min(base * 2 ** n, max_ch)
        self.c0 = c
        self.fc = nn.Sequential(nn.Linear(z_dim, 16 * c), nn.BatchNorm1d(16 * c), nn.ReLU())
        layers = []
        for i in range(n - 1, -1, -1):
            c_out = min(base * 2 ** i, max_ch)
            layers += [nn.ConvTranspose2d(c, c_out, kernel, 2, (kernel - 1) // 2, output_padding=kernel % 2),
                       nn.BatchNorm2d(c_out), nn.ReLU()]
            c = c_out
        layers += [nn.ConvTranspose2d(c, channels, kernel, 2, (kernel - 1) // 2, output_padding=kernel % 2), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(_dcgan_init)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
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


def _mix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    eps = torch.rand((len(a),) + (1,) * (a.ndim - 1), device=a.device, dtype=a.dtype)
    return eps * a + (1 - eps) * b


def sample_r(strategy: str, x_real: torch.Tensor, x_fake: torch.Tensor) -> torch.Tensor:
    """Points where the penalty is evaluated (the six strategies of Wu et al., fig. 2)."""
    if x_real.shape != x_fake.shape:
        raise ValueError(f"sample_r: real {tuple(x_real.shape)} and fake {tuple(x_fake.shape)} differ")
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
    if strategy == "real":
        return xr
    raise ValueError(f"unknown sampling strategy {strategy!r}: choose one of {STRATEGIES}")


def _up(t: torch.Tensor) -> torch.Tensor:
    """Half-precision (AMP) outputs -> float32; float32/float64 unchanged."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def grad_sq_norm(T: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """||grad_x T(x)||^2 per sample, differentiable (create_graph) for a penalty."""
    x = x.detach().requires_grad_(True)
    out = T(x)
    (g,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    return _up(g).pow(2).flatten(1).sum(1)


# ---------------------------------------------------------------- losses


class GANLoss:
    """A loss object: ``critic_loss(T, xr, xf) -> (loss, logs)`` and
    ``generator_loss(T, xr, xf) -> loss`` (both minimised); ``after_critic_step(T)`` runs
    after each critic update (weight clipping). ``n_critic`` is the default update ratio."""

    name = "gan"
    n_critic = 1

    def critic_loss(self, T, x_real, x_fake):  # pragma: no cover - interface
        raise NotImplementedError

    def generator_loss(self, T, x_real, x_fake):  # pragma: no cover - interface
        raise NotImplementedError

    def after_critic_step(self, T: nn.Module) -> None:
        pass


class StandardGAN(GANLoss):
    """Goodfellow et al.: critic maximises E_p log s(T) + E_q log(1 - s(T)); the generator
    uses the non-saturating loss -E_q log s(T(G(z)))."""

    name = "SGAN"

    def critic_loss(self, T, x_real, x_fake):
        tr, tf = _up(T(x_real)), _up(T(x_fake))
        loss = F.softplus(-tr).mean() + F.softplus(tf).mean()  # (eq-05-sgan)
        return loss, {"critic": loss.detach()}

    def generator_loss(self, T, x_real, x_fake):
        return F.softplus(-_up(T(x_fake))).mean()  # (eq-05-sgan), non-saturating


class WGANClip(GANLoss):
    """Arjovsky et al.: min -E_p T + E_q T, then clip every critic weight to [-c, c]."""

    name = "WGAN-clip"
    n_critic = 5

    def __init__(self, clip: float = 0.01):
        self.clip = clip

    def critic_loss(self, T, x_real, x_fake):
        w = _up(T(x_real)).mean() - _up(T(x_fake)).mean()
        loss = -w  # (eq-05-wgan)
        return loss, {"critic": loss.detach(), "w": w.detach()}

    def generator_loss(self, T, x_real, x_fake):
        return -_up(T(x_fake)).mean()  # (eq-05-wgan)

    @torch.no_grad()
    def after_critic_step(self, T):
        for prm in T.parameters():
            prm.clamp_(-self.clip, self.clip)


class WGANGP(GANLoss):
    """Gulrajani et al.: min -E_p T + E_q T + lam E_r (||grad T|| - 1)^2 (two-sided);
    ``one_sided`` uses max(0, ||grad T|| - 1)^2."""

    name = "WGAN-GP"
    n_critic = 5

    def __init__(self, lam: float = 10.0, strategy: str = "interp", one_sided: bool = False):
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown sampling strategy {strategy!r}: choose one of {STRATEGIES}")
        self.lam, self.strategy, self.one_sided = lam, strategy, one_sided

    def penalty(self, T, x):
        norm = (grad_sq_norm(T, x) + 1e-12).sqrt()
        gap = F.relu(norm - 1) if self.one_sided else norm - 1
        return self.lam * gap.pow(2).mean()  # (eq-05-gp)

    def critic_loss(self, T, x_real, x_fake):
        w = _up(T(x_real)).mean() - _up(T(x_fake)).mean()
        pen = self.penalty(T, sample_r(self.strategy, x_real, x_fake))
        loss = -w + pen  # (eq-05-gp)
        return loss, {"critic": loss.detach(), "w": w.detach(), "penalty": pen.detach()}

    def generator_loss(self, T, x_real, x_fake):
        return -_up(T(x_fake)).mean()


class WGANDiv(GANLoss):
    """Wu et al.: min -E_p T + E_q T + k E_r ||grad T||^p, no Lipschitz constraint.
    ``strategy='pool'`` is the post's form: k/2 (mean_real + mean_fake) of ||grad T||^p."""

    name = "WGAN-div"
    n_critic = 1

    def __init__(self, k: float = 2.0, p: float = 6.0, strategy: str = "pool"):
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown sampling strategy {strategy!r}: choose one of {STRATEGIES}")
        if not (k > 0 and p > 1):
            raise ValueError(f"WGAN-div needs k > 0 and p > 1, got k={k}, p={p}")
        self.k, self.p, self.strategy = k, p, strategy

    def penalty(self, T, x):
        return self.k * grad_sq_norm(T, x).pow(self.p / 2).mean()  # (eq-05-wdiv): k E_r ||grad T||^p

    def critic_loss(self, T, x_real, x_fake):
        w = _up(T(x_real)).mean() - _up(T(x_fake)).mean()
        pen = self.penalty(T, sample_r(self.strategy, x_real, x_fake))
        loss = -w + pen  # (eq-05-wdiv)
        return loss, {"critic": loss.detach(), "w": w.detach(), "penalty": pen.detach()}

    def generator_loss(self, T, x_real, x_fake):
        return -_up(T(x_fake)).mean()  # (eq-05-gen): the penalty is dropped (envelope theorem)


LOSSES = {"sgan": StandardGAN, "wgan-clip": WGANClip, "wgan-gp": WGANGP, "wgan-div": WGANDiv}


def make_loss(name: str, **kw) -> GANLoss:
    if name not in LOSSES:
        raise ValueError(f"unknown GAN loss {name!r}: choose one of {sorted(LOSSES)}")
    return LOSSES[name](**kw)


# ---------------------------------------------------------------- training loop


@dataclass
class GANHistory:
    steps: list[int] = field(default_factory=list)
    metrics: dict[str, list[float]] = field(default_factory=dict)
    snapshots: dict[int, Any] = field(default_factory=dict)
    evals: dict[int, dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0

    def log(self, step: int, values: dict[str, float]) -> None:
        self.steps.append(step)
        for k, v in values.items():
            self.metrics.setdefault(k, [float("nan")] * (len(self.steps) - 1)).append(float(v))
        for col in self.metrics.values():
            if len(col) < len(self.steps):
                col.append(float("nan"))


@dataclass
class GANConfig:
    steps: int = 4000  # generator updates
    n_critic: int | None = None  # None: the loss object's default
    batch: int = 256
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    z_dim: int = 2
    log_every: int = 50
    eval_every: int = 500
    snapshot_every: int = 500
    checkpoint_every: int = 0  # 0: never
    amp: bool = True  # bf16 autocast on CUDA only
    progress: bool = True


def train_gan(G: nn.Module, T: nn.Module, loss: GANLoss, sample_real: Callable[[int, torch.Generator], torch.Tensor],
              cfg: GANConfig, seed: int = 0, device: str | torch.device = "cpu",
              evaluate: Callable[[nn.Module, int], dict] | None = None,
              snapshot: Callable[[nn.Module, int], Any] | None = None,
              checkpoint: str | os.PathLike | None = None, desc: str = "") -> GANHistory:
    """Alternate ``n_critic`` critic updates (minimise ``loss.critic_loss``) and one generator
    update (minimise ``loss.generator_loss``) for ``cfg.steps`` generator steps.

    ``sample_real(n, gen)`` returns a real batch; ``evaluate(G, step)`` and
    ``snapshot(G, step)`` run every ``eval_every`` / ``snapshot_every`` steps (and at 0 and
    the end). With ``checkpoint`` set, state is saved every ``checkpoint_every`` steps and a
    run resumes from it."""
    dev = torch.device(device)
    G.to(dev).train()
    T.to(dev).train()
    n_critic = cfg.n_critic or loss.n_critic
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt_g = torch.optim.Adam(G.parameters(), cfg.lr, betas=cfg.betas)
    opt_t = torch.optim.Adam(T.parameters(), cfg.lr, betas=cfg.betas)
    hist, start = GANHistory(), 0
    ckpt = Path(checkpoint) if checkpoint else None
    if ckpt is not None and ckpt.is_file():
        st = torch.load(ckpt, map_location=dev, weights_only=False)
        G.load_state_dict(st["G"]); T.load_state_dict(st["T"])
        opt_g.load_state_dict(st["opt_g"]); opt_t.load_state_dict(st["opt_t"])
        gen.set_state(st["gen"]); torch.set_rng_state(st["torch_rng"])
        hist, start = st["history"], st["step"]
    use_amp = cfg.amp and dev.type == "cuda"
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_amp else contextlib.nullcontext

    def z(n):
        return torch.randn(n, cfg.z_dim, generator=gen).to(dev)

    def real(n):
        return sample_real(n, gen).to(dev)

    def hooks(step):
        if evaluate is not None and (step % cfg.eval_every == 0 or step == cfg.steps) and step not in hist.evals:
            G.eval(); hist.evals[step] = evaluate(G, step); G.train()
        if snapshot is not None and (step % cfg.snapshot_every == 0 or step == cfg.steps) and step not in hist.snapshots:
            G.eval(); hist.snapshots[step] = snapshot(G, step); G.train()

    import time

    from tqdm.auto import tqdm
    t0 = time.perf_counter() - hist.seconds
    hooks(start)
    bar = tqdm(range(start, cfg.steps), desc=desc or loss.name, disable=not cfg.progress, leave=False)
    for step in bar:
        for _ in range(n_critic):
            xr = real(cfg.batch)
            with torch.no_grad(), autocast():
                xf = _up(G(z(cfg.batch)))
            with autocast():
                lt, logs = loss.critic_loss(T, xr, xf)
            opt_t.zero_grad(set_to_none=True)
            lt.backward()
            opt_t.step()
            loss.after_critic_step(T)
        for prm in T.parameters():
            prm.requires_grad_(False)
        with autocast():
            lg = loss.generator_loss(T, xr, G(z(cfg.batch)))
        opt_g.zero_grad(set_to_none=True)
        lg.backward()
        opt_g.step()
        for prm in T.parameters():
            prm.requires_grad_(True)
        s = step + 1
        if s % cfg.log_every == 0 or s == cfg.steps:
            vals = {k: float(v) for k, v in logs.items()}
            vals["generator"] = float(lg.detach())
            hist.log(s, vals)
            if cfg.progress:
                bar.set_postfix(critic=f"{vals['critic']:.3g}")
        hooks(s)
        if ckpt is not None and cfg.checkpoint_every and (s % cfg.checkpoint_every == 0 or s == cfg.steps):
            hist.seconds = time.perf_counter() - t0
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            tmp = ckpt.with_suffix(".tmp")
            torch.save({"G": G.state_dict(), "T": T.state_dict(), "opt_g": opt_g.state_dict(),
                        "opt_t": opt_t.state_dict(), "gen": gen.get_state(),
                        "torch_rng": torch.get_rng_state(), "history": hist, "step": s}, tmp)
            os.replace(tmp, ckpt)
    hist.seconds = time.perf_counter() - t0
    return hist


def load_images(data: str, n_train: int, img_size: int) -> tuple[torch.Tensor, torch.Tensor | None, str]:
    """Training images of a registered dataset in [-1, 1], shape (N, C, img_size, img_size), their
    labels (None for CelebA, which has none here) and the data source. MNIST-style 28x28 images are
    padded to `img_size`; CelebA face crops are centre-cropped square and resized."""
    from . import data as D

    a = D.load(data, "train", limit=n_train)
    x = D.to_float(a.x)
    if data == "celeba":
        h, w = x.shape[-2:]
        s = min(h, w)
        x = x[..., (h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
        x = F.interpolate(x, size=img_size, mode="bilinear", antialias=True, align_corners=False)
        return x * 2 - 1, None, a.source
    pad = (img_size - x.shape[-1]) // 2
    if pad > 0:
        x = F.pad(x, (pad, pad, pad, pad))
    return x * 2 - 1, torch.as_tensor(a.y), a.source


def train_image_gan(G: nn.Module, T: nn.Module, loss: GANLoss, x: torch.Tensor, cfg: Any,
                    fid: "ProxyFID | None" = None, n_critic: int | None = None, seed: int = 0,
                    device: str | torch.device | None = None, checkpoint: str | os.PathLike | None = None,
                    desc: str = "") -> GANHistory:
    """`train_gan` on a tensor of images ``x`` (N, C, H, W in [-1, 1]) with the hooks every image
    experiment wants: the proxy-FID of ``cfg.n_fid`` samples and a grid of 64 samples from fixed
    noise every ``cfg.eval_every`` generator steps. ``cfg`` is a chapter's image configuration
    (``steps, batch, lr, betas, z_dim, eval_every, n_fid``)."""
    from .config import device as default_device

    dev = torch.device(device or default_device())
    gcfg = GANConfig(steps=cfg.steps, n_critic=n_critic or loss.n_critic, batch=cfg.batch, lr=cfg.lr,
                     betas=cfg.betas, z_dim=cfg.z_dim, log_every=max(1, cfg.eval_every // 10),
                     eval_every=cfg.eval_every, snapshot_every=cfg.eval_every,
                     checkpoint_every=cfg.eval_every if checkpoint else 0)
    zfix = torch.randn(64, cfg.z_dim, generator=torch.Generator().manual_seed(1234))
    xdev = x.to(dev)

    def sample_real(n, g):
        return xdev[torch.randint(len(xdev), (n,), generator=g).to(dev)]

    @torch.no_grad()
    def generate(Gm, n, bs=500):
        g = torch.Generator().manual_seed(4321)
        return torch.cat([Gm(torch.randn(min(bs, n - i), cfg.z_dim, generator=g).to(dev)).float().cpu()
                          for i in range(0, n, bs)])

    def evaluate(Gm, step):
        return {"proxy_fid": fid(generate(Gm, cfg.n_fid).to(fid.device)) if fid is not None else float("nan")}

    @torch.no_grad()
    def snapshot(Gm, step):
        return Gm(zfix.to(dev)).float().cpu().numpy()

    return train_gan(G, T, loss, sample_real, gcfg, seed=seed, device=dev, evaluate=evaluate,
                     snapshot=snapshot, checkpoint=checkpoint, desc=desc or loss.name)


def run_jobs(job: Callable[[dict], Any], specs: list[dict], workers: int = 1, desc: str = "runs") -> list:
    """``[job(s) for s in specs]``, in ``workers`` spawned processes when > 1 (toy GANs are
    small: one thread per process uses two cores better than two threads in one). ``job`` must be
    a module-level function so that it can be sent to the workers."""
    from tqdm.auto import tqdm

    if workers <= 1:
        return [job(s) for s in tqdm(specs, desc=desc)]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    out: list = [None] * len(specs)
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as ex:
        futs = {ex.submit(job, s): i for i, s in enumerate(specs)}
        for f in tqdm(as_completed(futs), total=len(futs), desc=desc):
            out[futs[f]] = f.result()
    return out


# ---------------------------------------------------------------- proxy-FID


class FeatureNet(nn.Module):
    """A small conv classifier; its penultimate layer gives the proxy-FID features."""

    def __init__(self, channels: int, n_out: int, img_size: int = 32, width: int = 32, feat: int = 128):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 4 * width, 3, 1, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(4 * width, feat), nn.ReLU())
        self.out = nn.Linear(feat, n_out)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.out(self.body(x))


def _rotations(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    k = torch.randint(4, (len(x),))
    return torch.stack([torch.rot90(a, int(j), (1, 2)) for a, j in zip(x, k)]), k


def frechet_distance(mu1, s1, mu2, s2) -> float:
    """||mu1-mu2||^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2), float64, via eigh."""
    mu1, mu2, s1, s2 = (np.asarray(a, np.float64) for a in (mu1, mu2, s1, s2))
    w, v = np.linalg.eigh(s1)
    r1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = r1 @ s2 @ r1
    ev = np.linalg.eigvalsh((m + m.T) / 2)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(ev, 0, None)).sum())


class ProxyFID:
    """Fréchet distance in the feature space of a small classifier trained once per dataset
    (on its labels, or on rotation prediction when there are none) and cached on disk.
    NOT the Inception FID of the literature: values are comparable only with each other."""

    def __init__(self, x_real: torch.Tensor, y: torch.Tensor | None = None, key: str = "data",
                 steps: int = 600, batch: int = 64, device: str | torch.device = "cpu",
                 cache_dir: str | os.PathLike | None = None, seed: int = 0, progress: bool = True,
                 width: int = 8, feat: int = 64):
        """``x_real``: (N, C, H, W) in [-1, 1] (H = W, a multiple of 4)."""
        self.device = torch.device(device)
        n_out = int(y.max()) + 1 if y is not None else 4
        self.net = FeatureNet(x_real.shape[1], n_out, x_real.shape[-1], width, feat).to(self.device)
        h = hashlib.sha256(f"{key}|{tuple(x_real.shape)}|{steps}|{batch}|{seed}|{y is None}|{width}|{feat}".encode()).hexdigest()[:12]
        root = Path(cache_dir or os.environ.get("DLBOOK_DATA") or Path.home() / ".cache" / "dlbook")
        path = root / "proxyfid" / f"{key}-{h}.pt"
        if path.is_file():
            self.net.load_state_dict(torch.load(path, map_location=self.device))
        else:
            self._train(x_real, y, steps, batch, seed, progress)
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(self.net.state_dict(), path)
        self.net.eval()
        self.mu, self.cov = self.stats(x_real)

    def _train(self, x, y, steps, batch, seed, progress):
        from tqdm.auto import tqdm
        g = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(self.net.parameters(), 1e-3)
        for _ in tqdm(range(steps), desc="proxy-FID features", disable=not progress, leave=False):
            idx = torch.randint(len(x), (batch,), generator=g)
            xb = x[idx]
            yb = y[idx] if y is not None else None
            if yb is None:
                xb, yb = _rotations(xb)
            loss = F.cross_entropy(self.net(xb.to(self.device)), yb.to(self.device))
            opt.zero_grad(); loss.backward(); opt.step()

    @torch.no_grad()
    def stats(self, x: torch.Tensor, batch: int = 500):
        f = torch.cat([self.net.features(x[i:i + batch].to(self.device)).double().cpu()
                       for i in range(0, len(x), batch)]).numpy()
        return f.mean(0), np.cov(f, rowvar=False)

    def __call__(self, x_fake: torch.Tensor) -> float:
        mu, cov = self.stats(x_fake)
        return frechet_distance(mu, cov, self.mu, self.cov)


# ---------------------------------------------------------------- plots


def plot_samples(ax, fake, data: Toy2D | None = None, real=None, title: str | None = None, lim: float | None = None):
    """Scatter of generated points (and real points / mode centres, if given)."""
    fake = np.asarray(fake)
    if real is not None:
        real = np.asarray(real)
        ax.scatter(real[:, 0], real[:, 1], s=2, c="0.7", label="real")
    ax.scatter(fake[:, 0], fake[:, 1], s=2, c="C0", alpha=0.5, label="generated")
    if data is not None and data.centres is not None:
        ax.scatter(data.centres[:, 0], data.centres[:, 1], marker="x", c="k", s=25, label="modes")
    lim = lim or (data.lim if data is not None else None)
    if lim:
        ax.set_xlim(-lim, lim); ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    if title:
        ax.set_title(title)
    return ax


def critic_field(T: nn.Module, lim: float, n: int = 121) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(grid axis, T on the grid, ||grad T|| on the grid) over [-lim, lim]^2."""
    u = torch.linspace(-lim, lim, n)
    xx, yy = torch.meshgrid(u, u, indexing="xy")
    pts = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)
    dev = next(T.parameters()).device
    was = T.training
    T.eval()
    pts = pts.to(dev).requires_grad_(True)
    out = _up(T(pts))
    (g,) = torch.autograd.grad(out.sum(), pts)
    T.train(was)
    return (u.numpy(), out.detach().cpu().reshape(n, n).numpy(), g.norm(dim=1).cpu().reshape(n, n).numpy())


def plot_critic(ax, field_, fake=None, data: Toy2D | None = None, levels: Sequence[float] = (0.5, 1.0, 2.0),
                title: str | None = None, colorbar: bool = False):
    """Heat map of the critic with contours of its gradient norm (labelled)."""
    u, t, gn = field_
    im = ax.imshow(t, extent=(u[0], u[-1], u[0], u[-1]), origin="lower", cmap="viridis")
    cs = ax.contour(u, u, gn, levels=list(levels), colors="w", linewidths=0.8)
    ax.clabel(cs, fmt="|∇T|=%g", fontsize=7)
    if fake is not None:
        f = np.asarray(fake)
        ax.scatter(f[:, 0], f[:, 1], s=1, c="r", alpha=0.3)
    if data is not None and data.centres is not None:
        ax.scatter(data.centres[:, 0], data.centres[:, 1], marker="x", c="k", s=20)
    ax.set_xlim(u[0], u[-1]); ax.set_ylim(u[0], u[-1])
    ax.set_aspect("equal"); ax.grid(False)
    if title:
        ax.set_title(title)
    if colorbar:
        ax.figure.colorbar(im, ax=ax, fraction=0.046)
    return ax
