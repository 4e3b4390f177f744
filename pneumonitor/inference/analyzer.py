"""The analysis pipeline behind ``pneumonitor analyze``, the Deploy app and the MONAI Label app.

radiograph (``pneumonitor.reading``) -> DLNet (probability, heatmap) and LSNet (lung mask) at their input sizes ->
both resized back to the radiograph's size (bilinear, then thresholded) -> ``pneumonitor.severity``.

Lung-mask post-processing: lung probability >= ``lung_threshold`` (0.5), holes filled, then split into the
patient's right and left lung (two largest components by side, see :func:`pneumonitor.severity.split_lungs`).

Image QC (``settings.qc``, :mod:`pneumonitor.qc`): before the networks run, the QC gate says whether each image is an
upright frontal chest radiograph; ``on`` skips the others with the finding as reason, ``warn`` analyses them and
reports the finding in the ``qc`` column, ``off`` (or an Analyzer built without a gate) does not look.

Uncertainty (``settings.uncertainty``): the reported numbers are those of the image as given; extra passes give their
spread. ``flip``: the horizontally mirrored image through both networks (outputs mirrored back), the whole severity
computed on it too; ``flip+mc``: also ``mc_samples`` DLNet passes with its dropout active (MC-dropout, probability
only). From all passes: SDs of the probability and the ratios, ``p +- z SD`` (clipped to [0, 1]) and the score range
(the scores of the passes and of the ratios ``+- z SD``); ``uncertain`` = 1 when the probability interval contains
the operating point, i.e. the image could fall on either side of it.
"""

from __future__ import annotations

import logging
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
from pneumonitor.publishing import remove_stale_temporaries as _remove_stale, unit_to_uint8, write_png
from pneumonitor.results import IDENTITY_COLUMNS, empty_row
from pneumonitor.reading import Radiograph, UnsupportedInput, read_radiograph
from pneumonitor.networks.bundle import LoadedNetwork, WeightsNotFound, load_bundle
from pneumonitor.networks.dlnet import maps_to_heatmap
from pneumonitor.qc import QC_MODES, QCGate, QCResult, QCWeightsNotFound
from pneumonitor.qc.ood import ood_flags
from pneumonitor.severity import (
    CLASSIFICATION_THRESHOLD,
    HEATMAP_THRESHOLD,
    InsufficientLungs,
    SeverityResult,
    assess_severity,
    lung_label_image,
    pneumonia_region,
    lung_score,
    PROBABILITY_SOURCES,
    SEVERITY_RULES,
    split_lungs,
)
from pneumonitor.transforms.presets import dlnet_preprocess, lsnet_preprocess

logger = logging.getLogger(__name__)

__all__ = [
    "AnalysisSettings",
    "ImageAnalysis",
    "Analyzer",
    "default_bundle_dir",
    "resolve_device",
    "write_image_outputs",
    "summarize_spread",
    "UNCERTAINTY_MODES",
]

#: ``AnalysisSettings.uncertainty`` values
UNCERTAINTY_MODES = ("off", "flip", "flip+mc")

def default_bundle_dir(name: str) -> Path:
    """Where the shipped bundle ``name`` (``dlnet``/``lsnet``) lives: ``$PNEUMONITOR_BUNDLES/name`` or the repo's."""
    root = os.environ.get("PNEUMONITOR_BUNDLES")
    base = Path(root) if root else Path(__file__).resolve().parents[2] / "bundles"
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

    ``classification_threshold``/``heatmap_threshold`` left at ``None`` take the DLNet bundle's operating point
    (chosen on its validation split and stored in its ``inference.json``; ``operating_point`` names another of its
    ``operating_points``), else the paper's 0.62 / 0.8: :meth:`resolved` does that.
    """

    classification_threshold: float | None = None
    #: a named classification operating point of the DLNet bundle (``operating_points`` in its ``inference.json``,
    #: e.g. ``"balanced"``, ``"high-specificity"``), used when ``classification_threshold`` is not given
    operating_point: str | None = None
    heatmap_threshold: float | None = None
    #: "heatmap-threshold" (the paper) or "extent-head" (:mod:`pneumonitor.severity`); ``None``: the DLNet bundle's
    #: ``severity_rule``, else the paper's
    severity_rule: str | None = None
    #: "classification-head" (DLNet's own, the paper) or "lung-classifier" (the extent head's lung channels, which
    #: only look at the lungs: :mod:`pneumonitor.networks.dlnet`); ``None``: the DLNet bundle's, else the paper's
    probability_source: str | None = None
    lung_threshold: float = 0.5
    clahe_clip_limit: float = 0.01
    clahe_tile_grid: int = 8
    #: CUDA only: "bf16" (default), "fp16" or "none" (fp32). CPU inference is always fp32.
    mixed_precision: str = "bf16"
    #: image QC gate: "on" (refuse), "warn" (analyse, report the finding), "off"
    qc: str = "on"
    #: extra passes for the spread of every number: "off", "flip", "flip+mc" (see the module docstring)
    uncertainty: str = "flip"
    #: MC-dropout passes of DLNet with ``uncertainty="flip+mc"``
    mc_samples: int = 8
    #: interval half-width in SDs (1.96: a 95 % interval if the spread were normal)
    interval_z: float = 1.96

    def resolved(self, weights_settings: dict[str, Any] | None = None) -> AnalysisSettings:
        """A copy with unset thresholds taken from ``weights_settings`` (a loaded DLNet's ``settings``), else the paper's."""
        weights_settings = weights_settings or {}
        chosen = {}
        named = None
        if self.operating_point is not None:
            if self.classification_threshold is not None:
                raise ValueError("give a classification threshold or an operating point, not both")
            points = weights_settings.get("operating_points") or {}
            if self.operating_point not in points:
                raise ValueError(f"operating point {self.operating_point!r} is not one of the DLNet bundle's: "
                                 f"{', '.join(sorted(points)) or 'it names none (only its classification_threshold)'}")
            named = float(points[self.operating_point])
        for name, paper in (("classification_threshold", CLASSIFICATION_THRESHOLD), ("heatmap_threshold", HEATMAP_THRESHOLD)):
            value = named if name == "classification_threshold" and named is not None else getattr(self, name)
            chosen[name] = float(value if value is not None else weights_settings.get(name, paper))
            if not 0.0 <= chosen[name] <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {chosen[name]}")
        chosen["severity_rule"] = self.severity_rule or weights_settings.get("severity_rule", SEVERITY_RULES[0])
        if chosen["severity_rule"] not in SEVERITY_RULES:
            raise ValueError(f"severity_rule must be one of {SEVERITY_RULES}, got {chosen['severity_rule']!r}")
        chosen["probability_source"] = self.probability_source or weights_settings.get(
            "probability_source", PROBABILITY_SOURCES[0])
        if chosen["probability_source"] not in PROBABILITY_SOURCES:
            raise ValueError(f"probability_source must be one of {PROBABILITY_SOURCES}, "
                             f"got {chosen['probability_source']!r}")
        if self.qc not in QC_MODES:
            raise ValueError(f"qc must be one of {QC_MODES}, got {self.qc!r}")
        if self.uncertainty not in UNCERTAINTY_MODES:
            raise ValueError(f"uncertainty must be one of {UNCERTAINTY_MODES}, got {self.uncertainty!r}")
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
    #: the QC gate's answer (None: no gate)
    qc: QCResult | None = None
    #: spread of the numbers (the uncertainty columns of :mod:`pneumonitor.results`), None when not measured
    uncertainty: dict[str, Any] | None = None
    #: out-of-distribution flags of an ``ok`` result (:func:`pneumonitor.qc.ood.ood_flags`)
    ood: list[str] = field(default_factory=list)


def _dropout_layers(network: torch.nn.Module) -> list[torch.nn.Module]:
    """The network's dropout layers with p > 0, eager or TorchScript: a scripted ``torch.nn.Dropout`` is no longer an
    instance of it (only its ``original_name`` says so), yet switching it to training mode draws masks all the same
    (the Deploy app serves DLNet as TorchScript)."""
    return [module for module in network.modules()
            if (isinstance(module, torch.nn.Dropout) or getattr(module, "original_name", None) == "Dropout")
            and float(getattr(module, "p", 0.0)) > 0]


class Analyzer:
    """Runs DLNet + LSNet + severity on radiographs.

    The per-network entry points (:meth:`lungs`, :meth:`pneumonia`, :meth:`mc_dropout`, and :meth:`run_dlnet` /
    :meth:`run_lsnet` on preprocessed batches) are what the Label app, stage 2 and the scripts call: one copy of
    preprocess -> network -> resize. An Analyzer built with one network serves that network's entry points only.

    Args:
        dlnet, lsnet: loaded networks (:func:`pneumonitor.networks.load_bundle`); ``None``: not used.
        settings: thresholds and preprocessing.
        device: where the networks run.
        qc_gate: the image QC gate (:class:`pneumonitor.qc.QCGate`); ``None``: no QC whatever ``settings.qc`` says
            (:meth:`from_locations` loads the shipped one unless ``settings.qc`` is ``off``).
    """

    def __init__(
        self,
        dlnet: LoadedNetwork | None,
        lsnet: LoadedNetwork | None,
        settings: AnalysisSettings | None = None,
        device: torch.device | str = "cpu",
        qc_gate: QCGate | None = None,
    ) -> None:
        self.dlnet = dlnet
        self.lsnet = lsnet
        self.settings = (settings or AnalysisSettings()).resolved(dlnet.settings if dlnet else None)
        self.device = torch.device(device)
        channels = _read_out_channels(dlnet.network) if dlnet is not None else 0
        if dlnet is not None and self.extent_rule and channels < 1:
            raise ValueError(
                f"severity_rule 'extent-head' needs a DLNet with a fitted extent head ({dlnet.source} has none): "
                "fit one with `pneumonitor fit-extent-head`, or use severity_rule 'heatmap-threshold'")
        if dlnet is not None and self.lung_classifier and channels < 3:
            raise ValueError(
                f"probability_source 'lung-classifier' needs a DLNet whose extent head has the lung-classifier "
                f"channels ({dlnet.source} has none): fit them with `pneumonitor fit-extent-head --lung-classifier`, "
                "or use probability_source 'classification-head'")
        if dlnet is not None:
            dlnet.network.to(self.device).eval()
            self._dl_pre = dlnet_preprocess(
                dlnet.image_size, self.settings.clahe_clip_limit, self.settings.clahe_tile_grid
            )
        if lsnet is not None:
            lsnet.network.to(self.device).eval()
            self._ls_pre = lsnet_preprocess(lsnet.image_size)
        self.qc_gate = qc_gate if self.settings.qc != "off" else None
        if self.qc_gate is not None:
            self.qc_gate.network.to(self.device)
            self.qc_gate.device = self.device
        #: wall seconds spent per stage (decode, preprocess, dlnet, lsnet, severity), for benchmarks
        self.stage_seconds: Counter[str] = Counter()

    @classmethod
    def from_locations(
        cls,
        dlnet: str | Path | None = None,
        lsnet: str | Path | None = None,
        device: str = "auto",
        settings: AnalysisSettings | None = None,
        qc_bundle: str | Path | None = None,
    ) -> Analyzer:
        """Load both networks (default: the shipped bundles) and, unless ``settings.qc`` is ``off``, the QC gate
        (``qc_bundle``, default ``bundles/qc``) on ``device``.

        Raises:
            WeightsNotFound: with a message listing where weights were looked for and how to get them.
            ValueError: a bundle of the wrong kind, or weights that do not fit its ``network_def``.
        """
        torch_device = resolve_device(device)
        loaded = {}
        for kind, location, bundle in (("DLNet", dlnet, "dlnet"), ("LSNet", lsnet, "lsnet")):
            where = Path(location) if location else default_bundle_dir(bundle)
            try:
                loaded[kind] = load_bundle(where, torch_device, kind=kind)
            except WeightsNotFound as exc:
                raise WeightsNotFound(
                    f"No trained {kind} weights found ({exc}). Looked in: {where}"
                    + ("" if location else f" (the default; set PNEUMONITOR_BUNDLES to move it)")
                    + f". Pass --{bundle} PATH (a bundle folder) or train the bundle: "
                    f"python -m monai.bundle run training --config_file bundles/{bundle}/configs/train.json "
                    f"--bundle_root bundles/{bundle} "
                    "(README, 'Models'). pneumonitor does not report results from untrained networks."
                ) from exc
        gate = None
        if (settings or AnalysisSettings()).qc != "off":
            try:
                gate = QCGate.from_bundle(qc_bundle, device=torch_device)
            except QCWeightsNotFound as exc:
                raise WeightsNotFound(str(exc)) from exc
        return cls(loaded["DLNet"], loaded["LSNet"], settings=settings, device=torch_device, qc_gate=gate)

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
            "qc_gate": self.qc_gate.describe() if self.qc_gate is not None else None,
            **asdict(self.settings),
        }

    @property
    def extent_rule(self) -> bool:
        """Whether severity uses DLNet's extent head (``settings.severity_rule == "extent-head"``)."""
        return self.settings.severity_rule == "extent-head"

    @property
    def lung_classifier(self) -> bool:
        """Whether the probability is the extent head's lung classifier (``settings.probability_source``)."""
        return self.settings.probability_source == "lung-classifier"

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # -- pure steps -------------------------------------------------------------------------------------------
    def preprocess(self, radiograph: Radiograph) -> tuple[torch.Tensor, torch.Tensor]:
        """DLNet input ``(3, h, w)`` and LSNet input ``(1, h', w')`` from a radiograph."""
        return self.dlnet_input(radiograph), self.lsnet_input(radiograph)

    def dlnet_input(self, radiograph: Radiograph) -> torch.Tensor:
        """DLNet's input ``(3, h, w)``: CLAHE, resized to its input size, ImageNet-normalised."""
        # plain tensors: MetaTensor's __torch_function__ bookkeeping would slow every convolution down
        return _plain(self._dl_pre(torch.from_numpy(radiograph.pixels[None])))

    def lsnet_input(self, radiograph: Radiograph) -> torch.Tensor:
        """LSNet's input ``(1, h', w')``: resized to its input size."""
        return _plain(self._ls_pre(torch.from_numpy(radiograph.pixels[None])))

    def _autocast(self) -> torch.autocast:
        """On CUDA with ``settings.mixed_precision`` the networks run under autocast (bf16/fp16); on CPU fp32."""
        amp = self.device.type == "cuda" and self.settings.mixed_precision != "none"
        dtype = torch.bfloat16 if self.settings.mixed_precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype, enabled=amp)

    @torch.inference_mode()
    def run_dlnet(self, dl_batch: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Probabilities ``(B,)`` (DLNet's classification head) and heatmaps ``(B, h, w)`` at DLNet's input size of a
        preprocessed batch, and the read-out maps ``(B, 1 or 3, h/16, w/16)`` of its extent head when severity or the
        probability uses them (else ``None``; :meth:`read_out` turns them into lung extents and a probability)."""
        with self._autocast():
            started = time.perf_counter()
            batch = dl_batch.to(self.device, non_blocking=True)
            if self.extent_rule or self.lung_classifier:
                logits, maps, read_outs = self.dlnet.network.outputs(batch)
            else:
                (logits, maps), read_outs = self.dlnet.network(batch), None
            heatmaps = maps_to_heatmap(maps.float(), dl_batch.shape[-2:])[:, 0]
            self._sync()
            self.stage_seconds["dlnet"] += time.perf_counter() - started
        return (torch.sigmoid(logits[:, 0]).float().cpu().numpy(), heatmaps.float().cpu().numpy(),
                None if read_outs is None else read_outs.float().cpu().numpy())

    @torch.inference_mode()
    def run_lsnet(self, ls_batch: torch.Tensor) -> np.ndarray:
        """Lung probabilities ``(B, h', w')`` at LSNet's input size of a preprocessed batch."""
        with self._autocast():
            started = time.perf_counter()
            lungs = torch.sigmoid(self.lsnet.network(ls_batch.to(self.device, non_blocking=True)).float())[:, 0]
            self._sync()
            self.stage_seconds["lsnet"] += time.perf_counter() - started
        return lungs.float().cpu().numpy()

    def infer(
        self, dl_batch: torch.Tensor, ls_batch: torch.Tensor
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """Probabilities ``(B,)``, heatmaps ``(B, h, w)`` at DLNet's input size, lung probabilities ``(B, h', w')``,
        read-out maps ``(B, k, h/16, w/16)`` or ``None`` (:meth:`run_dlnet`)."""
        probabilities, heatmaps, read_outs = self.run_dlnet(dl_batch)
        return probabilities, heatmaps, self.run_lsnet(ls_batch), read_outs

    def pneumonia(self, radiograph: Radiograph) -> tuple[float, np.ndarray]:
        """DLNet on one radiograph: the pneumonia probability and the heatmap at the radiograph's size."""
        probabilities, heatmaps, _ = self.run_dlnet(self.dlnet_input(radiograph)[None])
        return float(probabilities[0]), _resize(heatmaps[0], radiograph.shape)

    def pneumonia_mask(self, radiograph: Radiograph, lungs: np.ndarray) -> np.ndarray:
        """DLNet's pneumonia inside ``lungs`` (a given lung mask of the radiograph's size, e.g. an annotator's) by the
        analyzer's operating point and severity rule: boolean, the radiograph's size.

        With the extent rule, ``lungs`` must hold a right and a left lung (the head's extent is per lung); with one
        lung only, the paper's rule is used for that image (there is no other per-lung share to place).
        """
        probabilities, heatmaps, read_outs = self.run_dlnet(self.dlnet_input(radiograph)[None])
        probability, heatmap = float(probabilities[0]), _resize(heatmaps[0], radiograph.shape)
        thresholds = (self.settings.classification_threshold, self.settings.heatmap_threshold)
        if read_outs is not None:
            extent_map, lung_probability = self.read_out(read_outs[0], lungs)
            probability = probability if lung_probability is None else lung_probability
            try:
                return assess_severity(probability, heatmap, lungs, *thresholds, extent_map=extent_map).pneumonia_mask
            except InsufficientLungs:
                pass
        return pneumonia_region(probability, heatmap, lungs, *thresholds)

    def read_out(self, read_out_maps: np.ndarray, lung_mask: np.ndarray) -> tuple[np.ndarray | None, float | None]:
        """What the extent head's maps ``(k, h, w)`` (:meth:`run_dlnet`) say about a radiograph with ``lung_mask``
        (its size): the extent map at that size when severity uses it, and the lung classifier's probability when
        the probability comes from it (``sigmoid(mean over the right lung of channel 1 + mean over the left lung of
        channel 2)``; ``None`` when a lung is missing: severity then refuses the image anyway). Maps are resized
        with nearest neighbour, so each cell counts by the lung area it covers, as when the head was fitted."""
        size = np.shape(lung_mask)
        extent_map = _resize(read_out_maps[0], size, mode="nearest") if self.extent_rule else None
        probability = None
        if self.lung_classifier:
            right, left = split_lungs(lung_mask)
            if right.any() and left.any():
                logit = sum(float(_resize(read_out_maps[channel], size, mode="nearest")[lung].mean())
                            for channel, lung in ((1, right), (2, left)))
                probability = float(1.0 / (1.0 + np.exp(-logit)))
        return extent_map, probability

    def lungs(self, radiograph: Radiograph) -> np.ndarray:
        """LSNet on one radiograph: the lung probability at the radiograph's size."""
        return _resize(self.run_lsnet(self.lsnet_input(radiograph)[None])[0], radiograph.shape)

    def lung_mask(self, lung_probability: np.ndarray) -> np.ndarray:
        """Lungs: probability ``>= settings.lung_threshold``, holes filled."""
        return ndimage.binary_fill_holes(lung_probability >= self.settings.lung_threshold)

    @torch.inference_mode()
    def mc_dropout(self, dl_batch: torch.Tensor, samples: int | None = None, seed: int | None = None) -> np.ndarray:
        """MC-dropout: ``(samples, B)`` pneumonia probabilities of a preprocessed DLNet batch with its dropout
        active and batch norm in eval mode (Gal & Ghahramani 2016); ``samples`` defaults to ``settings.mc_samples``.

        DLNet's dropout sits in its classification head (an ensemble's, in each member's): the backbones run once and
        the heads ``samples`` times (``classification_features`` / ``classify_features``: the same numbers as whole
        passes). ``seed``: draw the dropout masks from it (the global RNG state is restored).

        Raises:
            ValueError: the network has no active dropout layer (every sample would be the same).
        """
        samples = self.settings.mc_samples if samples is None else samples
        network = self.dlnet.network
        dropouts = _dropout_layers(network)
        if not dropouts:
            raise ValueError("DLNet has no active dropout layer: MC-dropout adds no spread")
        batch = dl_batch.to(self.device)
        # the classification heads at any depth (a DLNet's own; each member's in an ensemble)
        in_heads = {id(module) for name, head in network.named_modules()
                    if name.rsplit(".", 1)[-1] == "classification_head" for module in head.modules()}
        # a TorchScript export keeps only forward and its exported methods: whole passes there
        only_in_head = hasattr(network, "classify_features") and all(id(m) in in_heads for m in dropouts)
        features = network.classification_features(batch) if only_in_head else None
        rng_state = torch.random.get_rng_state() if seed is not None else None
        if seed is not None:
            torch.manual_seed(seed)
        try:
            for module in dropouts:
                module.train()
            logits = [network.classify_features(features) if only_in_head else network(batch)[0]
                      for _ in range(samples)]
        finally:
            for module in dropouts:
                module.eval()
            if rng_state is not None:
                torch.random.set_rng_state(rng_state)
        return np.stack([torch.sigmoid(l[:, 0].float()).cpu().numpy() for l in logits]) if logits else (
            np.zeros((0, len(dl_batch)), np.float32))

    def quality_check(self, radiographs: list[Radiograph]) -> list[QCResult | None]:
        """The QC gate's answer per radiograph (``None`` each when there is no gate)."""
        if self.qc_gate is None or not radiographs:
            return [None] * len(radiographs)
        started = time.perf_counter()
        results = self.qc_gate.check([r.pixels for r in radiographs])
        self.stage_seconds["qc"] += time.perf_counter() - started
        return results

    def qc_refusal(self, qc: QCResult | None) -> str | None:
        """The skip reason when ``settings.qc`` is ``on`` and the gate did not pass the image, else ``None``.

        Used by :meth:`analyze`, the Deploy app's inference operator and the Label app's infer task.
        """
        if qc is None or qc.passed or self.settings.qc != "on":
            return None
        return qc.refusal_reason()

    @torch.inference_mode()
    def infer_spread(
        self, dl_batch: torch.Tensor, ls_batch: torch.Tensor
    ) -> tuple[list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]], np.ndarray]:
        """The extra passes of ``settings.uncertainty``: mirrored passes ``[(probs, heatmaps, lungs, read_outs)]``
        (outputs mirrored back, same shapes as :meth:`infer`) and MC-dropout probabilities ``(mc_samples, B)``."""
        passes: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]] = []
        mc = np.zeros((0, len(dl_batch)), np.float32)
        if self.settings.uncertainty == "off":
            return passes, mc
        started = time.perf_counter()
        probs, heatmaps, lungs, read_outs = self.infer(dl_batch.flip(-1), ls_batch.flip(-1))
        passes.append((probs, heatmaps[..., ::-1].copy(), lungs[..., ::-1].copy(),
                       None if read_outs is None else read_outs[..., ::-1].copy()))
        if self.settings.uncertainty == "flip+mc" and self.settings.mc_samples > 0:
            if self.lung_classifier:
                logger.warning("MC-dropout adds no spread to the lung classifier (no dropout): only the mirrored pass")
            else:
                try:
                    mc = self.mc_dropout(dl_batch)
                except ValueError as exc:  # every pass would give the plain probability
                    logger.warning("%s", exc)
                    mc = np.repeat(self.run_dlnet(dl_batch)[0][None], self.settings.mc_samples, axis=0)
        self.stage_seconds["uncertainty"] += time.perf_counter() - started
        return passes, mc

    def _severity(self, size: tuple[int, int], probability: float, heatmap: np.ndarray, lung_probability: np.ndarray,
                  read_out: np.ndarray | None = None):
        heatmap_full = _resize(heatmap, size)
        lung_full = _resize(lung_probability, size)
        lung_mask = self.lung_mask(lung_full)
        extent_map = None
        if read_out is not None:
            extent_map, lung_classifier_probability = self.read_out(read_out, lung_mask)
            if lung_classifier_probability is not None:
                probability = lung_classifier_probability
        severity = assess_severity(
            probability,
            heatmap_full,
            lung_mask,
            classification_threshold=self.settings.classification_threshold,
            heatmap_threshold=self.settings.heatmap_threshold,
            extent_map=extent_map,
        )
        return severity, heatmap_full, lung_full

    def postprocess(
        self,
        radiograph: Radiograph,
        probability: float,
        heatmap: np.ndarray,
        lung_probability: np.ndarray,
        passes: list[tuple[float, np.ndarray, np.ndarray, np.ndarray | None]] | None = None,
        mc_probabilities: np.ndarray | None = None,
        read_out: np.ndarray | None = None,
    ) -> ImageAnalysis:
        """Resize the network outputs to the radiograph and assess severity; a failure becomes a skip.

        ``passes`` (extra ``(probability, heatmap, lung probability, read-out maps)`` of one image) and
        ``mc_probabilities`` give the uncertainty columns (see the module docstring); without them the result has no
        uncertainty. ``read_out``: the image's read-out maps (:meth:`run_dlnet`) when severity or the probability uses
        the extent head (the reported probability is then the lung classifier's, see :meth:`read_out`).
        """
        size = radiograph.shape
        try:
            severity, heatmap_full, lung_full = self._severity(size, probability, heatmap, lung_probability, read_out)
        except (InsufficientLungs, ValueError) as exc:
            return ImageAnalysis(radiograph.source, "skipped", str(exc), radiograph=radiograph)
        uncertainty = None
        if passes or (mc_probabilities is not None and len(mc_probabilities)):
            others = []
            for p, h, lung, r in passes or []:
                try:
                    others.append(self._severity(size, float(p), h, lung, r)[0])
                except (InsufficientLungs, ValueError):  # a pass that finds no lungs adds no ratio, only its p
                    logger.debug("an uncertainty pass found no lungs in %s", radiograph.source)
                    others.append(float(p))
            uncertainty = summarize_spread(
                severity, others, list(mc_probabilities if mc_probabilities is not None else []),
                self.settings.classification_threshold, self.settings.interval_z,
            )
        return ImageAnalysis(
            radiograph.source,
            "ok",
            radiograph=radiograph,
            severity=severity,
            heatmap=heatmap_full,
            lung_probability=lung_full,
            uncertainty=uncertainty,
            ood=ood_flags(radiograph, severity),
        )

    def _analyze_inputs(
        self, radiographs: list[Radiograph], dl_batch: torch.Tensor, ls_batch: torch.Tensor
    ) -> list[ImageAnalysis]:
        """Networks, uncertainty passes and severity for preprocessed radiographs (one forward pass for all)."""
        probs, heatmaps, lungs, read_outs = self.infer(dl_batch, ls_batch)
        passes, mc = self.infer_spread(dl_batch, ls_batch)
        analyses = []
        for j, radiograph in enumerate(radiographs):
            started = time.perf_counter()
            analyses.append(self.postprocess(
                radiograph, float(probs[j]), heatmaps[j], lungs[j],
                passes=[(float(p[j]), h[j], lung[j], None if r is None else r[j]) for p, h, lung, r in passes],
                mc_probabilities=mc[:, j], read_out=None if read_outs is None else read_outs[j],
            ))
            self.stage_seconds["severity"] += time.perf_counter() - started
        return analyses

    def analyze_one(self, radiograph: Radiograph) -> ImageAnalysis:
        """One radiograph as :meth:`analyze` treats each image of a batch: preprocess, networks, the spread of
        ``settings.uncertainty``, severity (a failure is a skipped result). No QC gate: the caller applies
        :meth:`quality_check` / :meth:`qc_refusal` where it wants one."""
        started = time.perf_counter()
        dl_input, ls_input = self.preprocess(radiograph)
        self.stage_seconds["preprocess"] += time.perf_counter() - started
        return self._analyze_inputs([radiograph], dl_input[None], ls_input[None])[0]

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
            batch = list(pending)
            pending.clear()
            checks = self.quality_check([radiograph for radiograph, _, _ in batch])
            refusals = [self.qc_refusal(qc) for qc in checks]
            kept = [i for i, reason in enumerate(refusals) if reason is None]
            outputs: dict[int, ImageAnalysis] = {}
            if kept:
                analyses = self._analyze_inputs(
                    [batch[i][0] for i in kept],
                    torch.stack([batch[i][1] for i in kept]),
                    torch.stack([batch[i][2] for i in kept]),
                )
                outputs = dict(zip(kept, analyses))
            for i, (radiograph, _, _) in enumerate(batch):
                result = outputs.get(i) or ImageAnalysis(radiograph.source, "skipped", refusals[i], radiograph=radiograph)
                result.qc = checks[i]
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


def summarize_spread(
    severity: SeverityResult,
    others: list[SeverityResult | float],
    mc_probabilities: list[float],
    classification_threshold: float,
    z: float = 1.96,
) -> dict[str, Any]:
    """The uncertainty columns from the reported ``severity`` and the extra passes.

    ``others``: the severity of each mirrored pass (or only its probability when it found no lungs);
    ``mc_probabilities``: MC-dropout probabilities. SDs are sample SDs (ddof 1) over the reported pass and the
    others; intervals are centred on the reported value.
    """
    severities = [severity] + [o for o in others if isinstance(o, SeverityResult)]
    probabilities = [severity.probability] + [o.probability if isinstance(o, SeverityResult) else o for o in others]
    probabilities += [float(p) for p in mc_probabilities]

    def sd(values: list[float]) -> float:
        return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0

    p_sd = sd(probabilities)
    low, high = max(0.0, severity.probability - z * p_sd), min(1.0, severity.probability + z * p_sd)
    ratio_sd = {side: sd([getattr(s, f"ratio_{side}") for s in severities]) for side in ("total", "right", "left")}
    # the score range: the scores of every pass, and those of the reported ratios +- z SD (when positive)
    scores = [s.score_total for s in severities]
    if severity.positive:
        for sign in (-1.0, 1.0):
            scores.append(sum(
                lung_score(float(np.clip(getattr(severity, f"ratio_{side}") + sign * z * ratio_sd[side], 0.0, 100.0)))
                for side in ("right", "left")
            ))
    if high >= classification_threshold > low:
        scores.append(0)  # the image could be negative: score 0 is in the range
    return {
        "pneumonia_probability_sd": round(p_sd, 6),
        "pneumonia_probability_low": round(low, 6),
        "pneumonia_probability_high": round(high, 6),
        "uncertain": int(high >= classification_threshold > low),
        "ratio_total_sd": round(ratio_sd["total"], 2),
        "ratio_right_sd": round(ratio_sd["right"], 2),
        "ratio_left_sd": round(ratio_sd["left"], 2),
        "score_total_low": int(min(scores)),
        "score_total_high": int(max(scores)),
        "interval_z": z,  # not a results.csv column: the SR writer's ratio intervals
    }


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


def _read_out_channels(network: Any) -> int:
    """Channels of a DLNet's extent head (0 without one: 1 extent, 3 with the lung classifier): the
    ``read_out_channels`` int of DLNet and DLNetEnsemble, which their TorchScript exports keep (not ``config``)."""
    return int(getattr(network, "read_out_channels", 0))


def _resize(array: np.ndarray, size: tuple[int, int], mode: str = "bilinear") -> np.ndarray:
    """Resize of a ``(h, w)`` float map to ``size`` (``bilinear`` or ``nearest``)."""
    if tuple(array.shape) == tuple(size):
        return array.astype(np.float32)
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None, None]
    corners = {"align_corners": False} if mode == "bilinear" else {}
    return F.interpolate(tensor, size=tuple(size), mode=mode, **corners)[0, 0].numpy()


#: overlays are drawn at most this many pixels on their longer side: drawing costs ~40 bytes per pixel, and a reader
#: sees no more on a screen; the masks and the heatmap keep the radiograph's full size
OVERLAY_MAX_SIDE = 2048


def _overlay_layers(pixels: np.ndarray, *masks: np.ndarray) -> tuple[np.ndarray, ...]:
    """The radiograph (area-averaged) and masks (nearest) at most :data:`OVERLAY_MAX_SIDE` px on the longer side."""
    height, width = pixels.shape
    scale = OVERLAY_MAX_SIDE / max(height, width)
    if scale >= 1.0:
        return (pixels, *masks)
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    small = F.interpolate(torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))[None, None], size=size,
                          mode="area")[0, 0].numpy()
    rows = np.minimum((np.arange(size[0]) + 0.5) * height / size[0], height - 1).astype(np.intp)
    columns = np.minimum((np.arange(size[1]) + 0.5) * width / size[1], width - 1).astype(np.intp)
    return (small, *(np.asarray(mask)[np.ix_(rows, columns)] for mask in masks))


#: the folders of OUT that hold the per-image PNGs
IMAGE_OUTPUT_FOLDERS = ("masks", "overlays")


def remove_stale_temporaries(out_dir: Path) -> list[Path]:
    """Remove the temporary files an interrupted run left in OUT, ``masks/`` and ``overlays/``; returns them."""
    return _remove_stale(out_dir, *(out_dir / name for name in IMAGE_OUTPUT_FOLDERS))


def _save_png(array: np.ndarray, path: Path) -> None:
    # zlib level 1: ~5x faster than the default 6 on 1-4 MP images, masks stay small (they are mostly flat)
    write_png(path, array, compress_level=1)


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
    from pneumonitor.inference.overlays import render_overlay

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
    if result.uncertainty:
        spread = result.uncertainty
        caption += (  # a second line: one line does not fit a 1024 px image
            f"\nrange: p {spread['pneumonia_probability_low']:.2f}-{spread['pneumonia_probability_high']:.2f}, score "
            f"{spread['score_total_low']}-{spread['score_total_high']}, ratio SD {spread['ratio_total_sd']:.1f}"
            + ("  UNCERTAIN" if spread["uncertain"] else "")
        )
    if result.qc is not None and not result.qc.passed:
        caption += f"\nimage QC: {result.qc.finding}"
    _save_png(lung_label_image(sev.right_lung, sev.left_lung), out_dir / paths["lung_mask"])
    _save_png(sev.pneumonia_mask.astype(np.uint8) * 255, out_dir / paths["pneumonia_mask"])
    _save_png(unit_to_uint8(result.heatmap), out_dir / paths["heatmap"])
    overlay = render_overlay(
        *_overlay_layers(result.radiograph.pixels, sev.right_lung, sev.left_lung, sev.pneumonia_mask), caption
    )
    _save_png(overlay, out_dir / paths["overlay"])
    return {key: value.as_posix() for key, value in paths.items()}


def result_row(result: ImageAnalysis, files: dict[str, str] | None = None) -> dict[str, Any]:
    """One results.csv row (every column of :mod:`pneumonitor.results`; empty strings where not applicable)."""
    row = empty_row()
    row.update(image=str(Path(result.source).absolute()), status=result.status, reason=result.reason)
    if result.radiograph is not None:
        meta = result.radiograph.meta
        row.update({key: meta.get(key, "") or "" for key in IDENTITY_COLUMNS})
        row.update(rows=result.radiograph.shape[0], columns=result.radiograph.shape[1])
        row.update(warnings="; ".join(meta.get("warnings") or []))
    if result.qc is not None:
        row.update(qc=result.qc.describe() or "pass")
    if result.severity is not None:
        row.update(result.severity.as_row())
        row.update(files or {})
        row.update(result.uncertainty or {})
        row.update(ood="; ".join(result.ood))
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
    (PNG encoding releases the GIL). Does not write results.csv/json (see :func:`pneumonitor.results.write_results`).
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
