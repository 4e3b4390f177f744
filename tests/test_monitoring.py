"""Monitoring: trend agreement, change rule, grouping and ordering of studies, metadata formats."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pneumonitor.monitoring import (
    ChangeRule,
    MetadataColumns,
    attach_patient_and_time,
    build_profiles,
    image_key,
    pooled_trend_agreement,
    read_results,
    read_study_metadata,
    trend_agreement,
    trend_labels,
)
from pneumonitor.monitoring.compare import compare_profiles, join_profiles
from pneumonitor.monitoring.studies import MonitoringInputError, parse_datetime
from pneumonitor.results import RESULT_COLUMNS


def result_row(image: str, ratio_right: float, ratio_left: float, probability: float = 0.9, **identity: str) -> dict:
    """One results.csv row as analyze writes it; scores follow the per-lung bins, total ratio = mean of lungs."""
    from pneumonitor.severity import lung_score

    row = dict.fromkeys(RESULT_COLUMNS, "")
    score_right, score_left = lung_score(ratio_right), lung_score(ratio_left)
    row.update(
        image=image,
        status="ok",
        pneumonia_probability=probability,
        positive=int(probability >= 0.62),
        ratio_right=ratio_right,
        ratio_left=ratio_left,
        ratio_total=(ratio_right + ratio_left) / 2,
        score_right=score_right,
        score_left=score_left,
        score_total=score_right + score_left,
    )
    row.update(identity)
    return row


def write_results(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=RESULT_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


# --- trend agreement -------------------------------------------------------------------------------------------------


def test_trend_labels_follow_value_over_previous():
    assert trend_labels([1.0, 2.0, 2.0, 1.0, 1.5]).tolist() == [1, 0, 0, 1]
    rng = np.random.default_rng(0)
    values = rng.uniform(0.1, 10, size=50)
    expected = (values[1:] / values[:-1] > 1).astype(int)
    assert trend_labels(values).tolist() == expected.tolist()


def test_trend_labels_zero_previous_value():
    # x / 0 with x > 0 is an increase; 0 / 0 is not.
    assert trend_labels([0, 3, 0, 0, 0.1]).tolist() == [1, 0, 0, 1]


def test_trend_agreement_hand_made_cases():
    assert trend_agreement([1, 2, 3], [10, 20, 30]) == 1.0
    assert trend_agreement([1, 2, 3], [30, 20, 10]) == 0.0
    # labels [1, 0, 1] vs [1, 1, 1]: 2 of 3 agree
    assert trend_agreement([2, 4, 4, 5], [0, 1, 2, 3]) == pytest.approx(2 / 3)
    # a scale change does not matter (Brixia 0-18 vs score 0-8)
    assert trend_agreement([0, 2, 1], [0, 9, 4]) == 1.0


@pytest.mark.parametrize(
    "a, b, message",
    [([1, 2], [1, 2, 3], "same number"), ([1], [2], "at least 2"), ([1, -1], [1, 2], "non-negative"),
     ([1, float("nan")], [1, 2], "NaN")],
)
def test_trend_agreement_rejects_bad_profiles(a, b, message):
    with pytest.raises(ValueError, match=message):
        trend_agreement(a, b)


def test_pooled_trend_agreement_counts_every_transition():
    pooled = pooled_trend_agreement([([1, 2, 3], [1, 2, 1]), ([0, 1], [0, 1]), ([5], [5])])
    assert (pooled.n_agree, pooled.n_transitions, pooled.n_patients) == (2, 3, 2)
    assert pooled.accuracy == pytest.approx(2 / 3)
    assert pooled.mean_per_patient == pytest.approx((0.5 + 1.0) / 2)
    assert math.isnan(pooled_trend_agreement([([1], [1])]).accuracy)


# --- change rule -----------------------------------------------------------------------------------------------------


def test_change_rule_needs_score_and_ratio_to_agree():
    rule = ChangeRule(ratio_margin=5.0)
    assert rule.label(2, 4, 20.0, 45.0) == "worse"
    assert rule.label(4, 2, 45.0, 20.0) == "improved"
    # score flips because the ratio crossed the 25 % edge by a hair: stable
    assert rule.label(2, 3, 24.0, 26.0) == "stable"
    # the ratio moves inside one score bin: stable
    assert rule.label(4, 4, 30.0, 45.0) == "stable"
    # score and ratio disagree in direction: stable
    assert rule.label(3, 4, 40.0, 30.0) == "stable"


def test_change_rule_margin_grows_with_model_uncertainty():
    rule = ChangeRule(ratio_margin=5.0, uncertainty_z=2.0)
    assert rule.margin() == 5.0
    assert rule.margin(3.0, 4.0) == pytest.approx(10.0)  # 2 * sqrt(9 + 16)
    assert rule.label(2, 4, 20.0, 28.0) == "worse"
    assert rule.label(2, 4, 20.0, 28.0, 3.0, 4.0) == "stable"
    with pytest.raises(ValueError):
        ChangeRule(ratio_margin=-1)


# --- grouping and ordering -------------------------------------------------------------------------------------------


def test_parse_datetime_accepts_dicom_and_iso():
    assert parse_datetime("20200301") == pd.Timestamp("2020-03-01")
    assert parse_datetime("20200301101530.5") == pd.Timestamp("2020-03-01 10:15:30.5")
    assert parse_datetime("2020-03-01T10:15:30") == pd.Timestamp("2020-03-01 10:15:30")
    assert parse_datetime("") is None and parse_datetime("not a date") is None and parse_datetime("20201340") is None


def test_grouping_orders_by_time_with_ties_missing_dates_and_skips(tmp_path):
    rows = [
        result_row("/d/p1_c.dcm", 30, 30, patient_id="P1", acquisition_datetime="2020-03-05T08:00:00"),
        result_row("/d/p1_a.dcm", 10, 0, patient_id="P1", study_date="20200301"),
        # tie: same date-time as p1_c; ordered by image path, flagged
        result_row("/d/p1_b.dcm", 20, 40, patient_id="P1", acquisition_datetime="2020-03-05T08:00:00"),
        result_row("/d/p1_undated.dcm", 50, 50, patient_id="P1"),
        result_row("/d/p10.dcm", 0, 0, probability=0.1, patient_id="P10", study_date="20200101"),
        result_row("/d/p2.dcm", 5, 5, patient_id="P2", study_date="20200101"),
        result_row("/d/nobody.png", 5, 5),
    ]
    skipped = dict.fromkeys(RESULT_COLUMNS, "")
    skipped.update(image="/d/p2_lat.dcm", status="skipped", reason="lateral view", patient_id="P2")
    rows.append(skipped)
    table = read_results(write_results(tmp_path / "results.csv", rows))
    profiles, unassigned = build_profiles(attach_patient_and_time(table.rows))

    assert [p.patient_id for p in profiles] == ["P1", "P2", "P10"]  # natural order
    p1 = profiles[0]
    assert p1.time_kind == "datetime"
    assert [Path(i).name for i in p1.timeline["image"]] == ["p1_a.dcm", "p1_b.dcm", "p1_c.dcm"]
    assert p1.timeline["tie"].tolist() == [False, True, True]
    assert p1.timeline["day"].tolist() == pytest.approx([0.0, 4 + 8 / 24, 4 + 8 / 24])
    assert p1.timeline["change"].tolist() == ["baseline", "worse", "stable"]
    assert p1.undated["image"].tolist() == ["/d/p1_undated.dcm"]
    assert "no usable acquisition time" in p1.undated["reason"][0]
    p2 = profiles[1]
    assert len(p2.timeline) == 1 and p2.skipped["reason"].tolist() == ["analyze: lateral view"]
    assert unassigned["image"].tolist() == ["/d/nobody.png"] and "no patient id" in unassigned["reason"][0]


def test_profile_uses_one_kind_of_time(tmp_path):
    metadata = tmp_path / "meta.csv"
    pd.DataFrame({"filename": ["a.png", "b.png"], "patientid": ["7", "7"], "offset": ["3", "1"]}).to_csv(metadata)
    rows = [result_row("/x/a.png", 1, 1), result_row("/x/b.png", 30, 30),
            result_row("/x/c.dcm", 1, 1, patient_id="7", study_date="20200101")]
    table = read_results(write_results(tmp_path / "r" / "results.csv", rows))
    studies = attach_patient_and_time(table.rows, read_study_metadata(metadata))
    (profile,), _ = build_profiles(studies)
    assert profile.time_kind == "offset"
    assert profile.timeline["day"].tolist() == [1.0, 3.0]
    assert profile.timeline["change"].tolist() == ["baseline", "improved"]
    assert "is a datetime while this patient's profile uses offsets" in profile.undated["reason"][0]


def test_read_results_rejects_other_tables(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(MonitoringInputError, match="missing column"):
        read_results(path)
    with pytest.raises(MonitoringInputError, match="not found"):
        read_results(tmp_path / "absent.csv")


# --- COVID collection metadata format --------------------------------------------------------------------------------

COVID_HEADER = ("patientid,offset,sex,age,finding,survival,intubated,intubation_present,went_icu,in_icu,"
                "needed_supplemental_O2,extubated,temperature,pO2_saturation,leukocyte_count,neutrophil_count,"
                "lymphocyte_count,view,modality,date,location,folder,filename,doi,url,license,clinical_notes,"
                "other_notes,")


def test_covid_collection_metadata_as_is(tmp_path):
    lines = [COVID_HEADER]
    for patient, offset, filename in [("2", "0", "case a.jpeg"), ("2", "3", "case-b.jpg"), ("3", "?", "c.png"),
                                      ("5", "7", "dup.jpg"), ("6", "7", "dup.jpg"), ("8", "1", "same.jpg"),
                                      ("8", "1", "same.jpg"), ("9", "", "e.png")]:
        lines.append(f"{patient},{offset},M,50,COVID-19,,,,,,,,,,,,,PA,X-ray,,,images,{filename},,,,,,")
    metadata_path = tmp_path / "metadata.csv"
    metadata_path.write_text("\n".join(lines) + "\n")
    metadata = read_study_metadata(metadata_path)  # default columns: patientid, offset, filename
    assert metadata.time_kind == "offset"
    assert set(metadata.ambiguous) == {"dup"} and "disagree" in metadata.ambiguous["dup"]
    assert metadata.by_key["same"]["time_value"] == 1.0

    # the stored images are PNG conversions with spaces replaced by '_'
    rows = [result_row(f"/data/images/{name}", 10, 10) for name in
            ("case_a.png", "case-b.png", "c.png", "dup.png", "same.png", "e.png")]
    table = read_results(write_results(tmp_path / "out" / "results.csv", rows))
    studies = attach_patient_and_time(table.rows, metadata)
    assert studies["patient"].tolist() == ["2", "2", "3", "", "8", "9"]
    assert studies["time_value"].tolist()[:2] == [0.0, 3.0]
    profiles, unassigned = build_profiles(studies)
    by_id = {p.patient_id: p for p in profiles}
    assert by_id["2"].timeline["day"].tolist() == [0.0, 3.0]
    assert "'?'" in by_id["3"].undated["reason"][0]
    assert len(by_id["9"].undated) == 1
    assert unassigned["image"].tolist() == ["/data/images/dup.png"]


def test_metadata_columns_named_by_options_and_dates(tmp_path):
    path = tmp_path / "m.csv"
    pd.DataFrame({"file": ["a.png", "b.png"], "pid": ["x", "x"], "when": ["March 3, 2020", "2020-03-01"],
                  "expert": ["4", "2"]}).to_csv(path, index=False)
    metadata = read_study_metadata(path, MetadataColumns(image="file", patient="pid", time="when", extra=("expert",)))
    assert metadata.time_kind == "datetime"
    table = read_results(write_results(tmp_path / "r" / "results.csv",
                                       [result_row("/a.png", 30, 30), result_row("/b.png", 10, 10)]))
    (profile,), _ = build_profiles(attach_patient_and_time(table.rows, metadata), reference_columns=("expert",))
    assert profile.timeline["day"].tolist() == [0.0, 2.0]
    assert profile.timeline["expert"].tolist() == [2.0, 4.0]
    assert profile.agreement["expert"] == (1.0, 2)
    with pytest.raises(MonitoringInputError, match="lacks the patient column 'patientid'"):
        read_study_metadata(path, MetadataColumns(image="file"))


def test_image_key():
    assert image_key("/a/b/Foo Bar.PNG") == image_key("images/foo_bar.jpeg") == "foo_bar"
    assert image_key("ryct.2020200034.fig5-day0.jpeg") == "ryct.2020200034.fig5-day0"


def test_join_profiles_from_two_tables():
    model = pd.DataFrame({"patient_id": ["1", "1", "1", "2", "2"], "day": ["0", "10", "2", "0", "1"],
                          "score_total": ["1", "3", "2", "4", "4"]})
    expert = pd.DataFrame({"patient_id": ["1", "1", "1", "2"], "day": ["0", "2", "10", "0"],
                           "geo": ["1", "3", "2", "5"]})
    joined = join_profiles(model, expert, "score_total", "geo")
    assert joined["time"].tolist() == ["0", "2", "10", "0"]  # numeric order, not text order
    per_patient, pooled = compare_profiles(joined)
    assert per_patient["agreement"].tolist()[0] == pytest.approx(0.5)  # model [1,2,3] -> [1,1]; expert [1,3,2] -> [1,0]
    assert (pooled.n_transitions, pooled.n_patients) == (2, 1)
    with pytest.raises(MonitoringInputError, match="several rows"):
        join_profiles(pd.concat([model, model]), expert, "score_total", "geo")


# --- real data -------------------------------------------------------------------------------------------------------


def test_real_covid_metadata_and_longitudinal_series(shared_data, tmp_path):
    folder = shared_data / "covid-chestxray-dataset"
    metadata = read_study_metadata(folder / "metadata.csv")
    assert metadata.time_kind == "offset"
    # upstream lists five images under two patient ids each; those are reported, not guessed
    assert len(metadata.ambiguous) == 5
    series = pd.read_csv(folder / "longitudinal_series.csv")
    patient = series[series["patientid"].astype(str) == "2"]
    rows = [result_row(str(folder / f), 10.0 * i, 5.0 * i) for i, f in enumerate(patient["stored_file"][::-1], 1)]
    table = read_results(write_results(tmp_path / "results.csv", rows))
    (profile,), unassigned = build_profiles(attach_patient_and_time(table.rows, metadata))
    assert unassigned.empty and profile.patient_id == "2"
    assert profile.timeline["day"].tolist() == sorted(patient["offset_days"].tolist())

    columns = MetadataColumns(image="stored_file", patient="patientid", time="offset_days",
                              extra=("covidnet_geographic",))
    studies = attach_patient_and_time(table.rows, read_study_metadata(folder / "longitudinal_series.csv", columns))
    (profile,), _ = build_profiles(studies, reference_columns=("covidnet_geographic",))
    assert profile.timeline["covidnet_geographic"].tolist() == pytest.approx(
        patient.sort_values("offset_days")["covidnet_geographic"].tolist())


def test_real_dicom_identity(dicom_samples, tmp_path):
    """Patient and time from the DICOM headers as pneumonitor.reading reads them (the columns analyze writes)."""
    from pneumonitor.reading import read_radiograph
    from pneumonitor.inference.analyzer import IDENTITY_COLUMNS

    rows = []
    for path in dicom_samples:
        meta = read_radiograph(path).meta
        row = result_row(str(path), 10, 10)
        row.update({key: meta.get(key, "") or "" for key in IDENTITY_COLUMNS})
        rows.append(row)
    table = read_results(write_results(tmp_path / "results.csv", rows))
    profiles, unassigned = build_profiles(attach_patient_and_time(table.rows))
    by_id = {p.patient_id: p for p in profiles}
    # two samples share PatientID and acquisition time: one profile, both flagged as a tie
    shared = by_id["16d7f894-55d7-4d95-8957-d18987f0e981"]
    assert len(shared.timeline) == 2 and shared.timeline["tie"].all()
    assert by_id["123456"].timeline["time"].tolist() == ["2020-01-25 10:50:00"]
    assert by_id["Covid0000"].timeline.empty and len(by_id["Covid0000"].undated) == 1  # no date in the header
    assert [Path(p).name for p in unassigned["image"]] == ["gdcm-CR-MONO1-10-chest.dcm"]  # no PatientID


def test_ratio_sd_from_analyze_widens_the_change_margin(tmp_path):
    # analyze writes ratio_total_sd (its uncertainty passes); empty everywhere with --uncertainty off
    def rows(sd):
        first = result_row("/d/a.dcm", 20, 20, patient_id="P1", study_date="20200101")
        second = result_row("/d/b.dcm", 30, 30, patient_id="P1", study_date="20200105")
        first["ratio_total_sd"], second["ratio_total_sd"] = sd, sd
        return [first, second]

    for sd, change, margin in (("", "worse", 5.0), (4.0, "stable", 1.96 * np.hypot(4.0, 4.0))):
        table = read_results(write_results(tmp_path / f"sd{sd}" / "results.csv", rows(sd)))
        assert ("ratio_total_sd" in table.rows.columns) == (sd != "")
        (profile,), _ = build_profiles(attach_patient_and_time(table.rows))
        assert profile.timeline["change"].tolist() == ["baseline", change]
        assert profile.timeline["change_margin"].tolist()[1] == pytest.approx(margin)


def test_trend_agreement_against_the_constant_profiles_on_the_same_transitions():
    import pandas as pd

    from pneumonitor.monitoring.compare import against_constant_profiles

    def joined(model: list[float]) -> pd.DataFrame:
        rows = [{"patient": str(p), "time": t, "a": a, "b": b} for p in range(12)
                for t, (a, b) in enumerate(zip(model, [1.0, 2.0, 1.0]))]  # the expert rises, then falls
        return pd.DataFrame(rows)

    follows = against_constant_profiles(joined([0.0, 3.0, 2.0]), n_bootstrap=200)
    assert follows["always_increases"] == follows["never_increases"] == 0.5
    versus = follows["against_best_constant"]
    assert versus["model"]["value"] == 1.0 and versus["difference"]["value"] == 0.5 and versus["verdict"] == "beats"
    assert versus["bootstrap"] == "patients (n=12)"
    rises = against_constant_profiles(joined([1.0, 2.0, 3.0]), n_bootstrap=200)["against_best_constant"]
    assert rises["difference"]["value"] == 0.0 and rises["verdict"] == "not distinguishable"
    assert against_constant_profiles(pd.DataFrame(columns=["patient", "time", "a", "b"])) == {}
