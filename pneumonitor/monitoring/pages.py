"""Static HTML reports: one page per patient and an index page, readable in any browser without Python.

Pages link the PNG figures and CSV tables written next to them with relative paths, so the output folder can be
copied or zipped as a whole.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pneumonitor.monitoring.compare import describe_against_constant
from pneumonitor.monitoring.profiles import PatientProfile
from pneumonitor.monitoring.trend import ChangeRule, PooledTrendAgreement
from pneumonitor.publishing import html_page, write_text

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:1.5em auto;max-width:1100px;
color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.88em}th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f2f2f2}td.l,th.l{text-align:left}
.worse{color:#b00020;font-weight:bold}.improved{color:#1b7f2a;font-weight:bold}.stable{color:#555}
.note{color:#555;font-size:.88em}.warn{color:#8a5a00}img{max-width:100%;border:1px solid #ddd}
"""
LEFT = ' class="l"'
DISCLAIMER = (
    "Research software, not for clinical use. Scores are computed from segmentations; read them with the images."
)


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value))


def _number(value: object, digits: int = 1) -> str:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return _e(value)
    if math.isnan(number):
        return ""
    return f"{number:.{digits}f}" if digits else f"{number:.0f}"


def _page(title: str, body: str) -> str:
    return html_page(title, body, STYLE, DISCLAIMER)


def change_rule_text(rule: ChangeRule) -> str:
    """One-paragraph statement of the change rule, shown on every report page."""
    return (
        f"Change between consecutive studies: <b>worse</b> when the total score (0-8) rose by at least "
        f"{rule.min_score_step:g} <i>and</i> the total Pneumonia Ratio rose by more than the margin; <b>improved</b> "
        f"when both fell the same way; <b>stable</b> otherwise. The margin is {rule.ratio_margin:g} percentage points, "
        f"or {rule.uncertainty_z:g} &times; the combined standard deviation of the two ratios when the model reports "
        "one, if larger. A score step alone (ratio near a 25 % bin edge) or a ratio move inside one score bin is "
        "reported as stable."
    )


@dataclass(frozen=True)
class PatientPage:
    """What the index needs to know about a written patient page (paths relative to the output folder)."""

    patient_id: str
    folder: str
    profile: PatientProfile


def _timeline_table(profile: PatientProfile, reference_columns: Sequence[str]) -> str:
    header = ["#", "time", "right %", "left %", "total %", "score R", "score L", "score (0-8)", "probability",
              "change", *reference_columns, "image"]
    rows = []
    for record in profile.timeline.to_dict("records"):
        change = str(record["change"])
        tie = " <span class=\"warn\" title=\"same time as a neighbouring study; ordered by file name\">(tie)</span>"
        cells = [
            _e(record["order"]),
            f"<td class=\"l\">{_e(record['time'])}{tie if record['tie'] else ''}</td>",
            _number(record["ratio_right"]),
            _number(record["ratio_left"]),
            _number(record["ratio_total"]),
            _e(record["score_right"]),
            _e(record["score_left"]),
            f"<b>{_e(record['score_total'])}</b>",
            _number(record["probability"], 2),
            f"<td class=\"l {_e(change)}\">{_e(change)}</td>",
            *[_number(record.get(column), 1) for column in reference_columns],
            f"<td class=\"l\">{_e(Path(str(record['image'])).name)}</td>",
        ]
        rows.append("<tr>" + "".join(c if c.startswith("<td") else f"<td>{c}</td>" for c in cells) + "</tr>")
    left_aligned = {"time", "change", "image"}
    head = "".join(f'<th{LEFT if h in left_aligned else ""}>{_e(h)}</th>' for h in header)
    return f"<table><tr>{head}</tr>\n" + "\n".join(rows) + "</table>"


def _reason_list(title: str, frame: pd.DataFrame) -> str:
    if frame.empty:
        return ""
    pairs = zip(frame["image"], frame["reason"], strict=True)
    items = "".join(f"<li>{_e(Path(str(image)).name)}: {_e(reason)}</li>" for image, reason in pairs)
    return f"<h2>{_e(title)} ({len(frame)})</h2><ul class=\"note\">{items}</ul>"


def write_patient_report(
    page: PatientPage,
    out_dir: Path,
    rule: ChangeRule,
    reference_columns: Sequence[str] = (),
    compare_column: str = "score_total",
) -> Path:
    """Write ``<out_dir>/<page.folder>/report.html`` for one patient; the figures must already be in that folder."""
    profile = page.profile
    folder = Path(out_dir) / page.folder
    timeline = profile.timeline
    parts = [f"<p><a href=\"../../index.html\">&larr; all patients</a></p><h1>Patient {_e(profile.patient_id)}</h1>"]
    if timeline.empty:
        parts.append("<p class=\"warn\">No dated study: nothing to plot. See the lists below.</p>")
    else:
        last = timeline.iloc[-1]
        parts.append(
            f"<p>{len(timeline)} studies from {_e(timeline['time'].iloc[0])} to {_e(last['time'])}. "
            f"Latest: score <b>{_e(last['score_total'])}/8</b> (right {_e(last['score_right'])}, left "
            f"{_e(last['score_left'])}), Pneumonia Ratio {_number(last['ratio_total'])} %, change "
            f"<span class=\"{_e(last['change'])}\">{_e(last['change'])}</span>.</p>"
        )
        for column, (value, n_points) in profile.agreement.items():
            text = f"{value:.2f} over {n_points - 1} transitions" if not math.isnan(value) else (
                f"not computable ({n_points} time point{'s' if n_points != 1 else ''} with both values)")
            parts.append(f"<p>Trend agreement of {_e(compare_column)} with {_e(column)}: <b>{text}</b>.</p>")
        parts.append("<h2>Disease profile</h2><img src=\"profile.png\" alt=\"ratio, score and probability over time\">")
        parts.append("<h2>Studies in time order</h2><img src=\"overlays.png\" alt=\"overlays in time order\">")
        parts.append("<h2>Timeline</h2>" + _timeline_table(profile, reference_columns))
        parts.append("<p class=\"note\"><a href=\"timeline.csv\">timeline.csv</a>. Right/left are the patient's "
                     "sides (the patient's right lung is on the image left). " + change_rule_text(rule) + "</p>")
    parts.append(_reason_list("Studies without a usable time", profile.undated))
    parts.append(_reason_list("Studies skipped by analyze", profile.skipped))
    return write_text(folder / "report.html", _page(f"Patient {profile.patient_id}", "\n".join(parts)))


def write_index(
    pages: Sequence[PatientPage],
    unassigned: pd.DataFrame,
    out_dir: Path,
    rule: ChangeRule,
    settings: dict[str, object],
    pooled: dict[str, PooledTrendAgreement] | None = None,
    compare_column: str = "score_total",
    against_constants: dict[str, dict] | None = None,
) -> Path:
    """Write ``<out_dir>/index.html`` linking every patient page, with a one-line summary per patient; each pooled
    trend agreement beside the constant profiles (``against_constants``: reference column ->
    :func:`~pneumonitor.monitoring.compare.against_constant_profiles`)."""
    pooled, against_constants = pooled or {}, against_constants or {}
    header = ["patient", "studies", "first", "last", "latest score (0-8)", "latest ratio %", "latest change",
              "worse", "improved", *[f"agreement vs {c}" for c in pooled]]
    rows = []
    for page in pages:
        timeline = page.profile.timeline
        link = f"<td class=\"l\"><a href=\"{_e(page.folder)}/report.html\">{_e(page.patient_id)}</a></td>"
        if timeline.empty:
            cells = [link, "0", "", "", "", "", "<td class=\"l warn\">no dated study</td>", "", ""]
        else:
            last = timeline.iloc[-1]
            changes = timeline["change"]
            cells = [
                link,
                str(len(timeline)),
                f"<td class=\"l\">{_e(timeline['time'].iloc[0])}</td>",
                f"<td class=\"l\">{_e(last['time'])}</td>",
                f"<b>{_e(last['score_total'])}</b>",
                _number(last["ratio_total"]),
                f"<td class=\"l {_e(last['change'])}\">{_e(last['change'])}</td>",
                str(int((changes == "worse").sum())),
                str(int((changes == "improved").sum())),
            ]
        for column in pooled:
            value, n_points = page.profile.agreement.get(column, (float("nan"), 0))
            cells.append(f"{value:.2f} ({n_points - 1})" if not math.isnan(value) else "")
        rows.append("<tr>" + "".join(c if c.startswith("<td") else f"<td>{c}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    parts = [
        "<h1>Patient monitoring</h1>",
        f"<p>{len(pages)} patients. Each row links to the patient's report (disease profile plot, overlays in time "
        "order, timeline table).</p>",
        f"<table><tr>{head}</tr>\n" + "\n".join(rows) + "</table>",
    ]
    for column, summary in pooled.items():
        if summary.n_transitions:
            parts.append(
                f"<p>Trend agreement of {_e(compare_column)} with {_e(column)}, pooled over {summary.n_patients} "
                f"patients and {summary.n_transitions} transitions: <b>{summary.accuracy:.3f}</b> "
                f"(mean of per-patient values {summary.mean_per_patient:.3f}). Label per transition: 1 if "
                "value/previous &gt; 1, else 0 (previous 0: 1 if the value is above 0). On the same transitions: "
                f"{_e(describe_against_constant(against_constants.get(column, {}), compare_column))}.</p>"
            )
    parts.append(f"<p class=\"note\">{change_rule_text(rule)}</p>")
    parts.append(_reason_list("Studies not assigned to a patient", unassigned))
    settings_rows = "".join(
        f"<tr><td class=\"l\">{_e(key)}</td><td class=\"l\">{_e(value)}</td></tr>" for key, value in settings.items()
    )
    parts.append(f"<h2>Settings</h2><table>{settings_rows}</table>")
    return write_text(Path(out_dir) / "index.html", _page("Patient monitoring", "\n".join(parts)))
