"""The app through MONAI Label's REST API (FastAPI TestClient, as MONAI Label's own endpoint tests), on a local
datastore of real radiographs and random-weight networks."""

from __future__ import annotations

import io
import json
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import APP_DIR  # noqa: F401 - puts apps/label on sys.path


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _shape(studies: Path, image_id: str) -> tuple[int, int]:
    from lib.datastore import radiograph_shape

    return radiograph_shape(next(studies.glob(f"{image_id}.*")))


def _infer(client, model: str, image: str, output: str = "image", **params):
    response = client.post(f"/infer/{model}?image={image}&output={output}", data={"params": json.dumps(params)})
    assert response.status_code == 200, response.text
    return response


def _save(client, image: str, payload: bytes, name: str = "label.png", tag: str = "final"):
    return client.put(f"/datastore/label?image={image}&tag={tag}", files={"label": (name, payload)},
                      data={"params": "{}"})


def _ids(client) -> list[str]:
    return sorted(client.get("/datastore/?output=all").json()["objects"].keys())


def test_info_lists_models_trainers_strategies(client):
    info = client.get("/info/").json()
    assert set(info["models"]) == {"lungs", "pneumonia"}
    assert info["models"]["lungs"]["labels"] == {"right lung": 1, "left lung": 2}
    assert info["models"]["pneumonia"]["labels"] == {"right lung": 1, "left lung": 2, "pneumonia": 3}
    assert info["models"]["pneumonia"]["dimension"] == 2
    assert set(info["trainers"]) == {"dlnet", "lsnet"}
    assert {"random", "first", "epistemic", "boxes"} <= set(info["strategies"])
    assert "dlnet_epistemic" in info["scoring"]
    assert info["labels"] == ["right lung", "left lung", "pneumonia"]
    assert len(_ids(client)) == 6


@pytest.mark.parametrize("kind", ["png", "dicom"])
def test_infer_lungs_gives_two_lungs_at_image_size(client, studies, kind):
    image = "dx_image" if kind == "dicom" else sorted(p.stem for p in studies.glob("*.png"))[0]
    label = np.asarray(Image.open(io.BytesIO(_infer(client, "lungs", image).content)))
    assert label.shape == _shape(studies, image)
    assert set(np.unique(label)) == {1, 2}  # the test LSNet calls everything lung
    columns = np.arange(label.shape[1])[None].repeat(label.shape[0], 0)
    # the patient's right lung (1) is on the image's left
    assert columns[label == 1].mean() < columns[label == 2].mean()


def test_infer_pneumonia_metadata_and_nrrd_for_ohif(client, studies):
    import SimpleITK as sitk

    image = "gdcm-CR-MONO1-10-chest"
    params = _infer(client, "pneumonia", image, output="json")
    result = params.json()
    assert result["pneumonia_probability"] > 0.62 and result["positive"] == 1
    assert result["source"] == "heatmap"
    assert result["ratio_total"] == pytest.approx(100.0) and result["score_total"] == 8
    # the uncertainty of pneumonitor analyze (a mirrored pass by default)
    assert result["ratio_total_sd"] >= 0 and result["score_total_low"] <= 8 <= result["score_total_high"]
    assert result["pneumonia_probability_low"] <= result["pneumonia_probability"] <= result["pneumonia_probability_high"]
    response = _infer(client, "pneumonia", image, result_extension=".nrrd")
    with tempfile.NamedTemporaryFile(suffix=".nrrd") as handle:
        handle.write(response.content)
        handle.flush()
        itk = sitk.ReadImage(handle.name)
    rows, columns = _shape(studies, image)
    assert itk.GetSize() == (columns, rows, 1)
    assert set(np.unique(sitk.GetArrayFromImage(itk))) == {3}  # heatmap >= 0.8 everywhere: pneumonia covers the lungs


def test_infer_errors_are_reasons_not_tracebacks(client, studies):
    # no lung above a threshold of 1.1: the paper's severity needs both lungs
    response = client.post("/infer/pneumonia?image=dx_image&output=json",
                           data={"params": json.dumps({"lung_threshold": 1.1})})
    assert response.status_code == 422 and "no lung" in response.json()["detail"], response.text
    # an operating point the DLNet bundle does not name: refused with the names it has
    response = client.post("/infer/pneumonia?image=dx_image&output=json",
                           data={"params": json.dumps({"operating_point": "screening"})})
    assert response.status_code == 422 and "'screening' is not one of" in response.json()["detail"], response.text
    (studies / "broken.png").write_bytes(b"not a png")
    client.get("/datastore/?output=all")  # the datastore lists the new file
    response = client.post("/infer/lungs?image=broken&output=json")
    # a file that is no image: refused with a reason (the datastore may not index it at all), never a traceback
    detail = response.json()["detail"]
    assert (response.status_code, detail.split(" ")[0]) in ((422, "image"), (404, "image")), response.text
    assert "skipped" in detail or "not in the datastore" in detail, response.text


def test_image_qc_gate_refuses_the_lateral_dx_with_its_finding(client):
    response = client.post("/infer/lungs?image=dx_image&output=json", data={"params": json.dumps({"qc": "on"})})
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith("image skipped: image QC: lateral view"), response.text
    response = client.post("/infer/pneumonia?image=dx_image&output=json", data={"params": json.dumps({"qc": "warn"})})
    assert response.status_code == 200, response.text
    assert "qc" in response.text and "lateral view" in response.text


def test_infer_pneumonia_on_box_only_image_is_proposal_inside_boxes(client, studies):
    image = sorted(p.stem for p in studies.glob("*.png"))[1]
    rows, columns = _shape(studies, image)
    box = [columns // 8, rows // 4, columns // 2, 3 * rows // 4]  # x0, y0, x1, y1 (end-exclusive)
    response = client.put(f"/datastore/image/info?image={image}", data={"info": json.dumps({"boxes": [box]})})
    assert response.status_code == 200, response.text
    assert client.post("/activelearning/boxes").json()["id"] == image
    result = _infer(client, "pneumonia", image, output="json").json()
    assert result["source"] == "gradcam-proposal" and result["boxes"] == 1
    label = np.asarray(Image.open(io.BytesIO(_infer(client, "pneumonia", image).content)))
    outside = np.ones(label.shape, dtype=bool)
    outside[box[1]:box[3], box[0]:box[2]] = False
    assert not np.any(label[outside] == 3)
    assert np.any(label[~outside] == 3), "the proposal is empty"
    # once the image has an annotator label it is no longer box-only
    assert _save(client, image, _png(label)).status_code == 200
    assert client.post("/activelearning/boxes").json() == {}


def test_saved_labels_are_validated(client, studies):
    image = "dx_image"
    rows, columns = _shape(studies, image)
    good = np.zeros((rows, columns), dtype=np.uint8)
    good[10:60, 20:90] = 1
    good[10:60, 120:190] = 2
    good[30:40, 30:50] = 3
    wrong_size = np.zeros((rows + 1, columns), dtype=np.uint8)
    unknown = good.copy()
    unknown[0, 0] = 7
    rgb = np.zeros((rows, columns, 3), dtype=np.uint8)
    for payload, reason in ((_png(wrong_size), "the image is"), (_png(unknown), "unknown label values [7]"),
                            (_png(rgb), "single-channel"), (b"not an image", "could not read")):
        response = _save(client, image, payload)
        assert response.status_code == 422 and reason in response.text, response.text
    assert client.get(f"/datastore/label?label={image}&tag=final").status_code == 404  # nothing was written
    assert _save(client, image, _png(good)).status_code == 200
    stored = np.asarray(Image.open(io.BytesIO(client.get(f"/datastore/label?label={image}&tag=final").content)))
    np.testing.assert_array_equal(stored, good)
    # OHIF sends the labelmap as raw bytes, row-major
    assert _save(client, image, good[:, ::-1].copy().tobytes(), name="label.bin").status_code == 200
    stored = np.asarray(Image.open(io.BytesIO(client.get(f"/datastore/label?label={image}&tag=final").content)))
    np.testing.assert_array_equal(stored, good[:, ::-1])
    assert _save(client, image, good.tobytes()[:-1], name="label.bin").status_code == 422
    assert _save(client, "no-such-image", _png(good)).status_code == 404


def test_twenty_concurrent_saves_lose_nothing(client, studies):
    ids = _ids(client)
    jobs = []
    for n in range(20):
        image = ids[n % len(ids)]
        rows, columns = _shape(studies, image)
        label = np.zeros((rows, columns), dtype=np.uint8)
        label[: 1 + n] = 1 + n % 3  # each save is distinguishable
        jobs.append((image, f"t{n:02d}", label))
    with ThreadPoolExecutor(max_workers=20) as pool:
        codes = list(pool.map(lambda job: _save(client, job[0], _png(job[2]), tag=job[1]).status_code, jobs))
    assert codes == [200] * 20
    index = json.loads((studies / "datastore_v2.json").read_text())  # valid JSON, written atomically
    for image, tag, label in jobs:
        assert tag in index["objects"][image]["labels"], (image, tag)
        stored = np.asarray(Image.open(studies / "labels" / tag / f"{image}.png"))
        np.testing.assert_array_equal(stored, label)
    assert not [p for p in studies.rglob(".*") if ".tmp" in p.name]  # no temporary file of pneumonitor.publishing


def test_active_learning_strategies(client):
    ids = _ids(client)
    assert client.post("/activelearning/first").json()["id"] == ids[0]
    assert client.post("/activelearning/random").json()["id"] in ids
    chosen = client.post("/activelearning/epistemic").json()
    assert chosen["id"] in ids and chosen["epistemic_score"] > 0
    info = client.get(f"/datastore/image/info?image={chosen['id']}").json()
    assert info["epistemic_passes"] == 8 and info["epistemic_score"] == pytest.approx(chosen["epistemic_score"])
    # the most uncertain image is served first
    scores = {i: client.get(f"/datastore/image/info?image={i}").json()["epistemic_score"] for i in ids}
    assert chosen["epistemic_score"] == pytest.approx(max(scores.values()))


def test_train_one_epoch_from_saved_labels(client, studies, tmp_path):
    """Annotator labels -> one epoch of each bundle's training -> validated promotion decision recorded."""
    ids = _ids(client)
    for image in ids[:4]:
        label = np.asarray(Image.open(io.BytesIO(_infer(client, "pneumonia", image).content))).copy()
        label[: label.shape[0] // 2][label[: label.shape[0] // 2] == 3] = 1  # the annotator trims the proposal
        assert _save(client, image, _png(label)).status_code == 200
    for model in ("lsnet", "dlnet"):
        response = client.post(f"/train/{model}?run_sync=true", json={"max_epochs": 1, "val_split": 0.25})
        assert response.status_code == 200, response.text
        record = json.loads((tmp_path / "model" / model / "models" / "validation.json").read_text())["last"]
        assert record["decision"] in ("promoted", "kept"), record
        assert record["train_items"] >= 3 and record["val_items"] == 1
        assert np.isfinite(record["candidate_score"]) and np.isfinite(record["served_score"])
        staged = list((tmp_path / "model" / model / "staging").glob("*/models/*.pt"))
        assert staged, "the training run wrote no checkpoint"
    # the served models still answer after training
    _infer(client, "pneumonia", ids[0], output="json")


def test_ohif_build_is_served_at_ohif_with_its_client_routes(client):
    """/ohif/ serves apps/label/ohif/dist (OHIF 3.12 + the pneumonitor mode) instead of MONAI Label's bundled OHIF:
    its files with their types, any other path the index (OHIF routes such as /ohif/monai-label), nothing outside."""
    build = APP_DIR / "ohif" / "dist"
    if not (build / "index.html").is_file():
        pytest.skip(f"no OHIF build in {build}: bash apps/label/ohif/build.sh")
    index = client.get("/ohif/")
    assert index.status_code == 200 and "window.PUBLIC_URL = '/ohif/'" in index.text
    assert index.headers["cache-control"] == "no-cache"
    mode = client.get("/ohif/pneumonitor/mode.js")
    assert mode.status_code == 200 and mode.headers["content-type"].startswith("text/javascript")
    assert "routeName: 'monai-label'" in mode.text
    assert client.get("/ohif/app-config.js").text.count("/ohif/pneumonitor/") == 2
    assert client.get("/ohif/monai-label?StudyInstanceUIDs=1.2.3").text == index.text
    for outside in ("/ohif/..%2F..%2Fmain.py", "/ohif/../main.py", "/ohif/%2Fetc%2Fpasswd"):
        answer = client.get(outside)  # the index, or 404 where the client already resolved the dots
        assert answer.text == index.text or answer.status_code == 404, outside
