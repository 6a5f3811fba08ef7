"""The GAN training loop: ``n_critic`` critic updates and one generator update per step, its
randomness, its checkpoints, and the processes it runs on.

- `train_gan` draws its randomness per generator step from ``(seed, step)``: the global batch
  (real indices, noise) and the random penalty points of the global batch from streams shared
  by every process. A resumed run therefore repeats an uninterrupted one exactly (parameters
  and logged history: the open log interval is in the checkpoint), and under ``torchrun`` each
  process takes its shard of the same global batch and of the same penalty points.
- Checkpoints are written atomically with a checksum of their contents and read with
  ``weights_only=True`` (`dlbook.train.save_checkpoint` / `load_checkpoint`): a crafted, cut
  or corrupt file, or one with a missing or unfitting field, is refused with `CheckpointError`
  before anything is loaded.
- Under ``torchrun --nproc_per_node=N`` (PyTorch DistributedDataParallel; NCCL on GPUs, gloo on
  CPU) the same calls train on N processes: ``batch`` is the global batch, split evenly;
  gradients are averaged; logged metrics are averaged over the processes; rank 0 evaluates and
  writes checkpoints. BatchNorm layers normalise with the statistics of the global batch
  (`global_batchnorm`), so N processes train as one process fed the same global batches, up to
  float rounding: with the book's BatchNorm nets and WGAN-GP's random interpolates, 2 gloo
  processes match 1 to a relative 1e-7 in every weight that acts on the output. (A bias right
  before a BatchNorm has no effect and a gradient of rounding noise, which Adam scales up to
  full steps: such biases, and the running means that follow them, differ.) The penalty
  strategies 'interp_same'
  and 'interp_pool' pair points within each process's shard and are not the same experiment.
"""
from __future__ import annotations

import contextlib
import os
import time
import types
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from . import gan
from .config import Settings, require
from .train import (CheckpointError, History, LoopCore, check_history, check_optimizer, check_state,
                    copy_state, load_checkpoint, plain, require_fields, save_checkpoint)

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


def process_device(device, procs: Processes) -> torch.device:
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


def broadcast(obj: Any, procs: Processes) -> Any:
    if procs.world == 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(procs: Processes) -> None:
    if procs.world > 1:
        import torch.distributed as dist

        dist.barrier()


class _BatchNormSync:
    """Whether BatchNorm layers switched by `global_batchnorm` use the global batch (off while
    rank 0 evaluates alone)."""

    on = True


def _global_bn_forward(self: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """BatchNorm in training mode with the statistics of the GLOBAL batch: sums over every
    process (autograd-aware all_reduce, so gradients and double backward see them too), then
    the same normalisation and running-statistics update as `torch.nn.BatchNorm`."""
    if not (self.training and _BatchNormSync.on):
        return type(self).forward(self, x)
    import torch.distributed as dist
    from torch.distributed.nn.functional import all_reduce

    group = self.dlbook_group
    dims = [0, *range(2, x.dim())]
    shape = [1, -1] + [1] * (x.dim() - 2)
    xf = x.float()
    n = torch.tensor([float(x.numel() // x.shape[1])], device=x.device)
    dist.all_reduce(n, group=group)
    mean = all_reduce(xf.sum(dims), group=group) / n
    var = all_reduce((xf - mean.view(shape)).pow(2).sum(dims), group=group) / n
    if self.track_running_stats:
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            self.running_mean.mul_(1 - m).add_(m * mean.detach())
            self.running_var.mul_(1 - m).add_(m * var.detach() * n / (n - 1))
    y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
    if self.affine:
        y = y * self.weight.view(shape) + self.bias.view(shape)
    return y.to(x.dtype)


@contextlib.contextmanager
def global_batchnorm(procs: Processes, *nets: nn.Module):
    """Inside the block, the BatchNorm layers of ``nets`` normalise with the statistics of the
    global batch when there are several processes, so that N processes train as one process fed
    the same global batches (what `torch.nn.SyncBatchNorm` does on GPUs; this works with gloo on
    CPUs too and through a gradient penalty's double backward). Parameters, buffers and state
    dicts are untouched; one process: nothing changes."""
    if procs.world == 1:
        yield
        return
    import torch.distributed as dist

    group = dist.new_group()  # the statistics' collectives apart from DDP's gradient buckets
    layers = [m for net in nets for m in net.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d))]
    for m in layers:
        m.dlbook_group = group
        m.forward = types.MethodType(_global_bn_forward, m)
    try:
        yield
    finally:
        for m in layers:
            del m.forward, m.dlbook_group


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
    dev = process_device(device, procs)
    G.to(dev).train()
    T.to(dev).train()
    Gw, Tw = G, T
    if procs.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [dev.index] if dev.type == "cuda" else None
        Gw, Tw = DDP(G, device_ids=ids), DDP(T, device_ids=ids)
    opt_g, opt_t = adam(G, cfg, dev), adam(T, cfg, dev)
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
            _BatchNormSync.on = False  # rank 0 evaluates alone: no collectives
            G.eval()
            with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
                row = {"seconds": spent, "critic_updates": step * cfg.n_critic}
                if evaluate is not None:
                    row.update({k: float(v) for k, v in evaluate(G, T, step).items()})
                if snapshot is not None:
                    snaps[step] = snapshot(G, T, step)
            G.train()
            _BatchNormSync.on = True
        evals.log(step, broadcast(row, procs))

    def save(step: int) -> None:
        acc, n_acc = state.pending
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
        barrier(procs)

    hooks(start)
    state = types.SimpleNamespace(pending=(acc, n_acc))

    def step_fn(step: int) -> dict[str, torch.Tensor]:
        nonlocal spent
        t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(stream_seed(seed, 1, step - 1))  # the global batch: shared
        _seed_global(stream_seed(seed, 2, step - 1), dev)  # penalty points: drawn for the global batch, sharded

        def real() -> torch.Tensor:
            return sample_real(cfg.batch, gen)[lo:hi].to(dev, non_blocking=True)

        def noise() -> torch.Tensor:
            return torch.randn(cfg.batch, cfg.z_dim, generator=gen)[lo:hi].to(dev, non_blocking=True)

        for _ in range(cfg.n_critic):
            xr, z = real(), noise()
            with torch.no_grad(), autocast():
                xf = gan.as_float32(G(z))
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
        spent += time.perf_counter() - t0
        return {**logs, "generator": lg.detach()}

    with global_batchnorm(procs, G, T), gan.penalty_shard(procs.rank, procs.world):
        LoopCore(hist, state, steps=cfg.steps, log_every=cfg.log_every, start=start, stop_at=stop_at,
                 checkpoint_every=cfg.checkpoint_every, save=save if ckpt is not None else None, save_at_end=True,
                 progress=cfg.progress and procs.main, desc=desc or loss.name, after_step=hooks,
                 reduce=lambda sums, count: _all_mean(sums, count, procs),
                 what=f"train_gan ({loss.name}, seed {seed})").run(step_fn)
    if procs.world > 1:  # evaluation ran on rank 0 alone: leave every process with rank 0's buffers
        import torch.distributed as dist

        for buf in list(G.buffers()) + list(T.buffers()):
            dist.broadcast(buf, 0)
    G.eval()
    T.eval()
    return GANRun(hist, evals, snaps, spent, cfg.steps, cfg.n_critic, seed, loss.name, G, T)


def adam(net: nn.Module, cfg: LoopConfig, dev: torch.device) -> torch.optim.Adam:
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


@contextlib.contextmanager
def cpu_threads(n: int | None, dev: torch.device):
    """``n`` CPU threads inside the block when ``dev`` is the CPU (None: unchanged)."""
    old = torch.get_num_threads()
    if n and dev.type == "cpu":
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
