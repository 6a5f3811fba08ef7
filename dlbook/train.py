"""A plain training loop: AMP (bf16) on CUDA, tqdm progress, a metric history,
checkpoint every N steps and resume. A chapter can always write its own loop instead."""
from __future__ import annotations

import contextlib
import copy
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from .config import device as default_device

StepFn = Callable[[nn.Module, Any], "torch.Tensor | tuple[torch.Tensor, dict[str, Any]]"]


class ArrayLoader:
    """Mini-batches of in-memory tensors whose order depends only on (seed, epoch), so a
    resumed run sees exactly the batches an uninterrupted run would have seen."""

    def __init__(self, tensors: Sequence[torch.Tensor] | torch.Tensor, batch_size: int,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = True,
                 device: torch.device | str | None = None):
        tensors = (tensors,) if isinstance(tensors, torch.Tensor) else tuple(tensors)
        n = {len(t) for t in tensors}
        if len(n) != 1:
            raise ValueError(f"ArrayLoader: tensors have different lengths {sorted(n)}")
        self.n = n.pop()
        if batch_size < 1 or (drop_last and batch_size > self.n):
            raise ValueError(f"ArrayLoader: batch_size {batch_size} does not fit {self.n} samples")
        self.tensors = tuple(t.to(device) for t in tensors) if device else tensors
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, seed, drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def __iter__(self):
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.n, generator=g)
        else:
            order = torch.arange(self.n)
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            idx = idx.to(self.tensors[0].device)
            out = tuple(t[idx] for t in self.tensors)
            yield out[0] if len(out) == 1 else out


@dataclass
class History:
    """Metrics per logged step: ``history["loss"]`` is a list aligned with ``history.steps``."""

    steps: list[int] = field(default_factory=list)
    metrics: dict[str, list[float]] = field(default_factory=dict)

    def log(self, step: int, values: dict[str, float]) -> None:
        self.steps.append(step)
        for k, v in values.items():
            self.metrics.setdefault(k, [float("nan")] * (len(self.steps) - 1)).append(float(v))
        for k, col in self.metrics.items():  # keep columns aligned when a key is missing
            if len(col) < len(self.steps):
                col.append(float("nan"))

    def __getitem__(self, key: str) -> list[float]:
        return self.metrics[key]

    def __contains__(self, key: str) -> bool:
        return key in self.metrics

    def last(self, key: str, n: int = 1) -> float:
        vals = [v for v in self.metrics[key][-n:] if v == v]
        return float(np.mean(vals)) if vals else float("nan")

    def state_dict(self) -> dict:
        return {"steps": list(self.steps), "metrics": {k: list(v) for k, v in self.metrics.items()}}

    def load_state_dict(self, s: dict) -> None:
        self.steps, self.metrics = list(s["steps"]), {k: list(v) for k, v in s["metrics"].items()}


def _to(batch: Any, dev: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(dev, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to(b, dev) for b in batch)
    if isinstance(batch, dict):
        return {k: _to(v, dev) for k, v in batch.items()}
    return batch


class CheckpointError(RuntimeError):
    """A checkpoint or cache that cannot be used: unreadable, cut short, corrupt (its content
    does not match its checksum), missing a field, or from another run. Raised before anything
    in the file is used or anything of the caller's is modified."""


class NonFiniteLoss(FloatingPointError):
    """A training loss became NaN or infinite: the run stops instead of training on."""


CHECKSUM_KEY = "content_sha256"


def content_digest(obj: Any) -> str:
    """SHA-256 of a checkpoint's contents (tensors by dtype, shape and bytes; plain values by
    type and value; containers in order), independent of how the file happens to be zipped."""
    import hashlib

    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def _feed(h: Any, v: Any) -> None:
    if isinstance(v, torch.Tensor):
        t = v.detach().cpu().contiguous().reshape(-1)
        h.update(f"T{t.dtype}{tuple(v.shape)}:".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    elif isinstance(v, dict):
        h.update(f"D{len(v)}:".encode())
        for k, x in v.items():
            _feed(h, k)
            _feed(h, x)
    elif isinstance(v, (list, tuple)):
        h.update(f"L{len(v)}:".encode())
        for x in v:
            _feed(h, x)
    elif isinstance(v, str):
        b = v.encode("utf-8", "surrogatepass")
        h.update(f"S{len(b)}:".encode() + b)
    elif v is None or isinstance(v, (bool, int)):
        h.update(f"{type(v).__name__}:{v!r};".encode())
    elif isinstance(v, float):
        h.update(f"F{float.hex(v)};".encode())
    else:
        h.update(f"O{type(v).__name__}:{v!r};".encode())


def require_fields(s: Any, fields: dict[str, Any], name: str) -> None:
    """Refuse a loaded checkpoint dict that lacks one of ``fields`` ({key: type or tuple of
    types}) or holds a value of another type, with `CheckpointError`, before any is used."""
    if not isinstance(s, dict):
        raise CheckpointError(f"{name} holds a {type(s).__name__}, not a dict of fields; delete it")
    missing = [k for k in fields if k not in s]
    if missing:
        raise CheckpointError(f"{name} lacks the field(s) {missing}: it is not a checkpoint of this kind "
                              "(or was written by another version); delete it or give another path")
    for k, kind in fields.items():
        if kind is not None and not isinstance(s[k], kind):
            raise CheckpointError(f"{name}: field {k!r} holds a {type(s[k]).__name__}; delete the file")


def check_history(s: Any, name: str, field_name: str = "history") -> None:
    """A stored `History` must be steps plus columns of the same length (plain numbers)."""
    ok = (isinstance(s, dict) and isinstance(s.get("steps"), (list, tuple)) and isinstance(s.get("metrics"), dict)
          and all(isinstance(c, (list, tuple)) and len(c) == len(s["steps"]) for c in s["metrics"].values())
          and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                  for c in [s["steps"], *s["metrics"].values()] for v in c))
    if not ok:
        raise CheckpointError(f"{name}: field {field_name!r} is not a metric history; delete the file")


def check_state(module: nn.Module, sd: Any, name: str, field_name: str) -> None:
    """A stored state dict must name exactly ``module``'s tensors with their shapes."""
    own = module.state_dict()
    if not isinstance(sd, dict) or list(sd) != list(own) and set(sd) != set(own):
        extra = sorted(set(sd) - set(own)) if isinstance(sd, dict) else []
        lack = sorted(set(own) - set(sd)) if isinstance(sd, dict) else []
        raise CheckpointError(f"{name}: {field_name!r} does not fit this model (missing {lack[:4]}, unexpected "
                              f"{extra[:4]}); delete it or give this run another checkpoint path")
    for k, v in own.items():
        w = sd[k]
        if isinstance(v, torch.Tensor) and (not isinstance(w, torch.Tensor) or w.shape != v.shape):
            raise CheckpointError(f"{name}: {field_name}[{k!r}] has shape {getattr(w, 'shape', type(w).__name__)}, "
                                  f"this model's {tuple(v.shape)}; delete it or give this run another checkpoint path")


def check_optimizer(opt: torch.optim.Optimizer, sd: Any, name: str, field_name: str) -> None:
    """A stored optimiser state must have this optimiser's parameter groups and sizes."""
    groups = sd.get("param_groups") if isinstance(sd, dict) else None
    ok = (isinstance(groups, list) and isinstance(sd.get("state"), dict) and len(groups) == len(opt.param_groups)
          and all(isinstance(g, dict) and len(g.get("params", ())) == len(o["params"])
                  for g, o in zip(groups, opt.param_groups)))
    if not ok:
        raise CheckpointError(f"{name}: {field_name!r} does not fit this optimiser; delete it or give this run "
                              "another checkpoint path")


def check_rng(s: Any, name: str) -> None:
    try:
        ok = (isinstance(s["torch"], torch.Tensor) and s["torch"].dtype == torch.uint8
              and len(s["numpy"]["keys"]) == 624 and isinstance(s["python"]["state"], torch.Tensor)
              and len(s["python"]["state"]) == 625)
    except (KeyError, TypeError, IndexError):
        ok = False
    if not ok:
        raise CheckpointError(f"{name}: field 'rng' is not a random-number state; delete the file")


def rng_state() -> dict:
    """Every RNG's state as tensors and plain numbers, so that a checkpoint holding it loads
    with ``torch.load(weights_only=True)`` (no pickled Python objects, no code can run)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, mt, gauss = random.getstate()
    s = {"torch": torch.get_rng_state(),
         "numpy": {"keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                   "has_gauss": int(has_gauss), "cached": float(cached)},
         "python": {"version": int(version), "state": torch.tensor(mt, dtype=torch.int64),
                    "gauss": None if gauss is None else float(gauss)}}
    if torch.cuda.is_available():
        s["cuda"] = torch.cuda.get_rng_state_all()
    return s


def set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"].cpu())
    n = s["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = s["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([t.cpu() for t in s["cuda"]])


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """`torch.save` to a temp file beside `path`, then rename: never a half-written file. The
    file carries a checksum of its contents (`content_digest`), checked by `load_checkpoint`."""
    if not isinstance(state, dict) or CHECKSUM_KEY in state:
        raise ValueError(f"save_checkpoint: state must be a dict without a {CHECKSUM_KEY!r} key")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        torch.save({**state, CHECKSUM_KEY: content_digest(state)}, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_checkpoint(path: str | os.PathLike, map_location: Any = None) -> dict:
    """Load a checkpoint or cache written by `save_checkpoint` with ``weights_only=True``:
    only tensors and plain containers are rebuilt, so a crafted file cannot run code. A file
    that is cut short, torn, foreign, holds other objects, has no checksum or does not match
    it raises `CheckpointError` (nothing from it has run); delete it to start afresh."""
    import pickle
    import zipfile

    path = Path(path)
    try:
        s = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError,
            AttributeError, TypeError, OSError, KeyError, IndexError, UnicodeDecodeError) as e:
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path.name} is not a usable dlbook checkpoint (cut short, torn, foreign, or holding objects "
            f"other than tensors and plain values: {first}). Nothing from it was run. Delete it "
            f"(rm '{path.name}' in its folder) to start the run afresh.") from None
    if not isinstance(s, dict):
        raise CheckpointError(f"{path.name} holds a {type(s).__name__}, not a checkpoint dict; delete it")
    digest = s.pop(CHECKSUM_KEY, None)
    if not isinstance(digest, str):
        raise CheckpointError(f"{path.name} carries no content checksum (written by another program or an "
                              "older dlbook); delete it to start afresh")
    if content_digest(s) != digest:
        raise CheckpointError(f"{path.name} is corrupt: its contents do not match their checksum. Delete it "
                              f"(rm '{path.name}' in its folder) to start afresh.")
    return s


def copy_state(sd: Any) -> Any:
    """A deep copy of a state dict (tensors cloned), to restore should a load fail midway."""
    return copy.deepcopy(sd)


def plain(v: Any) -> Any:
    """A run key as plain data (a dataclass becomes a dict; tuples become lists), so that
    it survives a weights-only checkpoint and compares equal after loading."""
    from dataclasses import asdict, is_dataclass

    if is_dataclass(v) and not isinstance(v, type):
        v = asdict(v)
    if isinstance(v, dict):
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return repr(v)



class LoopCore:
    """What every training loop of the book shares: steps ``start+1 .. end`` (``end`` is
    ``steps``, or ``stop_at`` when a run is cut short, as a killed session would be), one call of
    ``step_fn(step) -> metrics`` per step, metrics summed over the log interval and logged as
    means every ``log_every`` steps and at ``steps`` (never at an early stop: the open interval
    stays in ``holder.pending`` for the checkpoint, so that a resumed run logs what an
    uninterrupted one would), a progress bar, ``on_log(step, means)`` after each log entry,
    ``after_step(step)`` after each step, and ``save(step)`` every ``checkpoint_every`` steps
    (and at ``end`` with ``save_at_end``); ``stop_when(step)`` ends the run early when true.

    Metric values may be Python numbers (summed as floats) or tensors (summed without a
    device sync; ``reduce(sums, count)`` turns them into means, e.g. averaged over processes).
    A mean of a key in ``finite`` (None: every key) that is NaN or infinite stops the run with
    `NonFiniteLoss` before it is logged or saved.

    The supervised `Trainer`, the GAN loop (`dlbook.gan_loop.train_gan`, whose critic and
    generator schedule is its step function) and through the Trainer the couplet tagger run on
    it."""

    def __init__(self, history: History, holder: Any, *, steps: int, log_every: int, start: int = 0,
                 stop_at: int | None = None, checkpoint_every: int = 0, save: Callable[[int], None] | None = None,
                 save_at_end: bool = False, progress: bool = True, desc: str = "train",
                 on_log: Callable[[int, dict], None] | None = None, after_step: Callable[[int], None] | None = None,
                 reduce: Callable[[dict, int], dict[str, float]] | None = None,
                 finite: Sequence[str] | None = None, what: str = "train",
                 stop_when: Callable[[int], bool] | None = None):
        self.history, self.holder = history, holder
        self.steps, self.log_every, self.start = int(steps), int(log_every), int(start)
        self.end = min(self.steps, stop_at) if stop_at is not None else self.steps
        self.checkpoint_every, self.save, self.save_at_end = int(checkpoint_every), save, save_at_end
        self.progress, self.desc, self.on_log, self.after_step = progress, desc, on_log, after_step
        self.reduce = reduce or (lambda acc, n: {k: v / n for k, v in acc.items()})
        self.finite, self.what, self.stop_when = finite, what, stop_when

    def run(self, step_fn: Callable[[int], dict[str, Any]]) -> int:
        """Run the steps; returns the last step done."""
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.steps, initial=self.start, desc=self.desc, leave=False)
        acc, n_acc = self.holder.pending
        s = self.start
        try:
            for s in range(self.start + 1, self.end + 1):
                metrics = step_fn(s)
                for k, v in metrics.items():
                    if k in acc:
                        acc[k] = acc[k] + v
                    else:
                        acc[k] = v.detach().clone() if isinstance(v, torch.Tensor) else 0.0 + v
                n_acc += 1
                if s % self.log_every == 0 or s == self.steps:
                    mean = self.reduce(acc, n_acc)
                    self._check(mean, s, n_acc)
                    self.history.log(s, mean)
                    acc, n_acc = {}, 0
                    if bar is not None:
                        bar.set_postfix({k: f"{v:.4g}" for k, v in list(mean.items())[:3]}, refresh=False)
                    if self.on_log is not None:
                        self.on_log(s, mean)
                self.holder.pending = (acc, n_acc)
                if bar is not None:
                    bar.update(1)
                if self.after_step is not None:
                    self.after_step(s)
                if self.save is not None and ((self.checkpoint_every and s % self.checkpoint_every == 0)
                                              or (self.save_at_end and s == self.end)):
                    self.save(s)
                if self.stop_when is not None and self.stop_when(s):
                    break
        finally:
            if bar is not None:
                bar.close()
        return s

    def _check(self, mean: dict[str, float], s: int, n: int) -> None:
        bad = [k for k, v in mean.items() if (self.finite is None or k in self.finite) and not math.isfinite(v)]
        if bad:
            raise NonFiniteLoss(f"{self.what}: the mean {bad[0]} of steps {s - n + 1}..{s} is {mean[bad[0]]}; "
                                "training stopped (the last checkpoint, if any, is from before). A learning rate "
                                "too large is the usual cause.")


class Trainer:
    """Runs ``loss, metrics = step_fn(model, batch)`` then backward and step.

    - `amp`: bf16 autocast; default on for CUDA, off elsewhere.
    - `checkpoint`: a file path; saved every `checkpoint_every` steps and at the end;
      ``fit`` resumes from it when it exists (model, optimiser, scheduler, RNGs, history).
    - `callbacks`: ``cb(trainer, step, metrics)`` after each logged step (e.g. a live plot).
    - `log_every`: steps between history entries (metrics are averaged in between).
    - `run_key`: plain data naming the run (its config); a checkpoint from another run, or
      one that is already past the steps asked for, is refused with a message.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, step_fn: StepFn,
                 device: torch.device | str | None = None, amp: bool | None = None,
                 scheduler: Any = None, grad_clip: float | None = None,
                 checkpoint: str | os.PathLike | None = None, checkpoint_every: int = 0,
                 callbacks: Iterable[Callable] = (), log_every: int = 1,
                 progress: bool = True, desc: str = "train", run_key: Any = None):
        from .config import require

        require("Trainer", positive={"log_every": log_every, "grad_clip": grad_clip}, whole=False)
        require("Trainer", nonneg={"checkpoint_every": checkpoint_every})
        if int(log_every) != log_every:
            raise ValueError(f"Trainer: log_every must be a whole number >= 1, got {log_every!r}")
        self.device = torch.device(device) if device is not None else default_device()
        self.model = model.to(self.device)
        self.optimizer, self.step_fn, self.scheduler = optimizer, step_fn, scheduler
        self.amp = (self.device.type == "cuda") if amp is None else bool(amp)
        self.grad_clip = grad_clip
        self.checkpoint = Path(checkpoint) if checkpoint else None
        self.checkpoint_every = int(checkpoint_every)
        self.callbacks = list(callbacks)
        self.log_every = int(log_every)
        self.progress, self.desc = progress, desc
        # What makes two runs the same run (e.g. the config as a dict): stored in the
        # checkpoint, and a checkpoint written by another run is refused instead of reused.
        self.run_key = run_key
        self.history = History()
        self.step = 0
        self.pending: tuple[dict[str, float], int] = ({}, 0)  # sums and count of the open log interval
        self.resumed_from: int | None = None

    # -- checkpoints
    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                "step": self.step, "history": self.history.state_dict(), "rng": rng_state(),
                "run_key": plain(self.run_key),
                # the metrics of a log interval still open: a resumed run logs what an
                # uninterrupted one would have
                "pending": {"sums": dict(self.pending[0]), "count": self.pending[1]}}

    def save(self, path: str | os.PathLike | None = None) -> Path:
        return save_checkpoint(path or self.checkpoint, self.state_dict())

    def load(self, path: str | os.PathLike | None = None, steps: int | None = None) -> int:
        """Resume from a checkpoint of this run; refuse one from another run (`run_key`), one
        already past `steps`, or one with a missing or unfitting field, with `CheckpointError`
        before the model, optimiser, scheduler or RNGs are touched."""
        path = Path(path or self.checkpoint)
        s = load_checkpoint(path, map_location=self.device)
        name = path.name
        require_fields(s, {"model": dict, "optimizer": dict, "scheduler": (dict, type(None)), "step": int,
                           "history": dict, "rng": dict, "run_key": None, "pending": dict}, name)
        if s["run_key"] != plain(self.run_key):
            raise CheckpointError(
                f"{name} was written by another run (its settings differ from this one's); "
                "delete it or give this run another checkpoint path")
        if s["step"] < 0 or (steps is not None and s["step"] > steps):
            raise CheckpointError(
                f"{name} is at step {s['step']}, past the {steps} steps asked for: it belongs "
                "to a longer run; delete it or give this run another checkpoint path")
        check_state(self.model, s["model"], name, "model")
        check_optimizer(self.optimizer, s["optimizer"], name, "optimizer")
        if (self.scheduler is None) != (s["scheduler"] is None):
            raise CheckpointError(f"{name}: this run {'has' if self.scheduler is not None else 'has no'} "
                                  "learning-rate schedule and the checkpoint's run did not; delete it")
        check_history(s["history"], name)
        check_rng(s["rng"], name)
        pend = s["pending"]
        if not (isinstance(pend.get("sums"), dict) and isinstance(pend.get("count"), int)
                and all(isinstance(v, float) for v in pend["sums"].values())):
            raise CheckpointError(f"{name}: field 'pending' is not an open log interval; delete the file")
        backup = (copy_state(self.model.state_dict()), copy_state(self.optimizer.state_dict()),
                  copy_state(self.scheduler.state_dict()) if self.scheduler is not None else None, rng_state())
        try:
            self.model.load_state_dict(s["model"])
            self.optimizer.load_state_dict(s["optimizer"])
            if self.scheduler is not None:
                self.scheduler.load_state_dict(s["scheduler"])
            set_rng_state(s["rng"])
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as e:
            self.model.load_state_dict(backup[0])  # leave everything as it was
            self.optimizer.load_state_dict(backup[1])
            if self.scheduler is not None:
                self.scheduler.load_state_dict(backup[2])
            set_rng_state(backup[3])
            raise CheckpointError(f"{name} does not fit this model or optimiser ({str(e)[:200]}); "
                                  "delete it or give this run another checkpoint path") from None
        self.step = s["step"]
        self.history.load_state_dict(s["history"])
        self.pending = (dict(pend["sums"]), pend["count"])
        self.resumed_from = self.step
        return self.step

    # -- the loop
    def _autocast(self):
        if self.amp:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def fit(self, loader: Iterable, steps: int, stop_at: int | None = None,
            until: Callable[["Trainer"], bool] | None = None) -> History:
        """Train until `steps` optimiser steps in total (resuming counts earlier ones).
        `stop_at` ends early (as a killed session would), after checkpointing; ``until(trainer)``,
        asked after each logged step (and its callbacks), ends the run when true."""
        from .config import require

        require("Trainer.fit", positive={"steps": steps, "stop_at": stop_at}, whole=True)
        if self.checkpoint is not None and self.checkpoint.exists() and self.step == 0:
            self.load(steps=steps)
        per_epoch = len(loader) if hasattr(loader, "__len__") else None
        if per_epoch == 0:
            raise ValueError("fit: the loader yields no batches")
        end = min(steps, stop_at) if stop_at is not None else steps
        batches = self._batches(loader, per_epoch, end)

        def one(s: int) -> dict[str, float]:
            metrics = self._one_step(_to(next(batches), self.device))
            self.step = s
            return metrics

        core = LoopCore(self.history, self, steps=steps, log_every=self.log_every, start=self.step, stop_at=stop_at,
                        checkpoint_every=self.checkpoint_every if self.checkpoint is not None else 0,
                        save=lambda s: self.save(), progress=self.progress, desc=self.desc,
                        on_log=lambda s, mean: [cb(self, s, mean) for cb in self.callbacks], finite=(),
                        what=self.desc,
                        stop_when=None if until is None else lambda s: s % self.log_every == 0 and until(self))
        self.model.train()
        core.run(one)
        if self.checkpoint is not None:
            self.save()
        self.model.eval()
        return self.history

    def _batches(self, loader: Iterable, per_epoch: int | None, end: int):
        """The batches from step ``self.step`` on: epoch ``step // per_epoch`` (``set_epoch``),
        skipping the batches of that epoch already trained on."""
        while self.step < end:
            epoch, skip = divmod(self.step, per_epoch) if per_epoch else (0, 0)
            if hasattr(loader, "set_epoch"):
                loader.set_epoch(epoch)
            for i, batch in enumerate(loader):
                if i < skip:
                    continue
                yield batch
                if self.step >= end:
                    return
            if per_epoch is None and self.step < end:
                raise ValueError("fit: the loader ran out; pass an ArrayLoader or a re-iterable loader")

    def _one_step(self, batch: Any) -> dict[str, float]:
        with self._autocast():
            out = self.step_fn(self.model, batch)
        loss, extra = (out if isinstance(out, tuple) else (out, {}))
        value = loss.detach().float().item()
        if not math.isfinite(value):
            raise NonFiniteLoss(
                f"{self.desc}: the loss is {value} at step {self.step + 1}; training stopped before this "
                "update (the model keeps the parameters of the step before). A learning rate too large, "
                "or data holding NaN or inf, are the usual causes.")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        metrics = {"loss": value}
        metrics.update(extra)
        return {k: (v.detach().float().item() if isinstance(v, torch.Tensor) else float(v))
                for k, v in metrics.items()}


def run_jobs(job: Callable[[Any], Any], items: Sequence[Any], workers: int = 1, desc: str = "runs") -> list:
    """``[job(i) for i in items]``, in ``workers`` spawned processes when > 1: independent small
    runs (seeds, sweeps) use two cores better as two one-thread processes than as one
    two-thread process. ``job`` must be a module-level function so that it can be sent to
    the workers; results come back in the order of `items`."""
    from tqdm.auto import tqdm

    from .config import require

    require("run_jobs", positive={"workers": workers}, whole=True)
    if workers <= 1 or len(items) <= 1:
        return [job(i) for i in tqdm(items, desc=desc)]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    out: list = [None] * len(items)
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as ex:
        futs = {ex.submit(job, it): i for i, it in enumerate(items)}
        for f in tqdm(as_completed(futs), total=len(futs), desc=desc):
            out[futs[f]] = f.result()
    return out
