"""Chapter 07: VAE, the variational information bottleneck and the standard normal prior.

Notation follows the chapter (and Su Jianlin's post): p(z|x) is the encoder, q(x|z) the
decoder, q(z) = N(0, I) the prior, p(z) the aggregate posterior. All information is in nats.
In the experiments `beta` is the KL *weight* (the post's lambda).

Every loss below is a transcription of one numbered equation of the chapter; the label is in
the comment beside it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import by_profile, device as default_device
from .train import ArrayLoader, Trainer

LOG10 = math.log(10.0)


# ----------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class Ch07Config:
    """Everything one profile of chapter 07 trains. Sizes are in images, epochs, nats."""

    n_train: int                      # MNIST training images (first n of the train split)
    n_test: int                       # held-out images (first n of the test split)
    hidden: int = 256                 # VAE: 784-hidden-2K / K-hidden-784 (bojone/vae)
    latent: int = 16                  # K for the rate-distortion sweep and decoupling (E3, E7)
    betas: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
    epochs: int = 20                  # per beta of the sweep
    decouple_seeds: int = 2           # seeds for the AE (beta=0) vs VAE (beta=1) comparison
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
    vib_seeds: int = 3
    vib_lr: float = 1e-3
    vib_adam_beta1: float = 0.9
    vib_decay: float = 1.0            # lr multiplied by this every 2 epochs (Alemi: 0.97)
    vib_ema: float = 0.0              # Polyak averaging of the weights (Alemi: 0.999); 0 = off
    vib_test_samples: int = 12
    # adaptive bottleneck (E8)
    vdb_targets: tuple[float, ...] = (5.0, 10.0)
    vdb_epochs: int = 20
    vdb_alpha: float = 1e-3           # dual-ascent step per optimiser step
    # CPU threads for torch (None: leave torch's default). These MLPs are too small to gain
    # from a second thread, and on a shared machine extra threads oversubscribe the cores.
    threads: int | None = None


CONFIGS = {
    # seconds: a few optimiser steps per model, only to prove the code paths run
    "smoke": Ch07Config(n_train=400, n_test=200, betas=(0.0, 0.25, 1.0, 8.0), epochs=1,
                        decouple_seeds=1, wide_runs=((1.0, 1), (4.0, 1)), iw_samples=8, n_probe=50,
                        vib_hidden=(64,), vib_latent=8, vib_betas=(1e-3, 1.0), vib_epochs=1,
                        vib_seeds=1, vib_test_samples=4, vdb_targets=(5.0,), vdb_epochs=1,
                        vdb_alpha=1e-2, threads=1),
    # about 6 minutes on two CPU cores: the offline 14,000-image subset, short schedules
    "cpu": Ch07Config(n_train=10000, n_test=2000, epochs=12, wide_runs=((1.0, 30), (4.0, 15)),
                      vib_epochs=8, vib_seeds=3, vdb_epochs=8, vdb_alpha=5e-3, threads=1),
    # one GPU, the whole of MNIST; the VIB part follows Alemi et al. (ICLR 2017)
    "full": Ch07Config(n_train=60000, n_test=10000, latent=16, epochs=50,
                       betas=(0.0, 0.03, 0.0625, 0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0),
                       decouple_seeds=3, wide_runs=((1.0, 100), (4.0, 60)),
                       vib_hidden=(1024, 1024), vib_latent=256, vib_epochs=60, vib_seeds=3,
                       vib_lr=1e-4, vib_adam_beta1=0.5, vib_decay=0.97, vib_ema=0.999,
                       n_probe=1000, vdb_epochs=20, vdb_alpha=1e-3),
}


def config(profile: str | None = None) -> Ch07Config:
    """The settings of `profile` (None: the resolved profile)."""
    return by_profile(CONFIGS, profile)


# ----------------------------------------------------------------------------- losses
def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Per-dimension KL(N(mu, exp(logvar)) || N(0, 1)), same shape as `mu`."""
    if mu.shape != logvar.shape:
        raise ValueError(f"gaussian_kl: mu {tuple(mu.shape)} and logvar {tuple(logvar.shape)} differ")
    return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0)  # (eq-07-kl), one term per k


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
    """z = mu + sigma * eps with eps ~ N(0, I); pass `eps` to fix the noise."""
    if eps is None:
        eps = torch.randn_like(mu)
    return mu + torch.exp(0.5 * logvar) * eps  # (eq-07-reparam)


def bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log q(x|z) of a Bernoulli decoder, summed over pixels: one value per image (nats)."""
    if logits.shape != x.shape:
        raise ValueError(f"bernoulli_nll: logits {tuple(logits.shape)} vs targets {tuple(x.shape)}")
    nll = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    return nll.flatten(1).sum(1)  # (eq-07-distortion): sum over the 784 pixels, not the mean


def vae_loss(logits: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
             beta: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The beta-weighted negative ELBO D + beta R, averaged over the batch.
    Returns (loss, D, R) with D and R in nats per image."""
    distortion = bernoulli_nll(logits, x).mean()        # D = E_x E_z[-log q(x|z)]
    rate = gaussian_kl(mu, logvar).sum(-1).mean()       # R = E_x KL(p(z|x) || q(z))
    return distortion + beta * rate, distortion, rate   # (eq-07-vae) with beta=1, (eq-07-beta-vae)


def vib_loss(output: torch.Tensor, target: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
             lam: float, likelihood: str = "categorical") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """E[-log p(y|z)] + lam E_x KL(p(z|x)||q(z)) for a categorical head (logits, integer labels)
    or a Bernoulli head (logits, targets in [0, 1]). Returns (loss, task term, KL term)."""
    if likelihood == "categorical":
        task = F.cross_entropy(output, target, reduction="mean")
    elif likelihood == "bernoulli":
        task = F.binary_cross_entropy_with_logits(output, target, reduction="none").flatten(1).sum(1).mean()
    else:
        raise ValueError(f"vib_loss: unknown likelihood {likelihood!r}; use 'categorical' or 'bernoulli'")
    kl = (0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0)).sum(-1).mean()
    return task + lam * kl, task, kl  # (eq-07-vib)


def hinge_ib_penalty(log_ratio: torch.Tensor, budget: float) -> torch.Tensor:
    """The post's hinge: mean of max(log p(z|x)/p(z) - budget, 0) over samples (eq-07-hinge)."""
    return torch.clamp(log_ratio - budget, min=0.0).mean()  # (eq-07-hinge)


def dual_ascent(beta: float, rate: float, target: float, step: float) -> float:
    """VDB's multiplier update: beta <- max(0, beta + step (rate - target))."""
    return max(0.0, beta + step * (rate - target))  # (eq-07-dual)


# ----------------------------------------------------------------------------- closed forms
def linear_gaussian_terms(a, s) -> dict[str, np.ndarray]:
    """x ~ N(0,1), z|x ~ N(a x, s^2), prior N(0,1): exact I(X;Z), the bound E_x KL(p(z|x)||q)
    and KL(p(z)||q) with p(z) = N(0, a^2 + s^2)."""
    a, s = np.asarray(a, dtype=np.float64), np.asarray(s, dtype=np.float64)
    v = a ** 2 + s ** 2
    return {"mi": 0.5 * np.log1p(a ** 2 / s ** 2),
            "bound": 0.5 * (a ** 2 + s ** 2 - 1.0 - np.log(s ** 2)),
            "kl_agg": 0.5 * (v - 1.0 - np.log(v))}  # (eq-07-mi-identity): bound = mi + kl_agg


def gaussian_total_correlation(z: torch.Tensor | np.ndarray) -> float:
    """TC_G = 1/2 (sum_k log Sigma_kk - log det Sigma) of the sample covariance (eq-07-tc)."""
    z = np.asarray(z.detach().cpu() if isinstance(z, torch.Tensor) else z, dtype=np.float64)
    if z.ndim != 2 or z.shape[0] <= z.shape[1]:
        raise ValueError(f"gaussian_total_correlation: need (N, K) codes with N > K, got {z.shape}")
    cov = np.cov(z, rowvar=False)
    sign, logdet = np.linalg.slogdet(cov)
    return float(0.5 * (np.log(np.diag(cov)).sum() - logdet))  # (eq-07-tc)


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
        if latent < 1 or hidden < 1:
            raise ValueError(f"VAE: latent and hidden must be positive, got {latent}, {hidden}")
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
        z = reparameterize(mu, logvar, eps)
        return self.decode(z), mu, logvar, z


class VIBClassifier(nn.Module):
    """Alemi et al.'s VIB classifier: encoder 784-h-...-2K, sigma = softplus(rho - 5), linear
    head K->10. `stochastic=False` gives the deterministic baseline (mean code, no KL)."""

    def __init__(self, latent: int = 32, hidden: Sequence[int] = (256, 256), n_classes: int = 10,
                 data_dim: int = 784, stochastic: bool = True):
        super().__init__()
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
        mu, logvar = self.encode(x)
        if not self.stochastic or n_samples == 0:
            return self.head(mu).unsqueeze(0), mu, logvar
        z = mu + torch.exp(0.5 * logvar) * torch.randn(n_samples, *mu.shape, device=mu.device)
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


def load_mnist(cfg: Ch07Config) -> MNISTData:
    """The first `n_train` training and `n_test` test images through the dlbook registry."""
    from .data import load, to_float

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


def train_vae(x: torch.Tensor, cfg: Ch07Config, beta: float, latent: int | None = None,
              epochs: int | None = None, seed: int = 0, progress: bool = True,
              device: torch.device | str | None = None, desc: str | None = None):
    """Train one beta-VAE on binarised images `x` (N, 784); returns (model, history)."""
    if beta < 0:
        raise ValueError(f"train_vae: beta must be >= 0, got {beta}")
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
    encoder statistics per dimension (mean of mu, variance of mu, mean of sigma)."""
    model.eval()
    dev = next(model.parameters()).device
    g = _gen(seed, dev)
    kl, d, mus, sig = [], [], [], []
    for i in range(0, len(x), batch):
        xb = x[i:i + batch].to(dev)
        mu, logvar = model.encode(xb)
        kl.append(gaussian_kl(mu, logvar).double().cpu())
        mus.append(mu.double().cpu())
        sig.append(torch.exp(0.5 * logvar).double().cpu())
        dd = 0.0
        for _ in range(n_samples):
            eps = torch.randn(mu.shape, generator=g, device=dev)
            dd = dd + bernoulli_nll(model.decode(reparameterize(mu, logvar, eps)), xb).double().cpu()
        d.append(dd / n_samples)
    kl, d, mus, sig = torch.cat(kl), torch.cat(d), torch.cat(mus), torch.cat(sig)
    rk = kl.mean(0).numpy()
    return {"R": float(kl.sum(1).mean()), "D": float(d.mean()), "R_k": rk,
            "mu_mean": mus.mean(0).numpy(), "mu_var": mus.var(0).numpy(), "sigma_mean": sig.mean(0).numpy()}


@torch.no_grad()
def iwae_nll(model: VAE, x: torch.Tensor, k: int = 64, seed: int = 0, batch: int = 200) -> tuple[float, float]:
    """Importance-weighted NLL estimate with k samples (Burda et al.) and the k-sample ELBO
    estimate of the same draws, both in nats per image (eq-07-iwae)."""
    model.eval()
    dev = next(model.parameters()).device
    g = _gen(seed, dev)
    nll, nelbo = [], []
    log2pi = math.log(2 * math.pi)
    for i in range(0, len(x), batch):
        xb = x[i:i + batch].to(dev)
        mu, logvar = model.encode(xb)
        eps = torch.randn((k, *mu.shape), generator=g, device=dev)
        z = mu + torch.exp(0.5 * logvar) * eps
        log_q = (-0.5 * (eps ** 2 + logvar + log2pi)).sum(-1)          # log p(z|x)
        log_p = (-0.5 * (z ** 2 + log2pi)).sum(-1)                       # log q(z)
        logits = model.decode(z.flatten(0, 1)).view(k, len(xb), -1)
        log_lik = -bernoulli_nll(logits.flatten(0, 1), xb.repeat(k, 1)).view(k, len(xb))
        log_w = (log_lik + log_p - log_q).double()
        nll.append(-(torch.logsumexp(log_w, 0) - math.log(k)).cpu())  # (eq-07-iwae)
        nelbo.append(-log_w.mean(0).cpu())
    return float(torch.cat(nll).mean()), float(torch.cat(nelbo).mean())


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
def code_statistics(model: VAE, x: torch.Tensor, seed: int = 0) -> dict:
    """Codes z ~ p(z|x) on held-out x: Gaussian total correlation (eq-07-tc), mean absolute
    off-diagonal correlation and E||z||^2 / K."""
    model.eval()
    dev = next(model.parameters()).device
    mu, logvar = model.encode(x.to(dev))
    z = reparameterize(mu, logvar, torch.randn(mu.shape, generator=_gen(seed, dev), device=dev))
    zn = z.double().cpu().numpy()
    c = np.corrcoef(zn, rowvar=False)
    off = c[~np.eye(len(c), dtype=bool)]
    return {"tc": gaussian_total_correlation(zn), "mean_abs_corr": float(np.abs(off).mean()),
            "sq_norm": float((zn ** 2).sum(1).mean() / zn.shape[1])}


@dataclass
class SweepResult:
    """The beta sweep of E3: one model and its held-out evaluation per beta."""

    betas: list[float]
    evals: list[dict]
    models: list[VAE]
    histories: list
    extra_seeds: dict = field(default_factory=dict)  # (beta, seed) -> model, for decoupling

    @property
    def R(self) -> np.ndarray:
        return np.array([e["R"] for e in self.evals])

    @property
    def D(self) -> np.ndarray:
        return np.array([e["D"] for e in self.evals])

    def model(self, beta: float) -> VAE:
        return self.models[self.betas.index(beta)]


def rate_distortion_sweep(data: MNISTData, cfg: Ch07Config, seed: int = 0, progress: bool = True,
                          device=None) -> SweepResult:
    """E3 and E7: train the K=cfg.latent VAE for every beta of cfg.betas, evaluate R and D on
    held-out data; also train the extra seeds of beta=0 and beta=1 used for decoupling."""
    from tqdm.auto import tqdm

    betas = list(cfg.betas)
    evals, models, hists = [], [], []
    bar = tqdm(betas, desc="beta sweep", disable=not progress)
    for b in bar:
        m, h = train_vae(data.b_train, cfg, b, seed=seed, progress=progress, device=device)
        models.append(m)
        hists.append(h)
        evals.append(evaluate_vae(m, data.b_test, seed=seed))
    extra = {}
    for b in (0.0, 1.0):
        if b not in betas:
            continue
        for s in range(1, cfg.decouple_seeds):
            extra[(b, s)] = train_vae(data.b_train, cfg, b, seed=seed + s, progress=progress, device=device)[0]
    return SweepResult(betas, evals, models, hists, extra)


def forgetting_runs(data: MNISTData, cfg: Ch07Config, seed: int = 0, progress: bool = True,
                    device=None) -> dict:
    """E4: the K=cfg.latent_wide VAE for each (beta, epochs) of cfg.wide_runs; per run the
    held-out per-dimension rates, encoder statistics and decoder sensitivities."""
    out = {}
    for b, ep in cfg.wide_runs:
        m, h = train_vae(data.b_train, cfg, b, latent=cfg.latent_wide, epochs=ep, seed=seed,
                         progress=progress, device=device)
        ev = evaluate_vae(m, data.b_test, seed=seed)
        ev["sensitivity"] = decoder_sensitivity(m, data.b_test[:cfg.n_probe])
        ev["epochs"] = ep
        out[b] = {"model": m, "history": h, "eval": ev}
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


def train_vib(data: MNISTData, cfg: Ch07Config, beta: float | None, seed: int = 0,
              latent: int | None = None, progress: bool = True, device=None):
    """Train one VIB classifier (beta=None: the deterministic network); returns (model, history)."""
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
        logits = model.head(mu + torch.exp(0.5 * logvar) * eps)
        probs = logits.softmax(-1).mean(0)
        ce = F.cross_entropy(logits.flatten(0, 1), y.repeat(n_samples)).item()
        kl = gaussian_kl(mu, logvar).sum(-1).mean().item()
        acc_s = (probs.argmax(-1) == y).double().mean().item()
    else:
        ce = F.cross_entropy(model.head(mu), y).item()
        kl, acc_s = float("nan"), acc_mean
    return {"acc_mean_code": acc_mean, "acc_sampled": acc_s, "ce": ce, "rate": kl,
            "izy_bound": LOG10 - ce, "izx_bound": kl}


def vib_sweep(data: MNISTData, cfg: Ch07Config, progress: bool = True, device=None) -> dict:
    """E5: for every seed, the deterministic baseline and a VIB classifier per beta of
    cfg.vib_betas; returns {beta or 'det': [evaluation per seed]}."""
    from tqdm.auto import tqdm

    keys: list = ["det", *cfg.vib_betas]
    out: dict = {k: [] for k in keys}
    jobs = [(s, k) for s in range(cfg.vib_seeds) for k in keys]
    for s, k in tqdm(jobs, desc="VIB sweep", disable=not progress):
        m, _ = train_vib(data, cfg, None if k == "det" else k, seed=s, progress=progress, device=device)
        out[k].append(evaluate_vib(m, data.x_test, data.y_test, cfg.vib_test_samples, seed=s))
    return out


def vib_codes_2d(data: MNISTData, cfg: Ch07Config, betas: Sequence[float] = (1e-3, 1e-1),
                 progress: bool = True, device=None) -> dict:
    """E5, 2-D version: K=2 VIB classifiers; their held-out code means and accuracies."""
    out = {}
    for b in betas:
        m, _ = train_vib(data, cfg, b, latent=2, progress=progress, device=device)
        with torch.no_grad():
            mu, _ = m.encode(data.x_test.to(next(m.parameters()).device))
        out[b] = {"mu": mu.cpu().numpy(), "eval": evaluate_vib(m, data.x_test, data.y_test, cfg.vib_test_samples)}
    return out


# ----------------------------------------------------------------------------- adaptive bottleneck
def train_adaptive(data: MNISTData, cfg: Ch07Config, target: float, seed: int = 0,
                   progress: bool = True, device=None, beta0: float = 0.0):
    """E8: a VAE whose KL weight follows the dual-ascent update (eq-07-dual) towards the rate
    `target` (nats). Returns (model, history with per-epoch-fraction R and beta)."""
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


def adaptive_runs(data: MNISTData, cfg: Ch07Config, progress: bool = True, device=None) -> dict:
    """E8 for every target of cfg.vdb_targets: {target: (model, history, steps per epoch)}."""
    return {t: train_adaptive(data, cfg, t, progress=progress, device=device) for t in cfg.vdb_targets}
