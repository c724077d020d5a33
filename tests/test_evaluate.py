"""Tests of medsam_edge.evaluate on small synthetic challenge folders."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from medsam_edge import evaluate as E
from medsam_edge.errors import ConfigurationError, InvalidImageError, UnreadableFileError
from medsam_edge.metrics import compute_dsc_nsd

pytestmark = pytest.mark.unit

STORED_XYZ = np.array([0.8, 0.8, 2.5])  # as the challenge files store it: (x, y, z)
ZYX = (2.5, 0.8, 0.8)


def _vol():
    gt = np.zeros((12, 24, 24), np.uint8)
    gt[3:9, 4:14, 4:14] = 1
    gt[2:10, 15:21, 12:20] = 2
    return gt


def _img():
    gt = np.zeros((40, 40), np.uint8)
    yy, xx = np.ogrid[:40, :40]
    gt[(yy - 20) ** 2 + (xx - 18) ** 2 <= 100] = 1
    gt[2:8, 30:38] = 2
    return gt


@pytest.fixture()
def folders(tmp_path):
    """Five ground-truth cases and their segmentations.

    * 3DBox_CT_0001: shifted by one slice along z -> z spacing decides NSD (2.5 mm > tau, 0.8 mm <= tau)
    * 3DBox_MR_0002: perfect
    * 2DBox_US_0003: shifted by 3 px along x
    * 2DBox_US_0004: no segmentation file (scored 0)
    * 2DBox_Endoscopy_0005: ground truth without foreground (not scored)
    plus a segmentation without a ground truth.
    """
    seg_dir, gt_dir = tmp_path / "segs", tmp_path / "gts"
    seg_dir.mkdir()
    gt_dir.mkdir()
    v, im = _vol(), _img()
    np.savez(gt_dir / "3DBox_CT_0001.npz", gts=v, spacing=STORED_XYZ)
    np.savez(seg_dir / "3DBox_CT_0001.npz", segs=np.roll(v, 1, axis=0))
    np.savez(gt_dir / "3DBox_MR_0002.npz", gts=v, spacing=STORED_XYZ)
    np.savez(seg_dir / "3DBox_MR_0002.npz", segs=v.copy())
    np.savez(gt_dir / "2DBox_US_0003.npz", gts=im)
    np.savez(seg_dir / "2DBox_US_0003.npz", segs=np.roll(im, 3, axis=1))
    np.savez(gt_dir / "2DBox_US_0004.npz", gts=im)
    np.savez(gt_dir / "2DBox_Endoscopy_0005.npz", gts=np.zeros((10, 10), np.uint8))
    np.savez(seg_dir / "2DBox_Endoscopy_0005.npz", segs=np.zeros((10, 10), np.uint8))
    np.savez(seg_dir / "2DBox_XRay_0999.npz", segs=im)
    return seg_dir, gt_dir


def test_scores_per_case_modality_and_overall(folders):
    seg_dir, gt_dir = folders
    rep = E.evaluate_folder(seg_dir, gt_dir)
    by = {c.case: c for c in rep.cases}
    assert [c.case for c in rep.cases] == sorted(by)

    v, im = _vol(), _img()
    ct = compute_dsc_nsd(np.roll(v, 1, axis=0), v, ZYX)
    assert by["3DBox_CT_0001.npz"].spacing == ZYX  # stored (x, y, z) reversed
    assert by["3DBox_CT_0001.npz"].dsc == ct.mean_dsc and by["3DBox_CT_0001.npz"].nsd == ct.mean_nsd
    assert ct.mean_nsd < 1.0  # a 2.5 mm slice shift is beyond the 2 mm tolerance
    assert by["3DBox_MR_0002.npz"].dsc == 1.0 and by["3DBox_MR_0002.npz"].nsd == 1.0
    us = compute_dsc_nsd(np.roll(im, 3, axis=1), im, (1, 1))
    assert by["2DBox_US_0003.npz"].spacing == (1.0, 1.0)
    assert (by["2DBox_US_0003.npz"].dsc, by["2DBox_US_0003.npz"].nsd) == (us.mean_dsc, us.mean_nsd)
    assert by["2DBox_US_0004.npz"].status == "missing"
    assert (by["2DBox_US_0004.npz"].dsc, by["2DBox_US_0004.npz"].nsd) == (0.0, 0.0)
    assert by["2DBox_Endoscopy_0005.npz"].status == "no-foreground"
    assert math.isnan(by["2DBox_Endoscopy_0005.npz"].dsc)
    assert by["3DBox_CT_0001.npz"].modality == "CT" and by["2DBox_US_0003.npz"].dim == "2D"

    assert rep.missing == ("2DBox_US_0004.npz",)
    assert rep.unmatched == ("2DBox_XRay_0999.npz",)
    assert rep.no_foreground == ("2DBox_Endoscopy_0005.npz",)
    assert set(rep.modalities) == {"CT", "MR", "US"}  # the no-foreground case has no score to average
    usm = rep.modalities["US"]
    assert usm.cases == 2
    assert usm.mean_dsc == pytest.approx(us.mean_dsc / 2) and usm.mean_nsd == pytest.approx(us.mean_nsd / 2)
    scored = [ct.mean_dsc, 1.0, us.mean_dsc, 0.0]
    assert rep.mean_dsc == pytest.approx(np.mean(scored))
    assert rep.mean_nsd == pytest.approx(np.mean([ct.mean_nsd, 1.0, us.mean_nsd, 0.0]))
    assert rep.modality_mean_dsc == pytest.approx(np.mean([ct.mean_dsc, 1.0, us.mean_dsc / 2]))
    assert rep.spacing_order == "xyz" and rep.tolerance == 2.0 and rep.nsd_2d == "challenge"


def test_spacing_order_and_override(folders):
    seg_dir, gt_dir = folders
    v = _vol()
    shifted = np.roll(v, 1, axis=0)
    as_stored = E.evaluate_folder(seg_dir, gt_dir, spacing_order="zyx")
    ct = next(c for c in as_stored.cases if c.case.startswith("3DBox_CT"))
    # "zyx" uses the stored triple unchanged on the (z, y, x) array, as the challenge script does: z gets 0.8 mm.
    assert ct.spacing == tuple(STORED_XYZ)
    assert ct.nsd == compute_dsc_nsd(shifted, v, tuple(STORED_XYZ)).mean_nsd == 1.0
    forced = E.evaluate_folder(seg_dir, gt_dir, spacing=(4.0, 1.0, 1.0))
    ct = next(c for c in forced.cases if c.case.startswith("3DBox_CT"))
    assert ct.spacing == (4.0, 1.0, 1.0) and forced.spacing_override == (4.0, 1.0, 1.0)
    assert ct.nsd == compute_dsc_nsd(shifted, v, (4.0, 1.0, 1.0)).mean_nsd
    # 2D cases always use 1 pixel
    assert all(c.spacing == (1.0, 1.0) for c in forced.cases if c.dim == "2D")


def test_contour_mode_changes_only_2d_cases(folders):
    seg_dir, gt_dir = folders
    a = E.evaluate_folder(seg_dir, gt_dir)
    b = E.evaluate_folder(seg_dir, gt_dir, nsd_2d="contour")
    for ca, cb in zip(a.cases, b.cases):
        if ca.dim == "3D" or ca.status != "ok":
            assert (ca.nsd == cb.nsd) or (math.isnan(ca.nsd) and math.isnan(cb.nsd))
    us_a = next(c for c in a.cases if c.case == "2DBox_US_0003.npz")
    us_b = next(c for c in b.cases if c.case == "2DBox_US_0003.npz")
    assert us_a.dsc == us_b.dsc and us_a.nsd != us_b.nsd


def test_markdown_and_csv(folders, tmp_path):
    seg_dir, gt_dir = folders
    rep = E.evaluate_folder(seg_dir, gt_dir)
    md = rep.to_markdown()
    assert "| Modality | Cases | DSC | NSD |" in md
    assert "| US | 2 |" in md and "| **All cases** | 4 |" in md
    assert "Missing segmentations: 2DBox_US_0004.npz" in md
    assert "2DBox_XRay_0999.npz" in md and "2DBox_Endoscopy_0005.npz" in md
    assert "stored order assumed (x, y, z)" in md
    assert f"{rep.mean_dsc:.4f}" in md
    out = rep.to_csv(tmp_path / "metrics.csv")
    with out.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["case"] for r in rows] == [c.case for c in rep.cases]
    row = {r["case"]: r for r in rows}
    ct = next(c for c in rep.cases if c.case == "3DBox_CT_0001.npz")
    assert float(row["3DBox_CT_0001.npz"]["nsd"]) == pytest.approx(ct.nsd, abs=1e-6)
    assert row["3DBox_CT_0001.npz"]["spacing"] == "2.5 0.8 0.8"
    assert row["2DBox_US_0004.npz"]["status"] == "missing" and row["2DBox_US_0004.npz"]["dsc"] == "0.000000"
    assert row["2DBox_Endoscopy_0005.npz"]["dsc"] == "nan"


def test_name_parsing():
    assert E.case_modality("3DBox_MR_0001.npz") == "MR"
    assert E.case_modality("2DBox_Dermoscopy_ISIC_0001.npz") == "Dermoscopy"
    assert E.case_modality("2DBox_CT.npz") == "CT"
    assert E.case_modality("case.npz") == "unknown"
    assert E.case_dimension("3DBox_CT_1.npz") == "3D" and E.case_dimension("2DBox_CT_1.npz") == "2D"
    assert E.case_dimension("case.npz", 3) == "3D"
    with pytest.raises(InvalidImageError, match="2D or a 3D"):
        E.case_dimension("case.npz", 4)


def test_load_case_spacing():
    assert E.load_case_spacing(np.array([0.7, 0.8, 3.0]), "x") == (3.0, 0.8, 0.7)
    assert E.load_case_spacing(np.array([0.7, 0.8, 3.0]), "x", "zyx") == (0.7, 0.8, 3.0)
    assert E.load_case_spacing(None, "x", "xyz", (2, 1, 1)) == (2.0, 1.0, 1.0)
    with pytest.raises(InvalidImageError, match="3 finite values"):
        E.load_case_spacing(np.array([1.0, 0.0, 1.0]), "x")
    with pytest.raises(InvalidImageError, match="3 finite values"):
        E.load_case_spacing(np.array([1.0, 1.0]), "x")
    with pytest.raises(UnreadableFileError, match="no 'spacing'"):
        E.load_case_spacing(None, "3DBox_CT_1.npz")
    with pytest.raises(ConfigurationError, match="spacing_order"):
        E.load_case_spacing(np.ones(3), "x", "yxz")


def _two_dirs(tmp_path):
    seg_dir, gt_dir = tmp_path / "s", tmp_path / "g"
    seg_dir.mkdir()
    gt_dir.mkdir()
    return seg_dir, gt_dir


def test_bad_files_raise_typed_errors(tmp_path):
    seg_dir, gt_dir = _two_dirs(tmp_path)
    im = _img()
    np.savez(gt_dir / "2DBox_US_1.npz", gts=im)

    np.savez(seg_dir / "2DBox_US_1.npz", masks=im)  # wrong key
    with pytest.raises(UnreadableFileError, match="no 'segs' array"):
        E.evaluate_folder(seg_dir, gt_dir)

    (seg_dir / "2DBox_US_1.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(UnreadableFileError, match="cannot read segmentation file"):
        E.evaluate_folder(seg_dir, gt_dir)

    np.savez(seg_dir / "2DBox_US_1.npz", segs=np.array([{"a": 1}], dtype=object))  # needs pickle: refused
    with pytest.raises(UnreadableFileError, match="cannot read segmentation file"):
        E.evaluate_folder(seg_dir, gt_dir)

    np.savez(seg_dir / "2DBox_US_1.npz", segs=im[:-1])
    with pytest.raises(InvalidImageError, match="shape"):
        E.evaluate_folder(seg_dir, gt_dir)

    np.savez(seg_dir / "2DBox_US_1.npz", segs=im.astype(np.float32))
    with pytest.raises(InvalidImageError, match="integer labels"):
        E.evaluate_folder(seg_dir, gt_dir)


def test_3d_case_needs_spacing_unless_overridden(tmp_path):
    seg_dir, gt_dir = _two_dirs(tmp_path)
    v = _vol()
    np.savez(gt_dir / "3DBox_CT_1.npz", gts=v)
    np.savez(seg_dir / "3DBox_CT_1.npz", segs=v)
    with pytest.raises(UnreadableFileError, match="spacing"):
        E.evaluate_folder(seg_dir, gt_dir)
    rep = E.evaluate_folder(seg_dir, gt_dir, spacing=(1.0, 1.0, 1.0))
    assert rep.mean_dsc == 1.0 and rep.mean_nsd == 1.0


def test_dimension_prefix_must_match_the_array(tmp_path):
    seg_dir, gt_dir = _two_dirs(tmp_path)
    np.savez(gt_dir / "2DBox_CT_1.npz", gts=_vol())
    with pytest.raises(InvalidImageError, match=r"2-axis \(y, x\)"):
        E.evaluate_folder(seg_dir, gt_dir)


def test_folder_errors(tmp_path):
    seg_dir, gt_dir = _two_dirs(tmp_path)
    with pytest.raises(UnreadableFileError, match="no .npz files"):
        E.evaluate_folder(seg_dir, gt_dir)
    with pytest.raises(UnreadableFileError, match="does not exist"):
        E.evaluate_folder(seg_dir, tmp_path / "nope")
    np.savez(gt_dir / "2DBox_US_1.npz", gts=_img())
    with pytest.raises(ConfigurationError, match="spacing_order"):
        E.evaluate_folder(seg_dir, gt_dir, spacing_order="ijk")
    with pytest.raises(ConfigurationError, match="nsd_2d"):
        E.evaluate_folder(seg_dir, gt_dir, nsd_2d="x")
    with pytest.raises(ConfigurationError, match="tolerance"):
        E.evaluate_folder(seg_dir, gt_dir, tolerance=float("nan"))
    rep = E.evaluate_folder(seg_dir, gt_dir)  # everything missing: all zeros, still a report
    assert rep.mean_dsc == 0.0 and rep.missing == ("2DBox_US_1.npz",)
