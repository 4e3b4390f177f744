"""Integration: a real Orthanc (DICOMweb) and a real MONAI Label server, both on loopback.

The path OHIF uses: series listed from Orthanc (DX/CR only), ``/infer/pneumonia`` with ``.nrrd`` output, the label
saved as OHIF sends it (``label.bin``), stored back in Orthanc as a DICOM SEG, and read from that SEG for training.
"""

from __future__ import annotations

import io
import json
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pydicom
import requests

from servers import listening_addresses


def _seg_series(orthanc_url: str) -> list[dict]:
    response = requests.get(f"{orthanc_url}/dicom-web/series", params={"Modality": "SEG"}, timeout=30)
    return response.json() if response.status_code == 200 and response.content else []


def test_server_binds_loopback_and_lists_only_dx_cr(dicomweb):
    port = int(dicomweb["server"].rsplit(":", 1)[1])
    assert listening_addresses(port) == {"127.0.0.1"}
    listed = set()
    for _ in range(4):
        listed.add(requests.post(f"{dicomweb['server']}/activelearning/random", timeout=60).json()["id"])
    assert listed <= set(dicomweb["series"])
    first = requests.post(f"{dicomweb['server']}/activelearning/first", timeout=60).json()["id"]
    assert first == sorted(dicomweb["series"])[0]
    assert not set(dicomweb["ct"]) & listed


def test_infer_nrrd_then_save_as_ohif_stores_seg_in_orthanc(dicomweb):
    import SimpleITK as sitk

    server, orthanc_url = dicomweb["server"], dicomweb["orthanc"]
    series_uid, path = next((s, p) for s, p in dicomweb["series"].items() if p.name == "dx_image.dcm")
    header = pydicom.dcmread(path, stop_before_pixels=True)
    rows, columns = int(header.Rows), int(header.Columns)
    response = requests.post(
        f"{server}/infer/pneumonia?image={series_uid}&output=image",
        data={"params": json.dumps({"result_extension": ".nrrd", "result_dtype": "uint8"})}, timeout=120,
    )
    assert response.status_code == 200, response.text
    with tempfile.NamedTemporaryFile(suffix=".nrrd") as handle:
        handle.write(response.content)
        handle.flush()
        proposal = sitk.GetArrayFromImage(sitk.ReadImage(handle.name))
    assert proposal.shape == (1, rows, columns)
    corrected = proposal[0].copy()
    corrected[:, : columns // 3][corrected[:, : columns // 3] == 3] = 1  # the annotator removes some pneumonia
    before = len(_seg_series(orthanc_url))
    saved = requests.put(f"{server}/datastore/label?image={series_uid}&tag=final",
                         files={"label": ("label.bin", corrected.tobytes())}, data={"params": "{}"}, timeout=120)
    assert saved.status_code == 200, saved.text
    segs = _seg_series(orthanc_url)
    assert len(segs) == before + 1
    # a fresh datastore (another machine's cache) reads the label back from the SEG, as training does
    from monailabel.config import settings

    from lib.dicomweb import make_dicomweb_datastore

    settings.MONAI_LABEL_DICOMWEB_CACHE_PATH = str(dicomweb["work"] / "other-cache")
    store = make_dicomweb_datastore(f"{orthanc_url}/dicom-web", ["DX", "CR"])
    items = {Path(i["image"]).parent.name: i["label"] for i in store.datalist()}  # <series>/<instance file>
    assert series_uid in items
    from PIL import Image

    np.testing.assert_array_equal(np.asarray(Image.open(items[series_uid])), corrected)


def test_twenty_concurrent_saves_on_the_real_server(dicomweb):
    server = dicomweb["server"]
    jobs = []
    for n, (series_uid, path) in enumerate((sorted(dicomweb["series"].items()) * 10)[:20]):
        header = pydicom.dcmread(path, stop_before_pixels=True)
        label = np.zeros((int(header.Rows), int(header.Columns)), dtype=np.uint8)
        label[: 1 + n] = 1 + n % 3
        jobs.append((series_uid, f"draft{n:02d}", label))

    def save(job):
        series_uid, tag, label = job
        buffer = io.BytesIO()
        from PIL import Image

        Image.fromarray(label).save(buffer, format="PNG")
        return requests.put(f"{server}/datastore/label?image={series_uid}&tag={tag}",
                            files={"label": ("label.png", buffer.getvalue())}, data={"params": "{}"},
                            timeout=120).status_code

    with ThreadPoolExecutor(max_workers=20) as pool:
        assert list(pool.map(save, jobs)) == [200] * 20
    from PIL import Image

    for series_uid, tag, label in jobs:
        response = requests.get(f"{server}/datastore/label?label={series_uid}&tag={tag}", timeout=30)
        assert response.status_code == 200, (series_uid, tag)
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(response.content))), label)


def test_background_training_reads_the_labels_from_orthanc(dicomweb):
    """``POST /train/lsnet`` runs in a background process of the server, on the labels stored as SEG."""
    import time

    from PIL import Image

    server = dicomweb["server"]
    for series_uid, path in sorted(dicomweb["series"].items())[:2]:
        header = pydicom.dcmread(path, stop_before_pixels=True)
        label = np.zeros((int(header.Rows), int(header.Columns)), dtype=np.uint8)
        label[:, : label.shape[1] // 2] = 1
        label[:, label.shape[1] // 2:] = 2
        buffer = io.BytesIO()
        Image.fromarray(label).save(buffer, format="PNG")
        saved = requests.put(f"{server}/datastore/label?image={series_uid}&tag=final",
                             files={"label": ("label.png", buffer.getvalue())}, data={"params": "{}"}, timeout=120)
        assert saved.status_code == 200, saved.text
    started = requests.post(f"{server}/train/lsnet", json={"max_epochs": 1}, timeout=60)
    assert started.status_code == 200, started.text
    deadline = time.monotonic() + 240
    status = {}
    while time.monotonic() < deadline:
        status = requests.get(f"{server}/train/", timeout=30).json()
        if status.get("status") in ("DONE", "ERROR", "STOPPED"):
            break
        time.sleep(2)
    assert status.get("status") == "DONE", status
    record = json.loads((dicomweb["work"] / "model" / "lsnet" / "models" / "validation.json").read_text())["last"]
    assert record["train_items"] + record["val_items"] >= 2 and record["decision"] in ("promoted", "kept"), record
