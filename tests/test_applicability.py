"""Applicability check: flag rates on simulated in-distribution and shifted participants."""

from __future__ import annotations

import numpy as np

from ketabids.learning.applicability import fit_domain


def _cohort(rng: np.random.Generator, n: int, mixing: np.ndarray, scale: float = 1.0) -> np.ndarray:
    return scale * rng.normal(size=(n, mixing.shape[0])) @ mixing


def test_flags_about_one_percent_in_distribution_and_most_shifted():
    rng = np.random.default_rng(3)
    mixing = np.eye(60) + 0.2 * rng.normal(size=(60, 60))
    rates = []
    for _ in range(5):  # 5 training cohorts of 100, 1000 new participants each
        domain = fit_domain(_cohort(rng, 100, mixing), seed=0)
        rates.append(1 - domain.within(_cohort(rng, 1000, mixing)).mean())
        shifted = _cohort(rng, 1000, mixing, scale=2.0)  # another scanner: twice the spread
        assert 1 - domain.within(shifted).mean() >= 0.95
    assert 0.0 < np.mean(rates) < 0.03, rates
    percentile, within = domain.training_cohort()
    assert percentile.max() == 100 and 0.97 <= within.mean() < 1


def test_many_features_are_projected_and_percentiles_rank_distances():
    rng = np.random.default_rng(4)
    z = rng.normal(size=(80, 1200))
    domain = fit_domain(z, seed=1)
    assert domain.projection.shape == (50, 1200)
    new = rng.normal(size=(200, 1200))
    order = np.argsort(domain.distance(new))
    assert np.all(np.diff(domain.percentile(new)[order]) >= 0)
    assert 1 - domain.within(new).mean() < 0.1  # projected: rougher than the 1 % of few features
    assert not domain.within(new * 2).any()
