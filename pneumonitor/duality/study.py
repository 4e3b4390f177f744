"""The CT-X-ray duality validation study (docs/ct-drr.md, paper Sec. IV-C, V-D, Fig. 12/13).

No serial COVID-19 CT with infection masks is available, so the study builds **virtual patients** from one real
chest CT: each patient is a random lesion field (:func:`pneumonitor.duality.ct.make_lesion_field`) thresholded at a
per-time-point involvement (growing, shrinking, peaking...), implanted into the CT inside its lobes. For each patient
and time point:

1. the CT pneumonia ratio is measured on the volume (:func:`pneumonitor.duality.ct.segment_infection`, lungs from the label
   map) next to the exact implanted ratio;
2. PA (and AP) DRRs are rendered (:func:`pneumonitor.duality.drr.render.render_drr`) with the 3-D lungs and lesions projected
   as ground-truth footprints (``footprint_ratio`` = lesion footprint within the lung footprint, % of its area: what
   a perfect 2-D method would measure);
3. the unchanged CXR pipeline (``pneumonitor analyze``) runs on the DRR PNGs;
4. DRR ratio vs CT ratio: linear regression (``scipy.stats.linregress``: r, p, slope, intercept) and the trend
   agreement (:func:`pneumonitor.monitoring.pooled_trend_agreement`), per view.

Outputs in the study folder: ``duality.csv`` (one row per patient x time point x view), ``summary.json``,
``regression.png`` (scatter with the fitted lines), ``profiles.png`` (per-patient CT and DRR ratios over time),
``report.html``, the DRRs and footprints under ``drr/`` and the analyze outputs under ``analyze/``.
"""

from __future__ import annotations

import dataclasses
import html
import json
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from pneumonitor.duality.ct import CTVolume, LungMasks, body_mask, implant_lesions, make_lesion_field, mask_ratio, segment_infection
from pneumonitor.duality.drr.geometry import ConeBeamGeometry
from pneumonitor.duality.drr.postprocess import lung_footprint_png
from pneumonitor.duality.drr.render import DRRPhysics, render_drr
from pneumonitor.publishing import atomic_path, html_page, save_figure, write_json, write_png, write_text

logger = logging.getLogger(__name__)

#: Shapes of the involvement profiles (fractions of each patient's peak), cycled over patients; 4 time points.
PROFILE_SHAPES: tuple[tuple[float, ...], ...] = (
    (0.15, 0.45, 0.8, 1.0),  # steady worsening
    (1.0, 0.7, 0.4, 0.15),  # recovery
    (0.3, 1.0, 0.6, 0.25),  # peak, then recovery
    (0.2, 0.6, 0.55, 1.0),  # worsening with a plateau (paper's patient 117)
    (0.5, 0.2, 0.6, 0.9),  # transient improvement, then relapse
)

TABLE_COLUMNS = [
    "patient", "timepoint", "view", "image", "lesion_seed",
    "ct_truth_ratio", "ct_ratio", "ct_ratio_right", "ct_ratio_left", "ct_infection_ml", "ct_lung_ml",
    "footprint_ratio", "footprint_ratio_right", "footprint_ratio_left", "gamma_applied",
    "status", "reason", "lung_dice_vs_footprint", "pneumonia_probability", "positive", "drr_ratio", "drr_ratio_right", "drr_ratio_left",
    "score_right", "score_left", "score_total",
]


@dataclasses.dataclass(frozen=True)
class StudySettings:
    """What to simulate.

    Attributes:
        n_patients: virtual patients (>= 1). n_timepoints: time points per patient (2..len(PROFILE_SHAPES[0])).
        peak_range: range (percent of lung volume) from which each patient's peak involvement is drawn.
        views: DRR views to render. geometry / physics: DRR settings (the geometry's view is replaced per view).
        seed: random seed of lesion fields, peaks and noise.
        footprint_min_path_mm: a detector pixel belongs to a footprint when its ray crosses >= this much of the label.
    """

    n_patients: int = 3
    n_timepoints: int = 4
    peak_range: tuple[float, float] = (20.0, 45.0)
    views: tuple[str, ...] = ("PA", "AP")
    geometry: ConeBeamGeometry = ConeBeamGeometry()
    physics: DRRPhysics = DRRPhysics()
    seed: int = 0
    footprint_min_path_mm: float = 2.0

    def __post_init__(self) -> None:
        if self.n_patients < 1:
            raise ValueError("need at least 1 virtual patient")
        if not 2 <= self.n_timepoints <= len(PROFILE_SHAPES[0]):
            raise ValueError(f"time points must be in 2..{len(PROFILE_SHAPES[0])}, got {self.n_timepoints}")
        if not 0 < self.peak_range[0] <= self.peak_range[1] < 100:
            raise ValueError(f"peak involvement range must lie in (0, 100) percent, got {self.peak_range}")


def involvement_profiles(settings: StudySettings, rng: np.random.Generator) -> list[list[float]]:
    """Target involvement (percent of lung volume) per patient and time point, ``[n_patients][n_timepoints]``."""
    profiles = []
    for p in range(settings.n_patients):
        shape = np.asarray(PROFILE_SHAPES[p % len(PROFILE_SHAPES)][: settings.n_timepoints])
        peak = rng.uniform(*settings.peak_range)
        profiles.append([round(float(v), 2) for v in peak * shape / shape.max()])
    return profiles


def _ratio(mask: np.ndarray, region: np.ndarray) -> float:
    n = int(region.sum())
    return float("nan") if n == 0 else 100.0 * float((mask & region).sum()) / n


def simulate(
    ct: CTVolume,
    lungs: LungMasks,
    settings: StudySettings,
    out_dir: Path,
    device: str = "cpu",
    progress: bool = True,
) -> list[dict]:
    """Build the virtual patients, measure CT ratios and render the DRRs + footprints into ``out_dir/drr``.

    Returns:
        one dict per (patient, time point, view) with the CT columns of :data:`TABLE_COLUMNS` filled.
    """
    from tqdm import tqdm

    rng = np.random.default_rng(settings.seed)
    # Lesions stay inside the lungs, which the body mask fills anyway: one body mask serves every time point.
    body = body_mask(ct.hu, settings.physics.air_max_hu, settings.physics.bone_min_hu)
    profiles = involvement_profiles(settings, rng)
    rows: list[dict] = []
    total = settings.n_patients * settings.n_timepoints
    bar = tqdm(total=total, desc="virtual patients x time points", unit="CT", disable=not progress)
    for p, profile in enumerate(profiles):
        patient = f"VP{p + 1:02d}"
        lesion_seed = int(rng.integers(2**31))
        field = make_lesion_field(ct, lungs, np.random.default_rng(lesion_seed))
        for t, involvement in enumerate(profile):
            lesion_ct, lesion, _ = implant_lesions(ct, field, involvement)
            measured = segment_infection(lesion_ct, lungs)
            truth = mask_ratio(lesion, lungs)
            for view in settings.views:
                geometry = dataclasses.replace(settings.geometry, view=view)
                physics = dataclasses.replace(settings.physics, seed=settings.seed * 1000 + p * 10 + t)
                drr = render_drr(
                    lesion_ct, geometry, physics, device=device,
                    labels={"lesion": lesion, "right": lungs.right, "left": lungs.left}, body=body,
                )
                lesion_fp = drr.footprint_mask("lesion", settings.footprint_min_path_mm)
                right_fp = drr.footprint_mask("right", settings.footprint_min_path_mm)
                left_fp = drr.footprint_mask("left", settings.footprint_min_path_mm)
                stem = f"{patient}_T{t + 1}_{view}"
                image_path = out_dir / "drr" / f"{stem}.png"
                write_png(image_path, drr.image)
                write_png(out_dir / "drr" / "footprints" / f"{stem}_lungs.png", lung_footprint_png(right_fp, left_fp))
                write_png(out_dir / "drr" / "footprints" / f"{stem}_lesion.png", lesion_fp & (right_fp | left_fp))
                rows.append({
                    "patient": patient, "timepoint": t + 1, "view": view, "image": str(image_path.resolve()),
                    "lesion_seed": lesion_seed,
                    "ct_truth_ratio": truth["total"], "ct_ratio": measured.ratio_total,
                    "ct_ratio_right": measured.ratio_right, "ct_ratio_left": measured.ratio_left,
                    "ct_infection_ml": measured.infection_ml, "ct_lung_ml": measured.lung_ml,
                    "footprint_ratio": _ratio(lesion_fp, right_fp | left_fp),
                    "footprint_ratio_right": _ratio(lesion_fp, right_fp),
                    "footprint_ratio_left": _ratio(lesion_fp, left_fp),
                    "gamma_applied": int(drr.gamma_applied),
                })
            bar.update(1)
    bar.close()
    return rows


def merge_analysis(rows: list[dict], results_csv: Path) -> list[dict]:
    """Join ``pneumonitor analyze`` results (``results.csv``) onto the study rows by absolute image path."""
    from pneumonitor.results import read_results

    results = read_results(results_csv)
    by_image = {str(Path(r["image"]).resolve()): r for r in results.rows}
    merged = []
    for row in rows:
        result = by_image.get(row["image"])
        out = dict(row)
        if result is None:
            out.update(status="missing", reason="not in analyze results")
        else:
            out.update(
                status=result["status"], reason=result["reason"],
                lung_dice_vs_footprint=_lung_dice(result, results.folder, Path(row["image"])),
                pneumonia_probability=result["pneumonia_probability"], positive=result["positive"],
                drr_ratio=result["ratio_total"], drr_ratio_right=result["ratio_right"],
                drr_ratio_left=result["ratio_left"], score_right=result["score_right"],
                score_left=result["score_left"], score_total=result["score_total"],
            )
        merged.append(out)
    return merged


def _lung_dice(result: dict, results_dir: Path, drr_image: Path) -> float:
    """Dice of analyze's lung mask (both lungs) against the DRR's projected lung footprint; NaN when unavailable.

    The footprint holds every ray through lung, including lung behind the heart and the diaphragm domes, which a
    radiograph-trained lung segmentation leaves out: even a perfect transfer scores below 1 here.
    """
    from pneumonitor.datasets.images import read_gray
    from pneumonitor.evaluation.segmentation import overlap

    footprint = drr_image.parent / "footprints" / f"{drr_image.stem}_lungs.png"
    if result.get("status") != "ok" or not result.get("lung_mask") or not footprint.is_file():
        return math.nan
    predicted, reference = read_gray(results_dir / result["lung_mask"]), read_gray(footprint)
    if predicted.shape != reference.shape:
        return math.nan
    return float(overlap(predicted > 0, reference > 0)[0])


def transfer_diagnostics(view_rows: list[dict]) -> dict:
    """Whether the CXR models transfer to these DRRs, beyond the pipeline ratio (which is 0 when nothing is called
    positive): images called positive, the Spearman rank correlation of DLNet's probability with the CT ratio (does
    the classifier see the disease grow, even below its threshold?) and LSNet's lung Dice against the footprint."""
    from scipy import stats

    probability = np.asarray([_float(r.get("pneumonia_probability")) for r in view_rows])
    ct = np.asarray([_float(r["ct_ratio"]) for r in view_rows])
    keep = np.isfinite(probability) & np.isfinite(ct)
    out: dict = {"n": int(keep.sum()), "called_positive": int(sum(_float(r.get("positive")) == 1 for r in view_rows)),
                 "probability_median": float(np.median(probability[keep])) if keep.any() else math.nan,
                 "probability_vs_ct_spearman": math.nan, "probability_vs_ct_p": math.nan}
    if keep.sum() >= 3 and np.ptp(probability[keep]) > 0 and np.ptp(ct[keep]) > 0:
        rho = stats.spearmanr(ct[keep], probability[keep])
        out.update(probability_vs_ct_spearman=float(rho.statistic), probability_vs_ct_p=float(rho.pvalue))
    dice = np.asarray([_float(r.get("lung_dice_vs_footprint")) for r in view_rows])
    dice = dice[np.isfinite(dice)]
    out.update(lung_dice_mean=float(dice.mean()) if dice.size else math.nan,
               lung_dice_sd=float(dice.std(ddof=1)) if dice.size > 1 else math.nan)
    return out


def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def regression(x: Sequence[float], y: Sequence[float]) -> dict:
    """``scipy.stats.linregress`` of y on x over the finite pairs: n, r, p, slope, intercept (NaN when n < 3)."""
    from scipy import stats

    xa, ya = np.asarray([_float(v) for v in x]), np.asarray([_float(v) for v in y])
    keep = np.isfinite(xa) & np.isfinite(ya)
    xa, ya = xa[keep], ya[keep]
    out = {"n": int(keep.sum()), "r": math.nan, "p": math.nan, "slope": math.nan, "intercept": math.nan}
    if out["n"] >= 3 and np.ptp(xa) > 0:
        fit = stats.linregress(xa, ya)
        if np.ptp(ya) > 0:
            out.update(r=float(fit.rvalue), p=float(fit.pvalue))
        out.update(slope=float(fit.slope), intercept=float(fit.intercept))
    return out


def summarize(rows: list[dict], views: Sequence[str]) -> dict:
    """Regression and trend agreement per view: DRR-pipeline ratio vs CT ratio, and the footprint/CT baselines."""
    from pneumonitor.monitoring import pooled_trend_agreement

    summary: dict = {}
    for view in views:
        view_rows = [r for r in rows if r["view"] == view]
        entry = {
            "drr_vs_ct": regression([r["ct_ratio"] for r in view_rows], [r.get("drr_ratio") for r in view_rows]),
            "footprint_vs_ct": regression([r["ct_ratio"] for r in view_rows], [r["footprint_ratio"] for r in view_rows]),
            "ct_vs_truth": regression(
                [r["ct_truth_ratio"] for r in view_rows], [r["ct_ratio"] for r in view_rows]
            ),
            "transfer": transfer_diagnostics(view_rows),
        }
        for name, key in (("drr", "drr_ratio"), ("footprint", "footprint_ratio")):
            pairs = []
            for patient in sorted({r["patient"] for r in view_rows}):
                series = sorted((r for r in view_rows if r["patient"] == patient), key=lambda r: r["timepoint"])
                a = [_float(r.get(key)) for r in series]
                b = [_float(r["ct_ratio"]) for r in series]
                if all(np.isfinite(a)) and all(np.isfinite(b)):
                    pairs.append((a, b))
            pooled = pooled_trend_agreement(pairs)
            entry[f"trend_agreement_{name}_vs_ct"] = dataclasses.asdict(pooled)
        summary[view] = entry
    return summary


def write_table(rows: list[dict], path: Path) -> None:
    import pandas as pd

    frame = pd.DataFrame(rows).reindex(columns=TABLE_COLUMNS)
    for column in ("positive", "score_right", "score_left", "score_total"):  # integers, empty when not analysed
        frame[column] = frame[column].astype("Int64")
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.4f")


def plot_regression(rows: list[dict], summary: dict, path: Path) -> None:
    """Scatter DRR-pipeline ratio (and footprint ratio) vs CT ratio per view with the fitted lines (paper Fig. 12)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    views = list(summary)
    fig, axes = plt.subplots(1, len(views), figsize=(5.5 * len(views), 5), squeeze=False)
    for ax, view in zip(axes[0], views):
        view_rows = [r for r in rows if r["view"] == view]
        x = np.array([_float(r["ct_ratio"]) for r in view_rows])
        for key, label, colour, fit_key in (
            ("drr_ratio", "CXR pipeline on DRR", "tab:red", "drr_vs_ct"),
            ("footprint_ratio", "ground-truth footprint", "tab:blue", "footprint_vs_ct"),
        ):
            y = np.array([_float(r.get(key)) for r in view_rows])
            ok = np.isfinite(x) & np.isfinite(y)
            if not ok.any():
                continue
            ax.scatter(x[ok], y[ok], color=colour, s=25, label=label)
            fit = summary[view][fit_key]
            if np.isfinite(fit["slope"]):
                xs = np.linspace(0, max(1.0, float(np.nanmax(x))), 50)
                ax.plot(xs, fit["intercept"] + fit["slope"] * xs, color=colour, lw=1,
                        label=f"y = {fit['slope']:.2f} x {fit['intercept']:+.1f}, r = {fit['r']:.2f}")
        ax.plot([0, 100], [0, 100], color="grey", lw=0.5, ls="--")
        ax.set_xlim(0, max(5.0, float(np.nanmax(x)) * 1.1) if np.isfinite(x).any() else 100)
        ax.set_ylim(0, 100)
        ax.set_xlabel("CT pneumonia ratio (%)")
        ax.set_ylabel("DRR pneumonia ratio (%)")
        ax.set_title(f"{view} DRRs")
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def plot_profiles(rows: list[dict], path: Path) -> None:
    """Per-patient ratio over time: CT (measured and truth), DRR pipeline and footprint per view (paper Fig. 13)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    patients = sorted({r["patient"] for r in rows})
    views = sorted({r["view"] for r in rows}, key=lambda v: (v != "PA", v))
    fig, axes = plt.subplots(1, len(patients), figsize=(4.2 * len(patients), 3.8), squeeze=False)
    styles = {"PA": "-", "AP": ":"}
    for ax, patient in zip(axes[0], patients):
        series = sorted((r for r in rows if r["patient"] == patient), key=lambda r: (r["timepoint"], r["view"]))
        first_view = [r for r in series if r["view"] == views[0]]
        t = [r["timepoint"] for r in first_view]
        ax.plot(t, [_float(r["ct_ratio"]) for r in first_view], "k-o", label="CT ratio (measured)")
        ax.plot(t, [_float(r["ct_truth_ratio"]) for r in first_view], "k--", lw=0.8, label="CT ratio (implanted)")
        for view in views:
            vr = [r for r in series if r["view"] == view]
            ax.plot(t, [_float(r.get("drr_ratio")) for r in vr], "s" + styles.get(view, "-"), color="tab:red",
                    label=f"DRR {view} (CXR pipeline)")
            ax.plot(t, [_float(r["footprint_ratio"]) for r in vr], "^" + styles.get(view, "-"), color="tab:blue",
                    label=f"DRR {view} footprint", alpha=0.7)
        ax.set_title(patient)
        ax.set_xlabel("time point")
        ax.set_ylabel("pneumonia ratio (%)")
        ax.set_xticks(t)
        ax.set_ylim(0, 100)
    axes[0][0].legend(fontsize=6, loc="upper left")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def write_report(rows: list[dict], summary: dict, settings: dict, path: Path) -> None:
    """A self-contained HTML page: settings, regression / trend numbers, the two figures, and the table."""

    def fmt(v) -> str:
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:.3g}"
        return html.escape(str(v))

    style = ("body{font-family:sans-serif;margin:2em}td,th{border:1px solid #ccc;padding:2px 6px;font-size:12px}"
             "table{border-collapse:collapse}")
    parts = [
        "<h1>CT-X-ray duality study (virtual patients)</h1>",
        "<p>Research use only. Lesions are synthetic, implanted into one real CT; see docs/ct-drr.md.</p>",
        "<h2>Regression and trend agreement</h2><table><tr><th>view</th><th>comparison</th><th>n</th><th>r</th>"
        "<th>p</th><th>slope</th><th>intercept</th></tr>",
    ]
    for view, entry in summary.items():
        for key in ("drr_vs_ct", "footprint_vs_ct", "ct_vs_truth"):
            f = entry[key]
            parts.append(
                f"<tr><td>{view}</td><td>{key}</td><td>{f['n']}</td><td>{fmt(f['r'])}</td><td>{fmt(f['p'])}</td>"
                f"<td>{fmt(f['slope'])}</td><td>{fmt(f['intercept'])}</td></tr>"
            )
    parts.append("</table><ul>")
    for view, entry in summary.items():
        for name in ("drr", "footprint"):
            t = entry[f"trend_agreement_{name}_vs_ct"]
            parts.append(
                f"<li>{view}: trend agreement {name} vs CT = {fmt(t['accuracy'])} "
                f"({t['n_agree']}/{t['n_transitions']} transitions, {t['n_patients']} patients)</li>"
            )
    for view, entry in summary.items():
        t = entry.get("transfer", {})
        parts.append(
            f"<li>{view}: CXR models on DRRs: {t.get('called_positive')}/{t.get('n')} called positive, median "
            f"probability {fmt(t.get('probability_median'))}, Spearman(probability, CT ratio) = "
            f"{fmt(t.get('probability_vs_ct_spearman'))} (p {fmt(t.get('probability_vs_ct_p'))}), LSNet lungs vs "
            f"lung footprint Dice {fmt(t.get('lung_dice_mean'))} ± {fmt(t.get('lung_dice_sd'))}</li>"
        )
    parts.append("</ul><img src='regression.png' width='900'><br><img src='profiles.png' width='1100'>")
    parts.append("<h2>Settings</h2><pre>" + html.escape(json.dumps(settings, indent=1)) + "</pre>")
    parts.append("<h2>Table</h2><table><tr>" + "".join(f"<th>{c}</th>" for c in TABLE_COLUMNS if c != "image") + "</tr>")
    for r in rows:
        parts.append("<tr>" + "".join(f"<td>{fmt(r.get(c, ''))}</td>" for c in TABLE_COLUMNS if c != "image") + "</tr>")
    parts.append("</table>")
    write_text(path, html_page("CT-X-ray duality study", "\n".join(parts), style))


def run_study(
    ct: CTVolume,
    lungs: LungMasks,
    settings: StudySettings,
    out_dir: Path,
    analyze: Callable[[list[Path], Path], Path] | None,
    device: str = "cpu",
    progress: bool = True,
) -> dict:
    """Run the whole study; ``analyze(images, out_dir) -> results.csv`` runs the unchanged CXR pipeline.

    With ``analyze=None`` (simulation only) the DRRs, footprints and CT ratios are produced and the DRR-pipeline
    columns stay empty (status ``not analyzed``); the footprint and CT statistics are still computed.

    Returns:
        the summary dict written to ``summary.json``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = simulate(ct, lungs, settings, out_dir, device=device, progress=progress)
    if analyze is None:
        rows = [{**r, "status": "not analyzed", "reason": "simulation only (no CXR models run)"} for r in rows]
    else:
        results_csv = analyze([Path(r["image"]) for r in rows], out_dir / "analyze")
        rows = merge_analysis(rows, results_csv)
    summary = summarize(rows, settings.views)
    settings_dict = {
        "ct": ct.source, "n_patients": settings.n_patients, "n_timepoints": settings.n_timepoints,
        "peak_range_percent": list(settings.peak_range), "views": list(settings.views), "seed": settings.seed,
        "geometry": settings.geometry.describe(), "physics": dataclasses.asdict(settings.physics),
        "spectrum": settings.physics.spectrum().description,
        "footprint_min_path_mm": settings.footprint_min_path_mm,
        "cxr_pipeline": "pneumonitor analyze" if analyze is not None else "not run (simulation only)",
    }
    write_table(rows, out_dir / "duality.csv")
    plot_regression(rows, summary, out_dir / "regression.png")
    plot_profiles(rows, out_dir / "profiles.png")
    write_json(out_dir / "summary.json", {"settings": settings_dict, "summary": summary})
    write_report(rows, summary, settings_dict, out_dir / "report.html")
    return summary
