"""Image metrics for generated images, beside `dlbook.metrics`: the **classifier-FID** (the
Fréchet distance between the penultimate-layer features of a classifier trained once per
dataset, seeded, cached under a key of its recipe, for generated images and for the complete
test split), KID (unbiased, with a jackknife standard error) beside it, and a floor measured on
held-out real images. It is not the Inception FID of the literature; `InceptionFID` uses
pytorch-fid's Inception network where it can be loaded.

The classifier cache carries a checksum of its contents: a cut, corrupt or foreign file is
removed and the classifier retrained (seeded: the same classifier again), with a warning.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .config import Settings, require
from .gan_loop import stream_seed
from .train import CheckpointError, check_state, load_checkpoint, require_fields, save_checkpoint


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
    CONFIDENT = 0.9  # "a recognisable image": the classifier gives one class at least this probability

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
        self.floor = dict(self._score(*self._forward(held[:n_floor], uint8=True)), n=n_floor)
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

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or tuple(x.shape[1:]) != (self.net.body[0].in_channels, self.img_size, self.img_size):
            raise ValueError(f"{self.name}: expected images (N, {self.net.body[0].in_channels}, {self.img_size}, "
                             f"{self.img_size}) in [-1, 1], got {tuple(x.shape)}")

    def _score(self, feats: torch.Tensor, logits: torch.Tensor) -> dict[str, float]:
        """FD and KID of the features; on labelled data also ``confident``: the share of images
        the classifier assigns one class with probability >= `CONFIDENT` (readable as a digit,
        a garment, ...), which FD and KID, distances between whole sets, do not say."""
        out = self.score_features(feats.numpy())
        if self.labelled:
            out["confident"] = float((logits.softmax(1).amax(1) >= self.CONFIDENT).double().mean())
        return out

    def features(self, x: torch.Tensor) -> np.ndarray:
        self._check(x)
        return self._forward(x)[0].numpy()

    def __call__(self, x_fake: torch.Tensor) -> dict[str, float]:
        self._check(x_fake)
        return self._score(*self._forward(x_fake))

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
                               f"{self.floor['fd']:.3g} (KID {self.floor['kid']:.2g} ± {self.floor['kid_se']:.2g})")}


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
