"""A real PACS round trip: the app's SEG, SR and overlay objects stored to Orthanc with DICOMweb STOW-RS, found again
with QIDO-RS and read back with WADO-RS, byte-for-byte the same content.

Orthanc (Debian packages ``orthanc`` + ``orthanc-dicomweb``) is started by this test on loopback with
``RemoteAccessAllowed: false``, free ports and a temporary database, and stopped afterwards.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests

from operators.records import CaseRecord

from test_operators import (
    PneumoniaInferenceOperator,
    RadiographConverterOperator,
    SeverityOperator,
    _Host,
    build_objects,
    load_analyzer,
    write_models,
)

ORTHANC = shutil.which("Orthanc") or next((p for p in ("/usr/sbin/Orthanc",) if Path(p).is_file()), None)
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")

pytestmark = pytest.mark.skipif(
    ORTHANC is None or not DICOMWEB_PLUGIN.is_file(),
    reason="Orthanc with the DICOMweb plugin is not installed (Debian packages orthanc, orthanc-dicomweb)",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    """``http://127.0.0.1:PORT`` of a private Orthanc; stopped (and its database removed) after the module."""
    folder = tmp_path_factory.mktemp("orthanc")
    port = free_port()
    config = {
        "Name": "pneumonitor-test",
        "StorageDirectory": str(folder / "db"),
        "IndexDirectory": str(folder / "db"),
        "HttpPort": port,
        "DicomPort": free_port(),
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
    }
    (folder / "orthanc.json").write_text(json.dumps(config))
    log = (folder / "orthanc.log").open("w")
    process = subprocess.Popen([ORTHANC, str(folder / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{url}/system", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Orthanc did not start: {(folder / 'orthanc.log').read_text()[-2000:]}")
            time.sleep(0.3)
        plugins = requests.get(f"{url}/plugins", timeout=5).json()
        assert "dicom-web" in plugins, plugins
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture(scope="module")
def objects(tmp_path_factory, dicom_samples):
    """SEG, SR and SC of two samples, built by the app's operators."""
    models = write_models(tmp_path_factory.mktemp("pacs-models"))
    analyzer = load_analyzer(models["models"], device="cpu")
    records = []
    for path in dicom_samples:
        # two frontal radiographs (the lateral dx_image.dcm is refused by the QC gate): a DX and a CR
        if path.name in ("1.3.6.1.4.1.11129.5.5.110503645592756492463169821050252582267888.dcm",
                         "gdcm-CR-MONO1-10-chest.dcm"):
            dataset = pydicom.dcmread(path, stop_before_pixels=True)
            records.append(CaseRecord(source=path, study_instance_uid=dataset.StudyInstanceUID, dataset=dataset))
    for record in records:
        RadiographConverterOperator.convert(record)
    PneumoniaInferenceOperator.predict(_Host(analyzer=analyzer, batch_size=2), records)
    for record in records:
        SeverityOperator.assess(_Host(analyzer=analyzer), record)
    build_objects(records)
    assert all(r.ok for r in records), [r.reason for r in records]
    folder = tmp_path_factory.mktemp("objects")
    files = []
    for index, record in enumerate(records):
        for kind, ds in record.objects.items():
            files.append(folder / f"{index}-{kind}.dcm")
            ds.save_as(files[-1], enforce_file_format=True)
    return files


def multipart_parts(response) -> list[bytes]:
    """Bodies of a ``multipart/related`` response (RFC 2387)."""
    content_type = response.headers["Content-Type"]
    boundary = next(p.split("=", 1)[1].strip('"') for p in content_type.split(";") if p.strip().startswith("boundary"))
    parts = []
    for chunk in response.content.split(b"--" + boundary.encode())[1:]:
        if chunk.startswith(b"--"):
            break
        _, _, body = chunk.partition(b"\r\n\r\n")
        parts.append(body[:-2] if body.endswith(b"\r\n") else body)
    return parts


def stow(url: str, files: list[Path]) -> dict:
    boundary = uuid.uuid4().hex
    delimiter = b"--" + boundary.encode()
    body = b"".join(
        delimiter + b"\r\nContent-Type: application/dicom\r\n\r\n" + f.read_bytes() + b"\r\n" for f in files
    ) + delimiter + b"--\r\n"
    response = requests.post(
        f"{url}/dicom-web/studies",
        data=body,
        headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json",
        },
        timeout=60,
    )
    assert response.ok, response.text
    return response.json()


def test_orthanc_accepts_and_returns_the_objects(orthanc, objects):
    import highdicom as hd

    result = stow(orthanc, objects)
    assert "00081198" not in result or not result["00081198"].get("Value"), result  # Failed SOP Sequence
    stored = {item["00081155"]["Value"][0] for item in result["00081199"]["Value"]}  # Referenced SOP Sequence
    originals = {pydicom.dcmread(f).SOPInstanceUID: f for f in objects}
    assert stored == set(originals)
    assert len(requests.get(f"{orthanc}/instances", timeout=10).json()) == len(objects)

    for uid, path in originals.items():
        original = pydicom.dcmread(path)
        found = requests.get(
            f"{orthanc}/dicom-web/instances", params={"SOPInstanceUID": uid}, timeout=10,
            headers={"Accept": "application/dicom+json"},
        ).json()
        assert len(found) == 1 and found[0]["00080060"]["Value"][0] == original.Modality
        response = requests.get(
            f"{orthanc}/dicom-web/studies/{original.StudyInstanceUID}/series/{original.SeriesInstanceUID}"
            f"/instances/{uid}",
            headers={"Accept": 'multipart/related; type="application/dicom"'},
            timeout=30,
        )
        assert response.ok, response.text
        (part,) = multipart_parts(response)
        returned = pydicom.dcmread(pydicom.filebase.DicomBytesIO(part))
        assert returned.SOPInstanceUID == uid and returned.SOPClassUID == original.SOPClassUID
        assert returned.PatientID == original.PatientID and returned.StudyInstanceUID == original.StudyInstanceUID
        if original.Modality == "SEG":
            seg = hd.seg.Segmentation.from_dataset(returned)
            assert seg.number_of_segments == 3
            assert np.array_equal(returned.pixel_array, original.pixel_array)
        elif original.Modality == "SR":
            sr = hd.sr.Comprehensive3DSR.from_dataset(returned)
            back = [(m.name.meaning, m.value) for m in sr.content.get_image_measurement_groups()[0].get_measurements()]
            before = hd.sr.Comprehensive3DSR.from_dataset(original).content.get_image_measurement_groups()[0]
            assert back == [(m.name.meaning, m.value) for m in before.get_measurements()]
        else:
            assert returned.PhotometricInterpretation == "RGB"
            assert np.array_equal(returned.pixel_array, original.pixel_array)
