"""Chapter 01, per-profile settings: the `Config` dataclass, `CONFIGS` by profile and
`config(profile)`."""
from __future__ import annotations

from dataclasses import dataclass

from ..config import ConfigError, Settings, by_profile, require

@dataclass(frozen=True)
class Config(Settings):
    """One profile of chapter 01. The post's recipe trains `epochs` epochs per seed; the
    two-view run trains `view_epochs` epochs on two views of each image, and is compared with
    the post's recipe after `2 * view_epochs` epochs (a snapshot of the same runs): the same
    number of encoder passes (images through the encoder). The post's recipe is also evaluated
    after a quarter and a half of its epochs (`lengths`, snapshots of the same runs and seeds):
    the epoch-scaling curve of C10."""

    SIZES = ("n_test", "z_dim", "critic_width", "batch_size", "epochs", "view_epochs", "seeds", "sweep_epochs",
             "sweep_seeds", "toy_n", "toy_steps", "toy_batch", "fn_trials", "knn_k", "slider_queries")
    POSITIVE = ("width", "lr")
    NONNEG = ("alpha", "beta", "gamma", "view_jitter")
    UNIT = ("view_gray",)

    # data: CIFAR-10; `per_batch` images from the start of each of the 5 training batches
    # (None = all 50 000) and the first `n_test` test images (every test image of the source)
    per_batch: int | None = 900
    n_test: int = 900
    # encoder: channel widths of the post (64, 128, 256, 256, 256) times `width`
    width: float = 0.25
    z_dim: int = 64
    critic_width: int = 64
    # loss weights of the post (eq-01-total)
    alpha: float = 0.5
    beta: float = 1.5
    gamma: float = 0.01
    # optimisation
    batch_size: int = 64
    lr: float = 1e-3
    epochs: int = 24       # the post's recipe (one view)
    view_epochs: int = 6   # two views; compared with the post's recipe at 2 x view_epochs (equal passes)
    seeds: int = 5         # the post's recipe and the two-view run: seeds seed, seed + 1, ...
    sweep_epochs: int = 3  # length of the extra runs; the main run is also evaluated at this epoch
    sweep_seeds: int = 3   # the extra runs (gamma sweep): the first `sweep_seeds` of the seeds
    # random views (eq-01-views): crop area fraction, colour jitter strength, greyscale probability
    view_scale: tuple[float, float] = (0.35, 1.0)
    view_jitter: float = 0.4
    view_gray: float = 0.2
    # the extra runs, each with every seed: (gamma, global critic input) with the post's alpha, beta;
    # (0.01, "paper") adds the paper's global critic at the same length (G1-train)
    sweep: tuple[tuple[float, str], ...] = ((0.0, "post"), (1.0, "post"))
    # Gaussian toy (MLP critic) and false-negative simulation
    toy_n: int = 20_000
    toy_rhos: tuple[float, ...] = (0.0, 0.5, 0.8, 0.9, 0.95)  # the sweep (seed 0 only)
    toy_claim_rhos: tuple[float, ...] = (0.5, 0.8, 0.95)      # C5: every seed
    toy_steps: int = 1500
    toy_batch: int = 512
    fn_batches: tuple[int, ...] = (2, 4, 8, 16, 32, 64, 128, 256, 512)
    fn_trials: int = 2000
    knn_k: int = 10
    slider_queries: int = 8
    # CPU threads for torch, passed to dlbook.config.threads (None: $DLBOOK_THREADS, else every
    # core); the smoke profile's tiny model runs faster on one
    threads: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        where = "infomax.Config"
        require(where, positive={"threads": self.threads}, whole=True)
        require(where, positive={"per_batch": self.per_batch, "fn_batches": self.fn_batches}, whole=True)
        require(where, positive={"view_scale": self.view_scale})
        require(where, unit={"view_scale": self.view_scale, "toy_rhos": self.toy_rhos + self.toy_claim_rhos})
        if 2 * self.view_epochs > self.epochs or self.sweep_epochs > self.epochs:
            raise ConfigError(f"{where}: the post's recipe ({self.epochs} epochs) must run at least 2 x view_epochs "
                              f"({2 * self.view_epochs}), the encoder passes of the two-view run, and sweep_epochs "
                              f"({self.sweep_epochs})")
        if self.sweep_seeds > self.seeds:
            raise ConfigError(f"{where}: sweep_seeds ({self.sweep_seeds}) must not exceed seeds ({self.seeds}): "
                              "the sweep's gamma = 0.01 point is a snapshot of the main runs")
        if max(self.toy_rhos + self.toy_claim_rhos) >= 1:
            raise ConfigError(f"{where}: toy correlations must be < 1 (the mutual information is infinite at 1)")
        for g, gi in self.sweep:
            require(where, nonneg={"sweep gamma": g})
            if gi not in GLOBAL_INPUTS:
                raise ConfigError(f"{where}: sweep global input {gi!r}: choose one of {GLOBAL_INPUTS}")

    @property
    def equal_pass_epochs(self) -> int:
        """Epochs of the post's recipe with the encoder passes of the two-view run."""
        return 2 * self.view_epochs

    @property
    def lengths(self) -> tuple[int, ...]:
        """The epoch-scaling curve of C10: a quarter, a half and all of `epochs` (the lengths
        below one epoch dropped), each a snapshot of the same runs."""
        return tuple(sorted({e for e in (self.epochs // 4, self.epochs // 2, self.epochs) if e >= 1}))


GLOBAL_INPUTS = ("post", "paper")

CONFIGS = {
    # the bundled sample: 250 training images (the first 50 of each batch), 100 test images
    "smoke": Config(per_batch=50, n_test=100, width=0.125, z_dim=16, critic_width=32, batch_size=32,
                    epochs=2, view_epochs=1, seeds=2, sweep_epochs=1, sweep_seeds=2,
                    toy_n=2000, toy_rhos=(0.0, 0.5, 0.9), toy_steps=60, toy_batch=256,
                    fn_batches=(2, 8, 64), fn_trials=200, slider_queries=2, threads=1),
    # the offline subset: 4 500 training images (the first 900 of each batch) and all 900 test
    # images of it; 5 seeds x 24 epochs (scaling curve 6 / 12 / 24) is what fits the cpu budget:
    # about 2.8 s an epoch on 2 quiet cores, several times that on a shared machine
    "cpu": Config(),
    # the post's CIFAR-10 script: full widths, 256-d code, critics 256 wide, batch 64, 50 epochs
    # (the two-view run: 25 epochs, the same encoder passes); one seed fits the GPU budget
    "full": Config(per_batch=None, n_test=10_000, width=1.0, z_dim=256, critic_width=256,
                   epochs=50, view_epochs=25, seeds=1, sweep_epochs=10, sweep_seeds=1,
                   toy_steps=4000,
                   sweep=((0.0, "post"), (1.0, "post"), (0.01, "paper"))),
}


def config(profile: str | None = None) -> Config:
    """The settings of `profile` (None: the resolved profile)."""
    return by_profile(CONFIGS, profile)

