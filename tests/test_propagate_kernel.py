"""paste_masks (one slice of the 3D loop): native (csrc/propagate.cpp) against the NumPy twin, and the twin against
the reference rule spelled out with postprocess / box_from_mask.

Native and twin must agree exactly: label slice after the call, next boxes, mask crops. The twin's upsampling goes
through cv2 INTER_LINEAR, so these comparisons switch IPP off (as tests/test_kernels.py does for postprocess).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from medsam_edge import _kernels_py as twin
from medsam_edge import kernels

pytestmark = pytest.mark.unit

try:
    from medsam_edge import _native as native
except ImportError:  # pragma: no cover
    native = None

needs_native = pytest.mark.skipif(native is None or not hasattr(native, "paste_masks"),
                                  reason="medsam_edge._native.paste_masks is not built")


pytestmark = pytest.mark.usefixtures("ipp_off")  # tests/conftest.py


def smooth_logits(rng, b, offset=0.0, cells=12):
    """(b, 256, 256) logits that form blobs (so masks have real shapes and edges), shifted by ``offset``."""
    coarse = rng.normal(0, 1, (b, cells, cells)).astype(np.float32)
    return np.stack([cv2.resize(c, (256, 256), interpolation=cv2.INTER_CUBIC) for c in coarse]) + np.float32(offset)


def same(a, b):
    boxes_a, crops_a = a
    boxes_b, crops_b = b
    assert boxes_a.dtype == boxes_b.dtype == np.int64
    assert np.array_equal(boxes_a, boxes_b), (boxes_a, boxes_b)
    assert len(crops_a) == len(crops_b)
    for ca, cb in zip(crops_a, crops_b):
        assert (ca is None) == (cb is None)
        if ca is not None:
            assert (ca[0], ca[1]) == (cb[0], cb[1])
            assert ca[2].dtype == cb[2].dtype == np.bool_
            assert np.array_equal(ca[2], cb[2])


SHAPES = [(512, 512), (90, 120), (37, 301), (256, 256), (128, 128), (300, 77), (1, 40), (513, 255)]


@needs_native
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("offset", [-1.5, -0.3, 0.0, 0.8, -50.0])
def test_native_matches_twin(shape, offset):
    rng = np.random.default_rng(abs(hash((shape, offset))) % 2**32)
    h, w = shape
    new_hw = twin.resized_shape(h, w)
    b = 4
    logits = smooth_logits(rng, b, offset)
    start = rng.integers(0, 6, (h, w)).astype(np.uint16)  # labels already there (earlier boxes, other sweeps)
    values = np.array([2, 3, 5, 65535])
    marks = np.array([1, 255, 7, 3], np.uint8)
    lab_n, lab_t = start.copy(), start.copy()
    out_n = native.paste_masks(logits, new_hw, lab_n, values, marks, 3)
    out_t = twin.paste_masks(logits, new_hw, lab_t, values, marks, 3)
    same(out_n, out_t)
    assert np.array_equal(lab_n, lab_t)


@needs_native
def test_native_matches_twin_on_views_and_4d_logits():
    rng = np.random.default_rng(7)
    vol_n = np.zeros((3, 200, 150), np.uint16)
    vol_t = vol_n.copy()
    logits = smooth_logits(rng, 2, -0.2)[:, None]  # (B, 1, 256, 256)
    new_hw = twin.resized_shape(200, 150)
    for z in range(3):
        same(native.paste_masks(logits, new_hw, vol_n[z], [1, 2], [1, 2], 3),
             twin.paste_masks(logits, new_hw, vol_t[z], [1, 2], [1, 2], 3))
    assert np.array_equal(vol_n, vol_t) and vol_n.any()
    # a strided (non-contiguous) label view is written in place too
    big_n = np.zeros((400, 300), np.uint16)
    big_t = big_n.copy()
    same(native.paste_masks(logits, new_hw, big_n[::2, ::2], [4, 9], [4, 9], 2),
         twin.paste_masks(logits, new_hw, big_t[::2, ::2], [4, 9], [4, 9], 2))
    for margin in (0, 1, 300):  # no widening, and a margin that pushes every side to the 256 square
        same(native.paste_masks(logits, new_hw, big_n[::2, ::2], [4, 9], [4, 9], margin),
             twin.paste_masks(logits, new_hw, big_t[::2, ::2], [4, 9], [4, 9], margin))
    assert np.array_equal(big_n, big_t) and big_n[::2, ::2].any() and not big_n[1::2].any()


@pytest.mark.parametrize("impl", ["twin", "dispatch"])
def test_semantics_match_the_reference_rule(impl):
    """Labels = max(labels, value) where each mask is set, in box order; next box = box_from_mask(mask * mark)."""
    fn = twin.paste_masks if impl == "twin" else kernels.paste_masks
    rng = np.random.default_rng(11)
    h, w = 120, 97
    new_hw = twin.resized_shape(h, w)
    logits = smooth_logits(rng, 3, -0.4)
    logits[2] = -1.0  # an empty mask: no crop, no box
    labels = np.zeros((h, w), np.uint16)
    labels[:10] = 9  # a higher label already there is kept
    expect = labels.copy()
    values, marks = np.array([1, 2, 3]), np.array([1, 2, 3], np.uint8)
    boxes, crops = fn(logits, new_hw, labels, values, marks, 3)
    masks = twin.postprocess(logits, new_hw, (h, w))
    for k in range(3):
        expect[masks[k]] = np.maximum(expect[masks[k]], values[k])
        box = twin.box_from_mask(masks[k].astype(np.uint8) * marks[k], 3)
        assert (boxes[k] == -1).all() if box is None else np.array_equal(boxes[k], box)
        if masks[k].any():
            y0, x0, crop = crops[k]
            full = np.zeros((h, w), bool)
            full[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]] = crop
            assert np.array_equal(full, masks[k])
            assert crop[0].any() and crop[-1].any() and crop[:, 0].any() and crop[:, -1].any()  # tight
        else:
            assert crops[k] is None
    assert np.array_equal(labels, expect)
    assert (labels[:10] == 9).all() and labels.max() == 9 and (labels == 2).any()


def test_mark_changes_the_box_like_the_reference():
    """The reference resizes its uint8 label image: a thin mask can vanish at value 1 and survive at value 255."""
    h, w = 512, 512
    logits = np.full((2, 256, 256), -5.0, np.float32)
    logits[:, 100, 100] = 20.0  # a one-logit spike: a tiny full-resolution blob
    labels = np.zeros((h, w), np.uint16)
    boxes, crops = kernels.paste_masks(logits, (256, 256), labels, [1, 2], [1, 255], 3)
    expect = [twin.box_from_mask(crops_mask(crops[k], h, w).astype(np.uint8) * m, 3) for k, m in enumerate([1, 255])]
    for k in range(2):
        assert (boxes[k] == -1).all() if expect[k] is None else np.array_equal(boxes[k], expect[k])


def crops_mask(crop, h, w):
    full = np.zeros((h, w), bool)
    if crop is not None:
        y0, x0, c = crop
        full[y0:y0 + c.shape[0], x0:x0 + c.shape[1]] = c
    return full


@needs_native
def test_bad_input_raises_not_crashes():
    lg = np.zeros((1, 256, 256), np.float32)
    lab = np.zeros((10, 10), np.uint16)
    cases = [
        ((lg, (256, 256), lab.astype(np.int32), [1], [1]), TypeError),  # labels dtype
        ((lg, (256, 256), np.zeros((2, 10, 10), np.uint16), [1], [1]), ValueError),  # labels ndim
        ((lg, (300, 256), lab, [1], [1]), ValueError),  # new_hw outside the logits
        ((lg, (256, 256), lab, [1, 2], [1]), ValueError),  # values length
        ((lg, (256, 256), lab, [70000], [1]), ValueError),  # value above uint16
        ((lg, (256, 256), lab, [1], [256]), ValueError),  # mark above uint8
        ((lg, (256, 256), lab, [1.5], [1]), TypeError),  # float values
        ((None, (256, 256), lab, [1], [1]), TypeError),
        ((lg, (256, 256), None, [1], [1]), TypeError),
        ((np.zeros((256, 256), np.float32), (256, 256), lab, [1], [1]), ValueError),  # logits ndim
    ]
    for args, exc in cases:
        with pytest.raises(exc):
            native.paste_masks(*args)
    ro = lab.copy()
    ro.setflags(write=False)
    with pytest.raises(ValueError, match="writeable"):
        native.paste_masks(lg, (256, 256), ro, [1], [1])
    # zero boxes: nothing written, empty results
    boxes, crops = native.paste_masks(np.zeros((0, 256, 256), np.float32), (256, 256), lab, [], [])
    assert boxes.shape == (0, 4) and crops == [] and not lab.any()
