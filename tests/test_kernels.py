"""Native kernels (medsam_edge._native, csrc/) against their NumPy/OpenCV twin (medsam_edge._kernels_py).

Guarantees checked here:
* preprocess / resize_area / box_from_mask on uint8: bit-identical to the twin (OpenCV INTER_AREA, all three of its
  code paths: integer-factor block average, general area weights, enlarging).
* float path (any non-uint8 dtype): max abs difference <= 1e-5 (in practice identical; test_resize_area pins the
  float32 INTER_AREA arithmetic bit for bit).
* postprocess: identical masks against OpenCV's own INTER_LINEAR code (cv2 with IPP off). cv2's default build routes
  float32 INTER_LINEAR through Intel IPP, which rounds differently; there masks may differ only where the
  interpolated logit is within 1e-5 * max(1, max|logits|) of 0.
* label_map: identical.
* Bad input raises TypeError / ValueError, never crashes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medsam_edge import _kernels_py as twin
from medsam_edge import kernels

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
PURE = os.environ.get("MEDSAM_EDGE_PURE_PYTHON", "").strip().lower() not in ("", "0", "false", "no")

try:
    from medsam_edge import _native as native
except ImportError:  # pragma: no cover - only without a compiled extension
    native = None

needs_native = pytest.mark.skipif(native is None, reason="medsam_edge._native is not built")
HYPO = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------------------------------------------- helpers
def seed_of(*parts) -> int:
    """Deterministic per-case seed (hash() of strings changes between runs)."""
    return zlib.crc32(repr(parts).encode())


# ipp_off: tests/conftest.py


def make_image(rng: np.random.Generator, shape: tuple[int, ...], dtype, kind: str = "random") -> np.ndarray:
    """Test content: random noise, smooth gradients, two levels (many rounding ties) or constant."""
    h, w = shape[:2]
    if kind == "smooth":
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
        base = np.sin(yy / max(h, 1) * 5.0 + 0.3) * np.cos(xx / max(w, 1) * 7.0) * 0.5 + 0.5
        if len(shape) == 3:
            base = np.stack([np.roll(base, 3 * c, axis=1) for c in range(shape[2])], axis=-1)
        unit = base
    elif kind == "levels":
        unit = rng.integers(0, 2, shape).astype(np.float64)
    elif kind == "constant":
        unit = np.full(shape, 0.4)
    elif np.dtype(dtype) == np.uint8:
        unit = None  # drawn directly below
    else:
        unit = rng.random(shape)
    dtype = np.dtype(dtype)
    if dtype == np.uint8:
        if kind == "random":
            return rng.integers(0, 256, shape, dtype=np.uint8)
        return np.round(unit * 255).astype(np.uint8)
    if dtype == np.uint16:
        return np.round(unit * 4095).astype(np.uint16)
    if dtype == np.int16:
        return np.round(unit * 4000 - 1024).astype(np.int16)
    if dtype == np.int32:
        return np.round(unit * 70000 - 30000).astype(np.int32)
    if dtype == np.bool_:
        return unit > 0.5
    return (unit * 300.0 - 80.0).astype(dtype)


def smooth_logits(rng: np.random.Generator, b: int, size: int = 256, amp: float = 8.0) -> np.ndarray:
    """(B, 1, size, size) logits shaped like a decoder's: smooth blobs crossing 0."""
    coarse = rng.standard_normal((b, 12, 12)).astype(np.float32) * amp
    return np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_CUBIC) for c in coarse])[:, None]


def assert_pre_equal(img: np.ndarray) -> None:
    a, hw_a = twin.preprocess(img)
    b, hw_b = native.preprocess(img)
    assert tuple(hw_b) == tuple(hw_a)
    assert b.shape == (1, 3, 256, 256) and b.dtype == np.float32 and b.flags.c_contiguous
    if img.dtype == np.uint8:
        np.testing.assert_array_equal(b, a)
    else:
        assert np.abs(b.astype(np.float64) - a).max() <= 1e-5


def bilinear_values(logits: np.ndarray, new_hw, orig_hw) -> np.ndarray:
    """Interpolated logits as OpenCV computes them without IPP."""
    before = cv2.ipp.useIPP()
    cv2.ipp.setUseIPP(False)
    try:
        lg = np.asarray(logits, dtype=np.float32)
        if lg.ndim == 4:
            lg = lg[:, 0]
        crop = [np.ascontiguousarray(x[: new_hw[0], : new_hw[1]]) for x in lg]
        return np.stack([cv2.resize(c, (orig_hw[1], orig_hw[0]), interpolation=cv2.INTER_LINEAR) for c in crop])
    finally:
        cv2.ipp.setUseIPP(before)


def assert_masks_close(got: np.ndarray, ref: np.ndarray, values: np.ndarray, band: float) -> None:
    assert got.shape == ref.shape and got.dtype == np.bool_
    diff = got != ref
    if diff.any():
        worst = float(np.abs(values[diff]).max())
        assert worst <= band, f"{int(diff.sum())} pixels differ, interpolated |logit| up to {worst} > {band}"


# ---------------------------------------------------------------------------------------------------- backend
def test_backend_is_native_unless_forced():
    if PURE:
        assert kernels.BACKEND == "numpy"
    else:
        assert native is not None, "the native extension did not build/import"
        assert kernels.BACKEND == "native"
        assert kernels.preprocess is native.preprocess
        assert kernels.postprocess is native.postprocess
        assert kernels.label_map is native.label_map
        assert kernels.resize_area is native.resize_area
        assert kernels.box_from_mask is native.box_from_mask


def test_pure_python_switch_in_subprocess():
    env = dict(os.environ, MEDSAM_EDGE_PURE_PYTHON="1")
    code = "import medsam_edge.kernels as k; print(k.BACKEND)"
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "numpy"


# ---------------------------------------------------------------------------------------------------- preprocess
SHAPES = [
    (1, 1), (1, 7), (7, 1), (1, 256), (256, 1), (2, 3), (5, 300), (300, 5), (17, 300), (600, 2), (257, 3), (255, 3),
    (100, 70), (70, 100), (128, 128), (255, 255), (256, 256), (256, 100), (257, 257), (200, 150), (333, 111),
    (511, 513), (512, 512), (512, 300), (768, 768), (768, 512), (1024, 1024), (1024, 512), (999, 1001),
    (1030, 777), (1500, 1000), (2048, 1536), (3000, 2000),
]  # fmt: skip
LAYOUTS = ["grey", "grey1", "rgb"]


def with_layout(shape, layout):
    return shape if layout == "grey" else shape + ((1,) if layout == "grey1" else (3,))


UINT8_CASES = [
    (shape, layout, kind)
    for shape in SHAPES
    for layout in LAYOUTS
    for kind in ("random", "smooth", "levels")
    if shape[0] * shape[1] <= 2_000_000 or (layout == "grey" and kind != "levels")
]


@needs_native
@pytest.mark.parametrize("shape,layout,kind", UINT8_CASES, ids=lambda v: f"{v[0]}x{v[1]}" if isinstance(v, tuple) else v)
def test_preprocess_uint8_exact(shape, layout, kind):
    rng = np.random.default_rng(seed_of(shape, layout, kind))
    assert_pre_equal(make_image(rng, with_layout(shape, layout), np.uint8, kind))


@needs_native
@pytest.mark.parametrize("shape", [s for s in SHAPES if s[0] * s[1] <= 1_600_000], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("layout", ["grey", "rgb"])
@pytest.mark.parametrize("dtype", [np.uint16, np.int16, np.float32, np.float64])
def test_preprocess_float_path(shape, layout, dtype):
    rng = np.random.default_rng(seed_of(shape, layout, np.dtype(dtype).name))
    kind = "smooth" if shape[0] % 2 else "random"
    assert_pre_equal(make_image(rng, with_layout(shape, layout), dtype, kind))


@needs_native
@pytest.mark.parametrize("dtype", [np.bool_, np.int8, np.int32, np.uint32, np.int64, np.float16, ">u2", "<f8"])
def test_preprocess_other_dtypes(dtype):
    rng = np.random.default_rng(7)
    dt = np.dtype(dtype)
    if dt.kind == "b":
        img = rng.random((300, 200)) > 0.5
    elif dt.kind in "iu":
        info = np.iinfo(dt)
        img = rng.integers(max(info.min, -5000), min(info.max, 60000), (300, 200)).astype(dt)
    else:
        img = (rng.standard_normal((300, 200)) * 50).astype(dt)
    assert_pre_equal(img)


@needs_native
@pytest.mark.parametrize("shape", [(64, 48), (512, 512), (700, 300)])
def test_preprocess_constant_image(shape):
    for dtype in (np.uint8, np.float32):
        assert_pre_equal(make_image(np.random.default_rng(0), shape + (3,), dtype, "constant"))


@needs_native
def test_preprocess_views():
    rng = np.random.default_rng(3)
    rgb = make_image(rng, (613, 411, 3), np.uint8)
    views = {
        "negative strides": rgb[::-1, ::-1],
        "bgr->rgb": rgb[:, :, ::-1],
        "steps": rgb[::2, 1::3],
        "transposed": rgb.transpose(1, 0, 2),
        "fortran": np.asfortranarray(rgb),
        "channel view": rgb[:, :, 1],
        "channel view 3d": rgb[:, :, 1:2],
    }
    for name, view in views.items():
        assert_pre_equal(view)
        assert_pre_equal(view.astype(np.float32)[::-1])
    unaligned = np.frombuffer(b"\0" + rgb.astype(np.float32).tobytes(), dtype=np.float32, offset=1)
    assert_pre_equal(unaligned.reshape(rgb.shape))


@needs_native
def test_preprocess_reuses_out():
    img = make_image(np.random.default_rng(1), (300, 500, 3), np.uint8)
    out = np.full((1, 3, 256, 256), 7.0, dtype=np.float32)
    res, hw = native.preprocess(img, out)
    assert res is out
    np.testing.assert_array_equal(out, twin.preprocess(img)[0])
    res2, _ = native.preprocess(img[:100, :50], out=out)
    assert res2 is out
    np.testing.assert_array_equal(out, twin.preprocess(img[:100, :50])[0])


@needs_native
def test_preprocess_rounding_ties():
    # 2x2 blocks summing to 4k + 2 (OpenCV rounds half up there) and 4x4 blocks summing to 16k + 8 (half to even)
    tile2 = np.array([[0, 1], [1, 0]], dtype=np.uint8)
    ramp = (np.arange(512) // 2 * 2 % 250).astype(np.uint8)
    img2 = np.tile(tile2, (256, 256)) + ramp[None, :]
    assert_pre_equal(img2)
    tile4 = np.zeros((4, 4), np.uint8)
    tile4[0, :2] = 4
    img4 = np.tile(tile4, (256, 256)) + (np.arange(1024) % 7).astype(np.uint8)[:, None]
    assert_pre_equal(img4)
    assert_pre_equal(np.tile(np.array([[0, 255]], np.uint8), (700, 450)))


@needs_native
@HYPO
@given(
    h=st.integers(1, 700),
    w=st.integers(1, 700),
    layout=st.sampled_from(LAYOUTS),
    kind=st.sampled_from(["random", "smooth", "levels"]),
    dtype=st.sampled_from([np.uint8, np.uint8, np.float32, np.int16]),
    seed=st.integers(0, 2**32 - 1),
)
def test_preprocess_property(h, w, layout, kind, dtype, seed):
    if min(twin.resized_shape(h, w)) < 1:
        with pytest.raises(ValueError):
            native.preprocess(np.zeros((h, w), np.uint8))
        return
    assert_pre_equal(make_image(np.random.default_rng(seed), with_layout((h, w), layout), dtype, kind))


# ---------------------------------------------------------------------------------------------------- resize_area
RESIZES = [
    ((512, 512), (256, 256)), ((768, 768), (256, 256)), ((1024, 512), (256, 128)), ((300, 200), (100, 50)),
    ((90, 60), (27, 18)), ((100, 100), (30, 30)), ((50, 50), (30, 30)), ((1000, 10), (300, 3)), ((37, 23), (37, 23)),
    ((100, 70), (256, 179)), ((13, 7), (256, 138)), ((3, 3), (256, 256)), ((1, 1), (256, 256)), ((128, 128), (256, 256)),
    ((5, 40), (32, 256)), ((200, 255), (201, 256)), ((2, 255), (3, 256)), ((100, 300), (200, 150)), ((257, 3), (256, 3)),
    ((1, 500), (1, 256)), ((500, 1), (256, 1)), ((17, 200), (22, 256)),
]  # fmt: skip


@needs_native
@pytest.mark.parametrize("src_hw,dst_hw", RESIZES, ids=lambda v: f"{v[0]}x{v[1]}")
@pytest.mark.parametrize("channels", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_resize_area(src_hw, dst_hw, channels, dtype):
    rng = np.random.default_rng(seed_of(src_hw, dst_hw, channels))
    shape = src_hw if channels == 0 else src_hw + (channels,)
    img = make_image(rng, shape, dtype, "random" if channels % 2 else "levels")
    a = twin.resize_area(img, *dst_hw)
    b = native.resize_area(img, *dst_hw)
    assert b.shape == a.shape and b.dtype == a.dtype
    # float32 too is reproduced operation by operation (summation order included), so equality is exact here;
    # only the float tolerance of 1e-5 is part of the contract (see test_resize_area_property).
    np.testing.assert_array_equal(b, a)


@needs_native
@HYPO
@given(
    h=st.integers(1, 300),
    w=st.integers(1, 300),
    nh=st.integers(1, 300),
    nw=st.integers(1, 300),
    factor=st.sampled_from([0, 0, 1, 2, 3, 4, 5]),
    channels=st.sampled_from([0, 1, 3, 4]),
    dtype=st.sampled_from([np.uint8, np.float32]),
    seed=st.integers(0, 2**32 - 1),
)
def test_resize_area_property(h, w, nh, nw, factor, channels, dtype, seed):
    if factor:  # exercise the integer-factor path
        nh, nw = max(1, h // factor), max(1, w // factor)
        h, w = nh * factor, nw * factor
    shape = (h, w) if channels == 0 else (h, w, channels)
    img = make_image(np.random.default_rng(seed), shape, dtype, "levels" if seed % 3 == 0 else "random")
    a = twin.resize_area(img, nh, nw)
    b = native.resize_area(img, nh, nw)
    assert b.shape == a.shape and b.dtype == a.dtype
    if dtype == np.uint8:
        np.testing.assert_array_equal(b, a)
    else:
        assert np.abs(b - a).max() <= 1e-5 * max(1.0, float(np.abs(a).max()))


# ---------------------------------------------------------------------------------------------------- postprocess
POST = [
    ((256, 256), (3000, 3000)), ((256, 171), (1024, 683)), ((171, 256), (683, 1024)), ((256, 256), (512, 512)),
    ((256, 256), (256, 256)), ((256, 256), (128, 128)), ((200, 256), (100, 128)), ((256, 64), (1000, 250)),
    ((256, 1), (1000, 1)), ((1, 256), (1, 1000)), ((256, 256), (37, 41)), ((256, 200), (3001, 2345)),
    ((5, 7), (13, 11)), ((256, 256), (255, 257)), ((256, 256), (1, 1)), ((256, 3), (600, 7)),
]  # fmt: skip


@needs_native
@pytest.mark.parametrize("new_hw,orig_hw", POST, ids=lambda v: f"{v[0]}x{v[1]}")
@pytest.mark.parametrize("kind", ["smooth", "random"])
def test_postprocess_matches_opencv(ipp_off, new_hw, orig_hw, kind):
    rng = np.random.default_rng(seed_of(new_hw, orig_hw, kind))
    lg = smooth_logits(rng, 3) if kind == "smooth" else rng.standard_normal((3, 1, 256, 256)).astype(np.float32) * 5
    lg[:, :, new_hw[0] :, :] = 1e3  # padding must be ignored
    lg[:, :, :, new_hw[1] :] = -1e3
    ref = twin.postprocess(lg, new_hw, orig_hw)
    vals = bilinear_values(lg, new_hw, orig_hw)
    assert_masks_close(native.postprocess(lg, new_hw, orig_hw), ref, vals, 1e-5)
    assert_masks_close(native.postprocess(lg[:, 0], new_hw, orig_hw), ref, vals, 1e-5)


@needs_native
@pytest.mark.parametrize("new_hw,orig_hw", POST[:8], ids=lambda v: f"{v[0]}x{v[1]}")
def test_postprocess_matches_default_cv2(new_hw, orig_hw):
    """Against the twin as shipped (cv2 with IPP): differences only at logits within 1e-5 relative of 0."""
    rng = np.random.default_rng(11)
    lg = rng.standard_normal((2, 1, 256, 256)).astype(np.float32) * 5
    band = 1e-5 * max(1.0, float(np.abs(lg).max()))
    vals = bilinear_values(lg, new_hw, orig_hw)
    assert_masks_close(native.postprocess(lg, new_hw, orig_hw), twin.postprocess(lg, new_hw, orig_hw), vals, band)


@needs_native
def test_postprocess_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    lg = smooth_logits(rng, 2)
    for new_hw, orig_hw in [((256, 171), (1024, 683)), ((256, 256), (900, 900)), ((200, 256), (100, 128))]:
        crop = torch.from_numpy(np.ascontiguousarray(lg[:, :, : new_hw[0], : new_hw[1]]))
        up = torch.nn.functional.interpolate(crop, size=orig_hw, mode="bilinear", align_corners=False)[:, 0].numpy()
        band = 1e-5 * max(1.0, float(np.abs(lg).max()))
        assert_masks_close(native.postprocess(lg, new_hw, orig_hw), up > 0, up, band)


@needs_native
def test_postprocess_views_and_dtypes(ipp_off):
    rng = np.random.default_rng(9)
    lg = smooth_logits(rng, 3)
    ref = twin.postprocess(lg, (256, 171), (1000, 683))
    vals = bilinear_values(lg, (256, 171), (1000, 683))
    flipped = np.ascontiguousarray(lg[::-1, :, ::-1, ::-1])[::-1, :, ::-1, ::-1]  # negative strides, same values
    for variant in (flipped, lg.astype(np.float64), np.asfortranarray(lg), lg[:, :1]):
        assert_masks_close(native.postprocess(variant, (256, 171), (1000, 683)), ref, vals, 1e-5)
    empty = native.postprocess(lg[:0], (256, 171), (10, 7))
    assert empty.shape == (0, 10, 7) and empty.dtype == np.bool_
    assert native.postprocess(lg, np.array([256, 171]), [1000, 683]).shape == (3, 1000, 683)


@needs_native
@HYPO
@given(
    nh=st.integers(1, 64),
    nw=st.integers(1, 64),
    oh=st.integers(1, 400),
    ow=st.integers(1, 400),
    smooth=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_postprocess_property(nh, nw, oh, ow, smooth, seed):
    rng = np.random.default_rng(seed)
    lg = smooth_logits(rng, 2, 64) if smooth else rng.standard_normal((2, 64, 64)).astype(np.float32)
    before = cv2.ipp.useIPP()
    cv2.ipp.setUseIPP(False)
    try:
        ref = twin.postprocess(lg, (nh, nw), (oh, ow))
    finally:
        cv2.ipp.setUseIPP(before)
    vals = bilinear_values(lg, (nh, nw), (oh, ow))
    assert_masks_close(native.postprocess(lg, (nh, nw), (oh, ow)), ref, vals, 1e-5)


# ---------------------------------------------------------------------------------------------------- label_map
@needs_native
@pytest.mark.parametrize("n", [0, 1, 2, 5, 40])
@pytest.mark.parametrize("shape", [(1, 1), (37, 53), (512, 512)])
def test_label_map(n, shape):
    rng = np.random.default_rng(n * 1000 + shape[0])
    masks = rng.random((n,) + shape) > 0.6
    got = native.label_map(masks)
    assert got.dtype == np.uint16 and got.shape == shape
    np.testing.assert_array_equal(got, twin.label_map(masks))
    np.testing.assert_array_equal(native.label_map(masks[:, ::-1, ::2]), twin.label_map(masks[:, ::-1, ::2]))
    np.testing.assert_array_equal(native.label_map(np.asfortranarray(masks)), twin.label_map(masks))


@needs_native
@HYPO
@given(n=st.integers(0, 12), h=st.integers(0, 40), w=st.integers(0, 40), seed=st.integers(0, 2**32 - 1))
def test_label_map_property(n, h, w, seed):
    masks = np.random.default_rng(seed).random((n, h, w)) > 0.5
    np.testing.assert_array_equal(native.label_map(masks), twin.label_map(masks))


@needs_native
def test_label_map_many_masks():
    masks = np.zeros((300, 2, 2), bool)
    masks[299, 0, 0] = masks[3, 1, 1] = True
    np.testing.assert_array_equal(native.label_map(masks), [[300, 0], [0, 4]])


# ---------------------------------------------------------------------------------------------------- box_from_mask
def blob_mask(rng, shape, value):
    h, w = shape
    m = np.zeros(shape, np.uint8)
    y0, x0 = rng.integers(0, h), rng.integers(0, w)
    m[y0 : y0 + rng.integers(1, max(2, h // 3)), x0 : x0 + rng.integers(1, max(2, w // 3))] = value
    return m


@needs_native
@pytest.mark.parametrize("shape", [(512, 512), (1024, 768), (300, 400), (100, 60), (1, 1), (7, 300), (3000, 2000)])
@pytest.mark.parametrize("value", [1, 2, 7, 255])
@pytest.mark.parametrize("margin", [0, 3, 10])
def test_box_from_mask(shape, value, margin):
    rng = np.random.default_rng(seed_of(shape, value, margin))
    mask = blob_mask(rng, shape, value)
    a, b = twin.box_from_mask(mask, margin), native.box_from_mask(mask, margin)
    if a is None:
        assert b is None
    else:
        assert b.dtype == np.int64
        np.testing.assert_array_equal(b, a)
    assert native.box_from_mask(np.zeros(shape, np.uint8)) is None


@needs_native
@HYPO
@given(
    h=st.integers(1, 600),
    w=st.integers(1, 600),
    value=st.integers(1, 255),
    margin=st.integers(-5, 20),
    seed=st.integers(0, 2**32 - 1),
)
def test_box_from_mask_property(h, w, value, margin, seed):
    if min(twin.resized_shape(h, w)) < 1:
        return
    mask = blob_mask(np.random.default_rng(seed), (h, w), value)
    for m in (mask, mask[::-1], mask > 0):
        a, b = twin.box_from_mask(m, margin), native.box_from_mask(m, margin)
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_array_equal(b, a)


# ---------------------------------------------------------------------------------------------------- errors
BAD_CALLS = [
    ("preprocess", (None,), TypeError),
    ("preprocess", ("text",), TypeError),
    ("preprocess", (np.zeros((4, 4), complex),), TypeError),
    ("preprocess", (np.zeros((4, 4), object),), TypeError),
    ("preprocess", (np.zeros((0, 5), np.uint8),), ValueError),
    ("preprocess", (np.zeros((5, 0, 3), np.uint8),), ValueError),
    ("preprocess", (np.zeros(5, np.uint8),), ValueError),
    ("preprocess", (np.zeros((2, 2, 2, 2), np.uint8),), ValueError),
    ("preprocess", (np.zeros((5, 5, 4), np.uint8),), ValueError),
    ("preprocess", (np.zeros((5, 5, 2), np.float32),), ValueError),
    ("preprocess", (np.zeros((1, 1000), np.uint8),), ValueError),
    ("preprocess", (np.zeros((9, 9), np.uint8), np.zeros((1, 3, 256, 255), np.float32)), ValueError),
    ("preprocess", (np.zeros((9, 9), np.uint8), np.zeros((1, 3, 256, 256), np.float64)), TypeError),
    ("preprocess", (np.zeros((9, 9), np.uint8), np.zeros((1, 3, 256, 512), np.float32)[..., ::2]), ValueError),
    ("preprocess", (np.zeros((9, 9), np.uint8), [0.0]), TypeError),
    ("postprocess", (None, (256, 256), (10, 10)), TypeError),
    ("postprocess", ("text", (256, 256), (10, 10)), TypeError),
    ("postprocess", (np.zeros((256, 256), np.float32), (256, 256), (10, 10)), ValueError),
    ("postprocess", (np.zeros((1, 1, 1, 256, 256), np.float32), (256, 256), (10, 10)), ValueError),
    ("postprocess", (np.zeros((1, 0, 256, 256), np.float32), (256, 256), (10, 10)), ValueError),
    ("postprocess", (np.zeros((1, 256, 256), np.float32), (257, 256), (10, 10)), ValueError),
    ("postprocess", (np.zeros((1, 256, 256), np.float32), (0, 256), (10, 10)), ValueError),
    ("postprocess", (np.zeros((1, 256, 256), np.float32), (256, 256), (10, 0)), ValueError),
    ("postprocess", (np.zeros((1, 256, 256), np.float32), (256, 256), (-3, 10)), ValueError),
    ("postprocess", (np.zeros((1, 256, 256), np.float32), (256.0, 256), (10, 10)), TypeError),
    ("postprocess", (np.zeros((1, 256, 256), np.float32), (256, 256, 1), (10, 10)), ValueError),
    ("postprocess", (np.zeros((1, 256, 256), np.float32), None, (10, 10)), TypeError),
    ("postprocess", (np.zeros((1, 256, 256), np.float32), (256, 256), 10), TypeError),
    ("postprocess", (np.zeros((1, 256, 256), np.float32), (256, 256), (2**40, 10)), ValueError),
    ("postprocess", (np.zeros((1, 256, 256), np.float32), (256, 256), (2**70, 10)), ValueError),
    ("label_map", (np.zeros((3, 4, 4), np.uint8),), TypeError),
    ("label_map", (np.zeros((4, 4), bool),), ValueError),
    ("label_map", (np.zeros((65536, 1, 1), bool),), ValueError),
    ("label_map", (None,), TypeError),
    ("resize_area", (np.zeros((4, 4), np.uint16), 2, 2), TypeError),
    ("resize_area", (np.zeros((4, 4), np.float64), 2, 2), TypeError),
    ("resize_area", (np.zeros((4, 4), np.uint8), 0, 2), ValueError),
    ("resize_area", (np.zeros((4, 4), np.uint8), 2, -1), ValueError),
    ("resize_area", (np.zeros((4, 4), np.uint8), 2.5, 2), TypeError),
    ("resize_area", (np.zeros((0, 4), np.uint8), 2, 2), ValueError),
    ("resize_area", (np.zeros((4, 4, 0), np.uint8), 2, 2), ValueError),
    ("resize_area", (np.zeros((4, 4, 5), np.uint8), 2, 2), ValueError),
    ("resize_area", (np.zeros(4, np.uint8), 2, 2), ValueError),
    ("resize_area", (np.zeros((4, 4), np.uint8), 10**9, 10**9), ValueError),
    ("box_from_mask", (np.zeros((4, 4), np.float32),), TypeError),
    ("box_from_mask", (np.zeros((1, 4, 4), np.uint8),), ValueError),
    ("box_from_mask", (np.zeros((0, 4), np.uint8),), ValueError),
    ("box_from_mask", (np.zeros((1, 1000), np.uint8),), ValueError),
    ("box_from_mask", (np.zeros((4, 4), np.uint8), 1.5), TypeError),
    ("box_from_mask", (None,), TypeError),
]


@needs_native
@pytest.mark.parametrize("name,args,exc", BAD_CALLS, ids=[f"{c[0]}-{i}" for i, c in enumerate(BAD_CALLS)])
def test_bad_input_raises(name, args, exc):
    with pytest.raises(exc):
        getattr(native, name)(*args)


@needs_native
def test_readonly_out_rejected():
    out = np.zeros((1, 3, 256, 256), np.float32)
    out.setflags(write=False)
    with pytest.raises(ValueError):
        native.preprocess(np.zeros((9, 9), np.uint8), out)


@needs_native
def test_odd_values_do_not_crash():
    # NaN / inf are outside the contract (finite values) but must not crash
    img = np.full((300, 200), np.nan, np.float32)
    img[0, 0] = np.inf
    native.preprocess(img)
    native.postprocess(np.full((1, 256, 256), np.nan, np.float32), (256, 256), (300, 300))
    native.resize_area(np.full((50, 50), np.inf, np.float32), 7, 9)


# ---------------------------------------------------------------------------------------------------- threads
@needs_native
def test_concurrent_calls_agree():
    rng = np.random.default_rng(2)
    img = make_image(rng, (1500, 1100, 3), np.uint8)
    lg = smooth_logits(rng, 2)
    want_pre = native.preprocess(img)[0]
    want_post = native.postprocess(lg, (256, 188), (1500, 1100))
    results = []

    def work():
        results.append((native.preprocess(img)[0], native.postprocess(lg, (256, 188), (1500, 1100))))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4
    for pre, post in results:
        np.testing.assert_array_equal(pre, want_pre)
        np.testing.assert_array_equal(post, want_post)


@needs_native
def test_thread_count_does_not_change_results():
    code = (
        "import hashlib, numpy as np\n"
        "from medsam_edge import _native as n\n"
        "rng = np.random.default_rng(0)\n"
        "img = rng.integers(0, 256, (3000, 2800), dtype=np.uint8)\n"
        "h = hashlib.sha256(n.preprocess(img)[0].tobytes())\n"
        "h.update(n.preprocess(img.astype(np.int16))[0].tobytes())\n"
        "h.update(n.preprocess(img[:2048, :2048])[0].tobytes())\n"
        "lg = rng.standard_normal((1, 1024, 1024)).astype(np.float32)\n"
        "h.update(n.postprocess(lg, (1024, 1000), (2900, 2800)).tobytes())\n"  # dense path
        "lg = rng.standard_normal((1, 256, 256)).astype(np.float32)\n"
        "h.update(n.postprocess(lg, (256, 250), (6000, 5860)).tobytes())\n"  # sparse path
        "print(h.hexdigest())\n"
    )
    digests = set()
    for threads in ("1", "3"):  # the sizes above are large enough to be split over 2-3 threads
        env = dict(os.environ, MEDSAM_EDGE_NUM_THREADS=threads)
        out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
        digests.add(out.stdout.strip())
    assert len(digests) == 1
