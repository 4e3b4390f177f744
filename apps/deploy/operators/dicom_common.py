"""What the SEG, SR and Secondary Capture writers share: the source header made fit to derive from, codes, and
the device identity written into every object.

Codes (SNOMED CT unless stated): right lung 3341006, left lung 44029006, lung 39607008, pneumonia 233604007,
anatomical structure 91723000, morphologically abnormal structure 49755003, plain chest X-ray 399208008.
The measurements without a standard concept (pneumonia ratio, the 0-4/0-8 severity score) use the private coding
scheme ``99PNEUMONITOR`` (PS3.16 8.2: a "99" prefix marks a private scheme).
"""

from __future__ import annotations

import copy
import logging
import re
from typing import Any

from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from pneumonitor import __version__

logger = logging.getLogger(__name__)

__all__ = [
    "MANUFACTURER",
    "MODEL_NAME",
    "SOFTWARE_VERSION",
    "NOT_FOR_CLINICAL_USE",
    "SERIES_NUMBERS",
    "RIGHT_LUNG",
    "LEFT_LUNG",
    "LUNG",
    "PNEUMONIA",
    "CHEST_RADIOGRAPH",
    "PNEUMONIA_RATIO",
    "SEVERITY_SCORE",
    "PRIVATE_SCHEME",
    "derivation_source",
    "algorithm_identification",
    "new_instance",
    "uid_problem",
]

MANUFACTURER = "pneumonitor"
MODEL_NAME = "pneumonitor CXR pneumonia severity (MONAI Deploy)"
SOFTWARE_VERSION = __version__
NOT_FOR_CLINICAL_USE = "NOT FOR CLINICAL USE"
#: series numbers of the derived objects (high, so that they sort after the acquired series)
SERIES_NUMBERS = {"seg": 9901, "sr": 9902, "sc": 9903}

PRIVATE_SCHEME = "99PNEUMONITOR"
RIGHT_LUNG = Code("3341006", "SCT", "Right lung")
LEFT_LUNG = Code("44029006", "SCT", "Left lung")
LUNG = codes.SCT.Lung
PNEUMONIA = Code("233604007", "SCT", "Pneumonia")
ANATOMICAL_STRUCTURE = codes.SCT.AnatomicalStructure
ABNORMAL_STRUCTURE = codes.SCT.MorphologicallyAbnormalStructure
CHEST_RADIOGRAPH = Code("399208008", "SCT", "Plain chest X-ray")
PNEUMONIA_PROBABILITY = codes.DCM.Probability
PNEUMONIA_RATIO = Code("PR", PRIVATE_SCHEME, "Pneumonia ratio")
SEVERITY_SCORE = Code("SS", PRIVATE_SCHEME, "Pneumonia severity score")
PERCENT = Code("%", "UCUM", "percent")
SCORE_UNIT = Code("{score}", "UCUM", "score")
PROBABILITY_UNIT = Code("{probability}", "UCUM", "probability")

#: Type 2 patient/study attributes every derived object must carry (empty when the source lacks them)
_TYPE2_ATTRIBUTES = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)
_AGE = re.compile(r"^\d{3}[DWMY]$")
#: PS3.5 9.1 UI syntax, leniently: digit components separated by dots (leading zeros, common in old archives, pass)
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
UID_MAX_LENGTH = 64


def uid_problem(keyword: str, value: Any) -> str | None:
    """Why ``value`` is not a usable DICOM UID (``None`` when it is one).

    UIDs name output folders and are copied into the derived objects, so anything else (``..``, a path, a newline)
    must be refused before it reaches a path or an object.
    """
    text = str(value or "")
    if not text:
        return f"{keyword} is missing"
    if len(text) > UID_MAX_LENGTH or not _UID.match(text):
        shown = text if len(text) <= 80 else text[:77] + "..."
        return f"{keyword} {shown!r} is not a valid DICOM UID (digits and dots, at most {UID_MAX_LENGTH} characters)"
    return None


def derivation_source(dataset: Dataset) -> Dataset:
    """A copy of a source header that highdicom can derive SEG/SR/SC objects from, without its pixel data.

    Missing Type 2 patient/study attributes are added empty (highdicom copies them and fails on absent ones) and a
    Patient's Age that is not a valid AS value (``nnnD/W/M/Y``; e.g. a bare ``62``) is repaired (``062Y``) or
    dropped, so that the derived objects do not inherit an invalid value. The source file is not changed.
    """
    source = copy.deepcopy(dataset)
    for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
        if keyword in source:
            delattr(source, keyword)
    for keyword in _TYPE2_ATTRIBUTES:
        if keyword not in source:
            setattr(source, keyword, None)
    age = str(source.get("PatientAge", "") or "").strip().upper()
    if age and not _AGE.match(age):
        if age.isdigit() and len(age) <= 3:
            source.PatientAge = f"{int(age):03d}Y"
        else:
            logger.info("dropped invalid Patient's Age %r", age)
            del source.PatientAge
    return source


def algorithm_identification() -> Any:
    """highdicom algorithm identification of the SEG segments (DCM 123110 Artificial Intelligence)."""
    import highdicom as hd

    return hd.AlgorithmIdentificationSequence(
        name="pneumonitor", family=codes.cid7162.ArtificialIntelligence, version=SOFTWARE_VERSION
    )


def new_instance(kind: str) -> dict[str, Any]:
    """The identity every derived object gets (highdicom keyword arguments): a new series and instance UID, its
    series number (``SERIES_NUMBERS[kind]``: seg, sr or sc), instance 1, this software as manufacturer."""
    import highdicom as hd

    return {
        "series_instance_uid": hd.UID(),
        "series_number": SERIES_NUMBERS[kind],
        "sop_instance_uid": hd.UID(),
        "instance_number": 1,
        "manufacturer": MANUFACTURER,
    }
