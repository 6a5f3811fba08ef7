"""Chapter 02's experiment claims: the plain per-seed numbers gathered from the experiments
(`results_of`) and their verdicts by the book's rule (`claims`). The thresholds are the brief's
(section 4 of ../shared/articles/02-lipschitz.md) unless a comment says why not."""
from __future__ import annotations

import math

import numpy as np

from .. import claims as C

DUAL_TOL = 1e-5        # L8a, L10: relative tolerance of "never exceeds" in float32
GP_OPT_MARGIN = 0.02   # L8e: |measured - predicted dual / W1| below 0.02 (the overshoot at lambda 10 is 0.07)
OFF_EXCESS = 0.05     # L8f: "fails off the segments" read as a largest gradient norm 5 % above the penalised one
STEP_RATIO = 1.2       # L11: GP / SN step time above 1.2
PRED_STEPS = 20000     # L12: the brief's regime, for the extrapolated FD
# L12r: "the samples are recognisable digits", made a number: the classifier behind the FD reads
# at least half as many of them as one digit (probability >= ClassifierFID.CONFIDENT) as it
# reads of held-out real digits. Half: a grid where most samples are readable to a person.
READABLE_SHARE = 0.5
METHODS = ("WGAN-SN", "WGAN-GP", "WGAN + projection")


def _lst(a) -> list[float]:
    return [float(v) for v in np.asarray(a, dtype=float).ravel()]


def results_of(sup: dict, lam_wd: float, lam_snr: float, crit: dict, w1: float, probe: list, l10: dict,
               t_toy: dict, t_img: dict, img, layers: list, grads: dict, cfg, profile: str) -> dict:
    """The plain numbers that `claims` decides, from the experiments' return values."""
    cc, tc = cfg.classifier, cfg.toy
    seeds = list(cc.seeds)
    per = lambda reg, lam, k: [float(sup[(reg, float(lam), s)][k]) for s in seeds]
    clf = {f"{reg}:{float(lam):g}": {k: per(reg, lam, k) for k in ("prod_frob", "prod_sigma", "val_acc", "test_acc",
                                                                     "gap", "grad_x")}
           for reg, lam in [("none" if l == 0 else "wd", l) for l in cc.wd_grid] + [("snr", l) for l in cc.snr_grid]}
    dual = {k: (h["step"].tolist(), _lst(h["dual"] / w1)) for k, h in crit.items() if isinstance(k, str)}
    gp_lams = {float(l): float((crit["gp"] if l == 10.0 else crit[("gp", float(l))])["dual"][-1] / w1)
               for l in tc.gp_lams}
    image = {"steps": int(img.runs[(METHODS[0], cfg.image.seeds[0])].steps), "seeds": list(cfg.image.seeds),
             "metric": img.metric["name"], "floor": {k: float(v) for k, v in img.metric["floor"].items()}}
    image["runs"] = {n: {"step": _lst(img.runs[(n, cfg.image.seeds[0])].curve("fd")[0]),
                         "fd": [_lst(img.runs[(n, s)].curve("fd")[1]) for s in cfg.image.seeds],
                         "kid": [_lst(img.runs[(n, s)].curve("kid")[1]) for s in cfg.image.seeds],
                         **({"confident": [_lst(img.runs[(n, s)].curve("confident")[1]) for s in cfg.image.seeds]}
                            if "confident" in img.runs[(n, cfg.image.seeds[0])].evals else {}),
                         "seconds": [float(img.runs[(n, s)].seconds) for s in cfg.image.seeds]} for n in img.names}
    return {"profile": profile, "seeds": seeds, "wd_grid": list(map(float, cc.wd_grid)),
            "snr_grid": list(map(float, cc.snr_grid)), "lam_wd": float(lam_wd), "lam_snr": float(lam_snr),
            "clf": clf, "w1": float(w1), "steps": tc.steps, "dual": dual, "gp_lams": gp_lams,
            "probe": [{k: p[k] for k in ("seed", "max_off", "max_on", "max_inter", "share_off_above")} for p in probe],
            "l10": {k: {"dual": float(h["dual"][-1] / w1), "prod_sigma": float(h["prod_sigma"].max()),
                        "max_grad": float(h["max_grad"].max())} for k, h in l10.items()},
            "l10_steps": tc.l10_steps, "times": {"toy": {k: _lst(v) for k, v in t_toy.items()},
                                                 "img": {k: _lst(v) for k, v in t_img.items()}},
            "image": image, "layers": layers, "grads": grads}


def _key(reg: str, lam: float) -> str:
    return f"{reg}:{float(lam):g}"


def _worst_step(r: dict, grid: list[float], key: str) -> list[float]:
    """Per seed: the largest log-ratio of ``key`` between consecutive lambdas of the grid."""
    keys = [_key("none" if l == 0 else "wd", l) for l in grid]
    v = np.log(np.array([r["clf"][k][key] for k in keys]))  # (lambdas, seeds)
    return np.diff(v, axis=0).max(0).tolist()


def _classifier_claims(r: dict) -> list:
    out = []
    grid, clf = r["wd_grid"], r["clf"]
    lams = ", ".join(f"{l:g}" for l in grid)
    for cid, key, what in (("L6a", "prod_frob", "∏‖W‖_F"), ("L6b", "prod_sigma", "∏‖W‖₂")):
        means = ", ".join(f"{np.mean(clf[_key('none' if l == 0 else 'wd', l)][key]):.3g}" for l in grid)
        out.append(C.experiment(cid, f"weight decay λ = {lams}: {what} falls at every step of λ (means {means}); "
                                     f"per seed, the largest log-ratio between consecutive λ",
                                _worst_step(r, grid, key), below=0.0))
    snr = [_key("snr", l) for l in r["snr_grid"]]
    for lw in [l for l in grid if l > 0]:
        kw = _key("wd", lw)
        acc_w = np.mean(clf[kw]["val_acc"])
        ok = [k for k in snr if np.mean(clf[k]["val_acc"]) >= acc_w]
        cid = f"L7a-{lw:g}"
        if not ok:
            out.append(C.not_decided(cid, f"∏‖W‖₂ at weight decay λ = {lw:g}: no SNR λ of the grid reaches its "
                                          f"validation accuracy", "no SNR λ at that accuracy"))
            continue
        ks = min(ok, key=lambda k: np.mean(clf[k]["prod_sigma"]))
        out.append(C.experiment(
            cid, f"at no lower mean validation accuracy than weight decay λ = {lw:g} ({100 * acc_w:.2f} %), SNR "
                 f"λ = {ks.split(':')[1]} ({100 * np.mean(clf[ks]['val_acc']):.2f} %) has the smaller ∏‖W‖₂ "
                 f"({np.mean(clf[ks]['prod_sigma']):.3g} vs {np.mean(clf[kw]['prod_sigma']):.3g}): log-ratio SNR / WD, "
                 f"paired by seed", np.log(clf[ks]["prod_sigma"]), np.log(clf[kw]["prod_sigma"]), below=0.0))
    kn, kw, ks = _key("none", 0), _key("wd", r["lam_wd"]), _key("snr", r["lam_snr"])
    out.append(C.experiment("L7b", f"mean ‖∇ₓ loss‖ on test inputs, SNR (λ = {r['lam_snr']:g}, chosen on validation) "
                                   f"below no penalty: difference, paired by seed",
                            clf[ks]["grad_x"], clf[kn]["grad_x"], below=0.0))
    trio = (kn, kw, ks)
    out.append(C.report("L7c", f"train − test accuracy gap (points): none / WD λ = {r['lam_wd']:g} / SNR λ = "
                               f"{r['lam_snr']:g}", " / ".join(f"{100 * np.mean(clf[k]['gap']):.2f}" for k in trio)))
    out.append(C.report("L7d", "test accuracy: none / WD / SNR",
                        " / ".join(f"{100 * np.mean(clf[k]['test_acc']):.2f} %" for k in trio)))
    return out


def _critic_claims(r: dict) -> list:
    out, d = [], r["dual"]
    ex = max(d["exact-sn"][1])
    out.append(C.construction("L8a", f"exact SN critic: dual value / W1 never above 1 in {r['steps']} steps "
                                     f"(Kantorovich–Rubinstein), largest", ex <= 1 + DUAL_TOL, f"{ex:.4f}"))
    st, du = d["sn-1step"]
    viol = [s for s, v in zip(st, du) if v > 1 + DUAL_TOL]
    out.append(C.report("L8b", "SN with one power round: last step with dual > W1", str(max(viol)) if viol else "never"))
    st, du = d["none"]
    above = [s for s, v in zip(st, du) if v > 1]
    k10 = max(1, len(du) // 10)
    out.append(C.report("L8c", "unconstrained critic: first step with dual > W1; final dual / W1; its rise over the "
                               "last 10 % of the steps", f"{above[0] if above else 'never'}; {du[-1]:.3g}; "
                                                         f"{du[-1] - du[-1 - k10]:.3g}"))
    out.append(C.report("L8d", "GP (λ = 10) two-sided / one-sided: largest and final dual / W1",
                        " / ".join(f"{max(d[k][1]):.3f}, {d[k][1][-1]:.3f}" for k in ("gp", "gp-one-sided"))))
    lams = sorted(r["gp_lams"])
    meas = [r["gp_lams"][l] for l in lams]
    pred = [1 + r["w1"] / (2 * l) for l in lams]  # (eq-02-gp-opt)
    out.append(C.equivalent(
        "L8e", f"GP critic's final dual / W1 is the soft penalty's optimum s* = 1 + W1/(2λ): measured "
               f"{' / '.join(f'{m:.3f}' for m in meas)} vs predicted {' / '.join(f'{p:.3f}' for p in pred)} at "
               f"λ = {' / '.join(f'{l:g}' for l in lams)} (the λ are the replicates): measured − predicted",
        meas, pred, margin=GP_OPT_MARGIN))
    pr = r["probe"]
    off, on = np.array([p["max_off"] for p in pr]), np.array([p["max_inter"] for p in pr])
    out.append(C.experiment("L8f", f"25 Gaussians, GP critic (λ = 10): off the interpolation segments (grid outside the "
                                   f"convex hull of the samples) ‖∇T‖ exceeds what the penalty holds on them (largest "
                                   f"{np.mean(off):.3f} vs {np.mean(on):.3f} on interpolates): relative excess, per seed",
                            off / on - 1, above=OFF_EXCESS))
    out.append(C.report("L8g", "25 Gaussians, GP: largest ‖∇T‖ inside the hull; share of the outside grid with "
                               "‖∇T‖ > 1.05 (means over seeds)",
                        f"{np.mean([p['max_on'] for p in pr]):.3f}; {np.mean([p['share_off_above'] for p in pr]):.3f}"))
    l10 = r["l10"]
    out.append(C.report("L10b", f"final dual / W1 after {r['l10_steps']} steps: (i) / (ii) / (iii) / (iv)",
                        " / ".join(f"{h['dual']:.3f}" for h in l10.values())))
    keep = {k: h["prod_sigma"] <= 1 + DUAL_TOL and h["max_grad"] <= 1 + DUAL_TOL for k, h in l10.items()}
    out.append(C.construction("L10c", "(i) reparametrisation, exact σ: ∏σ ≤ 1 and max ‖∇T‖ ≤ 1 at every step",
                              keep["reparam"], f"{l10['reparam']['prod_sigma']:.7f}"))
    out.append(C.construction("L10d", "(ii), (iii) projections with an exact σ also keep ∏σ ≤ 1 at every step "
                                      "(the brief's 'only (i)' is wrong): largest ∏σ",
                              keep["project"] and keep["project-above"],
                              f"{max(l10['project']['prod_sigma'], l10['project-above']['prod_sigma']):.7f}"))
    out.append(C.report("L10e", "(iv) the post's estimate (5 rounds from all ones): largest ∏σ over the steps",
                        l10["project-post"]["prod_sigma"], digits=4))
    for cid, key, what in (("L11a", "toy", "toy MLP"), ("L11b", "img", "DCGAN critic")):
        t = r["times"][key]
        ratio = np.array(t["GP"]) / np.array(t["SN"])
        out.append(C.experiment(cid, f"GP / SN critic step time, {what} (median {1e3 * np.median(t['GP']):.2f} ms / "
                                     f"{1e3 * np.median(t['SN']):.2f} ms): per interleaved step, {len(ratio)} steps",
                                ratio, above=STEP_RATIO))
    return out


def _slope_prediction(step: list[float], curves: list[list[float]]) -> list[float]:
    """Per seed, the FD at `PRED_STEPS` from a straight line in log FD against log step
    through the last three evaluations."""
    s = np.log(np.array(step[-3:]))
    return [float(np.exp(np.polyval(np.polyfit(s, np.log(c[-3:]), 1), math.log(PRED_STEPS)))) for c in curves]


def _image_claims(r: dict) -> list:
    im, out = r["image"], []
    runs, f = im["runs"], im["floor"]
    sn, gp, pj = (runs[m] for m in METHODS)
    last = lambda run, k: [c[-1] for c in run[k]]
    head = f"MNIST 32×32, {im['steps']} generator steps, seeds {im['seeds']}"
    out.append(C.report("L12-floor", f"{im['metric']} and KID of 1,000 held-out real images (the floor)",
                        f"FD {f['fd']:.3g}; KID {f['kid']:.3g} ± {f['kid_se']:.2g}"))
    for k, name in (("fd", im["metric"]), ("kid", "KID")):
        out.append(C.experiment(f"L12a-{k}", f"{head}: final {name}, WGAN-SN below WGAN-GP (SN {np.mean(last(sn, k)):.3g}"
                                             f", GP {np.mean(last(gp, k)):.3g}): difference, paired by seed",
                                last(sn, k), last(gp, k), below=0.0))
    if "confident" in f:
        target = READABLE_SHARE * f["confident"]
        for m, run in (("sn", sn), ("gp", gp)):
            out.append(C.experiment(f"L12r-{m}", f"{head}: share of WGAN-{m.upper()}'s samples the classifier reads as "
                                                 f"one digit (p ≥ 0.9), at least {READABLE_SHARE:g} × the real "
                                                 f"images' {f['confident']:.2f}, per seed", last(run, "confident"),
                                    above=target))
        out.append(C.report("L12r", "share read as one digit (p ≥ 0.9) at the end, mean: SN / GP / projection / real",
                            " / ".join(f"{np.mean(last(x, 'confident')):.2f}" for x in (sn, gp, pj))
                            + f" / {f['confident']:.2f}"))
    steps = sn["step"]
    pick = [i for i in range(1, len(steps))]
    curves = [("fd", "FD"), ("kid", "KID")] + [("confident", "share read as one digit")] * ("confident" in sn)
    for k, name in curves:
        txt = "; ".join(f"{int(steps[i])}: {np.mean([c[i] for c in sn[k]]):.3g} / {np.mean([c[i] for c in gp[k]]):.3g}"
                        for i in pick)
        out.append(C.report(f"L12s-{k}", f"mean {name} by generator step, SN / GP (the same runs)", txt))
    if len(steps) >= 4:
        p_sn, p_gp = _slope_prediction(steps, sn["fd"]), _slope_prediction(steps, gp["fd"])
        out.append(C.report("L12p", f"FD at {PRED_STEPS:,} steps extrapolated per seed from the last three lengths "
                                    f"(log-log line): SN / GP, mean [min, max]",
                            f"{np.mean(p_sn):.3g} [{min(p_sn):.3g}, {max(p_sn):.3g}] / "
                            f"{np.mean(p_gp):.3g} [{min(p_gp):.3g}, {max(p_gp):.3g}]"))
    out.append(C.experiment("L12b", f"training wall time for the same generator steps, each method on its recipe: "
                                    f"GP / SN per seed", np.array(gp["seconds"]) / np.array(sn["seconds"]), above=1.0))
    for k, name in (("fd", im["metric"]), ("kid", "KID")):
        out.append(C.experiment(f"L12c-{k}", f"the post's projection lags WGAN-SN on the same recipe: final {name}, "
                                             f"projection − SN ({np.mean(last(pj, k)):.3g} vs {np.mean(last(sn, k)):.3g})"
                                             f", paired by seed", last(pj, k), last(sn, k), above=0.0))
    if r["profile"] != "full":
        out.append(C.not_decided("L12-full", "CelebA 64×64, 20,000 steps, Inception FID every 1,000: SN ≤ GP",
                                 "full profile", "run the torchrun command of section 12"))
    lay = r["layers"]
    out.append(C.report("C1a", "trained SN critic, per convolution: operator norm / reshaped-kernel norm",
                        ", ".join(f"{l['operator'] / l['reshaped']:.2f}" for l in lay)))
    out.append(C.report("C1b", "trained SN critic, per convolution: PyTorch's persistent estimate σ̂ / exact σ₁ "
                               "(below 1: the kernel used has norm σ₁/σ̂ > 1)",
                        ", ".join(f"{l['sigma_hat'] / l['sigma']:.4f}" for l in lay)))
    g = r["grads"]
    out.append(C.report("C2", "trained SN critic: product bound from the operator norms; largest ‖∇ₓT‖ on real images;"
                              " after gradient ascent (quotient, ‖∇ₓT‖)",
                        f"{g['bound_op']:.3g}; {g['on_data']:.3g}; {g['quotient']:.3g}, {g['after_ascent']:.3g}"))
    return out


def claims(results: dict) -> list:
    """The chapter's experiment and report claims (L6-L12, C1, C2), decided by the book's rule."""
    return _classifier_claims(results) + _critic_claims(results) + _image_claims(results)
