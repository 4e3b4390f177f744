"""Hostile and mistaken requests to the label server (issue 16): unknown ids, paths in ids and tags, foreign
origins, oversized and refused uploads. First through MONAI Label's FastAPI app in this process (the ``client``
fixture), then through the real server that ``apps/label/start_server.sh`` starts."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from conftest import APP_DIR, REPO_ROOT


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _radiograph_png() -> bytes:
    return _png(np.tile(np.linspace(0, 255, 128), (128, 1)).astype(np.uint8))


def _dx_label(studies: Path) -> np.ndarray:
    from lib.datastore import radiograph_shape

    label = np.zeros(radiograph_shape(studies / "dx_image.dcm"), dtype=np.uint8)
    label[10:60, 20:90] = 1
    return label


def _files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def test_unknown_image_ids_server_paths_and_models_are_404(client, studies, tmp_path, monkeypatch):
    """Regression (issue 16, item 5): an unknown id resolved to "", read as the working directory: with one
    radiograph there, ``/infer/lungs?image=typo`` answered 200 with that file's result."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    shutil.copyfile(studies / "dx_image.dcm", cwd / "other.dcm")
    monkeypatch.chdir(cwd)
    for image, params in (("typo", {}), (str(cwd / "other.dcm"), {}), ("other.dcm", {}),
                          ("dx_image", {"image": str(cwd / "other.dcm")})):  # params may override the query
        response = client.post(f"/infer/lungs?image={image}&output=json", data={"params": json.dumps(params)})
        expected = params.get("image", image)
        assert response.status_code == 404, (image, response.text)
        assert response.json()["detail"] == f"image {expected!r} is not in the datastore"
    response = client.post("/infer/no-such-model?image=dx_image&output=json")
    assert response.status_code == 404 and "no model 'no-such-model'" in response.text, response.text


def test_invalid_json_in_a_form_field_is_422(client):
    """Regression (issue 16, item 7): invalid JSON in ``/datastore/image/info`` (and any ``params``) answered 500."""
    response = client.put("/datastore/image/info?image=dx_image", data={"info": "{not json"})
    assert response.status_code == 422 and response.json()["detail"].startswith("invalid JSON in the request:")
    response = client.post("/infer/lungs?image=dx_image&output=json", data={"params": "[1,"})
    assert response.status_code == 422 and "invalid JSON" in response.text, response.text


def test_label_tags_and_image_ids_are_names_not_paths(client, studies):
    """Regression (issue 16, item 2): ``tag=../../x`` and ``PUT /datastore/image?image=../x`` wrote outside the
    datastore."""
    outside = studies.parent
    before = _files_under(outside)
    label = _png(_dx_label(studies))
    for tag in ("../../x", "..", "a/b", "x\\y", ""):
        response = client.put(f"/datastore/label?image=dx_image&tag={tag}", files={"label": ("l.png", label)},
                              data={"params": "{}"})
        if tag == "":  # MONAI Label's endpoint turns an empty tag into "final"
            assert response.status_code == 200, response.text
            continue
        assert response.status_code == 422 and "a name, not a path" in response.text, (tag, response.text)
    for image in ("../evil", "..", "sub/x"):
        response = client.put(f"/datastore/image?image={image}", files={"file": ("x.png", _radiograph_png())},
                              data={"params": "{}"})
        assert response.status_code == 422 and "a name, not a path" in response.text, (image, response.text)
    written = _files_under(outside) - before
    assert all(p.is_relative_to(studies) for p in written), sorted(written)
    assert not [p for p in written if "evil" in p.name or p.parent.name == "x"]


def test_added_images_must_be_new_readable_radiographs(client, studies):
    """``PUT /datastore/image`` took any bytes under any extension and replaced existing images."""
    cases = (
        ("new", "x.exe", b"MZ\x90\x00", 422, ".exe is not one of"),
        ("new", "x.png", b"not a png", 422, "could not be read as an image"),
        ("dx_image", "x.png", _radiograph_png(), 409, "exists; it is not overwritten"),
    )
    for image, name, payload, status, reason in cases:
        response = client.put(f"/datastore/image?image={image}", files={"file": (name, payload)}, data={"params": "{}"})
        assert response.status_code == status and reason in response.text, (image, name, response.text)
    assert not (studies / "new.png").exists() and not (studies / "new.exe").exists()
    dx_before = (studies / "dx_image.dcm").read_bytes()
    response = client.put("/datastore/image?image=new", files={"file": ("x.png", _radiograph_png())},
                          data={"params": "{}"})
    assert response.status_code == 200 and response.json() == {"image": "new"}, response.text
    assert (studies / "new.png").is_file() and (studies / "dx_image.dcm").read_bytes() == dx_before


def test_refused_and_oversized_uploads_leave_no_temp_file(client, studies, tmp_path, monkeypatch):
    """Regression (issue 16, item 6): a refused label upload left its temp file (300 MB for a 300 MB upload)."""
    import lib.datastore

    uploads = tmp_path / "uploads"
    uploads.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(uploads))  # where MONAI Label's endpoints put the upload
    label = _dx_label(studies)
    response = client.put("/datastore/label?image=dx_image&tag=final", files={"label": ("l.png", _png(label[1:]))},
                          data={"params": "{}"})
    assert response.status_code == 422, response.text
    response = client.put("/datastore/label?image=dx_image&tag=../x", files={"label": ("l.png", _png(label))},
                          data={"params": "{}"})
    assert response.status_code == 422, response.text
    monkeypatch.setattr(lib.datastore, "MAX_UPLOAD_BYTES", label.size - 1)
    response = client.put("/datastore/label?image=dx_image&tag=final", files={"label": ("l.bin", label.tobytes())},
                          data={"params": "{}"})
    assert response.status_code == 413 and f"upload of {label.size} bytes refused" in response.text, response.text
    assert sorted(uploads.iterdir()) == []


# -- the real server ------------------------------------------------------------------------------------------


ALLOWED_ORIGIN = "http://viewer.example:3000"


@pytest.fixture(scope="module")
def real_server(tmp_path_factory, source_bundles, sample_images):
    """``apps/label/start_server.sh`` on a local datastore of the sample radiographs (loopback, default settings)."""
    from servers import label_server

    work = tmp_path_factory.mktemp("hostile-server")
    studies = work / "studies"
    studies.mkdir()
    for stem, path in sample_images.items():
        shutil.copyfile(path, studies / f"{stem}{'.dcm' if path.suffix == '.dcm' else path.suffix.lower()}")
    conf = {"bundles": str(source_bundles), "model_dir": str(work / "model"), "qc": "off",
            "cors_origins": ALLOWED_ORIGIN}
    with label_server(str(studies), work / "server", conf) as url:
        yield url, studies


def test_real_server_refuses_foreign_origins(real_server):
    """Regression (issue 16, item 2): CORS accepted any origin, with credentials."""
    url, _ = real_server
    evil = "http://evil.example"
    response = requests.get(f"{url}/info/", headers={"Origin": evil}, timeout=30)
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers, dict(response.headers)
    preflight = requests.options(f"{url}/datastore/label", timeout=30, headers={
        "Origin": evil, "Access-Control-Request-Method": "PUT"})
    assert preflight.status_code == 400 and "access-control-allow-origin" not in preflight.headers
    response = requests.get(f"{url}/info/", headers={"Origin": ALLOWED_ORIGIN}, timeout=30)
    assert response.headers.get("access-control-allow-origin") == ALLOWED_ORIGIN  # --conf cors_origins


def test_real_server_answers_hostile_requests_with_4xx(real_server):
    url, studies = real_server
    label = _png(_dx_label(studies))
    response = requests.put(f"{url}/datastore/label", params={"image": "dx_image", "tag": "../../x"},
                            files={"label": ("l.png", label)}, data={"params": "{}"}, timeout=60)
    assert response.status_code == 422, response.text
    assert not (studies.parent / "x").exists() and not (studies.parent.parent / "x").exists()
    response = requests.post(f"{url}/infer/lungs", params={"image": "typo", "output": "json"}, timeout=60)
    assert response.status_code == 404, response.text


@pytest.mark.parametrize("how", ["variable", "option"])
def test_start_server_refuses_a_public_address_without_authentication(tmp_path, how):
    env = {**os.environ, "PNEUMONITOR_LABEL_VENV": str(Path(sys.executable).parent.parent)}
    env.pop("MONAI_LABEL_AUTH_ENABLE", None)
    args = ["bash", str(APP_DIR / "start_server.sh"), str(tmp_path)]
    if how == "variable":
        env["MONAI_LABEL_HOST"] = "0.0.0.0"
    else:
        args += ["--host", "0.0.0.0"]
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120, cwd=REPO_ROOT)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "refusing to serve on 0.0.0.0 without authentication" in proc.stderr
