"""Patient-level bootstrap intervals and model-vs-baseline comparisons (``pneumonitor.bootstrap``)."""

from __future__ import annotations

import numpy as np
import pytest

from pneumonitor.bootstrap import (BEATS, MIN_UNITS, NOT_DISTINGUISHABLE, TOO_FEW, WORSE, bootstrap_estimate,
                                   compare_to_baseline, percentile_interval)


def mae(columns):
    return float(np.mean(np.abs(columns["predicted"] - columns["reference"])))


def mae_of_mean(columns):
    return float(np.mean(np.abs(columns["reference"] - columns["reference"].mean())))


def scored(noise: float, n: int = 40, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    reference = rng.uniform(0, 8, n)
    return {"predicted": reference + rng.normal(0, noise, n), "reference": reference}


def test_a_model_close_to_the_reference_beats_the_mean_and_a_noisy_one_is_worse():
    good = compare_to_baseline(scored(0.3), mae, mae_of_mean, higher_is_better=False, n_bootstrap=300)
    assert good.verdict == BEATS and good.difference.high < 0
    assert good.difference.value == pytest.approx(good.model.value - good.baseline.value)
    assert good.model.low <= good.model.value <= good.model.high
    bad = compare_to_baseline(scored(6.0), mae, mae_of_mean, higher_is_better=False, n_bootstrap=300)
    assert bad.verdict == WORSE and bad.difference.low > 0
    # the same numbers where higher is better swap the verdicts
    assert compare_to_baseline(scored(0.3), mae, mae_of_mean, higher_is_better=True, n_bootstrap=300).verdict == WORSE


def test_a_model_equal_to_its_baseline_is_not_distinguishable():
    columns = scored(1.0)
    same = compare_to_baseline(columns, mae, mae, higher_is_better=False, n_bootstrap=200)
    assert same.verdict == NOT_DISTINGUISHABLE and same.difference.low == same.difference.high == 0.0


def test_repeated_images_of_one_patient_widen_the_interval_of_the_difference():
    base = scored(1.6, n=20, seed=3)
    columns = {name: np.repeat(values, 8) for name, values in base.items()}  # 20 patients, 8 images each
    patients = np.repeat(np.arange(20), 8)
    by_image = compare_to_baseline(columns, mae, mae_of_mean, higher_is_better=False, n_bootstrap=400)
    by_patient = compare_to_baseline(columns, mae, mae_of_mean, higher_is_better=False, groups=patients,
                                     n_bootstrap=400)
    width = lambda estimate: estimate.high - estimate.low  # noqa: E731
    assert by_patient.difference.value == by_image.difference.value
    assert width(by_patient.difference) > 2 * width(by_image.difference)
    assert (by_patient.bootstrap, by_image.bootstrap) == ("patients (n=20)", "images (n=160)")


def test_bootstrap_estimate_is_seeded_and_leaves_out_undefined_resamples():
    columns = {"x": np.r_[np.zeros(9), 1.0], "y": np.arange(10.0)}
    r = lambda c: float(np.corrcoef(c["x"], c["y"])[0, 1]) if np.ptp(c["x"]) else float("nan")  # noqa: E731
    first = bootstrap_estimate(columns, r, n_bootstrap=200, seed=4)
    assert first == bootstrap_estimate(columns, r, n_bootstrap=200, seed=4)
    assert np.isfinite([first.low, first.high]).all()  # resamples without the 1 (constant x) do not count
    assert np.isnan(percentile_interval([float("nan")] * 3)).all()


def test_columns_of_different_lengths_and_patient_ids_are_refused():
    with pytest.raises(ValueError, match="differ in length"):
        compare_to_baseline({"a": [1, 2], "b": [1]}, mae, mae, higher_is_better=False)
    with pytest.raises(ValueError, match="3 patient ids for 2 items"):
        bootstrap_estimate({"predicted": [1.0, 2.0], "reference": [1.0, 2.0]}, mae, groups=[1, 2, 3])


def test_too_few_patients_give_no_interval_and_no_verdict():
    columns = scored(0.1, n=4 * (MIN_UNITS - 1))
    patients = np.repeat(np.arange(MIN_UNITS - 1), 4)  # many images, too few patients
    few = compare_to_baseline(columns, mae, mae_of_mean, higher_is_better=False, groups=patients, n_bootstrap=100)
    assert few.verdict == TOO_FEW and np.isnan([few.difference.low, few.difference.high]).all()
    assert few.difference.value == pytest.approx(few.model.value - few.baseline.value)
    assert few.model.format() == f"{few.model.value:.2f} [no CI]"
    assert np.isnan(bootstrap_estimate(columns, mae, groups=patients).low)
    enough = compare_to_baseline(columns, mae, mae_of_mean, higher_is_better=False, n_bootstrap=100)  # 16 images
    assert enough.verdict == BEATS
