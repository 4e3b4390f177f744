"""PNG figures of a patient's disease profile: ratio / score / probability over time, and the overlays in time order."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, UnidentifiedImageError  # noqa: E402

from pneumonitor.monitoring.profiles import PatientProfile  # noqa: E402
from pneumonitor.monitoring.studies import TIME_OFFSET  # noqa: E402
from pneumonitor.publishing import save_figure  # noqa: E402

RIGHT_COLOR = "tab:blue"
LEFT_COLOR = "tab:orange"
TOTAL_COLOR = "black"
REFERENCE_STYLES = (("tab:green", "D"), ("tab:purple", "^"), ("tab:brown", "v"), ("tab:cyan", "P"))
CHANGE_MARKS = {"worse": ("▲ worse", "tab:red"), "improved": ("▼ improved", "tab:green")}


def day_axis_label(profile: PatientProfile) -> str:
    """x-axis label: day offsets as given by the metadata, or days since the first dated study."""
    return "day (offset given by the metadata)" if profile.time_kind == TIME_OFFSET else "days since first study"


def plot_profile(
    profile: PatientProfile,
    path: Path,
    classification_threshold: float = 0.62,
    reference_columns: Sequence[str] = (),
) -> Path:
    """Plot the disease profile of one patient and save it as PNG.

    Three panels share the time axis (days): Pneumonia Ratio in percent (right, left, total lung); score (0-4 per
    lung, 0-8 total, with any reference score such as an expert's, and the change labels); DLNet probability with the
    classification threshold, below which a study is negative and its ratio is 0 by definition.

    Args:
        profile: patient profile with at least one dated study.
        path: output PNG path.
        classification_threshold: probability threshold of ``analyze`` (paper: 0.62).
        reference_columns: timeline columns with reference scores on the 0-8 scale to draw as dashed lines.

    Raises:
        ValueError: the profile has no dated study.
    """
    timeline = profile.timeline
    if timeline.empty:
        raise ValueError(f"patient {profile.patient_id}: no dated study to plot")
    day = timeline["day"].to_numpy(dtype=float)
    figure, (ax_ratio, ax_score, ax_prob) = plt.subplots(
        3, 1, figsize=(7.5, 7.2), sharex=True, gridspec_kw={"height_ratios": [3, 3, 1.6]}
    )
    negative = timeline["probability"].to_numpy(dtype=float) < classification_threshold

    for column, color, label, width in (
        ("ratio_right", RIGHT_COLOR, "right lung", 1.4),
        ("ratio_left", LEFT_COLOR, "left lung", 1.4),
        ("ratio_total", TOTAL_COLOR, "both lungs", 2.2),
    ):
        ax_ratio.plot(day, timeline[column].to_numpy(dtype=float), "o-", color=color, lw=width, ms=5, label=label)
    if negative.any():
        ax_ratio.plot(day[negative], np.zeros(negative.sum()), "x", color="grey", ms=9, mew=2, label="negative study")
    for edge in (25, 50, 75):
        ax_ratio.axhline(edge, color="0.85", lw=0.8, zorder=0)
    ax_ratio.set_ylim(-3, 103)
    ax_ratio.set_ylabel("Pneumonia Ratio (%)")
    ax_ratio.legend(loc="upper left", fontsize=8, ncol=4, frameon=False)
    ax_ratio.set_title(f"Patient {profile.patient_id}: disease profile ({len(timeline)} studies)")

    for column, color in (("score_right", RIGHT_COLOR), ("score_left", LEFT_COLOR)):
        ax_score.step(day, timeline[column].to_numpy(dtype=float), where="post", color=color, lw=1.2, alpha=0.8)
    ax_score.plot(day, timeline["score_right"].to_numpy(dtype=float), "o", color=RIGHT_COLOR, ms=4, label="right (0-4)")
    ax_score.plot(day, timeline["score_left"].to_numpy(dtype=float), "o", color=LEFT_COLOR, ms=4, label="left (0-4)")
    total = timeline["score_total"].to_numpy(dtype=float)
    ax_score.plot(day, total, "s-", color=TOTAL_COLOR, lw=2.2, ms=6, label="total (0-8)")
    for index, column in enumerate(reference_columns):
        if column not in timeline:
            continue
        values = np.asarray(timeline[column].to_numpy(), dtype=float)
        known = np.isfinite(values)
        color, marker = REFERENCE_STYLES[index % len(REFERENCE_STYLES)]
        if known.any():
            ax_score.plot(day[known], values[known], f"{marker}--", color=color, ms=5, lw=1.2, label=column)
    for x, y, change in zip(day, total, timeline["change"], strict=True):
        if change in CHANGE_MARKS:
            text, color = CHANGE_MARKS[change]
            ax_score.annotate(text, (x, y), xytext=(0, 9), textcoords="offset points", ha="center", fontsize=8,
                              color=color, fontweight="bold")
    ax_score.set_ylim(-0.5, 9.2)
    ax_score.set_yticks(range(0, 9))
    ax_score.set_ylabel("score")
    ax_score.legend(loc="upper left", fontsize=8, ncol=4, frameon=False)

    ax_prob.axhspan(0, classification_threshold, color="0.92", zorder=0)
    ax_prob.axhline(classification_threshold, color="tab:red", ls="--", lw=1)
    ax_prob.text(day.min(), classification_threshold / 2, f" negative (< {classification_threshold:g}): ratio 0",
                 va="center", fontsize=8, color="0.35")
    ax_prob.plot(day, timeline["probability"].to_numpy(dtype=float), "o-", color="0.3", ms=4)
    ax_prob.set_ylim(0, 1)
    ax_prob.set_ylabel("probability")
    ax_prob.set_xlabel(day_axis_label(profile))
    if len(day) == 1 or np.ptp(day) == 0:
        ax_prob.set_xlim(day.min() - 1, day.max() + 1)
    for axis in (ax_ratio, ax_score, ax_prob):
        axis.grid(axis="x", color="0.9")
    figure.align_ylabels()
    return save_figure(figure, path, dpi=110, bbox_inches="tight")


def _thumbnail(path: str, height: int) -> np.ndarray | None:
    if not path or not Path(path).is_file():
        return None
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            width = max(1, round(image.width * height / image.height))
            return np.asarray(image.resize((width, height), Image.Resampling.LANCZOS))
    except (UnidentifiedImageError, OSError):
        return None


def plot_overlay_strip(profile: PatientProfile, path: Path, height: int = 256, per_row: int = 6) -> Path:
    """Save the overlays of a patient's studies in time order (rows of ``per_row``) as one PNG.

    Each panel is the ``overlay`` PNG of ``analyze`` (radiograph with lung contours and pneumonia region), titled with
    the time, the total score and the change label. When a study has no readable overlay, its input image is shown if
    it is a PNG/JPEG, else a grey placeholder that says so.

    Raises:
        ValueError: the profile has no dated study.
    """
    timeline = profile.timeline
    if timeline.empty:
        raise ValueError(f"patient {profile.patient_id}: no dated study to show")
    n = len(timeline)
    columns = min(n, per_row)
    rows = int(np.ceil(n / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.9 * rows), squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    for axis, record in zip(axes.ravel(), timeline.to_dict("records"), strict=False):
        thumbnail = _thumbnail(record.get("overlay", ""), height)
        note = ""
        if thumbnail is None:
            thumbnail = _thumbnail(record["image"], height)
            note = "input image (no overlay)"
        if thumbnail is None:
            thumbnail = np.full((height, height, 3), 200, dtype=np.uint8)
            note = "no image available"
        axis.imshow(thumbnail)
        change = "" if record["change"] == "baseline" else f" · {record['change']}"
        axis.set_title(f"{record['time']}\nscore {record['score_total']}/8{change}", fontsize=9)
        if note:
            axis.text(0.5, 0.02, note, transform=axis.transAxes, ha="center", va="bottom", fontsize=7, color="white",
                      bbox={"facecolor": "black", "alpha": 0.5, "pad": 1, "lw": 0})
    figure.suptitle(f"Patient {profile.patient_id}: studies in time order", fontsize=10)
    figure.tight_layout()
    return save_figure(figure, path, dpi=100, bbox_inches="tight")
