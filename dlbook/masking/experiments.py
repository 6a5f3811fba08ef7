"""MAE experiments and timing."""
from __future__ import annotations

import math
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import Settings, by_profile, device as default_device, require, worker_threads
from ..train import ArrayLoader, Trainer, run_jobs
from .settings import *  # noqa: F403
from .settings import Config
from .dropout import *  # noqa: F403
from .models import *  # noqa: F403
from .text import *  # noqa: F403
from .text import _progress

# ----------------------------------------------------------------------------- MAE experiments
def load_mnist(cfg: Config) -> dict:
    """The first `mae_train` training and `mae_test` test images (N, 1, 28, 28) in [0, 1]."""
    from ..data import load, to_float

    tr = load("mnist", "train", limit=cfg.mae_train)
    te = load("mnist", "test", limit=cfg.mae_test)
    return {"x_train": to_float(tr.x), "y_train": torch.from_numpy(tr.y).long(),
            "x_test": to_float(te.x), "y_test": torch.from_numpy(te.y).long(),
            "source": f"train: {tr.source} ({len(tr)}); test: {te.source} ({len(te)})"}


def new_mae(cfg: Config) -> TinyMAE:
    return TinyMAE(28, cfg.patch, 1, cfg.mae_d, cfg.mae_depth, cfg.mae_heads, cfg.dec_d, cfg.dec_depth)


def pretrain_mae(x: torch.Tensor, cfg: Config, seed: int = 0, progress: bool = True, device=None):
    """MAE pre-training on images `x` at cfg.mae_mask. Returns (model, history)."""
    dev = torch.device(device) if device is not None else default_device()
    torch.manual_seed(seed)
    model = new_mae(cfg)
    loader = ArrayLoader(x, cfg.mae_batch, seed=seed, device=dev)
    steps = cfg.mae_epochs * len(loader)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.mae_lr, betas=(0.9, 0.95), weight_decay=0.05)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))

    def step(m, xb):
        return mae_forward(m, xb, cfg.mae_mask)[0], {}
    tr = Trainer(model, opt, step, device=dev, scheduler=sched, log_every=len(loader), progress=progress,
                 desc=f"MAE pre-training ({cfg.mae_mask:.0%} masked)")
    hist = tr.fit(loader, steps=steps)
    return tr.model.eval(), hist


@torch.no_grad()
def mae_eval(model: TinyMAE, x: torch.Tensor, mask_ratio: float, seed: int = 0, batch: int = 500) -> dict:
    """Masked-patch MSE on `x` with fixed masks, against two baselines: the mean training
    image's patch at each position (`mean_image`, pass it) is added by the caller; here the
    per-image mean of the visible pixels fills every masked patch."""
    model.eval()
    dev = next(model.parameters()).device
    g = torch.Generator(device=dev).manual_seed(seed)
    mse, base, n = 0.0, 0.0, 0
    for i in range(0, len(x), batch):
        xb = x[i:i + batch].to(dev)
        loss, pred, masked = mae_forward(model, xb, mask_ratio, g)
        tgt = patchify(xb, model.patch)
        vis_mean = (tgt * (~masked)[..., None]).sum((1, 2)) / ((~masked).sum(1) * tgt.shape[-1])
        base += float(mae_loss(vis_mean[:, None, None].expand_as(tgt), tgt, masked)) * len(xb)
        mse += float(loss) * len(xb)
        n += len(xb)
    return {"mse": mse / n, "visible_mean_baseline": base / n}


@torch.no_grad()
def mae_features(model: TinyMAE, x: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    model.eval()
    dev = next(model.parameters()).device
    return torch.cat([model.features(x[i:i + batch].to(dev)).cpu() for i in range(0, len(x), batch)])


def finetune_mae(state: dict | None, mnist: dict, cfg: Config, seed: int = 0, progress: bool = False,
                 device=None) -> float:
    """Fine-tune the MAE encoder on labels, every patch visible (no masking), from `state` (None:
    from scratch, the equal-budget baseline). Returns the test accuracy."""
    dev = torch.device(device) if device is not None else default_device()
    torch.manual_seed(seed)
    mae = new_mae(cfg)
    if state is not None:
        mae.load_state_dict(state)
    model = PatchClassifier(mae).to(dev)
    params = [p for n_, p in model.named_parameters() if not n_.startswith(("mae.dec", "mae.decoder", "mae.pred",
                                                                             "mae.mask_token"))]
    loader = ArrayLoader((mnist["x_train"], mnist["y_train"]), cfg.mae_batch, seed=seed, device=dev)
    opt = torch.optim.AdamW(params, lr=cfg.ft_lr, weight_decay=0.05)
    tr = Trainer(model, opt, lambda m, b: F.cross_entropy(m(b[0]), b[1]), device=dev, log_every=len(loader),
                 progress=progress, desc="fine-tune MAE encoder")
    tr.fit(loader, steps=cfg.ft_epochs * len(loader))
    model.eval()
    hits = 0
    with torch.no_grad():
        for i in range(0, len(mnist["x_test"]), 1000):
            hits += int((model(mnist["x_test"][i:i + 1000].to(dev)).argmax(-1).cpu()
                         == mnist["y_test"][i:i + 1000]).sum())
    return hits / len(mnist["x_test"])


# ----------------------------------------------------------------------------- timing (D8, D9)
def _round_times(fns: dict, rounds: int, warmup: int) -> dict:
    """Seconds per call of each function, in interleaved rounds: every round calls each
    candidate once, in an order rotated every round, so that a change in the machine's load
    hits every candidate alike; ratios are then taken within a round. Returns the per-round
    times of each candidate."""
    for _ in range(warmup):
        for f in fns.values():
            f()
    times = {k: [] for k in fns}
    keys = list(fns)
    for i in range(rounds):
        for k in keys[i % len(keys):] + keys[:i % len(keys)]:
            t0 = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - t0)
    return times


def _median_times(fns: dict, steps: int, warmup: int) -> dict:
    """Median seconds per call of each function over interleaved rounds (`_round_times`)."""
    return {k: statistics.median(v) for k, v in _round_times(fns, steps, warmup).items()}


def time_encoder(cfg: Config, fractions: Sequence[float] = (1.0, 0.25), seed: int = 0) -> dict:
    """D8: seconds of a forward + backward pass of the small encoder (time_d, time_depth,
    time_n tokens, time_batch) on a random `fraction` of the tokens (gathered, as MAE does),
    per interleaved round: ``{"times": {fraction: [...]}}``."""
    torch.manual_seed(seed)
    enc = Encoder(cfg.time_d, cfg.time_depth, cfg.heads, 4 * cfg.time_d)
    x = torch.randn(cfg.time_batch, cfg.time_n, cfg.time_d)

    def make(frac):
        idx = random_keep(cfg.time_batch, cfg.time_n, 1 - frac)

        def f():
            enc.zero_grad(set_to_none=True)
            xs = x.gather(1, idx[..., None].expand(-1, -1, cfg.time_d))
            enc(xs).pow(2).mean().backward()
        return f
    return {"times": _round_times({f: make(f) for f in fractions}, cfg.time_steps, cfg.time_warmup)}


def time_droptoken(cfg: Config, rates: Sequence[float] = (0.0, 0.1, 0.25, 0.5), seed: int = 0) -> dict:
    """D9: seconds of one fine-tuning step (DropToken, forward, backward, AdamW) of a tiny BERT
    of the timing size on full-length sequences, at each drop rate, in two variants run in the
    same interleaved rounds: ``"repad"`` (independent drops, the batch re-padded to its longest
    kept row, `drop_tokens`) and ``"exact"`` (a fixed drop count per row: no padding at all).
    Also ``"length"``: the mean re-padded length / n at each rate, over the timed batches."""
    torch.manual_seed(seed)
    n = cfg.time_n
    model = TinyBert(80, n, cfg.time_d, cfg.time_depth, cfg.heads, 4 * cfg.time_d, 4)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(len(SPECIALS), 80, (cfg.time_batch, n))
    ids[:, 0] = CLS
    pad = torch.zeros_like(ids, dtype=torch.bool)
    y = torch.randint(0, 4, (cfg.time_batch,))
    g = torch.Generator().manual_seed(seed)
    lengths = {r: [] for r in rates}

    def make(r, exact):
        def f():
            a, pos, p = drop_tokens(ids, pad, r, protect=ids == CLS, generator=g, exact=exact)
            if not exact:
                lengths[r].append(a.shape[1] / n)
            loss = F.cross_entropy(model(a, pos, p), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return f
    fns = {(v, r): make(r, v == "exact") for v in ("repad", "exact") for r in rates}
    t = _round_times(fns, cfg.time_steps, cfg.time_warmup)
    return {"repad": {r: t[("repad", r)] for r in rates}, "exact": {r: t[("exact", r)] for r in rates},
            "length": {r: float(np.mean(v)) for r, v in lengths.items()}}


# ----------------------------------------------------------------------------- MAE runs
def probe_scores(model: TinyMAE, mnist: dict, cfg: Config, seed: int = 0) -> dict[str, float]:
    """Linear-probe accuracy (dlbook.metrics.linear_probe) of the frozen encoder's mean-pooled
    features, all patches visible, against the same architecture at random initialisation and
    against the raw pixels (the baseline the encoder has to beat)."""
    from ..metrics import linear_probe

    torch.manual_seed(seed + 1000)
    rand = new_mae(cfg).to(next(model.parameters()).device)
    out = {}
    for name, m in (("trained", model), ("random", rand)):
        ftr, fte = mae_features(m, mnist["x_train"]), mae_features(m, mnist["x_test"])
        out[name] = linear_probe(ftr, mnist["y_train"], fte, mnist["y_test"], seed=seed)
    out["pixels"] = linear_probe(mnist["x_train"].flatten(1), mnist["y_train"], mnist["x_test"].flatten(1),
                                 mnist["y_test"], seed=seed)
    return out


def mae_finetune_runs(state: dict, mnist: dict, cfg: Config, seed: int = 0, progress: bool = True) -> dict[str, list[float]]:
    """Fine-tune the pre-trained encoder without masking, and the same encoder from scratch
    (equal steps), seeds seed..seed+cfg.ft_seeds-1: test accuracies."""
    jobs = [(name, seed + s) for s in range(cfg.ft_seeds) for name in ("pre-trained", "scratch")]
    out: dict[str, list[float]] = {"pre-trained": [], "scratch": []}
    for name, s in _progress(jobs, len(jobs), "fine-tuning the MAE encoder", progress):
        out[name].append(finetune_mae(state if name == "pre-trained" else None, mnist, cfg, seed=s))
    return out
