"""The text kind of the data registry: Tiny Shakespeare offline (the bundled copy), a corrupt
copy in the cache, contiguous splits, and the character vocabulary."""
import pytest

from dlbook import data


def test_tinyshakespeare_offline_from_the_bundled_copy(offline_data):
    splits = {s: data.load_text("tinyshakespeare", s) for s in data.text.SPLITS}
    tr = splits["train"]
    assert tr.source == "input.txt, copy bundled with dlbook" and tr.fields == ("speaker", "text")
    assert tr.records[0] == ("First Citizen", "Before we proceed any further, hear me speak.")
    n = sum(len(d) for d in splits.values())
    assert n == len(data.read_speeches((data.SAMPLES / "tinyshakespeare" / "input.txt").read_text()))
    assert len(tr) == round(0.9 * n) and abs(len(splits["validation"]) - len(splits["test"])) <= 1
    # contiguous blocks: the validation block starts where the training block ends
    assert data.load_text("tinyshakespeare", "train", limit=3).records == tr.records[:3]


def test_corrupt_cached_corpus_is_moved_aside(offline_data):
    bad = offline_data / "cache" / "tinyshakespeare" / "input.txt"
    bad.parent.mkdir(parents=True)
    bad.write_text("not shakespeare")
    with pytest.warns(data.DataWarning, match="corrupt.*moved aside"):
        d = data.load_text("tinyshakespeare", "test")
    assert "bundled" in d.source and bad.with_name("input.txt.corrupt").exists() and not bad.exists()


def test_text_and_image_loaders_refuse_each_other(offline_data):
    with pytest.raises(data.DataError, match="load_text"):
        data.load("tinyshakespeare")
    with pytest.raises(data.DataError, match=r"data.load\('mnist'\)"):
        data.load_text("mnist")
    with pytest.raises(data.DataError, match="splits"):
        data.load_text("tinyshakespeare", "dev")


def test_contiguous_split_covers_everything_once():
    n = 1001
    parts = [data.contiguous_split(n, s) for s in ("train", "validation", "test")]
    idx = [i for p in parts for i in range(n)[p]]
    assert idx == list(range(n)) and parts[0].stop == 901
    with pytest.raises(ValueError):
        data.contiguous_split(10, "train", (0.5, 0.5, 0.5))


def test_char_vocab_roundtrip_and_unknowns():
    v = data.CharVocab.build(["abca", "bd"], specials=("<pad>", "<unk>", "<mask>"))
    assert v.itos[:3] == ["<pad>", "<unk>", "<mask>"] and v.itos[3:] == ["a", "b", "c", "d"]
    ids = v.encode("abcz")
    assert ids[-1] == v.id("<unk>") and v.decode(ids) == "abc"
    assert v.unknown("zaz y") == ["z", " ", "y"]
    with pytest.raises(KeyError, match="'zy'"):
        v.encode("azy", strict=True)
    with pytest.raises(KeyError, match="no <unk>"):
        data.CharVocab(["a"], specials=("<pad>",)).encode("b")
    with pytest.raises(ValueError, match="duplicate"):
        data.CharVocab(["a", "a"])


def test_word_vocab_spells_out_rare_words_and_keeps_line_breaks():
    v = data.WordVocab.build(["The king, the KING!\nO Romeo", "the end"], size=2, specials=("<pad>", "<unk>"))
    assert v.itos[:4] == ["<pad>", "<unk>", "the", "king"] and v.n_words == 2
    assert v.tokens("The king\nO kingdom!") == ["the", "king", "\n", "o", "k", "i", "n", "g", "d", "o", "m", "!"]
    assert v.unknown("the kingdom") == [] and v.unknown("the zq") == ["z", "q"]
    assert v.decode(v.encode("the king,")) == "the king ,"
    with pytest.raises(KeyError, match="'zq'"):
        v.encode("zq", strict=True)
    with pytest.raises(ValueError, match="size"):
        data.WordVocab.build(["a"], size=-1)


def test_decode_refuses_ids_outside_the_vocabulary():
    v = data.CharVocab.build(["abc"])
    with pytest.raises(IndexError, match=r"\[-1\]"):
        v.decode([-1])
    with pytest.raises(IndexError, match="not in this vocabulary"):
        v.decode([len(v.itos)])
    assert v.decode(v.encode("cab")) == "cab"
