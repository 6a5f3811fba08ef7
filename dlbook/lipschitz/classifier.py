"""The classifier with weight decay or spectral-norm regularisation (chapter 02, L6, L7)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..config import Settings, require
from ..train import run_jobs
from .norms import _unit, frobenius_product, layer_weights, power_iteration, product_bound

REGULARISERS = ("none", "wd", "snr")


class Classifier(nn.Module):
    """An MLP ``in_dim -> width x depth -> n_classes`` with ReLU, and its Lipschitz penalties.
    Each Linear layer keeps a persistent input-space vector for one power-iteration round per
    penalty evaluation (Yoshida & Miyato's scheme)."""

    def __init__(self, in_dim: int = 784, width: int = 256, depth: int = 2, n_classes: int = 10):
        super().__init__()
        require("Classifier", positive={"in_dim": in_dim, "width": width, "depth": depth, "n_classes": n_classes},
                whole=True)
        dims = [in_dim] + [width] * depth + [n_classes]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        for i, lin in enumerate(self.layers):
            self.register_buffer(f"v{i}", _unit(torch.randn(lin.in_features)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for lin in self.layers[:-1]:
            x = F.relu(lin(x))
        return self.layers[-1](x)

    def penalty(self, kind: str) -> torch.Tensor:
        """``wd``: sum_l ||W_l||_F^2 (eq-02-wd); ``snr``: sum_l sigma_l^2 (eq-02-snr) with
        sigma_l = u^T W_l v from one power-iteration round (eq-02-power) on a persistent v;
        u and v are constants for the gradient, so d sigma / dW = u v^T (eq-02-dsigma)."""
        if kind == "wd":
            return sum(lin.weight.pow(2).sum() for lin in self.layers)  # (eq-02-wd)
        if kind != "snr":
            raise ValueError(f"Classifier.penalty: kind must be 'wd' or 'snr', got {kind!r}")
        total = 0.0
        for i, lin in enumerate(self.layers):
            with torch.no_grad():
                _, u, v = power_iteration(lin.weight, 1, getattr(self, f"v{i}"))
                getattr(self, f"v{i}").copy_(v)
            total = total + (u @ lin.weight @ v).pow(2)  # (eq-02-snr), gradient 2 sigma u v^T (eq-02-dsigma)
        return total


@dataclass(frozen=True)
class ClassifierConfig(Settings):
    """The supervised experiment of L6/L7: ``data`` (MNIST or Fashion-MNIST), the first
    ``n_train`` training images for training and the next ``n_val`` for choosing lambda, the
    complete test split (or its first ``n_test``) for the final numbers; the MLP and Adam."""

    data: str = "mnist"
    n_train: int = 5000
    n_val: int = 1000
    n_test: int | None = None
    width: int = 256
    depth: int = 2
    epochs: int = 30
    batch: int = 64
    lr: float = 1e-3
    wd_grid: tuple[float, ...] = (0.0, 1e-4, 1e-3, 1e-2)
    snr_grid: tuple[float, ...] = (1e-3, 1e-2, 1e-1)
    seeds: tuple[int, ...] = (0, 1, 2)

    SIZES = ("n_train", "n_val", "n_test", "width", "depth", "epochs", "batch")
    POSITIVE = ("lr",)
    NONNEG = ("wd_grid", "snr_grid", "seeds")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.data not in ("mnist", "fashion-mnist"):
            raise ValueError(f"ClassifierConfig: data must be 'mnist' or 'fashion-mnist', got {self.data!r}")
        if not self.seeds:
            raise ValueError("ClassifierConfig: seeds must name at least one seed")


def classifier_data(cfg: ClassifierConfig) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """train / val / test as (x in [0, 1] flattened, y) float32 tensors."""
    from .. import data as D

    tr = D.load(cfg.data, "train", limit=cfg.n_train + cfg.n_val)
    if len(tr.x) < cfg.n_train + cfg.n_val:
        raise ValueError(f"classifier_data: {len(tr.x)} training images for n_train + n_val = "
                         f"{cfg.n_train + cfg.n_val}; lower them")
    te = D.load(cfg.data, "test", limit=cfg.n_test)
    x, xt = D.to_float(tr.x).flatten(1), D.to_float(te.x).flatten(1)
    y, yt = torch.as_tensor(tr.y).long(), torch.as_tensor(te.y).long()
    n = cfg.n_train
    return {"train": (x[:n], y[:n]), "val": (x[n:], y[n:]), "test": (xt, yt),
            "source": f"{cfg.data}: {tr.source}; {te.source}"}


@torch.no_grad()
def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((net(x).argmax(1) == y).double().mean())


def input_grad_norm(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean over samples of ||grad_x loss(y, f(x))|| (cross-entropy): the input sensitivity."""
    x = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(net(x), y, reduction="sum"), x)
    return float(g.norm(dim=1).mean())


def train_classifier(cfg: ClassifierConfig, reg: str, lam: float, seed: int,
                     data: dict | None = None, threads: int | None = 1) -> dict:
    """Train `Classifier` with cross-entropy + lam * penalty (``reg``: 'none', 'wd' (eq-02-wd)
    or 'snr' (eq-02-snr)) for ``cfg.epochs`` epochs with `dlbook.train.Trainer` (Adam); return
    the final product of spectral norms, product of Frobenius norms, accuracies, the mean input
    gradient norm of the loss on the test set and the per-epoch product of spectral norms."""
    from ..train import ArrayLoader, Trainer

    if reg not in REGULARISERS:
        raise ValueError(f"train_classifier: reg must be one of {REGULARISERS}, got {reg!r}")
    require("train_classifier", nonneg={"lam": lam})
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        data = data or classifier_data(cfg)
        xtr, ytr = data["train"]
        torch.manual_seed(seed)
        net = Classifier(xtr.shape[1], cfg.width, cfg.depth, int(ytr.max()) + 1)
        # Adam on loss + lam * penalty: the L2 term goes through Adam's scaling, so it is not
        # decoupled weight decay (AdamW); eq-02-wd equals weight decay under SGD only (L4c)
        opt = torch.optim.Adam(net.parameters(), cfg.lr)

        def step(model, batch):
            xb, yb = batch
            ce = F.cross_entropy(model(xb), yb)
            if reg == "none" or lam == 0:
                return ce, {"ce": ce.detach()}
            return ce + lam * model.penalty(reg), {"ce": ce.detach()}

        loader = ArrayLoader((xtr, ytr), cfg.batch, seed=seed)
        per_epoch = len(loader)
        curve = []

        def track(trainer, s, metrics):
            if s % per_epoch == 0:
                curve.append(product_bound(trainer.model))

        tr = Trainer(net, opt, step, device="cpu", log_every=per_epoch, progress=False, callbacks=[track],
                     run_key={"reg": reg, "lam": lam, "seed": seed})
        tr.fit(loader, cfg.epochs * per_epoch)
        net.eval()
        xv, yv = data["val"]
        xte, yte = data["test"]
        acc_tr, acc_te = accuracy(net, xtr, ytr), accuracy(net, xte, yte)
        return {"reg": reg, "lam": float(lam), "seed": seed, "prod_sigma": product_bound(net),
                "prod_frob": frobenius_product(net),
                "sigmas": [float(torch.linalg.matrix_norm(w.detach().double(), 2)) for w in layer_weights(net)],
                "train_acc": acc_tr, "val_acc": accuracy(net, xv, yv), "test_acc": acc_te, "gap": acc_tr - acc_te,
                "grad_x": input_grad_norm(net, xte, yte), "curve": curve, "ce": tr.history["ce"]}
    finally:
        torch.set_num_threads(old)


def _classifier_entry(item) -> dict:
    cfg, reg, lam, seed = item
    return train_classifier(cfg, reg, lam, seed)


def classifier_experiment(cfg: ClassifierConfig, workers: int = 1) -> dict[tuple[str, float, int], dict]:
    """Every (reg, lambda, seed): weight decay over ``wd_grid`` (0 is 'none') and SNR over
    ``snr_grid``, each for every seed; ``workers`` processes of one thread. Keyed by
    (reg, lam, seed)."""
    items = [(cfg, "none" if lam == 0 else "wd", float(lam), s) for lam in cfg.wd_grid for s in cfg.seeds]
    items += [(cfg, "snr", float(lam), s) for lam in cfg.snr_grid for s in cfg.seeds]
    runs = run_jobs(_classifier_entry, items, workers, "classifiers")
    return {(r["reg"], r["lam"], r["seed"]): r for r in runs}


def pick_lambda(runs: dict, reg: str) -> float:
    """The lambda of ``reg`` with the best mean validation accuracy over seeds."""
    lams = sorted({k[1] for k in runs if k[0] == reg})
    if not lams:
        raise KeyError(f"pick_lambda: no runs of {reg!r}")
    return max(lams, key=lambda l: np.mean([r["val_acc"] for k, r in runs.items() if k[:2] == (reg, l)]))


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation (no ties expected)."""
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])

