"""A training pack: a DLNet bundle's loading stage run once, stored compactly, read back by :class:`LoadPackedd`.

Why: the loading stage (decoding radiographs of up to 3,000 px, building the localization targets at image
resolution, pooling them onto the map grid) costs more than the rest of a training step on a CPU, and the raw
datasets (several GB) cannot travel to a machine that only receives a small working tree (the GPU machine takes
64 MiB). A pack of the mix's training and validation splits at 448 px is 47 MB (WebP quality 90).

What is stored, per item of the chosen splits:
- the image after ``LoadRadiographd``, resized to the training ``image_size`` when it is larger (by
  ``ResizeRadiograph``, the stage's own resize) and kept at its own size when it is not (the 224-px RSNA normals:
  :class:`LoadPackedd` enlarges them with the same ``ResizeRadiograph``, so the chain is the stage's own), as 8-bit
  WebP (``quality`` 1-100 lossy, ``None`` lossless): the quantization to 8 bits and the codec are the only
  differences from the stage's output;
- ``target``, ``region``, ``lung`` on the map grid (``image_size // 8``) as 8-bit area fractions (steps of 1/255),
  ``has_target``, ``has_lung``, ``extent``, ``label``;
- the datalist item itself (source, patient, label, ...), so that the bundle's sampler weights work unchanged.

A pack built at 448 px also serves training at 224 px: area fractions average-pool onto a grid an integer factor
coarser (:class:`LoadPackedd` pools ``target``/``lung`` and recomputes ``region`` as target >= 0.5, the rule of
:class:`pneumonitor.transforms.LocalizationTarget`); measured against the 224-px stage on 47 items: cells differ
by up to 0.07 where an original's size is not a multiple of the grid, and the images by up to 0.14 at edges.

Files: ``pack.json`` (settings, splits with their items, left-out items and why) and ``pack.npz`` (the arrays).
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pneumonitor.publishing import unit_to_uint8
from pneumonitor.transforms.targets import LOCALIZATION_SOURCE_KEYS

LOGGER = logging.getLogger(__name__)
PACK_JSON, PACK_ARRAYS = "pack.json", "pack.npz"
MAP_KEYS = ("target", "region", "lung")
SCALAR_KEYS = ("has_target", "has_lung", "extent", "label")


def _loading_stage(config_file: Path | str, dataset_dir: Path | str) -> tuple[list, tuple[int, int]]:
    """The bundle's ``load`` transforms without their final resize, and the training image size."""
    from monai.bundle import ConfigParser

    from pneumonitor.transforms import ResizeRadiographd

    parser = ConfigParser()
    parser.read_config(str(config_file))
    parser["dataset_dir"] = str(dataset_dir)
    size = tuple(int(s) for s in parser.get_parsed_content("image_size"))
    stage = [t for t in parser.get_parsed_content("load") if not isinstance(t, ResizeRadiographd)]
    return stage, size


def _encode(image: np.ndarray, quality: int | None) -> bytes:
    from PIL import Image

    pixels = unit_to_uint8(image)
    buffer = io.BytesIO()
    if quality is None:
        Image.fromarray(pixels).save(buffer, "WEBP", lossless=True)
    else:
        Image.fromarray(pixels).save(buffer, "WEBP", quality=int(quality))
    return buffer.getvalue()


def _decode(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("L"), dtype=np.float32) / 255.0


def write_training_pack(
    datalist: Path | str,
    out: Path | str,
    config_file: Path | str,
    splits: Sequence[str] = ("training", "validation"),
    quality: int | None = 90,
    progress: bool = True,
) -> dict[str, Any]:
    """Run ``config_file``'s loading stage over ``splits`` of ``datalist`` and write the pack into ``out``.

    Items whose image or masks cannot be read are left out with the reason (``pack.json`` ``left_out``); nothing is
    written when no item is usable. Returns the summary that ``pack.json`` holds (without the items).
    """
    from tqdm import tqdm

    from pneumonitor.transforms import ResizeRadiograph

    datalist, out = Path(datalist), Path(out)
    entries = json.loads(datalist.read_text())
    stage, image_size = _loading_stage(config_file, datalist.parent)
    resize = ResizeRadiograph(image_size)
    blobs: list[bytes] = []
    maps: list[np.ndarray] = []
    scalars: list[list[float]] = []
    packed: dict[str, list[dict]] = {}
    left_out: list[dict] = []
    work = [(split, item) for split in splits for item in entries.get(split, [])]
    if not work:
        raise ValueError(f"{datalist} has no items in {', '.join(splits)}")
    for split, item in tqdm(work, desc="packing", unit="image", disable=not progress):
        try:
            d = dict(item)
            for transform in stage:
                d = transform(d)
            image = d["image"]
            if all(s >= t for s, t in zip(image.shape[-2:], image_size)):
                image = resize(image)
            blob = _encode(np.asarray(image[0], dtype=np.float32), quality)
        except Exception as error:  # noqa: BLE001 - any unreadable input is left out with its reason, not fatal
            left_out.append({"split": split, "image": item.get("image", ""), "reason": f"{type(error).__name__}: {error}"})
            LOGGER.warning("left out %s: %s", item.get("image", ""), error)
            continue
        maps.append(np.stack([np.asarray(d[k], dtype=np.float32).reshape(d[k].shape[-2:]) for k in MAP_KEYS]))
        scalars.append([float(np.asarray(d[k]).reshape(-1)[0]) for k in SCALAR_KEYS])
        packed.setdefault(split, []).append({**item, "pack_index": len(blobs)})
        blobs.append(blob)
    if not blobs:
        raise ValueError(f"no item of {datalist} could be packed ({len(left_out)} left out)")
    out.mkdir(parents=True, exist_ok=True)
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
    np.savez_compressed(
        out / PACK_ARRAYS,
        image_bytes=np.frombuffer(b"".join(blobs), dtype=np.uint8),
        image_offsets=offsets,
        maps=unit_to_uint8(np.stack(maps)),
        scalars=np.asarray(scalars, dtype=np.float32),
    )
    summary = {
        "datalist": str(datalist.resolve()),
        "config_file": str(Path(config_file).resolve()),
        "image_size": list(image_size),
        "map_size": list(maps[0].shape[-2:]),
        "quality": quality,
        "counts": {split: len(items) for split, items in packed.items()},
        "left_out": left_out,
        "megabytes": round(((out / PACK_ARRAYS).stat().st_size) / 1e6, 1),
    }
    (out / PACK_JSON).write_text(json.dumps({**summary, "splits": packed}, indent=1))
    return summary


def pack_datalist(pack: Path | str, split: str) -> list[dict]:
    """The datalist items of ``split`` in a pack (each with its ``pack_index``)."""
    info = json.loads((Path(pack) / PACK_JSON).read_text())
    if split not in info["splits"]:
        raise ValueError(f"pack {pack} holds no {split!r} split (it has {', '.join(info['splits'])})")
    return info["splits"][split]


class LoadPackedd:
    """Item with ``pack_index`` -> what the bundle's loading stage returns: ``image`` ``(1, *image_size)`` in
    [0, 1], ``target``/``region``/``lung`` ``(1, *map_size)``, ``has_target``, ``has_lung``, ``extent``, ``label``.

    ``map_size`` must equal the pack's or divide it by an integer (area fractions average-pool); the
    arrays are read on first use, once per process (DataLoader workers included).
    """

    def __init__(self, pack: Path | str, image_size: Sequence[int] | int, map_size: Sequence[int] | int) -> None:
        from pneumonitor.transforms import ResizeRadiograph

        self.pack = Path(pack)
        info = json.loads((self.pack / PACK_JSON).read_text())
        self.map_size = tuple(int(s) for s in (map_size if isinstance(map_size, Sequence) else (map_size,) * 2))
        stored = tuple(int(s) for s in info["map_size"])
        factors = [s / m for s, m in zip(stored, self.map_size)]
        if any(f < 1 or f != int(f) for f in factors) or factors[0] != factors[1]:
            raise ValueError(f"map size {self.map_size} does not divide the pack's {stored} by an integer: "
                             "pack the data again for this image size")
        self.factor = int(factors[0])
        self.resize = ResizeRadiograph(image_size)
        self._arrays: dict[str, np.ndarray] | None = None

    def _load_arrays(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            with np.load(self.pack / PACK_ARRAYS) as arrays:
                self._arrays = {key: arrays[key] for key in arrays.files}
        return self._arrays

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        arrays = self._load_arrays()
        index = int(data["pack_index"])
        start, stop = arrays["image_offsets"][index:index + 2]
        image = torch.from_numpy(_decode(arrays["image_bytes"][start:stop].tobytes())[None])
        d = {k: v for k, v in data.items() if k not in LOCALIZATION_SOURCE_KEYS}  # as LocalizationTargetd does
        d["image"] = self.resize(image)
        maps = torch.from_numpy(arrays["maps"][index].astype(np.float32) / 255.0)
        if self.factor > 1:
            maps = torch.nn.functional.avg_pool2d(maps[None], self.factor)[0]
        stored = {key: maps[i:i + 1] for i, key in enumerate(MAP_KEYS)}
        d["target"], d["lung"] = stored["target"], stored["lung"]
        d["region"] = (d["target"] >= 0.5).float() if self.factor > 1 else stored["region"]
        for key, value in zip(SCALAR_KEYS, arrays["scalars"][index]):
            d[key] = torch.tensor(float(value)) if key != "label" else int(value)
        return d
