"""Chapter 04's claims (the brief's C6-C11 and the scaling curve), decided by `dlbook.claims`.

`claims(results)` turns the numbers the notebook collected into rows; the thresholds live here,
each beside the claim of the brief it comes from, and the notebook writes none.
"""
from __future__ import annotations

import math

import numpy as np

from ..claims import Claim, construction, experiment, not_decided, report
from ..metrics import spread

CE_AT_1000 = 6.4      # C9a: the brief's bound on the test cross-entropy at step 1,000 (ln V = 8.38)
DOUBLING_RATIO = 10   # C10-double: a doubled character answered by a doubled one 10x as often as elsewhere
SPEED_RATIO = 1.0     # C11-speed: BiLSTM time per step / CNN's above 1 means the CNN is faster


def _finite(*arrays) -> bool:
    return all(np.all(np.isfinite(np.asarray(a, float))) for a in arrays)


def claims(r: dict) -> list[Claim]:
    """The chapter's rows from the notebook's `results` dict (keys documented inline)."""
    out: list[Claim] = []
    pct = lambda v: f"{100 * v:.1f}%"
    # ---- what the data and the code guarantee
    fr = r["format"]
    files_ok = all(f["trailing_space"] == f["lines"] for f in fr["files"].values())
    lines = ", ".join(f"{k} {v['lines']:,}" for k, v in fr["files"].items())
    out.append(construction("C7", f"files read ({lines}): every line ends with a space, pairs of equal length, "
                            "no character outside `vocabs`",
                            files_ok and fr["equal_length"] == fr["pairs"] and fr.get("outside_vocab", 0) == 0,
                            f"{fr['equal_length']:,} of {fr['pairs']:,} pairs equal; "
                            f"{fr.get('outside_vocab', 'n/a')} outside", of="data"))
    out.append(construction("V", "vocabulary of the post's recipe (min_count 2 over the four files)",
                            r["V"] == 4359 if r["subset"] else True, f"V = {r['V']:,}", of="data"))
    out.append(construction("C5-data", "parameters of the trained model = 257 V + 591,360",
                            r["n_params"] == r["param_formula"], f"{r['n_params']:,}"))
    out.append(construction("C6", f"decoded test lines (post's prior) with a wrong length, id 0 or x_t at t, "
                            f"of {r['n_test']:,}", r["c6_bad"] == 0, r["c6_bad"]))
    out.append(construction("C6-copy", f"decoded test lines (copy prior) with punctuation out of place or "
                            f"missing, of {r['n_test']:,}", r["copy_bad"] == 0, r["copy_bad"]))
    post, ex, cp_ = r["acc_comma"]
    out.append(construction("C6b", f"accuracy on the {r['n_comma']:,} comma lines: post's prior / exempt / copy "
                            "(the human lines answer a comma with a comma)", ex > post and cp_ > post,
                            f"{pct(post)} / {pct(ex)} / {pct(cp_)}", of="data"))
    gap = np.asarray(r["gap_exempt_post"])
    out.append(construction("C9b", "accuracy gain of the exempt over the post's prior (points, per seed) = "
                            f"punctuation in place, {100 * r['punct_share']:.2f}% of test characters",
                            bool(np.all(gap > 0)), spread(100 * gap, 2), of="data"))
    # ---- learning on the offline subset (C9)
    ce1k = r["ce_1000"]
    if ce1k is None:
        out.append(not_decided("C9a", "test cross-entropy at step 1,000", "runs stopped before step 1,000"))
    else:
        out.append(experiment("C9a", f"test cross-entropy at step 1,000 (step 0: {np.mean(r['ce_0']):.2f})", ce1k,
                              below=CE_AT_1000, unit=" nats"))
    out.append(report("C9-best", "best validation step per seed; test cross-entropy and accuracy (copy prior) "
                      "there", f"steps {', '.join(f'{s:,}' for s in r['best_step'])}; "
                      f"{spread(r['best_ce'], 3)} nats; {spread(100 * np.asarray(r['best_acc']), 3)}%"))
    sc, cross = r["scaling"], r["cross"]
    cnn, look = sc.acc("cnn"), sc.acc("lookup")
    n_top = sc.sizes[-1]
    out.append(experiment("C9-lookup", f"CNN minus lookup table, test accuracy at {n_top:,} pairs (points)",
                          100 * cnn[-1], 100 * look[-1], above=0, unit=" pt"))
    for k, n in enumerate(sc.sizes):
        out.append(report(f"S-{n}", f"{n:,} training pairs: CNN (best checkpoint) / lookup accuracy; best step",
                          f"{spread(100 * cnn[k], 3)}% / {spread(100 * look[k], 3)}%; "
                          f"{', '.join(f'{s:,}' for s in sc.best_step[n])}"))
    # ---- the scaling curve and what it predicts
    if len(sc.sizes) >= 3:
        from .training import loglinear

        sl_c, sl_l = 100 * loglinear(sc.sizes, cnn)[:, 1], 100 * loglinear(sc.sizes, look)[:, 1]
        out.append(experiment("S-slope", "gain per doubling of the data: CNN minus lookup table (points)",
                              sl_c, sl_l, above=0, unit=" pt"))
        out.append(experiment("S-predict", f"CNN minus lookup accuracy extrapolated (line in log n) to "
                              f"{cross['at']:,} pairs, the whole training split (points)",
                              100 * cross["gap_at"], above=0, unit=" pt"))
        hi = "unbounded" if not math.isfinite(cross["hi"]) else f"{cross['hi']:,.0f}"
        lo = "n/a" if not math.isfinite(cross["lo"]) else f"{cross['lo']:,.0f}"
        est = "none (the gap does not close)" if not math.isfinite(cross["n_star"]) else f"{cross['n_star']:,.0f}"
        out.append(report("S-cross", "training pairs where the fitted CNN and lookup lines cross (95 % range)",
                          f"{est} [{lo}, {hi}]"))
    else:
        out.append(not_decided("S-slope", "gain per doubling of the data: CNN minus lookup", "fewer than 3 sizes"))
    # ---- quality against the human line (C10)
    ov_c, ov_l = np.asarray(r["overlap_cnn"]), r["overlap_lookup"]
    out.append(experiment("C10", f"character overlap with the human line, all {r['n_test_all']:,} test pairs: "
                          "CNN (copy prior) minus lookup table", ov_c, np.full(len(ov_c), ov_l), above=0))
    ratio = np.asarray(r["doubling_ratio"], float)
    if _finite(ratio):
        out.append(experiment("C10-double", "doubled character answered by a doubled one: CNN's rate / its "
                              "rate elsewhere", ratio, above=DOUBLING_RATIO))
    else:
        out.append(not_decided("C10-double", "doubled character answered by a doubled one", "no doubling elsewhere"))
    sh = r["shares"]
    out.append(report("R", "lines keeping all four checkable rules: " + " / ".join(sh), " / ".join(
        pct(v["all"]) for v in sh.values())))
    # ---- the BiLSTM (C11)
    sp = np.asarray(r["speed_ratios"])
    out.append(experiment("C11-speed", f"time per step, BiLSTM / CNN ({r['speed_device']}, interleaved rounds)",
                          sp, above=SPEED_RATIO))
    c11 = r["c11"]
    for key, what in (("steps", f"at {c11['steps']:,} steps each"),
                      ("time", f"at equal wall time (CNN at {c11['cnn_steps_time']:,.0f} steps)")):
        a, b = np.asarray(c11[f"lstm_{key}"]), np.asarray(c11[f"cnn_{key}"])
        if _finite(a, b):
            out.append(experiment(f"C11-loss-{key}", f"test cross-entropy {what}: BiLSTM minus CNN",
                                  a, b, above=0, unit=" nats"))
        else:
            out.append(not_decided(f"C11-loss-{key}", f"test cross-entropy {what}: BiLSTM minus CNN",
                                   "the CNN runs stopped before that step"))
    return out
