"""``pneumonitor.publishing``: atomic files and folders, the clean-up of what a killed writer left, the NaN policy."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from pneumonitor.publishing import (
    atomic_folder,
    atomic_path,
    html_page,
    json_safe,
    remove_stale_temporaries,
    save_figure,
    write_csv,
    write_json,
    write_png,
    write_text,
)


def test_a_failing_writer_leaves_the_target_and_no_temporary(tmp_path):
    target = write_text(tmp_path / "a.txt", "first")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            assert tmp.parent == tmp_path and tmp.name.startswith(".a.txt.") and tmp.name.endswith(".tmp.txt")
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "first" and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_files_get_the_permissions_of_open(tmp_path):
    umask = os.umask(0o027)
    try:
        path = write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o640


def test_nan_is_null_everywhere_and_json_is_strict(tmp_path):
    payload = {"a": math.nan, "b": [np.float32("nan"), np.inf, 1.5], "c": np.int64(3), "d": np.array([1.0, np.nan]),
               "e": tmp_path}
    path = write_json(tmp_path / "x.json", payload, indent=None)
    text = path.read_text()
    assert text.endswith("\n") and "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": None, "b": [None, None, 1.5], "c": 3, "d": [1.0, None], "e": str(tmp_path)}
    assert json_safe((math.inf,)) == [None]


def test_png_csv_and_figure(tmp_path):
    mask = np.zeros((4, 5), dtype=bool)
    mask[1, 2] = True
    with Image.open(write_png(tmp_path / "sub" / "m.png", mask)) as image:
        assert image.size == (5, 4) and np.asarray(image)[1, 2] == 255
    write_csv(tmp_path / "t.csv", [{"a": 1}], ["a", "b"], restval="")
    assert (tmp_path / "t.csv").read_bytes() == b"a,b\r\n1,\r\n"  # the csv module's line ends, as before
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure = plt.figure()
    with Image.open(save_figure(figure, tmp_path / "f.png", dpi=20)) as image:
        assert image.format == "PNG"
    assert not plt.fignum_exists(figure.number)  # closed


def test_atomic_folder_replaces_as_a_whole_or_not_at_all(tmp_path):
    target = tmp_path / "report"
    with atomic_folder(target) as building:
        (building / "a").write_text("1")
    with pytest.raises(KeyboardInterrupt):
        with atomic_folder(target) as building:
            (building / "b").write_text("2")
            raise KeyboardInterrupt
    assert sorted(p.name for p in target.iterdir()) == ["a"]
    with atomic_folder(target) as building:
        (building / "c").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["c"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


def test_stale_temporaries_of_dead_processes_go_live_ones_stay(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = os.getppid()
    stale = [tmp_path / f".a.png.{dead.pid}-0a1b2c3d.tmp.png", tmp_path / ".results.csv.tmp",
             tmp_path / ".x_lungs.png.tmp"]
    for path in stale:
        path.write_text("half")
    (tmp_path / f".1.2.3.partial-{dead.pid}").mkdir()
    stale.append(tmp_path / f".1.2.3.partial-{dead.pid}")
    (tmp_path / f".report.{dead.pid}-00ff00ff.tmp").mkdir()
    stale.append(tmp_path / f".report.{dead.pid}-00ff00ff.tmp")
    kept = [tmp_path / f".b.png.{live}-0a1b2c3d.tmp.png", tmp_path / "notes.tmp", tmp_path / ".hidden"]
    for path in kept:
        path.write_text("x")
    assert sorted(remove_stale_temporaries(tmp_path)) == sorted(stale)
    assert sorted(tmp_path.iterdir()) == sorted(kept)


def test_html_page_escapes_title_and_note():
    page = html_page("a<b", "<p>x</p>", style="p{}", note="R&D")
    assert page.startswith("<!DOCTYPE html>") and "<title>a&lt;b</title>" in page and "R&amp;D" in page
    assert "<style>p{}</style>" in page and page.endswith("</html>\n")


def test_durable_writes_the_same_bytes(tmp_path):
    mask = np.eye(6, dtype=np.uint8) * 3
    assert write_png(tmp_path / "a.png", mask, durable=True).read_bytes() == write_png(tmp_path / "b.png", mask).read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png"]
