"""DICOMweb datastore (Orthanc) for single-frame DX/CR radiographs.

MONAI Label's own DICOMweb datastore is built for CT volumes: it lists ``Modality=CT`` series, converts each to NIfTI
(losing the VOI LUT and MONOCHROME1 polarity of radiographs) and writes labels as DICOM SEG through dcmqi's
``itkimage2segimage``, a binary it downloads at start-up (impossible offline, and dcmqi has no Debian package).
This one:

- lists the series of every modality in ``modalities`` (default ``DX`` and ``CR``), one QIDO query each;
- keeps each downloaded series as its DICOM file (read with :func:`pneumonitor.reading.read_radiograph`);
- validates a saved label (:mod:`lib.datastore`), keeps it locally as PNG and, for the ``final`` tag, stores a
  DICOM SEG made with highdicom (segments: right lung, left lung, pneumonia) in the DICOMweb server (STOW-RS), so
  that the PACS and OHIF see the annotation; a label saved elsewhere is read back from its SEG for training.
"""

from __future__ import annotations

import copy
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from fastapi import HTTPException
from monailabel.datastore.dicom import DICOMwebClientX, DICOMWebDatastore
from monailabel.datastore.local import DataModel, ImageLabelModel
from monailabel.datastore.utils.dicom import dicom_web_download_series
from monailabel.interfaces.datastore import DefaultLabelTag
from pydicom.dataset import Dataset

from lib.datastore import ValidatedLabelsMixin, checked_name, write_png_atomically
from lib.infers.radiograph import resolve_radiograph_path
from lib.labels import LABELS

logger = logging.getLogger(__name__)

#: SNOMED CT codes of the segments (category, type)
SEGMENT_CODES = {
    "right lung": (("123037004", "Anatomical Structure"), ("3341006", "Right lung")),
    "left lung": (("123037004", "Anatomical Structure"), ("44029006", "Left lung")),
    "pneumonia": (("49755003", "Morphologically Altered Structure"), ("233604007", "Pneumonia")),
}


#: attributes highdicom reads from the source image; added empty to a copy of it when missing
TYPE2_SOURCE_ATTRIBUTES = (
    "PatientID", "PatientName", "PatientBirthDate", "PatientSex", "StudyID", "AccessionNumber", "StudyDate",
    "StudyTime", "ReferringPhysicianName",
)


def make_dicomweb_datastore(url: str, modalities: list[str]) -> RadiographDICOMwebDatastore:
    """The datastore for a DICOMweb root URL (e.g. Orthanc's ``http://127.0.0.1:8042/dicom-web``)."""
    from monailabel.config import settings
    from dicomweb_client.session_utils import create_session_from_user_pass

    session = None
    if settings.MONAI_LABEL_DICOMWEB_USERNAME and settings.MONAI_LABEL_DICOMWEB_PASSWORD:
        session = create_session_from_user_pass(
            settings.MONAI_LABEL_DICOMWEB_USERNAME, settings.MONAI_LABEL_DICOMWEB_PASSWORD
        )
    client = DICOMwebClientX(
        url=url,
        session=session,
        qido_url_prefix=settings.MONAI_LABEL_QIDO_PREFIX,
        wado_url_prefix=settings.MONAI_LABEL_WADO_PREFIX,
        stow_url_prefix=settings.MONAI_LABEL_STOW_PREFIX,
    )
    cache = (settings.MONAI_LABEL_DICOMWEB_CACHE_PATH or "").strip() or None
    return RadiographDICOMwebDatastore(client, modalities, cache_path=cache)


def label_to_seg(label: np.ndarray, source: Dataset) -> Dataset:
    """A DICOM SEG (highdicom, binary segments) of a ``(rows, columns)`` label map over one DX/CR instance."""
    import highdicom as hd

    descriptions = []
    for name, number in LABELS.items():
        (cat_value, cat_meaning), (type_value, type_meaning) = SEGMENT_CODES[name]
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=name,
                segmented_property_category=hd.sr.CodedConcept(cat_value, "SCT", cat_meaning),
                segmented_property_type=hd.sr.CodedConcept(type_value, "SCT", type_meaning),
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
            )
        )
    # Patient and General Study attributes are type 2 (present, maybe empty); some radiographs omit them, and
    # highdicom copies them into the SEG
    source = copy.deepcopy(source)
    for keyword in TYPE2_SOURCE_ATTRIBUTES:
        if keyword not in source:
            setattr(source, keyword, "")
    seg = hd.seg.Segmentation(
        source_images=[source],
        pixel_array=label[None].astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=300,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="pneumonitor",
        manufacturer_model_name="pneumonitor MONAI Label app",
        software_versions="1.0",
        device_serial_number="0",
        series_description="pneumonitor annotation",
    )
    # General Image's PatientOrientation is required (type 2C) when the image has no plane orientation, as a SEG of
    # a projection radiograph has none; highdicom does not copy it (dciodvfy: "Missing attribute Type 2C")
    if "PlaneOrientationSequence" not in seg.SharedFunctionalGroupsSequence[0]:
        seg.PatientOrientation = source.get("PatientOrientation", "")
    # an Age String that breaks its VR (NIH ChestX-ray14 writes "81", not "081Y") is left out rather than copied
    if "PatientAge" in seg and not re.fullmatch(r"\d{3}[DWMY]", str(seg.PatientAge)):
        del seg.PatientAge
    return seg


def seg_to_label(seg_file: str | os.PathLike, source_sop_instance_uid: str) -> np.ndarray:
    """The ``uint8 (rows, columns)`` label map of the frames of a binary SEG that refer to one source instance.

    Read with pydicom (frame by frame: segment number from ``SegmentIdentificationSequence``): highdicom's
    parser insists on a slice thickness, which projection radiographs do not have.
    """
    seg = pydicom.dcmread(str(seg_file))
    frames = seg.pixel_array
    frames = frames[None] if frames.ndim == 2 else frames
    label = np.zeros(frames.shape[1:], dtype=np.uint8)
    for frame, item in zip(frames, seg.PerFrameFunctionalGroupsSequence):
        derivation = item.get("DerivationImageSequence")
        if derivation:
            sources = {str(s.ReferencedSOPInstanceUID) for d in derivation for s in d.SourceImageSequence}
            if source_sop_instance_uid not in sources:
                continue
        number = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        label[frame > 0] = number
    return label


class RadiographDICOMwebDatastore(ValidatedLabelsMixin, DICOMWebDatastore):
    """DX/CR series of a DICOMweb server, cached under MONAI Label's DICOMweb cache folder."""

    def __init__(self, client: DICOMwebClientX, modalities: list[str], cache_path: str | None = None) -> None:
        self.modalities = list(modalities) or ["DX", "CR"]
        super().__init__(
            client=client,
            search_filter={"Modality": self.modalities[0]},
            cache_path=cache_path,
            fetch_by_frame=False,
            convert_to_nifti=False,
        )

    # -- listing ---------------------------------------------------------------------------------------------
    def _search(self, **filters: Any) -> list[Dataset]:
        return [Dataset.from_json(d) for d in self._client.search_for_series(search_filters=filters)]

    def list_images(self) -> list[str]:
        series = []
        for modality in self.modalities:
            series += [str(d.SeriesInstanceUID) for d in self._search(Modality=modality)]
        return sorted(set(series))

    def _remote_labels(self) -> dict[str, str]:
        """image series -> SEG series, from the SEG series' ReferencedSeriesSequence."""
        found = {}
        for seg in self._search(Modality="SEG"):
            meta = self._client.retrieve_series_metadata(str(seg.StudyInstanceUID), str(seg.SeriesInstanceUID))
            first = Dataset.from_json(meta[0])
            if first.get("ReferencedSeriesSequence"):
                found[str(first.ReferencedSeriesSequence[0].SeriesInstanceUID)] = str(seg.SeriesInstanceUID)
        return found

    def get_labeled_images(self, label_tag: str | None = None, labels: list[str] | None = None) -> list[str]:
        images = set(self.list_images())
        local = {i for i, obj in self._datastore.objects.items() if DefaultLabelTag.FINAL in obj.labels}
        return sorted((local | set(self._remote_labels())) & images)

    def get_unlabeled_images(self, label_tag: str | None = None, labels: list[str] | None = None) -> list[str]:
        return sorted(set(self.list_images()) - set(self.get_labeled_images()))

    # -- images ----------------------------------------------------------------------------------------------
    def get_image_uri(self, image_id: str) -> str:
        image_dir = Path(self._datastore.image_path()) / checked_name("image id", image_id)  # a name, not a path
        if not image_dir.is_dir() or not any(image_dir.iterdir()):
            dicom_web_download_series(None, image_id, str(image_dir), self._client, self._fetch_by_frame)
            if not image_dir.is_dir() or not any(image_dir.iterdir()):
                shutil.rmtree(image_dir, ignore_errors=True)
                raise HTTPException(status_code=404, detail=f"series {image_id} is not on the DICOMweb server")
        if image_id not in self._datastore.objects:
            self._datastore.objects[image_id] = ImageLabelModel(image=DataModel(ext="", info=self._dicom_info(image_id)))
            self._update_datastore_file()
        return str(image_dir)

    def get_image_info(self, image_id: str) -> dict[str, Any]:
        obj = self._datastore.objects.get(image_id)
        return dict(obj.image.info) if obj else self._dicom_info(image_id)

    def update_image_info(self, image_id: str, info: dict[str, Any]) -> None:
        self.get_image_uri(image_id)
        super().update_image_info(image_id, info)

    # -- labels ----------------------------------------------------------------------------------------------
    def _save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any]) -> str:
        image_dir = self.get_image_uri(image_id)
        label_id = super()._save_label(image_id, label_filename, label_tag, label_info)
        if label_tag == DefaultLabelTag.FINAL:
            label = np.asarray(_read_png(self._label_png(image_id, label_tag)))
            source = pydicom.dcmread(resolve_radiograph_path(image_dir))
            seg = label_to_seg(label, source)
            self._client.store_instances([seg])
            self.update_label_info(image_id, label_tag, {"SeriesInstanceUID": str(seg.SeriesInstanceUID),
                                                         "StudyInstanceUID": str(seg.StudyInstanceUID)})
            logger.info("stored SEG %s for series %s", seg.SeriesInstanceUID, image_id)
        return label_id

    def _label_png(self, image_id: str, tag: str) -> Path:
        return Path(self._datastore.label_path(tag)) / self._filename(image_id, ".png")

    def get_label_uri(self, label_id: str, label_tag: str, image_id: str = "") -> str:
        image_id = image_id or label_id
        path = self._label_png(image_id, label_tag)
        if not path.is_file() and label_tag == DefaultLabelTag.FINAL:
            self._fetch_remote_label(image_id)
        return str(path) if path.is_file() else ""

    def _fetch_remote_label(self, image_id: str) -> None:
        seg_series = self._remote_labels().get(image_id)
        if not seg_series:
            return
        source = pydicom.dcmread(resolve_radiograph_path(self.get_image_uri(image_id)), stop_before_pixels=True)
        with tempfile.TemporaryDirectory() as tmp:
            dicom_web_download_series(None, seg_series, tmp, self._client, False)
            files = sorted(Path(tmp).iterdir())
            label = seg_to_label(files[-1], str(source.SOPInstanceUID))
        write_png_atomically(label, self._label_png(image_id, DefaultLabelTag.FINAL))
        obj = self._datastore.objects[image_id]
        obj.labels[DefaultLabelTag.FINAL] = DataModel(ext=".png", info={"SeriesInstanceUID": seg_series})
        self._update_datastore_file()

    def datalist(self, full_path: bool = True) -> list[dict[str, Any]]:
        items = []
        for image_id in self.get_labeled_images():
            image = self.get_image_uri(image_id)
            label = self.get_label_uri(image_id, DefaultLabelTag.FINAL, image_id)
            if label:
                # the instance file, not the series folder: bundles read single files
                items.append({"image": str(resolve_radiograph_path(image)), "label": label})
        return items


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image, dtype=np.uint8)
