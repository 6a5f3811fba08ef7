"""Chapter 03 (masking is dropout): the derivation checks that CI can afford (D1, the affine
part of D3, D4, D5, D6, D7, the D8 analytic numbers, D10), one MLM and one MAE step, the
couplet task built from the offline data, DropToken's fixed-count variant, the chapter's
claims on synthetic results, and bad inputs."""
import itertools
import math

import numpy as np
import pytest
import torch

from dlbook import data
from dlbook import masking as mk
from dlbook.config import ConfigError


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- D1, D3
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_d1_bernoulli_moments(p):
    eps = mk.bernoulli(10**6, p, gen(1))
    for n in (1, 2, 3):
        assert abs(eps.pow(n).mean().item() - p) < 2e-3
    assert abs(eps.var(unbiased=False).item() - p * (1 - p)) < 2e-3
    assert set(eps.unique().tolist()) == {0.0, 1.0}


def test_d3_affine_model_average_is_the_weight_average():
    g = gen(2)
    W = torch.randn(3, 5, generator=g, dtype=torch.float64)
    b = torch.randn(3, generator=g, dtype=torch.float64)
    x = torch.rand(5, generator=g, dtype=torch.float64)
    f = lambda z: z @ W.T + b
    avg = mk.model_average(f, x, 0.7, 10**6, g)
    assert (avg - f(x)).abs().max().item() < 3e-3


def test_d3_tanh_reference_values_and_taylor():
    t = mk.tanh_averages(3.0, 0.4, [0.9, 0.5, 0.2])
    assert t["weight"][0] == pytest.approx(0.834, abs=1e-3)
    # exact: p tanh(3 x / p) = 0.7831, 0.4918, 0.2000 (the brief's Monte-Carlo references: 0.783, 0.493, 0.199)
    assert t["model"].tolist() == pytest.approx([0.783, 0.493, 0.199], abs=2e-3)
    gap, taylor_gap = t["model"][0] - t["weight"][0], t["taylor"][0] - t["weight"][0]
    assert abs(taylor_gap - gap) / abs(gap) < 0.3


def test_dropout_refuses_a_zero_keep_probability():
    with pytest.raises(ConfigError, match="p must be"):
        mk.dropout(torch.ones(3), torch.ones(3), 0.0)


def test_dropout_needs_one_draw_per_entry():
    x = torch.ones(4, 3)
    with pytest.raises(ValueError, match="one draw per entry"):
        mk.dropout(x, torch.ones(1, 3), 0.5)  # would share a mask between rows
    with pytest.raises(ValueError, match="one draw per entry"):
        mk.dropout(x, torch.ones(2, 3), 0.5)
    assert mk.dropout(x, torch.ones(7, 4, 3), 0.5).shape == (7, 4, 3)  # leading sample dimensions
    assert mk.dropout(torch.ones(3), torch.ones(5, 3), 0.5).shape == (5, 3)


def test_renormalise_refuses_an_all_zero_mask_row():
    A = torch.full((2, 3), 1 / 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="1 row"):
        mk.renormalise(A, torch.tensor([[1.0, 0, 1], [0, 0, 0]], dtype=torch.float64))
    assert torch.allclose(mk.renormalise(A, torch.tensor([1.0, 0, 0], dtype=torch.float64)).sum(-1),
                          torch.ones(2, dtype=torch.float64))


def test_bert_corrupt_needs_room_for_random_tokens():
    ids = torch.zeros(2, 4, dtype=torch.long)
    for V in (5, 3):
        with pytest.raises(ValueError, match="vocab_size must exceed random_low"):
            mk.bert_corrupt(ids, ids >= 0, V, random_low=5)
    with pytest.raises(ConfigError, match="random_low"):
        mk.bert_corrupt(ids, ids >= 0, 10, random_low=-1)


# ----------------------------------------------------------------------------- D4, D5
def test_d4_d5_bert_expected_input_and_variance():
    g = gen(3)
    V, d, i, N = 50, 8, 7, 200_000
    E = torch.randn(V, d, generator=g, dtype=torch.float64)
    ids = torch.full((N, 1), i)
    x, sel = mk.bert_corrupt(ids, torch.ones_like(ids, dtype=torch.bool), V, mask_id=0, random_low=0, generator=g)
    inputs = E[x[:, 0]]
    ct, cm, cr = mk.correction_coefficients(0.15, (0.8, 0.1, 0.1))
    assert (ct, cm, cr) == pytest.approx((0.865, 0.12, 0.015)) and ct + cm + cr == pytest.approx(1.0)
    want = ct * E[i] + cm * E[0] + cr * E.mean(0)
    assert (inputs.mean(0) - want).abs().max().item() < 3e-3
    assert abs(sel.double().mean().item() - 0.15) < 3e-3
    corrected = mk.corrected_embeddings(E, 0, 0.15, (0.8, 0.1, 0.1))
    assert torch.allclose(corrected[i], want)
    # only the first moment: the pre-training input varies, the corrected input does not
    assert inputs.var(0).mean().item() > 0.05
    # the uncorrected input e_i is off by 0.135 e_i - 0.12 e_mask - 0.015 e_bar
    off = (E[i] - want).norm().item()
    assert off == pytest.approx((0.135 * E[i] - 0.12 * E[0] - 0.015 * E.mean(0)).norm().item())


def test_correction_coefficients_general_split():
    assert mk.correction_coefficients(0.4, (1.0, 0.0, 0.0)) == pytest.approx((0.6, 0.4, 0.0))
    with pytest.raises(ValueError, match="sum to 1"):
        mk.correction_coefficients(0.15, (0.8, 0.1, 0.2))
    with pytest.raises(ConfigError, match="select"):
        mk.correction_coefficients(1.5)


def test_mlm_loss_hand_value_and_shape_errors():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]]))
    targets = torch.tensor([0, 2])
    assert mk.mlm_loss(logits, targets).item() == pytest.approx(-(math.log(0.5) + math.log(0.1)) / 2)
    assert mk.mlm_loss(logits[1:], targets[1:]).item() == pytest.approx(-math.log(0.1))
    assert mk.mlm_loss(logits[:0], targets[:0]).item() == 0.0
    with pytest.raises(ValueError, match="do not match"):
        mk.mlm_loss(logits, targets[:1])


# ----------------------------------------------------------------------------- D6, D7
def _random_encoder(dtype, seed=4, n=32, d=32):
    torch.manual_seed(seed)
    enc = mk.Encoder(d, 3, 4, 4 * d).to(dtype)
    tok = torch.randn(2, n, d, dtype=dtype) + torch.randn(n, d, dtype=dtype)  # token + position embeddings
    keep_idx = mk.random_keep(2, n, 0.75, gen(seed))
    keep = torch.zeros(2, n, dtype=torch.bool).scatter(1, keep_idx, True)
    return enc, tok, keep_idx, keep


def _visible_diff(dtype, mask_layers=None):
    enc, tok, keep_idx, keep = _random_encoder(dtype)
    with torch.no_grad():
        sub = enc(tok.gather(1, keep_idx[..., None].expand(-1, -1, tok.shape[-1])))
        full = enc(tok, keep, mask_layers)
    return (full.gather(1, keep_idx[..., None].expand(-1, -1, tok.shape[-1])) - sub).abs().max().item()


def test_d6_mae_is_attention_column_masking():
    assert _visible_diff(torch.float64) < 1e-10
    assert _visible_diff(torch.float32) < 1e-5
    assert _visible_diff(torch.float64, mask_layers=[0]) > 1e-3  # the mask in layer 1 only


def test_d7_expectation_identity_and_model_average():
    g = gen(5)
    n, k = 12, 3
    A = (3 * torch.randn(n, n, generator=g, dtype=torch.float64)).softmax(-1)
    masks = []
    for kept in itertools.combinations(range(n), k):
        m = torch.zeros(n, dtype=torch.float64)
        m[list(kept)] = 1
        masks.append(m)
    M = torch.stack(masks)                                   # all C(12, 3) fixed-count masks
    EM = M.mean(0).expand(n, n)
    assert (mk.renormalise(A, EM) - A).abs().max().item() < 1e-12
    bern = torch.tensor(list(itertools.product([0.0, 1.0], repeat=n)), dtype=torch.float64)
    w = (0.25 ** bern.sum(1)) * (0.75 ** (n - bern.sum(1)))
    EB = (w[:, None] * bern).sum(0).expand(n, n)
    assert (mk.renormalise(A, EB) - A).abs().max().item() < 1e-12
    model_avg = mk.renormalise(A[None], M[:, None, :]).mean(0)
    assert (model_avg - A).abs().max().item() > 0.05


# ----------------------------------------------------------------------------- D8, D10
def test_d8_analytic_flops():
    f = mk.mae_flops()  # ViT-L/16 encoder, 8-block 512-wide decoder, 75 % masked
    assert f["visible"] == 49
    assert round(f["encoder_speedup"], 1) == 4.1 and round(f["total_speedup"], 1) == 3.3
    assert mk.layer_flops(2, 3) == 24 * 2 * 9 + 4 * 4 * 3
    with pytest.raises(ConfigError):
        mk.layer_flops(0, 8)


def _bert(seed=6, n=24):
    torch.manual_seed(seed)
    model = mk.TinyBert(20, n, 16, 2, 2, 32, 3).eval()
    ids = torch.randint(4, 20, (3, n))
    ids[:, 0] = mk.CLS
    pad = torch.zeros_like(ids, dtype=torch.bool)
    pad[1, 18:] = True
    ids[pad] = mk.PAD
    return model, ids, pad


def test_d10_droptoken_at_rate_zero_is_the_plain_forward_pass():
    model, ids, pad = _bert()
    ids2, pos, pad2 = mk.drop_tokens(ids, pad, 0.0, protect=ids == mk.CLS)
    assert torch.equal(ids2, ids) and torch.equal(pad2, pad) and torch.equal(pos, torch.arange(24).expand(3, 24))
    with torch.no_grad():
        assert torch.equal(model(ids2, pos, pad2), model(ids, None, pad))


def test_d10_droptoken_keeps_positions_and_differs_from_deletion():
    model, ids, pad = _bert()
    ids2, pos, pad2 = mk.drop_tokens(ids, pad, 0.5, protect=ids == mk.CLS, generator=gen(7))
    assert ids2.shape[1] < ids.shape[1] and (ids2[:, 0] == mk.CLS).all()
    for b in range(3):
        kept = pos[b][~pad2[b]]
        assert torch.equal(ids2[b][~pad2[b]], ids[b, kept]) and (kept.diff() > 0).all()
    reindexed = torch.arange(ids2.shape[1]).expand_as(ids2)
    with torch.no_grad():
        a, b_ = model.hidden(ids2, pos, pad2), model.hidden(ids2, reindexed, pad2)
    assert (a - b_)[~pad2].abs().max().item() > 1e-3


def test_droptoken_bad_inputs():
    ids = torch.zeros(2, 5, dtype=torch.long)
    with pytest.raises(ValueError, match="differ"):
        mk.drop_tokens(ids, torch.zeros(2, 4, dtype=torch.bool), 0.1)
    with pytest.raises(ValueError, match="< 1"):
        mk.drop_tokens(ids, torch.zeros(2, 5, dtype=torch.bool), 1.0)


# ----------------------------------------------------------------------------- one step each
def test_one_mlm_step_and_one_finetune_step():
    cfg = mk.config("smoke")
    torch.manual_seed(0)
    model = mk.new_bert(cfg, 30)
    vocab = mk.CharTable(list(mk.SPECIALS) + [chr(0x4e00 + i) for i in range(25)])
    pairs = [("".join(vocab.itos[5 + (i + j) % 25] for j in range(7)),
              "".join(vocab.itos[5 + (2 * i + j) % 25] for j in range(7))) for i in range(64)]
    ids, pad, pos, seg = mk.encode_pairs(pairs, vocab, cfg.line_len)
    n = 2 * cfg.line_len + 2
    assert ids.shape == (64, n) and (ids[:, 0] == mk.CLS).all() and (ids[:, 8] == mk.SEP).all()
    assert pos[0, :16].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7][:16]
    assert seg[0, :17].tolist() == [0] * 8 + [1] * 8 + [0] and pad[0, 16:].all()
    logits = model.mlm_logits(ids, None, pos, pad, seg)
    assert logits.shape == (64, n, 30)
    sel = torch.zeros_like(ids, dtype=torch.bool)
    sel[:, 3] = True
    assert torch.allclose(model.mlm_logits(ids, sel, pos, pad, seg), logits[:, 3], atol=1e-6)
    loss, _ = mk.mlm_step(cfg, 30)(model, (ids, pad, pos, seg))
    assert torch.isfinite(loss) and abs(loss.item() - math.log(30)) < 1.0
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    y = torch.randint(0, 2, (64,))
    loss2, _ = mk.finetune_step(0.25)(model, (ids, pad, pos, seg, y))
    assert torch.isfinite(loss2) and model(ids[:2], pos[:2], pad[:2], seg[:2]).shape == (2, 2)
    loss3, _ = mk.finetune_step(0.25)(model, (ids, pad, y))   # plain (ids, pad, labels) batches too
    assert torch.isfinite(loss3)


def test_droptoken_fixed_count_leaves_no_padding():
    ids = torch.randint(5, 30, (16, 65))
    ids[:, 0] = mk.CLS
    pad = torch.zeros_like(ids, dtype=torch.bool)
    for r in (0.1, 0.25, 0.5):
        a, pos, p = mk.drop_tokens(ids, pad, r, protect=ids == mk.CLS, generator=gen(1), exact=True)
        assert a.shape == (16, 64 - round(64 * r) + 1) and not p.any() and (a[:, 0] == mk.CLS).all()
        assert torch.equal(a, ids.gather(1, pos)) and (pos.diff(dim=1) > 0).all()
        b, _, q = mk.drop_tokens(ids, pad, r, protect=ids == mk.CLS, generator=gen(1))
        assert b.shape[1] >= a.shape[1] - 8      # independent drops: re-padded to the longest kept row


def test_one_mae_step():
    cfg = mk.config("smoke")
    torch.manual_seed(0)
    model = mk.new_mae(cfg)
    x = torch.rand(64, 1, 28, 28)
    loss, pred, masked = mk.mae_forward(model, x, 0.75)
    assert pred.shape == (64, 49, 16) and masked.shape == (64, 49)
    assert (masked.sum(1) == 49 - 12).all() and torch.isfinite(loss)
    loss.backward()
    assert model.features(x).shape == (64, cfg.mae_d)
    assert torch.equal(mk.unpatchify(mk.patchify(x, 4), 4), x)
    with pytest.raises(ValueError, match="do not match"):
        mk.mae_loss(pred, pred[:, :10], masked)


# ----------------------------------------------------------------------------- couplet task
def test_mismatch_gives_other_lines_of_the_same_length():
    pairs = [(f"{i:0{2 + i % 3}d}", f"{i + 100:0{2 + i % 3}d}") for i in range(200)]
    out, labels = mk.mismatch(pairs, seed=0)
    assert 70 < labels.count(0) < 130
    for (a, b), (a2, b2), y in zip(pairs, out, labels):
        assert a2 == a and len(b2) == len(b) and (b2 == b) == (y == 1)
    assert mk.mismatch(pairs, seed=0) == (out, labels)


def test_couplet_task_from_the_offline_data(offline_data):
    cfg = mk.config("smoke")
    task = mk.couplet_task(cfg)
    assert [len(task.labels[s]) for s in ("train", "validation", "test")] == [cfg.task_train, cfg.task_val,
                                                                            cfg.task_test]
    labelled = {a for s in task.pairs for a, _ in task.pairs[s]}
    assert not labelled & {a for a, _ in task.pretrain}          # no labelled first line is pre-trained on
    for s in task.pairs:
        assert 0 < task.counts(s)[0] < len(task.labels[s])
    vocab = mk.CharTable.build([x for p in task.pretrain for x in p], 50)
    assert vocab.itos[:5] == list(mk.SPECIALS) and len(vocab) == 55 and vocab.encode("\u0000") == [mk.UNK]
    bow = mk.bag_of_tokens(task.pairs["test"][:3], vocab, cfg.line_len)
    assert bow.shape == (3, 2 * len(vocab)) and set(bow.ravel().tolist()) <= {0.0, 1.0}


def test_config_refuses_bad_settings():
    with pytest.raises(ConfigError, match="task_train"):
        mk.Config(task_train=0)
    with pytest.raises(ConfigError, match="mae_mask"):
        mk.Config(mae_mask=1.5)
    with pytest.raises(ValueError, match="sum to 1"):
        mk.Config(split=(0.8, 0.1, 0.2))
    with pytest.raises(ValueError, match="heads"):
        mk.Config(d_model=30)
    assert mk.config("smoke").seeds == 1


def test_finetunes_in_worker_processes_match_the_runs_in_process(offline_data):
    """Each fine-tuning run seeds itself: two worker processes give the runs of one process."""
    from dataclasses import replace

    cfg = replace(mk.config("smoke"), seeds=2)
    setup = mk.text_setup(cfg)
    state = mk.new_bert(cfg, len(setup.vocab)).state_dict()
    one = mk.correction_runs(state, setup, cfg, scratch=False)
    two = mk.correction_runs(state, setup, replace(cfg, workers=2), scratch=False)
    for name in ("base", "corrected"):
        assert [(r.seed, r.correction) for r in two[name]] == [(s, name == "corrected") for s in range(2)]
        assert all(len(r.curve) == cfg.finetune_epochs and 0 <= r.test_last <= 1 for r in two[name])
        assert [(r.best_epoch, r.train, r.validation, r.test) for r in one[name]] == \
               [(r.best_epoch, r.train, r.validation, r.test) for r in two[name]]


# ----------------------------------------------------------------------------- the chapter's claims
def _results(shift=0.0, corr_shift=0.0, seeds=12, seed=0):
    rng = np.random.default_rng(seed)
    base = 0.70 + 0.01 * rng.standard_normal(seeds)
    noise = lambda: 0.002 * rng.standard_normal(seeds)
    rates = {r: {"test": (base - 0.1 * r + noise()).tolist(), "gap_best": (0.3 - 0.4 * r + noise()).tolist(),
                 "gap_fixed": (0.35 - 0.4 * r + noise()).tolist(), "test_last": base.tolist()}
             for r in (0.0, 0.1, 0.15, 0.25, 0.5)}
    rates["long"] = dict(rates[0.5], test=(np.array(rates[0.5]["test"]) + 0.02).tolist())
    times = lambda f: (f * (1 + 0.01 * rng.standard_normal(20))).tolist()
    return {"test": {"base": base.tolist(), "corrected": (base + corr_shift + noise()).tolist(),
                     "scratch": (base - 0.1 + noise()).tolist()},
            "baselines": {"majority": 0.5, "bag of tokens": 0.5, "aligned pairs": 0.70 + shift},
            "mlm": {"accuracy": 0.2, "unigram": 0.05, "partner": 0.08}, "sweep": rates,
            "d8": {1.0: times(4.0), 0.25: times(1.0)},
            "d9": {"repad": {r: times(1 - 0.8 * r) for r in (0.0, 0.1, 0.25, 0.5)},
                   "exact": {r: times(1 - 0.9 * r) for r in (0.0, 0.1, 0.25, 0.5)}},
            "d9_length": {0.0: 1.0, 0.1: 0.93, 0.25: 0.8, 0.5: 0.56},
            "mae": {"mse": 0.05, "mean_image": 0.065, "probe": {"trained": 0.8, "random": 0.6, "pixels": 0.88},
                    "ft": {"pre-trained": [0.9, 0.91, 0.92], "scratch": [0.5, 0.49, 0.52]}},
            "mask_rates": {}}


def test_claims_on_synthetic_results_pass_fail_and_inconclusive():
    by = {c.id: c for c in mk.claims(_results())}
    assert by["M2a"].verdict == "PASS" and by["M2b"].verdict == "PASS" and by["M2c"].verdict == "PASS"
    assert by["M2d"].verdict == "INCONCLUSIVE"                  # equal to the count model on average
    assert by["D11"].verdict == "PASS" and by["D11b"].verdict in ("INCONCLUSIVE", "FAIL")
    assert by["D11c"].verdict == "n/a (full profile)"
    assert by["D12a"].verdict == "PASS" and by["D12a'"].verdict == "PASS" and by["D12b"].verdict == "PASS"
    assert by["D12c"].verdict == "FAIL" and by["D12d"].verdict == "PASS"
    assert by["D8t"].verdict == "PASS" and by["D9b"].verdict == "PASS" and by["D9c"].verdict == "PASS"
    assert all(by[f"D9a r={r:g}"].verdict == "PASS" for r in (0.1, 0.25, 0.5))
    assert by["MAE3"].verdict == "PASS" and by["MAE2"].kind == "report" and by["D9d"].kind == "report"
    worse = {c.id: c for c in mk.claims(_results(shift=0.2, corr_shift=-0.05))}
    assert worse["M2d"].verdict == "FAIL" and worse["D11"].verdict == "FAIL" and worse["D11b"].verdict == "FAIL"
    few = {c.id: c for c in mk.claims(_results(corr_shift=0.012, seeds=3, seed=2))}
    assert few["D11"].verdict == "INCONCLUSIVE" and "runs" in few["D11"].note


def test_claims_results_gathers_the_runs():
    R = mk.FinetuneResult
    run = lambda s, r=0.0: R(False, r, s, 2, 0.9, 0.7, 0.69, [(0.8, 0.6), (0.9, 0.7)], 1.0, 0.68)
    corr = {k: [run(0), run(1)] for k in ("base", "corrected", "scratch")}
    sweep = {0.0: [run(0), run(1)], 0.5: [run(0, 0.5), run(1, 0.5)], "long": [run(0, 0.5), run(1, 0.5)]}
    res = mk.claims_results(corr, sweep, {"majority": 0.5}, {"accuracy": 0.1}, {"unigram": 0.05, "partner": 0.07},
                            {"times": {1.0: [2.0], 0.25: [1.0]}},
                            {"repad": {0.0: [1.0]}, "exact": {0.0: [1.0]}, "length": {0.0: 1.0}}, {"mse": 0.1})
    assert res["test"]["base"] == [0.69, 0.69] and res["sweep"][0.5]["gap_fixed"] == pytest.approx([0.2, 0.2])
    assert res["sweep"]["long"]["test_last"] == [0.68, 0.68] and res["mlm"]["partner"] == 0.07
