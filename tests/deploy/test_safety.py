"""The Deploy app's loader, selector and store on hostile input folders (issue 16): every input gets one record
with its reason, nothing is analysed twice, nothing partial survives a killed run. Inputs are made with pydicom."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from monai.deploy.core import Fragment

from operators.selection import CXRDataLoaderOperator, CXRSeriesSelectorOperator
from operators.store import DICOMStoreOperator

from test_reading_safety import chest_like
from test_reading import make_dicom


@pytest.fixture(scope="module")
def fragment():
    return Fragment()


def records_of(fragment, folder: Path) -> dict[str, list]:
    """What the app's first two operators make of ``folder``: records by file name (a list: duplicates show)."""
    loader = CXRDataLoaderOperator(fragment, input_folder=folder, name="loader")
    records = CXRSeriesSelectorOperator(fragment, name="selector").select(loader.load_data_to_studies(folder))
    by_name: dict[str, list] = {}
    for record in records + loader.unreadable:
        by_name.setdefault(record.source.name, []).append(record)
    return by_name


def header_only(path: Path, sop_class: str, **attributes) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    for key, value in attributes.items():
        setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=False)
    return path


def test_a_symlink_loop_lists_each_radiograph_once(fragment, tmp_path):
    """Regression (issue 16, item 6): a directory symlink loop analysed one radiograph 41 times."""
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    make_dicom(folder / "sub" / "a.dcm", chest_like())
    (folder / "sub" / "loop").symlink_to(folder, target_is_directory=True)
    (folder / "link.dcm").symlink_to(folder / "sub" / "a.dcm")
    records = [r for same_name in records_of(fragment, folder).values() for r in same_name]
    assert len(records) == 1 and records[0].ok and records[0].source.name in ("a.dcm", "link.dcm")


def test_every_readable_file_the_sdk_drops_gets_a_record(fragment, tmp_path):
    """Regression (issue 16, item 6): results.csv had no row for instances without UIDs, DICOMDIRs and empty
    datasets, and the log did not name them."""
    folder = tmp_path / "in"
    folder.mkdir()
    make_dicom(folder / "good.dcm", chest_like())
    no_study = make_dicom(folder / "no-study.dcm", chest_like())
    ds = pydicom.dcmread(no_study)
    del ds.StudyInstanceUID
    ds.save_as(no_study)
    header_only(folder / "DICOMDIR", "1.2.840.10008.1.3.10", FileSetID="X")
    header_only(folder / "empty.dcm", "1.2.840.10008.5.1.4.1.1.1.1")
    records = records_of(fragment, folder)
    assert sorted(records) == ["DICOMDIR", "empty.dcm", "good.dcm", "no-study.dcm"]
    assert records["good.dcm"][0].ok
    reasons = {name: r[0].reason for name, r in records.items() if name != "good.dcm"}
    assert reasons == {
        "DICOMDIR": "DICOMDIR is a DICOMDIR (a media directory), not an image",
        "empty.dcm": "empty.dcm has no StudyInstanceUID: not an analysable DICOM instance",
        "no-study.dcm": "no-study.dcm has no StudyInstanceUID: not an analysable DICOM instance",
    }
    assert all(r[0].status == "skipped" for name, r in records.items() if name != "good.dcm")


def test_control_characters_are_skipped_duplicates_and_shared_studies_flagged(fragment, tmp_path, caplog):
    """Regression (issue 16, items 6-7): a PatientID with a newline was copied into SEG/SR/SC (60 dciodvfy errors);
    duplicate SOP instances and a study shared by two patients were not flagged."""
    folder = tmp_path / "in"
    folder.mkdir()
    image = chest_like()
    make_dicom(folder / "newline.dcm", image, PatientID="P1\nP2")
    make_dicom(folder / "a.dcm", image)
    shutil.copyfile(folder / "a.dcm", folder / "b-copy.dcm")
    study = generate_uid()
    make_dicom(folder / "patient-x.dcm", image, StudyInstanceUID=study, PatientID="X")
    make_dicom(folder / "patient-y.dcm", image, StudyInstanceUID=study, PatientID="Y")
    with caplog.at_level("WARNING"):
        records = {name: r[0] for name, r in records_of(fragment, folder).items()}
    assert records["newline.dcm"].reason == "PatientID 'P1\\nP2' contains control characters, which DICOM text values cannot hold"
    assert all(records[n].ok for n in ("a.dcm", "b-copy.dcm", "patient-x.dcm", "patient-y.dcm"))
    sop = records["a.dcm"].sop_instance_uid
    assert f"SOP instance {sop} is in 2 files ({folder / 'a.dcm'}, {folder / 'b-copy.dcm'}); each is analysed" in caplog.text
    assert f"study {study} holds images of 2 patients (PatientID 'X', 'Y')" in caplog.text


def test_store_removes_what_a_killed_run_left(fragment, tmp_path):
    """Regression (issue 16, item 6): a killed run's partial study folder and hidden temp files stayed for ever."""
    out = tmp_path / "out"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = out / f".1.2.3.{dead.pid}-0a1b2c3d.tmp"  # pneumonitor.publishing.atomic_folder's name
    stale.mkdir(parents=True)
    (stale / "01-seg.dcm").write_bytes(b"half")
    (out / f".1.2.6.partial-{dead.pid}").mkdir()  # the name the store gave before pneumonitor.publishing
    live = out / f".1.2.4.{os.getppid()}-0a1b2c3d.tmp"  # a live process's: never touched
    live.mkdir()
    (out / ".results.csv.tmp").write_text("half")
    (out / "1.2.5").mkdir()  # a finished study of an earlier run stays
    DICOMStoreOperator(fragment, output_folder=out, name="store").store([])
    assert sorted(p.name for p in out.iterdir()) == sorted([live.name, "1.2.5", "results.csv", "results.json"])
