"""Evaluation outputs: ``metrics.json``, Markdown tables shaped like the paper's Tables II-IV (also as
``report.html`` with the figures), PNG figures
(ROC, mAP vs heatmap threshold, severity scatter with regression line and identity, 9x9 confusion matrix) and a
per-image CSV. Everything is written to temporary names and renamed, so a failed run leaves no partial file.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pneumonitor.bootstrap import Estimate
from pneumonitor.evaluation.severity_agreement import N_SCORES
from pneumonitor.publishing import atomic_path, html_page, save_figure, write_json, write_text


def _estimate(block: dict[str, Any]) -> str:
    return Estimate(block["value"], block["low"], block["high"]).format()


def _mean_sd(block: dict[str, Any] | None) -> str:
    if not block or not block.get("n"):
        return "n/a"
    return f"{block['mean']:.2f} ± {block['sd']:.2f}"


def _number(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def table_classification(metrics: Sequence[dict[str, Any]]) -> str:
    """Table II: one row per dataset; AUC, Sens, Spec, ACC, PPV with 95 % CI, threshold, n."""
    lines = ["| Dataset | AUC [95% CI] | Sens [95% CI] | Spec [95% CI] | ACC [95% CI] | PPV [95% CI] | threshold | n (pos) |",
             "|---|---|---|---|---|---|---|---|"]
    for block in metrics:
        cls = block.get("classification")
        if not cls or "auc" not in cls:
            continue
        lines.append(
            f"| {block['name']} | {_estimate(cls['auc'])} | {_estimate(cls['sensitivity'])} | "
            f"{_estimate(cls['specificity'])} | {_estimate(cls['accuracy'])} | {_estimate(cls['ppv'])} | "
            f"{cls['threshold']:.2f} | {cls['n']} ({cls['n_positive']}) |"
        )
    return "\n".join(lines) if len(lines) > 2 else ""


def table_sources(metrics: Sequence[dict[str, Any]]) -> str:
    """Classification per data source: where a pooled AUC hides a model that learned the source; again at the
    high-specificity operating point of the same data when the evaluation found one."""
    lines = ["| Dataset | source | n (pos) | AUC | median p pos / neg | sensitivity | normals called positive | "
             "mean 0-8 score pos / neg |", "|---|---|---|---|---|---|---|---|"]
    for block in metrics:
        classification = block.get("classification") or {}
        high = classification.get("high_specificity") or {}
        points = [(block["name"], classification.get("by_source", {}))]
        if high:  # the same sources at the high-specificity operating point of these data
            points.append((f"{block['name']} (high-specificity {high['threshold']:.3f}, chosen on these data)",
                           high.get("by_source", {})))
        for name, source, row in ((n, s, r) for n, table in points for s, r in table.items()):
            medians = " / ".join(_number(row.get(f"median_score_{k}")) for k in ("positives", "negatives"))
            scores = " / ".join(_number(row.get(f"mean_score_total_{k}")) for k in ("positives", "negatives"))
            lines.append(f"| {name} | {source} | {row['n']} ({row['n_positive']}) | {_number(row['auc'])} | "
                         f"{medians} | {_share(row, 'positives')} | {_share(row, 'negatives')} | {scores} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def table_source_bounds(metrics: Sequence[dict[str, Any]]) -> str:
    """Per source of both classes, the two ends of its ROC that the project's goals name (the best any threshold
    allows on these data): how far a source is from meeting both goals at one threshold, apart from where the
    shipped operating point sits."""
    from pneumonitor.evaluation.suite import GOAL_MIN_SENSITIVITY, HIGH_SPECIFICITY_MAX_FALSE_POSITIVE_RATE

    lines = [f"| Dataset | source | n (pos) | AUC | best sensitivity, normals positive <= "
             f"{HIGH_SPECIFICITY_MAX_FALSE_POSITIVE_RATE:.0%} | fewest normals positive, sensitivity >= "
             f"{GOAL_MIN_SENSITIVITY:.0%} |", "|---|---|---|---|---|---|"]
    for block in metrics:
        for source, row in ((block.get("classification") or {}).get("by_source") or {}).items():
            if row.get("best_sensitivity") is not None:
                lines.append(f"| {block['name']} | {source} | {row['n']} ({row['n_positive']}) | "
                             f"{_number(row['auc'])} | {_number(row['best_sensitivity'])} | "
                             f"{_number(row['fewest_false_positives'])} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def _goal_auc() -> float:
    """The binormal AUC the two classification goals need at one threshold (the bounds table's caption)."""
    from pneumonitor.evaluation.classification import binormal_auc_needed
    from pneumonitor.evaluation.suite import GOAL_MIN_SENSITIVITY, HIGH_SPECIFICITY_MAX_FALSE_POSITIVE_RATE

    return binormal_auc_needed(GOAL_MIN_SENSITIVITY, 1.0 - HIGH_SPECIFICITY_MAX_FALSE_POSITIVE_RATE)


def _share(row: dict[str, Any], key: str) -> str:
    """A per-source share called positive, with its CI when the evaluation bootstrapped one."""
    value, ci = row.get(f"called_positive_{key}"), row.get(f"called_positive_{key}_ci")
    if ci is None or value is None:
        return _number(value)
    return f"{_number(value)} [{_number(ci[0])}, {_number(ci[1])}]"


def table_segmentation(metrics: Sequence[dict[str, Any]]) -> str:
    """Table III: Dice and Jaccard (mean ± sd) of lung masks, plus pneumonia masks when present."""
    lines = ["| Model / dataset | masks | Dice | Jaccard | n |", "|---|---|---|---|---|"]
    for block in metrics:
        for key, label in (("lung_segmentation", "lungs"), ("pneumonia_segmentation", "pneumonia")):
            seg = block.get(key)
            if seg:
                lines.append(f"| {block['name']} | {label} | {_mean_sd(seg['dice'])} | {_mean_sd(seg['jaccard'])} | "
                             f"{seg['dice']['n']} |")
            placed = (seg or {}).get("reference_area")
            if placed:
                lines.append(f"| {block['name']} | pneumonia: the heatmap at the reference's area per lung "
                             f"(placement only) | {_mean_sd(placed['dice'])} | | {placed['dice']['n']} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def _with_interval(value: Any, estimate: dict[str, Any] | None) -> str:
    """``value`` with its bootstrap interval (an :class:`Estimate` as a dict) when the evaluation has one."""
    return _estimate(estimate) if estimate else _number(value)


def table_severity(metrics: Sequence[dict[str, Any]]) -> str:
    """Table IV: Pearson r (p), R^2, MAE of predicted vs reference 0-8 scores, with their patient-bootstrap CIs;
    per-lung involvement MAE."""
    lines = ["| Method | r [95% CI] | p | R² | MAE [95% CI] | bias [95% CI] | n | involvement MAE right / left (%) |",
             "|---|---|---|---|---|---|---|---|"]
    for block in metrics:
        sev = block.get("severity")
        if not sev:
            continue
        total, compared = sev["total"], block.get("baseline_comparisons") or {}
        per_lung = " / ".join(_number(sev.get(f"involvement_{side}", {}).get("mae_percent"), 1) for side in ("right", "left"))
        p = total["p_value"]
        p_text = "n/a" if not math.isfinite(p) else ("< 0.001" if p < 0.001 else f"{p:.3f}")
        bias = _with_interval(total.get("bias"), total.get("bias_ci"))
        r = _with_interval(total["pearson_r"], compared.get("severity_r", {}).get("model"))
        mae = _with_interval(total["mae"], compared.get("severity_mae", {}).get("model"))
        lines.append(f"| {block['name']} | {r} | {p_text} | {_number(total['r2'])} | {mae} | {bias} | {total['n']} | "
                     f"{per_lung} |")
    notes = [f"**{block['name']}: {block['unscored_at_threshold']['note']}.**" for block in metrics
             if block.get("severity") and block.get("unscored_at_threshold")]
    return "\n".join(lines + ([""] + notes if notes else [])) if len(lines) > 2 else ""


def table_severity_sources(metrics: Sequence[dict[str, Any]]) -> str:
    """The 0-8 score's agreement with the experts per data source, beside each source's own reference-mean MAE."""
    lines = ["| Dataset | source | n | r | MAE | bias | reference mean | MAE of predicting it |",
             "|---|---|---|---|---|---|---|---|"]
    for block in metrics:
        for source, row in ((block.get("severity") or {}).get("by_source") or {}).items():
            lines.append(f"| {block['name']} | {source} | {row['n']} | {_number(row['pearson_r'])} | "
                         f"{_number(row['mae'])} | {_number(row['bias'])} | {_number(row['reference_mean'])} | "
                         f"{_number(row['mae_reference_mean'])} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def table_localization(metrics: Sequence[dict[str, Any]]) -> str:
    """mAP at each heatmap threshold (Fig. 8a as a table)."""
    blocks = [b for b in metrics if b.get("localization")]
    if not blocks:
        return ""
    thresholds = blocks[0]["localization"]["sweep"]["threshold"]
    lines = ["| Dataset | " + " | ".join(f"t={t:.2f}" for t in thresholds) + " | best |",
             "|---|" + "---|" * (len(thresholds) + 1)]
    for block in blocks:
        loc = block["localization"]
        best = f"{_number(loc['best_map'])} @ {loc['best_threshold']}" if loc["best_map"] is not None else "n/a"
        lines.append(f"| {block['name']} | " + " | ".join(_number(v) for v in loc["sweep"]["map"]) + f" | {best} |")
    return "\n".join(lines)


#: baseline keys -> (what they measure, the model's number they stand beside)
BASELINE_LABELS = {
    "classification_auc_mean_intensity": "classification AUC of the mean image intensity (better direction)",
    "severity_mae_reference_mean": "0-8 score MAE of predicting the reference mean",
    "severity_r_mean_intensity": "Pearson r of the mean image intensity with the reference score",
    "pneumonia_dice_whole_lung": "pneumonia-mask Dice of calling the whole (predicted) lung pneumonia",
    "involvement_right_mae_reference_mean": "right-lung involvement MAE (%) of predicting the reference mean",
    "involvement_left_mae_reference_mean": "left-lung involvement MAE (%) of predicting the reference mean",
    "involvement_right_mae_whole_lung": "right-lung involvement MAE (%) of calling the whole lung",
    "involvement_left_mae_whole_lung": "left-lung involvement MAE (%) of calling the whole lung",
}


def table_baselines(metrics: Sequence[dict[str, Any]]) -> str:
    """Trivial baselines measured on the same images as the model's numbers."""
    lines = ["| Dataset | baseline | value |", "|---|---|---|"]
    for block in metrics:
        for key, value in (block.get("baselines") or {}).items():
            shown = _mean_sd(value) if isinstance(value, dict) else _number(value)
            lines.append(f"| {block['name']} | {BASELINE_LABELS.get(key, key)} | {shown} |")
    return "\n".join(lines) if len(lines) > 2 else ""


#: baseline comparison keys -> (the model's number, the baseline it stands beside)
COMPARISON_LABELS = {
    "classification_auc": ("classification AUC", "mean image intensity (better direction)"),
    "severity_mae": ("0-8 score MAE", "predicting the reference mean"),
    "severity_r": ("0-8 score Pearson r", "mean image intensity (r in its better direction)"),
    "pneumonia_dice": ("pneumonia-mask Dice", "calling the whole lung"),
    "involvement_right_mae": ("right-lung involvement MAE (%)", "predicting the reference mean"),
    "involvement_left_mae": ("left-lung involvement MAE (%)", "predicting the reference mean"),
    "icu_at_exam_auc": ("0-8 score's AUC for being in an ICU on the exam day", "the probability's AUC"),
    "died_auc": ("0-8 score's AUC for death", "the probability's AUC"),
}


def table_comparisons(metrics: Sequence[dict[str, Any]]) -> str:
    """Each model number against its trivial baseline on the same images: both with CIs, their difference with its
    CI from the same resamples, and whether the model beats the baseline on these data."""
    lines = ["| Dataset | metric | model [95% CI] | baseline | baseline [95% CI] | model - baseline [95% CI] | "
             "better | verdict | n |", "|---|---|---|---|---|---|---|---|---|"]
    for block in metrics:
        for key, row in (block.get("baseline_comparisons") or {}).items():
            metric, baseline = COMPARISON_LABELS.get(key, (key, ""))
            estimates = {name: _estimate(row[name]) for name in ("model", "baseline", "difference")}
            lines.append(f"| {block['name']} | {metric} | {estimates['model']} | {baseline} | {estimates['baseline']} "
                         f"| {estimates['difference']} | {'higher' if row['higher_is_better'] else 'lower'} | "
                         f"**{row['verdict']}** | {row['n']} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def table_severity_sweep(metrics: Sequence[dict[str, Any]]) -> str:
    """0-8 score MAE and bias against expert scores at each heatmap threshold."""
    blocks = [b for b in metrics if b.get("severity_sweep")]
    if not blocks:
        return ""
    thresholds = blocks[0]["severity_sweep"]["threshold"]
    lines = ["| Dataset | " + " | ".join(f"t={t:.2f}" for t in thresholds) + " | best |",
             "|---|" + "---|" * (len(thresholds) + 1)]
    for block in blocks:
        sweep = block["severity_sweep"]
        cells = [f"{m:.2f} ({b:+.1f})" for m, b in zip(sweep["mae"], sweep["bias"])]
        lines.append(f"| {block['name']} (n={sweep['images']}) | " + " | ".join(cells) +
                     f" | {sweep['best_mae']:.2f} @ {sweep['best_threshold']} |")
    return "\n".join(lines)


def table_clinical(metrics: Sequence[dict[str, Any]]) -> str:
    """Outputs against the clinical course: mean with / without the outcome and the AUC for it."""
    lines = ["| Dataset | outcome | n (with) | output | mean with | mean without | AUC |", "|---|---|---|---|---|---|---|"]
    for block in metrics:
        for outcome, entry in (block.get("clinical_course") or {}).items():
            for column in ("score_total", "ratio_total", "pneumonia_probability"):
                row = entry[column]
                lines.append(f"| {block['name']} | {outcome} | {entry['n']} ({entry['n_outcome']}) | {column} | "
                             f"{_number(row['mean_with'])} | {_number(row['mean_without'])} | {_number(row['auc'])} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def markdown_report(metrics: Sequence[dict[str, Any]]) -> str:
    """All tables, with the conventions that matter to read them."""
    parts = ["# Evaluation", ""]
    sections = (
        ("Classification (Table II)", table_classification(metrics),
         "CIs: percentile bootstrap over " + ", ".join(sorted({str((b.get("classification") or {}).get(
             "bootstrap", "images")) for b in metrics})) + ". Threshold: " + ", ".join(sorted({str((
             b.get("classification") or {}).get("threshold_rule", "")) for b in metrics})) + "."),
        ("Classification by data source", table_sources(metrics),
         "Per source of the reference items, at the threshold above (shares with their 95 % CI, bootstrapped over "
         "the source's patients, or its images without patient ids); n/a: the source holds one class only."),
        ("Classification by data source: the best its ROC allows", table_source_bounds(metrics),
         "Thresholds read off these data, one per column: bounds, not operating points. Both goals at one threshold "
         f"need, under an equal-variance binormal ROC, an AUC of about {_goal_auc():.2f}."),
        ("Localization: RSNA mAP vs heatmap threshold (Fig. 8a)", table_localization(metrics),
         "Per image TP/(TP+FP+FN) over IoU 0.40-0.75 (step 0.05), mean over images; images with no true and no "
         "predicted box are skipped (RSNA convention) unless --empty-policy one."),
        ("Segmentation (Table III)", table_segmentation(metrics),
         "Dice/Jaccard mean ± sd over images; an empty reference scores 1 with an empty prediction, else 0. The "
         "placement row gives the heatmap the reference's own area in each lung: a diagnostic, not a result; where it "
         "beats the reported mask, the area the model calls is what falls short, not where its heatmap points."),
        ("Severity (Table IV, Fig. 10)", table_severity(metrics),
         "R² = 1 - SS_res/SS_tot of the prediction as an estimate of the reference score; bias = mean(pred - ref)."),
        ("Severity by data source", table_severity_sources(metrics),
         "The table above per source of the reference items; the baseline predicts each source's own mean score."),
        ("Severity vs heatmap threshold", table_severity_sweep(metrics),
         "0-8 score MAE (bias) against expert scores when the heatmap is thresholded at t (negatives score 0)."),
        ("Clinical course", table_clinical(metrics),
         "icu_at_exam: in an ICU on the day of the exam; died: a death date exists. AUC of each output for it."),
        ("Baselines (same images)", table_baselines(metrics),
         "A model number that does not beat its baseline is a finding, not a result."),
        ("Model against its baselines (same images, resampled together)", table_comparisons(metrics),
         "Percentile bootstrap over patients (images without a patient id count as their own); the model's and the "
         "baseline's number are recomputed on the same resamples, so the difference's CI says whether the model beats "
         "the baseline on these data: 'beats' when it lies wholly on the better side, 'worse' on the other, else "
         "'not distinguishable'. The reference mean is the resample's own (a baseline that knows the answer's "
         "mean)."),
    )
    for title, table, note in sections:
        if table:
            parts += [f"## {title}", "", table, "", f"_{note}_", ""]
    return "\n".join(parts)


def html_report(markdown: str, figures: Sequence[str]) -> str:
    """A self-contained HTML page of the Markdown report (headings, tables, notes) and the figure files."""
    import html

    body: list[str] = []
    rows: list[list[str]] = []

    def flush() -> None:
        if rows:
            header, *data = rows
            body.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in header) + "</tr>")
            body.extend("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in data)
            body.append("</table>")
            rows.clear()

    for line in markdown.splitlines():
        if line.startswith("|"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            if not all(set(cell) <= {"-"} for cell in cells):
                rows.append(cells)
            continue
        flush()
        if line.startswith("## "):
            body.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.strip():
            body.append(f"<p><em>{html.escape(line.strip('_'))}</em></p>")
    flush()
    body += [f'<figure><img src="{html.escape(name)}" alt="{html.escape(name)}"></figure>' for name in figures]
    style = ("body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #bbb;padding:4px 8px;text-align:right}td:first-child,th:first-child{text-align:left}"
             "img{max-width:32em;margin:0.5em}figure{display:inline-block;margin:0}.note{font-size:small}")
    return html_page("pneumonitor evaluation", "".join(body), style)


def plot_roc(metrics: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """ROC curves of all datasets with AUC and the operating point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    blocks = [b for b in metrics if b.get("classification", {}).get("fpr")]
    if not blocks:
        return None
    figure, axes = plt.subplots(figsize=(5, 5))
    for block in blocks:
        cls = block["classification"]
        line, = axes.plot(cls["fpr"], cls["tpr"], label=f"{block['name']} (AUC {cls['auc']['value']:.2f})")
        axes.plot(1 - cls["specificity"]["value"], cls["sensitivity"]["value"], "o", color=line.get_color())
    axes.plot([0, 1], [0, 1], ":", color="gray")
    axes.set(xlabel="1 - specificity", ylabel="sensitivity", xlim=(0, 1), ylim=(0, 1.01), title="ROC")
    axes.legend(loc="lower right")
    return save_figure(figure, path, dpi=120, bbox_inches="tight")


def plot_map_sweep(metrics: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """mAP against the heatmap threshold (Fig. 8a)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    blocks = [b for b in metrics if b.get("localization")]
    if not blocks:
        return None
    figure, axes = plt.subplots(figsize=(5, 4))
    for block in blocks:
        sweep = block["localization"]["sweep"]
        axes.plot(sweep["threshold"], sweep["map"], "o-", label=block["name"])
    axes.set(xlabel="heatmap threshold", ylabel="mAP (RSNA, IoU 0.40-0.75)", title="mAP vs heatmap threshold")
    axes.legend()
    return save_figure(figure, path, dpi=120, bbox_inches="tight")


def plot_severity_scatter(predicted: Sequence[float], reference: Sequence[float], stats: dict[str, Any],
                          path: Path, title: str = "") -> Path | None:
    """Predicted vs reference 0-8 scores with the least-squares line and the identity (Fig. 10)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not len(predicted):
        return None
    figure, axes = plt.subplots(figsize=(5, 5))
    axes.scatter(reference, predicted, s=18, alpha=0.7)
    grid = np.linspace(0, 8, 2)
    axes.plot(grid, grid, ":", color="gray", label="identity")
    if math.isfinite(stats.get("slope", float("nan"))):
        axes.plot(grid, stats["slope"] * grid + stats["intercept"], "-", color="C3",
                  label=f"fit (r = {stats['pearson_r']:.2f}, R² = {stats['r2']:.2f})")
    axes.set(xlabel="reference score (0-8)", ylabel="predicted score (0-8)", xlim=(-0.3, 8.3), ylim=(-0.3, 8.3),
             title=title or "Severity")
    axes.legend(loc="upper left")
    return save_figure(figure, path, dpi=120, bbox_inches="tight")


def plot_confusion(matrix: Sequence[Sequence[int]], path: Path, title: str = "") -> Path:
    """9x9 confusion matrix of reference (rows) vs predicted (columns) total scores."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(matrix)
    figure, axes = plt.subplots(figsize=(5.5, 5))
    image = axes.imshow(matrix, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        if count:
            axes.text(j, i, str(count), ha="center", va="center",
                      color="white" if count > matrix.max() / 2 else "black", fontsize=8)
    axes.set(xticks=range(N_SCORES), yticks=range(N_SCORES), xlabel="predicted score", ylabel="reference score",
             title=title or "Severity confusion matrix")
    figure.colorbar(image, ax=axes, fraction=0.046)
    return save_figure(figure, path, dpi=120, bbox_inches="tight")


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_").lower() or "dataset"


def write_report(out_dir: str | Path, evaluations: Sequence[Any], settings: dict[str, Any]) -> dict[str, Path]:
    """Write metrics.json, tables.md, report.html, per_image.csv and the figures; returns name -> path written."""
    import pandas as pd

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = [evaluation.metrics for evaluation in evaluations]
    written: dict[str, Path] = {}
    figures = {"roc": plot_roc(metrics, out_dir / "roc.png"),
               "map_vs_threshold": plot_map_sweep(metrics, out_dir / "map_vs_threshold.png")}
    for evaluation in evaluations:
        severity = evaluation.metrics.get("severity")
        if severity:
            slug = _slug(evaluation.name) if len(evaluations) > 1 else ""
            suffix = f"_{slug}" if slug else ""
            predicted, reference = evaluation.severity_pairs
            figures[f"severity_scatter{suffix}"] = plot_severity_scatter(
                predicted, reference, severity["total"], out_dir / f"severity_scatter{suffix}.png", evaluation.name)
            figures[f"severity_confusion{suffix}"] = plot_confusion(
                severity["confusion_matrix"], out_dir / f"severity_confusion{suffix}.png", evaluation.name)
    written.update({k: v for k, v in figures.items() if v is not None})
    rows = [{"dataset": e.name, **row} for e in evaluations for row in e.per_image]
    if rows:
        with atomic_path(out_dir / "per_image.csv") as tmp:
            pd.DataFrame(rows).to_csv(tmp, index=False)
        written["per_image"] = out_dir / "per_image.csv"
    markdown = markdown_report(metrics)
    written["tables"] = write_text(out_dir / "tables.md", markdown)
    pngs = [path.name for name, path in written.items() if path.suffix == ".png"]
    written["report"] = write_text(out_dir / "report.html", html_report(markdown, pngs))
    payload = {"settings": settings, "datasets": metrics,
               "figures": {k: v.name for k, v in written.items() if v.suffix == ".png"}}
    written["metrics"] = write_json(out_dir / "metrics.json", payload, indent=1)
    return written


__all__ = ["html_report", "markdown_report", "plot_confusion", "plot_map_sweep", "plot_roc", "plot_severity_scatter",
           "table_classification", "table_localization", "table_segmentation", "table_severity",
           "table_severity_sources", "table_source_bounds", "table_sources", "write_report"]
