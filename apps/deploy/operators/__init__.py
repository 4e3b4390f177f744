"""MONAI Deploy operators of the pneumonitor app (``apps/deploy``).

Graph: :class:`~operators.selection.CXRDataLoaderOperator` -> :class:`~operators.selection.CXRSeriesSelectorOperator`
-> :class:`~operators.radiograph.RadiographConverterOperator`
-> :class:`~operators.inference.PneumoniaInferenceOperator`
-> :class:`~operators.severity.SeverityOperator` -> :class:`~operators.seg_writer.DICOMSegWriterOperator`
-> :class:`~operators.sr_writer.DICOMSRWriterOperator` -> :class:`~operators.sc_writer.DICOMOverlayWriterOperator`
-> :class:`~operators.store.DICOMStoreOperator`.

Each operator passes a ``list[CaseRecord]`` (:mod:`operators.records`) on its ``cases`` port; its logic is in pure
methods (``select``, ``convert``, ``predict``, ``assess``, ``build``, ``store``) that the tests call directly.
The analysis itself is :mod:`pneumonitor` (``reading``, ``inference``, ``severity``): no operator
re-implements it.
"""
