"""Chapter 04's training: one run to its best checkpoint through the book's loop core (via
`dlbook.train.Trainer`), many runs in parallel, the scaling curve over training-set sizes."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..config import device as default_device
from .data import BucketBatches, CoupletData, encode_buckets
from .decoding import LookupBaseline, answer_many, evaluate
from .model import make_model, tagging_nll
from .settings import MONITOR, Config


def _step(model: nn.Module, batch) -> torch.Tensor:
    x, y = batch
    return tagging_nll(model(x), y)


@dataclass
class RunResult:
    """One training run: the curves, the monitor lines' answers at each evaluation, the weights
    of the lowest validation loss (or the last ones, without a validation split), the time."""

    arch: str
    seed: int
    n_train: int = 0
    steps: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)   # mean training loss since the last evaluation
    test: list[dict] = field(default_factory=list)          # evaluate(...) on the test pairs
    val_ce: list[float] = field(default_factory=list)
    monitor: dict[str, list[str]] = field(default_factory=dict)
    wall: list[float] = field(default_factory=list)         # seconds of training (not evaluation) so far
    state: dict | None = None
    best_step: int | None = None

    def at(self, step: int) -> dict:
        return self.test[self.steps.index(step)]

    @property
    def best(self) -> dict:
        """The test metrics of the kept weights (the best validation step)."""
        return self.at(self.best_step)

    def ce_at(self, step: float) -> float:
        """Test cross-entropy at `step`, interpolated linearly between evaluations (NaN past the
        run's last evaluation)."""
        if step > self.steps[-1]:
            return float("nan")
        return float(np.interp(step, self.steps, [t["ce"] for t in self.test]))


def train_tagger(cfg: Config, data: CoupletData, seed: int = 0, arch: str = "cnn", steps: int | None = None,
                 patience: int | None = -1, device: torch.device | str | None = None, progress: bool = True,
                 threads: int | None = None, keep_state: bool = True) -> RunResult:
    """Train one tagger with Adam on the post's length-bucketed batches, evaluating on the
    validation and test pairs every `eval_every` steps (and at step 0). The run stops when the
    validation loss has not fallen for `patience` evaluations (default `cfg.patience`; None:
    never) or after `steps` (default `cfg.max_steps`), and keeps the weights of its lowest
    validation loss. The steps go through `dlbook.train.Trainer` (the book's loop core)."""
    from ..config import seed_everything
    from ..train import Trainer

    if threads:
        torch.set_num_threads(int(threads))
    seed_everything(seed)
    dev = torch.device(device) if device is not None else default_device()
    model = make_model(arch, len(data.vocab), cfg).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    loader = BucketBatches(data.train, cfg.batch_size, 1000, seed)
    trainer = Trainer(model, opt, _step, device=dev, progress=False, log_every=cfg.eval_every,
                      run_key={"cfg": cfg, "seed": seed, "arch": arch})
    res = RunResult(arch, seed, len(data.train_pairs))
    punct, mon = data.punct_ids, list(MONITOR)
    total = steps if steps is not None else cfg.max_steps
    patience = cfg.patience if patience == -1 else patience
    best, worse = math.inf, 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=f"{arch} seed {seed}", leave=False)

    def record(step: int, loss: float, wall: float) -> None:
        nonlocal best, worse
        res.steps.append(step)
        res.train_loss.append(loss)
        res.test.append(evaluate(model, data.test, punct))
        res.wall.append(wall)
        for line, ans in zip(mon, answer_many(model, data.vocab, mon, "copy")):
            res.monitor.setdefault(line, []).append(ans)
        if data.val:
            v = evaluate(model, data.val, punct)["ce"]
            res.val_ce.append(v)
            if v < best:
                best, worse, res.best_step = v, 0, step
                if keep_state:
                    res.state = {k: t.detach().cpu().clone() for k, t in model.state_dict().items()}
            else:
                worse += 1
        model.train()

    record(0, float("nan"), 0.0)
    wall, t0 = 0.0, time.perf_counter()

    def on_eval(tr, step: int, mean: dict) -> None:  # every eval_every steps (the trainer's log interval)
        nonlocal wall, t0
        if dev.type == "cuda":
            torch.cuda.synchronize()
        wall += time.perf_counter() - t0  # training time only: the evaluation below is not counted
        record(step, mean["loss"], wall)
        if bar is not None:
            bar.update(cfg.eval_every)
            bar.set_postfix(val_ce=f"{res.val_ce[-1]:.3f}" if res.val_ce else "-", refresh=False)
        t0 = time.perf_counter()

    trainer.callbacks.append(on_eval)
    last = -(-total // cfg.eval_every) * cfg.eval_every  # whole evaluation intervals
    trainer.fit(loader, steps=last, until=lambda tr: patience is not None and bool(data.val) and worse >= patience)
    if bar is not None:
        bar.close()
    if not data.val:
        res.best_step = trainer.step
        if keep_state:
            res.state = {k: t.detach().cpu().clone() for k, t in model.state_dict().items()}
    return res


def _job(spec: dict) -> RunResult:
    return train_tagger(spec["cfg"], spec["data"], spec["seed"], spec.get("arch", "cnn"), spec.get("steps"),
                        spec.get("patience", -1), spec.get("device"), progress=False, threads=spec.get("threads"),
                        keep_state=spec.get("keep_state", True))


def train_runs(cfg: Config, specs: Sequence[dict], device: torch.device | str | None = None,
               desc: str = "runs") -> list[RunResult]:
    """Several `train_tagger` runs ({"data", "seed"} plus optional "arch", "steps", "patience",
    "keep_state" each); on the CPU with `cfg.workers` > 1 in parallel processes with one thread
    each (these matrices are too small for two threads per process to pay)."""
    from ..config import worker_threads
    from ..train import run_jobs

    dev = torch.device(device) if device is not None else default_device()
    specs = [{"cfg": cfg, **s} for s in specs]
    if dev.type != "cpu" or cfg.workers <= 1 or len(specs) == 1:
        if dev.type == "cpu":
            torch.set_num_threads(cfg.threads)
        return [_job({**s, "device": dev}) for s in specs]
    workers = min(cfg.workers, len(specs))
    per = min(cfg.threads, worker_threads(workers))
    return run_jobs(_job, [{**s, "threads": per, "device": "cpu"} for s in specs], workers, desc=desc)


def train_seeds(cfg: Config, data: CoupletData, seeds: Sequence[int], arch: str = "cnn", **kw) -> list[RunResult]:
    """`arch` trained with each seed on `data` (to the best checkpoint)."""
    return train_runs(cfg, [{"data": data, "seed": s, "arch": arch, **kw} for s in seeds], desc=f"{arch} seeds")


def subset(data: CoupletData, n: int, seed: int) -> CoupletData:
    """`data` with `n` training pairs drawn without replacement (seed `seed`; all of them when
    `n` covers the split); the vocabulary, validation and test pairs stay."""
    if n >= len(data.train_pairs):
        return data
    idx = np.sort(np.random.default_rng([seed, n]).choice(len(data.train_pairs), n, replace=False))
    pairs = [data.train_pairs[i] for i in idx]
    return replace(data, train_pairs=pairs, train=encode_buckets(pairs, data.vocab))


@dataclass
class Scaling:
    """The scaling curve: per training-set size and seed, the CNN's test metrics at its best
    checkpoint, the step it stopped at, and the lookup table's accuracy on the same pairs."""

    sizes: list[int]
    seeds: list[int]
    cnn: dict[int, list[dict]]          # size -> per seed: RunResult.best
    best_step: dict[int, list[int]]
    lookup: dict[int, list[float]]      # size -> per seed: lookup-table accuracy
    runs: dict[int, list[RunResult]]

    def acc(self, which: str = "cnn", key: str = "acc_copy") -> np.ndarray:
        """(sizes, seeds) array of accuracies."""
        if which == "lookup":
            return np.array([self.lookup[n] for n in self.sizes])
        return np.array([[m[key] for m in self.cnn[n]] for n in self.sizes])


def scaling(cfg: Config, data: CoupletData, seeds: Sequence[int], top: Sequence[RunResult] = (),
            device: torch.device | str | None = None) -> Scaling:
    """The CNN and the lookup table trained on `cfg.sizes` pairs and on all of them, every
    seed; each CNN run to its best checkpoint. `top`: runs on all pairs already made (reused)."""
    n_all = len(data.train_pairs)
    sizes = [n for n in cfg.sizes if n < n_all] + [n_all]
    specs, where = [], []
    for n in sizes:
        for s in seeds:
            done = next((r for r in top if r.seed == s and r.n_train == n), None)
            if done is None:
                specs.append({"data": subset(data, n, s), "seed": s, "keep_state": False})
                where.append((n, s))
    new = dict(zip(where, train_runs(cfg, specs, device, desc="scaling")))
    runs = {n: [new[(n, s)] if (n, s) in new else next(r for r in top if r.seed == s and r.n_train == n)
                for s in seeds] for n in sizes}
    lookup = {n: [LookupBaseline(subset(data, n, s).train_pairs).accuracy(data.test_pairs) for s in seeds]
              for n in sizes}
    return Scaling(sizes, list(seeds), {n: [r.best for r in rs] for n, rs in runs.items()},
                   {n: [r.best_step for r in rs] for n, rs in runs.items()}, lookup, runs)


def loglinear(sizes: Sequence[int], values: np.ndarray) -> np.ndarray:
    """Per seed (columns of `values`, rows by size), the least-squares line value = a + b log2 n:
    an (seeds, 2) array of (a, b). b is the gain per doubling of the data."""
    X = np.stack([np.ones(len(sizes)), np.log2(np.asarray(sizes, float))], 1)
    return np.linalg.lstsq(X, np.asarray(values, float), rcond=None)[0].T


def crossover(sizes: Sequence[int], cnn: np.ndarray, lookup: np.ndarray, at: int) -> dict:
    """Where the fitted lines of the CNN and the lookup table meet. Per seed, the gap
    CNN - lookup is fitted as a + b log2 n; `gap_at` is each seed's gap extrapolated to `at`
    pairs. The crossover is where the mean fitted gap is 0, and its 95 % interval the sizes
    where the t-interval of the mean gap (over seeds) contains 0 (a Fieller-type inversion;
    unbounded where the interval never excludes 0)."""
    from scipy import stats

    fit = loglinear(sizes, np.asarray(cnn) - np.asarray(lookup))      # (seeds, 2)
    k = len(fit)
    grid = np.linspace(np.log2(min(sizes)) - 1, np.log2(at) + 3, 4000)
    g = fit[:, :1] + fit[:, 1:] * grid                                 # (seeds, grid)
    mean = g.mean(0)
    half = (stats.t.ppf(0.975, k - 1) * g.std(0, ddof=1) / math.sqrt(k)) if k > 1 else np.full_like(mean, np.inf)
    a, b = fit.mean(0)
    n_star = 2 ** (-a / b) if b > 0 and -a / b < 1000 else math.inf
    inside = (mean - half <= 0) & (0 <= mean + half)
    lo = 2 ** grid[inside].min() if inside.any() else math.nan
    hi = 2 ** grid[inside].max() if inside.any() else math.nan
    top_open = bool(inside[-1]) or not math.isfinite(n_star)
    return {"fit": fit, "n_star": n_star, "lo": lo, "hi": math.inf if top_open else hi,
            "gap_at": fit[:, 0] + fit[:, 1] * math.log2(at), "slope": fit[:, 1], "at": at}


def load_model(cfg: Config, vocab_size: int, state: dict, arch: str = "cnn",
               device: torch.device | str | None = None) -> nn.Module:
    model = make_model(arch, vocab_size, cfg)
    model.load_state_dict(state)
    return model.to(torch.device(device) if device is not None else default_device()).eval()


def step_times(cfg: Config, data: CoupletData, archs: Sequence[str] = ("cnn", "bilstm"), steps: int | None = None,
               rounds: int = 3, device: torch.device | str | None = None, seed: int = 0) -> dict[str, list[float]]:
    """Seconds per optimiser step on the same length-bucketed batches, for each architecture,
    measured in `rounds` interleaved rounds of `steps` steps (after two warm-up steps each),
    so that a change in the machine's load hits every model alike."""
    dev = torch.device(device) if device is not None else default_device()
    steps = steps or cfg.speed_steps
    torch.manual_seed(seed)
    models = {a: make_model(a, len(data.vocab), cfg).to(dev).train() for a in archs}
    opts = {a: torch.optim.Adam(m.parameters(), lr=cfg.lr) for a, m in models.items()}
    batches = list(BucketBatches(data.train, cfg.batch_size, steps + 2, seed))

    def run(a: str, part) -> None:
        for x, y in part:
            loss = tagging_nll(models[a](x.to(dev)), y.to(dev))
            opts[a].zero_grad(set_to_none=True)
            loss.backward()
            opts[a].step()
        if dev.type == "cuda":
            torch.cuda.synchronize()

    for a in archs:
        run(a, batches[:2])
    out: dict[str, list[float]] = {a: [] for a in archs}
    for _ in range(rounds):
        for a in archs:
            t0 = time.perf_counter()
            run(a, batches[2:])
            out[a].append((time.perf_counter() - t0) / steps)
    return out

