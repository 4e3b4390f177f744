"""Image quality-control gate: is this a frontal chest radiograph, the right way up and the right polarity?

A small classifier (the ``bundles/qc`` MONAI bundle, trained by ``scripts/train_qc.py``) looks at the whole image at
96 x 96 px and answers one of :data:`QC_CLASSES`. Everything that is not ``frontal`` is a *finding* with a short
name (:data:`QC_FINDINGS`: "lateral view", "inverted", "rotated 90°", "not a chest radiograph") that callers put in
the skip reason (``--qc on``) or in a ``qc`` column (``--qc warn``). The same :class:`QCGate` serves
``pneumonitor analyze``, the Deploy app and the MONAI Label app (through :class:`pneumonitor.inference.analyzer.Analyzer`).

The gate refuses an image only when the network's probability of ``frontal`` is below the bundle's
``frontal_threshold`` (chosen on the validation split so that few frontal radiographs are refused); the finding is
then the most probable other class.

Rotation names: ``rotated_90`` is an upright radiograph turned 90° clockwise (the head on the image right),
``rotated_270`` turned 270° clockwise (= 90° counter-clockwise, the head on the image left).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "QC_CLASSES",
    "QC_FINDINGS",
    "QC_MODES",
    "QCGate",
    "QCResult",
    "QCWeightsNotFound",
    "qc_input",
    "make_kind",
    "shared_gate",
    "write_qc_csv",
]

QC_CLASSES = ("frontal", "lateral", "inverted", "rotated_90", "rotated_180", "rotated_270", "not_chest_radiograph")
#: the words a user reads in a skip reason or the ``qc`` column
QC_FINDINGS = {
    "lateral": "lateral view",
    "inverted": "inverted",
    "rotated_90": "rotated 90°",
    "rotated_180": "rotated 180°",
    "rotated_270": "rotated 270°",
    "not_chest_radiograph": "not a chest radiograph",
}
#: ``on``: refuse with the finding as reason; ``warn``: analyse and report it; ``off``: no gate
QC_MODES = ("on", "warn", "off")
QC_IMAGE_SIZE = 96


class QCWeightsNotFound(FileNotFoundError):
    """No QC bundle where one was looked for."""


def qc_input(pixels: np.ndarray, size: int = QC_IMAGE_SIZE) -> torch.Tensor:
    """The network input ``(1, size, size)``: the whole image, area-resized (aspect not kept: the classes do not
    depend on it), standardized by its own mean/std (polarity survives: an inverted image has the opposite sign)."""
    image = torch.as_tensor(np.ascontiguousarray(pixels, dtype=np.float32))[None, None]
    mode = "area" if min(image.shape[-2:]) >= size else "bilinear"
    image = F.interpolate(image, size=(size, size), mode=mode, **({} if mode == "area" else {"align_corners": False}))
    image = image[0]
    return (image - image.mean()) / image.std().clamp_min(1e-6)


def make_kind(pixels: np.ndarray, kind: str) -> np.ndarray:
    """An upright MONOCHROME2 radiograph in ``[0, 1]`` turned into a bad ``kind`` (training and tests)."""
    if kind == "inverted":
        return 1.0 - pixels
    turns = {"rotated_90": -1, "rotated_180": 2, "rotated_270": 1}  # np.rot90 k > 0 turns counter-clockwise
    if kind in turns:
        return np.ascontiguousarray(np.rot90(pixels, turns[kind]))
    if kind == "frontal":
        return pixels
    raise ValueError(f"cannot make {kind!r} from a frontal radiograph")


@dataclass
class QCResult:
    """The gate's answer for one image."""

    label: str
    probabilities: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.label == "frontal"

    @property
    def finding(self) -> str:
        """"" for a frontal radiograph, else the finding's words ("lateral view", "rotated 90°", ...)."""
        return "" if self.passed else QC_FINDINGS[self.label]

    def refusal_reason(self) -> str:
        """The skip reason of a refused image (``""`` when passed), the same in the CLI and both apps."""
        if self.passed:
            return ""
        return f"image QC: {self.describe()}; only upright frontal chest radiographs are analysed"

    def describe(self) -> str:
        """e.g. ``lateral view (p=0.97)``; ``""`` when passed."""
        if self.passed:
            return ""
        return f"{self.finding} (p={self.probabilities.get(self.label, float('nan')):.2f})"


_GATES: dict[tuple[str, str, float], QCGate] = {}


def shared_gate(folder: str | Path | None = None, device: torch.device | str = "cpu") -> QCGate:
    """A :class:`QCGate` loaded once per bundle, device and weights version (servers call this per request)."""
    folder = Path(folder) if folder else default_qc_bundle()
    weights = folder / "models" / "model.pt"
    key = (str(folder.resolve()), str(device), weights.stat().st_mtime if weights.is_file() else 0.0)
    if key not in _GATES:
        _GATES[key] = QCGate.from_bundle(folder, device=device)
    return _GATES[key]


def default_qc_bundle() -> Path:
    root = os.environ.get("PNEUMONITOR_BUNDLES")
    return (Path(root) if root else Path(__file__).resolve().parents[2] / "bundles") / "qc"


class QCGate:
    """The QC network with its bundle settings.

    Args:
        network: a classifier mapping ``(B, 1, S, S)`` to ``(B, len(classes))`` logits.
        classes: class names in output order (must be :data:`QC_CLASSES`' names).
        image_size: ``S``.
        frontal_threshold: an image is refused when ``p(frontal)`` is below this.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        classes: tuple[str, ...] = QC_CLASSES,
        image_size: int = QC_IMAGE_SIZE,
        frontal_threshold: float = 0.5,
        device: torch.device | str = "cpu",
        source: Path | None = None,
    ) -> None:
        unknown = set(classes) - set(QC_CLASSES)
        if unknown or "frontal" not in classes:
            raise ValueError(f"QC classes must be drawn from {QC_CLASSES}, got {classes}")
        self.network = network.to(device).eval()
        self.classes = tuple(classes)
        self.image_size = int(image_size)
        self.frontal_threshold = float(frontal_threshold)
        self.device = torch.device(device)
        self.source = source

    @classmethod
    def from_bundle(cls, folder: str | Path | None = None, device: torch.device | str = "cpu") -> QCGate:
        """Load ``bundles/qc`` (or ``folder``): ``configs/inference.json`` gives ``network_def``, ``image_size``,
        ``classes`` and ``frontal_threshold``; ``models/model.pt`` the weights.

        Raises:
            QCWeightsNotFound: no bundle/weights there (with how to train them).
        """
        from pneumonitor.networks.bundle import WeightsNotFound, load_bundle

        folder = Path(folder) if folder else default_qc_bundle()
        try:
            loaded = load_bundle(folder, device)
        except WeightsNotFound as exc:
            raise QCWeightsNotFound(
                f"no QC bundle at {folder} ({exc}); train it with python scripts/train_qc.py, or pass --qc off"
            ) from exc
        return cls(
            loaded.network,
            classes=tuple(loaded.settings["classes"]),
            image_size=loaded.image_size[0],
            frontal_threshold=float(loaded.settings["frontal_threshold"]),
            device=device,
            source=folder.resolve(),
        )

    def describe(self) -> dict[str, Any]:
        return {
            "bundle": str(self.source or ""),
            "classes": list(self.classes),
            "image_size": self.image_size,
            "frontal_threshold": self.frontal_threshold,
        }

    @torch.inference_mode()
    def probabilities(self, images: list[np.ndarray]) -> np.ndarray:
        """``(N, classes)`` softmax probabilities for MONOCHROME2 ``[0, 1]`` images."""
        if not images:
            return np.zeros((0, len(self.classes)), np.float32)
        batch = torch.stack([qc_input(image, self.image_size) for image in images]).to(self.device)
        return torch.softmax(self.network(batch).float(), dim=1).cpu().numpy()

    def decide(self, probabilities: np.ndarray) -> QCResult:
        """Refuse when ``p(frontal) < frontal_threshold``; the finding is then the most probable other class."""
        named = {name: float(p) for name, p in zip(self.classes, probabilities)}
        if named["frontal"] >= self.frontal_threshold:
            return QCResult("frontal", named)
        label = max((name for name in self.classes if name != "frontal"), key=named.__getitem__)
        return QCResult(label, named)

    def check(self, images: list[np.ndarray]) -> list[QCResult]:
        return [self.decide(p) for p in self.probabilities(images)]


def write_qc_csv(paths: list[str | Path], gate: QCGate, out_dir: str | Path) -> Path:
    """The bundle's inference: ``out_dir/qc.csv`` with one row per file (label, finding, p per class, or the
    reason the file could not be read)."""
    from pneumonitor.publishing import write_csv
    from pneumonitor.reading import UnsupportedInput, read_radiograph

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for path in paths:
        try:
            result = gate.check([read_radiograph(path).pixels])[0]
        except UnsupportedInput as exc:
            rows.append({"image": str(path), "label": "", "finding": "", "reason": str(exc)})
            continue
        rows.append({"image": str(path), "label": result.label, "finding": result.finding, "reason": "",
                     **{f"p_{k}": round(v, 4) for k, v in result.probabilities.items()}})
    fields = ["image", "label", "finding", "reason"] + [f"p_{c}" for c in gate.classes]
    return write_csv(out_dir / "qc.csv", rows, fields, restval="")
