"""Reading and writing medical files: geometry round trips, DICOM series, pictures, hostile .npz, atomic writes.

Real DICOM files come from the ``pydicom-data`` wheel (``pip download --no-deps pydicom-data``). The tests look for
it in ``$MEDSAM_EDGE_PYDICOM_DATA`` (the wheel or an unpacked folder), then the installed ``data_store`` package,
then pytest's cache, and finally try to download it into that cache; without it those tests are skipped. The wheel
holds no multi-file series (its "series" are the same slice in several encodings), so series are also written
here with SimpleITK's DICOM writer.
"""

from __future__ import annotations

import io as pyio
import json
import os
import pickle
import random
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
import warnings
import zipfile
from pathlib import Path

import cv2
import numpy as np

from medsam_edge.errors import UnwritableFileError
import numpy.lib.format as npy_format
import pytest
import SimpleITK as sitk

from medsam_edge import io as mio
from medsam_edge.errors import ConfigurationError, InvalidImageError, MedsamEdgeError, UnreadableFileError
from medsam_edge.io import Geometry, LoadedImage, read_image, write_labels, write_npz_segs

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------- helpers
def oblique_direction() -> tuple[float, ...]:
    """A proper rotation (det +1) about a tilted axis, row-major -- nothing axis-aligned about it."""
    axis = np.array([1.0, 2.0, 3.0]) / np.sqrt(14.0)
    angle = 0.4
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rot = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)
    return tuple(rot.reshape(-1).tolist())


GEOMETRY = Geometry(spacing=(0.71, 0.83, 2.5), origin=(-120.25, 33.5, 7.75), direction=oblique_direction())


def make_volume(shape=(6, 20, 30), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-1000, 2000, size=shape).astype(np.int16)


def assert_geometry_close(a: Geometry, b: Geometry, tol=1e-5):
    np.testing.assert_allclose(a.spacing, b.spacing, rtol=tol, atol=tol)
    np.testing.assert_allclose(a.origin, b.origin, rtol=tol, atol=tol)
    np.testing.assert_allclose(a.direction, b.direction, rtol=tol, atol=tol)


def write_dicom_series(folder: Path, array: np.ndarray, geometry: Geometry, series_uid: str, prefix: str,
                       modality: str = "CT") -> None:
    """Write ``array`` (z, y, x) as one DICOM file per slice with position/orientation tags (SimpleITK/GDCM)."""
    folder.mkdir(parents=True, exist_ok=True)
    volume = geometry.apply_to(sitk.GetImageFromArray(array))
    d = geometry.direction
    orientation = "\\".join(f"{v:.10f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7]))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for z in range(array.shape[0]):
        slice_img = volume[:, :, z]
        position = "\\".join(f"{v:.10f}" for v in volume.TransformIndexToPhysicalPoint((0, 0, z)))
        tags = {
            "0008|0060": modality,
            "0008|0008": "DERIVED\\SECONDARY",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.9",
            "0020|000e": series_uid,
            "0008|0018": f"{series_uid}.{z + 1}",
            "0020|0013": str(z + 1),
            "0020|0032": position,
            "0020|0037": orientation,
            "0018|0050": str(geometry.spacing[2]),
        }
        for key, value in tags.items():
            slice_img.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"{prefix}{z:03d}.dcm"))
        writer.Execute(slice_img)


def npy_bytes(header: dict, payload: bytes = b"") -> bytes:
    buf = pyio.BytesIO()
    npy_format.write_array_header_1_0(buf, header)
    return buf.getvalue() + payload


def write_zip(path: Path, members: dict[str, bytes], compression=zipfile.ZIP_STORED) -> None:
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def truncate(src: Path, dst: Path, fraction: float) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


# ----------------------------------------------------------------------------------------- pydicom-data
def _pydicom_data_source(cache_dir: Path) -> Path | None:
    env = os.environ.get("MEDSAM_EDGE_PYDICOM_DATA")
    if env and Path(env).exists():
        return Path(env)
    try:
        import data_store  # the pydicom-data package, if installed

        folder = Path(data_store.__file__).parent / "data"
        if folder.is_dir():
            return folder
    except ImportError:
        pass
    wheels = sorted(cache_dir.glob("pydicom_data-*.whl"))
    if not wheels:
        try:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "pydicom-data", "-d", str(cache_dir)],
                check=True, timeout=180, capture_output=True,
            )
        except (subprocess.SubprocessError, OSError):
            return None
        wheels = sorted(cache_dir.glob("pydicom_data-*.whl"))
    return wheels[-1] if wheels else None


@pytest.fixture(scope="session")
def dicom_data(request, tmp_path_factory) -> Path:
    """Folder with the pydicom-data DICOM files (extracted from the wheel when needed)."""
    cache = getattr(request.config, "cache", None)  # None with -p no:cacheprovider
    cache_dir = Path(cache.mkdir("pydicom-data")) if cache else tmp_path_factory.mktemp("pydicom_download")
    source = _pydicom_data_source(cache_dir)
    if source is None:
        pytest.skip("pydicom-data not available (set MEDSAM_EDGE_PYDICOM_DATA to its wheel or data folder)")
    if source.is_dir():
        return source
    out = tmp_path_factory.mktemp("pydicom_data")
    with zipfile.ZipFile(source) as zf:
        for name in zf.namelist():
            if name.startswith("data_store/data/") and name.endswith(".dcm"):
                (out / Path(name).name).write_bytes(zf.read(name))
    return out


# ------------------------------------------------------------------------------------------------- Geometry
def test_geometry_from_sitk_apply_to_and_axis_helpers():
    image = sitk.Image(30, 20, 6, sitk.sitkInt16)  # ITK size (x, y, z)
    GEOMETRY.apply_to(image)
    g = Geometry.from_sitk(image)
    assert g == GEOMETRY and g.ndim == 3
    assert g.spacing == (0.71, 0.83, 2.5) and g.spacing_zyx == (2.5, 0.83, 0.71)
    assert g.origin_zyx == (7.75, 33.5, -120.25)
    np.testing.assert_allclose(g.direction_matrix @ g.direction_matrix.T, np.eye(3), atol=1e-12)
    assert sitk.GetArrayViewFromImage(image).shape == (6, 20, 30)  # array (z, y, x)


def test_geometry_validation():
    with pytest.raises(InvalidImageError):
        Geometry((1, 1, 1), (0, 0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    with pytest.raises(InvalidImageError):
        Geometry((1, 1, 1), (0, 0, 0), (1, 0, 0, 1))
    with pytest.raises(InvalidImageError):
        Geometry((1, 0, 1), (0, 0, 0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    with pytest.raises(InvalidImageError):
        Geometry((1, float("nan"), 1), (0, 0, 0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    with pytest.raises(InvalidImageError):
        Geometry((1,), (0,), (1,))
    two_d = Geometry((0.5, 0.25), (1, 2), (1, 0, 0, 1))
    assert two_d.ndim == 2 and two_d.spacing_zyx == (0.25, 0.5)
    with pytest.raises(InvalidImageError):
        two_d.apply_to(sitk.Image(3, 3, 3, sitk.sitkUInt8))


# ------------------------------------------------------------------------------------ volume round trips
VOLUME_SUFFIXES = [".nii", ".nii.gz", ".nrrd", ".mha"]


@pytest.mark.parametrize("suffix", VOLUME_SUFFIXES)
def test_volume_round_trip_keeps_geometry(tmp_path, suffix):
    vol = make_volume()
    src = tmp_path / f"ct{suffix}"
    sitk.WriteImage(GEOMETRY.apply_to(sitk.GetImageFromArray(vol)), str(src))
    loaded = read_image(src)
    assert loaded.kind == "3d" and loaded.array.shape == (6, 20, 30) and loaded.array.dtype == np.int16
    np.testing.assert_array_equal(loaded.array, vol)
    assert loaded.format == mio.READ_SUFFIXES[suffix] and loaded.source == str(src)
    # NIfTI stores float32 and a quaternion: equal to ~1e-6, not bit for bit.
    assert_geometry_close(loaded.geometry, GEOMETRY)

    labels = np.zeros(vol.shape, dtype=np.uint16)
    labels[2:4, 5:15, 10:20] = 1
    labels[1, 0:3, 0:3] = 300
    out = tmp_path / f"seg{suffix}"
    assert write_labels(out, labels, reference=loaded) == out
    written = sitk.ReadImage(str(out))
    assert written.GetPixelID() == sitk.sitkUInt16
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written), labels)
    # Identical geometry to what was read (the same on-disk representation is reproduced).
    assert_geometry_close(Geometry.from_sitk(written), loaded.geometry, tol=1e-6)
    again = read_image(out)
    assert_geometry_close(again.geometry, loaded.geometry, tol=1e-6)
    assert not list(tmp_path.glob(".*tmp-*"))  # no temporary file left


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_exact_geometry_in_double_precision_formats(tmp_path, suffix):
    labels = (np.arange(6 * 20 * 30).reshape(6, 20, 30) % 7).astype(np.uint8)
    out = tmp_path / f"seg{suffix}"
    write_labels(out, labels, reference=GEOMETRY)
    got = read_image(out)
    assert got.array.dtype == np.uint16
    np.testing.assert_array_equal(got.array, labels)
    assert_geometry_close(got.geometry, GEOMETRY, tol=1e-12)


def test_write_labels_with_sitk_reference_copies_information(tmp_path):
    ref = GEOMETRY.apply_to(sitk.GetImageFromArray(make_volume()))
    labels = np.ones((6, 20, 30), dtype=np.int64)
    write_labels(tmp_path / "a.nrrd", labels, reference=ref)
    got = sitk.ReadImage(str(tmp_path / "a.nrrd"))
    assert got.GetSpacing() == ref.GetSpacing() and got.GetOrigin() == ref.GetOrigin()
    np.testing.assert_allclose(got.GetDirection(), ref.GetDirection(), atol=1e-12)
    with pytest.raises(InvalidImageError, match="never resampled"):
        write_labels(tmp_path / "b.nrrd", labels[:, :10], reference=ref)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_2d_medical_image_round_trip(tmp_path, suffix):
    g2 = Geometry((0.3, 0.6), (10.0, -4.0), (0.0, -1.0, 1.0, 0.0))
    img = np.arange(12 * 9, dtype=np.uint16).reshape(12, 9)
    src = tmp_path / f"xray{suffix}"
    sitk.WriteImage(g2.apply_to(sitk.GetImageFromArray(img)), str(src))
    loaded = read_image(src)
    assert loaded.kind == "2d" and loaded.array.shape == (12, 9) and loaded.geometry.ndim == 2
    assert_geometry_close(loaded.geometry, g2)
    write_labels(tmp_path / f"seg{suffix}", (img % 3).astype(np.uint8), reference=loaded)
    assert_geometry_close(read_image(tmp_path / f"seg{suffix}").geometry, g2)


@pytest.mark.parametrize("header", [".nhdr", ".mhd"])
def test_detached_header_formats(tmp_path, header):
    vol = make_volume((3, 8, 9))
    sitk.WriteImage(GEOMETRY.apply_to(sitk.GetImageFromArray(vol)), str(tmp_path / f"v{header}"))
    loaded = read_image(tmp_path / f"v{header}")
    np.testing.assert_array_equal(loaded.array, vol)
    assert_geometry_close(loaded.geometry, GEOMETRY, tol=1e-9)
    # The header without its data file is unreadable, with the path in the message.
    for data_file in tmp_path.glob("v.*raw"):
        data_file.unlink()
    with pytest.raises(UnreadableFileError, match="v"):
        read_image(tmp_path / f"v{header}")


def test_suffixes_are_case_insensitive(tmp_path):
    vol = make_volume((2, 5, 6))
    path = tmp_path / "SCAN.NII.GZ"
    write_labels(path, np.abs(vol) % 5, reference=GEOMETRY)
    assert path.exists() and read_image(path).array.shape == (2, 5, 6)
    with open(path, "rb") as fh:
        assert fh.read(2) == b"\x1f\x8b"  # really gzip


# ----------------------------------------------------------------------------------- read errors (generic)
def test_missing_path_directory_empty_and_unknown(tmp_path):
    with pytest.raises(UnreadableFileError, match="does not exist") as info:
        read_image(tmp_path / "nope.nii.gz")
    assert "nope.nii.gz" in str(info.value) and "NIfTI" in str(info.value)
    (tmp_path / "folder.nii").mkdir()
    with pytest.raises(UnreadableFileError, match="is a folder; expected a NIfTI"):
        read_image(tmp_path / "folder.nii")
    (tmp_path / "empty.mha").write_bytes(b"")
    with pytest.raises(UnreadableFileError, match="empty"):
        read_image(tmp_path / "empty.mha")
    (tmp_path / "table.csv").write_text("a,b\n")
    with pytest.raises(UnreadableFileError, match=r"\.nii\.gz.*\.npz") as info:
        read_image(tmp_path / "table.csv")
    assert "unsupported" in str(info.value)
    # Everything is also an OSError and a MedsamEdgeError.
    assert isinstance(info.value, OSError) and isinstance(info.value, MedsamEdgeError)


def test_folder_without_dicom(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UnreadableFileError, match="folder without files"):
        read_image(tmp_path / "empty")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("no images here")
    with pytest.raises(UnreadableFileError, match="without any readable DICOM"):
        read_image(tmp_path / "notes")


@pytest.mark.parametrize("suffix", VOLUME_SUFFIXES)
@pytest.mark.parametrize("fraction", [0.02, 0.5, 0.97])
def test_truncated_volumes_are_refused(tmp_path, suffix, fraction):
    src = tmp_path / f"ok{suffix}"
    sitk.WriteImage(sitk.GetImageFromArray(make_volume((4, 40, 50))), str(src))
    bad = truncate(src, tmp_path / f"bad{suffix}", fraction)
    with pytest.raises(UnreadableFileError) as info:
        read_image(bad)
    assert str(bad) in str(info.value)


def test_short_plain_nifti_is_detected_although_itk_accepts_it(tmp_path):
    vol = make_volume((4, 40, 50))
    src = tmp_path / "ok.nii"
    sitk.WriteImage(sitk.GetImageFromArray(vol), str(src))
    bad = truncate(src, tmp_path / "bad.nii", 0.9)
    sitk.ReadImage(str(bad))  # ITK itself does not notice (this is why we check)
    with pytest.raises(UnreadableFileError, match="truncated"):
        read_image(bad)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16, np.int32, np.float32, np.float64, "rgb"])
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_size_check_accepts_every_voxel_type(tmp_path, dtype, suffix):
    if dtype == "rgb":
        arr = np.random.default_rng(0).integers(0, 255, (3, 5, 7, 3)).astype(np.uint8)
        image = sitk.GetImageFromArray(arr, isVector=True)
    else:
        arr = (np.arange(3 * 5 * 7).reshape(3, 5, 7) % 100).astype(dtype)
        image = sitk.GetImageFromArray(arr)
    sitk.WriteImage(image, str(tmp_path / f"v{suffix}"))
    np.testing.assert_array_equal(read_image(tmp_path / f"v{suffix}").array, arr)


def test_corrupt_headers(tmp_path):
    (tmp_path / "junk.nii").write_bytes(os.urandom(2000))
    (tmp_path / "junk.nrrd").write_bytes(b"NRRD0004\ntype: what\n\n" + os.urandom(100))
    (tmp_path / "junk.png").write_bytes(os.urandom(500))
    (tmp_path / "junk.dcm").write_bytes(os.urandom(500))
    for name in ["junk.nii", "junk.nrrd", "junk.png", "junk.dcm"]:
        with pytest.raises(UnreadableFileError, match="junk"):
            read_image(tmp_path / name)


# ------------------------------------------------------------------------------------------ DICOM (real)
def test_real_dicom_single_files(dicom_data):
    ct = read_image(dicom_data / "693_UNCR.dcm")
    assert ct.format == "dicom" and ct.kind == "2d" and ct.modality == "CT"
    assert ct.array.shape == (512, 512) and ct.array.dtype == np.int16
    assert ct.geometry.ndim == 3 and ct.geometry.spacing[:2] == pytest.approx((0.478516, 0.478516))
    assert ct.geometry.origin == pytest.approx((-122.5, -112.4, 47.0))
    assert any("single-frame" in n for n in ct.notes)
    # Hounsfield units after the rescale: -3024 padding outside the scan circle, air near -1000, bone < 4000.
    assert int(ct.array.min()) == -3024 and int(ct.array.max()) < 4000
    assert -1100 < np.median(ct.array) < -900
    # The same pixels stored with lossless JPEG 2000 decode to the same array.
    np.testing.assert_array_equal(read_image(dicom_data / "693_J2KR.dcm").array, ct.array)

    mr = read_image(dicom_data / "emri_small.dcm")  # enhanced MR, 10 frames
    assert mr.kind == "3d" and mr.array.shape == (10, 64, 64) and mr.modality == "MR"
    np.testing.assert_array_equal(read_image(dicom_data / "emri_small_big_endian.dcm").array, mr.array)

    us = read_image(dicom_data / "US1_UNCR.dcm")  # colour ultrasound
    assert us.kind == "2d" and us.array.shape == (480, 640, 3) and us.array.dtype == np.uint8


def test_real_dicom_file_without_suffix(dicom_data, tmp_path):
    shutil.copy(dicom_data / "693_UNCR.dcm", tmp_path / "IM0001")
    loaded = read_image(tmp_path / "IM0001")
    assert loaded.format == "dicom" and loaded.array.shape == (512, 512)


@pytest.mark.parametrize("fraction", [0.05, 0.5, 0.99])
def test_real_dicom_truncated(dicom_data, tmp_path, fraction):
    bad = truncate(dicom_data / "693_UNCR.dcm", tmp_path / "cut.dcm", fraction)
    with pytest.raises(UnreadableFileError, match="cut.dcm"):
        read_image(bad)


def test_real_dicom_folders(dicom_data, tmp_path):
    # One real file in a folder: a series of one single-frame image -> 2D CT.
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(dicom_data / "693_UNCR.dcm", one)
    loaded = read_image(one)
    assert loaded.format == "dicom-series" and loaded.kind == "2d" and loaded.modality == "CT"
    np.testing.assert_array_equal(loaded.array, read_image(dicom_data / "693_UNCR.dcm").array)
    # The same slice in four encodings shares one series UID and one position: refused, not stacked.
    copies = tmp_path / "copies"
    copies.mkdir()
    for name in ["MR2_UNCR.dcm", "MR2_UNCI.dcm", "MR2_J2KR.dcm", "MR2_J2KI.dcm"]:
        shutil.copy(dicom_data / name, copies)
    with pytest.raises(UnreadableFileError, match="same slice position"):
        read_image(copies)


# -------------------------------------------------------------------------------------- DICOM (written)
def test_dicom_series_round_trip(tmp_path):
    vol = make_volume((7, 24, 32), seed=5)
    write_dicom_series(tmp_path / "s", vol, GEOMETRY, "1.2.826.0.1.3680043.2.1125.1.1", "img")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one series: no warning
        loaded = read_image(tmp_path / "s")
    assert loaded.format == "dicom-series" and loaded.kind == "3d" and loaded.modality == "CT"
    np.testing.assert_array_equal(loaded.array, vol)
    assert_geometry_close(loaded.geometry, GEOMETRY, tol=1e-6)
    # Labels written with this reference carry the series' geometry.
    labels = (vol > 500).astype(np.uint16)
    write_labels(tmp_path / "seg.nii.gz", labels, reference=loaded)
    out = read_image(tmp_path / "seg.nii.gz")
    np.testing.assert_array_equal(out.array, labels)
    assert_geometry_close(out.geometry, GEOMETRY, tol=1e-5)


def test_dicom_folder_with_two_series_reads_the_larger(tmp_path):
    folder = tmp_path / "mixed"
    big = make_volume((5, 16, 16), seed=1)
    small = make_volume((3, 16, 16), seed=2)
    write_dicom_series(folder, small, GEOMETRY, "1.2.826.0.1.3680043.2.1125.1.2", "a")  # smaller UID sorts first
    write_dicom_series(folder, big, GEOMETRY, "1.2.826.0.1.3680043.2.1125.1.3", "b")
    with pytest.warns(UserWarning, match="2 DICOM series; read the one with the most files") as record:
        loaded = read_image(folder)
    assert record[0].filename == __file__  # the warning points at the caller
    np.testing.assert_array_equal(loaded.array, big)
    note = loaded.notes[0]
    assert "1.2.826.0.1.3680043.2.1125.1.3 (5 files)" in note and "1.2.826.0.1.3680043.2.1125.1.2 (3 files)" in note


def test_dicom_series_tie_is_broken_by_uid(tmp_path):
    folder = tmp_path / "tie"
    write_dicom_series(folder, make_volume((3, 8, 8), seed=1), GEOMETRY, "1.2.3.9", "a")
    write_dicom_series(folder, make_volume((3, 8, 8), seed=2), GEOMETRY, "1.2.3.10", "b")
    with pytest.warns(UserWarning):
        loaded = read_image(folder)
    np.testing.assert_array_equal(loaded.array, make_volume((3, 8, 8), seed=2))  # "1.2.3.10" < "1.2.3.9"


def test_dicom_series_with_truncated_slice_is_refused(tmp_path):
    folder = tmp_path / "s"
    write_dicom_series(folder, make_volume((6, 16, 16)), GEOMETRY, "1.2.826.0.1.3680043.2.1125.1.4", "img")
    truncate(folder / "img003.dcm", folder / "img003.dcm", 0.5)
    # GDCM silently leaves the broken file out of the series (ITK would stack 5 slices with a wrong spacing) ...
    uid = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))[0]
    assert len(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)) == 5
    # ... we refuse the folder instead.
    with pytest.raises(UnreadableFileError, match="img003.dcm"):
        read_image(folder)


def test_dicom_series_with_missing_slice_is_refused(tmp_path):
    folder = tmp_path / "s"
    write_dicom_series(folder, make_volume((6, 16, 16)), GEOMETRY, "1.2.826.0.1.3680043.2.1125.1.5", "img")
    (folder / "img002.dcm").unlink()
    with pytest.raises(UnreadableFileError, match="not evenly spaced"):
        read_image(folder)


def test_dicom_series_mixing_orientations_is_refused(tmp_path):
    folder = tmp_path / "s"
    axial = Geometry(GEOMETRY.spacing, (0.0, 0.0, 100.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    write_dicom_series(folder, make_volume((3, 16, 16)), GEOMETRY, "1.2.826.0.1.3680043.2.1125.1.7", "a")
    write_dicom_series(folder, make_volume((3, 16, 16)), axial, "1.2.826.0.1.3680043.2.1125.1.7", "b")
    with pytest.raises(UnreadableFileError, match="one orientation"):
        read_image(folder)


def test_2d_labels_on_a_single_frame_dicom_keep_3d_geometry(tmp_path):
    folder = tmp_path / "s"
    write_dicom_series(folder, make_volume((1, 16, 20)), GEOMETRY, "1.2.826.0.1.3680043.2.1125.1.6", "img")
    loaded = read_image(folder / "img000.dcm")
    assert loaded.kind == "2d" and loaded.array.shape == (16, 20) and loaded.geometry.ndim == 3
    labels = np.zeros((16, 20), dtype=np.uint8)
    labels[4:8, 5:9] = 2
    write_labels(tmp_path / "seg.nii.gz", labels, reference=loaded)
    got = sitk.ReadImage(str(tmp_path / "seg.nii.gz"))
    assert got.GetSize() == (20, 16, 1)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(got)[0], labels)
    assert got.GetOrigin() == pytest.approx(loaded.geometry.origin, abs=1e-4)


# ---------------------------------------------------------------------------------------------- pictures
def test_png_8_and_16_bit_grey(tmp_path):
    g8 = np.random.default_rng(0).integers(0, 256, (13, 17)).astype(np.uint8)
    g16 = np.random.default_rng(1).integers(0, 65536, (13, 17)).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "g8.png"), g8)
    cv2.imwrite(str(tmp_path / "g16.png"), g16)
    a, b = read_image(tmp_path / "g8.png"), read_image(tmp_path / "g16.png")
    assert a.kind == "2d" and a.geometry is None and a.format == "png"
    assert a.array.dtype == np.uint8 and b.array.dtype == np.uint16
    np.testing.assert_array_equal(a.array, g8)
    np.testing.assert_array_equal(b.array, g16)


def test_colour_pictures_are_rgb_and_alpha_is_dropped(tmp_path):
    rgb = np.zeros((4, 5, 3), dtype=np.uint8)
    rgb[..., 0] = 200  # red
    rgb[..., 2] = 10  # a little blue
    cv2.imwrite(str(tmp_path / "c.png"), rgb[..., ::-1])  # OpenCV writes BGR
    got = read_image(tmp_path / "c.png")
    np.testing.assert_array_equal(got.array, rgb)
    rgba = np.dstack([rgb[..., ::-1], np.full((4, 5), 7, np.uint8)])
    cv2.imwrite(str(tmp_path / "a.png"), rgba)
    got = read_image(tmp_path / "a.png")
    assert got.array.shape == (4, 5, 3) and got.array.flags.c_contiguous
    np.testing.assert_array_equal(got.array, rgb)
    assert "alpha channel dropped" in got.notes
    rgb16 = (rgb.astype(np.uint16) * 257)[..., ::-1]
    cv2.imwrite(str(tmp_path / "c16.tiff"), rgb16)
    got = read_image(tmp_path / "c16.tiff")
    assert got.array.dtype == np.uint16 and got.format == "tiff"
    np.testing.assert_array_equal(got.array, rgb.astype(np.uint16) * 257)
    cv2.imwrite(str(tmp_path / "c.jpg"), np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 100])
    got = read_image(tmp_path / "c.jpg")
    assert got.format == "jpeg" and np.abs(got.array.astype(int) - rgb).max() <= 3


def test_tiff_8_16_bit_and_multipage(tmp_path):
    g8 = (np.arange(60).reshape(6, 10) * 4).astype(np.uint8)
    g16 = (np.arange(60).reshape(6, 10) * 1000).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "a.tif"), g8)
    cv2.imwrite(str(tmp_path / "b.tiff"), g16)
    np.testing.assert_array_equal(read_image(tmp_path / "a.tif").array, g8)
    np.testing.assert_array_equal(read_image(tmp_path / "b.tiff").array, g16)
    cv2.imwritemulti(str(tmp_path / "pages.tif"), [g16, g16 + 1, g16 + 2])
    with pytest.warns(UserWarning, match="multi-page TIFF"):
        got = read_image(tmp_path / "pages.tif")
    np.testing.assert_array_equal(got.array, g16)


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".tif"])
@pytest.mark.parametrize("fraction", [0.3, 0.97])
def test_truncated_pictures(tmp_path, suffix, fraction):
    img = np.random.default_rng(3).integers(0, 255, (64, 80, 3)).astype(np.uint8)
    cv2.imwrite(str(tmp_path / f"ok{suffix}"), img)
    bad = truncate(tmp_path / f"ok{suffix}", tmp_path / f"cut{suffix}", fraction)
    with pytest.raises(UnreadableFileError, match="truncated or corrupt"):
        read_image(bad)


def test_write_png_bit_depth_and_tiff(tmp_path):
    small = np.zeros((5, 6), dtype=np.uint16)
    small[1:3, 1:3] = 255
    big = small.copy()
    big[4, 5] = 256
    write_labels(tmp_path / "small.png", small)
    write_labels(tmp_path / "big.png", big)
    write_labels(tmp_path / "t.tif", small)
    assert cv2.imread(str(tmp_path / "small.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint8  # max < 256
    assert cv2.imread(str(tmp_path / "big.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    assert cv2.imread(str(tmp_path / "t.tif"), cv2.IMREAD_UNCHANGED).dtype == np.uint16  # TIFF: always 16-bit
    for name, want in [("small.png", small), ("big.png", big), ("t.tif", small)]:
        np.testing.assert_array_equal(read_image(tmp_path / name).array, want)
    with pytest.raises(InvalidImageError, match="2D label maps only"):
        write_labels(tmp_path / "vol.png", np.zeros((2, 5, 6), np.uint8))


# ---------------------------------------------------------------------------------------------------- npz
def test_challenge_npz_3d_and_2d(tmp_path):
    imgs = np.random.default_rng(0).integers(0, 256, (5, 12, 14)).astype(np.uint8)
    boxes = np.array([[1, 2, 0, 8, 9, 4]])
    np.savez_compressed(tmp_path / "CT_case.npz", imgs=imgs, boxes=boxes, spacing=np.array([0.8, 0.8, 2.5]))
    got = read_image(tmp_path / "CT_case.npz")
    assert got.kind == "3d" and got.format == "npz" and got.geometry is None
    np.testing.assert_array_equal(got.array, imgs)
    np.testing.assert_array_equal(got.boxes, boxes)
    assert got.spacing == (0.8, 0.8, 2.5)  # as stored (challenge files: ITK x, y, z order)

    rgb = np.zeros((10, 11, 3), np.uint8)
    np.savez(tmp_path / "2d.npz", imgs=rgb, boxes=np.array([1, 1, 5, 5]))
    got = read_image(tmp_path / "2d.npz")
    assert got.kind == "2d" and got.boxes.shape == (1, 4) and got.spacing is None

    np.savez(tmp_path / "noboxes.npz", imgs=imgs)
    assert read_image(tmp_path / "noboxes.npz").kind == "3d"


def test_npz_missing_or_bad_keys(tmp_path):
    np.savez(tmp_path / "wrong.npz", image=np.zeros((3, 3)), gts=np.zeros((3, 3)))
    with pytest.raises(UnreadableFileError, match=r"no 'imgs' array \(found \['gts', 'image'\]\)"):
        read_image(tmp_path / "wrong.npz")
    np.savez(tmp_path / "badbox.npz", imgs=np.zeros((3, 3, 3), np.uint8), boxes=np.zeros((2, 5)))
    with pytest.raises(UnreadableFileError, match=r"\(N, 4\) for 2D or \(N, 6\) for 3D"):
        read_image(tmp_path / "badbox.npz")
    np.savez(tmp_path / "mismatch.npz", imgs=np.zeros((4, 4), np.uint8), boxes=np.zeros((1, 6)))
    with pytest.raises(UnreadableFileError, match="3D boxes"):
        read_image(tmp_path / "mismatch.npz")
    (tmp_path / "notzip.npz").write_bytes(b"hello, this is not a zip archive")
    with pytest.raises(UnreadableFileError, match="not a zip archive"):
        read_image(tmp_path / "notzip.npz")


def test_npz_object_array_is_refused(tmp_path):
    np.savez(tmp_path / "obj.npz", imgs=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(UnreadableFileError, match="object array"):
        read_image(tmp_path / "obj.npz")


class _CreatesFileWhenUnpickled:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_npz_pickle_payload_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_CreatesFileWhenUnpickled(str(marker)), protocol=2)
    member = npy_bytes({"descr": "|O", "fortran_order": False, "shape": (1,)}, payload)
    write_zip(tmp_path / "evil.npz", {"imgs.npy": member, "boxes.npy": npy_bytes(
        {"descr": "<f8", "fortran_order": False, "shape": (1, 4)}, np.zeros(4).tobytes())})
    with pytest.raises(UnreadableFileError, match="refused"):
        read_image(tmp_path / "evil.npz")
    assert not marker.exists()
    # The payload is live: NumPy with pickles allowed runs it (proves the test would catch an unpickling reader).
    with np.load(tmp_path / "evil.npz", allow_pickle=True) as npz:
        npz["imgs"]
    assert marker.exists()


@pytest.mark.parametrize("shape", [(200_000, 200_000), (50, 1024, 1024)])
def test_npz_declaring_a_huge_shape_is_refused_before_allocating(tmp_path, shape):
    member = npy_bytes({"descr": "|u1", "fortran_order": False, "shape": shape}, b"\x00" * 1000)
    write_zip(tmp_path / "huge.npz", {"imgs.npy": member})
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(UnreadableFileError, match="declares shape"):
            read_image(tmp_path / "huge.npz")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 2.0
    assert peak < 2_000_000, f"peak {peak} bytes"


def test_npz_deflate_bomb_is_limited(tmp_path):
    zeros = np.zeros((64, 1024, 1024), np.uint8)  # 64 MiB that compress to ~64 KiB
    np.savez_compressed(tmp_path / "bomb.npz", imgs=zeros)
    assert (tmp_path / "bomb.npz").stat().st_size < 1_000_000
    tracemalloc.start()
    try:
        with pytest.raises(UnreadableFileError, match="above the limit"):
            read_image(tmp_path / "bomb.npz", max_npz_bytes=16 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000
    assert read_image(tmp_path / "bomb.npz").array.shape == zeros.shape  # within the default limit it loads


def test_npz_truncated(tmp_path):
    imgs = np.random.default_rng(0).integers(0, 256, (4, 64, 64)).astype(np.uint8)
    np.savez_compressed(tmp_path / "ok.npz", imgs=imgs, boxes=np.zeros((1, 6)))
    for fraction in (0.1, 0.6, 0.99):
        bad = truncate(tmp_path / "ok.npz", tmp_path / "cut.npz", fraction)
        with pytest.raises(UnreadableFileError, match="cut.npz"):
            read_image(bad)


# --------------------------------------------------------------------------------------- write validation
def test_write_labels_validation(tmp_path):
    good = np.zeros((4, 5), np.uint8)
    with pytest.raises(InvalidImageError, match="integer"):
        write_labels(tmp_path / "f.nii.gz", good.astype(np.float32))
    with pytest.raises(InvalidImageError, match="0..65535"):
        write_labels(tmp_path / "f.nii.gz", good.astype(np.int32) - 1)
    with pytest.raises(InvalidImageError, match="0..65535"):
        write_labels(tmp_path / "f.nii.gz", good.astype(np.int32) + 70000)
    with pytest.raises(InvalidImageError, match="shape"):
        write_labels(tmp_path / "f.nii.gz", np.zeros(5, np.uint8))
    with pytest.raises(ConfigurationError, match=r"\.nii\.gz"):
        write_labels(tmp_path / "f.mhd", good)
    with pytest.raises(ConfigurationError):
        write_labels(tmp_path / "f.jpg", good)
    with pytest.raises(ConfigurationError, match="only be stored in .npz"):
        write_labels(tmp_path / "f.nrrd", good, extra={"boxes": np.zeros((1, 4))})
    with pytest.raises(ConfigurationError, match="reference"):
        write_labels(tmp_path / "f.nrrd", good, reference="ct.nii.gz")
    ref = LoadedImage(array=np.zeros((4, 6, 3), np.uint8), kind="2d", source="x.png", format="png")
    with pytest.raises(InvalidImageError, match="never resampled"):
        write_labels(tmp_path / "f.png", good, reference=ref)
    flat = Geometry((1, 1), (0, 0), (1, 0, 0, 1))
    with pytest.raises(InvalidImageError, match="cannot take a 2D reference"):
        write_labels(tmp_path / "f.nrrd", np.zeros((2, 4, 5), np.uint8), reference=flat)
    assert not list(tmp_path.iterdir())  # nothing was written by any failed call


def test_write_labels_bool_and_folder_errors(tmp_path):
    write_labels(tmp_path / "m.nrrd", np.eye(4, dtype=bool))
    assert read_image(tmp_path / "m.nrrd").array.tolist() == np.eye(4, dtype=np.uint16).tolist()
    with pytest.raises(UnwritableFileError, match="missing.*does not exist"):
        write_labels(tmp_path / "missing" / "m.nrrd", np.eye(4, dtype=np.uint8))
    (tmp_path / "d.nrrd").mkdir()
    with pytest.raises(UnwritableFileError, match="is a folder"):
        write_labels(tmp_path / "d.nrrd", np.eye(4, dtype=np.uint8))


def test_write_npz_segs(tmp_path):
    segs = np.zeros((3, 4, 5), np.int64)
    segs[1, 1:3, 1:4] = 2
    out = write_npz_segs(tmp_path / "case.npz", segs, boxes=np.array([[1, 1, 1, 3, 2, 1]]), spacing=(1.0, 1.0, 3.0))
    with np.load(out, allow_pickle=False) as npz:
        assert sorted(npz.files) == ["boxes", "segs", "spacing"]
        assert npz["segs"].dtype == np.uint16
        np.testing.assert_array_equal(npz["segs"], segs)
    with pytest.raises(ConfigurationError, match="no objects"):
        write_npz_segs(tmp_path / "x.npz", segs, meta=np.array([None], dtype=object))
    write_labels(tmp_path / "via.npz", segs, extra={"boxes": np.zeros((1, 6))})
    with np.load(tmp_path / "via.npz") as npz:
        assert sorted(npz.files) == ["boxes", "segs"]
    with pytest.raises(ConfigurationError, match="segs"):
        write_labels(tmp_path / "via.npz", segs, extra={"segs": segs})


# --------------------------------------------------------------------------------------------- atomicity
def test_failed_write_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "seg.nii.gz"
    write_labels(target, np.ones((3, 4, 5), np.uint8), reference=GEOMETRY)
    before = target.read_bytes()

    def broken_writer(image, name, *args):
        Path(name).write_bytes(b"partial data")
        raise RuntimeError("ITK ERROR: disk on fire")

    monkeypatch.setattr(mio.sitk, "WriteImage", broken_writer)
    with pytest.raises(OSError, match="disk on fire"):
        write_labels(target, np.zeros((3, 4, 5), np.uint8), reference=GEOMETRY)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg.nii.gz"]

    def interrupted(fh, **arrays):
        fh.write(b"PK partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(mio.np, "savez_compressed", interrupted)
    (tmp_path / "r.npz").write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        write_npz_segs(tmp_path / "r.npz", np.zeros((2, 2), np.uint8))
    assert (tmp_path / "r.npz").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.npz", "seg.nii.gz"]


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_written_file_mode_follows_umask_or_existing_file(tmp_path):
    old = os.umask(0o027)
    try:
        write_labels(tmp_path / "new.png", np.zeros((2, 2), np.uint8))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new.png").stat().st_mode) == 0o640  # not mkstemp's 0o600
    (tmp_path / "new.png").chmod(0o604)
    write_labels(tmp_path / "new.png", np.ones((2, 2), np.uint8))
    assert stat.S_IMODE((tmp_path / "new.png").stat().st_mode) == 0o604


_CHILD_STALLS = """
import sys, time
from pathlib import Path
sys.path.insert(0, {repo!r})
import numpy as np
import medsam_edge.io as mio

target = Path({target!r})
def stall(*args, **kwargs):
    temp = args[1] if len(args) > 1 and isinstance(args[1], str) else None
    fh = args[0] if temp is None else open(temp, "wb")
    fh.write(b"PARTIAL" * 50000)
    fh.flush()
    print("WRITING", flush=True)
    time.sleep(120)
if target.suffix == ".npz":
    mio.np.savez_compressed = stall
else:
    mio.sitk.WriteImage = stall
mio.write_labels(target, np.full((4, 8, 8), 2, np.uint8))
"""


def _start_child(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=str(REPO))


def _readline(proc: subprocess.Popen, timeout: float = 60.0) -> str:
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        return proc.stdout.readline().strip()
    finally:
        timer.cancel()


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
@pytest.mark.parametrize("name", ["seg.npz", "seg.nii.gz"])
def test_sigkill_in_the_middle_of_a_write_keeps_the_old_file(tmp_path, name):
    target = tmp_path / name
    old_labels = np.full((4, 8, 8), 1, np.uint8)
    write_labels(target, old_labels)
    before = target.read_bytes()
    proc = _start_child(textwrap.dedent(_CHILD_STALLS.format(repo=str(REPO), target=str(target))))
    try:
        assert _readline(proc) == "WRITING"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert target.read_bytes() == before  # the old file, byte for byte
    leftovers = [p for p in tmp_path.iterdir() if p.name != name]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".seg.tmp-")  # the half-written temp file
    assert leftovers[0].read_bytes().startswith(b"PARTIAL")
    if name.endswith(".npz"):
        with np.load(target) as npz:
            np.testing.assert_array_equal(npz["segs"], old_labels)
    else:
        np.testing.assert_array_equal(read_image(target).array, old_labels)


_CHILD_LOOPS = """
import sys, time
sys.path.insert(0, {repo!r})
import numpy as np
import medsam_edge.io as mio

rng = np.random.default_rng(0)
versions = [rng.integers(0, 9, size=(24, 192, 192)).astype(np.uint16) + 1 for _ in range(2)]
i = 0
while True:
    t0 = time.perf_counter()
    print("BEGIN", flush=True)
    mio.write_labels({target!r}, versions[i % 2])
    print("END", time.perf_counter() - t0, flush=True)
    i += 1
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_at_random_moments_never_leaves_a_partial_file(tmp_path):
    target = tmp_path / "vol.nii.gz"
    rng = np.random.default_rng(0)
    versions = [rng.integers(0, 9, size=(24, 192, 192)).astype(np.uint16) + 1 for _ in range(2)]
    chooser = random.Random(1234)
    mid_write_kills = 0
    for _ in range(4):
        for p in tmp_path.glob(".vol.tmp-*"):
            p.unlink()
        proc = _start_child(textwrap.dedent(_CHILD_LOOPS.format(repo=str(REPO), target=str(target))))
        try:
            durations = []
            while len(durations) < 2:  # two complete writes: measure how long one takes
                line = _readline(proc)
                assert line, "child died"
                if line.startswith("END"):
                    durations.append(float(line.split()[1]))
            assert _readline(proc) == "BEGIN"
            time.sleep(chooser.uniform(0.1, 0.9) * min(durations))
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        got = read_image(target).array  # must be complete and valid ...
        assert any(np.array_equal(got, v) for v in versions)  # ... and one of the two versions exactly
        mid_write_kills += bool(list(tmp_path.glob(".vol.tmp-*")))
    assert mid_write_kills >= 1  # at least one kill landed while a temp file was being written



@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".mha"])
def test_a_read_volume_is_held_once_at_the_peak(tmp_path, suffix):
    """Reading an 80 MB volume raises the process's peak RSS by about 80 MB, not 160 MB: NIfTI voxels are
    decompressed straight into the array (ITK's reader holds them twice), other formats give the SimpleITK image's
    own buffer as the (writeable) array instead of copying it out."""
    vol = (np.arange(160 * 512 * 512, dtype=np.int64) % 1999 - 900).astype(np.int16).reshape(160, 512, 512)
    img = sitk.GetImageFromArray(vol)
    img.SetSpacing((0.75, 0.75, 2.0))
    big, small = tmp_path / f"big{suffix}", tmp_path / f"small{suffix}"
    sitk.WriteImage(img, str(big), useCompression=suffix == ".nii.gz", compressionLevel=1)
    sitk.WriteImage(sitk.GetImageFromArray(vol[:2, :16, :16]), str(small))
    code = textwrap.dedent(
        f"""
        import gc, json
        import numpy as np
        from medsam_edge.io import read_image

        def status(key):
            with open("/proc/self/status") as f:
                return next(int(line.split()[1]) for line in f if line.startswith(key)) / 1024

        read_image(r"{small}")  # SimpleITK and its reader loaded
        gc.collect()
        rss = status("VmRSS:")
        loaded = read_image(r"{big}")
        peak = status("VmHWM:")
        a = loaded.array
        gc.collect()
        ok = bool(a.flags.writeable and a.shape == (160, 512, 512) and a.dtype == np.int16)
        checksum = int(a[::7, ::5, ::3].astype(np.int64).sum())
        a[0, 0, 0] = 1234
        print(json.dumps({{"grew_mb": peak - rss, "ok": ok, "checksum": checksum, "written": int(a[0, 0, 0]),
                           "spacing": list(loaded.geometry.spacing)}}))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    nbytes_mb = vol.nbytes / 2**20
    assert out["ok"] and out["written"] == 1234 and np.allclose(out["spacing"], [0.75, 0.75, 2.0])
    assert out["checksum"] == int(vol[::7, ::5, ::3].astype(np.int64).sum())
    assert out["grew_mb"] < 1.4 * nbytes_mb, f"reading {nbytes_mb:.0f} MB raised the peak by {out['grew_mb']:.0f} MB"


def _nifti_variant(src: Path, dst: Path, edit) -> Path:
    import gzip

    raw = bytearray(src.read_bytes())
    edit(raw)
    with (gzip.open(dst, "wb") if dst.suffix == ".gz" else open(dst, "wb")) as fh:
        fh.write(bytes(raw))
    return dst


def test_nifti_read_directly_matches_simpleitk_voxels_and_geometry(tmp_path, monkeypatch):
    """The one-pass NIfTI reader gives what sitk.ReadImage gives (voxels, dtype, spacing, origin, direction) for
    every voxel type and orientation header; headers it does not take (scaled intensities, negative pixdim, 4D)
    still read through ITK, with ITK's result."""
    import struct

    rng = np.random.default_rng(5)
    calls = []
    real_check = mio._check_nifti_complete
    monkeypatch.setattr(mio, "_check_nifti_complete", lambda path: (calls.append(Path(path).name), real_check(path)))

    def same(path: Path) -> None:
        got = read_image(path)
        ref = sitk.ReadImage(str(path))
        want = sitk.GetArrayFromImage(ref)
        assert got.array.dtype == want.dtype and got.array.shape == want.shape, path.name
        assert np.array_equal(got.array, want), path.name
        assert got.geometry == Geometry.from_sitk(ref), path.name
        assert got.kind == "3d" and got.format == "nifti"

    for i, dtype in enumerate([np.int16, np.uint8, np.float32, np.uint16, np.int8, np.float64, np.int32, np.uint32]):
        vol = (rng.standard_normal((5 + i, 7, 9)) * 60).astype(dtype)
        img = sitk.GetImageFromArray(vol)
        img.SetSpacing((0.5 + i, 0.7, 2.5))
        img.SetOrigin((1.0, -2.0 * i, 3.0))
        rot = np.linalg.qr(rng.standard_normal((3, 3)))[0]
        img.SetDirection(tuple((rot * np.sign(np.linalg.det(rot))).ravel()))
        for suffix in (".nii", ".nii.gz"):
            path = tmp_path / f"v{i}{suffix}"
            sitk.WriteImage(img, str(path))
            same(path)
    assert calls == [], f"ITK's path was used for {calls}"

    base = tmp_path / "base.nii"
    img = sitk.GetImageFromArray((np.arange(4 * 5 * 6) - 50).astype(np.int16).reshape(4, 5, 6))
    img.SetSpacing((0.5, 0.6, 2.0))
    sitk.WriteImage(img, str(base))
    direct = {
        "no_orientation.nii": lambda b: struct.pack_into("<2h", b, 252, 0, 0),
        "qform_flipped.nii.gz": lambda b: (struct.pack_into("<2h", b, 252, 1, 0), struct.pack_into("<f", b, 76, -1.0)),
        "slope_zero.nii.gz": lambda b: struct.pack_into("<2f", b, 112, 0.0, 0.0),
    }
    through_itk = {
        "scaled.nii": lambda b: struct.pack_into("<2f", b, 112, 2.0, -3.0),
        "negative_pixdim.nii": lambda b: struct.pack_into("<f", b, 80, -0.5),
        "four_d.nii": lambda b: struct.pack_into("<8h", b, 40, 4, 6, 5, 4, 1, 1, 1, 1),
    }
    for name, edit in {**direct, **through_itk}.items():
        calls.clear()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            same(_nifti_variant(base, tmp_path / name, edit))
        assert calls == ([name] if name in through_itk else []), name
    assert read_image(tmp_path / "scaled.nii").array.dtype == np.float32  # ITK's rescale, not the stored int16
