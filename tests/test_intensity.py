"""Intensity presets: hand-computed values, the upstream (pre_CT_MR.py) variant, degenerate inputs, dispatch."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from medsam_edge import intensity
from medsam_edge.errors import ConfigurationError, InvalidImageError
from medsam_edge.intensity import CT_WINDOWS, percentile_normalize, to_uint8, window_ct

pytestmark = pytest.mark.unit


# ------------------------------------------------------------------------------------------- an upstream oracle
def upstream_ct(image: np.ndarray, width: float, level: float) -> np.ndarray:
    """The challenge's CT rule as a plain, unchunked NumPy transcription (written for this test)."""
    low = level - width / 2
    high = level + width / 2
    clipped = np.clip(image, low, high)
    scaled = (clipped - np.min(clipped)) / (np.max(clipped) - np.min(clipped)) * 255.0
    return np.uint8(scaled)


def upstream_mr(image: np.ndarray) -> np.ndarray:
    """The challenge's non-CT rule, same style: percentiles of voxels > 0, min-max of the clipped array."""
    positive = image[image > 0]
    low, high = np.percentile(positive, 0.5), np.percentile(positive, 99.5)
    clipped = np.clip(image, low, high)
    scaled = (clipped - np.min(clipped)) / (np.max(clipped) - np.min(clipped)) * 255.0
    scaled[image == 0] = 0
    return np.uint8(scaled)


# ------------------------------------------------------------------------------------------------- presets
def test_presets_are_width_then_level():
    assert CT_WINDOWS["abdomen"] == (400, 40)
    assert CT_WINDOWS["lung"] == (1500, -600)
    assert CT_WINDOWS["brain"] == (80, 40)
    assert CT_WINDOWS["mediastinum"] == (350, 50)
    assert intensity.DEFAULT_CT_WINDOW == "abdomen"
    with pytest.raises(TypeError):
        CT_WINDOWS["abdomen"] = (1, 1)  # read-only


# Hand-computed: grey = floor((clip(v, L - W/2, L + W/2) - (L - W/2)) * 255 / W + 0.5)
@pytest.mark.parametrize(
    "preset, values, expected",
    [
        # abdomen: [-160, 240], 255/400 = 0.6375 per HU
        ("abdomen", [-1000, -160, -100, 0, 40, 100, 240, 3000], [0, 0, 38, 102, 128, 166, 255, 255]),
        # lung: [-1350, 150], 0.17 per HU; -1000 -> 59.5 and -600 -> 127.5 are exact halves (round up)
        ("lung", [-2000, -1350, -1000, -600, 0, 150, 500], [0, 0, 60, 128, 230, 255, 255]),
        # brain: [0, 80], 3.1875 per HU
        ("brain", [-50, 0, 20, 40, 79, 80, 1000], [0, 0, 64, 128, 252, 255, 255]),
        # mediastinum: [-125, 225], 255/350 per HU: 0 -> 91.07, 100 -> 163.93
        ("mediastinum", [-500, -125, 0, 50, 100, 225, 400], [0, 0, 91, 128, 164, 255, 255]),
    ],
)
def test_window_ct_hand_computed(preset, values, expected):
    hu = np.array(values, dtype=np.int16)
    out = window_ct(hu, preset)
    assert out.dtype == np.uint8
    assert out.tolist() == expected
    # The same numbers from a float input, an explicit (width, level) pair and an upper-case preset name.
    assert window_ct(hu.astype(np.float32), CT_WINDOWS[preset]).tolist() == expected
    assert window_ct(hu, preset.upper()).tolist() == expected


def test_window_ct_pair_order_matters():
    hu = np.array([40, 200], dtype=np.int16)
    assert window_ct(hu, (400, 40)).tolist() == [128, 230]
    # Swapping the pair means width 40, level 400: both values are below 380 -> black.
    assert window_ct(hu, (40, 400)).tolist() == [0, 0]


def test_window_ct_keeps_shape_and_input():
    rng = np.random.default_rng(1)
    vol = rng.integers(-1024, 3000, size=(3, 7, 5)).astype(np.int16)
    before = vol.copy()
    out = window_ct(vol)
    assert out.shape == vol.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(vol, before)
    np.testing.assert_array_equal(out, window_ct(vol, "abdomen"))


def test_window_ct_upstream_mode_matches_the_challenge_rule_bit_for_bit():
    rng = np.random.default_rng(2)
    vol = rng.integers(-1024, 3000, size=(4, 33, 29)).astype(np.int16)
    for name, (width, level) in CT_WINDOWS.items():
        np.testing.assert_array_equal(window_ct(vol, name, match_upstream=True), upstream_ct(vol, width, level))
    # float32 CT (e.g. rescaled DICOM): upstream computed in float32; so do we.
    vol32 = (rng.normal(0, 400, size=(3, 40, 40))).astype(np.float32)
    np.testing.assert_array_equal(window_ct(vol32, "abdomen", match_upstream=True), upstream_ct(vol32, 400, 40))


def test_window_ct_upstream_truncates_and_stretches():
    # Window ends present: only the rounding differs (40 HU -> 127.5: upstream 127, default 128).
    hu = np.array([-160, 40, 240], dtype=np.int16)
    assert window_ct(hu, "abdomen", match_upstream=True).tolist() == [0, 127, 255]
    assert window_ct(hu, "abdomen").tolist() == [0, 128, 255]
    # Data inside the window only: upstream stretches it to 0..255, the default keeps HU -> grey fixed.
    soft = np.array([0, 50, 100], dtype=np.int16)
    assert window_ct(soft, "abdomen", match_upstream=True).tolist() == [0, 127, 255]
    assert window_ct(soft, "abdomen").tolist() == [102, 134, 166]
    # Constant after clipping: upstream would divide 0 by 0; here all zeros.
    assert window_ct(np.full((2, 2), 5000), "abdomen", match_upstream=True).tolist() == [[0, 0], [0, 0]]
    assert window_ct(np.full((2, 2), 5000), "abdomen").tolist() == [[255, 255], [255, 255]]


def test_window_ct_chunking_is_invisible(monkeypatch):
    rng = np.random.default_rng(3)
    vol = rng.integers(-1500, 1500, size=(5, 31, 17)).astype(np.int16)
    whole = window_ct(vol, "lung"), window_ct(vol, "lung", match_upstream=True)
    monkeypatch.setattr(intensity, "_CHUNK", 7)
    np.testing.assert_array_equal(window_ct(vol, "lung"), whole[0])
    np.testing.assert_array_equal(window_ct(vol, "lung", match_upstream=True), whole[1])
    # Non-contiguous input too.
    np.testing.assert_array_equal(window_ct(vol[:, ::2, ::3], "lung"), whole[0][:, ::2, ::3])


@pytest.mark.parametrize(
    "window", ["liver", (0, 40), (-10, 40), (400,), (400, 40, 1), (float("nan"), 40), (400, float("inf")), "x"]
)
def test_window_ct_rejects_bad_windows(window):
    with pytest.raises(ConfigurationError):
        window_ct(np.zeros(3), window)


@pytest.mark.parametrize(
    "bad", [np.array([1.0, np.nan]), np.array([np.inf]), np.array([1 + 2j]), np.array(["a"]), np.zeros((0, 3))]
)
def test_window_ct_rejects_bad_arrays(bad):
    with pytest.raises(InvalidImageError):
        window_ct(bad)


# ---------------------------------------------------------------------------------------------- percentiles
def test_percentile_normalize_hand_computed():
    # Non-zero values 1..201: with linear interpolation the 0.5th percentile sits at index 1 (value 2) and the
    # 99.5th at index 199 (value 200). grey = floor((clip(v, 2, 200) - 2) * 255 / 198 + 0.5).
    img = np.concatenate([np.zeros(50, dtype=np.int32), np.arange(1, 202, dtype=np.int32)])
    out = percentile_normalize(img)
    assert out.dtype == np.uint8
    lookup = dict(zip(img.tolist(), out.tolist()))
    assert out[:50].tolist() == [0] * 50  # zeros stay zero
    assert lookup[1] == 0 and lookup[2] == 0  # at or below the lower percentile -> 0 as well
    assert lookup[3] == 1  # 255 / 198 = 1.29
    assert lookup[101] == 128  # 99 * 255 / 198 = 127.5 -> rounds up
    assert lookup[150] == 191  # 148 * 255 / 198 = 190.6
    assert lookup[200] == 255 and lookup[201] == 255
    # Upstream truncates: 127.5 -> 127, 190.6 -> 190.
    up = dict(zip(img.tolist(), percentile_normalize(img, match_upstream=True).tolist()))
    assert up[101] == 127 and up[150] == 190 and up[0] == 0


def test_percentile_normalize_custom_percentiles():
    img = np.arange(0, 11, dtype=np.float64)  # non-zero 1..10; 0th -> 1, 100th -> 10
    out = percentile_normalize(img, lower=0, upper=100)
    # (v - 1) * 255 / 9: 2 -> 28.3, 5 -> 113.3, 10 -> 255
    assert out.tolist() == [0, 0, 28, 57, 85, 113, 142, 170, 198, 227, 255]


def test_percentile_normalize_upstream_mode_matches_the_challenge_rule_bit_for_bit():
    rng = np.random.default_rng(4)
    vol = rng.gamma(2.0, 300.0, size=(4, 32, 32)).astype(np.int16)
    vol[:, :4] = 0
    np.testing.assert_array_equal(percentile_normalize(vol, match_upstream=True), upstream_mr(vol))
    vol32 = rng.gamma(2.0, 1.5, size=(3, 30, 30)).astype(np.float32)
    vol32[0] = 0
    np.testing.assert_array_equal(percentile_normalize(vol32, match_upstream=True), upstream_mr(vol32))


def test_percentile_normalize_negative_values_spec_versus_upstream():
    # The spec says "non-zero voxels"; upstream selects "> 0". Negative values tell them apart.
    img = np.array([0, -100, 10, 20, 30, 40], dtype=np.float64)
    spec = percentile_normalize(img, lower=0, upper=100)
    up = percentile_normalize(img, lower=0, upper=100, match_upstream=True)
    assert spec.tolist() == [0, 0, 200, 219, 237, 255]  # range -100..40: (v + 100) * 255 / 140 = 200.4, 218.6, 236.8
    assert up.tolist() == [0, 0, 0, 85, 170, 255]  # range 10..40; -100 is clipped up to 10


def test_percentile_normalize_degenerate_inputs():
    assert percentile_normalize(np.zeros((3, 4))).tolist() == np.zeros((3, 4), np.uint8).tolist()
    mask = np.array([[0, 1], [1, 0]], dtype=np.uint8)
    assert percentile_normalize(mask).tolist() == [[0, 255], [255, 0]]
    assert percentile_normalize(np.full((2, 3), 7.5)).tolist() == [[255] * 3] * 2
    # Only negative values: nothing is > 0 for upstream -> zeros; the spec rule keeps them (constant -> 255).
    neg = np.full(4, -3.0)
    assert percentile_normalize(neg, match_upstream=True).tolist() == [0, 0, 0, 0]
    assert percentile_normalize(neg).tolist() == [255] * 4


@pytest.mark.parametrize("lower, upper", [(-1, 99), (50, 50), (60, 40), (0, 101)])
def test_percentile_normalize_rejects_bad_percentiles(lower, upper):
    with pytest.raises(ConfigurationError):
        percentile_normalize(np.arange(10), lower, upper)


# ------------------------------------------------------------------------------------------------ dispatcher
def test_to_uint8_dispatch():
    u8 = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert to_uint8(u8) is u8
    assert to_uint8(u8, "CT", "lung") is u8  # uint8 passes unchanged whatever is asked
    hu = np.array([[-1000, 40], [100, 3000]], dtype=np.int16)
    np.testing.assert_array_equal(to_uint8(hu, "CT"), window_ct(hu, "abdomen"))
    np.testing.assert_array_equal(to_uint8(hu, " ct "), window_ct(hu, "abdomen"))
    np.testing.assert_array_equal(to_uint8(hu, "CT", window="lung"), window_ct(hu, "lung"))
    np.testing.assert_array_equal(to_uint8(hu, window=(80, 40)), window_ct(hu, "brain"))
    mr = np.array([[0, 5], [10, 600]], dtype=np.uint16)
    np.testing.assert_array_equal(to_uint8(mr, "MR"), percentile_normalize(mr))
    np.testing.assert_array_equal(to_uint8(mr), percentile_normalize(mr))
    np.testing.assert_array_equal(
        to_uint8(mr, "MR", match_upstream=True), percentile_normalize(mr, match_upstream=True)
    )
    with pytest.raises(ConfigurationError):
        to_uint8(mr, modality=3)


# -------------------------------------------------------------------------------------------------- properties
int_images = hnp.arrays(
    np.int16, hnp.array_shapes(min_dims=1, max_dims=3, max_side=9), elements=st.integers(-3000, 3000)
)


@settings(max_examples=60, deadline=None)
@given(int_images, st.sampled_from(sorted(CT_WINDOWS)))
def test_window_ct_is_monotonic_and_close_to_upstream(img, preset):
    out = window_ct(img, preset)
    order = np.argsort(img, axis=None, kind="stable")
    assert np.all(np.diff(out.reshape(-1)[order].astype(int)) >= 0)
    width, level = CT_WINDOWS[preset]
    low, high = level - width / 2, level + width / 2
    assert np.all(out[img <= low] == 0) and np.all(out[img >= high] == 255)
    if img.min() <= low and img.max() >= high:  # both window ends present: upstream only truncates
        diff = out.astype(int) - window_ct(img, preset, match_upstream=True).astype(int)
        assert set(np.unique(diff).tolist()) <= {0, 1}


@settings(max_examples=60, deadline=None)
@given(int_images)
def test_percentile_normalize_keeps_zeros_and_order(img):
    out = percentile_normalize(img)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert np.all(out[img == 0] == 0)
    nz = img != 0
    if nz.any():
        vals, grey = img[nz], out[nz].astype(int)
        order = np.argsort(vals, kind="stable")
        assert np.all(np.diff(grey[order]) >= 0)
        if np.unique(vals).size > 1:
            assert grey.max() == 255
