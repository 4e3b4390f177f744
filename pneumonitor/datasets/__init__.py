"""Dataset converters: public chest X-ray sets -> MONAI datalist JSON (+ summaries).

One module per dataset (``rsna``, ``covid_collection``, ``pediatric``, ``jsrt``, ``covidx_severity``), the training
mix (``mix``), and shared helpers: ``datalist`` (writing, summaries), ``splits`` (seeded patient-level splits),
``boxes`` (boxes from masks), ``pack`` (a bundle's loading stage stored compactly for training elsewhere). Command line: ``pneumonitor datasets <name> ...``.
"""

from pneumonitor.datasets.bounding_boxes import boxes_from_mask, boxes_to_mask
from pneumonitor.datasets.datalist import SPLITS, load_datalist, summarize, write_conversion
from pneumonitor.datasets.pack import LoadPackedd, pack_datalist, write_training_pack
from pneumonitor.datasets.splits import assign_splits, split_patients

__all__ = [
    "SPLITS",
    "LoadPackedd",
    "assign_splits",
    "boxes_from_mask",
    "boxes_to_mask",
    "load_datalist",
    "pack_datalist",
    "split_patients",
    "summarize",
    "write_conversion",
    "write_training_pack",
]
