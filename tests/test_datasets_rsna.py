"""RSNA converter: the real Kaggle label CSVs + tiny DICOMs generated here (no RSNA images exist locally)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from pneumonitor.cli import main
from pneumonitor.datasets.rsna import (
    PAPER_SPLIT_SIZES,
    balanced_split_sizes,
    convert_rsna,
    parse_dicom_age,
    plan_rsna_split,
    read_rsna_labels,
)


@pytest.fixture(scope="module")
def rsna_dir(shared_data: Path) -> Path:
    folder = shared_data / "rsna-pneumonia"
    if not (folder / "stage_2_train_labels.csv").is_file():
        pytest.skip(f"RSNA label CSVs not found in {folder}")
    return folder


@pytest.fixture(scope="module")
def rsna_labels(rsna_dir: Path):
    return read_rsna_labels(rsna_dir / "stage_2_train_labels.csv", rsna_dir / "stage_2_detailed_class_info.csv")


def write_dicom(path: Path, age: str | None, size: int = 32, view: str = "PA") -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientID = path.stem
    if age is not None:
        ds.PatientAge = age
    ds.Modality, ds.ViewPosition = "CR", view
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.zeros((size, size), dtype=np.uint8).tobytes()
    ds.save_as(path, enforce_file_format=True)


def test_labels_merge_rows_per_patient(rsna_labels):
    assert len(rsna_labels) == 26684
    assert sum(p.label for p in rsna_labels.values()) == 6012
    assert sum(len(p.boxes) for p in rsna_labels.values()) == 9555
    # every positive has at least one box, negatives none; boxes are x0,y0,x1,y1 with positive extent
    for patient in rsna_labels.values():
        assert bool(patient.boxes) == bool(patient.label)
        for x0, y0, x1, y1 in patient.boxes:
            assert x1 > x0 >= 0 and y1 > y0 >= 0
    multi = [p for p in rsna_labels.values() if len(p.boxes) >= 3]
    assert multi, "the real CSV has patients with several boxes"


def test_parse_dicom_age():
    assert parse_dicom_age("058Y") == 58.0
    assert parse_dicom_age("58") == 58.0
    assert parse_dicom_age("006M") == pytest.approx(0.5)
    assert parse_dicom_age("") is None and parse_dicom_age(None) is None and parse_dicom_age("abc") is None


def test_paper_split_on_the_real_csv(rsna_labels):
    """The full 9004 / 1126 / 1124 split, balanced, adults only, from the real rows with supplied ages."""
    rng = np.random.default_rng(7)
    patients = sorted(rsna_labels)
    # about 4 % children (1-17 years), the rest adults (18-91), as a stand-in for the DICOM header ages
    child = rng.random(len(patients)) < 0.04
    years = np.where(child, rng.integers(1, 18, len(patients)), rng.integers(18, 92, len(patients)))
    ages = {pid: float(age) for pid, age in zip(patients, years)}
    ages[patients[0]] = None  # an unreadable age is dropped, not guessed
    labels = {pid: rsna_labels[pid].label for pid in patients}
    assignment, excluded = plan_rsna_split(labels, ages, seed=0)
    counts = Counter(assignment.values())
    assert (counts["training"], counts["validation"], counts["test"]) == PAPER_SPLIT_SIZES
    for split, size in zip(("training", "validation", "test"), PAPER_SPLIT_SIZES):
        positives = sum(labels[pid] for pid, s in assignment.items() if s == split)
        assert positives == size // 2
    assert all(ages[pid] is not None and ages[pid] >= 18 for pid in assignment)
    assert excluded[patients[0]] == "no PatientAge in the DICOM header"
    assert any(reason.startswith("pediatric") for reason in excluded.values())
    assert set(assignment).isdisjoint(excluded) and len(assignment) + len(excluded) == len(patients)
    again, _ = plan_rsna_split(labels, ages, seed=0)
    other, _ = plan_rsna_split(labels, ages, seed=1)
    assert again == assignment and other != assignment


def test_split_shrinks_when_positives_are_short():
    sizes = balanced_split_sizes(n_positive=100, n_negative=10_000)
    assert sum(p for p, _ in sizes) <= 100
    assert all(abs(p - q) <= 1 for p, q in sizes)


def test_convert_with_generated_dicoms(rsna_dir: Path, rsna_labels, tmp_path: Path):
    positives = [p for p in rsna_labels.values() if len(p.boxes) >= 2][:14]
    negatives = [p for p in rsna_labels.values() if p.label == 0][:16]
    dicom_dir = tmp_path / "stage_2_train_images"
    dicom_dir.mkdir()
    ages: dict[str, str | None] = {}
    for index, patient in enumerate(positives + negatives):
        age = "045Y" if index % 5 else "012Y"  # every 5th is pediatric
        if index == 3:
            age = None
        ages[patient.patient_id] = age
        write_dicom(dicom_dir / f"{patient.patient_id}.dcm", age)
    # a small labels CSV holding the real rows of these patients only (plus one patient with no DICOM)
    import pandas as pd

    table = pd.read_csv(rsna_dir / "stage_2_train_labels.csv")
    missing_id = next(pid for pid in rsna_labels if pid not in ages)
    keep = set(ages) | {missing_id}
    labels_csv = tmp_path / "labels.csv"
    table[table.patientId.isin(keep)].to_csv(labels_csv, index=False)

    items, excluded = convert_rsna(labels_csv, dicom_dir, sizes=(10, 4, 4), seed=3, progress=False)
    reasons = Counter(row["reason"] for row in excluded)
    assert reasons["DICOM file missing"] == 1
    assert reasons["no PatientAge in the DICOM header"] == 1
    assert reasons["pediatric (PatientAge < 18 years)"] == 6
    assert Counter(item["split"] for item in items) == {"training": 10, "validation": 4, "test": 4}
    for item in items:
        assert ages[item["patient_id"]] == "045Y" and item["age"] == 45.0
        assert Path(item["image"]).is_absolute() and item["rows"] == 32
        assert item["source"] == "rsna"
        if item["label"] == 1:
            original = rsna_labels[item["patient_id"]].boxes
            assert len(item["boxes"]) == len(original) >= 2  # all rows of the patient merged
            # Kaggle boxes are at 1024 px; the 32 px DICOM scales them by 1/32
            assert item["boxes"][0] == pytest.approx([v / 32 for v in original[0]], abs=0.01)
        else:
            assert item["boxes"] == []

    out = tmp_path / "out"
    code = main(["datasets", "rsna", "--labels", str(labels_csv), "--dicom-dir", str(dicom_dir), "--sizes", "10,4,4",
                 "--out", str(out), "--seed", "3", "--quiet"])
    assert code == 0
    datalist = json.loads((out / "datalist.json").read_text())
    assert [len(datalist[s]) for s in ("training", "validation", "test")] == [10, 4, 4]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["datalist"]["test"]["labels"] == {"0": 2, "1": 2}
    from monai.data import load_decathlon_datalist

    loaded = load_decathlon_datalist(out / "datalist.json", data_list_key="training")
    assert len(loaded) == 10 and pydicom.dcmread(loaded[0]["image"]).Rows == 32


def test_missing_dicom_folder_is_a_clear_error(rsna_dir: Path, tmp_path: Path, caplog):
    code = main(["datasets", "rsna", "--labels", str(rsna_dir / "stage_2_train_labels.csv"),
                 "--dicom-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"), "--quiet"])
    assert code == 1
    assert "DICOM folder not found" in caplog.text
    assert not (tmp_path / "out").exists()
