"""The analysis pipeline behind ``pneumonitor analyze``, the Deploy app and the MONAI Label app.

radiograph (``pneumonitor.io``) -> DLNet (probability, heatmap) and LSNet (lung mask) at their input sizes ->
both resized back to the radiograph's size (bilinear, then thresholded) -> ``pneumonitor.severity``.

Lung-mask post-processing: lung probability >= ``lung_threshold`` (0.5), holes filled, then split into the
patient's right and left lung (two largest components by side, see :func:`pneumonitor.severity.split_lungs`).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import platform
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from scipy import ndimage

from pneumonitor import __version__
from pneumonitor.io import Radiograph, UnsupportedInput, read_radiograph
from pneumonitor.networks.checkpoint import LoadedNetwork, WeightsNotFound, load_network
from pneumonitor.networks.dlnet import maps_to_heatmap
from pneumonitor.severity import (
    CLASSIFICATION_THRESHOLD,
    HEATMAP_THRESHOLD,
    InsufficientLungs,
    SeverityResult,
    assess_severity,
    lung_label_image,
)
from pneumonitor.transforms.presets import dlnet_preprocess, lsnet_preprocess

logger = logging.getLogger(__name__)

__all__ = [
    "AnalysisSettings",
    "ImageAnalysis",
    "Analyzer",
    "RESULT_COLUMNS",
    "default_bundle_dir",
    "resolve_device",
    "write_image_outputs",
    "write_results",
]

#: columns of results.csv, in order (the first 14 are the documented interface; the rest identify the study)
RESULT_COLUMNS = (
    "image,status,reason,pneumonia_probability,positive,ratio_total,ratio_right,ratio_left,score_right,score_left,"
    "score_total,lung_mask,pneumonia_mask,overlay,heatmap,patient_id,study_instance_uid,series_instance_uid,"
    "sop_instance_uid,study_date,acquisition_datetime,view_position,rows,columns"
).split(",")

IDENTITY_COLUMNS = (
    "patient_id",
    "study_instance_uid",
    "series_instance_uid",
    "sop_instance_uid",
    "study_date",
    "acquisition_datetime",
    "view_position",
)


def default_bundle_dir(name: str) -> Path:
    """Where the shipped bundle ``name`` (``dlnet``/``lsnet``) lives: ``$PNEUMONITOR_BUNDLES/name`` or the repo's."""
    root = os.environ.get("PNEUMONITOR_BUNDLES")
    base = Path(root) if root else Path(__file__).resolve().parents[1] / "bundles"
    return base / name


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but torch sees no CUDA device")
    return torch.device(device)


@dataclass
class AnalysisSettings:
    """Thresholds and preprocessing parameters.

    ``classification_threshold``/``heatmap_threshold`` left at ``None`` take the DLNet weights' own operating point
    (chosen on their validation split and stored in the bundle's ``inference.json`` or the checkpoint), else the
    paper's 0.62 / 0.8: :meth:`resolved` does that.
    """

    classification_threshold: float | None = None
    heatmap_threshold: float | None = None
    lung_threshold: float = 0.5
    clahe_clip_limit: float = 0.01
    clahe_tile_grid: int = 8
    #: CUDA only: "bf16" (default), "fp16" or "none" (fp32). CPU inference is always fp32.
    mixed_precision: str = "bf16"

    def resolved(self, weights_settings: dict[str, Any] | None = None) -> AnalysisSettings:
        """A copy with unset thresholds taken from ``weights_settings`` (a loaded DLNet's ``settings``), else the paper's."""
        weights_settings = weights_settings or {}
        chosen = {}
        for name, paper in (("classification_threshold", CLASSIFICATION_THRESHOLD), ("heatmap_threshold", HEATMAP_THRESHOLD)):
            value = getattr(self, name)
            chosen[name] = float(value if value is not None else weights_settings.get(name, paper))
            if not 0.0 <= chosen[name] <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {chosen[name]}")
        return replace(self, **chosen)


@dataclass
class ImageAnalysis:
    """Outcome for one input: either ``severity`` (status ok) or a skip ``reason``."""

    source: Path
    status: str
    reason: str = ""
    radiograph: Radiograph | None = None
    severity: SeverityResult | None = None
    heatmap: np.ndarray | None = field(default=None, repr=False)
    lung_probability: np.ndarray | None = field(default=None, repr=False)


class Analyzer:
    """Runs DLNet + LSNet + severity on radiographs.

    Args:
        dlnet, lsnet: loaded networks (``pneumonitor.networks.load_network``).
        settings: thresholds and preprocessing.
        device: where the networks run.
    """

    def __init__(
        self,
        dlnet: LoadedNetwork,
        lsnet: LoadedNetwork,
        settings: AnalysisSettings | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.dlnet = dlnet
        self.lsnet = lsnet
        self.settings = (settings or AnalysisSettings()).resolved(dlnet.settings)
        self.device = torch.device(device)
        self.dlnet.network.to(self.device).eval()
        self.lsnet.network.to(self.device).eval()
        self._dl_pre = dlnet_preprocess(
            dlnet.image_size, self.settings.clahe_clip_limit, self.settings.clahe_tile_grid
        )
        self._ls_pre = lsnet_preprocess(lsnet.image_size)
        #: wall seconds spent per stage (decode, preprocess, dlnet, lsnet, severity), for benchmarks
        self.stage_seconds: Counter[str] = Counter()

    @classmethod
    def from_locations(
        cls,
        dlnet: str | Path | None = None,
        lsnet: str | Path | None = None,
        device: str = "auto",
        settings: AnalysisSettings | None = None,
    ) -> Analyzer:
        """Load both networks (default: the shipped bundles) on ``device``.

        Raises:
            WeightsNotFound: with a message listing where weights were looked for and how to get them.
            ValueError: a checkpoint of the wrong kind or architecture.
        """
        torch_device = resolve_device(device)
        loaded = {}
        for kind, location, bundle in (("DLNet", dlnet, "dlnet"), ("LSNet", lsnet, "lsnet")):
            where = Path(location) if location else default_bundle_dir(bundle)
            try:
                loaded[kind] = load_network(where, kind, device=torch_device)
            except WeightsNotFound as exc:
                raise WeightsNotFound(
                    f"No trained {kind} weights found ({exc}). Looked in: {where}"
                    + ("" if location else f" (the default; set PNEUMONITOR_BUNDLES to move it)")
                    + f". Pass --{bundle} PATH (a bundle folder or a .pt checkpoint) or train the bundle: "
                    f"python -m monai.bundle run training --config_file bundles/{bundle}/configs/train.json "
                    "(README, 'Models'). pneumonitor does not report results from untrained networks."
                ) from exc
        return cls(loaded["DLNet"], loaded["LSNet"], settings=settings, device=torch_device)

    def describe(self) -> dict[str, Any]:
        """Models and settings, for results.json."""
        return {
            "pneumonitor_version": __version__,
            "torch_version": torch.__version__,
            "python": platform.python_version(),
            "device": str(self.device),
            "dlnet": {
                "weights": str(self.dlnet.source),
                "sha256": self.dlnet.sha256,
                "image_size": list(self.dlnet.image_size),
                "network": getattr(self.dlnet.network, "config", {}),
            },
            "lsnet": {
                "weights": str(self.lsnet.source),
                "sha256": self.lsnet.sha256,
                "image_size": list(self.lsnet.image_size),
                "network": getattr(self.lsnet.network, "config", {}),
            },
            **asdict(self.settings),
        }

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # -- pure steps -------------------------------------------------------------------------------------------
    def preprocess(self, radiograph: Radiograph) -> tuple[torch.Tensor, torch.Tensor]:
        """DLNet input ``(3, h, w)`` and LSNet input ``(1, h', w')`` from a radiograph."""
        image = torch.from_numpy(radiograph.pixels[None])
        # plain tensors: MetaTensor's __torch_function__ bookkeeping would slow every convolution down
        return _plain(self._dl_pre(image)), _plain(self._ls_pre(image))

    @torch.inference_mode()
    def infer(self, dl_batch: torch.Tensor, ls_batch: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Probabilities ``(B,)``, heatmaps ``(B, h, w)`` at DLNet's input size, lung probabilities ``(B, h', w')``.

        On CUDA with ``settings.mixed_precision`` the networks run under autocast (bf16/fp16); on CPU always fp32.
        """
        amp = self.device.type == "cuda" and self.settings.mixed_precision != "none"
        dtype = torch.bfloat16 if self.settings.mixed_precision == "bf16" else torch.float16
        with torch.autocast(device_type=self.device.type, dtype=dtype, enabled=amp):
            started = time.perf_counter()
            logits, maps = self.dlnet.network(dl_batch.to(self.device, non_blocking=True))
            heatmaps = maps_to_heatmap(maps.float(), dl_batch.shape[-2:])[:, 0]
            self._sync()
            self.stage_seconds["dlnet"] += time.perf_counter() - started
            started = time.perf_counter()
            lungs = torch.sigmoid(self.lsnet.network(ls_batch.to(self.device, non_blocking=True)).float())[:, 0]
            self._sync()
            self.stage_seconds["lsnet"] += time.perf_counter() - started
        return (
            torch.sigmoid(logits[:, 0]).float().cpu().numpy(),
            heatmaps.float().cpu().numpy(),
            lungs.float().cpu().numpy(),
        )

    def postprocess(
        self, radiograph: Radiograph, probability: float, heatmap: np.ndarray, lung_probability: np.ndarray
    ) -> ImageAnalysis:
        """Resize the network outputs to the radiograph and assess severity; a failure becomes a skip."""
        size = radiograph.shape
        heatmap_full = _resize(heatmap, size)
        lung_full = _resize(lung_probability, size)
        lung_mask = ndimage.binary_fill_holes(lung_full >= self.settings.lung_threshold)
        try:
            severity = assess_severity(
                probability,
                heatmap_full,
                lung_mask,
                classification_threshold=self.settings.classification_threshold,
                heatmap_threshold=self.settings.heatmap_threshold,
            )
        except (InsufficientLungs, ValueError) as exc:
            return ImageAnalysis(radiograph.source, "skipped", str(exc), radiograph=radiograph)
        return ImageAnalysis(
            radiograph.source,
            "ok",
            radiograph=radiograph,
            severity=severity,
            heatmap=heatmap_full,
            lung_probability=lung_full,
        )

    # -- driver -----------------------------------------------------------------------------------------------
    def load(self, path: Path) -> tuple[Radiograph, torch.Tensor, torch.Tensor] | ImageAnalysis:
        """Read and preprocess one file; an unusable input becomes a skipped :class:`ImageAnalysis`."""
        started = time.perf_counter()
        try:
            radiograph = read_radiograph(path)
            self.stage_seconds["decode"] += time.perf_counter() - started
            started = time.perf_counter()
            dl_input, ls_input = self.preprocess(radiograph)
            self.stage_seconds["preprocess"] += time.perf_counter() - started
        except UnsupportedInput as exc:
            return ImageAnalysis(Path(path), "skipped", str(exc))
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop a batch of hundreds
            logger.debug("failed to read %s", path, exc_info=True)
            return ImageAnalysis(Path(path), "skipped", f"could not be read ({type(exc).__name__}: {exc})")
        return radiograph, dl_input, ls_input

    def analyze(
        self, paths: Iterable[Path], batch_size: int = 4, progress: bool = True, workers: int | None = None
    ) -> Iterator[ImageAnalysis]:
        """Analyze files in order, ``batch_size`` images per forward pass; yields one result per input path.

        Decoding and preprocessing of the next images run in ``workers`` threads while the networks run
        (default: ``min(4, CPU count)``; 0 = all in this thread). Results do not depend on either setting.
        """
        from tqdm.auto import tqdm

        paths = list(paths)
        workers = min(4, os.cpu_count() or 1) if workers is None else workers
        bar = tqdm(total=len(paths), desc="analyze", unit="img", disable=not progress)
        pending: list[tuple[Radiograph, torch.Tensor, torch.Tensor]] = []

        def flush() -> Iterator[ImageAnalysis]:
            if not pending:
                return
            radiographs, dl_inputs, ls_inputs = zip(*pending)
            pending.clear()
            probs, heatmaps, lungs = self.infer(torch.stack(dl_inputs), torch.stack(ls_inputs))
            for radiograph, p, h, lung in zip(radiographs, probs, heatmaps, lungs):
                started = time.perf_counter()
                result = self.postprocess(radiograph, float(p), h, lung)
                self.stage_seconds["severity"] += time.perf_counter() - started
                bar.update(1)
                yield result

        for loaded in _prefetch(paths, self.load, workers, depth=2 * batch_size + workers):
            if isinstance(loaded, ImageAnalysis):
                yield from flush()  # keep the output in input order
                bar.update(1)
                yield loaded
                continue
            pending.append(loaded)
            if len(pending) >= batch_size:
                yield from flush()
        yield from flush()
        bar.close()


def _prefetch(items: list, fn, workers: int, depth: int) -> Iterator:
    """``map(fn, items)`` in order, computed up to ``depth`` items ahead by ``workers`` threads (bounded memory)."""
    if workers <= 0:
        yield from map(fn, items)
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pneumonitor-load") as pool:
        queue: deque = deque()
        iterator = iter(items)
        for item in iterator:
            queue.append(pool.submit(fn, item))
            if len(queue) >= depth:
                break
        while queue:
            result = queue.popleft().result()
            for item in iterator:
                queue.append(pool.submit(fn, item))
                break
            yield result


def _plain(tensor) -> torch.Tensor:
    tensor = tensor.as_tensor() if isinstance(tensor, MetaTensor) else torch.as_tensor(tensor)
    return tensor.float().contiguous()


def _resize(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a ``(h, w)`` float map to ``size``."""
    if tuple(array.shape) == tuple(size):
        return array.astype(np.float32)
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None, None]
    return F.interpolate(tensor, size=tuple(size), mode="bilinear", align_corners=False)[0, 0].numpy()


def _save_png(array: np.ndarray, path: Path) -> None:
    """Write an 8-bit PNG atomically (temp file + rename) so that no partial file is ever left."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    # zlib level 1: ~5x faster than the default 6 on 1-4 MP images, masks stay small (they are mostly flat)
    Image.fromarray(array).save(tmp, format="PNG", compress_level=1)
    tmp.replace(path)


def _output_stem(source: Path) -> str:
    """A file-name stem unique per input path (inputs from different folders may share a name)."""
    import hashlib

    name = source.name
    for suffix in (".nii.gz", ".nii", ".dcm", ".dicom", ".png", ".jpg", ".jpeg"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    digest = hashlib.sha1(str(source.resolve()).encode()).hexdigest()[:8]
    return f"{name[:80]}-{digest}"


def write_image_outputs(result: ImageAnalysis, out_dir: Path) -> dict[str, str]:
    """Write the lung mask, pneumonia mask, heatmap and overlay PNGs of an ``ok`` result.

    Returns the four paths relative to ``out_dir`` keyed ``lung_mask, pneumonia_mask, overlay, heatmap``.
    """
    from pneumonitor.visualize import render_overlay

    assert result.severity is not None and result.radiograph is not None and result.heatmap is not None
    sev = result.severity
    stem = _output_stem(result.source)
    paths = {
        "lung_mask": Path("masks") / f"{stem}_lungs.png",
        "pneumonia_mask": Path("masks") / f"{stem}_pneumonia.png",
        "heatmap": Path("masks") / f"{stem}_heatmap.png",
        "overlay": Path("overlays") / f"{stem}_overlay.png",
    }
    caption = (
        f"p={sev.probability:.2f}  score {sev.score_total}/8 (R {sev.score_right}, L {sev.score_left})  "
        f"ratio {sev.ratio_total:.1f}%"
    )
    _save_png(lung_label_image(sev.right_lung, sev.left_lung), out_dir / paths["lung_mask"])
    _save_png(sev.pneumonia_mask.astype(np.uint8) * 255, out_dir / paths["pneumonia_mask"])
    _save_png(np.round(np.clip(result.heatmap, 0, 1) * 255).astype(np.uint8), out_dir / paths["heatmap"])
    overlay = render_overlay(result.radiograph.pixels, sev.right_lung, sev.left_lung, sev.pneumonia_mask, caption)
    _save_png(overlay, out_dir / paths["overlay"])
    return {key: value.as_posix() for key, value in paths.items()}


def result_row(result: ImageAnalysis, files: dict[str, str] | None = None) -> dict[str, Any]:
    """One results.csv row (all ``RESULT_COLUMNS``; empty strings where not applicable)."""
    row: dict[str, Any] = {column: "" for column in RESULT_COLUMNS}
    row.update(image=str(Path(result.source).absolute()), status=result.status, reason=result.reason)
    if result.radiograph is not None:
        meta = result.radiograph.meta
        row.update({key: meta.get(key, "") or "" for key in IDENTITY_COLUMNS})
        row.update(rows=result.radiograph.shape[0], columns=result.radiograph.shape[1])
    if result.severity is not None:
        row.update(result.severity.as_row())
        row.update(files or {})
    return row


def analyze_to_folder(
    analyzer: Analyzer,
    paths: list[Path],
    out_dir: Path,
    batch_size: int = 4,
    workers: int | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Analyze ``paths`` and write every image's PNGs under ``out_dir``; returns the results.csv rows in input order.

    The PNGs of one batch are encoded in background threads while the next batch runs through the networks
    (PNG encoding releases the GIL). Does not write results.csv/json (see :func:`write_results`).
    """
    from concurrent.futures import ThreadPoolExecutor

    def write(result: ImageAnalysis) -> dict[str, Any]:
        if result.status != "ok":
            logger.warning("skipped %s: %s", result.source, result.reason)
            return result_row(result)
        started = time.perf_counter()
        files = write_image_outputs(result, out_dir)
        analyzer.stage_seconds["write"] += time.perf_counter() - started
        return result_row(result, files)

    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="pneumonitor-write") as pool:
        futures = [
            pool.submit(write, result)
            for result in analyzer.analyze(paths, batch_size=batch_size, progress=progress, workers=workers)
        ]
        return [future.result() for future in futures]


def write_results(rows: list[dict[str, Any]], out_dir: Path, settings: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``results.csv`` and ``results.json`` atomically. Returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = out_dir / "results.csv", out_dir / "results.json"
    tmp_csv = csv_path.with_name(".results.csv.tmp")
    with tmp_csv.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=RESULT_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    clean = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in rows]
    tmp_json = json_path.with_name(".results.json.tmp")
    tmp_json.write_text(json.dumps({"settings": settings, "results": clean}, indent=2, default=str))
    tmp_csv.replace(csv_path)
    tmp_json.replace(json_path)
    return csv_path, json_path
