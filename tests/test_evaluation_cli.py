"""``pneumonitor evaluate`` / ``ablation`` end to end on a tiny generated set (results.csv written directly)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from pneumonitor.cli import main
from pneumonitor.datasets.datalist import write_conversion
from pneumonitor.publishing import write_png

RESULT_COLUMNS = (
    "image,status,reason,pneumonia_probability,positive,ratio_total,ratio_right,ratio_left,score_right,score_left,"
    "score_total,lung_mask,pneumonia_mask,overlay,heatmap,patient_id,study_instance_uid,series_instance_uid,"
    "sop_instance_uid,study_date,acquisition_datetime,view_position,rows,columns"
).split(",")
LABELS = [1, 1, 1, 1, 0, 0, 0, 0]
PROBABILITIES = [0.9, 0.8, 0.7, 0.3, 0.6, 0.2, 0.1, 0.05]  # AUC = 15/16 by hand
SEVERITY_REF = [4.0, 2.3, 6.0, 1.0, 0.0, 0.0, 0.0, 0.0]
SEVERITY_PRED = [4, 2, 6, 0, 0, 0, 0, 0]


def make_set(root: Path) -> tuple[Path, Path]:
    """8 images, a reference datalist (test split) and a results folder; returns (datalist, results dir)."""
    images, results = root / "images", root / "results"
    items, rows = [], []
    for index, (label, probability) in enumerate(zip(LABELS, PROBABILITIES)):
        image = write_png(images / f"cxr{index}.png", np.full((32, 32), 100, np.uint8))
        lungs = np.zeros((32, 32), np.uint8)
        lungs[4:28, 2:14] = 255
        lungs[4:28, 18:30] = 255
        lungs[26:28, 2:6] = 127  # V7-style ignore pixels
        lung_path = write_png(root / "ref" / f"lung{index}.png", lungs)
        pneumonia = np.zeros((32, 32), bool)
        boxes = []
        if label:
            pneumonia[6:14, 4:12] = True
            boxes = [[4, 6, 12, 14]]
        mask_path = write_png(root / "ref" / f"pneumonia{index}.png", pneumonia)
        items.append({"image": str(image), "label": label, "boxes": boxes, "mask": str(mask_path),
                      "lung_mask": str(lung_path), "lung_mask_ignore_value": 127, "severity": SEVERITY_REF[index],
                      "involvement_right": 25.0 * label, "involvement_left": 0.0, "patient_id": str(index),
                      "source": "synthetic", "split": "test"})
        # predictions: perfect lungs (ignore pixels predicted as lung: must not matter), perfect pneumonia masks,
        # a heatmap peaked on the true box
        predicted_lungs = np.where(lungs > 0, 255, 0).astype(np.uint8)
        write_png(results / "masks" / f"lung{index}.png", predicted_lungs)
        write_png(results / "masks" / f"pneumonia{index}.png", pneumonia)
        heatmap = np.zeros((32, 32), np.uint8)
        heatmap[6:14, 4:12] = 220 if label else 0  # 0.863
        write_png(results / "masks" / f"heat{index}.png", heatmap)
        row = dict.fromkeys(RESULT_COLUMNS, "")
        row.update(image=str(image), status="ok", pneumonia_probability=probability, positive=int(probability >= 0.5),
                   ratio_right=25.0 * label, ratio_left=0.0, score_total=SEVERITY_PRED[index],
                   lung_mask=f"masks/lung{index}.png", pneumonia_mask=f"masks/pneumonia{index}.png",
                   heatmap=f"masks/heat{index}.png", rows=32, columns=32)
        rows.append(row)
    # a skipped input and a reference image analyze never saw
    rows.append({**dict.fromkeys(RESULT_COLUMNS, ""), "image": str(root / "lateral.png"), "status": "skipped",
                 "reason": "lateral view"})
    items.append({"image": str(root / "lateral.png"), "label": 0, "patient_id": "9", "source": "synthetic", "split": "test"})
    items.append({"image": str(root / "never.png"), "label": 1, "patient_id": "10", "source": "synthetic", "split": "test"})
    write_conversion(root / "reference", items)
    results.mkdir(parents=True, exist_ok=True)
    with open(results / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, RESULT_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return root / "reference" / "datalist.json", results


def test_evaluate_end_to_end(tmp_path: Path):
    reference, results = make_set(tmp_path)
    out = tmp_path / "eval"
    code = main(["evaluate", "--results", str(results), "--reference", str(reference), "--out", str(out),
                 "--names", "Tiny", "--n-bootstrap", "200", "--quiet"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())["datasets"][0]
    assert (metrics["matched"], metrics["skipped_by_analyze"], metrics["unmatched_reference"]) == (8, 1, 1)
    cls = metrics["classification"]
    assert cls["auc"]["value"] == pytest.approx(15 / 16)
    assert cls["threshold"] == pytest.approx(0.7)  # ROC point (0, 0.75) is nearest the corner
    assert cls["sensitivity"]["value"] == pytest.approx(0.75) and cls["specificity"]["value"] == pytest.approx(1.0)
    assert metrics["lung_segmentation"]["dice"]["mean"] == pytest.approx(1.0)
    assert metrics["pneumonia_segmentation"]["dice"]["mean"] == pytest.approx(1.0)  # empty vs empty counts 1
    loc = metrics["localization"]
    # gated: the 4th positive (p=0.3) is called negative -> precision 0; 3 hits; negatives have no box -> skipped
    assert loc["images"] == 8 and loc["sweep"]["map"][0] == pytest.approx(3 / 4)
    assert loc["sweep"]["threshold"][-2:] == [0.85, 0.9]
    assert loc["sweep"]["map"][-2:] == pytest.approx([3 / 4, 0.0])  # 220/255 = 0.863: no region at t = 0.9
    severity = metrics["severity"]
    assert severity["total"]["n"] == 8 and severity["total"]["mae"] == pytest.approx((0.3 + 1.0) / 8)
    assert severity["involvement_right"]["mae_percent"] == pytest.approx(0.0)
    assert np.asarray(severity["confusion_matrix"]).sum() == 8
    # each number beside its baseline on the same images, resampled together over the 8 patients
    compared = metrics["baseline_comparisons"]
    assert set(compared) == {"classification_auc", "pneumonia_dice", "severity_mae", "severity_r",
                             "involvement_right_mae", "involvement_left_mae"}
    dice = compared["pneumonia_dice"]  # perfect masks against the whole lung (negatives: empty vs lungs = 0)
    assert dice["model"]["value"] == pytest.approx(1.0) and dice["verdict"] == "beats"
    assert dice["bootstrap"] == "patients (n=8)" and dice["n"] == 8
    assert compared["severity_mae"]["model"]["value"] == pytest.approx(severity["total"]["mae"])
    assert severity["total"]["bias_ci"]["low"] <= severity["total"]["bias"] <= severity["total"]["bias_ci"]["high"]
    for name in ("roc.png", "map_vs_threshold.png", "severity_scatter.png", "severity_confusion.png", "tables.md",
                 "per_image.csv", "report.html"):
        assert (out / name).stat().st_size > 0
    tables = (out / "tables.md").read_text()
    assert "| Tiny | 0.94 [" in tables and "Table III" in tables and "Table IV" in tables
    assert "| Tiny | pneumonia-mask Dice | 1.00 [1.00, 1.00] | calling the whole lung |" in tables
    assert "| higher | **beats** | 8 |" in tables
    page = (out / "report.html").read_text()
    assert '<img src="roc.png"' in page and "<td>Tiny</td>" in page
    assert not list(out.glob(".*"))


def test_reference_csv_matches_by_basename(tmp_path: Path):
    reference, results = make_set(tmp_path)
    items = json.loads(reference.read_text())["test"]
    csv_path = tmp_path / "reference.csv"
    with open(csv_path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["image", "label", "severity"])
        writer.writeheader()
        for item in items:  # other folder, same file names
            writer.writerow({"image": f"/elsewhere/{Path(item['image']).name}", "label": item["label"],
                             "severity": item.get("severity", "")})
    out = tmp_path / "eval_csv"
    assert main(["evaluate", "--results", str(results / "results.csv"), "--reference", str(csv_path),
                 "--out", str(out), "--threshold", "0.5", "--n-bootstrap", "100", "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())["datasets"][0]
    assert metrics["matched"] == 8 and metrics["classification"]["threshold"] == 0.5
    assert "lung_segmentation" not in metrics and "localization" not in metrics


def test_clear_errors_and_no_partial_output(tmp_path: Path, caplog):
    reference, results = make_set(tmp_path)
    out = tmp_path / "eval_missing"
    assert main(["evaluate", "--results", str(tmp_path / "nothing"), "--reference", str(reference),
                 "--out", str(out), "--quiet"]) == 1
    assert "no results.csv" in caplog.text and not out.exists()
    assert main(["evaluate", "--results", str(results), "--reference", str(reference), "--split", "validation",
                 "--out", str(out), "--quiet"]) == 1
    assert not out.exists()


def test_ablation_from_finished_runs(tmp_path: Path):
    reference, results = make_set(tmp_path)
    out = tmp_path / "ablation"
    code = main(["ablation", "--reference", str(reference), "--run", f"DLNet-1 + LSNet={results}",
                 "--run", f"DLNet-2 + LSNet-Aug={results}", "--out", str(out), "--n-bootstrap", "100", "--quiet"])
    assert code == 0
    tables = (out / "tables.md").read_text()
    assert "| DLNet-1 + LSNet |" in tables and "| DLNet-2 + LSNet-Aug |" in tables
    assert (out / "severity_scatter_dlnet_2___lsnet_aug.png").is_file()


def test_positives_without_localization_are_left_out_of_the_map(tmp_path: Path):
    reference, results = make_set(tmp_path)
    datalist = json.loads(reference.read_text())
    datalist["test"][0].update(boxes=[], has_localization=0)  # as in the training mix: location unknown
    reference.write_text(json.dumps(datalist))
    out = tmp_path / "eval_mix"
    assert main(["evaluate", "--results", str(results), "--reference", str(reference), "--out", str(out),
                 "--n-bootstrap", "50", "--quiet"]) == 0
    loc = json.loads((out / "metrics.json").read_text())["datasets"][0]["localization"]
    assert loc["images"] == 7
    assert loc["sweep"]["map"][0] == pytest.approx(2 / 3)  # 2 hits, 1 gated-out positive; negatives skipped


def test_ablation_defaults_to_all_splits():
    from pneumonitor.cli import build_parser

    args = build_parser().parse_args(["ablation", "--reference", "r.json", "--out", "o"])
    assert args.split == "all"
    assert build_parser().parse_args(["evaluate", "--results", "r", "--reference", "r.json", "--out", "o"]).split == "test"


def test_operating_point_is_chosen_on_validation_and_saved_to_the_bundle(tmp_path: Path):
    reference, results = make_set(tmp_path)
    items = json.loads(reference.read_text())
    items["validation"], items["test"] = items.pop("test"), []
    reference.write_text(json.dumps(items))
    bundle = tmp_path / "bundle"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "configs" / "inference.json").write_text(json.dumps(
        {"image_size": [224, 224], "bundle_root": "x", "operating_points": {"balanced": 0.3, "high-specificity": 0.9}}))
    args = ["evaluate", "--results", str(results), "--reference", str(reference), "--n-bootstrap", "50", "--quiet",
            "--save-operating-point", str(bundle)]
    # thresholds are never chosen on a test split
    assert main(args + ["--out", str(tmp_path / "e0")]) == 2
    assert main(args + ["--out", str(tmp_path / "e1"), "--split", "validation"]) == 0
    config = json.loads((bundle / "configs" / "inference.json").read_text())
    assert list(config)[:2] == ["image_size", "bundle_root"]  # other keys kept, in order
    assert config["classification_threshold"] == pytest.approx(0.7)
    # heatmap 0.863 on the true box only: every threshold up to 0.85 gives Dice 1 on the positives
    sweep = json.loads((tmp_path / "e1" / "metrics.json").read_text())["datasets"][0]["pneumonia_segmentation"]["heatmap_sweep"]
    assert sweep["images"] == 8 and sweep["dice"][sweep["threshold"].index(0.85)] == pytest.approx(1.0)
    assert sweep["dice"][sweep["threshold"].index(0.9)] == pytest.approx(0.5)  # positives lose their region
    # ... but 8 images do not choose a heatmap threshold (at least 30 expert-scored images do)
    assert "heatmap_threshold" not in config
    assert "nearest (0,1)" in config["operating_point_basis"] and "heatmap" not in config["operating_point_basis"]
    # one source names no high-specificity point: the named points of an earlier choice are not left behind
    assert "operating_points" not in config


def make_scored_set(root: Path, n: int = 32, reference_score: float = 2.0) -> tuple[Path, Path]:
    """``n`` positives whose heatmaps cover 20 % of each lung at 0.8 and another 40 % at 0.4, written as analyze
    writes them (lung labels right 255 / left 128, results.json with the operating point analyze used)."""
    items, rows = [], []
    for index in range(n):
        image = write_png(root / "images" / f"cxr{index}.png", np.full((40, 40), 90 + index, np.uint8))
        lungs = np.zeros((40, 40), np.uint8)
        lungs[5:35, 2:17] = 255  # patient's right lung: image left
        lungs[5:35, 22:37] = 128
        heat = np.zeros((40, 40), np.uint8)
        heat[5:11, :] = 204  # rows 5-10: 6 of 30 lung rows = 20 % at 0.8
        heat[11:23, :] = 102  # 12 more rows = 40 % at 0.4
        write_png(root / "results" / "masks" / f"lung{index}.png", lungs)
        write_png(root / "results" / "masks" / f"heat{index}.png", heat)
        items.append({"image": str(image), "label": 1, "severity": reference_score, "patient_id": f"p{index // 2}",
                      "source": "synthetic", "split": "validation"})
        rows.append({**dict.fromkeys(RESULT_COLUMNS, ""), "image": str(image), "status": "ok",
                     "pneumonia_probability": 0.9, "positive": 1, "score_total": 6, "ratio_right": 60.0,
                     "ratio_left": 60.0, "lung_mask": f"masks/lung{index}.png", "heatmap": f"masks/heat{index}.png",
                     "rows": 40, "columns": 40})
    for index in range(4):  # negatives, so a classification threshold exists
        image = write_png(root / "images" / f"neg{index}.png", np.full((40, 40), 10, np.uint8))
        items.append({"image": str(image), "label": 0, "patient_id": f"n{index}", "source": "synthetic",
                      "split": "validation"})
        rows.append({**dict.fromkeys(RESULT_COLUMNS, ""), "image": str(image), "status": "ok",
                     "pneumonia_probability": 0.1, "positive": 0, "score_total": 0})
    write_conversion(root / "reference", items)
    with open(root / "results" / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, RESULT_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    (root / "results" / "results.json").write_text(json.dumps({"settings": {"classification_threshold": 0.35}}))
    return root / "reference" / "datalist.json", root / "results"


def test_heatmap_threshold_is_chosen_by_the_score_error_against_experts(tmp_path: Path):
    reference, results = make_scored_set(tmp_path)
    bundle = tmp_path / "bundle"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "configs" / "inference.json").write_text(json.dumps({"heatmap_threshold": 0.4}))
    assert main(["evaluate", "--results", str(results), "--reference", str(reference), "--split", "validation",
                 "--out", str(tmp_path / "e"), "--n-bootstrap", "20", "--quiet",
                 "--save-operating-point", str(bundle)]) == 0
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())["datasets"][0]
    sweep = metrics["severity_sweep"]
    at = {t: (m, b) for t, m, b in zip(sweep["threshold"], sweep["mae"], sweep["bias"])}
    assert at[0.4] == pytest.approx((4.0, 4.0))  # 60 % of each lung: 3 + 3 = 6 against the experts' 2
    assert at[0.5] == pytest.approx((0.0, 0.0)) and at[0.8] == pytest.approx((0.0, 0.0))  # 20 %: 1 + 1
    assert at[0.85] == pytest.approx((2.0, -2.0))  # nothing left
    config = json.loads((bundle / "configs" / "inference.json").read_text())
    assert config["heatmap_threshold"] == pytest.approx(0.45)  # lowest MAE, first of the ties
    assert "0-8 score MAE" in config["operating_point_basis"] and "n=32" in config["operating_point_basis"]
    # the CIs come from a patient-level bootstrap (two images per patient here)
    assert metrics["classification"]["bootstrap"] == "patients (n=20)"
    assert "baselines" in metrics and metrics["baselines"]["severity_mae_reference_mean"] == pytest.approx(0.0)


def test_evaluate_uses_the_operating_point_analyze_used_unless_told_otherwise(tmp_path: Path):
    reference, results = make_scored_set(tmp_path)
    base = ["evaluate", "--results", str(results), "--reference", str(reference), "--split", "validation",
            "--n-bootstrap", "20", "--quiet"]
    assert main(base + ["--out", str(tmp_path / "op")]) == 0
    cls = json.loads((tmp_path / "op" / "metrics.json").read_text())["datasets"][0]["classification"]
    assert cls["threshold"] == pytest.approx(0.35) and "analyze used" in cls["threshold_rule"]
    assert main(base + ["--out", str(tmp_path / "auto"), "--threshold", "auto"]) == 0
    cls = json.loads((tmp_path / "auto" / "metrics.json").read_text())["datasets"][0]["classification"]
    assert "tuned on the evaluated data" in cls["threshold_rule"]
    assert "tuned on the evaluated data" in (tmp_path / "auto" / "tables.md").read_text()


def test_by_source_exposes_a_model_that_learned_the_source():
    from pneumonitor.evaluation.tables import table_sources
    from pneumonitor.evaluation.suite import by_source

    # source A: positives only, scored high; source B: negatives high too (looks like A) -> pooled AUC hides it
    labels = [1, 1, 1, 0, 0, 0, 0]
    scores = [0.9, 0.8, 0.7, 0.85, 0.75, 0.1, 0.2]
    sources = ["A", "A", "A", "B", "B", "C", "C"]
    table = by_source(labels, scores, sources, threshold=0.5)
    assert table["A"] == {"n": 3, "n_positive": 3, "median_score_positives": 0.8, "called_positive_positives": 1.0,
                          "auc": None}
    assert table["B"]["called_positive_negatives"] == 1.0 and table["C"]["called_positive_negatives"] == 0.0
    text = table_sources([{"name": "X", "classification": {"by_source": table}}])
    assert "| X | B | 2 (0) | n/a | n/a / 0.80 | n/a | 1.00 |" in text


def test_by_source_bounds_say_how_far_a_source_is_from_both_goals():
    from pneumonitor.evaluation.tables import markdown_report, table_source_bounds
    from pneumonitor.evaluation.suite import by_source

    # source "hard": 20 normals 0.05 .. 1.0, 20 positives 0.5 .. 0.975 (overlap); "few": 2 normals, 30 positives
    hard_neg, hard_pos = np.arange(1, 21) / 20, 0.475 + np.arange(1, 21) / 40
    labels = np.r_[np.zeros(20), np.ones(20), np.zeros(2), np.ones(30)]
    scores = np.r_[hard_neg, hard_pos, [0.1, 0.2], np.full(30, 0.9)]
    sources = ["hard"] * 40 + ["few"] * 32
    table = by_source(labels, scores, sources, threshold=0.5)
    # <= 2 of 20 normals positive: threshold above 0.9 -> positives 0.925, 0.95, 0.975 = 3 of 20
    assert table["hard"]["best_sensitivity"] == pytest.approx(0.15)
    # >= 17 of 20 positives: threshold <= 0.575 -> normals 0.6 .. 1.0 positive = 9 of 20
    assert table["hard"]["fewest_false_positives"] == pytest.approx(0.45)
    assert "best_sensitivity" not in table["few"] and table["few"]["auc"] == 1.0  # 2 normals cannot resolve 10 %
    text = table_source_bounds([{"name": "X", "classification": {"by_source": table}}])
    assert "| X | hard | 40 (20) | 0.71 | 0.15 | 0.45 |" in text and "| few |" not in text
    report = markdown_report([{"name": "X", "classification": {"by_source": table}}])
    assert "the best its ROC allows" in report and "an AUC of about 0.95" in report


def test_patient_level_bootstrap_is_wider_when_patients_repeat():
    from pneumonitor.evaluation.classification import evaluate_classification

    rng = np.random.default_rng(0)
    labels = np.repeat([1] * 10 + [0] * 10, 8)  # 20 patients, 8 near-identical images each
    scores = np.repeat(rng.uniform(0.3, 0.9, 20) * np.r_[np.ones(10), np.full(10, 0.8)], 8)
    patients = np.repeat(np.arange(20), 8)
    by_image = evaluate_classification(labels, scores, 0.5, n_bootstrap=300, seed=0)
    by_patient = evaluate_classification(labels, scores, 0.5, n_bootstrap=300, seed=0, groups=patients)
    assert by_patient.auc.value == by_image.auc.value
    assert (by_patient.auc.high - by_patient.auc.low) > 1.8 * (by_image.auc.high - by_image.auc.low)
    assert by_patient.bootstrap == "patients (n=20)" and by_image.bootstrap == "images (n=160)"


def test_clinical_course_block():
    from types import SimpleNamespace

    from pneumonitor.evaluation.suite import clinical_course_metrics

    pairs = [({"icu_at_exam": 1, "died": 0}, {"score_total": 7.0, "ratio_total": 60.0, "pneumonia_probability": 0.9}),
             ({"icu_at_exam": 1, "died": 1}, {"score_total": 5.0, "ratio_total": 40.0, "pneumonia_probability": 0.8}),
             ({"icu_at_exam": 0, "died": 0}, {"score_total": 2.0, "ratio_total": 10.0, "pneumonia_probability": 0.7}),
             ({"image": "no course"}, {"score_total": 2.0})]
    block = clinical_course_metrics(SimpleNamespace(pairs=pairs))
    icu = block["icu_at_exam"]
    assert (icu["n"], icu["n_outcome"]) == (3, 2)
    assert icu["score_total"]["mean_with"] == 6.0 and icu["score_total"]["auc"] == 1.0
    assert block["died"]["n_outcome"] == 1
    assert icu["score_vs_probability"]["verdict"] == "too few to tell"  # 3 images: no interval
    # 12 patients whose score orders the ICU course and whose probability does not
    pairs = [({"icu_at_exam": int(i < 6), "patient_id": f"p{i}", "image": f"{i}.png"},
              {"score_total": 6.0 - (i % 6) * 0.1 if i < 6 else 2.0 + (i % 6) * 0.1, "ratio_total": 10.0,
               "pneumonia_probability": 0.9 if i % 2 else 0.8}) for i in range(12)]
    versus = clinical_course_metrics(SimpleNamespace(pairs=pairs), n_bootstrap=200)["icu_at_exam"]["score_vs_probability"]
    assert versus["model"]["value"] == 1.0 and versus["baseline"]["value"] == pytest.approx(0.5)
    assert versus["verdict"] == "beats" and versus["bootstrap"] == "patients (n=12)"
    pairs[1][0]["icu_at_exam"] = pairs[2][0]["icu_at_exam"] = 0  # 4 in an ICU: too few events for an interval
    few = clinical_course_metrics(SimpleNamespace(pairs=pairs), n_bootstrap=200)["icu_at_exam"]["score_vs_probability"]
    assert few["verdict"] == "too few to tell"


def test_high_specificity_operating_point_holds_each_source_and_is_saved(tmp_path: Path):
    """Two normal sources, one hard (its normals score like pneumonia), one easy: the high-specificity point keeps
    each at <= 10 % called positive; it is saved beside the balanced point; scores below it count as 0."""
    rng = np.random.default_rng(1)
    groups = {"hard": (0, rng.uniform(0.1, 0.9, 30)), "easy": (0, rng.uniform(0.0, 0.3, 30)),
              "sick": (1, rng.uniform(0.4, 1.0, 30))}
    items, rows = [], []
    for source, (label, probabilities) in groups.items():
        for index, probability in enumerate(probabilities):
            image = str(tmp_path / f"{source}{index}.png")
            items.append({"image": image, "label": label, "patient_id": f"{source}{index}", "source": source,
                          "split": "validation"})
            called = int(probability >= 0.35)
            rows.append({**dict.fromkeys(RESULT_COLUMNS, ""), "image": image, "status": "ok",
                         "pneumonia_probability": round(float(probability), 6), "positive": called,
                         "score_total": 4 * called})
    write_conversion(tmp_path / "reference", items)
    (tmp_path / "results").mkdir()
    with open(tmp_path / "results" / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, RESULT_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    (tmp_path / "results" / "results.json").write_text(json.dumps({"settings": {"classification_threshold": 0.35}}))
    bundle = tmp_path / "bundle"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "configs" / "inference.json").write_text(json.dumps({"classification_threshold": 0.5}))
    assert main(["evaluate", "--results", str(tmp_path / "results"), "--reference",
                 str(tmp_path / "reference" / "datalist.json"), "--split", "validation", "--threshold", "auto",
                 "--out", str(tmp_path / "e"), "--n-bootstrap", "20", "--quiet",
                 "--save-operating-point", str(bundle)]) == 0
    cls = json.loads((tmp_path / "e" / "metrics.json").read_text())["datasets"][0]["classification"]
    high = cls["high_specificity"]
    t = high["threshold"]
    hard, easy, sick = (np.round(groups[g][1], 6) for g in ("hard", "easy", "sick"))
    assert np.mean(hard >= t) <= 0.10 and np.mean(hard >= t - 1e-4) > 0.10  # the lowest such threshold
    assert high["by_source"]["hard"]["called_positive_negatives"] == pytest.approx(np.mean(hard >= t))
    low, high_end = high["by_source"]["hard"]["called_positive_negatives_ci"]  # over the 30 patients
    assert low < np.mean(hard >= t) < high_end and high_end - low > 0.1  # 3 of 30 cannot pin a rate down
    assert high["sensitivity"] == pytest.approx(np.mean(sick >= t))
    # the 0-8 scores at that point: analyze's for images at or above it, 0 below
    assert high["by_source"]["hard"]["mean_score_total_negatives"] == pytest.approx(4 * np.mean(hard >= t))
    config = json.loads((bundle / "configs" / "inference.json").read_text())
    assert config["operating_points"] == {"balanced": config["classification_threshold"], "high-specificity": t}
    assert "high-specificity" in config["operating_point_basis"]
    assert f"high-specificity {t:.3f}, chosen on these data" in (tmp_path / "e" / "tables.md").read_text()
    # below analyze's own threshold (0.35) the scores were never computed: left out rather than guessed
    assert main(["evaluate", "--results", str(tmp_path / "results"), "--reference",
                 str(tmp_path / "reference" / "datalist.json"), "--split", "validation", "--threshold", "0.2",
                 "--out", str(tmp_path / "low"), "--n-bootstrap", "20", "--quiet"]) == 0
    low = json.loads((tmp_path / "low" / "metrics.json").read_text())["datasets"][0]["classification"]["by_source"]
    assert "mean_score_total_negatives" not in low["hard"] and "called_positive_negatives" in low["hard"]


def test_severity_is_measured_at_the_evaluated_threshold_not_analyzes(tmp_path: Path):
    """A stricter threshold than analyze's (another operating point): images scored by analyze but below it report
    no pneumonia. A laxer one (a threshold chosen on the evaluated data): images analyze called negative above it
    were never scored, and the evaluation says so instead of reporting their zeros as measured."""
    from pneumonitor.evaluation.matching import MatchedSet
    from pneumonitor.evaluation.suite import EvaluationSettings, evaluate_matched
    from pneumonitor.evaluation.tables import table_severity

    def row(p, positive, score, ratio):
        return {"image": f"{p}.png", "pneumonia_probability": p, "positive": positive, "score_total": score,
                "score_right": score / 2, "score_left": score / 2, "ratio_right": ratio, "ratio_left": ratio,
                "ratio_total": ratio}
    # analyzed behind 0.4
    pairs = [({"image": "a", "label": 1, "severity": 6.0, "involvement_right": 60.0, "involvement_left": 60.0,
               "icu_at_exam": 1}, row(0.9, 1, 6, 60.0)),
             ({"image": "b", "label": 1, "severity": 4.0, "involvement_right": 40.0, "involvement_left": 40.0,
               "icu_at_exam": 0}, row(0.5, 1, 4, 40.0)),
             ({"image": "c", "label": 1, "severity": 3.0, "icu_at_exam": 1}, row(0.3, 0, 0, 0.0)),
             ({"image": "n1", "label": 0}, row(0.2, 0, 0, 0.0)), ({"image": "n2", "label": 0}, row(0.1, 0, 0, 0.0))]
    # b also has a box, and a heatmap that finds it exactly: predicted only while b is called positive
    heatmap = np.zeros((16, 16), dtype=np.uint8)
    heatmap[4:12, 4:12] = 255
    write_png(tmp_path / "b_heatmap.png", heatmap)
    pairs[1][0].update(boxes=[[4, 4, 12, 12]], rows=16, columns=16)
    pairs[1][1]["heatmap"] = "b_heatmap.png"
    matched = MatchedSet(tmp_path, pairs)
    tasks = ("classification", "severity", "localization")

    def measured(threshold):
        return evaluate_matched("set", matched, EvaluationSettings(threshold=threshold, n_bootstrap=10, tasks=tasks))

    as_analyzed = measured(0.4).metrics
    assert as_analyzed["severity"]["total"]["mae"] == pytest.approx(1.0) and "unscored_at_threshold" not in as_analyzed
    assert as_analyzed["localization"]["best_map"] == pytest.approx(1.0)
    stricter = measured(0.6).metrics  # b is below 0.6: the system reports 0 for it
    assert stricter["severity"]["total"]["mae"] == pytest.approx((0 + 4 + 3) / 3)
    assert stricter["severity"]["involvement_right"]["mae_percent"] == pytest.approx((0 + 40) / 2)
    assert "unscored_at_threshold" not in stricter and stricter["localization"]["best_map"] == 0.0
    assert as_analyzed["clinical_course"]["icu_at_exam"]["score_total"]["mean_without"] == 4.0
    assert stricter["clinical_course"]["icu_at_exam"]["score_total"]["mean_without"] == 0.0
    # positives only (no ROC, e.g. the COVID-19 sets alone): the threshold asked for still gates
    positives_only = evaluate_matched("positives", MatchedSet(tmp_path, pairs[:3]),
                                      EvaluationSettings(threshold=0.6, n_bootstrap=10, tasks=tasks)).metrics
    assert positives_only["severity"]["total"]["mae"] == pytest.approx((0 + 4 + 3) / 3)
    laxer = measured(0.25).metrics  # c (0.3) was never scored: said, in the metrics and under the table
    assert laxer["unscored_at_threshold"]["n"] == 1
    assert "analyze again at this threshold" in table_severity([laxer])


def test_severity_by_source_and_mask_placement_at_the_reference_area(tmp_path: Path):
    from pneumonitor.evaluation.tables import markdown_report

    reference, results = make_scored_set(tmp_path)
    items = json.loads(reference.read_text())
    rows = list(csv.DictReader(open(results / "results.csv")))
    for index, (item, row) in enumerate(zip(items["validation"][:32], rows[:32])):
        if index >= 16:  # a second source: scores 4 / 6 against experts' 4 / 5 (r 1, MAE 0.5, bias +0.5)
            item["source"], item["severity"] = "other", 4.0 + index % 2
            row["score_total"] = 4 + 2 * (index % 2)
        if index < 2:  # radiologist masks: lung rows 11-22 (40 %, the 0.4 band) and rows 5-16
            mask = np.zeros((40, 40), bool)
            mask[(11, 5)[index]:(23, 17)[index], 2:17] = mask[(11, 5)[index]:(23, 17)[index], 22:37] = True
            item["mask"] = str(write_png(tmp_path / "ref" / f"mask{index}.png", mask))
            row["pneumonia_mask"] = f"masks/pneumonia{index}.png"
            write_png(results / "masks" / f"pneumonia{index}.png", mask)
    reference.write_text(json.dumps(items))
    with open(results / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, RESULT_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    assert main(["evaluate", "--results", str(results), "--reference", str(reference), "--split", "validation",
                 "--out", str(tmp_path / "e"), "--n-bootstrap", "20", "--quiet"]) == 0
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())["datasets"][0]
    by_source = metrics["severity"]["by_source"]
    assert by_source["synthetic"]["mae"] == pytest.approx(4.0) and by_source["synthetic"]["bias"] == pytest.approx(4.0)
    assert by_source["other"]["pearson_r"] == pytest.approx(1.0) and by_source["other"]["mae"] == pytest.approx(0.5)
    assert by_source["other"]["mae_reference_mean"] == pytest.approx(0.5)
    # 40 % of each lung at the heatmap's highest pixels = rows 5-16: half the first mask, all of the second
    placed = metrics["pneumonia_segmentation"]["reference_area"]["dice"]
    assert placed["n"] == 2 and placed["mean"] == pytest.approx((0.5 + 1.0) / 2)
    report = markdown_report([metrics])
    assert "| other | 16 | 1.00 | 0.50 | 0.50 | 4.50 | 0.50 |" in report
    assert "(placement only) | 0.75 ± 0.35 |" in report
