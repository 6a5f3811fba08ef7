"""Chapter 03 settings: the `Config` of every profile and the special tokens."""
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


SPECIALS = ("<pad>", "<unk>", "<cls>", "<mask>", "<sep>")
PAD, UNK, CLS, MASK, SEP = range(5)


# ----------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class Config(Settings):
    """Everything one profile of chapter 03 runs. Lengths and sizes are in tokens."""

    # the couplet task and the tiny BERT
    task_train: int = 2000            # labelled couplets for fine-tuning (the end of the training file) ...
    task_val: int = 1000              # ... and for choosing the epoch
    task_test: int = 4000             # the corpus' test file (all of it)
    vocab_chars: int = 4000           # most frequent characters of the pre-training text (others: [UNK])
    line_len: int = 16                # characters kept per line; an example is 2 line_len + 2 tokens
    d_model: int = 64
    depth: int = 2
    heads: int = 4
    ffn: int = 256
    pretrain_steps: int = 1000
    pretrain_batch: int = 64
    pretrain_lr: float = 2e-3
    select: float = 0.15              # BERT: 15 % of the tokens are selected ...
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)   # ... and become [MASK] / stay / random
    finetune_epochs: int = 8
    finetune_batch: int = 32
    finetune_lr: float = 1e-3
    eval_train: int = 1000            # training examples whose accuracy is tracked every epoch (the gap)
    seeds: int = 5                    # fine-tuning seeds of D11 (one pre-trained model)
    sweep_seeds: int = 3              # fine-tuning seeds per DropToken rate (D12)
    workers: int = 1                  # fine-tuning runs side by side (processes)
    drop_rates: tuple[float, ...] = (0.0, 0.1, 0.15, 0.25, 0.5)
    mask_rates: tuple[float, ...] = ()  # extra pre-training selection rates for D11 (full profile)
    local_init: bool = True           # attention that starts local (see TinyBert)
    # timing (D8, D9): the brief's small encoder
    time_d: int = 128
    time_depth: int = 4
    time_n: int = 256
    time_batch: int = 16
    time_steps: int = 60
    time_warmup: int = 3
    # the tiny MAE on MNIST
    mae_train: int = 10000
    mae_test: int = 2000
    patch: int = 4
    mae_d: int = 64
    mae_depth: int = 4
    mae_heads: int = 4
    dec_d: int = 32
    dec_depth: int = 1
    mae_mask: float = 0.75
    mae_epochs: int = 15
    mae_batch: int = 128
    mae_lr: float = 1.5e-3
    ft_epochs: int = 2
    ft_seeds: int = 3
    ft_lr: float = 1e-3
    # CPU threads for torch (None: dlbook.config.threads' policy, every core). Models this small
    # run faster on one thread than on two that wait for each other.
    threads: int | None = None

    SIZES = ("task_train", "task_val", "task_test", "vocab_chars", "line_len", "d_model", "depth", "heads", "ffn", "pretrain_steps", "pretrain_batch",
             "finetune_epochs", "finetune_batch", "eval_train", "seeds", "sweep_seeds", "workers", "time_d", "time_depth", "time_n", "time_batch",
             "time_steps", "time_warmup", "mae_train", "mae_test", "patch", "mae_d", "mae_depth", "mae_heads",
             "dec_d", "dec_depth", "mae_epochs", "mae_batch", "ft_epochs", "ft_seeds", "threads")
    POSITIVE = ("pretrain_lr", "finetune_lr", "mae_lr", "ft_lr")
    UNIT = ("select", "split", "drop_rates", "mask_rates", "mae_mask")

    def __post_init__(self) -> None:
        super().__post_init__()
        if abs(sum(self.split) - 1) > 1e-9 or len(self.split) != 3:
            raise ValueError(f"Config: split is (mask, keep, random) and must sum to 1, got {self.split}")
        for name, d, h in (("d_model", self.d_model, self.heads), ("time_d", self.time_d, self.heads),
                           ("mae_d", self.mae_d, self.mae_heads), ("dec_d", self.dec_d, self.mae_heads)):
            if d % h:
                raise ValueError(f"Config: {name}={d} is not divisible by the number of heads {h}")
        if 28 % self.patch:
            raise ValueError(f"Config: patch={self.patch} must divide the 28-pixel MNIST side")
        if not 0 < self.mae_mask < 1:
            raise ValueError(f"Config: mae_mask must be in (0, 1), got {self.mae_mask}")
        if any(not 0 <= r < 1 for r in self.drop_rates):
            raise ValueError(f"Config: drop rates must be in [0, 1), got {self.drop_rates}")


CONFIGS = {
    # seconds, from what the package ships: a few steps of every code path
    "smoke": Config(task_train=200, task_val=100, task_test=200, vocab_chars=300, line_len=8, d_model=32, depth=1, heads=2, ffn=64, pretrain_steps=6,
                    pretrain_batch=16, finetune_epochs=1, finetune_batch=16, seeds=1, sweep_seeds=1,
                    drop_rates=(0.0, 0.5),
                    time_d=32, time_depth=1, time_n=64, time_batch=4, time_steps=3, time_warmup=1,
                    mae_train=250, mae_test=100, mae_d=32, mae_depth=1, mae_heads=2, dec_d=16,
                    mae_epochs=1, mae_batch=50, ft_epochs=1, ft_seeds=1, threads=1),
    # about 25 minutes on two idle CPU cores; fine-tuning runs two at a time, one thread each,
    # and the notebook's own process uses one thread (two would wait for each other on a shared
    # machine). Twelve paired seeds for D11 (eight gave a 1.8-point MDE against a 1.5-point
    # margin) and ten per DropToken rate for D12, all five rates. Timings interleave 20 rounds.
    "cpu": Config(workers=2, threads=1, pretrain_steps=1000, finetune_epochs=5, seeds=12, sweep_seeds=10,
                  time_steps=20, mae_epochs=10),
    # one GPU: a larger encoder and longer schedules on the same data, plus D11's masking rates.
    # Not measured here (no GPU was available when the chapter was recorded).
    "full": Config(d_model=256, depth=4, heads=8, ffn=1024, pretrain_steps=20000,
                   pretrain_batch=128, pretrain_lr=5e-4, finetune_epochs=10, finetune_lr=2e-4, seeds=20, sweep_seeds=10,
                   mask_rates=(0.4, 0.6), time_steps=60, mae_train=60000, mae_test=10000, mae_d=192,
                   mae_depth=6, mae_heads=4, dec_d=128, dec_depth=2, mae_epochs=60, mae_batch=256,
                   mae_lr=1.5e-3, ft_epochs=5, ft_seeds=3, ft_lr=5e-4),
}


def config(profile: str | None = None) -> Config:
    """The settings of `profile` (None: the resolved profile)."""
    return by_profile(CONFIGS, profile)
