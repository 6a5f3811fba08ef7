"""Generic evaluation metrics for learned features: nearest-neighbour retrieval, k-NN label
agreement and accuracy, and a linear (logistic-regression) probe; and how the book summarises
a result over seeds (`mean_sd`, `spread`, `paired`). Nothing here depends on a particular
chapter; every function takes plain feature matrices and integer labels, or plain numbers."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from .config import device as _device
from .config import require

METRICS = ("cosine", "l2")


def _as_tensor(a) -> torch.Tensor:
    t = a if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))
    t = t.detach().float().to(_device())
    if t.ndim != 2:
        raise ValueError(f"features must be a 2-D (N, D) matrix, got shape {tuple(t.shape)}")
    return t


def _labels(y) -> torch.Tensor:
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"labels must be a 1-D vector of integers, got shape {y.shape}")
    return torch.as_tensor(y).long().to(_device())


def _paired(where: str, x: torch.Tensor, y: torch.Tensor) -> None:
    if len(x) != len(y):
        raise ValueError(f"{where}: {len(x)} feature rows but {len(y)} labels")


def nearest_neighbours(bank, queries, k: int = 10, metric: str = "cosine",
                       chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Indices (Q, k) of the `k` nearest rows of `bank` for each query row, best first, and
    their scores: cosine similarity (higher is nearer) or Euclidean distance (lower). The
    search runs on `dlbook.config.device()`; the results come back as NumPy arrays."""
    require("nearest_neighbours", positive={"k": k, "chunk": chunk}, whole=True)
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {METRICS}")
    b, q = _as_tensor(bank), _as_tensor(queries)
    if b.shape[1] != q.shape[1]:
        raise ValueError(f"bank has {b.shape[1]} features but queries have {q.shape[1]}")
    k = min(int(k), len(b))
    if metric == "cosine":
        b = torch.nn.functional.normalize(b, dim=1)
        q = torch.nn.functional.normalize(q, dim=1)
    idx, score = [], []
    for s in range(0, len(q), chunk):
        qs = q[s:s + chunk]
        if metric == "cosine":
            sim = qs @ b.T
            v, i = sim.topk(k, dim=1)
        else:
            d2 = (qs.pow(2).sum(1, keepdim=True) - 2 * qs @ b.T + b.pow(2).sum(1)[None]).clamp_min(0)
            v, i = d2.topk(k, dim=1, largest=False)
            v = v.sqrt()
        idx.append(i.cpu())
        score.append(v.cpu())
    return torch.cat(idx).numpy(), torch.cat(score).numpy()


def knn_label_agreement(bank, bank_labels, queries, query_labels, k: int = 10,
                        metric: str = "cosine", exclude_self: bool = False, per_example: bool = False):
    """Mean fraction of each query's `k` nearest bank items that share its label. With
    `exclude_self` (queries = bank), each query's own row is skipped. With `per_example`, the
    vector of per-query fractions instead of their mean."""
    require("knn_label_agreement", positive={"k": k}, whole=True)
    kk = k + 1 if exclude_self else k
    idx, _ = nearest_neighbours(bank, queries, kk, metric)
    if exclude_self:
        own = np.arange(len(idx))[:, None]
        idx = np.stack([row[row != o[0]][:k] for row, o in zip(idx, own)])
    yb, yq = _labels(bank_labels).cpu().numpy(), _labels(query_labels).cpu().numpy()
    _paired("knn_label_agreement (bank)", bank, yb)
    _paired("knn_label_agreement (queries)", idx, yq)
    frac = (yb[idx] == yq[:, None]).mean(1)
    return frac if per_example else float(frac.mean())


def knn_accuracy(bank, bank_labels, queries, query_labels, k: int = 10,
                 metric: str = "cosine") -> float:
    """Accuracy of a majority vote among the `k` nearest bank items (ties: the nearest wins)."""
    return float(knn_correct(bank, bank_labels, queries, query_labels, k, metric).mean())


def knn_correct(bank, bank_labels, queries, query_labels, k: int = 10,
                metric: str = "cosine") -> np.ndarray:
    """Per query, whether the majority vote of its `k` nearest bank items is its label (a
    boolean vector: paired comparisons of two feature sets on the same queries use it)."""
    idx, _ = nearest_neighbours(bank, queries, k, metric)
    yb, yq = _labels(bank_labels).cpu().numpy(), _labels(query_labels).cpu().numpy()
    _paired("knn_correct (bank)", bank, yb)
    _paired("knn_correct (queries)", idx, yq)
    n_cls = int(max(yb.max(), yq.max())) + 1
    votes = np.zeros((len(idx), n_cls))
    for j in range(idx.shape[1]):  # earlier neighbours get a tiny tie-breaking bonus
        np.add.at(votes, (np.arange(len(idx)), yb[idx[:, j]]), 1.0 + 1e-3 * (idx.shape[1] - j))
    return votes.argmax(1) == yq


def linear_probe(train_x, train_y, test_x, test_y, weight_decay: float = 1e-3,
                 max_iter: int = 100, seed: int = 0, per_example: bool = False):
    """Test accuracy of a multinomial logistic regression on frozen features (standardised
    with the training statistics, L2 penalty `weight_decay`, full-batch L-BFGS in float32).
    With `per_example`, the boolean vector of correct test predictions instead."""
    require("linear_probe", positive={"max_iter": max_iter}, whole=True)
    require("linear_probe", nonneg={"weight_decay": weight_decay})
    xtr, xte = _as_tensor(train_x), _as_tensor(test_x)
    ytr, yte = _labels(train_y), _labels(test_y)
    if len(xtr) != len(ytr) or len(xte) != len(yte):
        raise ValueError("features and labels differ in length")
    mean, std = xtr.mean(0), xtr.std(0).clamp_min(1e-6)
    xtr, xte = (xtr - mean) / std, (xte - mean) / std
    n_cls = int(max(ytr.max(), yte.max())) + 1
    g = torch.Generator().manual_seed(seed)
    w = (0.01 * torch.randn(xtr.shape[1], n_cls, generator=g, dtype=torch.float32)).to(xtr.device).requires_grad_()
    b = torch.zeros(n_cls, dtype=torch.float32, device=xtr.device, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xtr @ w + b, ytr) + weight_decay * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        correct = ((xte @ w + b).argmax(1) == yte).cpu().numpy()
    return correct if per_example else float(correct.mean())


# ---------------------------------------------------------------- results over seeds
def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (NaN for a single value, which has no spread)."""
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        raise ValueError("mean_sd: no values")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else float("nan")


def spread(values: Sequence[float], digits: int = 3) -> str:
    """Values over seeds as ``mean ± sd [min, max]`` (sample standard deviation; one value
    alone as itself): how the book reports a stochastic result."""
    v = np.asarray(list(values), dtype=float)
    if v.size == 0:
        raise ValueError("spread: no values")
    f = lambda x: f"{x:.{digits}g}"
    if v.size == 1:
        return f(v[0])
    return f"{f(v.mean())} ± {f(v.std(ddof=1))} [{f(v.min())}, {f(v.max())}]"


def paired(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Mean, standard deviation and standard error of the paired differences a - b (the same
    seeds on both sides), with a 95 % t interval; NaN where fewer than two pairs."""
    from scipy import stats

    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if len(d) < 2:
        return {"mean": float(d.mean()) if len(d) else float("nan"), "sd": float("nan"), "se": float("nan"),
                "lo": float("nan"), "hi": float("nan"), "n": len(d)}
    sd = float(d.std(ddof=1))
    se = sd / math.sqrt(len(d))
    h = float(stats.t.ppf(0.975, len(d) - 1)) * se
    return {"mean": float(d.mean()), "sd": sd, "se": se, "lo": float(d.mean()) - h, "hi": float(d.mean()) + h,
            "n": len(d)}
