"""Chapter 02's settings per profile and the image loss table (L12)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from .. import gan
from ..config import Settings, by_profile
from ..gan_runs import ImageConfig, Method
from .classifier import ClassifierConfig
from .critics import ToyCriticConfig
from .norms import ProjectedWGAN


@dataclass(frozen=True)
class Config(Settings):
    """Chapter 02's settings: the classifier experiment (L6, L7), the critics on fixed 2-D
    samples (L8, L10, the 25-Gaussians probe), the timing (``timing_steps`` after
    ``timing_warmup``, L11), the image experiment (L12) and ``workers`` processes for the small
    runs; ``ascent_steps`` of gradient ascent on the trained SN critic (C2). Each image method runs on its own published recipe (critic updates per generator
    update, Adam lr, betas): WGAN-SN as Miyato et al.'s standard setting (``sn_*``), WGAN-GP as
    Gulrajani et al. (``gp_*``, penalty weight ``lam``, a ``gp_norm`` critic)."""

    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    toy: ToyCriticConfig = field(default_factory=ToyCriticConfig)
    image: ImageConfig = field(default_factory=ImageConfig)
    lam: float = 10.0
    gp_norm: str = "ln"
    sn_n_critic: int = 1
    sn_lr: float = 2e-4
    sn_betas: tuple[float, float] = (0.5, 0.999)
    gp_n_critic: int = 5
    gp_lr: float = 1e-4
    gp_betas: tuple[float, float] = (0.5, 0.9)
    timing_steps: int = 50
    timing_warmup: int = 5
    ascent_steps: int = 200
    workers: int = 2

    SIZES = ("sn_n_critic", "gp_n_critic", "timing_steps", "ascent_steps", "workers")
    POSITIVE = ("lam", "sn_lr", "gp_lr")
    NONNEG = ("timing_warmup",)
    UNIT = ("sn_betas", "gp_betas")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.gp_norm not in gan.CRITIC_NORMS:
            raise ValueError(f"Config: gp_norm must be one of {gan.CRITIC_NORMS}, got {self.gp_norm!r}")


CONFIGS = {
    "smoke": Config(
        ClassifierConfig(n_train=200, n_val=50, n_test=100, width=32, epochs=2, batch=32, wd_grid=(0.0, 1e-2),
                         snr_grid=(1e-2,), seeds=(0,)),
        ToyCriticConfig(n=64, width=16, steps=40, l10_steps=20, every=5, field_n=31, probe_steps=20,
                        probe_seeds=(0,), probe_n=21),
        replace(ImageConfig().smoke(), steps=4), timing_steps=5, timing_warmup=1, ascent_steps=5, workers=1),
    # MNIST: 5,000 training images for the classifiers; the image GAN at the book's MNIST 32x32
    # setting with a smaller pair (8 to 32 channels: the book's 16 to 64 made WGAN-SN's samples
    # collapse onto a few shapes by step 3,000), three seeds, two one-thread processes.
    "cpu": Config(ClassifierConfig(epochs=20), ToyCriticConfig(),
                  ImageConfig(base=8, max_ch=32, steps=3000, eval_every=500, seeds=(0, 1, 2), threads=1,
                              workers=2)),
    # The post's data and nets (brief 3.1): CelebA 64x64, z 100, 5x5 kernels, 64 to 512 channels,
    # batch 64, >= 20,000 generator steps, Inception FID every 1,000 steps; each method on its
    # own recipe as under cpu.
    "full": Config(
        ClassifierConfig(n_train=12000, n_val=2000, epochs=60),
        ToyCriticConfig(),
        ImageConfig(data="celeba", img_size=64, fit="resize", n_train=None, z_dim=100, base=64, max_ch=512,
                    kernel=5, batch=64, steps=20000, eval_every=1000, n_eval=10000, metric="inception",
                    seeds=(0, 1)),
        workers=1),
}


def config(profile: str | None = None) -> Config:
    return by_profile(CONFIGS, profile)


def image_table(cfg: Config) -> dict[str, Method]:
    """L12, each row on its published recipe: WGAN-SN (the toolkit's SN critic, the plain WGAN
    loss) at Miyato et al.'s standard setting, WGAN-GP (``cfg.lam`` on interpolates, a
    ``cfg.gp_norm`` critic) at Gulrajani et al.'s, and the post's pitfall (a plain critic
    projected after each update) on SN's recipe, so that only the placement of the
    normalisation differs from WGAN-SN."""
    sn = dict(n_critic=cfg.sn_n_critic, lr=cfg.sn_lr, betas=cfg.sn_betas)
    return {"WGAN-SN": Method(gan.WGAN(), critic_norm="sn", **sn),
            "WGAN-GP": Method(gan.WGANGP(cfg.lam, "interp"), cfg.gp_n_critic, cfg.gp_norm, cfg.gp_lr, cfg.gp_betas),
            "WGAN + projection": Method(ProjectedWGAN("always"), critic_norm="none", **sn)}
