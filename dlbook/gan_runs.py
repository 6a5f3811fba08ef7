"""How GAN experiments run: toy jobs and image experiments driven by a loss table, and the
command line. What the chapters *show* (losses, nets, toy data) lives in `dlbook.gan`; the
loop in `dlbook.gan_loop`; the classifier-FID and KID in `dlbook.image_metrics`; the plots in
`dlbook.gan_plots`. The names of those modules that the chapters call are importable from here
too (``gr.train_gan``, ``gr.plot_samples``, ``gr.spread``, ...).
"""
from __future__ import annotations

import os
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import numpy as np
import torch
from torch import nn

from . import gan
from .config import ConfigError, Settings, require
from .gan_loop import (GANRun, LoopConfig, Processes, barrier, broadcast, cpu_threads, init_processes,  # noqa: F401
                       process_device, processes, stream_seed, train_gan)
from .gan_plots import critic_field, plot_critic, plot_image_curves, plot_samples  # noqa: F401
from .image_metrics import (ClassifierFID, ClassifierRecipe, FeatureClassifier, ImageMetric,  # noqa: F401
                            InceptionFID, frechet_distance, kid)
from .metrics import spread  # noqa: F401  (the chapters call gr.spread)
from .train import CheckpointError, History, NonFiniteLoss, load_checkpoint, require_fields, run_jobs, save_checkpoint  # noqa: F401


# ======================================================================== 2-D toys

# The toy's loop settings are LoopConfig's fields: ToyConfig keeps them under the same names (the
# toy's own defaults where it trains longer on larger batches), LoopConfig checks them, and
# `ToyConfig.loop` is the one place that turns them into a run's LoopConfig.
TOY_LOOP = ("steps", "batch", "lr", "betas", "eval_every")


@dataclass(frozen=True)
class ToyConfig(Settings):
    """Settings shared by every toy run of a chapter: data, nets, optimiser, evaluation. The
    loop's settings (`TOY_LOOP`: generator steps, batch, Adam's lr and betas, evaluation period)
    are those of `LoopConfig`, checked by it and handed to it by `loop`."""

    data: str = "8gaussians"
    steps: int = 4000  # generator steps (a job may ask for another number)
    batch: int = 256
    width: int = 128
    depth: int = 3
    lr: float = LoopConfig.lr
    betas: tuple[float, float] = LoopConfig.betas
    eval_every: int = LoopConfig.eval_every
    n_eval: int = 4000
    n_show: int = 1500
    field_n: int = 101
    workers: int = 2

    SIZES = ("width", "depth", "n_eval", "n_show", "field_n", "workers")  # the loop's own: LoopConfig's to check

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.data not in gan.TOYS:
            raise ValueError(f"ToyConfig: unknown toy data {self.data!r}: choose one of {', '.join(gan.TOYS)}")
        try:
            self.loop()
        except ConfigError as e:  # LoopConfig's message, said of the config the reader built
            raise ConfigError(str(e).replace("LoopConfig", "ToyConfig", 1)) from None

    def loop(self, n_critic: int = 1, steps: int | None = None, lr: float | None = None,
             betas: tuple[float, float] | None = None) -> LoopConfig:
        """The `LoopConfig` of one toy run: this config's `TOY_LOOP` settings, where a job sets
        its own ``steps``, ``lr`` or ``betas`` (None: the config's) those, ``n_critic`` critic
        updates per generator update, 2-D noise, a log every tenth of an evaluation period."""
        own = {name: getattr(self, name) for name in TOY_LOOP}
        own.update({k: v for k, v in dict(steps=steps, lr=lr, betas=betas).items() if v is not None})
        return LoopConfig(**own, n_critic=n_critic, z_dim=2, log_every=max(1, self.eval_every // 10), progress=False)

    def smoke(self) -> "ToyConfig":
        """The same toy with tiny nets for a few steps, in one process: what CI runs."""
        return replace(self, steps=40, batch=32, width=16, eval_every=20, n_eval=300, n_show=200, field_n=31,
                       workers=1)


@dataclass(frozen=True)
class ToyJob:
    """One toy run of a chapter's loss table. ``key`` names it in the results; ``probe(loss, T,
    x_real, x_fake) -> dict`` (a module-level function) adds metrics to each evaluation."""

    key: tuple
    loss: gan.GANLoss
    seed: int = 0
    n_critic: int | None = None  # None: the loss's usual ratio
    steps: int | None = None  # None: ToyConfig.steps
    data: str | None = None  # None: ToyConfig.data
    critic_norm: str = "none"  # "none" or "sn"
    fields: bool = False  # keep critic heat maps with the snapshots
    probe: Callable | None = None
    lr: float | None = None  # None: ToyConfig.lr (a baseline on its own published recipe sets its own)
    betas: tuple[float, float] | None = None  # None: ToyConfig.betas

    def __post_init__(self) -> None:
        require(f"ToyJob {self.key}", positive={"n_critic": self.n_critic, "steps": self.steps}, whole=True)
        _check_recipe(f"ToyJob {self.key}", self.lr, self.betas)
        if self.critic_norm not in ("none", "sn"):
            raise ValueError(f"ToyJob {self.key}: critic_norm must be 'none' or 'sn', got {self.critic_norm!r}")


def toy_job(job: ToyJob, cfg: ToyConfig, threads: int = 1) -> GANRun:
    """Train the MLP pair of ``cfg`` on the job's toy with the job's loss; evaluate modes and
    quality (and the probe) on ``cfg.n_eval`` points every ``cfg.eval_every`` steps. Runs on
    the CPU with ``threads`` threads (one: these nets are too small to gain from more)."""
    with cpu_threads(threads, torch.device("cpu")):
        return _toy_job(job, cfg)


def _toy_job(job: ToyJob, cfg: ToyConfig) -> GANRun:
    data = gan.toy_dataset(job.data or cfg.data)
    torch.manual_seed(job.seed)
    G = gan.mlp(2, 2, cfg.width, cfg.depth, "relu")
    T = gan.mlp(2, 1, cfg.width, cfg.depth, "lrelu", norm=job.critic_norm)
    loop = cfg.loop(job.n_critic or job.loss.n_critic, job.steps, job.lr, job.betas)
    zeval = torch.randn(cfg.n_eval, 2, generator=torch.Generator().manual_seed(10_000 + job.seed))
    xeval = data.sample(cfg.n_eval, torch.Generator().manual_seed(20_000 + job.seed))

    def evaluate(Gm, Tm, step):
        with torch.no_grad():
            x = Gm(zeval)
        out = {}
        if data.centres is not None:
            out["modes"], out["quality"] = gan.mode_metrics(x, data.centres, data.std)
        if job.probe is not None:
            out.update(job.probe(job.loss, Tm, xeval, x))
        return out

    def snapshot(Gm, Tm, step):
        with torch.no_grad():
            x = Gm(zeval[: cfg.n_show]).numpy()
        return {"x": x, "field": critic_field(Tm, data.lim, cfg.field_n) if job.fields else None}

    run = train_gan(G, T, job.loss, data.sample, loop, seed=job.seed, device="cpu", evaluate=evaluate,
                    snapshot=snapshot, desc=str(job.key))
    run.G = run.T = None  # small results travel back from the workers
    return run


def _toy_entry(item: tuple[ToyJob, ToyConfig]) -> GANRun:
    return toy_job(*item)


@dataclass
class ToyResult:
    runs: dict[tuple, GANRun]
    seconds: float
    cfg: ToyConfig


def toy_experiment(jobs: Sequence[ToyJob], cfg: ToyConfig) -> ToyResult:
    """Run every job (``cfg.workers`` processes, longest first); results keyed by ``job.key``."""
    keys = [j.key for j in jobs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"toy_experiment: job keys repeat: {sorted({k for k in keys if keys.count(k) > 1})}")
    t0 = time.perf_counter()
    order = sorted(jobs, key=lambda j: -(j.steps or cfg.steps) * (j.n_critic or j.loss.n_critic))
    runs = run_jobs(_toy_entry, [(j, cfg) for j in order], cfg.workers, "toy runs")
    return ToyResult({j.key: r for j, r in zip(order, runs)}, time.perf_counter() - t0, cfg)


# ======================================================================== images

METRICS = ("classifier", "inception")


@dataclass(frozen=True)
class ImageConfig(Settings):
    """An image experiment: data (``fit``: how images are brought to ``img_size``, 'pad' or
    'resize'), the DCGAN-style pair, the budget (``steps`` generator steps, ``seeds``), and the
    evaluation (``n_eval`` samples every ``eval_every`` steps, ``metric``).

    The defaults are the book's MNIST setting: digits padded to 32x32, the first 14,000
    training images (what every machine has, offline too), so that the classifier-FID of every
    chapter that keeps them comes from the same classifier and compares across chapters."""

    data: str = "mnist"
    img_size: int = 32
    fit: str = "pad"
    n_train: int | None = 14000  # None: every training image available
    z_dim: int = 64
    base: int = 16
    max_ch: int = 64
    kernel: int = 4
    gen_norm: str = "bn"
    batch: int = 64
    steps: int = 1000
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    eval_every: int = 200
    n_eval: int = 1000
    seeds: tuple[int, ...] = (0,)
    metric: str = "classifier"
    classifier: ClassifierRecipe = ClassifierRecipe()
    checkpoint_every: int = 0
    threads: int | None = None  # CPU threads for the run; None: as set by dlbook.config.threads
    workers: int = 1  # runs side by side in processes (CPU, one process group only); >1 needs threads

    SIZES = ("img_size", "n_train", "z_dim", "base", "max_ch", "kernel", "batch", "steps", "eval_every", "n_eval",
             "threads", "workers")
    POSITIVE = ("lr",)
    NONNEG = ("seeds", "checkpoint_every")
    UNIT = ("betas",)

    def smoke(self) -> "ImageConfig":
        """Tiny nets for a few steps on the bundled sample, one seed: what CI runs to see the
        pipeline work end to end (its numbers mean nothing)."""
        return replace(self, n_train=None, base=4, max_ch=8, batch=16, steps=4, eval_every=2, n_eval=64,
                       seeds=self.seeds[:1], classifier=ClassifierRecipe(width=8, epochs=5), threads=1, workers=1)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.fit not in ("pad", "resize"):
            raise ValueError(f"ImageConfig: fit must be 'pad' or 'resize', got {self.fit!r}")
        if self.metric not in METRICS:
            raise ValueError(f"ImageConfig: metric must be one of {METRICS}, got {self.metric!r}")
        if not self.seeds:
            raise ValueError("ImageConfig: seeds must name at least one seed")
        gan.n_layers(self.img_size)
        if self.workers > 1 and self.threads is None:
            raise ValueError(f"ImageConfig: {self.workers} workers need threads per worker (threads=1 on a "
                             "machine with as many cores as workers); set threads")


class Method(NamedTuple):
    """One row of a loss table: the loss, critic updates per generator update (None: the
    loss's usual ratio), the critic's normalisation ('none', 'bn', 'ln' or 'sn') and, for a
    baseline run on its own published recipe, its Adam ``lr`` and ``betas`` (None: the
    config's)."""

    loss: gan.GANLoss
    n_critic: int | None = None
    critic_norm: str = "bn"
    lr: float | None = None
    betas: tuple[float, float] | None = None


def _check_recipe(where: str, lr: float | None, betas: tuple[float, float] | None) -> None:
    require(where, positive={"lr": lr}, unit={"betas": betas})
    if betas is not None and len(betas) != 2:
        raise ConfigError(f"{where}: betas must be two numbers in [0, 1], got {betas!r}")


def as_method(name: str, row: Any) -> Method:
    m = row if isinstance(row, Method) else Method(*row) if isinstance(row, tuple) else Method(row)
    if not isinstance(m.loss, gan.GANLoss):
        raise TypeError(f"loss table row {name!r}: the first entry must be a GANLoss, got {type(m.loss).__name__}")
    if m.critic_norm not in gan.CRITIC_NORMS:
        raise ValueError(f"loss table row {name!r}: critic_norm must be one of {gan.CRITIC_NORMS}, "
                         f"got {m.critic_norm!r}")
    require(f"loss table row {name!r}", positive={"n_critic": m.n_critic}, whole=True)
    _check_recipe(f"loss table row {name!r}", m.lr, m.betas)
    return m


@dataclass
class ImageData:
    """Training images as uint8, turned into float batches in [-1, 1] of the config's size
    and fit as they are drawn (``dlbook.data.to_float``), so a large set stays small in memory."""

    x: np.ndarray
    size: int
    fit: str
    source: str
    dataset: str

    def __len__(self) -> int:
        return len(self.x)

    def batch(self, idx) -> torch.Tensor:
        from . import data as D

        return D.to_float(self.x[np.asarray(idx)], size=self.size, fit=self.fit, value_range=(-1, 1))

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.batch(torch.randint(len(self.x), (n,), generator=generator).numpy())

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self),) + tuple(self.batch([0]).shape[1:])


def load_image_data(cfg: ImageConfig, split: str = "train", limit: int | None = None) -> ImageData:
    """A split of ``cfg.data`` through `dlbook.data.load` (first ``limit`` records, default
    ``cfg.n_train``), to be read at ``cfg.img_size`` with ``cfg.fit`` in [-1, 1]."""
    from . import data as D

    a = D.load(cfg.data, split, limit=cfg.n_train if limit is None else limit)
    return ImageData(a.x, cfg.img_size, cfg.fit, a.source, cfg.data)


@torch.no_grad()
def generate(G: nn.Module, n: int, z_dim: int, seed: int, device=None, batch: int = 500) -> torch.Tensor:
    """``n`` samples of ``G`` on the CPU from the noise stream ``seed`` (float32)."""
    dev = device or next(G.parameters()).device
    g = torch.Generator().manual_seed(seed)
    out = [G(torch.randn(min(batch, n - i), z_dim, generator=g).to(dev)).float().cpu() for i in range(0, n, batch)]
    return torch.cat(out)


def image_run(cfg: ImageConfig, data: ImageData, method: Method, metric: "ImageMetric | None", seed: int = 0,
              device=None, checkpoint: str | os.PathLike | None = None, desc: str = "",
              progress: bool = True) -> GANRun:
    """Train the DCGAN-style pair of ``cfg`` with one loss-table row for ``cfg.steps`` generator
    steps; every ``cfg.eval_every`` steps score ``cfg.n_eval`` samples (classifier-FID ``fd``,
    ``kid``, ``kid_se``) and keep a grid of 64 samples from fixed noise."""
    method = as_method(desc or "run", method)
    torch.manual_seed(seed)
    G, T = image_nets(cfg, data.shape[1], method.critic_norm)
    n_critic = method.n_critic or method.loss.n_critic
    loop = LoopConfig(steps=cfg.steps, batch=cfg.batch, n_critic=n_critic, z_dim=cfg.z_dim, lr=method.lr or cfg.lr,
                      betas=method.betas or cfg.betas, log_every=max(1, cfg.eval_every // 10), eval_every=cfg.eval_every,
                      checkpoint_every=cfg.checkpoint_every, progress=progress)

    def evaluate(Gm, Tm, step):
        if metric is None:
            return {}
        return metric(generate(Gm, cfg.n_eval, cfg.z_dim, stream_seed(seed, 4321)))

    def snapshot(Gm, Tm, step):
        return generate(Gm, 64, cfg.z_dim, stream_seed(seed, 1234)).numpy()

    key = {"image": {k: v for k, v in asdict(cfg).items() if k != "steps"}, "critic_norm": method.critic_norm,
           "data": data.source}
    run = train_gan(G, T, method.loss, data.sample, loop, seed=seed, device=device, evaluate=evaluate,
                    snapshot=snapshot, checkpoint=checkpoint, run_key=key, desc=desc)
    run.G, run.T = G.cpu(), T.cpu()  # kept for inspection, off the accelerator
    return run


def image_nets(cfg: ImageConfig, channels: int, critic_norm: str) -> tuple[nn.Module, nn.Module]:
    """The DCGAN-style generator and critic of ``cfg`` (freshly initialised from torch's RNG)."""
    G = gan.ConvGenerator(cfg.z_dim, cfg.img_size, channels, cfg.base, cfg.max_ch, cfg.kernel, cfg.gen_norm)
    T = gan.ConvCritic(cfg.img_size, channels, cfg.base, cfg.max_ch, cfg.kernel, critic_norm)
    return G, T


def _pack_nets(run: GANRun) -> GANRun:
    """A worker's run with its nets as state dicts (and train/eval mode): a spectrally
    normalised critic is a torch parametrisation, and those do not pickle."""
    run.G, run.T = ({"state": m.state_dict(), "training": m.training} for m in (run.G, run.T))
    return run


def _unpack_nets(run: GANRun, cfg: ImageConfig, channels: int, critic_norm: str) -> GANRun:
    G, T = image_nets(cfg, channels, critic_norm)
    for net, packed in ((G, run.G), (T, run.T)):
        net.load_state_dict(packed["state"])
        net.train(packed["training"])
    run.G, run.T = G, T
    return run


@dataclass
class ImageResult:
    """Runs keyed by (method name, seed), the metric's description (name, feature classifier's
    test accuracy, floor on held-out real images, provenance) and the data used."""

    runs: dict[tuple[str, int], GANRun]
    metric: dict
    source: str
    x_shape: tuple
    seconds: float

    @property
    def names(self) -> list[str]:
        return list(dict.fromkeys(k[0] for k in self.runs))

    def seeds(self, name: str) -> list[int]:
        return [s for n, s in self.runs if n == name]

    def final(self, name: str, key: str = "fd") -> list[float]:
        """The last evaluation of ``key`` for each seed of method ``name``."""
        return [self.runs[(name, s)].at(key) for s in self.seeds(name)]

    def finals(self, name: str, keys: Sequence[str] = ("fd", "kid", "kid_se", "confident")) -> dict[str, list[float]]:
        """`final` of each of ``keys`` that the runs of ``name`` evaluated (the readable share
        ``confident`` exists on labelled data only)."""
        have = self.runs[(name, self.seeds(name)[0])].evals
        return {k: self.final(name, k) for k in keys if k in have}

    def best(self, name: str, key: str = "fd") -> list[float]:
        """The lowest evaluation of ``key`` over the run, per seed."""
        return [float(np.nanmin(self.runs[(name, s)].curve(key)[1])) for s in self.seeds(name)]

    def initial(self, name: str, key: str = "fd") -> list[float]:
        """The first evaluation (step 0, the untrained generator) of ``key`` for each seed."""
        return [float(self.runs[(name, s)].curve(key)[1][0]) for s in self.seeds(name)]

    def ratio(self, name: str, key: str = "fd") -> list[float]:
        """Last over first evaluation of ``key`` per seed: how much of the untrained generator's
        distance is left at the end of the run."""
        return [b / a for a, b in zip(self.initial(name, key), self.final(name, key))]

    def state_dict(self) -> dict:
        return {"runs": {f"{n}\x1f{s}": r.state_dict() for (n, s), r in self.runs.items()}, "metric": self.metric,
                "source": self.source, "x_shape": list(self.x_shape), "seconds": self.seconds}

    @classmethod
    def from_state_dict(cls, s: dict) -> "ImageResult":
        runs = {}
        for k, v in s["runs"].items():
            n, sd = k.rsplit("\x1f", 1)
            runs[(n, int(sd))] = GANRun.from_state_dict(v)
        return cls(runs, s["metric"], s["source"], tuple(s["x_shape"]), float(s["seconds"]))

    def save(self, path: str | os.PathLike) -> Path:
        return save_checkpoint(path, self.state_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ImageResult":
        """A result saved by `save`; any other file (a Trainer checkpoint, a torn or corrupt
        file) raises `CheckpointError`."""
        name = Path(path).name
        s = load_checkpoint(path)
        require_fields(s, {"runs": dict, "metric": dict, "source": str, "x_shape": list, "seconds": (int, float)}, name)
        try:
            return cls.from_state_dict(s)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise CheckpointError(f"{name} does not hold an image-experiment result ({type(e).__name__}: "
                                  f"{str(e)[:120]}); delete it") from None


def image_experiment(cfg: ImageConfig, table: Mapping[str, Any], device=None,
                     checkpoint_dir: str | os.PathLike | None = None) -> ImageResult:
    """Every row of the loss table ``{name: (loss, n_critic, critic_norm)}`` for every seed of
    ``cfg.seeds``, on the same data, nets and budget, scored by the same metric. Runs under
    torchrun unchanged (rank 0 scores and returns the full result)."""
    if not table:
        raise ValueError("image_experiment: the loss table is empty")
    rows = {name: as_method(name, row) for name, row in table.items()}
    procs = processes()
    dev = process_device(device, procs)
    t0 = time.perf_counter()
    data = load_image_data(cfg)
    if len(data) < cfg.batch:
        raise ValueError(f"image_experiment: {len(data)} training images for a batch of {cfg.batch}")
    items = []
    for name, row in rows.items():
        for seed in cfg.seeds:
            ck = None
            if checkpoint_dir is not None:
                safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
                ck = Path(checkpoint_dir) / f"{safe}-seed{seed}.pt"
            items.append((cfg, name, row, seed, ck))
    with cpu_threads(cfg.threads, dev):
        metric = image_metric(cfg, dev) if procs.main else None  # trains and caches the classifier once
        if cfg.workers > 1 and procs.world == 1 and dev.type == "cpu" and len(items) > 1:
            done = [_unpack_nets(r, c, data.shape[1], as_method(name, row).critic_norm)
                    for (c, name, row, _, _), r in zip(items, run_jobs(_image_entry, items, cfg.workers, "image runs"))]
        else:
            done = [image_run(c, data, row, metric, seed, dev, ck, desc=f"{name} s{seed}")
                    for c, name, row, seed, ck in items]
    runs = {(name, seed): r for (_, name, _, seed, _), r in zip(items, done)}
    info = broadcast(metric.describe() if metric is not None else None, procs)
    return ImageResult(runs, info, data.source, data.shape, time.perf_counter() - t0)


def _image_entry(item: tuple) -> GANRun:
    """One image run in a worker process (``ImageConfig.workers``): its own data and metric
    (the classifier read from the cache the parent wrote), ``cfg.threads`` threads, no bars."""
    cfg, name, row, seed, ck = item
    dev = torch.device("cpu")
    with cpu_threads(cfg.threads, dev), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the parent has said everything there is to say about the data
        data = load_image_data(cfg)
        metric = image_metric(cfg, dev, progress=False)
        return _pack_nets(image_run(cfg, data, row, metric, seed, dev, ck, desc=f"{name} s{seed}", progress=False))


def image_metric(cfg: ImageConfig, device=None, progress: bool = True) -> ImageMetric:
    """The metric ``cfg.metric`` asks for: the classifier-FID, or the Inception FID where
    pytorch-fid and its weights can be loaded (else the classifier-FID, saying why)."""
    clf = ClassifierFID(cfg.data, cfg.img_size, cfg.fit, cfg.classifier, cfg.n_eval, cfg.n_train, device,
                        progress=progress)
    if cfg.metric == "classifier":
        return clf
    try:
        from . import data as D

        test = "test" in D.info(cfg.data).splits
        ref = load_image_data(cfg, "test" if test else "train", limit=None if test else 10_000)
        held = load_image_data(cfg, "train")
        idx = np.arange(len(held))[-min(cfg.n_eval, len(held)):]
        return InceptionFID(ref.batch(np.arange(min(len(ref), 10_000))), held.batch(idx), device)
    except Exception as e:  # no package, no weights (offline), no torchvision
        why = f"{type(e).__name__}: {str(e)[:100]}"
        warnings.warn(f"Inception FID unavailable ({why}); using the classifier-FID", RuntimeWarning, stacklevel=2)
        clf.fallback = why
        describe = clf.describe

        def described() -> dict:
            d = describe()
            d["provenance"] = f"Inception FID unavailable ({why}); " + d["provenance"]
            return d

        clf.describe = described
        return clf


# ======================================================================== command line


def _lipschitz():
    from . import lipschitz

    return lipschitz


def _wgan_div():
    from . import wgan_div

    return wgan_div


def _gan_qp():
    from . import gan_qp

    return gan_qp


# The chapters with an image experiment, imported explicitly (they import this module).
CHAPTERS: dict[str, Callable[[], Any]] = {"lipschitz": _lipschitz, "wgan_div": _wgan_div, "gan_qp": _gan_qp}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dlbook.gan_runs --chapter gan_qp --profile full --out results.pt``: the image
    experiment of a chapter module (its ``config(profile).image`` and ``image_table(cfg)``), one
    process or, under ``torchrun --nproc_per_node=N``, N; rank 0 writes the result, which
    ``ImageResult.load(path)`` reads back."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m dlbook.gan_runs", description=main.__doc__)
    p.add_argument("--chapter", required=True, choices=sorted(CHAPTERS), help="the chapter module")
    p.add_argument("--profile", default=None, help="smoke, cpu or full (default: as dlbook resolves it)")
    p.add_argument("--seeds", type=int, nargs="*", default=None, help="override the config's seeds")
    p.add_argument("--steps", type=int, default=None, help="override the config's generator steps")
    p.add_argument("--out", required=True, help="where rank 0 writes the ImageResult")
    p.add_argument("--checkpoints", default=None, help="folder for resumable per-run checkpoints")
    a = p.parse_args(argv)
    procs = init_processes()
    mod = CHAPTERS[a.chapter]()
    cfg = mod.config(a.profile)
    icfg = cfg.image
    if a.seeds:
        icfg = replace(icfg, seeds=tuple(a.seeds))
    if a.steps:
        icfg = replace(icfg, steps=a.steps)
    res = image_experiment(icfg, mod.image_table(replace(cfg, image=icfg)), checkpoint_dir=a.checkpoints)
    if procs.main:
        res.save(a.out)
        print(f"{len(res.runs)} runs in {res.seconds:.0f} s on {procs.world} process(es); {res.metric['provenance']}")
        for name in res.names:
            print(f"{name}: final {res.metric['name']} {', '.join(f'{v:.3g}' for v in res.final(name))}")
    barrier(procs)
    return 0


if __name__ == "__main__":  # run the imported module's main, so that chapter modules and this one share classes
    from dlbook import gan_runs

    raise SystemExit(gan_runs.main())
