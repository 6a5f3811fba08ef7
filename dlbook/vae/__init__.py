"""Chapter 07: VAE, the variational information bottleneck and the standard normal prior.

Notation follows the chapter (and Su Jianlin's post): p(z|x) is the encoder, q(x|z) the
decoder, q(z) = N(0, I) the prior, p(z) the aggregate posterior. All information is in nats.
In the experiments `beta` is the KL *weight* (the post's lambda).

Every loss below is a transcription of one numbered equation of the chapter; the label is in
the comment beside it. The chapter's claims (the brief's thresholds, the per-seed results they
are decided on) live in `dlbook.vae.claims`; `claims` and `results_of` are re-exported here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError, Settings, by_profile, require
from ..config import device as default_device
from ..gaussian import code_statistics as _code_statistics
from ..gaussian import gaussian_kl, reparameterise
from ..train import ArrayLoader, Trainer

LOG10 = math.log(10.0)


# ----------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class Config(Settings):
    """Everything one profile of chapter 07 trains. Sizes are in images, epochs, nats."""

    SIZES = ("n_train", "n_test", "hidden", "latent", "epochs", "seeds", "latent_wide", "batch_size",
             "iw_samples", "n_probe", "vib_latent", "vib_epochs", "vib_seeds", "vib_gain_seeds",
             "vib_test_samples", "vdb_epochs")
    POSITIVE = ("lr", "vib_lr", "vdb_alpha", "vdb_targets", "vib_hidden")
    NONNEG = ("betas", "vib_betas")
    UNIT = ("vib_adam_beta1", "vib_decay", "vib_ema")

    n_train: int                      # MNIST training images (first n of the train split)
    n_test: int                       # held-out images (first n of the test split)
    hidden: int = 256                 # VAE: 784-hidden-2K / K-hidden-784 (bojone/vae)
    latent: int = 16                  # K for the rate-distortion sweep and decoupling (E3, E7)
    betas: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
    epochs: int = 20                  # per beta of the sweep
    seeds: int = 3                    # seeds of the VAE experiments (sweep, forgetting, adaptive beta)
    latent_wide: int = 64             # K for the forgotten-dimension experiment (E4)
    wide_runs: tuple[tuple[float, int], ...] = ((1.0, 60), (4.0, 30))  # (beta, epochs)
    batch_size: int = 100
    lr: float = 1e-3
    iw_samples: int = 64              # importance samples for the NLL estimate (claim 10)
    n_probe: int = 500                # held-out images for the decoder-sensitivity probe (claim 12)
    # VIB classifier (E5)
    vib_hidden: tuple[int, ...] = (256, 256)
    vib_latent: int = 32
    vib_betas: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
    vib_epochs: int = 30
    vib_seeds: int = 3                # seeds of the whole beta sweep
    vib_gain_beta: float = 1e-3       # the small weight whose gain over the deterministic net is tested
    vib_gain_seeds: int = 3           # seeds of that comparison (the sweep's seeds included)
    vib_lr: float = 1e-3
    vib_adam_beta1: float = 0.9
    vib_decay: float = 1.0            # lr multiplied by this every 2 epochs (Alemi: 0.97)
    vib_ema: float = 0.0              # Polyak averaging of the weights (Alemi: 0.999); 0 = off
    vib_test_samples: int = 12
    # adaptive bottleneck (E8)
    vdb_targets: tuple[float, ...] = (5.0, 10.0)
    vdb_epochs: int = 20
    vdb_alpha: float = 1e-3           # dual-ascent step per optimiser step
    # CPU threads for torch, passed to dlbook.config.threads (None: $DLBOOK_THREADS, else every
    # core). These MLPs are too small to gain from a second thread, and on a shared machine extra
    # threads only wait for each other.
    threads: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        where = "vae.Config"
        require(where, positive={"threads": self.threads}, whole=True)
        for b, ep in self.wide_runs:
            require(where, nonneg={"wide beta": b})
            require(where, positive={"wide epochs": ep}, whole=True)
        require(where, nonneg={"vib_gain_beta": self.vib_gain_beta})
        if self.vib_gain_beta not in self.vib_betas:
            raise ConfigError(f"{where}: vib_gain_beta {self.vib_gain_beta} must be one of vib_betas {self.vib_betas}")
        if self.vib_gain_seeds < self.vib_seeds:
            raise ConfigError(f"{where}: vib_gain_seeds ({self.vib_gain_seeds}) counts the sweep's "
                              f"{self.vib_seeds} seeds and cannot be smaller")
        if self.vib_ema >= 1:
            raise ConfigError(f"{where}: vib_ema must be < 1 (1 would never move the average), got {self.vib_ema}")


CONFIGS = {
    # seconds: a few optimiser steps per model, only to prove the code paths run
    "smoke": Config(n_train=400, n_test=200, betas=(0.0, 0.25, 1.0, 8.0), epochs=1,
                    seeds=2, wide_runs=((1.0, 1), (4.0, 1)), iw_samples=8, n_probe=50,
                    vib_hidden=(64,), vib_latent=8, vib_betas=(1e-3, 1.0), vib_epochs=1,
                    vib_seeds=1, vib_gain_seeds=2, vib_test_samples=4, vdb_targets=(5.0,), vdb_epochs=1,
                    vdb_alpha=1e-2, threads=1),
    # a few minutes on two CPU cores: 10,000 images of the offline 14,000-image subset, short
    # schedules; ten seeds for the gain of the small VIB weight
    "cpu": Config(n_train=10000, n_test=2000, epochs=10, wide_runs=((1.0, 30), (4.0, 15)),
                  vib_epochs=8, vib_seeds=3, vib_gain_seeds=10, vdb_epochs=12, vdb_alpha=5e-3, threads=1),
    # one GPU, the whole of MNIST; the VIB part follows Alemi et al. (ICLR 2017)
    "full": Config(n_train=60000, n_test=10000, latent=16, epochs=50,
                   betas=(0.0, 0.03, 0.0625, 0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0),
                   seeds=3, wide_runs=((1.0, 100), (4.0, 60)),
                   vib_hidden=(1024, 1024), vib_latent=256, vib_epochs=60, vib_seeds=3, vib_gain_seeds=5,
                   vib_lr=1e-4, vib_adam_beta1=0.5, vib_decay=0.97, vib_ema=0.999,
                   n_probe=1000, vdb_epochs=20, vdb_alpha=1e-3),
}


def config(profile: str | None = None) -> Config:
    """The settings of `profile` (None: the resolved profile)."""
    return by_profile(CONFIGS, profile)


# ----------------------------------------------------------------------------- losses
def _targets_in_unit_interval(where: str, x: torch.Tensor) -> None:
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"{where}: Bernoulli targets must lie in [0, 1] (binarised or grey-level pixels), "
                         f"got values in [{float(x.min()):.3g}, {float(x.max()):.3g}]")


def bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log q(x|z) of a Bernoulli decoder, summed over pixels: one value per image (nats).
    Targets must lie in [0, 1] and have the shape of the logits."""
    if logits.shape != x.shape:
        raise ValueError(f"bernoulli_nll: logits {tuple(logits.shape)} vs targets {tuple(x.shape)}")
    _targets_in_unit_interval("bernoulli_nll", x)
    nll = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    return nll.flatten(1).sum(1)  # D(x) of (eq-07-vae): summed over the 784 pixels, not averaged


def _same_batch(where: str, n: int, mu: torch.Tensor, logvar: torch.Tensor) -> None:
    if mu.shape != logvar.shape or mu.ndim != 2 or len(mu) != n:
        raise ValueError(f"{where}: mu {tuple(mu.shape)} and logvar {tuple(logvar.shape)} must both be "
                         f"(batch, K) with the batch of the data ({n})")


def vae_loss(logits: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
             beta: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The beta-weighted negative ELBO D + beta R, averaged over the batch.
    Returns (loss, D, R) with D and R in nats per image."""
    require("vae_loss", nonneg={"beta": beta})
    _same_batch("vae_loss", len(x), mu, logvar)
    distortion = bernoulli_nll(logits, x).mean()        # D = E_x E_z[-log q(x|z)]
    rate = gaussian_kl(mu, logvar).sum(-1).mean()       # R = E_x KL(p(z|x) || q(z))
    return distortion + beta * rate, distortion, rate   # (eq-07-vae) with beta=1, (eq-07-beta-vae)


def vib_loss(output: torch.Tensor, target: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
             lam: float, likelihood: str = "categorical") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """E[-log p(y|z)] + lam E_x KL(p(z|x)||q(z)) for a categorical head (logits (N, classes),
    integer labels (N,)) or a Bernoulli head (logits, targets of the same shape in [0, 1]).
    Returns (loss, task term, KL term)."""
    require("vib_loss", nonneg={"lam": lam})
    if likelihood == "categorical":
        if output.ndim != 2 or target.shape != output.shape[:1] or target.is_floating_point():
            raise ValueError(f"vib_loss: a categorical head needs logits (N, classes) and integer labels (N,), "
                             f"got {tuple(output.shape)} and {tuple(target.shape)} {target.dtype}")
        task = F.cross_entropy(output, target, reduction="mean")
    elif likelihood == "bernoulli":  # written out here, not through bernoulli_nll: check D15 compares the two
        if output.shape != target.shape:
            raise ValueError(f"vib_loss: a Bernoulli head needs targets of the logits' shape, got "
                             f"{tuple(output.shape)} and {tuple(target.shape)}")
        _targets_in_unit_interval("vib_loss", target)
        task = F.binary_cross_entropy_with_logits(output, target, reduction="none").flatten(1).sum(1).mean()
    else:
        raise ValueError(f"vib_loss: unknown likelihood {likelihood!r}; use 'categorical' or 'bernoulli'")
    _same_batch("vib_loss", len(output), mu, logvar)
    kl = gaussian_kl(mu, logvar).sum(-1).mean()
    return task + lam * kl, task, kl  # (eq-07-vib)


def hinge_ib_penalty(log_ratio: torch.Tensor, budget: float) -> torch.Tensor:
    """The post's hinge: mean of max(log p(z|x)/p(z) - budget, 0) over samples (eq-07-hinge)."""
    if not math.isfinite(budget):
        raise ValueError(f"hinge_ib_penalty: the budget must be a finite number of nats, got {budget}")
    return torch.clamp(log_ratio - budget, min=0.0).mean()  # (eq-07-hinge)


def dual_ascent(beta: float, rate: float, target: float, step: float) -> float:
    """VDB's multiplier update: beta <- max(0, beta + step (rate - target))."""
    require("dual_ascent", nonneg={"beta": beta, "target": target, "step": step})
    return max(0.0, beta + step * (rate - target))  # (eq-07-dual)


# ----------------------------------------------------------------------------- interpolation
def interpolate(z1: torch.Tensor, z2: torch.Tensor, t: torch.Tensor, kind: str = "linear") -> torch.Tensor:
    """Paths between codes for t in [0, 1]: 'linear' (1-t) z1 + t z2, or 'spherical'
    z1 cos(t pi/2) + z2 sin(t pi/2), which keeps the prior's variance (eq-07-slerp)."""
    t = torch.as_tensor(t, dtype=z1.dtype).reshape(-1, *([1] * z1.ndim))
    if kind == "linear":
        return (1 - t) * z1 + t * z2
    if kind == "spherical":
        th = t * (math.pi / 2)
        return torch.cos(th) * z1 + torch.sin(th) * z2  # (eq-07-slerp)
    raise ValueError(f"interpolate: unknown kind {kind!r}; use 'linear' or 'spherical'")


# ----------------------------------------------------------------------------- models
def _mlp(sizes: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class VAE(nn.Module):
    """MLP VAE after bojone/vae: encoder 784-h-2K (mean, log-variance), decoder K-h-784 logits.
    The log-variance is clamped to [-10, 10] so that beta=0 cannot underflow exp(logvar)."""

    def __init__(self, latent: int = 16, hidden: int = 256, data_dim: int = 784):
        super().__init__()
        require("VAE", positive={"latent": latent, "hidden": hidden, "data_dim": data_dim}, whole=True)
        self.latent, self.data_dim = latent, data_dim
        self.encoder = _mlp([data_dim, hidden, 2 * latent])
        self.decoder = _mlp([latent, hidden, data_dim])

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.flatten(1)
        if x.shape[1] != self.data_dim:
            raise ValueError(f"VAE: expected {self.data_dim} inputs per image, got {x.shape[1]}")
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        return mu, logvar.clamp(-10.0, 10.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor, eps: torch.Tensor | None = None):
        mu, logvar = self.encode(x)
        z = reparameterise(mu, logvar, eps)
        return self.decode(z), mu, logvar, z


class VIBClassifier(nn.Module):
    """Alemi et al.'s VIB classifier: encoder 784-h-...-2K, sigma = softplus(rho - 5), linear
    head K->10. `stochastic=False` gives the deterministic baseline (mean code, no KL)."""

    def __init__(self, latent: int = 32, hidden: Sequence[int] = (256, 256), n_classes: int = 10,
                 data_dim: int = 784, stochastic: bool = True):
        super().__init__()
        require("VIBClassifier", positive={"latent": latent, "hidden": tuple(hidden), "n_classes": n_classes,
                                           "data_dim": data_dim}, whole=True)
        self.latent, self.data_dim, self.stochastic = latent, data_dim, stochastic
        self.encoder = _mlp([data_dim, *hidden, 2 * latent])
        self.head = nn.Linear(latent, n_classes)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.flatten(1)
        if x.shape[1] != self.data_dim:
            raise ValueError(f"VIBClassifier: expected {self.data_dim} inputs, got {x.shape[1]}")
        mu, rho = self.encoder(x).chunk(2, dim=-1)
        sigma = F.softplus(rho - 5.0)
        return mu, 2.0 * torch.log(sigma + 1e-8)

    def forward(self, x: torch.Tensor, n_samples: int = 1):
        """Logits of shape (n_samples, N, classes) (one sample unless asked), mu, logvar."""
        require("VIBClassifier.forward", nonneg={"n_samples": n_samples})
        mu, logvar = self.encode(x)
        if not self.stochastic or n_samples == 0:
            return self.head(mu).unsqueeze(0), mu, logvar
        z = reparameterise(mu, logvar, torch.randn(n_samples, *mu.shape, device=mu.device))
        return self.head(z), mu, logvar


# ----------------------------------------------------------------------------- data
@dataclass
class MNISTData:
    """Flattened MNIST: grey levels in [0, 1] (for the classifier) and the same images
    binarised at 0.5 (for the Bernoulli VAE)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    source: str

    @property
    def b_train(self) -> torch.Tensor:
        return (self.x_train > 0.5).float()

    @property
    def b_test(self) -> torch.Tensor:
        return (self.x_test > 0.5).float()


def load_mnist(cfg: Config) -> MNISTData:
    """The first `n_train` training and `n_test` test images through the dlbook registry."""
    from ..data import load, to_float

    tr = load("mnist", "train", limit=cfg.n_train)
    te = load("mnist", "test", limit=cfg.n_test)
    flat = lambda a: to_float(a.x).flatten(1)
    return MNISTData(flat(tr), torch.from_numpy(tr.y), flat(te), torch.from_numpy(te.y),
                     f"train: {tr.source} ({len(tr)}); test: {te.source} ({len(te)})")


def _gen(seed: int, dev: torch.device | str = "cpu") -> torch.Generator:
    return torch.Generator(device=dev).manual_seed(int(seed))


# ----------------------------------------------------------------------------- VAE training
def vae_step(beta: float):
    """A `Trainer` step: the loss (eq-07-beta-vae) on a batch of binarised images."""
    def step(model: VAE, x: torch.Tensor):
        logits, mu, logvar, _ = model(x)
        loss, d, r = vae_loss(logits, x, mu, logvar, beta)
        return loss, {"D": d, "R": r}
    return step


def train_vae(x: torch.Tensor, cfg: Config, beta: float, latent: int | None = None,
              epochs: int | None = None, seed: int = 0, progress: bool = True,
              device: torch.device | str | None = None, desc: str | None = None):
    """Train one beta-VAE on binarised images `x` (N, 784); returns (model, history)."""
    require("train_vae", nonneg={"beta": beta})
    require("train_vae", positive={"latent": latent, "epochs": epochs}, whole=True)
    dev = torch.device(device) if device is not None else default_device()
    torch.manual_seed(seed)
    model = VAE(latent or cfg.latent, cfg.hidden)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    loader = ArrayLoader(x, cfg.batch_size, seed=seed, device=dev)
    tr = Trainer(model, opt, vae_step(beta), device=dev, log_every=len(loader), progress=progress,
                 desc=desc or f"VAE K={model.latent} beta={beta:g}")
    hist = tr.fit(loader, steps=(epochs or cfg.epochs) * len(loader))
    return tr.model.eval(), hist


@torch.no_grad()
def evaluate_vae(model: VAE, x: torch.Tensor, n_samples: int = 4, seed: int = 0,
                 batch: int = 1000) -> dict:
    """Held-out rate R and distortion D (nats/image), the per-dimension rate R_k and the
    encoder statistics per dimension (mean of mu, variance of mu, mean of sigma). The rate splits
    into the part of the means, R_mu = E 1/2 |mu|^2, and the part of the variances,
    R_sigma = E 1/2 sum (sigma^2 - log sigma^2 - 1)  (eq-07-kl)."""
    require("evaluate_vae", positive={"n_samples": n_samples, "batch": batch}, whole=True)
    model.eval()
    dev = next(model.parameters()).device
    g = _gen(seed, dev)
    kl, d, mus, sig, rmu = [], [], [], [], []
    for i in range(0, len(x), batch):
        xb = x[i:i + batch].to(dev)
        mu, logvar = model.encode(xb)
        kl.append(gaussian_kl(mu, logvar).double().cpu())
        rmu.append(0.5 * mu.double().pow(2).sum(-1).cpu())
        mus.append(mu.double().cpu())
        sig.append(torch.exp(0.5 * logvar).double().cpu())
        dd = 0.0
        for _ in range(n_samples):
            eps = torch.randn(mu.shape, generator=g, device=dev)
            dd = dd + bernoulli_nll(model.decode(reparameterise(mu, logvar, eps)), xb).double().cpu()
        d.append(dd / n_samples)
    kl, d, mus, sig, rmu = torch.cat(kl), torch.cat(d), torch.cat(mus), torch.cat(sig), torch.cat(rmu)
    rk = kl.mean(0).numpy()
    return {"R": float(kl.sum(1).mean()), "D": float(d.mean()), "R_k": rk,
            "R_mu": float(rmu.mean()), "R_sigma": float(kl.sum(1).mean() - rmu.mean()),
            "mu_mean": mus.mean(0).numpy(), "mu_var": mus.var(0).numpy(), "sigma_mean": sig.mean(0).numpy()}


@torch.no_grad()
def iwae_nll(model: VAE, x: torch.Tensor, k: int = 64, seed: int = 0, batch: int = 200) -> tuple[float, float]:
    """Importance-weighted NLL estimate with k samples (Burda et al.) and the k-sample ELBO
    estimate of the same draws, both in nats per image (eq-07-iwae)."""
    require("iwae_nll", positive={"k": k, "batch": batch}, whole=True)
    model.eval()
    dev = next(model.parameters()).device
    g = _gen(seed, dev)
    nll, nelbo = [], []
    log2pi = math.log(2 * math.pi)
    for i in range(0, len(x), batch):
        xb = x[i:i + batch].to(dev)
        mu, logvar = model.encode(xb)
        eps = torch.randn((k, *mu.shape), generator=g, device=dev)
        z = reparameterise(mu, logvar, eps)
        log_q = (-0.5 * (eps ** 2 + logvar + log2pi)).sum(-1)          # log p(z|x)
        log_p = (-0.5 * (z ** 2 + log2pi)).sum(-1)                       # log q(z)
        logits = model.decode(z.flatten(0, 1)).view(k, len(xb), -1)
        log_lik = -bernoulli_nll(logits.flatten(0, 1), xb.repeat(k, 1)).view(k, len(xb))
        log_w = (log_lik + log_p - log_q).double()
        nll.append(-(torch.logsumexp(log_w, 0) - math.log(k)).cpu())  # (eq-07-iwae)
        nelbo.append(-log_w.mean(0).cpu())
    return float(torch.cat(nll).mean()), float(torch.cat(nelbo).mean())


def elbo_vs_iwae(sweep: "SweepResult", data: MNISTData, cfg: Config, beta: float = 1.0) -> dict:
    """Claim 10 per seed: the held-out D+R of the `beta` model of `sweep`, and the k-sample ELBO and
    IWAE NLL estimates (k = cfg.iw_samples) on the same images; nats per image."""
    out: dict = {"k": cfg.iw_samples, "elbo": [], "elbo_k": [], "nll": []}
    for i, s_ in enumerate(sweep.seeds):
        e = sweep.eval(beta, i)
        nll, nelbo = iwae_nll(sweep.model(beta, i), data.b_test, k=cfg.iw_samples, seed=s_)
        out["elbo"].append(e["D"] + e["R"])
        out["elbo_k"].append(nelbo)
        out["nll"].append(nll)
    return out


@torch.no_grad()
def decoder_sensitivity(model: VAE, x: torch.Tensor, delta: float = 3.0) -> np.ndarray:
    """For each latent k: the mean absolute change of the decoded Bernoulli means when z_k is
    set to +delta and to -delta (others at the encoder mean), averaged over both and over x."""
    model.eval()
    dev = next(model.parameters()).device
    mu, _ = model.encode(x.to(dev))
    base = torch.sigmoid(model.decode(mu))
    out = np.zeros(model.latent)
    for k in range(model.latent):
        ch = 0.0
        for v in (delta, -delta):
            z = mu.clone()
            z[:, k] = v
            ch += (torch.sigmoid(model.decode(z)) - base).abs().mean().item() / 2
        out[k] = ch
    return out


@torch.no_grad()
def encode_all(model: VAE, x: torch.Tensor, batch: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """The encoder's mean and log-variance (N, K) for every row of `x`, in eval mode, on the CPU."""
    model.eval()
    dev = next(model.parameters()).device
    out = [model.encode(x[i:i + batch].to(dev)) for i in range(0, len(x), batch)]
    return torch.cat([m.cpu() for m, _ in out]), torch.cat([lv.cpu() for _, lv in out])


def code_statistics(model: VAE, x: torch.Tensor, seed: int = 0) -> dict:
    """`dlbook.gaussian.code_statistics` of the model's codes on held-out `x`: among them the
    Gaussian total correlation of z ~ p(z|x) (eq-07-tc), the mean absolute off-diagonal
    correlation and E|z|^2 / K."""
    return _code_statistics(*encode_all(model, x), seed=seed)


@dataclass
class SweepResult:
    """The beta sweep of E3 for every seed: evals[i][j] and models[i][j] belong to seeds[i] and
    betas[j]."""

    betas: list[float]
    seeds: list[int]
    evals: list[list[dict]]
    models: list[list[VAE]]
    histories: list[list]

    @property
    def R(self) -> np.ndarray:
        """Held-out rate, an array (seeds, betas)."""
        return np.array([[e["R"] for e in row] for row in self.evals])

    @property
    def D(self) -> np.ndarray:
        """Held-out distortion, an array (seeds, betas)."""
        return np.array([[e["D"] for e in row] for row in self.evals])

    def model(self, beta: float, i: int = 0) -> VAE:
        """The model of `beta` trained with the i-th seed."""
        return self.models[i][self.betas.index(beta)]

    def eval(self, beta: float, i: int = 0) -> dict:
        return self.evals[i][self.betas.index(beta)]


def seeds_of(cfg: Config, seed: int = 0) -> list[int]:
    """The seeds of the VAE experiments: seed, seed + 1, ..., cfg.seeds of them."""
    return [seed + i for i in range(cfg.seeds)]


def rate_distortion_sweep(data: MNISTData, cfg: Config, seed: int = 0, progress: bool = True,
                          device=None) -> SweepResult:
    """E3 and E7: for every seed, train the K=cfg.latent VAE for every beta of cfg.betas and
    evaluate R and D on the held-out images."""
    from tqdm.auto import tqdm

    seeds, betas = seeds_of(cfg, seed), list(cfg.betas)
    evals, models, hists = [], [], []
    for s_ in tqdm(seeds, desc="beta sweep (seeds)", disable=not progress):
        row_e, row_m, row_h = [], [], []
        for b in betas:
            m, h = train_vae(data.b_train, cfg, b, seed=s_, progress=progress, device=device)
            row_m.append(m)
            row_h.append(h)
            row_e.append(evaluate_vae(m, data.b_test, seed=s_))
        evals.append(row_e)
        models.append(row_m)
        hists.append(row_h)
    return SweepResult(betas, seeds, evals, models, hists)


def forgetting_runs(data: MNISTData, cfg: Config, seed: int = 0, progress: bool = True,
                    device=None) -> dict:
    """E4: the K=cfg.latent_wide VAE for each (beta, epochs) of cfg.wide_runs and every seed:
    {beta: [per seed: {"model", "history", "eval"}]}, the evaluation holding the held-out
    per-dimension rates, encoder statistics and decoder sensitivities."""
    out: dict = {}
    for b, ep in cfg.wide_runs:
        out[b] = []
        for s_ in seeds_of(cfg, seed):
            m, h = train_vae(data.b_train, cfg, b, latent=cfg.latent_wide, epochs=ep, seed=s_,
                             progress=progress, device=device)
            ev = evaluate_vae(m, data.b_test, seed=s_)
            ev["sensitivity"] = decoder_sensitivity(m, data.b_test[:cfg.n_probe])
            ev["epochs"] = ep
            out[b].append({"model": m, "history": h, "eval": ev})
    return out


# ----------------------------------------------------------------------------- VIB training
def vib_step(beta: float | None):
    """A `Trainer` step for the VIB classifier (eq-07-vib); beta=None: deterministic baseline."""
    def step(model: VIBClassifier, batch):
        x, y = batch
        logits, mu, logvar = model(x)
        if beta is None:
            loss = F.cross_entropy(logits[0], y)
            return loss, {"CE": loss}
        loss, ce, kl = vib_loss(logits[0], y, mu, logvar, beta)
        return loss, {"CE": ce, "KL": kl}
    return step


class _EMA:
    """Trainer callback keeping an exponential moving average of the weights (Polyak)."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def __call__(self, trainer, step, metrics):
        with torch.no_grad():
            for k, v in trainer.model.state_dict().items():
                self.shadow[k].mul_(self.decay).add_(v.detach(), alpha=1 - self.decay)


def train_vib(data: MNISTData, cfg: Config, beta: float | None, seed: int = 0,
              latent: int | None = None, progress: bool = True, device=None):
    """Train one VIB classifier (beta=None: the deterministic network); returns (model, history)."""
    require("train_vib", nonneg={"beta": beta})
    require("train_vib", positive={"latent": latent}, whole=True)
    dev = torch.device(device) if device is not None else default_device()
    torch.manual_seed(seed)
    model = VIBClassifier(latent or cfg.vib_latent, cfg.vib_hidden, stochastic=beta is not None)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.vib_lr, betas=(cfg.vib_adam_beta1, 0.999))
    loader = ArrayLoader((data.x_train, data.y_train), cfg.batch_size, seed=seed, device=dev)
    per_epoch = len(loader)
    sched = None
    if cfg.vib_decay != 1.0:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cfg.vib_decay ** (s // (2 * per_epoch)))
    ema = _EMA(model, cfg.vib_ema) if cfg.vib_ema > 0 else None
    tr = Trainer(model, opt, vib_step(beta), device=dev, scheduler=sched, progress=progress,
                 log_every=1 if ema else per_epoch, callbacks=[ema] if ema else [],
                 desc=f"VIB beta={'det' if beta is None else f'{beta:g}'} seed={seed}")
    hist = tr.fit(loader, steps=cfg.vib_epochs * per_epoch)
    if ema is not None:
        tr.model.load_state_dict(ema.shadow)
    return tr.model.eval(), hist


@torch.no_grad()
def evaluate_vib(model: VIBClassifier, x: torch.Tensor, y: torch.Tensor, n_samples: int = 12,
                 seed: int = 0) -> dict:
    """Test accuracy with the mean code and with the softmax averaged over `n_samples`
    posterior draws; the sampled cross-entropy and the mean KL (the two information bounds)."""
    model.eval()
    dev = next(model.parameters()).device
    x, y = x.to(dev), y.to(dev)
    mu, logvar = model.encode(x)
    acc_mean = (model.head(mu).argmax(-1) == y).double().mean().item()
    if model.stochastic:
        eps = torch.randn((n_samples, *mu.shape), generator=_gen(seed, dev), device=dev)
        logits = model.head(reparameterise(mu, logvar, eps))
        probs = logits.softmax(-1).mean(0)
        ce = F.cross_entropy(logits.flatten(0, 1), y.repeat(n_samples)).item()
        kl = gaussian_kl(mu, logvar).sum(-1).mean().item()
        acc_s = (probs.argmax(-1) == y).double().mean().item()
    else:
        ce = F.cross_entropy(model.head(mu), y).item()
        kl, acc_s = float("nan"), acc_mean
    return {"acc_mean_code": acc_mean, "acc_sampled": acc_s, "ce": ce, "rate": kl,
            "izy_bound": LOG10 - ce, "izx_bound": kl}


def vib_sweep(data: MNISTData, cfg: Config, seed: int = 0, progress: bool = True, device=None) -> dict:
    """E5: for every seed (seed, seed + 1, ..., cfg.vib_seeds of them), the deterministic baseline
    and a VIB classifier per beta of cfg.vib_betas; returns {beta or 'det': [evaluation per seed]}.
    The deterministic net and a VIB net of the same seed share the initial weights and the batch
    order, so their runs pair."""
    from tqdm.auto import tqdm

    keys: list = ["det", *cfg.vib_betas]
    out: dict = {k: [] for k in keys}
    jobs = [(seed + s, k) for s in range(cfg.vib_seeds) for k in keys]
    for s, k in tqdm(jobs, desc="VIB sweep", disable=not progress):
        m, _ = train_vib(data, cfg, None if k == "det" else k, seed=s, progress=progress, device=device)
        out[k].append(evaluate_vib(m, data.x_test, data.y_test, cfg.vib_test_samples, seed=s))
    return out


def vib_gain_runs(data: MNISTData, cfg: Config, sweep: dict, seed: int = 0, progress: bool = True,
                  device=None) -> dict:
    """Claim 14's comparison with more seeds: the deterministic network and the VIB classifier at
    cfg.vib_gain_beta, with the sweep's seeds (`sweep` from `vib_sweep` with the same `seed`) and
    the seeds after them up to cfg.vib_gain_seeds. Returns {"det": [...], beta: [...]}
    evaluations, one per seed, in the same seed order (they pair)."""
    from tqdm.auto import tqdm

    b = cfg.vib_gain_beta
    out = {"det": list(sweep["det"]), b: list(sweep[b])}
    jobs = [(seed + s, k) for s in range(cfg.vib_seeds, cfg.vib_gain_seeds) for k in ("det", b)]
    for s, k in tqdm(jobs, desc="VIB gain seeds", disable=not progress or not jobs):
        m, _ = train_vib(data, cfg, None if k == "det" else k, seed=s, progress=progress, device=device)
        out[k].append(evaluate_vib(m, data.x_test, data.y_test, cfg.vib_test_samples, seed=s))
    return out


def vib_codes_2d(data: MNISTData, cfg: Config, betas: Sequence[float] = (1e-3, 1e-1), seed: int = 0,
                 progress: bool = True, device=None) -> dict:
    """E5, 2-D version: K=2 VIB classifiers (one seed); their held-out code means and accuracies."""
    out = {}
    for b in betas:
        m, _ = train_vib(data, cfg, b, seed=seed, latent=2, progress=progress, device=device)
        with torch.no_grad():
            mu, _ = m.encode(data.x_test.to(next(m.parameters()).device))
        out[b] = {"mu": mu.cpu().numpy(),
                  "eval": evaluate_vib(m, data.x_test, data.y_test, cfg.vib_test_samples, seed=seed)}
    return out


# ----------------------------------------------------------------------------- adaptive bottleneck
def train_adaptive(data: MNISTData, cfg: Config, target: float, seed: int = 0,
                   progress: bool = True, device=None, beta0: float = 0.0):
    """E8: a VAE whose KL weight follows the dual-ascent update (eq-07-dual) towards the rate
    `target` (nats). Returns (model, history with per-epoch-fraction R and beta)."""
    require("train_adaptive", nonneg={"target": target, "beta0": beta0})
    dev = torch.device(device) if device is not None else default_device()
    torch.manual_seed(seed)
    model = VAE(cfg.latent, cfg.hidden)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    loader = ArrayLoader(data.b_train, cfg.batch_size, seed=seed, device=dev)
    state = {"beta": float(beta0)}

    def step(m: VAE, x: torch.Tensor):
        logits, mu, logvar, _ = m(x)
        beta = state["beta"]
        loss, d, r = vae_loss(logits, x, mu, logvar, beta)
        state["beta"] = dual_ascent(beta, r.item(), target, cfg.vdb_alpha)
        return loss, {"D": d, "R": r, "beta": beta}

    tr = Trainer(model, opt, step, device=dev, log_every=max(1, len(loader) // 5), progress=progress,
                 desc=f"adaptive I_c={target:g}")
    hist = tr.fit(loader, steps=cfg.vdb_epochs * len(loader))
    return tr.model.eval(), hist, len(loader)


def adaptive_runs(data: MNISTData, cfg: Config, seed: int = 0, progress: bool = True, device=None) -> dict:
    """E8 for every target of cfg.vdb_targets and every seed:
    {target: [(model, history, steps per epoch) per seed]}."""
    return {t: [train_adaptive(data, cfg, t, seed=s_, progress=progress, device=device)
                for s_ in seeds_of(cfg, seed)] for t in cfg.vdb_targets}


def adaptive_final_rates(adapt: dict) -> dict:
    """E8 read off: {target: [mean batch rate over the last epoch, per seed]} of `adaptive_runs`."""
    out = {}
    for tgt, runs in adapt.items():
        out[tgt] = []
        for _, h, per_ep in runs:
            last = [r for s_, r in zip(h.steps, h["R"]) if s_ > h.steps[-1] - per_ep]
            out[tgt].append(float(np.mean(last)))
    return out


from .claims import claims, results_of  # noqa: E402  (the chapter's claims, decided by dlbook.claims)
