"""Chapter 01, the runs: CIFAR-10 data, training over seeds, features of trained and random
encoders against pixel baselines, and the epoch-scaling evaluation."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from .. import metrics
from ..config import device as default_device
from ..config import require
from ..data import load
from ..gaussian import code_statistics
from ..train import ArrayLoader, History, Trainer
from .models import Encoder, InfoMax, infomax_step
from .settings import Config


# =============================================================== data
def images_to_input(x_uint8: np.ndarray) -> torch.Tensor:
    """uint8 (N, 32, 32, 3) -> float (N, 3, 32, 32) in [-0.5, 0.5] as in the post."""
    from ..data import to_float

    return to_float(x_uint8) - 0.5


def input_to_images(x: torch.Tensor) -> torch.Tensor:
    """The inverse of `images_to_input` (the post's figure code used (x+1)/2, a contrast bug)."""
    return (x + 0.5).clamp(0, 1)


@dataclass
class CifarData:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str


CIFAR_BATCH = 10_000  # images per training batch file of CIFAR-10 (canonical indices 0..49 999)


def load_cifar(cfg: Config) -> CifarData:
    """The profile's CIFAR-10 data: with `per_batch` = k, the first k images of each of the five
    training batches, chosen by their canonical record index, so that the bundled sample (k = 50),
    the offline subset (k = 900) and the full archive give the same images; and the first
    `n_test` test images. A source holding fewer of them is refused rather than silently used."""
    tr, te = load("cifar-10", "train"), load("cifar-10", "test", limit=cfg.n_test)
    x, y = tr.x, tr.y
    if cfg.per_batch is not None:
        idx = tr.canonical_index()
        keep = np.flatnonzero(idx % CIFAR_BATCH < cfg.per_batch)
        counts = np.bincount(idx[keep] // CIFAR_BATCH, minlength=5)
        if len(counts) != 5 or np.any(counts != cfg.per_batch):
            raise ValueError(f"cifar-10/train ({tr.source}) holds {counts.tolist()} of the first {cfg.per_batch} "
                             "images of the five batches: use a profile whose per_batch it holds (smoke: 50, "
                             "cpu: 900) or provide the full archive")
        x, y = x[keep], y[keep]
    if len(te) != cfg.n_test:
        raise ValueError(f"cifar-10/test ({te.source}) holds {len(te)} images, the profile asks for {cfg.n_test}")
    return CifarData(x, y, te.x, te.y, tr.source)


# =============================================================== training
@dataclass
class InfomaxRun:
    name: str
    alpha: float
    beta: float
    gamma: float
    global_input: str
    model: InfoMax
    history: History
    initial: dict[str, float]
    seconds: float
    epochs: list[dict[str, float]] = field(default_factory=list)
    snapshots: dict[int, dict] = field(default_factory=dict)  # epoch -> encoder state_dict
    views: int = 1
    seed: int = 0

    def passes(self, epoch: int) -> int:
        """Encoder passes after `epoch` epochs, in units of the training set (epochs x views)."""
        return epoch * self.views


def run_label(alpha: float, beta: float, gamma: float, global_input: str, views: int = 1) -> str:
    return (f"alpha={alpha:g}, beta={beta:g}, gamma={gamma:g}, global critic={global_input}"
            + (", two views" if views == 2 else ""))


def train_infomax(cfg: Config, x_train: torch.Tensor, alpha: float | None = None,
                  beta: float | None = None, gamma: float | None = None, global_input: str = "post",
                  epochs: int | None = None, snapshot_epochs: Sequence[int] = (), seed: int = 0,
                  views: int = 1, progress: bool = True) -> InfomaxRun:
    """Experiment 3: train encoder + critics jointly with Adam on (eq-01-total) through
    `dlbook.train.Trainer`, on the images themselves (views=1, the post) or on pairs of
    random views (views=2, eq-01-views). Logs every quarter epoch; `epochs` of the result
    holds per-epoch means; `snapshot_epochs` keeps copies of the encoder after those epochs."""
    a = cfg.alpha if alpha is None else alpha
    b = cfg.beta if beta is None else beta
    g = cfg.gamma if gamma is None else gamma
    n_ep = cfg.epochs if epochs is None else epochs
    require("train_infomax", positive={"epochs": n_ep}, whole=True)
    require("train_infomax", nonneg={"alpha": a, "beta": b, "gamma": g})
    if x_train.ndim != 4 or len(x_train) < cfg.batch_size:
        raise ValueError(f"train_infomax: need (N, 3, H, W) images with N >= batch_size ({cfg.batch_size}), "
                         f"got shape {tuple(x_train.shape)}")
    torch.manual_seed(seed)
    model = InfoMax(cfg.width, cfg.z_dim, cfg.critic_width, a, b, g, global_input,
                    image_size=x_train.shape[-1], views=views, view_scale=cfg.view_scale,
                    view_jitter=cfg.view_jitter, view_gray=cfg.view_gray)
    loader = ArrayLoader(x_train, cfg.batch_size, shuffle=True, seed=seed)
    spe = len(loader)
    with torch.no_grad():  # the losses at initialisation (C7), on the first minibatch
        model.train()
        first = next(iter(loader))
        initial = {k: float(v) for k, v in model.losses(first).items()}
    snaps: dict[int, dict] = {}

    def keep(trainer, step, _metrics):
        if step % spe == 0 and step // spe in snapshot_epochs:
            snaps[step // spe] = {k: v.detach().cpu().clone()
                                  for k, v in trainer.model.encoder.state_dict().items()}

    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    every = max(d for d in range(1, max(1, spe // 4) + 1) if spe % d == 0)  # divides an epoch
    tr = Trainer(model, opt, infomax_step, log_every=every, progress=progress, callbacks=[keep],
                 desc=f"gamma={g:g} {global_input}" + (" 2 views" if views == 2 else "") + f" seed {seed}")
    t0 = time.perf_counter()
    hist = tr.fit(loader, steps=n_ep * spe)
    secs = time.perf_counter() - t0
    per_epoch = []
    steps = np.asarray(hist.steps)
    for e in range(n_ep):
        m = (steps > e * spe) & (steps <= (e + 1) * spe)
        per_epoch.append({k: float(np.nanmean(np.asarray(v)[m])) for k, v in hist.metrics.items()})
    return InfomaxRun(run_label(a, b, g, global_input, views), a, b, g, global_input, model, hist, initial,
                      secs, per_epoch, snaps, views, seed)


def seeds_of(cfg: Config, seed: int = 0, n: int | None = None) -> list[int]:
    """The seeds every training experiment of the profile runs with (the first `n` of them)."""
    return [seed + i for i in range(cfg.seeds if n is None else n)]


def train_seeds(cfg: Config, x_train: torch.Tensor, views: int = 1, seed: int = 0,
                progress: bool = True) -> list[InfomaxRun]:
    """Experiments 3 and 6: the post's recipe (views=1, `cfg.epochs` epochs) or the two-view
    run (views=2, `cfg.view_epochs` epochs) once per seed. The post's recipe keeps encoder
    snapshots at each length of the scaling curve (`cfg.lengths`), at `cfg.sweep_epochs` and at
    `cfg.equal_pass_epochs` (the two-view run's encoder passes); the two-view run at its end."""
    if views not in (1, 2):
        raise ValueError(f"train_seeds: views must be 1 or 2, got {views!r}")
    epochs = cfg.epochs if views == 1 else cfg.view_epochs
    snap = {epochs} | ({cfg.sweep_epochs, cfg.equal_pass_epochs, *cfg.lengths} if views == 1 else set())
    return [train_infomax(cfg, x_train, epochs=epochs, snapshot_epochs=sorted(snap), seed=s, views=views,
                          progress=progress) for s in seeds_of(cfg, seed)]


def run_sweep(cfg: Config, x_train: torch.Tensor, seed: int = 0, progress: bool = True) -> list[InfomaxRun]:
    """Experiment 4: every (gamma, global input) of `cfg.sweep` with the post's alpha and beta,
    `cfg.sweep_epochs` long, once for each of the first `cfg.sweep_seeds` seeds (the gamma sweep
    of C8/C9 and the paper-critic run)."""
    return [train_infomax(cfg, x_train, gamma=g, global_input=gi, epochs=cfg.sweep_epochs, seed=s,
                          progress=progress) for s in seeds_of(cfg, seed, cfg.sweep_seeds) for g, gi in cfg.sweep]


def encoder_from_snapshot(cfg: Config, state: dict) -> Encoder:
    enc = Encoder(cfg.width, cfg.z_dim)
    enc.load_state_dict(state)
    return enc.to(default_device()).eval()


def random_encoder(cfg: Config, seed: int = 0) -> Encoder:
    """The same architecture, freshly initialised (the baseline of C10)."""
    torch.manual_seed(seed + 12345)
    return Encoder(cfg.width, cfg.z_dim).to(default_device()).eval()


# =============================================================== features
@torch.no_grad()
def encode(encoder: Encoder, x: torch.Tensor, batch: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """mu(x) and log sigma^2(x) in eval mode (BatchNorm with running statistics)."""
    was = encoder.training
    encoder.eval()
    dev = next(encoder.parameters()).device
    mus, lvs = [], []
    for s in range(0, len(x), batch):
        _, mu, lv = encoder(x[s:s + batch].to(dev))
        mus.append(mu.cpu())
        lvs.append(lv.cpu())
    encoder.train(was)
    return torch.cat(mus).numpy(), torch.cat(lvs).numpy()


@torch.no_grad()
def encode_local(encoder: Encoder, x: torch.Tensor, batch: int = 500) -> np.ndarray:
    """The flattened local feature map C(x) in eval mode."""
    was = encoder.training
    encoder.eval()
    dev = next(encoder.parameters()).device
    out = torch.cat([encoder.local(x[s:s + batch].to(dev)).flatten(1).cpu() for s in range(0, len(x), batch)])
    encoder.train(was)
    return out.numpy()


PIXEL_KINDS = ("raw", "centred")


def pixel_features(x_uint8: np.ndarray, kind: str = "raw") -> np.ndarray:
    """Raw pixels as features, flattened: `raw` (in [-0.5, 0.5] as the encoder sees them) or
    `centred` (each image minus its own mean over all pixels and channels: brightness removed,
    colour kept). Dividing by the image's own spread as well changes no cosine neighbour."""
    if kind not in PIXEL_KINDS:
        raise ValueError(f"unknown pixel preprocessing {kind!r}; choose one of {PIXEL_KINDS}")
    x = images_to_input(x_uint8).numpy().astype(np.float64)
    if kind == "centred":
        x = x - x.mean(axis=(1, 2, 3), keepdims=True)
    return x.reshape(len(x), -1).astype(np.float32)


def evaluate_features(f_train: np.ndarray, y_train: np.ndarray, f_test: np.ndarray, y_test: np.ndarray,
                      k: int = 10, probe: bool = True) -> dict:
    """Test queries against the training bank: top-k cosine label agreement, k-NN accuracy
    (cosine, majority vote) and a linear probe; with the per-query vectors (`agree_q`,
    `knn_ok`, `probe_ok`) that paired comparisons on the same test images need."""
    agree = metrics.knn_label_agreement(f_train, y_train, f_test, y_test, k, "cosine", per_example=True)
    knn_ok = metrics.knn_correct(f_train, y_train, f_test, y_test, k, "cosine")
    out = {"agreement": float(agree.mean()), "knn_acc": float(knn_ok.mean()), "agree_q": agree, "knn_ok": knn_ok}
    if probe:
        ok = metrics.linear_probe(f_train, y_train, f_test, y_test, per_example=True)
        out.update(probe_acc=float(ok.mean()), probe_ok=ok)
    return out


def compare_features(cfg: Config, data: CifarData, encoders: dict, seed: int = 0,
                     probe: bool = True) -> dict[str, dict]:
    """Experiment 5: label agreement, k-NN accuracy and linear probe for each entry: an
    encoder (its mu(x), with the statistics of the codes on the training set), (encoder, "local")
    for its flattened local map C(x), None for raw pixels or ("pixels", kind) for preprocessed
    pixels (`pixel_features`)."""
    xtr, xte = images_to_input(data.x_train), images_to_input(data.x_test)
    out = {}
    for name, enc in encoders.items():
        stats = {}
        if enc is None:
            enc = ("pixels", "raw")
        if isinstance(enc, tuple) and enc[0] == "pixels":
            ftr, fte = pixel_features(data.x_train, enc[1]), pixel_features(data.x_test, enc[1])
        elif isinstance(enc, tuple):
            if enc[1] != "local":
                raise ValueError(f"unknown feature layer {enc[1]!r}; use (encoder, 'local')")
            ftr, fte = encode_local(enc[0], xtr), encode_local(enc[0], xte)
        else:
            ftr, lv = encode(enc, xtr)
            fte, _ = encode(enc, xte)
            stats = code_statistics(ftr, lv, seed=seed)
        out[name] = {**evaluate_features(ftr, data.y_train, fte, data.y_test, cfg.knn_k, probe), **stats}
    return out


def pixel_baselines(cfg: Config, data: CifarData) -> dict:
    """Every simple pixel baseline: each preprocessing of `PIXEL_KINDS` with the chapter's
    k (all three metrics) and with 2k neighbours (k-NN accuracy). Returns the scores by name
    and, for each metric, the name of the strongest (chosen on the test set itself, which can
    only favour the baseline)."""
    scores = compare_features(cfg, data, {f"pixels, {kind}": ("pixels", kind) for kind in PIXEL_KINDS})
    for kind in PIXEL_KINDS:
        ftr, fte = pixel_features(data.x_train, kind), pixel_features(data.x_test, kind)
        ok = metrics.knn_correct(ftr, data.y_train, fte, data.y_test, 2 * cfg.knn_k, "cosine")
        scores[f"pixels, {kind}, k={2 * cfg.knn_k}"] = {"knn_acc": float(ok.mean()), "knn_ok": ok}
    best = {m: max((n for n in scores if m in scores[n]), key=lambda n: scores[n][m])
            for m in ("agreement", "knn_acc", "probe_acc")}
    return {"scores": scores, "best": best}


FEATURE_COLUMNS = (("agreement", "top-10 label agreement", 3), ("knn_acc", "10-NN accuracy", 3),
                   ("probe_acc", "linear probe", 3), ("agg_var", "aggregate var", 2),
                   ("mean_logvar", "mean log sigma^2", 2), ("abs_mean_mu", "abs mean mu", 3))


def feature_table(scores: dict, names: Sequence[str]) -> str:
    """Rows `names` of feature scores as a Markdown table. An entry is one score dict or a list
    of them (one per seed), shown by `dlbook.metrics.spread` (mean ± sd [min, max] over seeds);
    rows without a column show a dash."""
    from ..nb import md_table

    def cell(entry, key, d):
        runs = entry if isinstance(entry, list) else [entry]
        vals = [r[key] for r in runs if key in r and np.isfinite(r[key])]
        return metrics.spread(vals, d) if vals else "-"

    rows = [[n + (f" ({len(scores[n])} seeds)" if isinstance(scores[n], list) and len(scores[n]) > 1 else "")]
            + [cell(scores[n], k, d) for k, _, d in FEATURE_COLUMNS] for n in names]
    return md_table(["features"] + [h for _, h, _ in FEATURE_COLUMNS], rows)


def post_name(epochs: int) -> str:
    """The name of the post's recipe after `epochs` epochs in the feature scores."""
    return f"post recipe ({epochs} ep)"


VIEW_NAME = "two views"


def sweep_name(gamma: float, global_input: str, epochs: int) -> str:
    """The name of a run of the gamma sweep (experiment 4) in the feature scores."""
    return f"gamma={gamma:g}, global critic={global_input} ({epochs} ep)"


def feature_entries(cfg: Config, main_runs: Sequence[InfomaxRun], rand_encs: Sequence[Encoder]) -> dict:
    """The encoders of experiment 5, one per seed: the random encoder and the post's recipe at
    every length of the scaling curve and at the two-view run's encoder passes (snapshots of
    the same runs)."""
    entries = {"random encoder": list(rand_encs)}
    for ep in sorted(set(cfg.lengths) | {cfg.equal_pass_epochs}):
        entries[post_name(ep)] = [r.model.encoder if ep == cfg.epochs else encoder_from_snapshot(cfg, r.snapshots[ep])
                                  for r in main_runs]
    return entries


def sweep_entries(cfg: Config, main_runs: Sequence[InfomaxRun], sweep: Sequence[InfomaxRun],
                  have: Sequence[str] = ()) -> dict:
    """The encoders of the gamma sweep (experiment 4), one per seed, and the post's recipe after
    the sweep's length (its gamma = cfg.gamma point, from snapshots) unless `have` holds it."""
    entries = {sweep_name(g, gi, cfg.sweep_epochs): [r.model.encoder for r in sweep if (r.gamma, r.global_input) == (g, gi)]
               for g, gi in cfg.sweep}
    if post_name(cfg.sweep_epochs) not in have:
        entries[post_name(cfg.sweep_epochs)] = [encoder_from_snapshot(cfg, r.snapshots[cfg.sweep_epochs])
                                                for r in main_runs[:cfg.sweep_seeds]]
    return entries


def knn_by_epoch(cfg: Config, data: CifarData, run: InfomaxRun) -> dict[int, float]:
    """k-NN accuracy (k = cfg.knn_k, cosine, test queries against the training bank) of mu(x)
    from each encoder snapshot of a run, keyed by epoch."""
    xtr, xte = images_to_input(data.x_train), images_to_input(data.x_test)
    out = {}
    for ep, state in sorted(run.snapshots.items()):
        enc = encoder_from_snapshot(cfg, state)
        out[ep] = metrics.knn_accuracy(encode(enc, xtr)[0], data.y_train, encode(enc, xte)[0], data.y_test,
                                       cfg.knn_k, "cosine")
    return out


def retrieval_rows(feats: np.ndarray, queries: Sequence[int], k: int = 10, metric: str = "cosine"
                   ) -> np.ndarray:
    """Indices (Q, k) of each query's k nearest images (itself first) in feature space."""
    return metrics.nearest_neighbours(feats, feats[list(queries)], k, metric)[0]


# =============================================================== several seeds
def compare_seeds(cfg: Config, data: CifarData, entries: dict[str, Sequence],
                  probe: bool = True) -> dict[str, list[dict]]:
    """`compare_features` for entries holding one encoder (or (encoder, "local")) per seed:
    {name: [scores of seed 0, seed 1, ...]}."""
    return {name: [compare_features(cfg, data, {name: e}, seed=i, probe=probe)[name] for i, e in enumerate(encs)]
            for name, encs in entries.items()}


def knn_by_passes(cfg: Config, data: CifarData, runs: Sequence[InfomaxRun]) -> dict[int, list[float]]:
    """k-NN accuracy of the snapshots of several runs (one per seed), keyed by encoder passes
    (epochs x views, in units of the training set): {passes: [accuracy of each run]}."""
    out: dict[int, list[float]] = {}
    for run in runs:
        for ep, acc in knn_by_epoch(cfg, data, run).items():
            out.setdefault(run.passes(ep), []).append(acc)
    return dict(sorted(out.items()))


def per_epoch(runs: Sequence[InfomaxRun], key: str) -> np.ndarray:
    """The per-epoch means of one logged quantity for several runs: an array (runs, epochs)."""
    return np.array([[e[key] for e in r.epochs] for r in runs])
