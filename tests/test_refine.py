"""ROI zoom (``Segmenter(refine=...)``): window geometry, planning, option checks, the 3D hook, and the real model.

Geometry and planning are checked against hand-computed windows; the slice loop's hook with a fake model (fast);
the real model on small labelled fixtures (determinism, shapes, borders, and that zoom raises DSC on small targets).
"""

from __future__ import annotations

import numpy as np
import pytest

from calibration.data import load_fixtures
from medsam_edge import ConfigurationError, Segmenter
from medsam_edge import _kernels_py as twin
from medsam_edge.metrics import dice
from medsam_edge.refine import (
    ZoomOptions,
    VolumeZoom,
    Zoom,
    boxes_in_window,
    check_refine,
    crop_window,
    enlarge,
    paste,
    plan_crops,
    window_gain,
)
from medsam_edge.volume import segment_volume

pytestmark = pytest.mark.model

# -- geometry ----------------------------------------------------------------------------------------------------


def test_window_is_centred_square_of_the_documented_side():
    # 40 px box -> side 60 < 64 -> 64; centre (120, 80) -> start 88 / 48
    assert crop_window([100, 60, 140, 100], 300, 400) == (88, 48, 152, 112)
    # 100 px box -> side 150, centre (250, 150)
    assert crop_window([200, 100, 300, 200], 300, 400) == (175, 75, 325, 225)
    # scale and min_side are honoured
    assert crop_window([200, 100, 300, 200], 300, 400, scale=2.0, min_side=8) == (150, 50, 350, 250)
    x0, y0, x1, y1 = crop_window([10, 10, 30, 20], 300, 400, min_side=100)
    assert (x1 - x0, y1 - y0) == (100, 100)


@pytest.mark.parametrize("box", [[0, 0, 20, 20], [380, 280, 400, 300], [0, 150, 10, 170], [395, 0, 400, 5]])
def test_window_at_borders_is_shifted_inside(box):
    h, w = 300, 400
    x0, y0, x1, y1 = crop_window(box, h, w)
    assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
    assert (x1 - x0, y1 - y0) == (64, 64)
    assert x0 <= box[0] and box[2] <= x1 and y0 <= box[1] and box[3] <= y1  # the box stays inside its window


def test_window_larger_than_image_covers_the_short_axis():
    # 50 x 300 image: a 64 px window cannot fit vertically -> full height, 64 wide
    assert crop_window([100, 10, 110, 20], 50, 300) == (73, 0, 137, 50)
    # tiny image: the whole image, gain 1
    win = crop_window([1, 1, 2, 2], 20, 30)
    assert win == (0, 0, 30, 20) and window_gain(win, 20, 30) == 1.0


def test_one_pixel_box_gets_the_minimum_window():
    x0, y0, x1, y1 = crop_window([50, 50, 51, 51], 200, 200)
    assert (x1 - x0, y1 - y0) == (64, 64) and x0 <= 50 and x1 >= 51


def test_boxes_in_window_and_paste_round_trip():
    win = (10, 20, 74, 84)
    local = boxes_in_window(np.array([[30, 40, 50, 60], [0, 0, 200, 200]]), win)
    assert local.tolist() == [[20, 20, 40, 40], [0, 0, 64, 64]]  # the second is clipped to the window
    small = np.zeros((1, 64, 64), bool)
    small[0, 5:9, 3:4] = True
    full = paste(small, win, 100, 120)
    assert full.shape == (1, 100, 120) and full.sum() == 4
    assert full[0, 25:29, 13].all()


def test_enlarge_methods():
    crop = np.arange(64 * 48, dtype=np.uint8).reshape(64, 48)
    big = enlarge(crop, "linear")
    assert big.shape == twin.resized_shape(64, 48) == (256, 192) and big.dtype == np.uint8
    assert enlarge(crop, "area") is crop  # the preprocessing enlarges it with INTER_AREA
    large = np.zeros((300, 200), np.uint8)
    assert enlarge(large, "linear") is large  # shrinking is the preprocessing's job


# -- planning --------------------------------------------------------------------------------------------------------


def test_plan_groups_nearby_boxes_and_respects_budget():
    h = w = 400
    boxes = np.array([[100, 100, 110, 110], [115, 100, 125, 112], [300, 300, 310, 310], [20, 300, 30, 312]], float)
    one = plan_crops(boxes, h, w, ZoomOptions(max_crops=1))
    assert len(one) == 1
    assert set(one[0].members) >= {0, 1}  # the two neighbours share the window (most boxes per window wins)
    many = plan_crops(boxes, h, w, ZoomOptions(max_crops=10))
    assert sorted(m for c in many for m in c.members) == [0, 1, 2, 3]  # every box served once
    assert len(many) == 3  # 0 and 1 share a window for free, 2 and 3 are far apart
    for c in many:
        x0, y0, x1, y1 = c.window
        for m in c.members:
            bx0, by0, bx1, by1 = boxes[m]
            assert x0 <= bx0 and bx1 <= x1 and y0 <= by0 and by1 <= y1
        assert c.gain >= ZoomOptions().min_gain


def test_plan_gates_large_boxes_and_small_gains():
    boxes = np.array([[10, 10, 30, 30], [50, 50, 250, 250]], float)
    plans = plan_crops(boxes, 300, 300, ZoomOptions(max_crops=4))
    assert [c.members for c in plans] == [(0,)]  # the 200 px box would gain 1.0
    assert plan_crops(boxes, 300, 300, ZoomOptions(max_crops=4, max_box=16)) == []
    assert plan_crops(boxes, 60, 60, ZoomOptions()) == []  # image barely above the minimum window
    assert plan_crops(np.zeros((0, 4)), 300, 300, ZoomOptions()) == []


# -- options -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad, word", [
    (dict(scale=0.5), "scale"), (dict(min_side=0), "min_side"), (dict(min_gain=1.0), "min_gain"),
    (dict(max_box=-3), "max_box"), (dict(max_crops=0), "max_crops"), (dict(max_crops=1.5), "max_crops"),
    (dict(upscale="cubic"), "upscale"), (dict(select="best"), "select"), (dict(scale=float("nan")), "scale"),
    (dict(margin="x"), "margin"), (dict(volume_step=0), "volume_step"), (dict(volume_step=True), "volume_step"),
])
def test_bad_zoom_options_raise_configuration_error(bad, word):
    with pytest.raises(ConfigurationError, match=word):
        ZoomOptions(**bad)


@pytest.mark.parametrize("bad", ["Zoom", "yes", 1, True, {"scale": 2}])
def test_bad_refine_value_raises_before_loading_models(bad):
    with pytest.raises(ConfigurationError, match="refine"):
        Segmenter(refine=bad, model_dir="/nonexistent")  # the option is checked before any model file
    assert check_refine(None) is None and check_refine("zoom") == ZoomOptions()


# -- the slice-loop hook with a fake model ----------------------------------------------------------------------------


class FakeModel:
    """'Embedding' = the normalised model input; 'decoder' = bright pixels inside the prompt box, with a fixed predicted
    IoU (so the test decides which of the full-slice and the zoomed mask wins)."""

    def __init__(self, iou: float):
        self.iou = iou

    def encode_tensor(self, tensor):
        return tensor[:, :1].copy()

    def encode_slice(self, slice2d):
        return self.encode_tensor(twin.preprocess(slice2d)[0])

    def decode(self, embedding, boxes256):
        img = embedding[0, 0]
        out = np.full((len(boxes256), 256, 256), -1.0, np.float32)
        for k, (x0, y0, x1, y1) in enumerate(np.asarray(boxes256, int)):
            sub = img[y0:y1 + 1, x0:x1 + 1]
            out[k, y0:y1 + 1, x0:x1 + 1] = np.where(sub > 0.5, 1.0, -1.0)
        return out, np.full(len(boxes256), self.iou, np.float32)


def _blob_volume(depth: int = 9):
    vol = np.zeros((depth, 120, 160), np.uint8)
    yy, xx = np.mgrid[:120, :160]
    for z in range(depth):
        r = 4 + (z % 4)
        vol[z][(yy - 40) ** 2 + (xx - 50) ** 2 <= r * r] = 200  # a small blob, box 1
        vol[z][(yy - 80) ** 2 + (xx - 120) ** 2 <= 36] = 150  # another, box 2
        vol[z, 0:3, :] = 30  # something else so no slice is constant
    boxes = np.array([[42, 32, 1, 58, 48, depth - 2], [112, 72, 0, 128, 88, depth - 1]], float)
    return vol, boxes


@pytest.mark.parametrize("zoom_wins", [True, False])
def test_volume_hook_keeps_shapes_and_chooses_by_iou(zoom_wins):
    vol, boxes = _blob_volume()
    model, zoomed = FakeModel(0.5), FakeModel(0.9 if zoom_wins else 0.1)
    base = segment_volume(vol, boxes, model.encode_slice, model.decode)
    zoom = Zoom(ZoomOptions(max_crops=2), zoomed.encode_tensor, zoomed.decode)
    res = segment_volume(vol, boxes, model.encode_slice, model.decode, refine=zoom)
    assert res.label_map.shape == vol.shape and res.label_map.dtype == np.uint16
    assert np.array_equal(res.boxes, boxes) and res.encoded_slices == base.encoded_slices
    assert zoom.encoded > 0
    if zoom_wins:
        assert np.all(res.scores[~np.isnan(res.scores)] == np.float32(0.9))
    else:  # the full-slice masks win everywhere: identical to no refinement
        assert np.array_equal(res.label_map, base.label_map)
        assert np.all(res.scores[~np.isnan(res.scores)] == np.float32(0.5))
    # the zoomed masks still cover the blobs (geometry of the crop/paste round trip)
    for i, (x0, y0, z0, x1, y1, z1) in enumerate(boxes.astype(int)):
        for z in range(z0, z1 + 1):
            truth = np.zeros(vol.shape[1:], bool)
            truth[y0:y1, x0:x1] = vol[z, y0:y1, x0:x1] > 0
            assert dice(res.mask(i)[z], truth) > 0.8


def test_volume_step_zooms_every_other_slice():
    vol, boxes = _blob_volume()
    model, zoomed = FakeModel(0.5), FakeModel(0.9)
    active = []  # boxes decoded per slice call, in call order

    def spy(image, bx, masks, scores, logits=None, frame=None):
        active.append(len(bx))
        return masks, scores, np.zeros(len(bx), bool)

    segment_volume(vol, boxes, model.encode_slice, model.decode, refine=spy)
    for step in (1, 2, 3):
        hook = VolumeZoom(Zoom(ZoomOptions(max_crops=2, volume_step=step), zoomed.encode_tensor, zoomed.decode))
        res = segment_volume(vol, boxes, model.encode_slice, model.decode, refine=hook)
        assert hook.calls == len(active)
        # the two blobs are far apart: one window per active box, on calls 0, step, 2 * step, ...
        assert hook.zoom.encoded == sum(active[::step])
        assert np.count_nonzero(res.scores == np.float32(0.9)) == sum(active[::step])


# -- the real model ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def segs():
    return Segmenter(threads=2), Segmenter(threads=2, refine="zoom")


SMALL_TARGET_CASES = ("2D_MR_mni_coronal120_x1", "2D_MR_mni_axial60_x0.6")


@pytest.fixture(scope="module")
def mni_runs(segs):
    """(sample, default result, zoom result) of two labelled MNI slices with many small structures."""
    default, zoom = segs
    samples = {s.name: s for s in load_fixtures("2d") if s.name in SMALL_TARGET_CASES}
    return [(samples[n], default(samples[n].image, samples[n].boxes), zoom(samples[n].image, samples[n].boxes))
            for n in SMALL_TARGET_CASES]


def test_zoom_is_deterministic_and_keeps_shapes(segs, mni_runs):
    _, zoom = segs
    s, ref, a = mni_runs[0]
    assert a.masks.shape == ref.masks.shape and a.label_map.shape == s.image.shape[:2]
    assert a.masks.dtype == bool and a.label_map.dtype == np.uint16 and a.scores.shape == ref.scores.shape
    assert np.array_equal(a.boxes, ref.boxes)
    assert not np.array_equal(a.masks, ref.masks)  # the option really changes something on small targets
    # the same call again, through the two-step API: the same answer bit for bit
    zoom.set_image(s.image)
    b = zoom.predict(s.boxes)
    assert np.array_equal(a.masks, b.masks) and np.array_equal(a.scores, b.scores)


def test_zoom_raises_dsc_on_small_targets(mni_runs):
    gains = []
    for s, a, b in mni_runs:
        for i in range(len(s.boxes)):
            gt = s.gts == i + 1
            gains.append(dice(b.masks[i], gt) - dice(a.masks[i], gt))
    gains = np.array(gains)
    assert gains.mean() > 0.02, gains
    assert (gains < -0.2).sum() == 0, gains


def test_zoom_at_image_borders(segs):
    _, zoom = segs
    rng = np.random.default_rng(3)
    img = (rng.random((60, 220)) * 40).astype(np.uint8)
    yy, xx = np.mgrid[:60, :220]
    img[(yy - 5) ** 2 + (xx - 5) ** 2 <= 25] = 220  # blob in the corner
    img[(yy - 30) ** 2 + (xx - 216) ** 2 <= 16] = 220  # blob on the right edge
    boxes = np.array([[0, 0, 11, 11], [211, 25, 220, 35], [100, 30, 101, 31], [-5, -5, 8, 8]], float)
    res = zoom(img, boxes)
    assert res.masks.shape == (4, 60, 220)
    assert np.array_equal(res.boxes[3], [0, 0, 8, 8])  # clipped like the default pipeline
    for i in (0, 1):  # the blobs at the borders are found
        x0, y0, x1, y1 = res.boxes[i].astype(int)
        truth = np.zeros_like(res.masks[i])
        truth[y0:y1, x0:x1] = img[y0:y1, x0:x1] > 100
        assert dice(res.masks[i], truth) > 0.6


def test_zoom_volume_keeps_geometry(segs, tmp_path):
    import SimpleITK as sitk

    default, zoom = segs
    vol, boxes = _blob_volume(3)
    image = sitk.GetImageFromArray(vol)
    image.SetSpacing((0.8, 0.7, 2.5))
    image.SetOrigin((-10.0, 5.0, 3.0))
    path = tmp_path / "blobs.nii.gz"
    sitk.WriteImage(image, str(path))
    a = zoom.segment_volume(str(path), boxes)
    b = default.segment_volume(str(path), boxes)
    assert a.label_map.shape == vol.shape and np.array_equal(a.boxes, b.boxes)
    assert np.allclose(a.geometry.spacing, (0.8, 0.7, 2.5)) and np.allclose(a.geometry.origin, (-10.0, 5.0, 3.0))
    for i in range(2):
        assert dice(a.mask(i), b.mask(i)) > 0.5  # same targets found
