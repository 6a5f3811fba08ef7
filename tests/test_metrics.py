"""Generic feature metrics: retrieval, k-NN label agreement and accuracy, linear probe; results
over seeds."""
import numpy as np
import pytest
import torch

from dlbook import metrics
from dlbook.config import ConfigError


def test_nearest_neighbours_l2_and_cosine():
    bank = np.array([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [0.0, 2.0]])
    idx, d = metrics.nearest_neighbours(bank, bank[[1]], k=3, metric="l2")
    assert list(idx[0]) == [1, 0, 2] and np.allclose(d[0], [0, 1, 2], atol=1e-3)
    idx, s = metrics.nearest_neighbours(bank[1:], np.array([[2.0, 0.1]]), k=2, metric="cosine")
    assert set(idx[0]) == {0, 1} and s[0, 0] == pytest.approx(s[0, 1], abs=1e-6)  # same direction


def test_query_is_its_own_first_neighbour():
    x = np.random.default_rng(0).normal(size=(50, 5))
    for m in ("cosine", "l2"):
        idx, _ = metrics.nearest_neighbours(x, x[:10], 1, m)
        assert list(idx[:, 0]) == list(range(10))


def test_knn_agreement_and_accuracy_hand_example():
    bank = np.array([[0.0, 1.0], [0.1, 1.0], [1.0, 0.0], [1.0, 0.1]])
    yb = np.array([0, 0, 1, 1])
    q, yq = np.array([[0.05, 1.0], [1.0, 0.05]]), np.array([0, 0])
    assert metrics.knn_label_agreement(bank, yb, q, yq, k=2) == pytest.approx(0.5)
    assert metrics.knn_accuracy(bank, yb, q, yq, k=2) == pytest.approx(0.5)
    # leave-one-out inside the bank: each point's other neighbour shares its label
    assert metrics.knn_label_agreement(bank, yb, bank, yb, k=1, exclude_self=True) == 1.0
    # per query, for paired comparisons
    assert list(metrics.knn_label_agreement(bank, yb, q, yq, k=2, per_example=True)) == [1.0, 0.0]
    assert list(metrics.knn_correct(bank, yb, q, yq, k=2)) == [True, False]


def test_linear_probe_separable_blobs():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    centres = np.array([[4, 0, 0], [0, 4, 0], [0, 0, 4]])
    x = centres[y] + rng.normal(size=(300, 3))
    assert metrics.linear_probe(x[:200], y[:200], x[200:], y[200:]) > 0.95
    ok = metrics.linear_probe(x[:200], y[:200], x[200:], y[200:], per_example=True)
    assert ok.shape == (100,) and ok.dtype == bool and ok.mean() > 0.95
    # random labels cannot be predicted
    yr = rng.integers(0, 3, 300)
    assert metrics.linear_probe(x[:200], yr[:200], x[200:], yr[200:]) < 0.6


def test_bad_inputs():
    x = np.zeros((4, 3))
    with pytest.raises(ValueError, match="metric"):
        metrics.nearest_neighbours(x, x, 2, "manhattan")
    with pytest.raises(ValueError, match="features"):
        metrics.nearest_neighbours(x, np.zeros((2, 4)), 2)
    with pytest.raises(ValueError, match="2-D"):
        metrics.nearest_neighbours(np.zeros(4), x, 2)
    with pytest.raises(ValueError, match="length"):
        metrics.linear_probe(x, [0, 1], x, [0, 1, 0, 1])
    with pytest.raises(ValueError, match="labels"):
        metrics.knn_accuracy(x, [0, 1], x, [0, 1, 0, 1], k=1)
    with pytest.raises(ConfigError, match="k"):
        metrics.knn_accuracy(x, [0, 1, 0, 1], x, [0, 1, 0, 1], k=0)
    with pytest.raises(ConfigError, match="weight_decay"):
        metrics.linear_probe(x, [0, 1, 0, 1], x, [0, 1, 0, 1], weight_decay=-1.0)


def test_device_comes_from_the_one_policy(monkeypatch):
    """metrics searches on dlbook.config.device(): $DLBOOK_DEVICE is honoured."""
    monkeypatch.setenv("DLBOOK_DEVICE", "cpu")
    assert metrics._device() == torch.device("cpu")
    if not torch.cuda.is_available():
        monkeypatch.setenv("DLBOOK_DEVICE", "cuda")
        with pytest.raises(ValueError, match="CUDA"):
            metrics.knn_accuracy(np.eye(3), [0, 1, 2], np.eye(3), [0, 1, 2], k=1)


# ---------------------------------------------------------------- results over seeds
def test_spread_reports_mean_sd_and_range():
    assert metrics.spread([1.0, 2.0, 3.0]) == "2 ± 1 [1, 3]"
    assert metrics.spread([0.5]) == "0.5"
    with pytest.raises(ValueError, match="no values"):
        metrics.spread([])


def test_mean_sd_by_hand():
    assert metrics.mean_sd([1.0, 2.0, 6.0]) == pytest.approx((3.0, 7 ** 0.5))
    m, sd = metrics.mean_sd([4.0])
    assert m == 4.0 and np.isnan(sd)
    with pytest.raises(ValueError, match="no values"):
        metrics.mean_sd([])


def test_paired_differences_by_hand():
    # differences 1, 2, 3: mean 2, sd 1, SE 1/sqrt(3), 95 % t interval with 2 degrees of freedom
    d = metrics.paired([2.0, 4.0, 6.0], [1.0, 2.0, 3.0])
    se = 1 / 3 ** 0.5
    assert (d["mean"], d["sd"], d["n"]) == (pytest.approx(2.0), pytest.approx(1.0), 3)
    assert d["se"] == pytest.approx(se)
    assert (d["lo"], d["hi"]) == (pytest.approx(2 - 4.302653 * se, rel=1e-6), pytest.approx(2 + 4.302653 * se, rel=1e-6))
    one = metrics.paired([1.0], [0.5])
    assert one["mean"] == 0.5 and np.isnan(one["se"]) and one["n"] == 1
