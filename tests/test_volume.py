"""The 3D slice loop's bookkeeping, checked against a plain per-box transcription of the official loop.

A fake model stands in for LiteMedSAM: the "embedding" carries the slice's content and the "decoder" returns
positive logits inside the prompt box where the slice is bright. Propagation then really depends on the previous
slice's mask, so ordering, caching, batching and overwrite mistakes change the answer.
"""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest

from medsam_edge import InvalidBoxError, InvalidImageError
from medsam_edge import _kernels_py as twin
from medsam_edge.volume import check_boxes_3d, check_volume, segment_volume

pytestmark = pytest.mark.unit


class FakeModel:
    def __init__(self):
        self.encoded = []

    def encode(self, slice2d):
        self.encoded.append(slice2d.copy())
        tensor, _ = twin.preprocess(slice2d)
        return tensor[:, :1].copy()  # (1, 1, 256, 256): the normalised slice

    def decode(self, embedding, boxes256):
        img = embedding[0, 0]
        out = np.full((len(boxes256), 256, 256), -1.0, np.float32)
        for k, (x0, y0, x1, y1) in enumerate(np.asarray(boxes256, int)):
            sub = img[y0:y1 + 1, x0:x1 + 1]
            out[k, y0:y1 + 1, x0:x1 + 1] = np.where(sub > 0.5, 1.0, -1.0)
        iou = np.linspace(0.5, 0.9, len(boxes256)).astype(np.float32)
        return out, iou


def per_box_reference(volume, boxes, model):
    """The official loop, box by box, re-encoding every slice (no sharing)."""
    d, h, w = volume.shape
    ratio = 256 / max(h, w)
    segs = np.zeros(volume.shape, np.uint16)
    for idx, (x0, y0, z0, x1, y1, z1) in enumerate(np.asarray(boxes, int), start=1):
        temp = np.zeros(volume.shape, np.uint8)
        mid_box = np.array([int(v * ratio) for v in (x0, y0, x1, y1)], np.float32)
        z_mid = int((z1 - z0) / 2 + z0)
        new_hw = twin.resized_shape(h, w)

        def step(z, prev):
            emb = model.encode(volume[z])
            box = mid_box
            if prev is not None:
                b = twin.box_from_mask(temp[prev])
                if b is not None:
                    box = b.astype(np.float32)
            logits, _ = model.decode(emb, box[None])
            mask = twin.postprocess(logits, new_hw, (h, w))[0]
            temp[z][mask] = idx

        for z in range(z_mid, min(z1 + 1, d)):
            step(z, None if z == z_mid else z - 1)
        for z in range(z_mid - 1, max(-1, z0 - 1), -1):
            step(z, z + 1)
        segs[temp > 0] = idx
    return segs


def make_volume(seed=0, shape=(24, 90, 120)):
    rng = np.random.default_rng(seed)
    d, h, w = shape
    zz, yy, xx = np.mgrid[:d, :h, :w]
    vol = np.zeros(shape, np.float64)
    # three blobs whose extent changes with z, plus noise
    for cz, cy, cx, r in ((8, 30, 30, 14), (14, 55, 80, 18), (12, 40, 60, 10)):
        vol += 200 * (((zz - cz) / 1.3) ** 2 + (yy - cy) ** 2 + (xx - cx) ** 2 < r**2)
    vol += rng.normal(0, 10, shape)
    return np.clip(vol, 0, 255).astype(np.uint8)


BOXES = np.array(
    [
        [14, 14, 2, 46, 46, 14],
        [60, 36, 4, 100, 74, 23],
        [48, 28, 6, 74, 52, 18],  # overlaps box 1 and 2 in z and in plane: tests "later wins"
        [10, 60, 20, 20, 70, 20],  # one-slice box
    ]
)


@pytest.mark.parametrize("cache_slices", [0, 2, 64])
def test_propagation_matches_per_box_official_loop(cache_slices):
    vol = make_volume()
    ref = per_box_reference(vol, BOXES, FakeModel())
    model = FakeModel()
    res = segment_volume(vol, check_boxes_3d(BOXES, vol.shape), model.encode, model.decode,
                         strategy="propagate", cache_slices=cache_slices)
    assert res.label_map.dtype == np.uint16
    assert np.array_equal(res.label_map, ref)
    # each slice in the union of z-ranges encoded once per sweep at most; with a big cache exactly once
    union = set()
    for b in BOXES:
        union |= set(range(b[2], b[5] + 1))
    if cache_slices >= 64:
        assert res.encoded_slices == len(union)
    assert res.encoded_slices <= 2 * len(union)
    # per-box masks: the label map equals "later wins" over the per-box masks
    rebuilt = np.zeros_like(ref)
    for i in range(len(BOXES)):
        rebuilt[res.mask(i)] = i + 1
    assert np.array_equal(rebuilt, ref)
    # scores only where a box was decoded
    for i, b in enumerate(BOXES):
        decoded = ~np.isnan(res.scores[i])
        assert decoded.sum() == b[5] - b[2] + 1


def test_slicewise_prompts_every_slice_with_the_2d_box():
    vol = make_volume(1)
    model = FakeModel()
    res = segment_volume(vol, check_boxes_3d(BOXES, vol.shape), model.encode, model.decode, strategy="slicewise")
    for i, (x0, y0, z0, x1, y1, z1) in enumerate(BOXES):
        m = res.mask(i)
        assert not m[:z0].any() and not m[z1 + 1:].any()
    assert res.encoded_slices == len({z for b in BOXES for z in range(b[2], b[5] + 1)})


def test_empty_slices_and_constant_volume_do_not_crash():
    vol = make_volume(2)
    vol[5:9] = 0  # empty slices inside box ranges
    model = FakeModel()
    res = segment_volume(vol, check_boxes_3d(BOXES[:2], vol.shape), model.encode, model.decode)
    assert res.label_map.shape == vol.shape
    const = np.zeros((4, 20, 20), np.uint8)
    res = segment_volume(const, check_boxes_3d([[2, 2, 0, 10, 10, 3]], const.shape), model.encode, model.decode)
    assert res.label_map.max() == 0


def test_box_checks_3d():
    shape = (10, 50, 60)
    clipped = check_boxes_3d([[-5, -5, -3, 70, 80, 30]], shape)
    assert clipped.tolist() == [[0, 0, 0, 60, 50, 9]]
    for bad, match in [
        ([[0, 0, 5, 10, 10, 4]], "inverted"),
        ([[0, 0, 1.5, 10, 10, 4]], "integers"),
        ([[0, 0, 11, 10, 10, 12]], "outside"),
        ([[5, 0, 1, 5, 10, 4]], "zero width"),
        ([[0, 0, 1, 10, 10]], "shape"),
        ([[0, 0, 1, 10, np.nan, 4]], "NaN"),
    ]:
        with pytest.raises(InvalidBoxError, match=match):
            check_boxes_3d(bad, shape)


def test_volume_checks():
    for bad, match in [
        (np.zeros((10, 10), np.uint8), "2D image"),
        (np.zeros((2, 3, 10, 10), np.uint8), "4D"),
        (np.zeros((0, 10, 10), np.uint8), "empty"),
        (np.full((3, 10, 10), np.nan), "NaN"),
        (np.zeros((3, 10, 10), bool), "dtype"),
    ]:
        with pytest.raises(InvalidImageError, match=match):
            check_volume(bad)


# ------------------------------------------------------------------------------------------------ memory bounds
class CountingModel:
    """Embeddings are tracked with weak references: ``peak_alive`` is the most embeddings that existed at once
    (whoever holds them: the cache, the loop, a leak). The decoder answers inside the prompt box, 2 px in."""

    def __init__(self):
        self.alive = 0
        self.peak_alive = 0
        self.encoded = 0
        self.slice_shapes = set()

    def _gone(self):
        self.alive -= 1

    def encode(self, slice2d):
        self.slice_shapes.add(slice2d.shape)
        emb = np.zeros((1, 4, 8, 8), np.float32)  # small stand-in for the (1, 256, 64, 64) embedding
        weakref.finalize(emb, self._gone)
        self.alive += 1
        self.encoded += 1
        self.peak_alive = max(self.peak_alive, self.alive)
        return emb

    def decode(self, embedding, boxes256):
        out = np.full((len(boxes256), 256, 256), -1.0, np.float32)
        for k, (x0, y0, x1, y1) in enumerate(np.asarray(boxes256, int)):
            out[k, y0 + 2:max(y0 + 3, y1 - 2), x0 + 2:max(x0 + 3, x1 - 2)] = 1.0
        return out, np.full(len(boxes256), 0.9, np.float32)


# box 0's upward sweep (z 300..600) overlaps box 1's downward sweep (z 400..698): 201 slices the downward sweep
# needs again; an unbounded cache would hold all of them
HUGE_BOXES = np.array([[100, 100, 0, 160, 160, 600], [300, 300, 400, 360, 360, 999]])


@pytest.mark.parametrize("cache_slices", [0, 8, 16])
def test_512x512x1000_volume_keeps_at_most_cache_slices_embeddings(cache_slices):
    gc.collect()
    # a 512x512x1000 volume without 250 MB of memory: every slice is a view of one slice
    one = make_volume(3, shape=(1, 512, 512))[0]
    vol = np.broadcast_to(one, (1000, 512, 512))
    model = CountingModel()
    res = segment_volume(vol, check_boxes_3d(HUGE_BOXES, vol.shape), model.encode, model.decode,
                         strategy="propagate", cache_slices=cache_slices)
    union = 1000
    # the loop itself holds the embedding of the slice being decoded (+1 while the next one is made)
    assert model.peak_alive <= cache_slices + 2, model.peak_alive
    assert res.encoded_slices == model.encoded
    # every slice once, plus at most the overlap the cache could not keep (201 slices)
    assert union <= model.encoded <= union + 201 - min(cache_slices, 201)
    if cache_slices:
        assert model.encoded == union + 201 - cache_slices
    assert model.slice_shapes == {(512, 512)}
    assert res.label_map.shape == (1000, 512, 512)
    assert res.label_map[300, 130, 130] == 1 and res.label_map[998, 330, 330] == 2


def test_non_uint8_volume_is_converted_one_slice_at_a_time(monkeypatch):
    """segment_volume on int16 reads converted slices on demand: no uint8 (or float) copy of the whole volume."""
    from medsam_edge import intensity
    from medsam_edge.engine import Engine
    from medsam_edge.segmenter import Segmenter

    rng = np.random.default_rng(4)
    vol = (rng.integers(-400, 600, (12, 40, 50))).astype(np.int16)
    boxes = [[5, 5, 2, 30, 30, 9]]
    seen = []
    real = intensity.window_ct

    def spy(array, window="abdomen", **kw):
        seen.append(np.shape(array))
        return real(array, window, **kw)

    monkeypatch.setattr(intensity, "window_ct", spy)
    model = FakeModel()
    # no OpenVINO: only the 3D plumbing of segment_volume is under test
    seg = Segmenter(engine=Engine(lambda tensor: tensor[:, :1].copy(), model.decode), volume_strategy="propagate",
                    cache_dir=None)
    res = seg.segment_volume(vol, boxes, window="abdomen")
    assert seen and all(shape == (40, 50) for shape in seen)
    # same labels as converting the whole volume first
    whole = real(vol, "abdomen")
    ref = segment_volume(whole, check_boxes_3d(boxes, whole.shape), lambda s: twin.preprocess(s)[0][:, :1].copy(),
                         model.decode)
    assert np.array_equal(res.label_map, ref.label_map)


@pytest.mark.parametrize("dtype", [np.int16, np.uint16, np.float32])
def test_slice_converter_matches_whole_volume_conversion(dtype):
    from medsam_edge.intensity import percentile_normalize, slice_converter, window_ct

    rng = np.random.default_rng(5)
    vol = rng.normal(200, 300, (7, 30, 33)).astype(dtype)
    vol[:, :5] = 0  # background stays 0 in the percentile rule
    whole_pct = percentile_normalize(vol)
    whole_ct = window_ct(vol, "lung")
    pct, ct = slice_converter(vol), slice_converter(vol, "lung")
    for z in range(vol.shape[0]):
        assert np.array_equal(pct(z), whole_pct[z])
        assert np.array_equal(ct(z), whole_ct[z])


def test_default_strategy_is_slicewise_and_reference_keeps_the_official_propagation(monkeypatch):
    import inspect

    from medsam_edge.segmenter import Segmenter

    assert inspect.signature(Segmenter.__init__).parameters["volume_strategy"].default == "slicewise"
    seen = {}

    def fake_init(self, precision="fp32", **kwargs):  # no OpenVINO: only the defaults reference() passes
        seen.update(kwargs, precision=precision)

    monkeypatch.setattr(Segmenter, "__init__", fake_init)
    Segmenter.reference()
    assert seen["volume_strategy"] == "propagate" and seen["precision"] == "fp32"
    seen.clear()
    Segmenter.reference(volume_strategy="slicewise")  # an explicit choice still wins
    assert seen["volume_strategy"] == "slicewise"


def _disc(shape, cy, cx, r):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    m = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
    return int(rows[0]), int(cols[0]), m[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def _paint(shape, crop):
    out = np.zeros(shape, bool)
    if crop is not None:
        y0, x0, m = crop
        out[y0:y0 + m.shape[0], x0:x0 + m.shape[1]] = m
    return out


def test_interpolate_masks_blends_signed_distances():
    from medsam_edge import kernels

    shape = (100, 120)
    small, big = _disc(shape, 50, 60, 10), _disc(shape, 50, 60, 20)
    out = kernels.interpolate_masks(small, big, [0.0, 0.25, 0.5, 0.75, 1.0], shape)
    assert np.array_equal(_paint(shape, out[0]), _paint(shape, small))
    assert np.array_equal(_paint(shape, out[-1]), _paint(shape, big))
    for t, crop in zip([0.25, 0.5, 0.75], out[1:4]):
        r = (1 - t) * 10 + t * 20
        assert abs(_paint(shape, crop).sum() / (np.pi * r * r) - 1) < 0.05, t  # a disc of the blended radius
        assert (_paint(shape, crop) >= _paint(shape, small)).all() and (_paint(shape, crop) <= _paint(shape, big)).all()
    # a shifted disc: the blend's centre moves half way
    a, b = _disc(shape, 40, 40, 15), _disc(shape, 50, 60, 15)
    mid = _paint(shape, kernels.interpolate_masks(a, b, [0.5], shape)[0])
    yy, xx = np.nonzero(mid)
    assert abs(yy.mean() - 45) < 0.5 and abs(xx.mean() - 50) < 0.5
    # far apart (no overlap in between): the nearer mask; one side empty: repeated up to half way; both empty
    far = kernels.interpolate_masks(_disc(shape, 20, 20, 8), _disc(shape, 80, 100, 8), [0.3, 0.7], shape)
    assert np.array_equal(_paint(shape, far[0]), _paint(shape, _disc(shape, 20, 20, 8)))
    assert np.array_equal(_paint(shape, far[1]), _paint(shape, _disc(shape, 80, 100, 8)))
    half = kernels.interpolate_masks(small, None, [0.25, 0.75], shape)
    assert np.array_equal(_paint(shape, half[0]), _paint(shape, small)) and half[1] is None
    half = kernels.interpolate_masks(None, big, [0.25, 0.75], shape)
    assert half[0] is None and np.array_equal(_paint(shape, half[1]), _paint(shape, big))
    assert kernels.interpolate_masks(None, None, [0.5], shape) == [None]
    # masks at the slice's border: the result stays inside the slice
    corner = kernels.interpolate_masks(_disc(shape, 0, 0, 12), _disc(shape, 99, 119, 12), [0.5], shape)[0]
    y0, x0, m = corner
    assert y0 >= 0 and x0 >= 0 and y0 + m.shape[0] <= shape[0] and x0 + m.shape[1] <= shape[1]


class SphereModel:
    """A decoder that segments the bright disc inside the box, on slices of a ball whose radius changes with z."""

    def __init__(self):
        self.encoded = 0

    def encode(self, slice2d):
        self.encoded += 1
        tensor, _ = twin.preprocess(slice2d)
        return tensor[:, :1].copy()

    decode = FakeModel.decode


def _ball(shape=(31, 128, 128), r=13.0):
    d, h, w = shape
    zz, yy, xx = np.mgrid[:d, :h, :w]
    return ((((zz - 15) * 1.0) ** 2 + ((yy - 64) / 4.0) ** 2 + ((xx - 64) / 4.0) ** 2) < r * r).astype(np.uint8) * 200


@pytest.mark.parametrize("strategy", ["slicewise", "propagate"])
def test_slice_step_decodes_key_slices_and_interpolates_the_rest(strategy):
    vol = _ball()
    boxes = check_boxes_3d([[4, 4, 3, 124, 124, 27], [10, 10, 5, 120, 120, 9]], vol.shape)
    full_model, step_model = SphereModel(), SphereModel()
    full = segment_volume(vol, boxes, full_model.encode, full_model.decode, strategy=strategy)
    assert full.slice_step == 1
    res = segment_volume(vol, boxes, step_model.encode, step_model.decode, strategy=strategy, slice_step=3,
                         cache_slices=64)
    assert res.slice_step == 3
    # key slices: z % 3 == 0 and each box's ends (and middle for propagate); nothing else is encoded
    zmid = [15, 7]
    keys = [{z for z in range(z0, z1 + 1) if z % 3 == 0 or z in (z0, z1) or (strategy == "propagate" and z == m)}
            for (z0, z1), m in zip([(3, 27), (5, 9)], zmid)]
    assert res.encoded_slices == len(keys[0] | keys[1]) == step_model.encoded
    for i, k in enumerate(keys):
        assert set(np.flatnonzero(~np.isnan(res.scores[i]))) == k
    # key slices carry the decoded masks; the interpolated slices stay close to the decoded ones (a smooth ball)
    for i in range(2):
        m_full, m_step = full.mask(i), res.mask(i)
        z0, z1 = int(boxes[i, 2]), int(boxes[i, 5])
        assert not m_step[:z0].any() and not m_step[z1 + 1:].any()
        if strategy == "slicewise":  # slicewise key slices are prompted exactly as in the full run
            for z in keys[i]:
                assert np.array_equal(m_step[z], m_full[z])
        inter = 2 * (m_step & m_full).sum() / (m_step.sum() + m_full.sum())
        assert inter > 0.97, inter
    # the label map is "later wins" over the per-box masks, interpolated slices included
    rebuilt = np.zeros(vol.shape, np.uint16)
    for i in range(2):
        rebuilt[res.mask(i)] = i + 1
    assert np.array_equal(rebuilt, res.label_map)


def test_slice_step_1_is_the_plain_loop_and_bad_steps_raise():
    vol = make_volume(3)
    boxes = check_boxes_3d(BOXES, vol.shape)
    a, b = FakeModel(), FakeModel()
    plain = segment_volume(vol, boxes, a.encode, a.decode, strategy="propagate")
    step1 = segment_volume(vol, boxes, b.encode, b.decode, strategy="propagate", slice_step=1)
    assert np.array_equal(plain.label_map, step1.label_map) and plain.encoded_slices == step1.encoded_slices
    for bad in (0, -2, 1.5, True, "2"):
        with pytest.raises(ValueError, match="slice_step"):
            segment_volume(vol, boxes, a.encode, a.decode, slice_step=bad)


def _resident_bytes(array: np.ndarray) -> int:
    """Resident bytes of the memory mappings that overlap ``array``'s buffer (/proc/self/smaps)."""
    start = array.__array_interface__["data"][0]
    end = start + array.nbytes
    total, inside = 0, False
    with open("/proc/self/smaps", encoding="ascii") as fh:
        for line in fh:
            head = line.split()
            if head and "-" in head[0] and len(head) >= 5:
                lo, hi = (int(v, 16) for v in head[0].split("-"))
                inside = lo < end and hi > start
            elif inside and head[0] == "Rss:":
                total += int(head[1]) * 1024
    return total


def test_sparse_zeros_is_a_writeable_zeroed_array():
    from medsam_edge.volume import SPARSE_ZEROS_MIN_BYTES, sparse_zeros

    for shape, dtype in [((3, 4), np.uint16), ((40, 512, 512), np.uint16), ((20, 512, 512), bool)]:
        arr = sparse_zeros(shape, dtype)
        assert arr.shape == shape and arr.dtype == np.dtype(dtype) and arr.flags.writeable and arr.flags.c_contiguous
        assert not arr.any()
        arr.flat[-1] = 1
        assert int(arr.sum()) == 1
    assert sparse_zeros((2, 2), np.uint16).nbytes < SPARSE_ZEROS_MIN_BYTES  # small arrays: plain np.zeros


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/smaps"), reason="needs Linux /proc/self/smaps")
def test_sparse_label_map_holds_only_the_pages_masks_touch():
    """NumPy's zeroed arrays >= 4 MiB ask for transparent huge pages: one write made 2 MiB resident. The label map
    of segment_volume must not: a 64 x 512 x 512 volume with a 30 x 30 box on 60 slices touches ~60 x 8 pages."""
    from medsam_edge.volume import sparse_zeros

    probe = sparse_zeros((64, 512, 512), np.uint16)  # 32 MiB; one value every 2 MiB
    probe.reshape(-1)[:: (2 << 20) // 2] = 1
    assert _resident_bytes(probe) <= 1 << 20, _resident_bytes(probe)

    vol = np.broadcast_to(make_volume(4, shape=(1, 512, 512))[0], (64, 512, 512))
    model = CountingModel()
    res = segment_volume(vol, check_boxes_3d(np.array([[200, 200, 2, 230, 230, 61]]), vol.shape), model.encode,
                         model.decode, strategy="slicewise")
    assert res.label_map[30, 215, 215] == 1 and int((res.label_map > 0).sum()) > 60 * 400
    # 60 slices x (30 rows of 1 KiB = 8 pages) ~ 2 MB; huge pages would make it ~30 MB
    assert _resident_bytes(res.label_map) <= 4 << 20, _resident_bytes(res.label_map)
    full = res.mask(0)
    assert int(full.sum()) == int((res.label_map == 1).sum())
    assert _resident_bytes(full) <= 4 << 20, _resident_bytes(full)


def test_segment_case_releases_the_input_volume_before_writing_the_labels(monkeypatch, tmp_path):
    """The writer copies the label map into a SimpleITK image (+1 label map); the CLI's peak RSS on a 512 x 512 x
    200 int16 NIfTI was that copy on top of the still-referenced input (667 MB, 567 MB once released)."""
    import medsam_edge.io as mio
    from medsam_edge import jobs

    vol = make_volume(5, shape=(6, 64, 64)).astype(np.int16)
    alive = {"input": True}
    weakref.finalize(vol, alive.update, input=False)
    geometry = mio.Geometry(spacing=(0.8, 0.8, 2.0), origin=(0.0, 0.0, 0.0), direction=tuple(np.eye(3).ravel()))
    loaded = mio.LoadedImage(array=vol, kind="3d", source="x.nii.gz", format="nifti", geometry=geometry)
    del vol
    handed = [loaded]
    del loaded
    monkeypatch.setattr(mio, "read_image", lambda path: handed.pop())
    seen = {}

    def fake_write(path, labels, reference=None, extra=None):
        gc.collect()
        seen.update(input_alive=alive["input"], reference=reference, shape=labels.shape)
        return path

    monkeypatch.setattr(mio, "write_labels", fake_write)

    class FakeSegmenter:
        def segment_volume(self, source, boxes, **kwargs):
            model = CountingModel()
            return segment_volume(source.array.astype(np.uint8), check_boxes_3d(boxes, source.array.shape),
                                  model.encode, model.decode, strategy="slicewise")

    out = jobs.segment_case(lambda: FakeSegmenter(), tmp_path / "x.nii.gz", tmp_path / "seg.nii.gz",
                            boxes=np.array([[10, 10, 1, 40, 40, 4]]))
    assert seen == {"input_alive": False, "reference": geometry, "shape": (6, 64, 64)}
    assert out.kind == "3d" and out.boxes == 1
