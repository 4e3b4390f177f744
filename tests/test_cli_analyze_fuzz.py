"""Seeded, time-bounded fuzzing of ``pneumonitor analyze`` (issue 16; ``tests/deploy/test_fuzz.py`` sends the same
mutants through the Deploy app): hostile header values and damaged bytes made from the five sample DICOMs. Whatever
the input: no traceback, one row per input, nothing written outside the output folder, nothing deleted, memory under
``MEMORY_CAP_BYTES``.

``PNEUMONITOR_FUZZ_SEED`` and ``PNEUMONITOR_FUZZ_CASES`` change the seed (default 16) and the number of mutants
(default 24); a failure message names the seed, and the mutants are kept in pytest's temporary folder.
"""

from __future__ import annotations

import csv
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest

from test_cli_analyze import make_checkpoints

SEED = int(os.environ.get("PNEUMONITOR_FUZZ_SEED", "16"))
CASES = int(os.environ.get("PNEUMONITOR_FUZZ_CASES", "24"))
#: the peak resident memory a run may reach (the CPU run of the five samples peaks near 1 GB)
MEMORY_CAP_BYTES = 3 * 1024**3
#: wall-clock bound of one run over all mutants
TIME_LIMIT_S = 600

#: hostile values by attribute: paths, control characters, formulas, impossible sizes, wrong types
HOSTILE = {
    "StudyInstanceUID": ["..", ".", "../../evil", "", "1.2.3\n4", "1" * 80],
    "SeriesInstanceUID": ["..", "/tmp/x", ""],
    "SOPInstanceUID": ["../x", "", "1..2"],
    "PatientID": ["=HYPERLINK(\"http://evil.example\")", "P1\nP2", "\\\\", "x" * 200],
    "Rows": [0, 1, 63, 65535, 20000],
    "Columns": [0, 7, 65535, 30000],
    "BitsAllocated": [1, 7, 32, 64],
    "BitsStored": [0, 17, 40],
    "SamplesPerPixel": [0, 3, 4],
    "PhotometricInterpretation": ["RGB", "PALETTE COLOR", "", "MONOCHROME3"],
    "NumberOfFrames": [0, 2, 1000000],
    "PixelRepresentation": [1, 2],
    "WindowCenter": ["nan", "1e400", "-"],
    "WindowWidth": [0, -1, "abc"],
    "RescaleSlope": [0, "inf", "-1e308"],
    "Modality": ["CT", "", "cr"],
    "ViewPosition": ["LL", "LATERAL", "\x00"],
}


def mutate(data: bytes, rng: random.Random, tmp: Path) -> bytes:
    """One mutant: hostile values in 1-3 attributes, or damaged bytes (truncation, flips, a spliced block)."""
    kind = rng.choice(["header", "header", "truncate", "flip", "splice"])
    if kind == "header":
        source = tmp / "source.dcm"
        source.write_bytes(data)
        ds = pydicom.dcmread(source, force=True)
        for keyword in rng.sample(sorted(HOSTILE), rng.randint(1, 3)):
            try:
                setattr(ds, keyword, rng.choice(HOSTILE[keyword]))
            except Exception:  # noqa: BLE001 - a value pydicom cannot even hold is not a mutant
                continue
        target = tmp / "mutant.dcm"
        try:
            ds.save_as(target)
        except Exception:  # noqa: BLE001 - unwritable combination: fall back to damaged bytes
            return data[: rng.randint(0, len(data))]
        return target.read_bytes()
    if kind == "truncate":
        return data[: rng.randint(0, len(data))]
    mutant = bytearray(data)
    if kind == "flip":
        for _ in range(rng.randint(1, 64)):
            mutant[rng.randrange(len(mutant))] = rng.randrange(256)
        return bytes(mutant)
    start = rng.randrange(len(mutant))
    mutant[start : start + rng.randint(1, 4096)] = rng.randbytes(rng.randint(0, 4096))
    return bytes(mutant)


@pytest.fixture(scope="module")
def fuzz_folder(tmp_path_factory, dicom_samples):
    """``work/in``: the mutants (plus the unchanged samples); ``work/out`` holds an earlier file; sentinels around."""
    import pydicom.config

    rng = random.Random(SEED)
    work = tmp_path_factory.mktemp(f"fuzz-seed{SEED}")
    inputs = work / "in"
    inputs.mkdir()
    scratch = work / "scratch"
    scratch.mkdir()
    samples = [(p.name, p.read_bytes()) for p in dicom_samples]
    validation = pydicom.config.settings.writing_validation_mode
    pydicom.config.settings.writing_validation_mode = pydicom.config.IGNORE
    try:
        for n in range(CASES):
            name, data = rng.choice(samples)
            (inputs / f"{n:03d}-{name}").write_bytes(mutate(data, rng, scratch))
    finally:
        pydicom.config.settings.writing_validation_mode = validation
    for name, data in samples:
        (inputs / name).write_bytes(data)
    (work / "neighbour.txt").write_text("keep me")
    return work


def snapshot(folder: Path, skip: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime for p in folder.rglob("*") if skip not in p.parents and p != skip}


def output_folder(work: Path, name: str) -> tuple[Path, dict[str, float]]:
    """A new output folder holding an earlier file that must stay, and the snapshot of everything outside it."""
    out = work / name
    out.mkdir()
    (out / "earlier.txt").write_text("keep me too")
    return out, snapshot(work, out)


def run_child(command: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess, int, float]:
    """The command in a child process; also its peak resident memory (bytes) and wall time."""
    started = time.monotonic()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PNEUMONITOR_DEVICE": "cpu", "PNEUMONITOR_QC": "off"}
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, timeout=TIME_LIMIT_S)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # ru_maxrss of children is the largest child so far: a run that stays below the earlier peak reports that one
    return proc, max(peak, before) * 1024, time.monotonic() - started


def check_run(work: Path, out: Path, proc, peak: int, inputs: int) -> list[dict]:
    log = proc.stdout + proc.stderr
    context = f"seed {SEED}, {CASES} mutants in {work / 'in'}"
    assert proc.returncode in (0, 1), f"{context}: exit {proc.returncode}\n{log[-4000:]}"
    assert "Traceback" not in log, f"{context}:\n{log[-4000:]}"
    assert peak < MEMORY_CAP_BYTES, f"{context}: peak memory {peak / 1e9:.2f} GB"
    assert (work / "neighbour.txt").read_text() == "keep me" and (out / "earlier.txt").read_text() == "keep me too"
    with (out / "results.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    names = sorted(Path(r["image"]).name for r in rows)
    assert names == sorted(p.name for p in (work / "in").iterdir()) and len(rows) == inputs, context
    assert all(r["status"] == "ok" or r["reason"] for r in rows), context
    assert not [p for p in out.rglob(".*")], f"{context}: hidden temporary files left"
    return rows


def test_fuzzed_dicoms_through_analyze(fuzz_folder, tmp_path):
    work = fuzz_folder
    out, before = output_folder(work, "out-analyze")
    dl, ls = make_checkpoints(tmp_path, heatmap_value=0.9)
    proc, peak, seconds = run_child(
        [sys.executable, "-m", "pneumonitor", "analyze", str(work / "in"), "--out", str(out), "--dlnet", str(dl),
         "--lsnet", str(ls), "--device", "cpu", "--no-progress", "--qc", "off"], cwd=work)
    rows = check_run(work, out, proc, peak, CASES + 5)
    assert snapshot(work, out) == before, "files outside --out changed"
    assert sum(r["status"] == "ok" for r in rows) >= 5  # the unchanged samples
    print(f"analyze: {len(rows)} rows in {seconds:.0f} s, peak {peak / 1e9:.2f} GB")
