"""The CLI and the library give the same label maps for the same input (issue 17).

They used to differ: `medsam-edge segment` windowed a CT DICOM series (abdomen window) while
`Segmenter().segment_volume(path)` dropped the modality and used the percentile rule (55 grey levels apart on
average on a CT-like volume). Both now go through `io.open_volume` and `intensity.choose_window`.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from medsam_edge import Segmenter
from medsam_edge.cli import main as cli_main
from medsam_edge.intensity import choose_window, slice_converter, to_uint8
from medsam_edge.io import Geometry, open_volume, read_image
from tests.test_io import write_dicom_series

pytestmark = pytest.mark.model

BOX3D = [18, 20, 1, 46, 44, 6]


def _ct_phantom() -> np.ndarray:
    """(8, 64, 64) int16 HU: air, a soft-tissue body, a contrast-filled organ and a bone rim."""
    z, y, x = np.mgrid[:8, :64, :64]
    vol = np.full((8, 64, 64), -1000, np.int16)
    vol[((y - 32) / 28.0) ** 2 + ((x - 32) / 26.0) ** 2 <= 1] = 40
    vol[((y - 32) / 10.0) ** 2 + ((x - 32) / 12.0) ** 2 + ((z - 3.5) / 4.0) ** 2 <= 1] = 180
    vol[(((y - 32) / 28.0) ** 2 + ((x - 32) / 26.0) ** 2 > 0.85) & (((y - 32) / 28.0) ** 2 + ((x - 32) / 26.0) ** 2 <= 1)] = 900
    rng = np.random.default_rng(0)
    return (vol + rng.integers(-20, 21, vol.shape)).astype(np.int16)


@pytest.fixture(scope="module")
def seg():
    return Segmenter()


def _cli(tmp_path, source, out_name, *extra) -> np.ndarray:
    out = tmp_path / out_name
    code = cli_main(["segment", str(source), "-o", str(out), "-q", *extra])
    assert code == 0
    if out.suffix == ".npz":
        with np.load(out) as data:
            return data["segs"]
    return read_image(out).array


def test_ct_dicom_series_cli_equals_library(tmp_path, seg):
    vol = _ct_phantom()
    geometry = Geometry(spacing=(0.8, 0.8, 2.5), origin=(-10.0, 5.0, 30.0), direction=tuple(np.eye(3).ravel()))
    folder = tmp_path / "ct"
    write_dicom_series(folder, vol, geometry, "1.2.826.0.1.3680043.2.1125.17", "ct", modality="CT")
    loaded = open_volume(folder)
    assert loaded.modality == "CT" and choose_window(loaded.modality) == "abdomen"
    via_cli = _cli(tmp_path, folder, "cli.nrrd", "--box3d", *map(str, BOX3D))
    via_lib = seg.segment_volume(folder, np.array([BOX3D])).label_map
    assert via_lib.any()
    np.testing.assert_array_equal(via_cli, via_lib)
    # what the two paths now share: the CT window, not the percentile rule (which differs on this volume)
    windowed = to_uint8(vol, "CT")
    assert np.array_equal(slice_converter(vol, None, "CT")(3), windowed[3])
    assert np.abs(windowed.astype(int) - to_uint8(vol).astype(int)).mean() > 5


def test_nifti_cli_equals_library(tmp_path, seg):
    vol = _ct_phantom()
    path = tmp_path / "mr.nii.gz"
    image = sitk.GetImageFromArray(vol)
    image.SetSpacing((0.8, 0.8, 2.5))
    sitk.WriteImage(image, str(path))
    assert open_volume(path).modality is None  # NIfTI says nothing: the percentile rule on both paths
    via_cli = _cli(tmp_path, path, "cli.nii.gz", "--box3d", *map(str, BOX3D))
    via_lib = seg.segment_volume(path, np.array([BOX3D])).label_map
    assert via_lib.any()
    np.testing.assert_array_equal(via_cli, via_lib)
    windowed = _cli(tmp_path, path, "cli_w.nii.gz", "--box3d", *map(str, BOX3D), "--window", "abdomen")
    np.testing.assert_array_equal(windowed, seg.segment_volume(path, np.array([BOX3D]), window="abdomen").label_map)


def test_npz_cli_equals_library(tmp_path, seg):
    vol = to_uint8(_ct_phantom(), "CT")
    path = tmp_path / "3DBox_CT_phantom.npz"
    np.savez(path, imgs=vol, boxes=np.array([BOX3D]), spacing=np.array([2.5, 0.8, 0.8]))
    via_cli = _cli(tmp_path, path, "segs.npz")
    via_lib = seg.segment_volume(path, None).label_map
    assert via_lib.any()
    np.testing.assert_array_equal(via_cli, via_lib)
