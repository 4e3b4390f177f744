"""Dataset converters: public chest X-ray sets -> MONAI datalist JSON (+ summaries).

One module per dataset (``rsna``, ``covid_collection``, ``pediatric``, ``jsrt``, ``covidx_severity``), the training
mix (``mix``), and shared helpers: ``datalist`` (writing, summaries), ``splits`` (seeded patient-level splits),
``boxes`` (boxes from masks). Command line: ``pneumonitor datasets <name> ...``.
"""

from pneumonitor.datasets.bounding_boxes import boxes_from_mask, boxes_to_mask
from pneumonitor.datasets.datalist import SPLITS, load_datalist, summarize, write_conversion
from pneumonitor.datasets.splits import assign_splits, split_patients

__all__ = [
    "SPLITS",
    "assign_splits",
    "boxes_from_mask",
    "boxes_to_mask",
    "load_datalist",
    "split_patients",
    "summarize",
    "write_conversion",
]
