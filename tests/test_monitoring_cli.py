"""``pneumonitor monitor`` and ``pneumonitor trend-agreement`` end to end on generated analyze results."""

from __future__ import annotations

import csv
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pneumonitor.cli import main
from pneumonitor.monitoring.profiles import TIMELINE_COLUMNS
from pneumonitor.results import RESULT_COLUMNS
from pneumonitor.severity import lung_score


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.images: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "a" and "href" in attrs:
            self.hrefs.append(attrs["href"])
        if tag == "img" and "src" in attrs:
            self.images.append(attrs["src"])


def links(path: Path) -> _Links:
    parser = _Links()
    parser.feed(path.read_text())
    return parser


def make_analyze_output(folder: Path) -> Path:
    """A results.csv as analyze writes it, for 3 patients, with real overlay PNGs (relative paths)."""
    rng = np.random.default_rng(1)
    studies = [
        # image, patient, acquisition datetime, ratio right, ratio left, probability
        ("p1_day0.dcm", "PAT-1", "2020-03-01T09:00:00", 10.0, 5.0, 0.90),
        ("p1_day2.dcm", "PAT-1", "2020-03-03T09:00:00", 40.0, 30.0, 0.95),
        ("p1_day5.dcm", "PAT-1", "2020-03-06T09:00:00", 20.0, 10.0, 0.80),
        ("p1_day9.dcm", "PAT-1", "2020-03-10T09:00:00", 0.0, 0.0, 0.30),
        ("p2_a.dcm", "PAT 2/b", "2020-04-01T10:00:00", 60.0, 55.0, 0.99),
        ("p2_b.dcm", "PAT 2/b", "2020-04-01T10:00:00", 62.0, 50.0, 0.99),
        ("p3_only.dcm", "PAT-3", "2020-05-01T10:00:00", 15.0, 0.0, 0.70),
    ]
    rows = []
    (folder / "overlays").mkdir(parents=True)
    for name, patient, when, right, left, probability in studies:
        overlay = f"overlays/{Path(name).stem}_overlay.png"
        Image.fromarray(rng.integers(0, 255, size=(96, 80, 3), dtype=np.uint8)).save(folder / overlay)
        row = dict.fromkeys(RESULT_COLUMNS, "")
        row.update(image=f"/scans/{name}", status="ok", pneumonia_probability=probability,
                   positive=int(probability >= 0.62), ratio_right=right, ratio_left=left,
                   ratio_total=(right + left) / 2, score_right=lung_score(right), score_left=lung_score(left),
                   score_total=lung_score(right) + lung_score(left), overlay=overlay, patient_id=patient,
                   acquisition_datetime=when, study_date=when[:10].replace("-", ""))
        rows.append(row)
    skipped = dict.fromkeys(RESULT_COLUMNS, "")
    skipped.update(image="/scans/p1_lateral.dcm", status="skipped", reason="lateral view (LL)", patient_id="PAT-1")
    rows.append(skipped)
    path = folder / "results.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=RESULT_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    (folder / "results.json").write_text(json.dumps({"settings": {"classification_threshold": 0.62}, "results": []}))
    return path


def assert_png_with_content(path: Path, min_side: int = 200) -> None:
    assert path.is_file() and path.stat().st_size > 5000, path
    with Image.open(path) as image:
        assert image.format == "PNG" and min(image.size) >= min_side
        pixels = np.asarray(image.convert("L"), dtype=float)
    assert pixels.std() > 5, f"{path} looks blank"


def test_monitor_writes_timelines_plots_and_report(tmp_path, capsys):
    results = make_analyze_output(tmp_path / "analysis")
    out = tmp_path / "monitoring"
    assert main(["monitor", str(results), "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "3 patients, 7 dated studies" in printed and "index.html" in printed

    index_links = links(out / "index.html")
    patient_pages = [h for h in index_links.hrefs if h.endswith("report.html")]
    assert len(patient_pages) == 3 and all((out / h).is_file() for h in patient_pages)
    assert "PAT 2/b" in (out / "index.html").read_text()  # shown as given, folder name made safe

    timeline = pd.read_csv(out / "patients" / "PAT-1" / "timeline.csv")
    assert list(timeline.columns) == list(TIMELINE_COLUMNS)
    assert timeline["day"].tolist() == [0.0, 2.0, 5.0, 9.0]
    assert timeline["score_total"].tolist() == [2, 4, 2, 0]
    assert timeline["change"].tolist() == ["baseline", "worse", "improved", "improved"]
    assert timeline["probability"].tolist() == [0.9, 0.95, 0.8, 0.3]

    page = out / "patients" / "PAT-1" / "report.html"
    for image in links(page).images:
        assert_png_with_content(page.parent / image)
    assert "lateral view (LL)" in page.read_text()
    tie = pd.read_csv(out / "patients" / "PAT_2_b" / "timeline.csv")
    assert tie["tie"].tolist() == [True, True]

    combined = pd.read_csv(out / "timelines.csv")
    assert combined["patient_id"].value_counts().to_dict() == {"PAT-1": 4, "PAT 2/b": 2, "PAT-3": 1}
    summary = json.loads((out / "monitor.json").read_text())
    assert summary["summary"]["skipped_studies"] == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_monitor_with_metadata_and_reference_scores(tmp_path, capsys):
    analysis = tmp_path / "analysis"
    make_analyze_output(analysis)
    table = pd.read_csv(analysis / "results.csv", dtype=str, keep_default_na=False)
    table[["patient_id", "acquisition_datetime", "study_date"]] = ""  # PNG inputs: identity from the metadata only
    table["image"] = table["image"].str.replace(".dcm", ".png", regex=False)
    table.to_csv(analysis / "results.csv", index=False)
    metadata = tmp_path / "metadata.csv"
    pd.DataFrame({
        "filename": ["p1_day0.jpeg", "p1_day2.jpeg", "p1_day5.jpeg", "p1_day9.jpeg"],
        "patientid": ["12"] * 4, "offset": ["1", "3", "6", "10"], "expert": ["2", "5", "3", "1"],
    }).to_csv(metadata, index=False)
    out = tmp_path / "monitoring"
    code = main(["monitor", str(analysis / "results.csv"), "--metadata", str(metadata), "--reference-column",
                 "expert", "--out", str(out), "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "trend agreement score_total vs expert: 1.000 (3/3 transitions, 1 patients)" in printed
    # beside the constant profiles: the expert rose once in 3 transitions; one patient gives no interval
    assert "always increases 0.333, never increases 0.667; score_total - the better constant +0.333" in printed
    assert "too few to tell" in printed and "too few to tell" in (out / "index.html").read_text()
    against = json.loads((out / "monitor.json").read_text())["summary"]["trend_agreement"]["expert"]
    assert against["never_increases"] == pytest.approx(2 / 3)
    agreement = pd.read_csv(out / "trend_agreement.csv")
    assert agreement.loc[0, ["patient_id", "n_points", "agreement"]].tolist() == [12, 4, 1.0]
    unassigned = pd.read_csv(out / "unassigned.csv")
    assert len(unassigned) == 4  # the other patients' PNGs have no metadata row and no DICOM id
    assert_png_with_content(out / "patients" / "12" / "profile.png")


def test_monitor_refuses_bad_inputs_without_writing(tmp_path, capsys):
    results = make_analyze_output(tmp_path / "analysis")
    out = tmp_path / "monitoring"
    out.mkdir()
    (out / "keep.txt").write_text("user file")
    assert main(["monitor", str(results), "--out", str(out), "--no-progress"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]

    other = tmp_path / "other.csv"
    other.write_text("x,y\n1,2\n")
    assert main(["monitor", str(other), "--out", str(tmp_path / "new"), "--no-progress"]) == 2
    assert "missing column" in capsys.readouterr().err and not (tmp_path / "new").exists()

    assert main(["monitor", str(results), "--out", str(tmp_path / "new"), "--metadata", str(other)]) == 2
    assert "lacks the image column 'filename'" in capsys.readouterr().err and not (tmp_path / "new").exists()

    assert main(["monitor", str(results), "--out", str(out), "--overwrite", "--no-progress"]) == 0
    assert (out / "index.html").is_file() and not (out / "keep.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_trend_agreement_cli(tmp_path, capsys):
    model = tmp_path / "model.csv"
    expert = tmp_path / "expert.csv"
    pd.DataFrame({"patient_id": ["a", "a", "a", "b", "b"], "day": [0, 2, 4, 0, 1],
                  "score_total": [1, 3, 3, 0, 0]}).to_csv(model, index=False)
    pd.DataFrame({"patient_id": ["a", "a", "a", "b", "b"], "day": [0, 2, 4, 0, 1],
                  "geographic": [1.3, 4.0, 3.7, 0.0, 2.0]}).to_csv(expert, index=False)
    per_patient = tmp_path / "agreement.csv"
    code = main(["trend-agreement", str(model), str(expert), "--a", "score_total", "--b", "geographic",
                 "--out", str(per_patient)])
    assert code == 0
    # a: model [1, 0] vs expert [1, 0] -> 2/2; b: model [0] vs expert [1] -> 0/1
    printed = capsys.readouterr().out
    assert "0.667 (2/3 transitions agree, 2 patients" in printed
    # the expert rose in 2 of the 3 transitions: "always increases" agrees as often as the model does; two patients
    # give no interval
    assert "always increases 0.667, never increases 0.333; score_total - the better constant +0.000" in printed
    assert "(patients (n=2)): too few to tell" in printed
    assert pd.read_csv(per_patient)["agreement"].tolist() == [1.0, 0.0]
    assert main(["trend-agreement", str(model), "--a", "score_total", "--b", "missing"]) == 2
    assert re.search(r"lacks column\(s\) missing", capsys.readouterr().err)


def test_monitor_when_analyze_skipped_everything(tmp_path, capsys):
    analysis = tmp_path / "analysis"
    analysis.mkdir()
    rows = []
    for name in ("a.png", "b.png"):
        row = dict.fromkeys(RESULT_COLUMNS, "")
        row.update(image=f"/x/{name}", status="skipped", reason="lung segmentation found no lung")
        rows.append(row)
    pd.DataFrame(rows, columns=RESULT_COLUMNS).to_csv(analysis / "results.csv", index=False)
    metadata = tmp_path / "m.csv"
    pd.DataFrame({"filename": ["a.jpg", "b.jpg"], "patientid": ["1", "1"], "offset": [0, 4],
                  "expert": [1, 2]}).to_csv(metadata, index=False)
    out = tmp_path / "out"
    assert main(["monitor", str(analysis / "results.csv"), "--metadata", str(metadata), "--reference-column",
                 "expert", "--out", str(out), "--no-progress"]) == 0
    assert "no patient with 2 time points" in capsys.readouterr().out
    assert "expert" in pd.read_csv(out / "timelines.csv").columns
    report = (out / "patients" / "1" / "report.html").read_text()
    assert "No dated study" in report and "lung segmentation found no lung" in report
    assert main(["trend-agreement", str(out / "timelines.csv"), "--a", "score_total", "--b", "expert"]) == 1
