"""Chapter 06's experiment claims: the plain per-seed numbers gathered from the toy and image
experiments (`results_of`) and their verdicts by the book's rule (`claims`)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .. import claims as C

if TYPE_CHECKING:
    from ..gan_runs import ImageResult, ToyResult
    from . import Config

# The brief's thresholds (section 4 of ../shared/articles/06-gan-qp.md, from its reference runs).
MODES_BY = 2500        # Q7: all 8 modes by this generator step ...
QUALITY = 0.7          # ... and a final quality of at least this (share of points within 3 sigma of a mode)
MOST = 0.5             # Q7, Q8b: "the recipe works" = the rate of runs that pass exceeds one half
KEPT = 7               # Q8b: the brief's soft pass, at least 7 of 8 modes at the end
SCALE_MARGIN = 0.05    # Q8s: |quality(T = lam t at lam = 100) - quality(lam = 1)| below this counts as
#                        the same training (the seed-to-seed range of lam = 1 and 10 is 0.82 to 0.88)


def results_of(toy: ToyResult, img: ImageResult, cfg: Config, profile: str) -> dict:
    """The per-run numbers `claims` decides: every toy run's final modes, quality and 99 %
    slope ratio and its first step with all 8 modes (None if never); every image run's final
    classifier-FID and KID (with its jackknife error), and the metric's floor on real images."""
    toy_runs = [{"name": n, "lam": float(lam), "seed": int(s), "modes": r.at("modes"), "quality": r.at("quality"),
                 "ratio_q99": r.at("ratio_q99"), "first8": r.first_step("modes", 8)}
                for (n, lam, s), r in toy.runs.items()]
    m = img.metric
    return {
        "profile": profile, "toy_runs": toy_runs, "steps": cfg.toy.steps, "eval_every": cfg.toy.eval_every,
        "seeds": list(cfg.seeds), "collapse_seeds": list(cfg.collapse_seeds), "fail_seeds": list(cfg.fail_seeds),
        "ablation_seeds": list(cfg.ablation_seeds), "plain10_seeds": list(cfg.plain10_seeds),
        "collapse_lam": cfg.collapse_lam,
        "image": {"data": cfg.image.data, "img_size": cfg.image.img_size, "steps": cfg.image.steps,
                  "metric": m["name"], "kid_name": m["kid_name"], "accuracy": m.get("accuracy"),
                  "floor": {k: float(v) for k, v in m["floor"].items()},
                  "runs": {n: img.finals(n) for n in img.names}},
    }


def _runs(res: dict, name: str, lam: float, seeds) -> list[dict]:
    by = {(r["name"], r["lam"], r["seed"]): r for r in res["toy_runs"]}
    return [by[(name, float(lam), s)] for s in seeds if (name, float(lam), s) in by]


def _first8(r: dict, res: dict) -> float:
    """The first step with all 8 modes; a run that never gets there counts one evaluation past
    the end, which understates its delay (so a claim of slowness is conservative)."""
    return float(r["first8"]) if r["first8"] is not None else float(res["steps"] + res["eval_every"])


def _when(r: dict) -> str:
    return "never" if r["first8"] is None else f"8/8 at {r['first8']:,}"


def claims(res: dict) -> list[C.Claim]:
    """The brief's experiment claims Q7 to Q11 (section 4), decided over seeds by `dlbook.claims`."""
    out = []
    q = lambda runs: [r["quality"] for r in runs]
    # Q7: the paper's recipe on 8 Gaussians (2:1), lambda = 1 and 10, every seed of each
    rec = _runs(res, "main", 1.0, res["seeds"]) + _runs(res, "main", 10.0, res["plain10_seeds"])
    ok = sum(r["first8"] is not None and r["first8"] <= MODES_BY and r["quality"] >= QUALITY for r in rec)
    out.append(C.rate("Q7", f"8 Gaussians, 2:1, λ = 1 and 10: share of runs with all 8 modes by step {MODES_BY:,} "
                            f"and final quality ≥ {QUALITY:g} exceeds one half ({len(rec)} runs)",
                      ok, len(rec), above=MOST))
    out.append(C.experiment("Q7q", f"8 Gaussians, 2:1, λ = 1 and 10: final quality ({len(rec)} runs)", q(rec),
                            above=QUALITY))
    fail = _runs(res, "1:1", 10.0, res["fail_seeds"])
    twin = _runs(res, "main", 10.0, [r["seed"] for r in fail])
    if fail and len(twin) == len(fail):
        out.append(C.experiment("Q7-1:1", f"the 2:1 schedule matters: final quality at 2:1 minus 1:1, λ = 10, "
                                          f"paired by seed ({len(fail)} seeds)", q(twin), q(fail), above=0.0))
    # Q8: lambda = 100 is slower; the brief's soft pass; the scale taken out of the critic
    lam_c = res["collapse_lam"]
    slow, fast = _runs(res, "main", lam_c, res["seeds"]), _runs(res, "main", 10.0, res["seeds"])
    out.append(C.experiment("Q8", f"λ = {lam_c:g} reaches all 8 modes later than λ = 10: first step with 8/8, "
                                  f"paired by seed (never: counted at {res['steps'] + res['eval_every']:,})",
                            [_first8(r, res) for r in slow], [_first8(r, res) for r in fast], above=0.0,
                            unit=" steps"))
    plain, scaled = _runs(res, "main", lam_c, res["collapse_seeds"]), _runs(res, "scaled", lam_c, res["collapse_seeds"])
    out.append(C.rate("Q8b", f"λ = {lam_c:g} (2:1): share of seeds with ≥ {KEPT}/8 modes at step {res['steps']:,} "
                             f"exceeds one half", sum(r["modes"] >= KEPT for r in plain), len(plain), above=MOST,
                      what="seeds"))
    common = [s for s in res["collapse_seeds"] if s in res["seeds"]]
    if common:
        out.append(C.equivalent("Q8s", f"critic T = λt at λ = {lam_c:g} (eq-06-scaled) trains as λ = 1: final "
                                       f"quality, paired by seed ({len(common)} seeds)",
                                q(_runs(res, "scaled", lam_c, common)), q(_runs(res, "main", 1.0, common)),
                                margin=SCALE_MARGIN))
    out.append(C.report("R8", f"λ = {lam_c:g}, per seed: modes at the end and first step with 8/8, plain | T = λt",
                        "; ".join(f"s{a['seed']}: {a['modes']:.0f}/8 ({_when(a)}) | {b['modes']:.0f}/8 ({_when(b)}), "
                                  f"q = {b['quality']:.2f}" for a, b in zip(plain, scaled))))
    # Q9, Q10: the two ablations against their plain twins
    plain10 = _runs(res, "main", 10.0, res["ablation_seeds"])
    quad, bc = _runs(res, "gen-quad", 10.0, res["ablation_seeds"]), _runs(res, "broadcast", 10.0, res["ablation_seeds"])
    if quad and len(quad) == len(plain10):
        out.append(C.experiment("Q9", f"the quadratic term in the generator loss costs quality: final quality, plain "
                                      f"minus quadratic, λ = 10, paired by seed ({len(quad)} seeds)",
                                q(plain10), q(quad), above=0.0))
    if bc:
        out.append(C.rates("Q10", "per-pair penalty ends with all 8 modes in more seeds than the broadcast penalty of "
                                  "the first code (λ = 10)", sum(r["modes"] == 8 for r in plain10), len(plain10),
                           sum(r["modes"] == 8 for r in bc), len(bc), labels=("per pair", "broadcast"), what="seeds"))
        out.append(C.report("R10", "λ = 10, final quality and modes: per pair | broadcast (mean over seeds; modes per seed)",
                            f"{np.mean(q(plain10)):.3f} | {np.mean(q(bc)):.3f}; "
                            f"{[int(r['modes']) for r in plain10]} | {[int(r['modes']) for r in bc]}"))
    ratios = [r["ratio_q99"] for r in rec]
    out.append(C.experiment("Q4-toy", f"the trained unary critic breaks the binary bound: 99 % quantile of |Δ|/(λd) "
                                      f"over real-fake pairs at the end, λ = 1 and 10 ({len(ratios)} runs)",
                            ratios, above=1.0))
    out += _image_claims(res["image"])
    return out


def _image_claims(im: dict) -> list[C.Claim]:
    """Q11: GAN-QP against WGAN-GP (each on its own recipe) at equal generator steps, by the
    classifier-FID and the KID; the metric's floor on real images and GAN-QP's distance from it
    reported with their errors."""
    out, runs, fl = [], im["runs"], im["floor"]
    where = f"{im['data']} {im['img_size']}², {im['steps']:,} generator steps"
    qp = runs["GAN-QP"]
    fd = np.array(qp["fd"])
    lo, hi = C.t_interval(float(fd.mean()), float(fd.std(ddof=1) / np.sqrt(fd.size)), fd.size - 1) \
        if fd.size > 1 else (np.nan, np.nan)
    out.append(C.report("R11-floor", f"{im['metric']} and {im['kid_name']} of {fl['n']:.0f} held-out real images "
                                     f"(the floor; KID ± its jackknife error)",
                        f"FD {fl['fd']:.3g}; KID {fl['kid']:.2g} ± {fl['kid_se']:.2g}"))
    out.append(C.report("R11-qp", f"GAN-QP at the end, {where}: FD mean [95 % t-interval over {fd.size} seeds], "
                                  f"times the floor; KID per seed ± jackknife error",
                        f"FD {fd.mean():.3g} [{lo:.3g}, {hi:.3g}], {fd.mean() / fl['fd']:.0f}× the floor; KID "
                        + ", ".join(f"{k:.3g} ± {e:.2g}" for k, e in zip(qp["kid"], qp["kid_se"]))))
    if "confident" in qp and "confident" in fl:
        out.append(C.report("R11-read", f"share of samples the classifier reads as one class (p ≥ 0.9) at the end, "
                                        f"{where}, mean over seeds: " + " / ".join(runs) + " / held-out real images",
                            " / ".join(f"{np.mean(r['confident']):.2f}" for r in runs.values())
                            + f" / {fl['confident']:.2f}"))
    faces = [] if im["data"] == "celeba" else [C.not_decided(
        "Q11-faces", "faces (CelebA 64²): GAN-QP's FD below WGAN-GP's, SGAN-SN reported, equal generator steps",
        "full profile")]
    if "WGAN-GP" not in runs:
        return out + [C.not_decided("Q11", f"GAN-QP below WGAN-GP at equal generator steps ({where})",
                                    "WGAN-GP not run")] + faces
    gp = runs["WGAN-GP"]
    for cid, key, name in (("Q11", "fd", im["metric"]), ("Q11k", "kid", im["kid_name"])):
        out.append(C.experiment(cid, f"GAN-QP's final {name} is below WGAN-GP's (own recipe), {where}: GAN-QP minus "
                                     f"WGAN-GP over seeds (Welch: the runs share only the generator's initial weights)",
                                qp[key], gp[key], below=0.0, paired=False))
    out.append(C.report("R11-gp", f"WGAN-GP at the end, {where}: FD per seed; KID per seed ± jackknife error",
                        ", ".join(f"{v:.3g}" for v in gp["fd"]) + "; KID "
                        + ", ".join(f"{k:.3g} ± {e:.2g}" for k, e in zip(gp["kid"], gp["kid_se"]))))
    if "SGAN-SN" in runs:
        sn = runs["SGAN-SN"]
        out.append(C.report("R11-sn", f"SGAN-SN at the end, {where}: FD per seed; KID per seed",
                            ", ".join(f"{v:.3g}" for v in sn["fd"]) + "; KID " + ", ".join(f"{k:.3g}" for k in sn["kid"])))
    return out + faces
