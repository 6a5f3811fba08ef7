"""Chapter 04's settings per profile, and the post's fixed lines."""
from __future__ import annotations

from dataclasses import dataclass

from ..config import Settings, by_profile, require

# The post's monitor lines (printed after every epoch) and its showcase (five inputs).
MONITOR = ("晚风摇树树还挺", "今天天气不错", "鱼跃此时海", "只有香如故")
SHOWCASE = MONITOR + ("科学空间",)
# The post's answers, for the showcase table.
POST_ANSWERS = {"晚风摇树树还挺": "夜雨敲花花更香", "今天天气不错": "昨日人情无明", "鱼跃此时海": "鸟鸣何日人",
                "只有香如故": "不无月若新", "科学空间": "文明大中"}
UNK = "<unk>"  # id 0, as in the post: characters seen fewer than min_count times


# ----------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class Config(Settings):
    """One profile of chapter 04. Steps are optimiser updates on batches of `batch_size` pairs.

    Every run trains until its validation loss (on `val_pairs` pairs held out from the end of
    the training pairs, never the test split) has not fallen for `patience` evaluations, or
    `max_steps`, and keeps the weights of its lowest validation loss, as the post's checkpoint
    callback did (the post validated on the test split)."""

    n_train: int | None = None        # first n training pairs read (None: all the split holds)
    maxlen: int = 16                  # the post drops pairs longer than this (tokens)
    min_count: int = 2                # characters seen fewer times map to <unk> (id 0)
    dim: int = 128                    # embedding = conv width d
    blocks: int = 6
    kernel: int = 3
    dropout: float = 0.25             # after the embedding only
    batch_size: int = 64
    lr: float = 1e-3                  # Adam, Keras defaults otherwise
    max_steps: int = 4000             # ceiling per run; runs stop at their best checkpoint before it
    eval_every: int = 250             # validation and test evaluation every so many steps
    patience: int = 2                 # evaluations without a lower validation loss before a run stops
    val_pairs: int = 1648             # held out from the training pairs (the checkpoint's judge)
    seeds: int = 3                    # seeds seed, seed + 1, ... for every experiment
    sizes: tuple[int, ...] = (6250, 12500)  # smaller training sets of the scaling curve (the largest: all)
    extrapolate_to: int = 770_491     # the whole training split, where the scaling curve is read off
    workers: int = 2                  # processes for the runs (one thread each when > 1)
    threads: int = 1                  # torch threads of a single-process run
    bilstm_hidden: int = 64           # C11: 2-layer BiLSTM, 64 per direction (output width 128)
    bilstm_layers: int = 2
    bilstm_steps: int = 1000          # C11: BiLSTM steps (no early stop: compared along the curve)
    speed_steps: int = 20             # steps timed per model for the time-per-step ratio
    n_gallery: int = 24               # held-out lines in the gallery (every k-th test pair)

    SIZES = ("maxlen", "min_count", "dim", "blocks", "kernel", "batch_size", "max_steps", "eval_every",
             "patience", "seeds", "extrapolate_to", "workers", "threads", "bilstm_hidden", "bilstm_layers",
             "bilstm_steps", "speed_steps", "n_gallery")
    POSITIVE = ("lr",)
    NONNEG = ("val_pairs",)
    UNIT = ("dropout",)

    def __post_init__(self) -> None:
        super().__post_init__()
        require("Config", positive={"n_train": self.n_train}, whole=True)
        if self.kernel % 2 != 1:
            raise ValueError(f"Config: kernel must be odd (a 'same' convolution centred on t), got {self.kernel}")
        if any(int(n) != n or n < 1 for n in self.sizes) or list(self.sizes) != sorted(set(self.sizes)):
            raise ValueError(f"Config: sizes must be increasing whole numbers of pairs, got {self.sizes}")


CONFIGS = {
    # seconds: the bundled sample (800 + 200 pairs of the cleaned test split), a few steps
    "smoke": Config(max_steps=40, eval_every=20, patience=1, val_pairs=100, seeds=1, sizes=(200, 400),
                    batch_size=32, bilstm_steps=20, speed_steps=3, n_gallery=20, workers=1),
    # minutes on two cores: the first 30,000 training pairs (26,648 of at most 16 characters), of
    # which 1,648 validate, so the curve's sizes are a quarter, a half and all of 25,000; three
    # one-thread processes (three seeds at a time) keep both cores busy
    "cpu": Config(n_train=30000, workers=3),
    # one GPU: the whole training split (4,000 pairs of it validate), sizes up to all of it, the
    # box's model first; a ceiling of 30,000 steps per run (the post ran 100,000) keeps it in reach
    "full": Config(max_steps=30_000, eval_every=1000, patience=3, val_pairs=4000, sizes=(25_000, 100_000),
                   bilstm_steps=10_000, speed_steps=50, n_gallery=40, workers=1),
}


def config(profile: str | None = None) -> Config:
    """The settings of `profile` (None: the resolved profile)."""
    return by_profile(CONFIGS, profile)
