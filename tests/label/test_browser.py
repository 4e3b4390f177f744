"""The annotator's round trip in OHIF, in a real headless Chromium (``browser/ohif_round_trip.mjs``, Playwright's
``playwright-core``), on a label server and an Orthanc of its own (a whole annotation session: labels, boxes and
a training run change the server's state, which test_orthanc.py must not inherit), with the OHIF build of
``apps/label/ohif/build.sh`` (OHIF 3.12 and the pneumonitor MONAI Label mode for radiographs) served at ``/ohif/``.

The browser opens the NIH DX in a stack viewport, runs ``pneumonia``, paints with the Brush and the Eraser, saves,
opens the saved DICOM SEG over the DX again, asks the ``boxes`` strategy for the next sample (the CR, which only has
boxes), runs ``pneumonia`` there (the Grad-CAM proposal) and trains ``lsnet`` for one epoch. The screenshots and the
step report are kept in ``$PNEUMONITOR_LABEL_ARTIFACTS`` (default ``out/label-browser/``). The checks here compare
what the browser saw with the server's datastore and the SEG in Orthanc.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests

from conftest import APP_DIR, NIH_DX, REPO_ROOT, dicomweb_servers

BROWSER_DIR = Path(__file__).resolve().parent / "browser"
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium")
NODE = shutil.which("node")
DCIODVFY = shutil.which("dciodvfy")
OHIF_BUILD = APP_DIR / "ohif" / "dist"
#: boxes of the CR that has no label: the `boxes` strategy serves it, `pneumonia` proposes Grad-CAM inside them
CR_BOXES = [[100, 150, 300, 400]]
STEPS = ("open-stack-viewport", "panel-connected", "run-pneumonia", "edit-brush-eraser", "save", "seg-reopened",
         "next-sample", "boxes-proposal", "train")


@pytest.fixture(scope="module")
def annotation_servers(tmp_path_factory, source_bundles, shared_data):
    with dicomweb_servers(tmp_path_factory.mktemp("browser"), source_bundles, shared_data) as servers:
        yield servers


@pytest.fixture(scope="module")
def round_trip(annotation_servers):
    if NODE is None or CHROMIUM is None:
        pytest.skip("the browser check needs node and chromium (apt-get install nodejs chromium)")
    if not (BROWSER_DIR / "node_modules" / "playwright-core").is_dir():
        pytest.skip(f"playwright-core is not installed: npm install --prefix {BROWSER_DIR}")
    if not (OHIF_BUILD / "index.html").is_file():
        pytest.skip(f"no OHIF build in {OHIF_BUILD}: bash apps/label/ohif/build.sh")
    server = annotation_servers["server"]
    by_name = {path.name: (series, path) for series, path in annotation_servers["series"].items()}
    dx_series, dx_path = by_name[NIH_DX]
    cr_series, cr_path = by_name["gdcm-CR-MONO1-10-chest.dcm"]
    boxes = requests.put(f"{server}/datastore/image/info?image={cr_series}",
                         data={"info": json.dumps({"boxes": CR_BOXES})}, timeout=60)
    assert boxes.status_code == 200, boxes.text
    artifacts = Path(os.environ.get("PNEUMONITOR_LABEL_ARTIFACTS", REPO_ROOT / "out" / "label-browser"))
    artifacts.mkdir(parents=True, exist_ok=True)
    config = {
        "server": server, "outDir": str(artifacts),
        "study": str(pydicom.dcmread(dx_path, stop_before_pixels=True).StudyInstanceUID), "series": dx_series,
        "boxStudy": str(pydicom.dcmread(cr_path, stop_before_pixels=True).StudyInstanceUID), "boxSeries": cr_series,
        "strategy": "boxes", "trainer": "lsnet", "epochs": 1,
    }
    result = subprocess.run([NODE, str(BROWSER_DIR / "ohif_round_trip.mjs"), json.dumps(config)], cwd=BROWSER_DIR,
                            capture_output=True, text=True, timeout=900, env={**os.environ, "CHROMIUM": CHROMIUM})
    report_file = artifacts / "ohif_round_trip.json"
    assert report_file.is_file(), result.stdout + result.stderr
    report = json.loads(report_file.read_text())
    report["by_step"] = {s["step"]: s for s in report["steps"]}
    report["artifacts"] = artifacts
    report["dx"] = (dx_series, pydicom.dcmread(dx_path, stop_before_pixels=True))
    report["log"] = result.stdout + result.stderr
    return report


def _step(report: dict, name: str) -> dict:
    step = report["by_step"].get(name)
    assert step is not None, f"the browser never reached {name!r}:\n{report['log'][-3000:]}\n{report['console'][-5:]}"
    assert step["ok"], step
    return step


def _seg_of_study(orthanc_url: str, study_uid: str) -> list[bytes]:
    ids = requests.post(f"{orthanc_url}/tools/find", timeout=30,
                        json={"Level": "Instance", "Query": {"Modality": "SEG", "StudyInstanceUID": study_uid}}).json()
    return [requests.get(f"{orthanc_url}/instances/{i}/file", timeout=30).content for i in ids]


def test_the_dx_opens_in_a_stack_viewport_and_pneumonia_shows_its_mask_and_scores(round_trip):
    opened = _step(round_trip, "open-stack-viewport")
    assert opened["data"]["viewportType"] == "stack" and opened["data"]["rows"] == 1024
    _step(round_trip, "panel-connected")
    run = _step(round_trip, "run-pneumonia")
    for field in ("probability", "ratio right", "ratio left", "score"):
        assert field in run["data"]["result"], run["data"]["result"]
    assert sum(run["data"]["counts"]) == 1024 * 1024 and sum(run["data"]["counts"][1:]) > 0


def test_brush_and_eraser_edit_the_mask(round_trip):
    edit = _step(round_trip, "edit-brush-eraser")["data"]
    assert edit["brushed"][1] > edit["proposed"][1]  # Brush on segment 1 (right lung)
    assert edit["edited"][0] > edit["brushed"][0]  # Eraser back to background


def test_save_puts_the_edited_label_in_the_datastore_and_a_seg_of_it_in_orthanc(round_trip, annotation_servers):
    from lib.dicomweb import seg_to_label
    from PIL import Image

    saved = _step(round_trip, "save")["data"]
    dx_series, dx = round_trip["dx"]
    label = requests.get(f"{annotation_servers['server']}/datastore/label?label={dx_series}&tag=final", timeout=60)
    assert label.status_code == 200
    label_map = np.asarray(Image.open(io.BytesIO(label.content)))
    assert np.bincount(label_map.ravel(), minlength=4).tolist() == saved["counts"]
    segs = _seg_of_study(annotation_servers["orthanc"], str(dx.StudyInstanceUID))
    assert len(segs) == 1
    seg = pydicom.dcmread(io.BytesIO(segs[0]))
    assert seg.StudyInstanceUID == dx.StudyInstanceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == dx_series
    assert seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == dx.SOPInstanceUID
    seg_path = round_trip["artifacts"] / "saved_seg.dcm"
    seg_path.write_bytes(segs[0])
    np.testing.assert_array_equal(seg_to_label(seg_path, str(dx.SOPInstanceUID)), label_map)


@pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy not installed (Debian package dicom3tools)")
def test_dciodvfy_reports_no_error_on_the_saved_seg(round_trip):
    _step(round_trip, "save")
    seg_path = round_trip["artifacts"] / "saved_seg.dcm"
    if not seg_path.is_file():
        pytest.skip("the SEG was not fetched (see the save test)")
    report = subprocess.run([DCIODVFY, str(seg_path)], capture_output=True, text=True)
    errors = [line for line in (report.stdout + report.stderr).splitlines() if line.startswith("Error")]
    assert not errors, errors


def test_the_saved_seg_opens_again_over_its_radiograph(round_trip):
    saved = _step(round_trip, "save")["data"]
    reopened = _step(round_trip, "seg-reopened")["data"]
    assert reopened["counts"] == saved["counts"]
    assert reopened["state"]["series"] == round_trip["dx"][0] and reopened["state"]["viewportType"] == "stack"


def test_next_sample_follows_the_strategy_and_box_only_images_get_the_gradcam_proposal(round_trip):
    next_sample = _step(round_trip, "next-sample")["data"]
    assert next_sample["series"] == round_trip["config"]["boxSeries"] and next_sample["modality"] == "CR"
    proposal = _step(round_trip, "boxes-proposal")["data"]
    assert "gradcam-proposal (1 boxes)" in proposal["result"]
    assert proposal["counts"][3] > 0  # pneumonia inside the box


def test_training_starts_and_the_panel_shows_its_progress(round_trip, annotation_servers):
    train = _step(round_trip, "train")
    assert "RUNNING" in train["detail"] and "epoch 1/1" in train["detail"], train["detail"]
    record = json.loads((annotation_servers["work"] / "model" / "lsnet" / "models" / "validation.json").read_text())["last"]
    assert record["train_items"] + record["val_items"] >= 1 and record["decision"] in ("promoted", "kept"), record


def test_every_step_ran_and_left_a_screenshot(round_trip):
    assert [s["step"] for s in round_trip["steps"]] == list(STEPS), round_trip["steps"]
    for name in ("ohif_1_study.png", "ohif_2_pneumonia.png", "ohif_3_edited.png", "ohif_5_seg_reopened.png",
                 "ohif_7_boxes_proposal.png", "ohif_8_training.png"):
        assert (round_trip["artifacts"] / name).stat().st_size > 10_000
    # a viewer that stays black after a navigation is reloaded once (ohif_round_trip.mjs); more than once in a run
    # is a viewer problem, not the machine's load
    assert len(round_trip["reloads"]) <= 1, round_trip["reloads"]
