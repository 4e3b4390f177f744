"""Stage-2 datalist: Grad-CAM proposal masks replace the boxes of half of the confident positives (Sec. III-B).

Given a stage-1 DLNet and a datalist whose positives carry boxes, for each processed split (default: ``training``):

1. every positive with boxes is scored by DLNet (pneumonia probability);
2. of those with ``probability > score_threshold`` (paper: 0.8), ``fraction`` (paper: half) are drawn at random
   (``numpy.random.default_rng(seed)``; the count is ``floor(fraction * eligible + 0.5)``, datalist order);
3. each drawn image gets its Grad-CAM proposal (:mod:`pneumonitor.stage2.gradcam`); a non-empty proposal is written as an
   8-bit PNG (``round(255 * soft)``, the edge-blurred mask, zero outside the boxes; thresholding it at 127 gives the
   binary region) and the item's ``mask`` points to it; an empty proposal leaves the item on its boxes;
4. every other item is unchanged: the other positives keep their boxes, negatives stay negatives.

The bundle's ``LocalizationTargetd`` trains on ``mask`` when an item has one and on ``boxes`` otherwise, so the
stage-2 datalist trains DLNet-2 with the stage-1 settings unchanged.

Input masks. The paper's positives only have boxes. When an input positive with boxes also carries a ``mask``
(e.g. the radiologist masks of the COVID-19 collection, from which its boxes were derived), the default
``box_labels=True`` treats the boxes as its label, as the paper does: the input mask is moved to ``reference_mask``
(kept for measuring, never trained on). ``box_labels=False`` leaves such items on their masks and never proposes for
them. :func:`boxes_only_datalist` applies the same rule without a network (the stage-1 datalist of the paper setting).

Every item of the output gets ``localization_source`` (``proposal``, ``boxes``, ``mask`` or ``none``) and
``reference_mask`` (a path or ``""``), so that all items keep the same keys.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "SelectionSettings",
    "ItemOutcome",
    "REASONS",
    "select_for_replacement",
    "boxes_only_datalist",
    "build_stage2_datalist",
    "format_outcome_table",
]

#: why an item was (not) replaced, in the order the summary lists them
REASONS: dict[str, str] = {
    "replaced": "replaced by its Grad-CAM proposal",
    "not_drawn": "score above the threshold, not drawn (the half that keeps its boxes)",
    "low_score": "classification score <= the score threshold",
    "empty_proposal": "drawn, but the proposal was empty (no Grad-CAM activation >= threshold inside the boxes)",
    "no_boxes": "positive without boxes (nothing to propose in)",
    "has_mask": "positive with a mask already (kept: --keep-input-masks)",
    "unreadable": "image could not be read",
    "negative": "negative (stays a negative)",
    "no_label": "no 0/1 label",
    "split_not_processed": "split not processed",
}


@dataclass
class SelectionSettings:
    """Which items get proposals.

    Attributes:
        score_threshold: positives need ``probability > score_threshold`` (paper: 0.8).
        fraction: the share of the eligible positives that is replaced (paper: 0.5).
        seed: seed of the draw.
        splits: datalist splits that are processed (others are copied unchanged).
        box_labels: input masks of positives with boxes move to ``reference_mask`` (see the module docstring).
        label_key, boxes_key, mask_key, reference_key: item keys.
    """

    score_threshold: float = 0.8
    fraction: float = 0.5
    seed: int = 0
    splits: tuple[str, ...] = ("training",)
    box_labels: bool = True
    label_key: str = "label"
    boxes_key: str = "boxes"
    mask_key: str = "mask"
    reference_key: str = "reference_mask"

    def __post_init__(self) -> None:
        self.splits = tuple(self.splits)
        if not 0.0 <= self.fraction <= 1.0:
            raise ValueError(f"fraction must be in [0, 1], got {self.fraction}")
        if not 0.0 <= self.score_threshold <= 1.0:
            raise ValueError(f"score_threshold must be in [0, 1], got {self.score_threshold}")


@dataclass
class ItemOutcome:
    """What happened to one item (one row of ``summary.json``)."""

    split: str
    index: int
    image: str
    outcome: str
    probability: float | None = None
    proposal: str = ""
    proposal_fraction_of_box: float | None = None
    detail: str = ""


def select_for_replacement(
    probabilities: Sequence[float], score_threshold: float = 0.8, fraction: float = 0.5, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The seeded draw of step 2.

    Args:
        probabilities: DLNet probability of each candidate (positive with boxes), in datalist order.

    Returns:
        ``(eligible, chosen)``: bool arrays over the candidates; ``chosen`` has
        ``floor(fraction * eligible.sum() + 0.5)`` entries, all eligible, drawn without replacement.
    """
    scores = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    eligible = scores > score_threshold  # NaN scores are never eligible
    candidates = np.flatnonzero(eligible)
    count = int(math.floor(fraction * len(candidates) + 0.5))
    chosen = np.zeros(len(scores), dtype=bool)
    if count:
        rng = np.random.default_rng(seed)
        chosen[rng.choice(candidates, size=count, replace=False)] = True
    return eligible, chosen


def _label(item: Mapping[str, Any], key: str) -> int | None:
    value = item.get(key)
    try:
        number = float(np.asarray(value).reshape(-1)[0])
    except (TypeError, ValueError, IndexError):
        return None
    return int(number) if number in (0.0, 1.0) else None


def _is_candidate(item: Mapping[str, Any], settings: SelectionSettings) -> str:
    """``"candidate"`` or the outcome key that rules the item out before scoring."""
    label = _label(item, settings.label_key)
    if label is None:
        return "no_label"
    if label == 0:
        return "negative"
    if not item.get(settings.boxes_key):
        return "no_boxes"
    if item.get(settings.mask_key) and not settings.box_labels:
        return "has_mask"
    return "candidate"


def _with_common_keys(item: Mapping[str, Any], settings: SelectionSettings, box_label: bool) -> dict[str, Any]:
    """Copy of ``item`` with ``localization_source`` and ``reference_key``; a box-labelled item's mask moves away."""
    out = dict(item)
    out.setdefault(settings.reference_key, "")
    mask = out.get(settings.mask_key) or ""
    if box_label and mask:
        out[settings.reference_key] = mask
        out[settings.mask_key] = ""
        mask = ""
    if mask:
        out["localization_source"] = "mask"
    elif out.get(settings.boxes_key):
        out["localization_source"] = "boxes"
    else:
        out["localization_source"] = "none"
    return out


def _is_split(value: Any) -> bool:
    """A datalist split is a list of item dicts (other top-level lists, e.g. split fractions, are metadata)."""
    return isinstance(value, list) and all(isinstance(item, Mapping) for item in value)


def boxes_only_datalist(datalist: Mapping[str, Any], settings: SelectionSettings | None = None) -> dict[str, Any]:
    """The datalist with the box-label rule applied in ``settings.splits`` and no proposals (stage 1, paper setting).

    Positives with boxes and a mask in the processed splits train on their boxes; their mask moves to
    ``reference_mask``. Other items get the common keys only.
    """
    settings = settings or SelectionSettings()
    out = {k: v for k, v in datalist.items() if not _is_split(v)}
    for split, items in datalist.items():
        if not _is_split(items):
            continue
        processed = split in settings.splits
        out[split] = [
            _with_common_keys(
                item, settings, processed and settings.box_labels and _is_candidate(item, settings) == "candidate"
            )
            for item in items
        ]
    return out


def _resolve(path: str, base_dir: Path) -> Path:
    candidate = Path(path)
    return candidate if candidate.is_absolute() else base_dir / candidate


def _unique_name(image: str, index: int, used: set[str]) -> str:
    stem = Path(image).stem or f"item{index}"
    name = f"{stem}.png"
    if name in used:
        name = f"{stem}_{index}.png"
    used.add(name)
    return name


def build_stage2_datalist(
    datalist: Mapping[str, Any],
    score_fn: Callable[[Path], float],
    propose_fn: Callable[[Path, list[list[float]]], Any],
    out_dir: str | Path,
    settings: SelectionSettings | None = None,
    base_dir: str | Path = ".",
    progress: bool = True,
) -> tuple[dict[str, Any], list[ItemOutcome]]:
    """Score, draw and propose; write the proposal PNGs under ``out_dir/masks``.

    Args:
        datalist: the input datalist (``{"training": [...], ...}``).
        score_fn: image path -> DLNet probability (``GradCAMProposer.probability`` of the read radiograph).
        propose_fn: (image path, boxes) -> :class:`pneumonitor.stage2.gradcam.Proposal`.
        out_dir: output folder; the masks go to ``out_dir/masks`` (written to a temporary folder first, moved in
            place at the end, so a failed run leaves no partial mask folder).
        settings: :class:`SelectionSettings`.
        base_dir: folder relative image paths are resolved against (the datalist's folder).

    Returns:
        ``(new_datalist, outcomes)``: the datalist to write and one :class:`ItemOutcome` per item.
        Exceptions from ``score_fn``/``propose_fn`` (``OSError``, ``ValueError`` and
        :class:`pneumonitor.reading.UnsupportedInput`) mark the item ``unreadable``; it keeps its labels.
    """
    from tqdm import tqdm

    from pneumonitor.publishing import atomic_folder, write_png

    settings = settings or SelectionSettings()
    out_dir = Path(out_dir)
    base_dir = Path(base_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    new = boxes_only_datalist(datalist, settings)
    outcomes: list[ItemOutcome] = []
    # pass 1: classify the items, score the candidates
    candidates: list[tuple[str, int]] = []
    scores: list[float] = []
    splits = [s for s, items in datalist.items() if _is_split(items)]
    to_score = [
        (split, index)
        for split in splits
        if split in settings.splits
        for index, item in enumerate(datalist[split])
        if _is_candidate(item, settings) == "candidate"
    ]
    record: dict[tuple[str, int], ItemOutcome] = {}
    for split in splits:
        for index, item in enumerate(datalist[split]):
            image = str(item.get("image", ""))
            if split not in settings.splits:
                outcome = "split_not_processed"
            else:
                status = _is_candidate(item, settings)
                outcome = "pending" if status == "candidate" else status
            record[(split, index)] = ItemOutcome(split=split, index=index, image=image, outcome=outcome)
    for split, index in tqdm(to_score, desc="scoring positives", unit="img", disable=not progress):
        item = datalist[split][index]
        try:
            probability = float(score_fn(_resolve(str(item["image"]), base_dir)))
        except Exception as error:  # noqa: BLE001 - any unreadable input is reported, never fatal
            if not _is_input_error(error):
                raise
            record[(split, index)].outcome = "unreadable"
            record[(split, index)].detail = str(error)
            continue
        record[(split, index)].probability = probability
        candidates.append((split, index))
        scores.append(probability)
    eligible, chosen = select_for_replacement(scores, settings.score_threshold, settings.fraction, settings.seed)
    for (key, is_eligible, is_chosen) in zip(candidates, eligible, chosen):
        record[key].outcome = "pending" if is_chosen else ("not_drawn" if is_eligible else "low_score")
    # pass 2: proposals for the drawn items, written to a temporary folder
    drawn = [key for key, is_chosen in zip(candidates, chosen) if is_chosen]
    masks_dir = out_dir / "masks"
    used: set[str] = set()
    with atomic_folder(masks_dir) as tmp_dir:
        for split, index in tqdm(drawn, desc="Grad-CAM proposals", unit="img", disable=not progress):
            item = datalist[split][index]
            row = record[(split, index)]
            boxes = [list(map(float, b)) for b in item[settings.boxes_key]]
            try:
                proposal = propose_fn(_resolve(str(item["image"]), base_dir), boxes)
            except Exception as error:  # noqa: BLE001
                if not _is_input_error(error):
                    raise
                row.outcome, row.detail = "unreadable", str(error)
                continue
            row.proposal_fraction_of_box = round(float(proposal.area_fraction_of_box), 4)
            if not proposal.binary.any():
                row.outcome = "empty_proposal"
                continue
            name = _unique_name(str(item["image"]), index, used)
            write_png(tmp_dir / name, np.round(255.0 * np.clip(proposal.soft, 0, 1)).astype(np.uint8))
            row.outcome = "replaced"
            row.proposal = str((masks_dir / name).resolve())
    for (split, index), row in record.items():
        if row.outcome == "replaced":
            target = new[split][index]
            target[settings.mask_key] = row.proposal
            target["localization_source"] = "proposal"
            if "has_localization" in target:
                target["has_localization"] = 1
        outcomes.append(row)
    return new, outcomes


def _is_input_error(error: BaseException) -> bool:
    from pneumonitor.reading import UnsupportedInput

    return isinstance(error, (OSError, ValueError, UnsupportedInput))


def outcome_counts(outcomes: Iterable[ItemOutcome]) -> dict[str, int]:
    """Number of items per outcome key, in :data:`REASONS` order (zero counts left out)."""
    counts = Counter(row.outcome for row in outcomes)
    return {key: counts[key] for key in REASONS if counts.get(key)}


def format_outcome_table(outcomes: Sequence[ItemOutcome], settings: SelectionSettings) -> str:
    """The terminal summary: per processed split, how many positives were replaced and why the others were not."""
    lines = []
    for split in dict.fromkeys(row.split for row in outcomes):
        rows = [row for row in outcomes if row.split == split]
        counts = outcome_counts(rows)
        lines.append(f"{split}: {len(rows)} items")
        for key, count in counts.items():
            lines.append(f"  {count:>6}  {REASONS[key]}")
    eligible = sum(1 for r in outcomes if r.outcome in ("replaced", "not_drawn", "empty_proposal"))
    lines.append(
        f"eligible positives (score > {settings.score_threshold:g}): {eligible}; "
        f"replaced {sum(1 for r in outcomes if r.outcome == 'replaced')} "
        f"(fraction {settings.fraction:g}, seed {settings.seed})"
    )
    return "\n".join(lines)


def write_preview(
    new_datalist: Mapping[str, Any], outcomes: Sequence[ItemOutcome], path: str | Path, count: int = 8,
    settings: SelectionSettings | None = None, base_dir: str | Path = ".",
) -> Path | None:
    """PNG of up to ``count`` replaced images: the radiograph, its boxes (yellow), the proposal (green contour) and,
    when the item has one, the reference mask (red contour). Returns the path, or None when nothing was replaced.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from pneumonitor.datasets.images import read_gray
    from pneumonitor.publishing import save_figure
    from pneumonitor.reading import read_radiograph

    settings = settings or SelectionSettings()
    rows = [row for row in outcomes if row.outcome == "replaced"][:count]
    path = Path(path)
    if not rows:
        path.unlink(missing_ok=True)  # no stale preview of an earlier run
        return None
    columns = min(4, len(rows))
    lines = math.ceil(len(rows) / columns)
    fig, axes = plt.subplots(lines, columns, figsize=(3.2 * columns, 3.4 * lines), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, row in zip(axes.ravel(), rows):
        item = new_datalist[row.split][row.index]
        ax.imshow(read_radiograph(_resolve(row.image, Path(base_dir))).pixels, cmap="gray", vmin=0, vmax=1)
        for x0, y0, x1, y1 in item[settings.boxes_key]:
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, color="yellow", lw=1))
        ax.contour(read_gray(row.proposal) > 127, levels=[0.5], colors="lime", linewidths=1)
        reference = item.get(settings.reference_key) or ""
        if reference and Path(reference).is_file():
            ax.contour(read_gray(reference) > 127, levels=[0.5], colors="red", linewidths=1)
        ax.set_title(f"{Path(row.image).name[:28]}\np={row.probability:.2f}", fontsize=7)
    fig.suptitle("boxes (yellow), Grad-CAM proposal (green), reference mask (red)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=90)
    return path


def settings_dict(settings: SelectionSettings) -> dict[str, Any]:
    out = asdict(settings)
    out["splits"] = list(settings.splits)
    return out


__all__ += ["outcome_counts", "settings_dict", "write_preview"]
