"""How GAN experiments run: one training loop, one toy job, one image experiment driven by a
loss table, the job runner, classifier-FID and KID, and the plots. What the chapters *show*
(losses, nets, toy data) lives in `dlbook.gan`.

- `train_gan` alternates ``n_critic`` critic updates and one generator update. Its randomness
  is drawn per generator step from ``(seed, step)``: the global batch (real indices, noise)
  from one stream shared by every process, the penalty points from a stream per process. A
  resumed run therefore repeats an uninterrupted one exactly, with no RNG state in the
  checkpoint, and under ``torchrun`` each process takes its shard of the same global batch.
- Checkpoints and caches are written atomically and read with ``weights_only=True``
  (`dlbook.train.save_checkpoint` / `load_checkpoint`): a crafted file is refused unrun.
- Under ``torchrun --nproc_per_node=N`` (PyTorch DistributedDataParallel; NCCL on GPUs, gloo on
  CPU) the same calls train on N processes: ``batch`` is the global batch, split evenly;
  gradients are averaged; logged metrics are averaged over the processes; rank 0 evaluates,
  writes checkpoints and results. BatchNorm statistics are per process, as with plain DDP.

The image metric is the **classifier-FID**: the Fréchet distance between the penultimate-layer
features of a classifier trained once per dataset (seeded, cached under a key of its recipe)
for generated images and for the complete test split, with KID (unbiased, with a jackknife
standard error) beside it and a floor measured on held-out real images. It is not the
Inception FID of the literature; ``metric="inception"`` uses pytorch-fid's Inception network
where it can be loaded and says which metric was used.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from . import gan
from .config import Settings, require
from .metrics import spread  # noqa: F401  (the chapters call gr.spread)
from .train import (CheckpointError, History, NonFiniteLoss, check_history, check_optimizer, check_state,  # noqa: F401
                    copy_state, load_checkpoint, plain, require_fields, run_jobs, save_checkpoint)

# ======================================================================== seeds and processes


def stream_seed(seed: int, *parts: int) -> int:
    """A 63-bit seed for the random stream named by ``(seed, *parts)`` (splitmix64 mixing), so
    that neighbouring seeds and steps give unrelated streams."""
    h = 0x9E3779B97F4A7C15
    for v in (int(seed), *map(int, parts)):
        h = (h ^ (v & 0xFFFFFFFFFFFFFFFF)) & 0xFFFFFFFFFFFFFFFF
        h = (h + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
        h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


@dataclass(frozen=True)
class Processes:
    """Where this process stands among the processes of a run (one, or N under torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def processes() -> Processes:
    """The current process group (a single process when torch.distributed is not initialised)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return Processes(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))
    return Processes()


def init_processes() -> Processes:
    """Join the process group that ``torchrun`` describes in the environment (NCCL on CUDA,
    gloo on CPU) and give each process its device and thread share; a plain run stays one
    process. Returns where this process stands."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            dist.init_process_group("nccl")
        else:
            from .config import threads, worker_threads

            threads(worker_threads(world))
            dist.init_process_group("gloo")
    return processes()


def _process_device(device, procs: Processes) -> torch.device:
    from .config import device as default_device

    dev = torch.device(device) if device is not None else default_device()
    if procs.world > 1 and dev.type == "cuda":
        dev = torch.device("cuda", procs.local_rank)
    return dev


# ======================================================================== the training loop


@dataclass(frozen=True)
class LoopConfig(Settings):
    """Settings of `train_gan`. ``steps`` counts generator updates; ``batch`` is the global
    batch (split evenly over the processes under torchrun)."""

    steps: int = 1000
    batch: int = 64
    n_critic: int = 1
    z_dim: int = 64
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    log_every: int = 50
    eval_every: int = 500
    checkpoint_every: int = 0  # 0: only at the end (when a checkpoint path is given)
    amp: bool = True  # bf16 autocast on CUDA only
    progress: bool = True

    SIZES = ("steps", "batch", "n_critic", "z_dim", "log_every", "eval_every")
    POSITIVE = ("lr",)
    NONNEG = ("checkpoint_every",)
    UNIT = ("betas",)


@dataclass
class GANRun:
    """What one GAN run leaves: training metrics per logged step (`history`), evaluations per
    evaluated step (`evals`, always with ``seconds`` of training wall time so far, evaluation
    excluded, and ``critic_updates``), snapshots by step, and what the run was."""

    history: History
    evals: History
    snapshots: dict[int, Any]
    seconds: float
    steps: int
    n_critic: int
    seed: int
    loss: str
    G: nn.Module | None = field(default=None, repr=False)
    T: nn.Module | None = field(default=None, repr=False)

    def at(self, key: str, step: int | None = None) -> float:
        """An evaluated metric at ``step`` (default: the last evaluation)."""
        steps = self.evals.steps
        i = len(steps) - 1 if step is None else steps.index(step) if step in steps else None
        if i is None:
            raise KeyError(f"step {step} was not evaluated; evaluated steps: {steps}")
        return float(self.evals[key][i])

    def curve(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(evaluated steps, values of ``key``)."""
        return np.array(self.evals.steps), np.array(self.evals[key], dtype=float)

    def first_step(self, key: str, at_least: float) -> int | None:
        """The first evaluated step where ``key`` >= ``at_least`` (None if never), e.g. the
        first step with every mode covered: ``first_step("modes", 8)``."""
        for s, v in zip(self.evals.steps, self.evals[key]):
            if v >= at_least:
                return s
        return None

    def state_dict(self) -> dict:
        """Plain data and tensors only (loads with ``weights_only=True``); nets are left out."""
        return {"history": self.history.state_dict(), "evals": self.evals.state_dict(),
                "snapshots": {str(k): _tensors(v) for k, v in self.snapshots.items()},
                "seconds": self.seconds, "steps": self.steps, "n_critic": self.n_critic, "seed": self.seed,
                "loss": self.loss}

    @classmethod
    def from_state_dict(cls, s: dict) -> "GANRun":
        h, e = History(), History()
        h.load_state_dict(s["history"])
        e.load_state_dict(s["evals"])
        return cls(h, e, {int(k): _arrays(v) for k, v in s["snapshots"].items()}, float(s["seconds"]),
                   int(s["steps"]), int(s["n_critic"]), int(s["seed"]), str(s["loss"]))


def _tensors(v: Any) -> Any:
    """Snapshots as checkpoint data: arrays -> tensors, tuples -> lists (weights_only-safe)."""
    if isinstance(v, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(v))
    if isinstance(v, dict):
        return {str(k): _tensors(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_tensors(x) for x in v]
    return v


def _arrays(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.numpy()
    if isinstance(v, dict):
        return {k: _arrays(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_arrays(x) for x in v]
    return v


def _seed_global(s: int, dev: torch.device) -> None:
    """Seed torch's default generators of the CPU and of ``dev`` (``torch.manual_seed`` also
    queues a CUDA call with a stack trace each time CUDA is not initialised: too slow per step)."""
    torch.default_generator.manual_seed(s)
    if dev.type == "cuda":
        with torch.cuda.device(dev):
            torch.cuda.manual_seed(s)


def _all_mean(values: dict[str, torch.Tensor], count: int, procs: Processes) -> dict[str, float]:
    """Mean over the logged interval and over the processes."""
    if not values:
        return {}
    keys = sorted(values)
    t = torch.stack([values[k].detach().float().reshape(()) for k in keys]) / count
    if procs.world > 1:
        import torch.distributed as dist

        dist.all_reduce(t)
        t /= procs.world
    return dict(zip(keys, t.cpu().tolist()))


def _broadcast(obj: Any, procs: Processes) -> Any:
    if procs.world == 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _barrier(procs: Processes) -> None:
    if procs.world > 1:
        import torch.distributed as dist

        dist.barrier()


def train_gan(G: nn.Module, T: nn.Module, loss: gan.GANLoss, sample_real: Callable[[int, torch.Generator], torch.Tensor],
              cfg: LoopConfig, *, seed: int = 0, device: str | torch.device | None = None,
              evaluate: Callable[[nn.Module, nn.Module, int], dict] | None = None,
              snapshot: Callable[[nn.Module, nn.Module, int], Any] | None = None,
              checkpoint: str | os.PathLike | None = None, run_key: Any = None, desc: str = "",
              stop_at: int | None = None) -> GANRun:
    """Alternate ``cfg.n_critic`` critic updates (minimise ``loss.critic_loss``) and one
    generator update (minimise ``loss.generator_loss``) for ``cfg.steps`` generator steps.

    ``sample_real(n, generator)`` returns ``n`` real samples. ``evaluate(G, T, step) -> dict``
    and ``snapshot(G, T, step)`` run at step 0, every ``cfg.eval_every`` steps and at the end
    (on rank 0; evaluations are shared with every process). With ``checkpoint`` set, the run
    is saved every ``cfg.checkpoint_every`` steps and at the end, and resumes from the file:
    one written by another run (``run_key``), past ``cfg.steps``, torn or crafted is refused
    with `CheckpointError` before anything in it is used. A checkpoint of the same run with
    fewer steps is extended. ``stop_at`` ends early after that step (as a killed session
    would), checkpoint written."""
    if not isinstance(cfg, LoopConfig):
        raise TypeError(f"train_gan: cfg must be a LoopConfig, got {type(cfg).__name__}")
    if not isinstance(loss, gan.GANLoss):
        raise TypeError(f"train_gan: loss must be a dlbook.gan.GANLoss, got {type(loss).__name__}")
    procs = processes()
    if cfg.batch % procs.world:
        raise ValueError(f"train_gan: the global batch {cfg.batch} does not split evenly over {procs.world} "
                         "processes; choose a multiple of the process count")
    dev = _process_device(device, procs)
    G.to(dev).train()
    T.to(dev).train()
    Gw, Tw = G, T
    if procs.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [dev.index] if dev.type == "cuda" else None
        Gw, Tw = DDP(G, device_ids=ids), DDP(T, device_ids=ids)
    opt_g, opt_t = _adam(G, cfg, dev), _adam(T, cfg, dev)
    hist, evals, snaps, start, spent = History(), History(), {}, 0, 0.0
    acc: dict[str, torch.Tensor] = {}  # metric sums of the open log interval
    n_acc = 0
    require("train_gan", positive={"stop_at": stop_at}, whole=True)
    loop_key = {k: v for k, v in asdict(cfg).items() if k not in ("steps", "progress")}
    key = plain({"run": run_key, "loop": loop_key, "loss": repr(loss), "seed": seed, "world": procs.world})
    ckpt = Path(checkpoint) if checkpoint else None
    if ckpt is not None and ckpt.is_file():
        start, spent, n_acc = _resume(ckpt, key, cfg.steps, dev, G, T, opt_g, opt_t, hist, evals, snaps, acc)
    use_amp = cfg.amp and dev.type == "cuda"
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_amp else contextlib.nullcontext
    b = cfg.batch // procs.world
    lo, hi = procs.rank * b, (procs.rank + 1) * b
    t_params = list(T.parameters())

    def hooks(step: int) -> None:
        if (step % cfg.eval_every and step != cfg.steps) or step in evals.steps:
            return
        row = None
        if procs.main:
            G.eval()
            with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
                row = {"seconds": spent, "critic_updates": step * cfg.n_critic}
                if evaluate is not None:
                    row.update({k: float(v) for k, v in evaluate(G, T, step).items()})
                if snapshot is not None:
                    snaps[step] = snapshot(G, T, step)
            G.train()
        evals.log(step, _broadcast(row, procs))

    def save(step: int) -> None:
        sums = {k: v.detach().reshape(()).clone() for k, v in sorted(acc.items())}  # dtype kept: exact resume
        if procs.world > 1 and sums:  # the open interval, averaged over the processes
            import torch.distributed as dist

            t = torch.stack([v.float() for v in sums.values()])
            dist.all_reduce(t)
            sums = dict(zip(sums, (t / procs.world).unbind()))
        if procs.main:
            save_checkpoint(ckpt, {"G": G.state_dict(), "T": T.state_dict(), "opt_g": opt_g.state_dict(),
                                   "opt_t": opt_t.state_dict(), "step": step, "history": hist.state_dict(),
                                   "evals": evals.state_dict(), "seconds": spent, "run_key": key,
                                   "snapshots": {str(k): _tensors(v) for k, v in snaps.items()},
                                   "pending": {"sums": {k: v.cpu() for k, v in sums.items()}, "count": n_acc}})
        _barrier(procs)

    from tqdm.auto import tqdm

    hooks(start)
    bar = tqdm(total=cfg.steps, initial=start, desc=desc or loss.name, leave=False,
               disable=not (cfg.progress and procs.main))
    end = cfg.steps if stop_at is None else min(cfg.steps, stop_at)
    for step in range(start, end):
        t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(stream_seed(seed, 1, step))  # the global batch: shared
        _seed_global(stream_seed(seed, 2 + procs.rank, step), dev)  # penalty points: per process

        def real() -> torch.Tensor:
            return sample_real(cfg.batch, gen)[lo:hi].to(dev, non_blocking=True)

        def noise() -> torch.Tensor:
            return torch.randn(cfg.batch, cfg.z_dim, generator=gen)[lo:hi].to(dev, non_blocking=True)

        for _ in range(cfg.n_critic):
            xr, z = real(), noise()
            with torch.no_grad(), autocast():
                xf = gan._up(G(z))
            with autocast():
                lt, logs = loss.critic_loss(Tw, xr, xf)
            opt_t.zero_grad(set_to_none=True)
            lt.backward()
            opt_t.step()
            loss.after_critic_step(T)
        for prm in t_params:
            prm.requires_grad_(False)
        with autocast():
            lg = loss.generator_loss(T, xr, Gw(noise()))
        opt_g.zero_grad(set_to_none=True)
        lg.backward()
        opt_g.step()
        for prm in t_params:
            prm.requires_grad_(True)
        s = step + 1
        for k, v in logs.items():
            acc[k] = acc[k] + v if k in acc else v.detach().clone()
        acc["generator"] = acc["generator"] + lg.detach() if "generator" in acc else lg.detach().clone()
        n_acc += 1
        spent += time.perf_counter() - t0
        if s % cfg.log_every == 0 or s == cfg.steps:  # an early stop leaves its interval open
            vals = _all_mean(acc, n_acc, procs)
            bad = [k for k, v in vals.items() if not math.isfinite(v)]
            if bad:
                raise NonFiniteLoss(f"train_gan ({loss.name}, seed {seed}): the mean {bad[0]} loss of steps "
                                    f"{s - n_acc + 1}..{s} is {vals[bad[0]]}; training stopped (the last "
                                    "checkpoint, if any, is from before). A learning rate too large is the usual cause.")
            hist.log(s, vals)
            acc, n_acc = {}, 0
            bar.set_postfix({k: f"{v:.3g}" for k, v in list(vals.items())[:2]}, refresh=False)
        bar.update(1)
        hooks(s)
        if ckpt is not None and ((cfg.checkpoint_every and s % cfg.checkpoint_every == 0) or s == end):
            save(s)
    bar.close()
    if procs.world > 1:  # BatchNorm statistics ran per process: leave every process with rank 0's
        import torch.distributed as dist

        for buf in list(G.buffers()) + list(T.buffers()):
            dist.broadcast(buf, 0)
    G.eval()
    T.eval()
    return GANRun(hist, evals, snaps, spent, cfg.steps, cfg.n_critic, seed, loss.name, G, T)


def _adam(net: nn.Module, cfg: LoopConfig, dev: torch.device) -> torch.optim.Adam:
    """Adam with the fused kernel where this torch has it for ``dev`` (the same update in one
    pass over the parameters: small GANs spend a tenth of their step in the optimiser otherwise)."""
    if dev.type in ("cpu", "cuda"):
        try:
            return torch.optim.Adam(net.parameters(), cfg.lr, betas=cfg.betas, fused=True)
        except (RuntimeError, TypeError, ValueError):  # an older torch: no fused kernel for this device
            pass
    return torch.optim.Adam(net.parameters(), cfg.lr, betas=cfg.betas)


def _resume(ckpt: Path, key: Any, steps: int, dev, G, T, opt_g, opt_t, hist: History, evals: History,
            snaps: dict, acc: dict) -> tuple[int, float, int]:
    """Check every field of the checkpoint, then load it; nothing is modified when it is refused."""
    s = load_checkpoint(ckpt, map_location=dev)
    name = ckpt.name
    require_fields(s, {"G": dict, "T": dict, "opt_g": dict, "opt_t": dict, "step": int, "history": dict,
                       "evals": dict, "seconds": (int, float), "run_key": None, "snapshots": dict,
                       "pending": dict}, name)
    if s["run_key"] != key:
        raise CheckpointError(f"{name} was written by another run (its settings differ from this one's); "
                              "delete it or give this run another checkpoint path")
    if not 0 <= s["step"] <= steps:
        raise CheckpointError(f"{name} is at step {s['step']}, past the {steps} steps asked for: it "
                              "belongs to a longer run; delete it or give this run another checkpoint path")
    check_state(G, s["G"], name, "G")
    check_state(T, s["T"], name, "T")
    check_optimizer(opt_g, s["opt_g"], name, "opt_g")
    check_optimizer(opt_t, s["opt_t"], name, "opt_t")
    check_history(s["history"], name)
    check_history(s["evals"], name, "evals")
    pend = s["pending"]
    if not (isinstance(pend.get("sums"), dict) and isinstance(pend.get("count"), int)
            and all(isinstance(v, torch.Tensor) and v.numel() == 1 for v in pend["sums"].values())):
        raise CheckpointError(f"{name}: field 'pending' is not an open log interval; delete the file")
    backup = [copy_state(m.state_dict()) for m in (G, T, opt_g, opt_t)]
    try:
        G.load_state_dict(s["G"])
        T.load_state_dict(s["T"])
        opt_g.load_state_dict(s["opt_g"])
        opt_t.load_state_dict(s["opt_t"])
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as e:
        for m, b in zip((G, T, opt_g, opt_t), backup):
            m.load_state_dict(b)
        raise CheckpointError(f"{name} does not fit these nets or optimisers ({str(e)[:200]}); delete it "
                              "or give this run another checkpoint path") from None
    hist.load_state_dict(s["history"])
    evals.load_state_dict(s["evals"])
    snaps.update({int(k): _arrays(v) for k, v in s["snapshots"].items()})
    acc.update({k: v.to(dev) for k, v in pend["sums"].items()})
    return s["step"], float(s["seconds"]), pend["count"]


# ======================================================================== jobs in processes


# run_jobs: the one process-pool runner lives in dlbook.train (imported above)


# ======================================================================== 2-D toys


@contextlib.contextmanager
def _threads(n: int | None, dev: torch.device):
    old = torch.get_num_threads()
    if n and dev.type == "cpu":
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)



@dataclass(frozen=True)
class ToyConfig(Settings):
    """Settings shared by every toy run of a chapter: data, nets, optimiser, evaluation."""

    data: str = "8gaussians"
    steps: int = 4000  # generator steps (a job may ask for another number)
    batch: int = 256
    width: int = 128
    depth: int = 3
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    eval_every: int = 500
    n_eval: int = 4000
    n_show: int = 1500
    field_n: int = 101
    workers: int = 2

    SIZES = ("steps", "batch", "width", "depth", "eval_every", "n_eval", "n_show", "field_n", "workers")
    POSITIVE = ("lr",)
    UNIT = ("betas",)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.data not in gan.TOYS:
            raise ValueError(f"ToyConfig: unknown toy data {self.data!r}: choose one of {', '.join(gan.TOYS)}")

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

    def __post_init__(self) -> None:
        require(f"ToyJob {self.key}", positive={"n_critic": self.n_critic, "steps": self.steps}, whole=True)
        if self.critic_norm not in ("none", "sn"):
            raise ValueError(f"ToyJob {self.key}: critic_norm must be 'none' or 'sn', got {self.critic_norm!r}")


def toy_job(job: ToyJob, cfg: ToyConfig, threads: int = 1) -> GANRun:
    """Train the MLP pair of ``cfg`` on the job's toy with the job's loss; evaluate modes and
    quality (and the probe) on ``cfg.n_eval`` points every ``cfg.eval_every`` steps. Runs on
    the CPU with ``threads`` threads (one: these nets are too small to gain from more)."""
    with _threads(threads, torch.device("cpu")):
        return _toy_job(job, cfg)


def _toy_job(job: ToyJob, cfg: ToyConfig) -> GANRun:
    data = gan.toy_dataset(job.data or cfg.data)
    torch.manual_seed(job.seed)
    G = gan.mlp(2, 2, cfg.width, cfg.depth, "relu")
    T = gan.mlp(2, 1, cfg.width, cfg.depth, "lrelu", norm=job.critic_norm)
    loop = LoopConfig(steps=job.steps or cfg.steps, batch=cfg.batch, n_critic=job.n_critic or job.loss.n_critic,
                      z_dim=2, lr=cfg.lr, betas=cfg.betas, log_every=max(1, cfg.eval_every // 10),
                      eval_every=cfg.eval_every, progress=False)
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


@dataclass(frozen=True)
class ClassifierRecipe(Settings):
    """How the classifier behind the classifier-FID is trained: a small CNN (width ``width``),
    ``epochs`` passes over the training part (all but ``hold_out`` of the train split), batch
    ``batch``, Adam with a one-cycle schedule peaking at ``lr``, random shifts of up to
    ``shift`` pixels, weights seeded by ``seed``."""

    width: int = 16
    feat: int = 128
    epochs: int = 10
    batch: int = 64
    lr: float = 3e-3
    shift: int = 2
    hold_out: float = 0.5
    seed: int = 0

    SIZES = ("width", "feat", "epochs", "batch")
    POSITIVE = ("lr", "hold_out")
    NONNEG = ("shift", "seed")
    UNIT = ("hold_out",)


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
        gan._n_layers(self.img_size)
        if self.workers > 1 and self.threads is None:
            raise ValueError(f"ImageConfig: {self.workers} workers need threads per worker (threads=1 on a "
                             "machine with as many cores as workers); set threads")


class Method(NamedTuple):
    """One row of a loss table: the loss, critic updates per generator update (None: the
    loss's usual ratio) and the critic's normalisation ('none', 'bn', 'ln' or 'sn')."""

    loss: gan.GANLoss
    n_critic: int | None = None
    critic_norm: str = "bn"


def as_method(name: str, row: Any) -> Method:
    m = row if isinstance(row, Method) else Method(*row) if isinstance(row, tuple) else Method(row)
    if not isinstance(m.loss, gan.GANLoss):
        raise TypeError(f"loss table row {name!r}: the first entry must be a GANLoss, got {type(m.loss).__name__}")
    if m.critic_norm not in gan.CRITIC_NORMS:
        raise ValueError(f"loss table row {name!r}: critic_norm must be one of {gan.CRITIC_NORMS}, "
                         f"got {m.critic_norm!r}")
    require(f"loss table row {name!r}", positive={"n_critic": m.n_critic}, whole=True)
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
    channels = data.shape[1]
    G = gan.ConvGenerator(cfg.z_dim, cfg.img_size, channels, cfg.base, cfg.max_ch, cfg.kernel, cfg.gen_norm)
    T = gan.ConvCritic(cfg.img_size, channels, cfg.base, cfg.max_ch, cfg.kernel, method.critic_norm)
    n_critic = method.n_critic or method.loss.n_critic
    loop = LoopConfig(steps=cfg.steps, batch=cfg.batch, n_critic=n_critic, z_dim=cfg.z_dim, lr=cfg.lr,
                      betas=cfg.betas, log_every=max(1, cfg.eval_every // 10), eval_every=cfg.eval_every,
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
    dev = _process_device(device, procs)
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
    with _threads(cfg.threads, dev):
        metric = image_metric(cfg, dev) if procs.main else None  # trains and caches the classifier once
        if cfg.workers > 1 and procs.world == 1 and dev.type == "cpu" and len(items) > 1:
            done = run_jobs(_image_entry, items, cfg.workers, "image runs")
        else:
            done = [image_run(c, data, row, metric, seed, dev, ck, desc=f"{name} s{seed}")
                    for c, name, row, seed, ck in items]
    runs = {(name, seed): r for (_, name, _, seed, _), r in zip(items, done)}
    info = _broadcast(metric.describe() if metric is not None else None, procs)
    return ImageResult(runs, info, data.source, data.shape, time.perf_counter() - t0)


def _image_entry(item: tuple) -> GANRun:
    """One image run in a worker process (``ImageConfig.workers``): its own data and metric
    (the classifier read from the cache the parent wrote), ``cfg.threads`` threads, no bars."""
    cfg, name, row, seed, ck = item
    dev = torch.device("cpu")
    with _threads(cfg.threads, dev), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the parent has said everything there is to say about the data
        data = load_image_data(cfg)
        metric = image_metric(cfg, dev, progress=False)
        return image_run(cfg, data, row, metric, seed, dev, ck, desc=f"{name} s{seed}", progress=False)


# ======================================================================== classifier-FID and KID


def frechet_distance(mu1, s1, mu2, s2) -> float:
    """||mu1-mu2||^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2), float64, via symmetric
    eigendecompositions (torch's, which follow the one thread policy)."""
    mu1, mu2, s1, s2 = (torch.as_tensor(np.asarray(a, np.float64)) for a in (mu1, mu2, s1, s2))
    w, v = torch.linalg.eigh(s1)
    r1 = (v * w.clamp(min=0).sqrt()) @ v.T
    m = r1 @ s2 @ r1
    ev = torch.linalg.eigvalsh((m + m.T) / 2)
    return float(((mu1 - mu2) ** 2).sum() + s1.trace() + s2.trace() - 2 * ev.clamp(min=0).sqrt().sum())


def _poly_sum(a: np.ndarray, b: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """Row sums of the KID kernel k(x, y) = (x.y / d + 1)^3 between rows of a and b."""
    d = a.shape[1]
    out = np.zeros(len(a))
    for j in range(0, len(b), chunk):
        out += ((a @ b[j:j + chunk].T / d + 1.0) ** 3).sum(1)
    return out


def kid(fake: np.ndarray, real: np.ndarray, blocks: int = 10, real_sum: float | None = None) -> tuple[float, float]:
    """Kernel Inception-style distance with the cubic polynomial kernel: the unbiased estimate
    of MMD^2 over all pairs, and its standard error by a delete-a-block jackknife over
    ``blocks`` blocks of the fake samples (the reference set is held fixed).
    ``real_sum``: the reference's off-diagonal kernel sum, if already computed."""
    x, y = np.asarray(fake, np.float64), np.asarray(real, np.float64)
    n, m, d = len(x), len(y), x.shape[1]
    if n < 2 * blocks or m < 2 or y.shape[1] != d:
        raise ValueError(f"kid: need >= {2 * blocks} fake and >= 2 real samples of one dimension, "
                         f"got {x.shape} and {y.shape}")
    kxx = (x @ x.T / d + 1.0) ** 3
    np.fill_diagonal(kxx, 0.0)
    if real_sum is None:
        real_sum = float(_poly_sum(y, y).sum() - ((np.einsum("ij,ij->i", y, y) / d + 1.0) ** 3).sum())
    kxy_rows = _poly_sum(x, y)
    ryy = real_sum / (m * (m - 1))

    def est(sxx, sxy, k):
        return sxx / (k * (k - 1)) + ryy - 2 * sxy / (k * m)

    value = est(kxx.sum(), kxy_rows.sum(), n)
    part = np.array_split(np.arange(n), blocks)
    jack = []
    for idx in part:
        keep = np.setdiff1d(np.arange(n), idx)
        jack.append(est(kxx[np.ix_(keep, keep)].sum(), kxy_rows[keep].sum(), len(keep)))
    jack = np.array(jack)
    se = math.sqrt((blocks - 1) / blocks * float(((jack - jack.mean()) ** 2).sum()))
    return float(value), se


class FeatureClassifier(nn.Module):
    """The classifier behind the classifier-FID: three strided convs (5x5, 5x5, 3x3; widths
    w, 2w, 4w; ReLU), a ``feat``-unit penultimate layer (the features) and a linear output."""

    ARCH = "conv5s2-conv5s2-conv3s2-fc-v1"

    def __init__(self, channels: int, n_classes: int, img_size: int, width: int = 16, feat: int = 128):
        super().__init__()
        if img_size % 8:
            raise ValueError(f"FeatureClassifier: img_size must be a multiple of 8, got {img_size}")
        s = img_size // 8
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 5, 2, 2), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 5, 2, 2), nn.ReLU(),
            nn.Conv2d(2 * width, 4 * width, 3, 2, 1), nn.ReLU(), nn.Flatten(),
            nn.Linear(4 * width * s * s, feat), nn.ReLU())
        self.out = nn.Linear(feat, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x))


def _rotate(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.rot90(a, int(j), (1, 2)) for a, j in zip(x, k)])


class ImageMetric:
    """Interface of an image metric: ``metric(x_fake) -> {"fd", "kid", "kid_se"}`` for
    (N, C, H, W) images in [-1, 1]; ``describe()`` says what it is."""

    name = "metric"

    def features(self, x: torch.Tensor) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def _reference(self, feats: np.ndarray) -> None:
        self.ref = feats
        self.mu, self.cov = feats.mean(0), np.cov(feats, rowvar=False)
        d = feats.shape[1]
        self.ref_sum = float(_poly_sum(feats, feats).sum() - ((np.einsum("ij,ij->i", feats, feats) / d + 1) ** 3).sum())

    def score_features(self, f: np.ndarray) -> dict[str, float]:
        k, se = kid(f, self.ref, real_sum=self.ref_sum)
        return {"fd": frechet_distance(f.mean(0), np.cov(f, rowvar=False), self.mu, self.cov), "kid": k, "kid_se": se}

    def __call__(self, x_fake: torch.Tensor) -> dict[str, float]:
        return self.score_features(self.features(x_fake))


class ClassifierFID(ImageMetric):
    """Classifier-FID and classifier-KID of a dataset at one image size and fit.

    The classifier is trained on the train split minus a held-out part (``recipe.hold_out``;
    on its labels, or on rotation prediction for an unlabelled set), with weights set by
    ``recipe.seed``, and cached atomically in ``$DLBOOK_DATA/classifier-fid`` under a key of the
    recipe, the data and the image format; a torn or foreign cache file is removed and rebuilt.
    The reference is the complete test split (the held-out part when there is no test split);
    ``floor`` scores ``n_eval`` held-out real images the classifier never saw."""

    name = "classifier-FID"
    MAX_REFERENCE = 10_000

    def __init__(self, data: str, img_size: int, fit: str = "resize", recipe: ClassifierRecipe = ClassifierRecipe(),
                 n_eval: int = 1000, n_train: int | None = None, device=None,
                 cache_dir: str | os.PathLike | None = None, progress: bool = True):
        from . import data as D
        from .config import device as default_device

        if not isinstance(recipe, ClassifierRecipe):
            raise TypeError(f"ClassifierFID: recipe must be a ClassifierRecipe, got {type(recipe).__name__}")
        require("ClassifierFID", positive={"img_size": img_size, "n_eval": n_eval, "n_train": n_train}, whole=True)
        self.device = torch.device(device) if device is not None else default_device()
        self.data, self.img_size, self.fit, self.recipe = data, img_size, fit, recipe
        train = D.load(data, "train", limit=n_train)
        self._conv = lambda a: D.to_float(a, size=img_size, fit=fit, value_range=(-1, 1))  # uint8 -> [-1, 1]
        n_hold = max(2, int(round(len(train) * recipe.hold_out)))
        if len(train) - n_hold < recipe.batch:
            raise ValueError(f"ClassifierFID: {len(train)} training images leave {len(train) - n_hold} for the "
                             f"classifier, fewer than its batch {recipe.batch}")
        x_fit, y_fit = train.x[:-n_hold], torch.as_tensor(train.y[:-n_hold])
        held = train.x[-n_hold:]
        self.labelled = len(np.unique(train.y)) > 1
        if "test" in D.info(data).splits:
            test = D.load(data, "test")
            x_ref, y_ref, ref_name = test.x, torch.as_tensor(test.y), f"{data}/test ({test.source})"
        else:  # part of the held-out records is the reference (at most MAX_REFERENCE), the rest gives the floor
            cut = min(n_hold // 2, self.MAX_REFERENCE)
            x_ref, y_ref, ref_name = held[:cut], None, f"{data}/train, held-out records"
            held = held[cut:]
        channels = int(self._conv(x_fit[:1]).shape[1])
        n_classes = int(y_fit.max()) + 1 if self.labelled else 4
        key = {"arch": FeatureClassifier.ARCH, "recipe": asdict(recipe), "data": data, "source": train.source,
               "n_fit": len(x_fit), "img_size": img_size, "fit": fit, "labelled": self.labelled,
               "channels": channels, "n_classes": n_classes}
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        root = Path(cache_dir) if cache_dir is not None else D.data_dir()
        self.cache = root / "classifier-fid" / f"{data}-{img_size}-{fit}-{digest}.pt"
        self.net = self._build(channels, n_classes)
        self.cached = self._load(digest)
        if not self.cached:
            self._train(x_fit, y_fit, progress)
            save_checkpoint(self.cache, {"digest": digest, "state": self.net.state_dict()})
        self.net.to(self.device).eval()
        feats, logits = self._forward(x_ref, uint8=True)
        target = y_ref
        if target is None:  # rotation task: accuracy on the four rotations of the reference
            target = torch.arange(len(x_ref)) % 4
            _, logits = self._forward(x_ref, uint8=True, rotations=target)
        self.accuracy = float((logits.argmax(1) == target).double().mean())
        self._reference(feats.numpy())
        self.n_reference, self.reference = len(x_ref), ref_name
        n_floor = min(n_eval, len(held))
        self.floor = dict(self.score_features(self._forward(held[:n_floor], uint8=True)[0].numpy()), n=n_floor)
        self.task = "labels" if self.labelled else "rotation prediction"

    def _build(self, channels: int, n_classes: int) -> FeatureClassifier:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.recipe.seed)
            return FeatureClassifier(channels, n_classes, self.img_size, self.recipe.width, self.recipe.feat)

    def _load(self, digest: str) -> bool:
        if not self.cache.is_file():
            return False
        try:
            s = load_checkpoint(self.cache, map_location="cpu")  # checksummed: a flipped bit is refused
            require_fields(s, {"digest": str, "state": dict}, self.cache.name)
            if s["digest"] != digest:
                raise CheckpointError(f"{self.cache.name} holds another classifier")
            check_state(self.net, s["state"], self.cache.name, "state")
            self.net.load_state_dict(s["state"])
            return True
        except (CheckpointError, RuntimeError, KeyError) as e:
            warnings.warn(f"classifier-FID cache {self.cache.name} is unusable ({str(e)[:120]}); removed, "
                          "retraining the classifier", RuntimeWarning, stacklevel=3)
            self.cache.unlink(missing_ok=True)
            self.net = self._build(self.net.body[0].in_channels, self.net.out.out_features)
            return False

    def _train(self, x: np.ndarray, y: torch.Tensor, progress: bool) -> None:
        """``x``: uint8 images, converted a batch at a time (a large set never sits in memory as float)."""
        from tqdm.auto import tqdm

        r = self.recipe
        net = self.net.to(self.device).train()
        steps = max(1, r.epochs * len(x) // r.batch)
        opt = torch.optim.Adam(net.parameters(), r.lr / 10)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, r.lr, total_steps=steps)
        g = torch.Generator().manual_seed(stream_seed(r.seed, 77))
        for _ in tqdm(range(steps), desc="feature classifier", disable=not progress, leave=False):
            idx = torch.randint(len(x), (r.batch,), generator=g)
            xb, yb = self._conv(x[idx.numpy()]), (y[idx] if self.labelled else None)
            if r.shift:
                sh = torch.randint(-r.shift, r.shift + 1, (2,), generator=g)
                xb = torch.roll(xb, (int(sh[0]), int(sh[1])), (2, 3))
            if yb is None:
                yb = torch.randint(4, (r.batch,), generator=g)
                xb = _rotate(xb, yb)
            loss = F.cross_entropy(net(xb.to(self.device)), yb.to(self.device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        net.eval()

    @torch.no_grad()
    def _forward(self, x, batch: int = 1000, uint8: bool = False,
                 rotations: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(features float64, logits) on the CPU; ``uint8`` images are converted a batch at a time."""
        f, o = [], []
        for i in range(0, len(x), batch):
            xb = self._conv(x[i:i + batch]) if uint8 else x[i:i + batch]
            if rotations is not None:
                xb = _rotate(xb, rotations[i:i + batch])
            h = self.net.features(xb.to(self.device).float())
            f.append(h.double().cpu())
            o.append(self.net.out(h).cpu())
        return torch.cat(f), torch.cat(o)

    def features(self, x: torch.Tensor) -> np.ndarray:
        if x.ndim != 4 or tuple(x.shape[1:]) != (self.net.body[0].in_channels, self.img_size, self.img_size):
            raise ValueError(f"{self.name}: expected images (N, {self.net.body[0].in_channels}, {self.img_size}, "
                             f"{self.img_size}) in [-1, 1], got {tuple(x.shape)}")
        return self._forward(x)[0].numpy()

    def describe(self) -> dict:
        r = self.recipe
        what = "labels" if self.labelled else "rotation prediction"
        return {"name": self.name, "kid_name": "classifier-KID", "accuracy": self.accuracy, "task": what,
                "reference": self.reference, "n_reference": self.n_reference, "floor": self.floor,
                "cached": self.cached,
                "provenance": (f"{self.name}: features of a {FeatureClassifier.ARCH} classifier (width {r.width}, "
                               f"{r.epochs} epochs on {what}, seed {r.seed}) with test accuracy "
                               f"{100 * self.accuracy:.1f}% on {self.reference}; reference: {self.n_reference} "
                               f"images; floor on {self.floor['n']} held-out real images: "
                               f"{self.floor['fd']:.3g} (KID {self.floor['kid']:.2g})")}


class InceptionFID(ImageMetric):
    """The Inception FID of the literature through pytorch-fid's InceptionV3 (pool3, 2048
    features), whose weights download on first use; reference as for `ClassifierFID`."""

    name = "Inception FID"

    def __init__(self, reference: torch.Tensor, floor_images: torch.Tensor, device=None):
        from pytorch_fid.inception import InceptionV3  # optional: raises ImportError where absent

        from .config import device as default_device

        self.device = torch.device(device) if device is not None else default_device()
        self.net = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).to(self.device).eval()
        self._reference(self.features(reference))
        self.n_reference = len(reference)
        self.floor = dict(self(floor_images), n=len(floor_images))

    @torch.no_grad()
    def features(self, x: torch.Tensor, batch: int = 200) -> np.ndarray:
        out = []
        for i in range(0, len(x), batch):
            xb = (x[i:i + batch].float().to(self.device) + 1) / 2
            if xb.shape[1] == 1:
                xb = xb.repeat(1, 3, 1, 1)
            out.append(self.net(xb)[0].flatten(1).double().cpu())
        return torch.cat(out).numpy()

    def describe(self) -> dict:
        return {"name": self.name, "kid_name": "Inception KID", "accuracy": None, "task": "ImageNet (pretrained)",
                "n_reference": self.n_reference, "floor": self.floor,
                "provenance": f"Inception FID (pytorch-fid, pool3); reference {self.n_reference} real images"}


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


# ======================================================================== summaries and plots


def plot_samples(ax, fake, data: gan.Toy2D | None = None, real=None, title: str | None = None,
                 lim: float | None = None):
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
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
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
    out = gan._up(T(pts))
    (g,) = torch.autograd.grad(out.sum(), pts)
    T.train(was)
    return (u.numpy(), out.detach().cpu().reshape(n, n).numpy(), g.norm(dim=1).cpu().reshape(n, n).numpy())


def plot_critic(ax, field_, fake=None, data: gan.Toy2D | None = None, levels: Sequence[float] = (0.5, 1.0, 2.0),
                title: str | None = None, colorbar: bool = False):
    """Heat map of the critic with labelled contours of its gradient norm."""
    u, t, gn = field_
    im = ax.imshow(t, extent=(u[0], u[-1], u[0], u[-1]), origin="lower", cmap="viridis")
    cs = ax.contour(u, u, gn, levels=sorted(set(levels)), colors="w", linewidths=0.8)
    ax.clabel(cs, fmt="|∇T|=%g", fontsize=9)
    if fake is not None:
        f = np.asarray(fake)
        ax.scatter(f[:, 0], f[:, 1], s=1, c="r", alpha=0.3)
    if data is not None and data.centres is not None:
        ax.scatter(data.centres[:, 0], data.centres[:, 1], marker="x", c="k", s=20)
    ax.set_xlim(u[0], u[-1])
    ax.set_ylim(u[0], u[-1])
    ax.set_aspect("equal")
    ax.grid(False)
    if title:
        ax.set_title(title)
    if colorbar:
        ax.figure.colorbar(im, ax=ax, fraction=0.046)
    return ax


def plot_image_curves(result: ImageResult, key: str = "fd", x: str = "step", ax=None, floor: bool = True,
                      log: bool = True):
    """Mean over seeds (line) and min-max over seeds (band) of ``key`` ('fd', 'kid') against
    generator ``step`` or training wall time (``x='seconds'``), one line per method; the floor
    of held-out real images as a dotted line."""
    import matplotlib.pyplot as plt

    if x not in ("step", "seconds"):
        raise ValueError(f"plot_image_curves: x must be 'step' or 'seconds', got {x!r}")
    ax = ax or plt.subplots(figsize=(5, 3.4))[1]
    for i, name in enumerate(result.names):
        rs = [result.runs[(name, s)] for s in result.seeds(name)]
        ys = np.array([r.curve(key)[1] for r in rs])
        xs = np.array([r.curve(key)[0] if x == "step" else np.array(r.evals["seconds"]) for r in rs]).mean(0)
        ax.plot(xs, ys.mean(0), "o-", ms=3, c=f"C{i}", label=f"{name} ({len(rs)} seed{'s' * (len(rs) > 1)})")
        if len(rs) > 1:
            ax.fill_between(xs, ys.min(0), ys.max(0), color=f"C{i}", alpha=0.2)
    if floor and result.metric and key in result.metric.get("floor", {}):
        ax.axhline(result.metric["floor"][key], c="k", ls=":", lw=0.8, label="held-out real images")
    names = {"fd": result.metric.get("name", "FD") if result.metric else "FD",
             "kid": result.metric.get("kid_name", "KID") if result.metric else "KID"}
    ax.set_ylabel(names.get(key, key))
    ax.set_xlabel("generator step" if x == "step" else "training wall time (s)")
    if log:
        ax.set_yscale("log")
    ax.legend(fontsize=9)
    return ax


# ======================================================================== command line


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dlbook.gan_runs --chapter gan_qp --profile full --out results.pt``: the image
    experiment of a chapter module (its ``config(profile).image`` and ``image_table(cfg)``), one
    process or, under ``torchrun --nproc_per_node=N``, N; rank 0 writes the result, which
    ``ImageResult.load(path)`` reads back."""
    import argparse
    import importlib

    p = argparse.ArgumentParser(prog="python -m dlbook.gan_runs", description=main.__doc__)
    p.add_argument("--chapter", required=True, help="chapter module in dlbook, e.g. gan_qp or wgan_div")
    p.add_argument("--profile", default=None, help="smoke, cpu or full (default: as dlbook resolves it)")
    p.add_argument("--seeds", type=int, nargs="*", default=None, help="override the config's seeds")
    p.add_argument("--steps", type=int, default=None, help="override the config's generator steps")
    p.add_argument("--out", required=True, help="where rank 0 writes the ImageResult")
    p.add_argument("--checkpoints", default=None, help="folder for resumable per-run checkpoints")
    a = p.parse_args(argv)
    procs = init_processes()
    mod = importlib.import_module(f"dlbook.{a.chapter}")
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
    _barrier(procs)
    return 0


if __name__ == "__main__":  # run the imported module's main, so that chapter modules and this one share classes
    from dlbook import gan_runs

    raise SystemExit(gan_runs.main())
