"""Hostile and malformed inputs to the readers (issue 16): each is refused with one clear reason before it can
cost memory or produce a result. Every input is generated here with pydicom, Pillow or nibabel."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from pneumonitor.io import UnsupportedInput, read_radiograph

from test_io import make_dicom


def chest_like(shape=(128, 128)) -> np.ndarray:
    """Two dark lung fields beside a bright spine: structure that stripes would visibly destroy."""
    rows, columns = np.mgrid[0 : shape[0], 0 : shape[1]]
    image = 200 - 120 * (np.abs(columns / shape[1] - 0.5) > 0.1) * (np.abs(rows / shape[0] - 0.5) < 0.35)
    return image.astype(np.uint8)


@pytest.mark.parametrize(
    "header, needs",
    [
        ({"Columns": 127}, 127 * 128),  # too long for the header: pydicom drops the excess and shears the rows
        ({"Rows": 100}, 100 * 128),
        ({"BitsAllocated": 16, "BitsStored": 12, "HighBit": 11}, 2 * 128 * 128),  # too short
    ],
)
def test_pixel_data_that_disagrees_with_the_header_is_refused(tmp_path, header, needs):
    """Regression (issue 16, item 3): pixel data longer than Rows x Columns x samples x bits decoded to stripes
    that were scored p 1.00, 8/8."""
    path = make_dicom(tmp_path / "striped.dcm", chest_like())
    ds = pydicom.dcmread(path)
    for keyword, value in header.items():
        setattr(ds, keyword, value)
    ds.save_as(path)
    with pytest.raises(UnsupportedInput) as refused:
        read_radiograph(path)
    assert str(refused.value) == (
        f"DICOM file striped.dcm: pixel data could not be decoded: it is {128 * 128} bytes but the header (Rows "
        f"{ds.Rows}, Columns {ds.Columns}, SamplesPerPixel 1, BitsAllocated {ds.BitsAllocated}) needs {needs} ("
        + ("a truncated file, or " if needs > 128 * 128 else "")
        + "header and pixel data disagree)"
    )


def test_consistent_odd_length_pixel_data_is_read(tmp_path):
    """Odd-length native pixel data is padded to even by the writer; that byte is not a disagreement."""
    path = make_dicom(tmp_path / "odd.dcm", chest_like((65, 67)))
    assert len(pydicom.dcmread(path).PixelData) == 65 * 67 + 1
    assert read_radiograph(path).shape == (65, 67)
