"""Classification metrics against hand-computed cases and a seeded CI-coverage simulation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from pneumonitor.evaluation.classification import (
    best_sensitivity,
    binormal_auc_needed,
    evaluate_classification,
    fewest_false_positives,
    nearest_corner_threshold,
    rank_auc,
    roc_auc,
    roc_curve,
)


def test_roc_and_auc_by_hand():
    labels = [0, 0, 1, 1]
    scores = [0.1, 0.4, 0.35, 0.8]
    # pairs (pos, neg): (0.35>0.1), (0.35<0.4), (0.8>0.1), (0.8>0.4) -> 3/4
    assert roc_auc(labels, scores) == pytest.approx(0.75)
    assert rank_auc(np.array(labels), np.array(scores)) == pytest.approx(0.75)
    fpr, tpr, thresholds = roc_curve(labels, scores)
    assert fpr.tolist() == [0, 0, 0.5, 0.5, 1]
    assert tpr.tolist() == [0, 0.5, 0.5, 1, 1]
    assert thresholds[1:].tolist() == [0.8, 0.4, 0.35, 0.1]
    # (0, 0.5) and (0.5, 1) are both 0.5 from the corner; the first (higher threshold) wins
    assert nearest_corner_threshold(labels, scores) == 0.8


def test_ties_count_one_half():
    assert roc_auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    assert rank_auc(np.array([0, 1, 1]), np.array([0.3, 0.3, 0.9])) == pytest.approx(0.75)


def test_rates_at_a_given_threshold():
    labels = [1, 1, 1, 0, 0, 0, 0, 1]
    scores = [0.9, 0.7, 0.3, 0.8, 0.2, 0.1, 0.4, 0.62]
    result = evaluate_classification(labels, scores, threshold=0.62, n_bootstrap=200, seed=1)
    # positives called: 0.9, 0.7, 0.8, 0.62 -> TP 3 (0.9, 0.7, 0.62), FP 1 (0.8); FN 1 (0.3); TN 3
    assert result.sensitivity.value == pytest.approx(3 / 4)
    assert result.specificity.value == pytest.approx(3 / 4)
    assert result.accuracy.value == pytest.approx(6 / 8)
    assert result.ppv.value == pytest.approx(3 / 4)
    assert result.threshold_rule == "given"
    for estimate in (result.auc, result.sensitivity, result.specificity, result.accuracy, result.ppv):
        assert estimate.low <= estimate.value <= estimate.high
    assert result.auc.format().count("[") == 1


def test_invalid_inputs():
    with pytest.raises(ValueError):
        roc_auc([1, 1], [0.2, 0.3])
    with pytest.raises(ValueError):
        evaluate_classification([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError):
        evaluate_classification([0, 1], [0.1])


def test_auc_ci_coverage_on_a_seeded_simulation():
    """Binormal scores with separation d have AUC = Phi(d / sqrt 2); the 95 % CI should cover it ~95 % of the time."""
    rng = np.random.default_rng(2020)
    d = 1.5
    true_auc = norm.cdf(d / np.sqrt(2))
    covered, runs = 0, 120
    for _ in range(runs):
        labels = np.r_[np.zeros(80, int), np.ones(80, int)]
        scores = np.r_[rng.normal(0, 1, 80), rng.normal(d, 1, 80)]
        result = evaluate_classification(labels, scores, n_bootstrap=300, seed=int(rng.integers(1 << 30)))
        covered += result.auc.low <= true_auc <= result.auc.high
    coverage = covered / runs
    assert 0.86 <= coverage <= 0.99, coverage


def test_rate_interval_over_patients_is_wider_when_patients_repeat():
    from pneumonitor.evaluation.classification import rate_interval

    hits = np.r_[np.ones(10, bool), np.zeros(90, bool)]
    low, high = rate_interval(hits, n_bootstrap=2000, seed=0)
    assert low < 0.10 < high and 0.03 < low and high < 0.17
    # the same 100 images as 10 patients of 10 images each, one patient all hits: far less evidence
    patients = np.repeat(np.arange(10), 10)
    wide = rate_interval(hits, patients, n_bootstrap=2000, seed=0)
    assert wide[0] <= low and wide[1] - wide[0] > 2 * (high - low)
    assert np.isnan(rate_interval([], n_bootstrap=10)[0])


def test_group_specificity_threshold_holds_every_source_to_the_rate():
    from pneumonitor.evaluation.classification import group_specificity_threshold

    rng = np.random.default_rng(0)
    # source "hard": 40 negatives spread high; "easy": 60 negatives low; "tiny": 5 negatives all high (too few)
    scores = np.r_[rng.uniform(0.2, 0.9, 40), rng.uniform(0.0, 0.3, 60), np.full(5, 0.99), rng.uniform(0.5, 1, 30)]
    labels = np.r_[np.zeros(105, int), np.ones(30, int)]
    groups = ["hard"] * 40 + ["easy"] * 60 + ["tiny"] * 5 + ["sick"] * 30
    t = group_specificity_threshold(labels, scores, groups, 0.10, min_negatives=20)
    hard, easy = scores[:40], scores[40:100]
    assert np.mean(hard >= t) <= 0.10 and np.mean(easy >= t) <= 0.10
    # the lowest such threshold on the 4-decimal grid: one step lower lets a fifth "hard" negative through
    assert np.mean(hard >= t - 1e-4) > 0.10
    assert t == round(t, 4)
    # a pooled rule would be satisfied lower: the easy source hides the hard one
    pooled = group_specificity_threshold(labels, scores, ["all"] * 105 + ["sick"] * 30, 0.10, 20)
    assert pooled < t and np.mean(hard >= pooled) > 0.10
    # rate 0: above every counted negative
    assert group_specificity_threshold(labels, scores, groups, 0.0, 20) > max(hard.max(), easy.max())
    with pytest.raises(ValueError, match="negatives"):
        group_specificity_threshold(labels, scores, groups, 0.10, min_negatives=100)
    with pytest.raises(ValueError, match="max_false_positive_rate"):
        group_specificity_threshold(labels, scores, groups, 1.0)
    saturated = np.r_[np.ones(20), np.zeros(20)]  # half of the negatives at probability 1.0
    with pytest.raises(ValueError, match=r"no threshold in \[0, 1\]"):
        group_specificity_threshold(np.zeros(40, int), saturated, ["x"] * 40, 0.10, 20)


def test_roc_bounds_by_hand():
    # negatives 0.1 .. 1.0 (10), positives 0.55 .. 0.95 (5) and 0.05: at most 10 % of negatives positive means
    # a threshold above 0.9 -> one positive (0.95) of six; 5 of 6 positives (>= 0.83) need a threshold <= 0.55 ->
    # the negatives 0.6 .. 1.0 are positive: 5 of 10
    negatives = np.round(np.arange(1, 11) / 10, 2)
    positives = np.array([0.55, 0.65, 0.75, 0.85, 0.95, 0.05])
    labels = np.r_[np.zeros(10), np.ones(6)]
    scores = np.r_[negatives, positives]
    assert best_sensitivity(labels, scores, 0.10) == pytest.approx(1 / 6)
    assert best_sensitivity(labels, scores, 0.0) == pytest.approx(0.0)  # the top negative outranks every positive
    assert fewest_false_positives(labels, scores, 5 / 6) == pytest.approx(0.5)
    assert fewest_false_positives(labels, scores, 1.0) == pytest.approx(1.0)  # 0.05 is below every negative
    # a perfect separation meets both ends
    assert best_sensitivity([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], 0.10) == 1.0
    assert fewest_false_positives([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], 0.85) == 0.0


def test_binormal_auc_needed_matches_a_simulated_binormal_roc():
    needed = binormal_auc_needed(0.85, 0.90)
    assert needed == pytest.approx(0.9494, abs=1e-3)
    # scores N(0, 1) vs N(d', 1) with that AUC: the ROC passes through (0.10, 0.85)
    d = np.sqrt(2) * norm.ppf(needed)
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(200_000), np.ones(200_000)]
    scores = np.r_[rng.normal(0, 1, 200_000), rng.normal(d, 1, 200_000)]
    assert best_sensitivity(labels, scores, 0.10) == pytest.approx(0.85, abs=0.005)
    with pytest.raises(ValueError, match="must be in"):
        binormal_auc_needed(1.0, 0.9)
