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
