"""2-D conversion: a selected CR/DX instance -> :class:`pneumonitor.reading.Radiograph`.

The SDK's ``DICOMSeriesToVolumeOperator`` stacks slices into a 3-D volume and assumes plane positions; a single
projection radiograph has none. This operator instead reads each selected instance with
:func:`pneumonitor.reading.read_dicom_radiograph` (Modality/VOI LUT, MONOCHROME1 inversion, pixel spacing, the same
checks as ``pneumonitor analyze``), so the app sees exactly the pixels the CLI sees.
"""

from __future__ import annotations

import logging
from typing import Any

from monai.deploy.core import Fragment

from operators.case_operator import CaseOperator
from operators.records import CaseRecord
from pneumonitor.reading import UnsupportedInput, read_dicom_radiograph

logger = logging.getLogger(__name__)

__all__ = ["RadiographConverterOperator"]


class RadiographConverterOperator(CaseOperator):
    """Convert each selected instance to a 2-D radiograph (float32 ``(H, W)`` in [0, 1], MONOCHROME2).

    Named inputs:
        cases: ``list[CaseRecord]`` from the selector.
    Named outputs:
        cases: the same records; ``ok`` ones now carry ``radiograph``, unreadable ones are skipped with the reason.
    """

    def __init__(self, fragment: Fragment, *args: Any, **kwargs: Any) -> None:
        super().__init__(fragment, *args, **kwargs)

    def process(self, records: list[CaseRecord]) -> list[CaseRecord]:
        return [self.convert(record) for record in records]

    @staticmethod
    def convert(record: CaseRecord) -> CaseRecord:
        """Attach the radiograph to an ``ok`` record, or skip it with the reader's reason. Returns the record."""
        if not record.ok:
            return record
        try:
            record.radiograph = read_dicom_radiograph(record.source)
        except UnsupportedInput as exc:
            record.skip(str(exc))
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the study
            record.skip(f"could not be read ({type(exc).__name__}: {exc})")
        if record.ok:
            record.dataset = record.radiograph.dataset
        else:
            logger.warning("skipped %s: %s", record.source, record.reason)
        return record
