"""pydicom 2 compatibility of the core, for this app's environment (monailabel 0.8.5 needs pydicom < 3).

``pneumonitor.io`` imports ``apply_modality_lut``/``apply_voi_lut`` from ``pydicom.pixels`` (pydicom 3). In
pydicom 2 the same functions live in ``pydicom.pixel_data_handlers.util``; this registers that module under the
pydicom 3 name when it is missing. It does nothing under pydicom 3, and becomes unnecessary once ``pneumonitor.io``
falls back to the pydicom 2 location itself.
"""

from __future__ import annotations

import importlib.util
import sys


def install_pydicom_pixels_alias() -> bool:
    """Alias ``pydicom.pixels`` to ``pydicom.pixel_data_handlers.util`` under pydicom 2; returns whether it did."""
    import pydicom

    if importlib.util.find_spec("pydicom.pixels") is not None:
        return False
    from pydicom.pixel_data_handlers import util

    sys.modules["pydicom.pixels"] = util
    pydicom.pixels = util  # type: ignore[attr-defined]
    return True


install_pydicom_pixels_alias()
