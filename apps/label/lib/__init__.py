"""pneumonitor's MONAI Label app: infer tasks, trainers, active-learning strategies and datastores."""

from lib import compat  # noqa: F401 - first: the core must read DICOM under this environment's pydicom 2
