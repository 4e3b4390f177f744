"""Inference on radiographs: the ``analyze`` pipeline (:mod:`.analyzer`: QC gate, networks, severity, uncertainty, the
result files) and the overlays a reader looks at (:mod:`.overlays`). Reading and the severity score are the base
modules :mod:`pneumonitor.reading` and :mod:`pneumonitor.severity`, which the lower layers use too.

Nothing is imported here, so that ``pneumonitor.inference.overlays`` loads without torch.
"""
