"""Real servers on loopback for the integration tests: Orthanc with its DICOMweb plugin, and the MONAI Label server
started through ``apps/label/start_server.sh``. Both stop when the test ends."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
import requests

ORTHANC = shutil.which("Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, process: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the server exited ({process.returncode}):\n{log.read_text()[-4000:]}")
        try:
            if requests.get(url, timeout=2).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s:\n{log.read_text()[-4000:]}")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextmanager
def orthanc(workdir: Path) -> Iterator[str]:
    """Orthanc on 127.0.0.1 (remote access off, no DICOM port, no authentication); yields its DICOMweb root URL."""
    if ORTHANC is None or not DICOMWEB_PLUGIN.is_file():
        pytest.skip("Orthanc with its DICOMweb plugin is not installed (apt-get install orthanc orthanc-dicomweb)")
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    config = {
        "Name": "pneumonitor-test",
        "StorageDirectory": str(workdir / "storage"),
        "IndexDirectory": str(workdir / "storage"),
        "HttpPort": port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomServerEnabled": False,
        "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "StudiesMetadata": "Full", "SeriesMetadata": "Full"},
    }
    (workdir / "orthanc.json").write_text(json.dumps(config))
    log = workdir / "orthanc.log"
    with log.open("w") as out:
        process = subprocess.Popen([ORTHANC, str(workdir / "orthanc.json")], stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        _wait(f"http://127.0.0.1:{port}/system", process, log, 60)
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(process)


def upload(orthanc_url: str, files: list[Path]) -> list[dict]:
    """POST each DICOM file to Orthanc's REST API."""
    answers = []
    for path in files:
        response = requests.post(f"{orthanc_url}/instances", data=path.read_bytes(), timeout=30)
        response.raise_for_status()
        answers.append(response.json())
    return answers


@contextmanager
def label_server(studies: str, workdir: Path, conf: dict[str, str], timeout: float = 180) -> Iterator[str]:
    """``apps/label/start_server.sh`` with this python's environment; yields the server URL (127.0.0.1)."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(
        PNEUMONITOR_LABEL_VENV=str(Path(sys.executable).parent.parent),
        MONAI_LABEL_PORT=str(port),
        MONAI_LABEL_DICOMWEB_CACHE_PATH=str(workdir / "dicomweb-cache"),
        MONAI_LABEL_AUTO_UPDATE_SCORING="false",
        MONAI_LABEL_SESSIONS="false",
    )
    env.pop("MONAI_LABEL_HOST", None)  # the default binding is what is tested
    args = ["bash", str(REPO_ROOT / "apps" / "label" / "start_server.sh"), studies]
    for key, value in conf.items():
        args += ["--conf", key, value]
    log = workdir / "server.log"
    with log.open("w") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        _wait(f"http://127.0.0.1:{port}/info/", process, log, timeout)
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(process)


def listening_addresses(port: int) -> set[str]:
    """Local addresses on which something listens on ``port`` (from /proc/net/tcp{,6})."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state = fields[1], fields[3]
            address, port_hex = local.rsplit(":", 1)
            if state != "0A" or int(port_hex, 16) != port:  # 0A = LISTEN
                continue
            if len(address) == 8:
                found.add(socket.inet_ntop(socket.AF_INET, bytes.fromhex(address)[::-1]))
            else:
                raw = bytes.fromhex(address)
                found.add(socket.inet_ntop(socket.AF_INET6, b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))))
    return found
