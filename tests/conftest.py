"""Shared test fixtures. Tests that need ``../shared/data`` skip with a reason when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PNEUMONITOR_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (set PNEUMONITOR_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def dicom_samples(shared_data: Path) -> list[Path]:
    folder = shared_data / "cxr-dicom-samples"
    files = sorted(folder.glob("*.dcm"))
    if len(files) != 5:
        pytest.skip(f"expected the 5 CR/DX samples in {folder}, found {len(files)}")
    return files


@pytest.fixture(scope="module")
def one_torch_thread():
    """On 2 shared cores one torch thread is several times faster than two (no spinning on a busy core).

    Modules that train tiny networks opt in with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
