"""Patient monitoring (docs/monitoring.md): disease profiles over time, change labels, trend agreement, plots and reports."""

from pneumonitor.monitoring.profiles import TIMELINE_COLUMNS, PatientProfile, build_profiles
from pneumonitor.monitoring.studies import (
    MetadataColumns,
    MonitoringInputError,
    ResultsTable,
    StudyMetadata,
    attach_patient_and_time,
    image_key,
    read_results,
    read_study_metadata,
)
from pneumonitor.monitoring.trend import (
    ChangeRule,
    PooledTrendAgreement,
    pooled_trend_agreement,
    trend_agreement,
    trend_labels,
)

__all__ = [
    "TIMELINE_COLUMNS",
    "ChangeRule",
    "MetadataColumns",
    "MonitoringInputError",
    "PatientProfile",
    "PooledTrendAgreement",
    "ResultsTable",
    "StudyMetadata",
    "attach_patient_and_time",
    "build_profiles",
    "image_key",
    "pooled_trend_agreement",
    "read_results",
    "read_study_metadata",
    "trend_agreement",
    "trend_labels",
]
