"""Fixtures of the MONAI Label app tests. They run in the label environment only:

    bash apps/label/setup_env.sh && .venv-label/bin/python -m pytest tests/label

With the system python (no monailabel) the whole folder is skipped at collection, with that reason.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

SKIP_REASON = (
    "tests/label skipped: monailabel is not installed in this python; the label app has its own environment: "
    "bash apps/label/setup_env.sh && .venv-label/bin/python -m pytest tests/label"
)
HAVE_MONAILABEL = importlib.util.find_spec("monailabel") is not None

if not HAVE_MONAILABEL:
    # not a module-level pytest.skip: that is an error when this folder is given on the command line
    collect_ignore_glob = ["*.py"]

    def pytest_report_header(config):
        return SKIP_REASON

    def pytest_terminal_summary(terminalreporter):
        terminalreporter.write_line(SKIP_REASON)

REPO_ROOT = Path(__file__).resolve().parents[2]
APP_DIR = REPO_ROOT / "apps" / "label"
if str(APP_DIR) not in sys.path:
    sys.path.insert(0, str(APP_DIR))

if HAVE_MONAILABEL:
    import lib  # noqa: E402,F401 - the app's package (also makes the core read DICOM under pydicom 2)

#: a frontal chest DX of NIH ChestX-ray14 (1024 px), the image of the browser check
NIH_DX = "1.3.6.1.4.1.11129.5.5.110503645592756492463169821050252582267888.dcm"

#: input size of the test networks (random weights: no trained weights exist in the repository)
TEST_IMAGE_SIZE = [64, 64]


def _require_bundle_configs(name: str, files: tuple[str, ...]) -> Path:
    from pneumonitor.inference.analyzer import default_bundle_dir

    source = default_bundle_dir(name) / "configs"
    missing = [f for f in files if not (source / f).is_file()]
    if missing:
        pytest.skip(f"{source} lacks {', '.join(missing)}: the app serves the bundles' inference configs")
    return source


def save_test_checkpoint(network, path: Path) -> Path:
    """A plain state dict, what the bundles' CheckpointSaver writes (the input size is the inference.json's)."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(network.state_dict(), path)
    return path


def make_test_networks(dlnet_logit_bias: float = 4.0):
    """Random small networks whose outputs are not trivial to check against.

    LSNet: ``head.bias`` +10, so every pixel is lung (one component that ``split_lungs`` cuts at the mediastinum).
    DLNet: the classifier's last bias pushes the probability above 0.62 (dropout still varies it); the
    localization head's last conv gives a heatmap near 1.0 everywhere (>= 0.8), so pneumonia = the lungs.
    """
    import torch

    from pneumonitor.networks import DLNet, LSNet

    torch.manual_seed(0)
    lsnet = LSNet(width=0.125)
    dlnet = DLNet(backbone="resnet18", dense_units=(32, 16), fpn_channels=16, localization_maps=8)
    with torch.no_grad():
        lsnet.head.bias.fill_(10.0)
        dlnet.classification_head.layers[-1].bias.fill_(dlnet_logit_bias)
        dlnet.localization_head.output_conv.weight.mul_(0.01)  # small: Grad-CAM still has gradients
        dlnet.localization_head.output_conv.bias.fill_(1.0)
    return dlnet, lsnet


def _tiny_override(kind: str) -> dict:
    if kind == "dlnet":
        net = {"_target_": "pneumonitor.networks.DLNet", "backbone": "resnet18", "in_channels": 3,
               "dense_units": [32, 16], "dropout": 0.5, "fpn_channels": 16, "localization_maps": 8,
               "localization_activation": "sigmoid", "extent_head": False, "lung_classifier": False}
    else:
        net = {"_target_": "pneumonitor.networks.LSNet", "width": 0.125}
    return {"network_def": net, "image_size": TEST_IMAGE_SIZE, "batch_size": 2, "num_workers": 0, "cache_rate": 0.0}


@pytest.fixture(scope="session")
def source_bundles(tmp_path_factory) -> Path:
    """``dlnet`` and ``lsnet`` bundles: the repository's configs plus random-weight checkpoints and a
    ``test_tiny.json`` override (64 px, small networks) for one-epoch training."""
    root = tmp_path_factory.mktemp("bundles")
    dlnet, lsnet = make_test_networks()
    for name, network in (("dlnet", dlnet), ("lsnet", lsnet)):
        configs = _require_bundle_configs(name, ("inference.json", "metadata.json"))
        shutil.copytree(configs, root / name / "configs")
        tiny = _tiny_override(name)
        (root / name / "configs" / "test_tiny.json").write_text(json.dumps(tiny))
        # the served architecture is the inference config's: make it the test network's
        inference = json.loads((root / name / "configs" / "inference.json").read_text())
        # replaced, not merged: the shipped DLNet is an ensemble, whose network_def nests its members'
        inference.update(network_def=tiny["network_def"], image_size=TEST_IMAGE_SIZE)
        if name == "dlnet":  # random weights have no fitted extent head: the paper's rule (heatmap ~1 = the lungs)
            inference["severity_rule"] = "heatmap-threshold"
        (root / name / "configs" / "inference.json").write_text(json.dumps(inference, indent=1))
        save_test_checkpoint(network, root / name / "models" / "model.pt")
    return root


@pytest.fixture(scope="session")
def sample_images(shared_data: Path) -> dict[str, Path]:
    """Real radiographs: three PNGs of the COVID-19 collection, one pediatric JPEG, two DICOMs (DX and CR)."""
    covid = sorted((shared_data / "covid-chestxray-dataset" / "images").glob("*.png"))[:3]
    pediatric = sorted((shared_data / "pediatric-pneumonia" / "images").glob("*.jpg"))[:1]
    dicoms = [shared_data / "cxr-dicom-samples" / n for n in ("dx_image.dcm", "gdcm-CR-MONO1-10-chest.dcm")]
    files = {p.stem.replace(".", "_"): p for p in covid + pediatric + dicoms if p.is_file()}
    if len(files) < 6:
        pytest.skip(f"expected 6 sample radiographs in {shared_data}, found {len(files)}")
    return files


@pytest.fixture()
def studies(tmp_path: Path, sample_images: dict[str, Path]) -> Path:
    """A fresh local datastore folder with the sample radiographs."""
    folder = tmp_path / "studies"
    folder.mkdir()
    for stem, path in sample_images.items():
        suffix = ".dcm" if path.suffix == ".dcm" else path.suffix.lower()
        shutil.copyfile(path, folder / f"{stem}{suffix}")
    return folder


def make_app(studies: Path, bundles: Path, model_dir: Path, **conf: str):
    """The app object itself (what ``monailabel start_server`` instantiates)."""
    from main import PneumonitorLabelApp

    # qc off: these tests use the lateral dx_image as a stand-in radiograph; test_api turns the gate on per request
    config = {"bundles": str(bundles), "model_dir": str(model_dir), "epistemic_passes": "8", "qc": "off", **conf}
    return PneumonitorLabelApp(str(APP_DIR), str(studies), config)


@pytest.fixture()
def client(studies: Path, source_bundles: Path, tmp_path: Path):
    """FastAPI TestClient on the real MONAI Label server app with this app and a local datastore."""
    from fastapi.testclient import TestClient
    from monailabel.config import settings
    import monailabel.interfaces.utils.app as app_utils

    settings.MONAI_LABEL_APP_DIR = str(APP_DIR)
    settings.MONAI_LABEL_STUDIES = str(studies)
    settings.MONAI_LABEL_APP_CONF = {
        "bundles": str(source_bundles),
        "model_dir": str(tmp_path / "model"),
        "epistemic_passes": "8",
        "dlnet_train_configs": "test_tiny.json",
        "lsnet_train_configs": "test_tiny.json",
        "qc": "off",  # the lateral dx_image stands in for a radiograph; test_image_qc_gate_... turns the gate on
    }
    settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD = False
    settings.MONAI_LABEL_AUTO_UPDATE_SCORING = False
    settings.MONAI_LABEL_SESSIONS = False
    app_utils.apps.clear() if hasattr(app_utils, "apps") else None
    from monailabel.app import app

    with TestClient(app) as test_client:
        yield test_client
    app_utils.apps.clear() if hasattr(app_utils, "apps") else None


def _ct_slice_with_uids(shared_data: Path, work: Path) -> list[Path]:
    """One real CT slice (its UIDs were stripped upstream; Orthanc needs them): the series the filter must hide."""
    import pydicom
    import pydicom.uid

    slices = sorted((shared_data / "chest-ct-samples" / "totalsegmentator" / "example_ct_dicom").glob("CT.*"))
    if not slices:
        return []
    ds = pydicom.dcmread(slices[0], force=True)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.Modality = "CT"
    path = work / "ct-slice.dcm"
    ds.save_as(path)
    return [path]


@contextmanager
def dicomweb_servers(work: Path, source_bundles: Path, shared_data: Path):
    """Orthanc with two DX and one CR radiograph and a CT slice, and the label server on it (both on loopback)."""
    from servers import label_server, orthanc, upload

    import pydicom

    samples = shared_data / "cxr-dicom-samples"
    radiographs = [samples / "dx_image.dcm", samples / "gdcm-CR-MONO1-10-chest.dcm", samples / NIH_DX]
    ct = _ct_slice_with_uids(shared_data, work)
    with orthanc(work / "orthanc") as orthanc_url:
        upload(orthanc_url, radiographs + ct)
        conf = {"bundles": str(source_bundles), "model_dir": str(work / "model"),
                "dlnet_train_configs": "test_tiny.json", "lsnet_train_configs": "test_tiny.json", "qc": "off"}
        with label_server(f"{orthanc_url}/dicom-web", work / "server", conf) as server:
            series = {pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID: p for p in radiographs}
            yield {"orthanc": orthanc_url, "server": server, "series": series, "work": work,
                   "ct": [pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID for p in ct]}


@pytest.fixture(scope="session")
def dicomweb(tmp_path_factory, source_bundles, shared_data):
    """The servers of :func:`dicomweb_servers`, shared by the integration tests of test_orthanc.py."""
    with dicomweb_servers(tmp_path_factory.mktemp("dicomweb"), source_bundles, shared_data) as servers:
        yield servers


