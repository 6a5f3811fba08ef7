"""dlbook.gaussian: the Gaussian pieces shared by chapters 01 and 07, against hand values,
torch.distributions, Monte Carlo and closed forms; bad inputs give clear errors."""
import math

import numpy as np
import pytest
import torch

from dlbook import gaussian as G
from dlbook.config import ConfigError


def test_kl_hand_values_per_coordinate():
    mu = torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64)
    logvar = torch.tensor([[0.0, 0.0, math.log(4.0)]], dtype=torch.float64)
    want = torch.tensor([[0.0, 0.5, 0.5 * (3.0 - math.log(4.0))]], dtype=torch.float64)
    assert torch.allclose(G.gaussian_kl(mu, logvar), want, atol=1e-14)


def test_kl_matches_torch_distributions_and_its_gradient():
    g = torch.Generator().manual_seed(1)
    mu = torch.randn(5, 7, generator=g, dtype=torch.float64, requires_grad=True)
    lv = torch.randn(5, 7, generator=g, dtype=torch.float64, requires_grad=True)
    d = torch.distributions
    ref = d.kl_divergence(d.Normal(mu, (0.5 * lv).exp()), d.Normal(0.0, 1.0))
    assert torch.allclose(G.gaussian_kl(mu, lv), ref, atol=1e-12)
    G.gaussian_kl(mu, lv).sum().backward()
    assert torch.allclose(mu.grad, mu.detach())                        # d/dmu = mu
    assert torch.allclose(lv.grad, 0.5 * (lv.detach().exp() - 1))      # d/dlogvar = (sigma^2 - 1)/2


def test_kl_monte_carlo_brackets_the_closed_form():
    mu, lv = torch.tensor([0.5, -0.2, 1.0]), torch.tensor([0.3, -0.4, 0.0])
    mc, se = G.kl_monte_carlo(mu, lv, 200_000, seed=0)
    closed = float(G.gaussian_kl(mu.double(), lv.double()).sum())
    assert 0 < se < 0.01 and abs(mc - closed) < 4 * se
    with pytest.raises(ConfigError, match="n"):
        G.kl_monte_carlo(mu, lv, 0)
    with pytest.raises(ValueError, match="one Gaussian"):
        G.kl_monte_carlo(mu[None], lv[None], 10)


def test_reparameterise_moments_noise_and_gradient():
    mu, lv = torch.tensor([1.0, -2.0], dtype=torch.float64), torch.tensor([0.0, math.log(4.0)], dtype=torch.float64)
    eps = torch.tensor([[0.5, -1.0]], dtype=torch.float64)
    assert torch.allclose(G.reparameterise(mu, lv, eps), torch.tensor([[1.5, -4.0]], dtype=torch.float64))
    z = G.reparameterise(mu.expand(100_000, 2), lv.expand(100_000, 2), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(z.mean(0), mu, atol=0.02) and torch.allclose(z.std(0), torch.tensor([1.0, 2.0]).double(), atol=0.02)
    m = mu.clone().requires_grad_()
    G.reparameterise(m, lv, eps).sum().backward()
    assert torch.equal(m.grad, torch.ones(2, dtype=torch.float64))     # dz/dmu = 1
    with pytest.raises(ValueError, match="eps"):
        G.reparameterise(mu, lv, torch.zeros(3))


def test_linear_gaussian_identity_tightness_and_keys():
    t = G.linear_gaussian_terms(1.3, 0.6)
    assert set(t) == {"mi", "E_kl", "kl_agg"} and all(isinstance(v, float) for v in t.values())
    assert t["E_kl"] == pytest.approx(t["mi"] + t["kl_agg"], abs=1e-13)
    th = np.linspace(0.1, 1.4, 9)                                      # a^2 + s^2 = 1: the bound is tight
    c = G.linear_gaussian_terms(np.sin(th), np.cos(th))
    assert np.allclose(c["kl_agg"], 0, atol=1e-14) and np.allclose(c["E_kl"], c["mi"], atol=1e-14)
    with pytest.raises(ValueError, match="noise"):
        G.linear_gaussian_terms(1.0, 0.0)


def test_total_correlation_independent_vs_correlated():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((20_000, 3))
    assert G.total_correlation(z) < 1e-3
    zc = z @ np.array([[1.0, 0.8, 0.0], [0.0, 0.6, 0.0], [0.0, 0.0, 1.0]])
    assert G.total_correlation(zc) == pytest.approx(-0.5 * math.log(1 - 0.8 ** 2), abs=0.01)
    with pytest.raises(ValueError, match="N > K"):
        G.total_correlation(np.zeros((3, 5)))


def test_code_statistics_of_prior_codes():
    rng = np.random.default_rng(1)
    n, k = 5000, 4
    s = G.code_statistics(np.zeros((n, k)), np.zeros((n, k)), seed=0)   # every code is the prior
    assert s["agg_var"] == 1.0 and s["abs_mean_mu"] == 0.0 and s["mean_logvar"] == 0.0
    assert s["sq_norm"] == pytest.approx(1.0, abs=0.03) and s["tc"] < 0.01 and s["mean_abs_corr"] < 0.03
    mu = rng.standard_normal((n, k)) * 2 + 1
    s2 = G.code_statistics(torch.tensor(mu), torch.full((n, k), -2.0), seed=0)
    assert s2["agg_var"] == pytest.approx(4 + math.exp(-2), rel=0.05) and s2["abs_mean_mu"] == pytest.approx(1, abs=0.1)
    assert math.isnan(G.code_statistics(np.zeros((3, 5)), np.zeros((3, 5)))["tc"])
    with pytest.raises(ValueError, match="both be"):
        G.code_statistics(np.zeros((3, 2)), np.zeros((3, 3)))


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="same shape"):
        G.gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="same shape"):
        G.reparameterise(torch.zeros(3), torch.zeros(2))
