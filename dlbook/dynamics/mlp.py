"""The chapter's training experiments: an MLP on MNIST trained with six optimisers (E1, E2),
momentum SGD against Adam at tuned rates (E3), plain SGD stopped at equal training loss (E4),
with the per-profile settings."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..config import ConfigError, Settings, by_profile, require


@dataclass(frozen=True)
class Config(Settings):
    """Per-profile settings of the chapter's training experiments (an MLP on MNIST) and, with
    `light`, fewer widget frames and smaller exploratory tables (the derivation checks never
    change). Data: the first `n_train` training images, the next `n_val` as a validation split
    and the first `n_test` test images."""

    SIZES = ("n_train", "n_val", "n_test", "hidden", "batch", "steps", "log_every", "seeds", "tune_epochs",
             "equal_loss_every", "equal_loss_max_steps", "noise_seeds")
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
    # E5: noisy gradients on the quadratic, Adagrad against constant-step GD, one run per seed
    noise_seeds: int = 10
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
                    equal_loss_every=4, equal_loss_max_steps=200, noise_seeds=2, light=True, threads=1),
    "cpu": Config(n_train=10000, n_val=2000, n_test=10000, hidden=128, batch=64, steps=1200, log_every=25,
                  lrs=dict(_LRS), seeds=5, threads=1),
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

    from .. import data

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

    from ..config import device as default_device
    from ..train import ArrayLoader, Trainer

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
    Returns {name: [per seed: {"lr", "n_steps", "steps", "loss", "train_loss", "test_acc"}]}."""
    out: dict = {}
    for name, lr in cfg.lrs.items():
        out[name] = []
        for s_ in range(seed, seed + cfg.seeds):
            tr, hist = train_run(d, cfg, name, lr, cfg.steps, s_, progress=progress)
            loss, _, _ = _full_batch(tr.model, d.x_train, d.y_train)
            out[name].append({"lr": lr, "n_steps": cfg.steps, "steps": np.array(hist.steps),
                              "loss": np.array(hist["loss"]),
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

    from ..config import device as default_device
    from ..train import ArrayLoader, Trainer

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
    return {"lr": lr, "seed": seed, "steps": steps, "loss": loss, "grad_norm2": g2, "target": target,
            "reached": loss <= target}


def equal_loss_runs(d: MNISTSplits, cfg: Config, seed: int = 0, progress: bool = True) -> dict:
    """E4 for every rate of cfg.sgd_lrs and every seed: {lr: [train_to_loss result per seed]}."""
    from tqdm.auto import tqdm

    jobs = [(lr, s_) for lr in cfg.sgd_lrs for s_ in range(seed, seed + cfg.seeds)]
    out: dict = {lr: [] for lr in cfg.sgd_lrs}
    for lr, s_ in tqdm(jobs, desc="SGD to equal loss", disable=not progress):
        out[lr].append(train_to_loss(d, cfg, lr, cfg.equal_loss_target, s_))
    return out
