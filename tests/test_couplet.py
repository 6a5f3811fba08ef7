"""Tests of dlbook.couplet (chapter 04) and of the couplet corpus in the data registry: the
claims C1-C8 of the chapter on small models, the loss and the decoding prior against hand
values, the data verification (git blob ids, archive members, corrupt copies), a short
training run, and the live text box driven in a Jupyter kernel."""
import hashlib
import io
import math
import os
import shutil
import subprocess
import tarfile
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from dlbook import couplet as cp
from dlbook import data
from dlbook.config import ConfigError

MIRROR = Path(os.environ.get("DLBOOK_MIRROR", "/nonexistent").split(os.pathsep)[0])
HAVE_MIRROR = (MIRROR / "couplet" / "test" / "in.txt").is_file()
needs_mirror = pytest.mark.skipif(not HAVE_MIRROR, reason="needs the offline couplet copies ($DLBOOK_MIRROR)")


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(V=50, **kw):
    torch.manual_seed(0)
    return cp.CNNTagger(V, dim=kw.pop("dim", 16), **kw).eval()


# ---------------------------------------------------------------- C1-C5: the model
def test_c1_length_is_preserved_for_every_length():
    m = tiny()
    for n in range(1, 41):
        assert m(torch.randint(0, 50, (3, n))).shape == (3, n, 50)


@pytest.mark.parametrize("dilations, R", [(None, 6), ((1, 2, 4, 1, 2, 4), 14)])
def test_c2_receptive_field_is_exactly_plus_minus_R(dilations, R):
    m = tiny(dilations=dilations)
    assert m.receptive_field == R
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 50, (20,), generator=g)
    for s in range(20):
        got = cp.changed_positions(m, ids, s, int(ids[s]) % 49 + 1)
        assert got == [t for t in range(20) if abs(t - s) <= R], s


def test_c3_gate_algebra_and_zero_weights_halve_the_input():
    g = torch.Generator().manual_seed(0)
    x, gg, h = (torch.randn(4, 8, 11, generator=g) for _ in range(3))
    out = cp.gated_residual(x, gg, h)
    alt = x * torch.sigmoid(gg) + h * (1 - torch.sigmoid(gg))
    assert (out - alt).abs().max() < 1e-6
    blk = cp.GatedBlock(8)
    with torch.no_grad():
        blk.conv.weight.zero_()
        blk.conv.bias.zero_()
    assert torch.equal(blk(x), x / 2)


def test_c4_greedy_is_map_and_a_crf_breaks_it():
    m = tiny(V=5, dim=4, blocks=1)
    x = torch.tensor([[1, 2, 3]])
    logp = m(x)[0].log_softmax(-1)
    best, _ = cp.enumerate_map(logp)
    assert tuple(logp.argmax(-1).tolist()) == best
    # A transition matrix that forbids the greedy path's first step makes greedy suboptimal
    A = torch.zeros(5, 5)
    A[best[0], best[1]] = -100.0
    crf_best, _ = cp.enumerate_map(logp, A)
    assert crf_best != best
    with pytest.raises(ValueError, match="too many"):
        cp.enumerate_map(torch.zeros(9, 10))


def test_c5_parameter_count():
    assert cp.param_formula(4359) == 257 * 4359 + 591_360 == 1_711_623
    for V in (50, 4359):
        assert cp.n_params(cp.CNNTagger(V)) == 257 * V + 591_360
    assert cp.n_params(cp.CNNTagger(100, dim=16, blocks=2, kernel=5)) == cp.param_formula(100, 16, 2, 5)


def test_keras_init_and_bilstm_shapes():
    m = cp.CNNTagger(300).requires_grad_(False)
    assert float(m.embed.weight.abs().max()) <= 0.05 and float(m.out.bias.abs().max()) == 0.0
    bound = math.sqrt(6 / (3 * 128 + 3 * 256))  # Glorot uniform with the kernel in both fans
    assert float(m.blocks[0].conv.weight.abs().max()) <= bound
    b = cp.BiLSTMTagger(300).requires_grad_(False)
    assert b(torch.randint(0, 300, (2, 9))).shape == (2, 9, 300)
    assert float(b.rnn.bias_ih_l0[64:128].min()) == 1.0  # forget gate bias


# ---------------------------------------------------------------- loss and decoding
def test_tagging_nll_hand_values_and_shape_errors():
    logits = torch.zeros(2, 3, 7)
    assert cp.tagging_nll(logits, torch.zeros(2, 3, dtype=torch.long)).item() == pytest.approx(math.log(7))
    logits[0, 0, 2] = 5.0
    want = (5 * math.log(7) + (math.log(6 + math.exp(5)) - 5)) / 6
    y = torch.zeros(2, 3, dtype=torch.long)
    y[0, 0] = 2
    assert cp.tagging_nll(logits, y).item() == pytest.approx(want, rel=1e-6)
    with pytest.raises(ValueError, match="must agree"):
        cp.tagging_nll(logits, torch.zeros(2, 4, dtype=torch.long))


def test_prior_masks_hand_example():
    # vocabulary: 0 <unk>, 1 '，', 2..4 characters; x = [2, 1, 0]
    x = torch.tensor([[2, 1, 0]])
    post = cp.prior_mask(x, 5, "post", punct_ids=[1])[0]
    ex = cp.prior_mask(x, 5, "exempt", punct_ids=[1])[0]
    none = cp.prior_mask(x, 5, "none")[0]
    assert post[:, 0].all() and ex[:, 0].all() and none[:, 0].all()
    assert post[0, 2] and post[1, 1] and ex[0, 2] and not ex[1, 1]
    assert int(post.sum()) == 5 and int(ex.sum()) == 4 and int(none.sum()) == 3
    logits = torch.zeros(1, 3, 5)
    logits[0, :, 0] = 9      # unk is the favourite everywhere
    logits[0, 0, 2] = 8      # the input character at 0
    logits[0, 1, 1] = 8      # the comma at 1
    logits[0, :, 3] = 1
    assert cp.decode(logits, x, "post", [1]).tolist() == [[3, 3, 3]]
    assert cp.decode(logits, x, "exempt", [1]).tolist() == [[3, 1, 3]]
    with pytest.raises(ValueError, match="mode"):
        cp.prior_mask(x, 5, "strict")


def test_c6_decoding_prior_on_every_sample_line(monkeypatch):
    monkeypatch.setenv("DLBOOK_PROFILE", "smoke")
    pairs = data.load_text("couplet", "train").records + data.load_text("couplet", "test").records
    vocab = cp.build_vocab((s for p in pairs for s in p), 2)
    m = tiny(V=len(vocab))
    uppers = [u for u, _ in pairs]
    for u, lo in zip(uppers, cp.answer_many(m, vocab, uppers, "post")):
        ids = vocab.encode(lo)
        assert len(lo) == len(u) and 0 not in ids
        assert all(a != b for a, b in zip(vocab.encode(u), ids))


def test_answer_top_candidates_and_normalise():
    vocab = data.CharVocab(list("天地风雨，"), specials=(cp.UNK,))
    m = tiny(V=len(vocab))
    lower, cands = cp.answer(m, vocab, "天风，", top=3)
    assert len(lower) == 3 and len(cands) == 3 and all(len(c) == 3 for c in cands)
    assert all(abs(sum(p for _, p in c)) <= 1.0 + 1e-6 for c in cands)
    assert lower[0] != "天" and cands[0][0][0] == lower[0]
    assert cp.normalise(" 天 风, ") == "天风，"


# ---------------------------------------------------------------- baselines and rules
def test_lookup_baseline_hand_example():
    lb = cp.LookupBaseline([("天风", "地雨"), ("天，", "海，"), ("天雪", "地雪"), ("雪天", "雪地")])
    assert lb("天，") == "地，"          # 地 twice, 海 once; the comma copies through
    assert "雪" not in lb.table          # 雪 only ever answers 雪, which is not allowed
    assert lb("云") == lb.MISSING
    assert lb.accuracy([("天云", "地云")]) == 0.5


def test_rules_hand_examples():
    assert cp.rules("晚风摇树树还挺", "晨露润花花更红") == dict(length=True, no_echo=True, punctuation=True, repetition=True)
    r = cp.rules("晚风摇树树还挺", "晨露润花叶更红")
    assert r["repetition"] is False and r["no_echo"] is True
    assert cp.rules("春，风", "秋，雨")["punctuation"] and not cp.rules("春，风", "秋雨雪")["punctuation"]
    assert not cp.rules("春风", "春雨")["no_echo"] and cp.rules("春，", "秋，")["no_echo"]
    assert not cp.rules("春风", "秋")["length"]
    s = cp.rule_shares(["春风", "春风"], ["秋雨", "春雨"])
    assert s["no_echo"] == 0.5 and s["all"] == 0.5
    d = cp.doubling(["树树还", "风雨"], ["花花更", "云云"])
    assert d["doubled"] == 1.0 and d["other"] == 0.5 and d["n_doubled"] == 1


# ---------------------------------------------------------------- C8: batches
def test_c8_bucket_batches_have_one_length_and_follow_the_bucket_sizes():
    rng = np.random.default_rng(0)
    sizes = {5: 300, 7: 1400, 9: 120, 12: 500, 16: 30}
    buckets = {n: (rng.integers(1, 50, (k, n)), rng.integers(1, 50, (k, n))) for n, k in sizes.items()}
    bb = cp.BucketBatches(buckets, 64, steps_per_epoch=10_000, seed=3)
    counts = dict.fromkeys(sizes, 0)
    for x, y in bb:
        assert x.shape == y.shape and x.shape[0] == 64 and x.shape[1] in sizes
        counts[x.shape[1]] += 1
    assert cp.total_variation(list(counts.values()), list(sizes.values())) < 0.02
    bb.set_epoch(1)
    a = next(iter(bb))[0]
    bb.set_epoch(1)
    assert torch.equal(a, next(iter(bb))[0])
    with pytest.raises(ValueError, match="no pairs"):
        cp.BucketBatches({}, 4)


# ---------------------------------------------------------------- configs and bad input
def test_configs_and_clear_errors():
    assert set(cp.CONFIGS) == {"smoke", "cpu", "full"}
    with pytest.raises(ConfigError):
        replace(cp.config("cpu"), lr=-1.0)
    with pytest.raises(ConfigError):
        replace(cp.config("cpu"), batch_size=0)
    with pytest.raises(ValueError, match="odd"):
        replace(cp.config("cpu"), kernel=4)
    m = tiny()
    with pytest.raises(ValueError, match=r"\[0, 50\)"):
        m(torch.tensor([[1, 50]]))
    with pytest.raises(ValueError, match="integer tensor"):
        m(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="dilations"):
        cp.CNNTagger(10, blocks=3, dilations=(1, 2))
    with pytest.raises(ValueError, match="arch"):
        cp.make_model("transformer", 10, cp.config("smoke"))
    with pytest.raises(ValueError, match="differ in length"):
        cp.encode_buckets([("天地", "风")], data.CharVocab(list("天地风"), specials=(cp.UNK,)))


# ---------------------------------------------------------------- training
def test_short_training_run_lowers_the_test_loss(monkeypatch):
    monkeypatch.setenv("DLBOOK_PROFILE", "smoke")
    cfg = replace(cp.config("smoke"), dim=32, blocks=2, max_steps=30, eval_every=15, batch_size=32, lr=1e-2,
                  val_pairs=0)
    d = cp.prepare(cfg)
    assert d.source.endswith("bundled sample") and len(d.train_pairs) == 697
    r = cp.train_tagger(cfg, d, seed=0, device="cpu", progress=False)
    ce = [t["ce"] for t in r.test]
    assert r.steps == [0, 15, 30] and all(math.isfinite(c) for c in ce)
    assert ce[0] == pytest.approx(math.log(len(d.vocab)), abs=0.05) and ce[-1] < ce[0] - 0.3
    assert set(r.monitor) == set(cp.MONITOR) and all(len(v) == 3 for v in r.monitor.values())
    m = cp.load_model(cfg, len(d.vocab), r.state, device="cpu")
    assert cp.evaluate(m, d.test, d.punct_ids)["ce"] == pytest.approx(ce[-1], rel=1e-5)
    # the validation block keeps the best weights; the BiLSTM trains through the same loop
    cfg_v = replace(cfg, val_pairs=100, max_steps=15)
    r2 = cp.train_tagger(cfg_v, cp.prepare(cfg_v), seed=0, arch="bilstm", device="cpu", progress=False)
    assert r2.best_step in r2.steps and len(r2.val_ce) == len(r2.steps)


# ---------------------------------------------------------------- the live text box
def _tiny_vocab_model():
    vocab = data.CharVocab(list("晚风摇树还挺天地，"), specials=(cp.UNK,))
    return vocab, tiny(V=len(vocab))


def test_live_box_answers_and_explains_unknown_characters():
    vocab, m = _tiny_vocab_model()
    box = cp.live_box(m, vocab)
    text, out = box.children
    assert "<table" in out.value and "晚" in out.value
    text.value = "天地"
    assert "天" in out.value and "Note." not in out.value
    text.value = "天龘地"
    assert "Not in the model's vocabulary" in out.value and "龘" in out.value and "<table" in out.value
    text.value = "   "
    assert "Type an upper line" in out.value
    text.value = "天" * (cp.MAX_LIVE + 1)
    assert "characters;" in out.value
    text.value = "abc"
    assert "a、b、c" in out.value


def test_live_box_in_a_jupyter_kernel():
    jc = pytest.importorskip("jupyter_client")
    km, kc = jc.manager.start_new_kernel(kernel_name="python3")
    try:
        code = (
            "import torch\n"
            "from dlbook import couplet as cp, data\n"
            "torch.manual_seed(0)\n"
            "vocab = data.CharVocab(list('晚风摇树还挺天地，'), specials=(cp.UNK,))\n"
            "model = cp.CNNTagger(len(vocab), dim=16).eval()\n"
            "box = cp.live_box(model, vocab)\n"
            "box.children[0].value = '天地'\n"
            "print('ANSWER', cp.answer(model, vocab, '天地', 'copy'))\n"
            "print('HTML1', box.children[1].value)\n"
            "box.children[0].value = '天𪚥'\n"
            "print('HTML2', box.children[1].value)\n")
        out = []
        reply = kc.execute_interactive(code, timeout=120, output_hook=lambda m: out.append(m))
        assert reply["content"]["status"] == "ok", reply["content"]
        text = "".join(m["content"].get("text", "") for m in out if m["msg_type"] == "stream")
        ans = text.split("ANSWER ", 1)[1].split("\n", 1)[0]
        html1 = text.split("HTML1 ", 1)[1].split("HTML2", 1)[0]
        assert len(ans) == 2 and all(f">{c}<" in html1 for c in ans)
        assert "Not in the model's vocabulary" in text.split("HTML2 ", 1)[1] and "𪚥" in text.split("HTML2 ", 1)[1]
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_answer_gallery_links_dropdown_and_pages():
    import ipywidgets as W

    g = cp.answer_gallery([("晚风", "晨露", "朝霞"), ("天地", "山河", "江海")])
    dd, stack = g.children
    assert isinstance(dd, W.Dropdown) and len(stack.children) == 2 and ">朝<" in stack.children[0].value
    with pytest.raises(ValueError):
        cp.answer_gallery([])


def test_cjk_font_renders_chinese_without_missing_glyphs():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    name = cp.cjk_font(quiet=True)
    if name is None:
        pytest.skip("no CJK font installed here (Debian: apt-get install fonts-noto-cjk)")
    fig, ax = plt.subplots()
    ax.set_title("晚风摇树树还挺 → 晨露润花花更红")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Glyph ... missing from font(s)" is a UserWarning
        fig.canvas.draw()
    plt.close(fig)


# ---------------------------------------------------------------- the data: formats and verification
def git_blob(b: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(b) + b).hexdigest()


def test_git_blob_id_matches_git(tmp_path):
    p = tmp_path / "f.txt"
    p.write_bytes("晚 风 摇 树 树 还 挺 \n".encode())
    assert data.file_hash(p, data.GIT_BLOB) == git_blob(p.read_bytes())
    if shutil.which("git"):
        got = subprocess.run(["git", "hash-object", str(p)], capture_output=True, text=True, check=True).stdout.strip()
        assert data.file_hash(p, data.GIT_BLOB) == got


def test_reader_refuses_malformed_lines(tmp_path):
    p = tmp_path / "in.txt"
    p.write_text("晚 风 \n晚风 摇 \n", encoding="utf-8")
    with pytest.raises(data.DataError, match="line 2"):
        data.read_couplet_lines(p)
    q = tmp_path / "out.txt"
    p.write_text("晚 风 \n", encoding="utf-8")
    q.write_text("晨 \n", encoding="utf-8")
    with pytest.raises(data.DataError, match="differ in length"):
        data.text._couplet_pairs(p, q)
    q.write_bytes(b"\xff\xfe\n")
    with pytest.raises(data.DataError, match="UTF-8"):
        data.read_couplet_lines(q)


def test_smoke_reads_the_bundled_mit_sample(monkeypatch):
    monkeypatch.setenv("DLBOOK_PROFILE", "smoke")
    tr, te = data.load_text("couplet", "train"), data.load_text("couplet", "test")
    assert (len(tr), len(te)) == (800, 200) and "bundled sample" in tr.source
    assert tr.records[1] == ("风弦未拨心先乱", "夜幕已沉梦更闲")
    with pytest.raises(data.DataError, match="no vocabulary"):
        data.load_text("couplet", "vocab")
    assert "MIT" in data.info("couplet").licence


@needs_mirror
def test_bundled_sample_is_the_head_of_the_cleaned_test_split():
    for side in ("in", "out"):
        head = (MIRROR / "couplet" / "clean" / "test" / f"{side}.txt").read_bytes().split(b"\n")[:1000]
        sample = (data.SAMPLES / "couplet" / f"clean-test-first1000.{side}.txt").read_bytes()
        assert sample == b"\n".join(head) + b"\n"


@needs_mirror
def test_c7_offline_files_have_the_documented_format(offline_data, monkeypatch):
    monkeypatch.setenv("DLBOOK_MIRROR", str(MIRROR))
    root = MIRROR / "couplet"
    raw = {k: (root / k).read_text(encoding="utf-8").split("\n")
           for k in ("test/in.txt", "test/out.txt", "train_first30000/in.txt", "train_first30000/out.txt")}
    assert [len(v) - 1 for v in raw.values()] == [4000, 4000, 30000, 30000] and all(v[-1] == "" for v in raw.values())
    assert all(line.endswith(" ") for v in raw.values() for line in v[:-1])
    tr, te = data.load_text("couplet", "train"), data.load_text("couplet", "test")
    assert "offline subset" in tr.source and "offline copy" in te.source
    assert (len(tr), len(te)) == (30000, 4000) and all(len(a) == len(b) for a, b in tr.records + te.records)
    tokens = {t for (t,) in data.load_text("couplet", "vocab").records}
    assert len(tokens) == 9130 and {c for p in tr.records + te.records for s in p for c in s} <= tokens
    cfg = cp.config("cpu")
    d = cp.prepare(cfg)
    assert (len(d.train_pairs), len(d.val_pairs), len(d.test_pairs), len(d.vocab)) == (25000, 1648, 3545, 4359)
    assert d.val_pairs == [p for p in tr.records if len(p[0]) <= 16][25000:]  # the last kept pairs validate


@needs_mirror
def test_corrupt_mirror_copy_is_reported_and_skipped(offline_data, monkeypatch):
    bad = offline_data / "mirror" / "couplet" / "test"
    bad.mkdir(parents=True)
    (bad / "in.txt").write_text("腾 飞 \n", encoding="utf-8")
    (bad / "out.txt").write_bytes((MIRROR / "couplet" / "test" / "out.txt").read_bytes())
    monkeypatch.setenv("DLBOOK_MIRROR", os.pathsep.join([str(offline_data / "mirror"), str(MIRROR)]))
    with pytest.warns(data.DataWarning, match=r"test/in.txt is corrupt.*left in place"):
        d = data.load_text("couplet", "test")
    assert len(d) == 4000 and (bad / "in.txt").exists()


@needs_mirror
def test_corrupt_cached_member_is_moved_aside(offline_data, monkeypatch):
    monkeypatch.setenv("DLBOOK_MIRROR", str(MIRROR))
    cached = offline_data / "cache" / "couplet" / "train" / "in.txt"
    cached.parent.mkdir(parents=True)
    cached.write_text("晚 风 \n", encoding="utf-8")
    with pytest.warns(data.DataWarning, match="moved aside"):
        d = data.load_text("couplet", "train")
    assert "offline subset" in d.source and not cached.exists() and cached.with_name("in.txt.corrupt").exists()


def test_no_copy_offline_falls_back_to_the_sample_with_a_warning(offline_data):
    with pytest.warns(data.OfflineWarning, match="bundled"):
        d = data.load_text("couplet", "test")
    assert len(d) == 200
    with pytest.raises(data.DataError, match="no usable copy"):
        data.load_text("couplet", "test", allow_sample=False)


def _archive(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, b in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(b)
            tar.addfile(info, io.BytesIO(b))


def _with_archive_source(monkeypatch, server: Path, files: dict):
    ds = data.info("couplet")
    monkeypatch.setitem(data.REGISTRY, "couplet", replace(ds, urls=(server.as_uri(),), files=files))


def test_archive_members_are_extracted_and_verified(offline_data, monkeypatch):
    monkeypatch.setenv("DLBOOK_OFFLINE", "0")
    server = offline_data / "server"
    server.mkdir()
    up, lo = "晚 风 \n天 地 \n".encode(), "晨 露 \n海 山 \n".encode()
    _archive(server / "couplet.tar.gz", {"couplet/test/in.txt": up, "couplet/test/out.txt": lo,
                                         "couplet/train/in.txt": up, "couplet/train/out.txt": b"x \n"})
    f = lambda name, b, algo: data.DataFile(name, git_blob(b) if algo == data.GIT_BLOB else hashlib.sha256(b).hexdigest(),
                                            algo=algo, archive=("couplet.tar.gz", f"couplet/{name}"))
    files = {"test_upper": f("test/in.txt", up, "sha256"), "test_lower": f("test/out.txt", lo, data.GIT_BLOB),
             "train_upper": f("train/in.txt", up, data.GIT_BLOB), "train_lower": f("train/out.txt", lo, data.GIT_BLOB)}
    _with_archive_source(monkeypatch, server, files)
    d = data.load_text("couplet", "test", allow_sample=False)
    assert d.records == [("晚风", "晨露"), ("天地", "海山")] and "from couplet.tar.gz" in d.source
    cache = offline_data / "cache" / "couplet"
    assert (cache / "test" / "in.txt").read_bytes() == up and (cache / "couplet.tar.gz").exists()
    # train/out.txt in this archive is not the file its checksum describes: the archive is moved
    # aside, nothing is extracted, and the load says so
    with pytest.raises(data.DataError, match="not the release these checksums describe"):
        data.load_text("couplet", "train", allow_sample=False)
    assert not (cache / "train" / "out.txt").exists() and (cache / "couplet.tar.gz.corrupt").exists()
    # an archive that is not a tar file at all
    (server / "couplet.tar.gz").write_bytes(b"not an archive")
    (cache / "test" / "in.txt").unlink()
    with pytest.raises(data.DataError, match="cannot read member"):
        data.load_text("couplet", "test", allow_sample=False)
    # a second bad archive is moved aside beside the first, which is kept
    assert (cache / "couplet.tar.gz.corrupt").exists() and (cache / "couplet.tar.gz.corrupt.1").exists()


def test_an_archive_member_larger_than_the_file_can_be_is_refused_while_extracting(offline_data, monkeypatch):
    """A few hundred KB of gzip can hold hundreds of MB of zeros: the member size is checked
    from its header and again as it is written, so the cache never holds more than the bound."""
    monkeypatch.setenv("DLBOOK_OFFLINE", "0")
    server = offline_data / "server"
    server.mkdir()
    big = b"\0" * (4 << 20)
    _archive(server / "couplet.tar.gz", {"couplet/test/in.txt": big, "couplet/test/out.txt": b"a \n"})
    files = {"test_upper": data.DataFile("test/in.txt", hashlib.sha256(big).hexdigest(), algo="sha256",
                                         archive=("couplet.tar.gz", "couplet/test/in.txt"), max_bytes=1 << 20),
             "test_lower": data.DataFile("test/out.txt", hashlib.sha256(b"a \n").hexdigest(), algo="sha256",
                                         archive=("couplet.tar.gz", "couplet/test/out.txt"), max_bytes=1 << 20)}
    _with_archive_source(monkeypatch, server, files)
    with pytest.raises(data.DataError, match="declares 4,194,304 bytes"):
        data.load_text("couplet", "test", allow_sample=False)
    cache = offline_data / "cache" / "couplet"
    assert not (cache / "test" / "in.txt").exists() and not list(cache.rglob("*.part"))

    # a file with no bound of its own gets the registry's
    (cache / "couplet.tar.gz.corrupt").unlink()
    _with_archive_source(monkeypatch, server, {k: replace(v, max_bytes=None) for k, v in files.items()})
    monkeypatch.setattr(data.registry, "MAX_MEMBER_BYTES", 1 << 20)
    with pytest.raises(data.DataError, match="more than the 1,048,576"):
        data.load_text("couplet", "test", allow_sample=False)
    assert not (cache / "test" / "in.txt").exists()


# ---------------------------------------------------------------- the copy prior, scores, early stopping
def test_copy_prior_hand_example():
    # vocabulary: 0 <unk>, 1 '，', 2..4 characters; x = [2, 1, 3]
    x = torch.tensor([[2, 1, 3]])
    ban = cp.prior_mask(x, 5, "copy", punct_ids=[1])[0]
    assert ban[0].tolist() == [True, True, True, False, False]     # unk, punctuation, own character
    assert ban[1].tolist() == [True, False, True, True, True]      # only the comma itself
    assert ban[2].tolist() == [True, True, False, True, False]
    logits = torch.zeros(1, 3, 5)
    logits[0, :, 1] = 9      # the comma is the favourite everywhere
    logits[0, :, 4] = 1
    logits[0, 2, 2] = 2
    assert cp.decode(logits, x, "copy", [1]).tolist() == [[4, 1, 2]]
    assert cp.decode(logits, x, "exempt", [1]).tolist() == [[1, 1, 1]]  # exempt: a comma anywhere


def test_copy_prior_keeps_punctuation_in_place_on_every_sample_line(monkeypatch):
    monkeypatch.setenv("DLBOOK_PROFILE", "smoke")
    pairs = data.read_couplet_sample("train") + data.read_couplet_sample("test")
    uppers = [u for u, _ in pairs]
    vocab = cp.build_vocab(uppers, 1)
    torch.manual_seed(0)
    m = cp.CNNTagger(len(vocab), dim=16).eval()
    with torch.no_grad():  # make punctuation the favourite everywhere: the prior must still hold
        m.out.bias[cp.punct_ids(vocab)] = 50.0
    outs = cp.answer_many(m, vocab, uppers, "copy")
    assert sum("，" in u for u in uppers) > 100
    for u, o in zip(uppers, outs):
        assert len(o) == len(u) and cp.rules(u, o)["punctuation"] and cp.UNK not in o
        assert all(a != b or cp.is_punct(a) for a, b in zip(u, o))


def test_overlap_and_gallery_rule_hand_values():
    assert cp.overlap("花花红", "花红，叶") == pytest.approx(2 / 3)   # 花 once, 红; punctuation aside
    assert cp.overlap("山山", "山山") == 1.0 and math.isnan(cp.overlap("天", "，"))
    assert cp.every_kth(100, 4) == [0, 25, 50, 75] and cp.every_kth(3, 10) == [0, 1, 2]
    with pytest.raises(ValueError):
        cp.every_kth(0, 3)
    rows = cp.gallery_rows(["天地"], {"CNN": ["山河"]}, ["山川"], [0])
    assert rows == [["天地", "山川 (4/4 rules)", "山河 (4/4 rules, overlap 0.50)"]]


def test_training_stops_when_the_validation_loss_turns_and_keeps_the_best_weights(monkeypatch):
    monkeypatch.setenv("DLBOOK_PROFILE", "smoke")
    cfg = replace(cp.config("smoke"), dim=32, blocks=2, max_steps=400, eval_every=10, patience=2, batch_size=32,
                  lr=3e-2, val_pairs=100)
    d = cp.prepare(cfg)
    small = cp.subset(d, 100, 0)        # 100 pairs: overfits within a few hundred steps
    r = cp.train_tagger(cfg, small, seed=0, device="cpu", progress=False)
    assert r.steps[-1] < 400 and r.n_train == 100
    k = int(np.argmin(r.val_ce))
    assert r.best_step == r.steps[k] and len(r.val_ce) - 1 - k == cfg.patience
    m = cp.load_model(cfg, len(d.vocab), r.state, device="cpu")
    assert cp.evaluate(m, d.val, d.punct_ids)["ce"] == pytest.approx(r.val_ce[k], rel=1e-5)
    assert r.best == r.test[k] and r.ce_at(r.steps[-1] + 1) != r.ce_at(r.steps[-1] + 1)  # NaN past the end


def test_subset_is_seeded_and_keeps_the_vocabulary(monkeypatch):
    monkeypatch.setenv("DLBOOK_PROFILE", "smoke")
    d = cp.prepare(cp.config("smoke"))
    a, b, c = cp.subset(d, 200, 0), cp.subset(d, 200, 0), cp.subset(d, 200, 1)
    assert len(a.train_pairs) == 200 and a.train_pairs == b.train_pairs != c.train_pairs
    assert a.vocab is d.vocab and a.test is d.test and cp.subset(d, 10 ** 6, 0) is d
    assert sum(len(x) for x, _ in a.train.values()) == 200


def test_crossover_of_known_lines():
    sizes = [1000, 2000, 4000]
    lookup = np.full((3, 3), 0.12)
    # gap = -0.03 + 0.01 * log2(n / 1000): zero at n = 8,000; three seeds with a little spread
    cnn = np.array([[0.09 + 0.01 * k + e for e in (-0.001, 0.0, 0.001)] for k in range(3)])
    cr = cp.crossover(sizes, cnn, lookup, at=64000)
    assert cr["n_star"] == pytest.approx(8000, rel=1e-6)
    assert cr["lo"] < 8000 < cr["hi"] and np.allclose(cr["slope"], 0.01)
    assert np.allclose(cr["gap_at"], [0.029, 0.03, 0.031])
    flat = cp.crossover(sizes, np.full((3, 3), 0.10), lookup, at=64000)   # the gap never closes
    assert flat["n_star"] == math.inf


def test_claims_rows_from_a_hand_made_result(monkeypatch):
    import dlbook.claims
    from dlbook.claims import Claims

    monkeypatch.setattr(dlbook.claims, "sample_data_used", lambda: [])  # earlier tests read the sample

    sizes, seeds = [100, 200, 400], [0, 1, 2]
    best = lambda a: {"ce": 6.0, "acc_copy": a, "acc_post": a - 0.04, "acc_exempt": a}
    sc = cp.Scaling(sizes, seeds, {n: [best(0.05 + 0.01 * k + 0.001 * s) for s in seeds] for k, n in enumerate(sizes)},
                    {n: [100] * 3 for n in sizes}, {n: [0.1 + 0.002 * k] * 3 for k, n in enumerate(sizes)}, {})
    shares = {"human": {"all": 1.0}, "CNN, copy": {"all": 0.5}}
    r = {"format": {"files": {"a": {"lines": 2, "trailing_space": 2}}, "pairs": 2, "equal_length": 2},
         "V": 4359, "subset": True, "n_params": 5, "param_formula": 5, "n_test": 10, "c6_bad": 0, "copy_bad": 0,
         "n_comma": 3, "acc_comma": [0.05, 0.1, 0.11], "gap_exempt_post": [0.04, 0.041, 0.039], "punct_share": 0.04,
         "ce_1000": [6.0, 6.1, 5.9], "ce_0": [8.4] * 3, "best_step": [2000] * 3, "best_ce": [5.8, 5.8, 5.9],
         "best_acc": [0.09, 0.1, 0.1], "scaling": sc,
         "cross": cp.crossover(sizes, sc.acc("cnn"), sc.acc("lookup"), 770_491), "n_test_all": 40,
         "overlap_cnn": [0.1, 0.11, 0.12], "overlap_lookup": 0.2, "doubling_ratio": [3.0, 4.0, 5.0], "shares": shares,
         "speed_ratios": [0.7, 0.75, 0.72, 0.71], "speed_device": "cpu",
         "c11": {"steps": 1000, "cnn_steps_time": 720.0, "lstm_steps": [6.5, 6.6, 6.4], "cnn_steps": [6.0, 6.1, 5.9],
                 "lstm_time": [6.5, 6.6, 6.4], "cnn_time": [6.3, 6.3, 6.2]}}
    cl = Claims("04", profile="cpu", quiet=True).extend(cp.claims(r))
    v = {c.id: c.verdict for c in cl.items}
    assert v["C9a"] == "PASS" and v["C9-lookup"] == "FAIL" and v["C10"] == "FAIL" and v["C11-speed"] == "FAIL"
    assert v["S-slope"] == "PASS" and v["C11-loss-steps"] == "PASS" and v["C10-double"] == "FAIL"
    assert v["C6"] == "holds by construction" and v["C9b"] == "a property of the data"
    r["c11"]["cnn_time"] = [float("nan")] * 3       # the CNN stopped before the equal-time step
    assert Claims("04", profile="cpu", quiet=True).extend(cp.claims(r))["C11-loss-time"].verdict.startswith("n/a")
