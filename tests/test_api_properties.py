"""Property tests of the public API: every call returns a result of the documented shape and dtype or raises a
subclass of medsam_edge.MedsamEdgeError whose message names the bad argument; no other exception type escapes.

Model calls are kept few: the broad strategies pair any image with a box that is always rejected (so only the
checks run), and the properties that reach the model use tiny inputs and a handful of examples. Example counts per
property are in the ``settings`` of each test (derandomized, so CI runs the same examples every time).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from medsam_edge import Segmenter
from medsam_edge.errors import ConfigurationError, MedsamEdgeError

pytestmark = pytest.mark.model

CHEAP = settings(max_examples=120, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
MODEL = settings(max_examples=6, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
DECODER = settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))

DTYPES = [np.bool_, np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.uint64, np.int64, np.float16,
          np.float32, np.float64, np.complex64, np.complex128, np.dtype(">f4"), np.dtype(">i2"), object, np.dtype("U2")]
NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.integers(-(10**6), 10**6),
    st.integers(-(10**400), 10**400),
    st.sampled_from([0, -1, 1e-300, -0.0, 1e308]),
)


@pytest.fixture(scope="module")
def seg():
    return Segmenter(threads=2)


@pytest.fixture(scope="module")
def state(seg):
    rng = np.random.default_rng(0)
    return seg.encode(rng.integers(0, 255, (40, 60), dtype=np.uint8))


def _shape(draw, ndim: int, side_max: int = 4096) -> tuple[int, ...]:
    # sides 0..4096, but at most ~2^20 elements so that the checks stay fast (one side may still be 4096)
    dims = [draw(st.sampled_from([0, 1, 2, 3, 7, 64, 255, 1000, side_max])) for _ in range(ndim)]
    while int(np.prod(dims)) > 1 << 20:
        dims[int(np.argmax(dims))] //= 4
    return tuple(dims)


@st.composite
def images(draw, ndims=(0, 1, 2, 3, 4)):
    ndim = draw(st.sampled_from(ndims))
    shape = _shape(draw, ndim)
    if ndim == 3 and draw(st.booleans()):
        shape = shape[:2] + (draw(st.sampled_from([1, 3, 4, 2])),)
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    kind = draw(st.sampled_from(["random", "constant", "nan", "inf"]))
    if dtype.kind in "OU":
        return np.zeros(shape, dtype)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        arr = (rng.standard_normal(shape) * 100).astype(dtype) if kind != "constant" else np.full(shape, 3, dtype)
        if kind in ("nan", "inf") and dtype.kind in "fc" and arr.size:
            arr.flat[rng.integers(0, arr.size)] = np.nan if kind == "nan" else -np.inf
    if draw(st.booleans()) and arr.ndim >= 2:
        arr = arr[::-1]
    return arr


@st.composite
def boxes(draw, ncols=4):
    form = draw(st.sampled_from(["array", "one", "empty", "ragged", "wrong", "junk", "nested"]))
    n = draw(st.integers(0, 5))
    row = st.lists(NUMBERS, min_size=ncols, max_size=ncols)
    if form == "array":
        return draw(st.lists(row, min_size=n, max_size=n))
    if form == "one":
        return draw(row)
    if form == "empty":
        return draw(st.sampled_from([[], np.zeros((0, ncols)), np.zeros((0,))]))
    if form == "ragged":
        return [draw(row), draw(st.lists(NUMBERS, max_size=ncols - 1))]
    if form == "wrong":
        k = draw(st.sampled_from([1, 2, 3, 5, 6, 7, 8]))
        return draw(st.lists(st.lists(NUMBERS, min_size=k, max_size=k), min_size=1, max_size=3))
    if form == "nested":
        return [[draw(row)]]
    return draw(st.sampled_from([None, "1 2 3 4", object(), {"x": 1}, np.array([1 + 2j, 0, 3, 4]), b"abcd", 7]))


def _names_argument(err: Exception, *names: str) -> None:
    assert isinstance(err, MedsamEdgeError), f"{type(err).__name__}: {err}"
    msg = str(err)
    assert any(name in msg for name in names), f"message does not name {names}: {msg}"


# ------------------------------------------------------------------------------------------------- 2D, checks only
@CHEAP
@given(image=images())
def test_any_image_is_checked_before_the_model(seg, image):
    """Any image with a zero-width box: the call must raise, naming the image (bad image) or the boxes."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(Exception) as info:
            seg(image, [1.0, 1.0, 1.0, 5.0])  # zero width: always rejected, before the encoder
    _names_argument(info.value, "image", "boxes")


@CHEAP
@given(b=boxes())
def test_any_boxes_are_checked_before_the_model(seg, b):
    """Any boxes (plus a zero-width row when they are well formed, so the encoder never runs) on a valid image: the
    error names the boxes."""
    image = np.arange(20 * 30, dtype=np.uint8).reshape(20, 30)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(Exception) as info:
            seg(image, _with_bad_row(b, 4))
    _names_argument(info.value, "boxes")


# ------------------------------------------------------------------------------------------------- decoder
@DECODER
@given(b=boxes())
def test_predict_any_boxes(seg, state, b):
    """predict on an encoded 40 x 60 image: masks (N, 40, 60) bool, scores (N,) float32, label map uint16, or an
    error naming the boxes."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = seg.predict(b, state=state)
    except Exception as err:  # noqa: BLE001 - checked below
        _names_argument(err, "boxes")
        return
    n = res.boxes.shape[0]
    assert res.masks.shape == (n, 40, 60) and res.masks.dtype == np.bool_
    assert res.scores.shape == (n,) and res.scores.dtype == np.float32
    assert res.label_map.shape == (40, 60) and res.label_map.dtype == np.uint16
    assert res.boxes.shape == (n, 4) and np.isfinite(res.boxes).all()
    assert (res.boxes[:, 0::2] >= 0).all() and (res.boxes[:, 0::2] <= 60).all()


# ------------------------------------------------------------------------------------------------- full 2D calls
@st.composite
def small_images(draw):
    h, w = draw(st.sampled_from([(1, 2), (2, 1), (3, 5), (12, 9), (1, 300), (600, 2), (4096, 9)]))
    dtype = np.dtype(draw(st.sampled_from([np.uint8, np.int16, np.uint16, np.float32, np.float64, np.float16,
                                           np.int64, np.uint32])))
    chans = draw(st.sampled_from([None, 1, 3]))
    shape = (h, w) if chans is None else (h, w, chans)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    arr = rng.integers(0, 200, shape).astype(dtype)
    arr.flat[0] = 250  # not constant
    return arr


@MODEL
@given(image=small_images(), data=st.data())
def test_full_call_on_tiny_images(seg, image, data):
    h, w = image.shape[:2]
    x0 = data.draw(st.floats(-5, w - 0.5))
    y0 = data.draw(st.floats(-5, h - 0.5))
    box = [x0, y0, x0 + data.draw(st.floats(0.5, w + 10)), y0 + data.draw(st.floats(0.5, h + 10))]
    try:
        res = seg(image, [box])
    except Exception as err:  # noqa: BLE001
        _names_argument(err, "image", "boxes")
        return
    assert res.masks.shape == (1, h, w) and res.masks.dtype == np.bool_
    assert res.label_map.shape == (h, w) and res.label_map.dtype == np.uint16
    assert res.scores.shape == (1,) and res.scores.dtype == np.float32


# ------------------------------------------------------------------------------------------------- 3D
@CHEAP
@given(volume=images(ndims=(0, 1, 2, 3, 4)), b=boxes(ncols=6))
def test_any_volume_and_boxes_are_checked(seg, volume, b):
    """Any volume with any 3D boxes (plus a zero-width row when they are well formed, so the encoder never runs),
    then with only a zero-width box: each call raises an error naming the volume or the boxes."""
    bad_box = [[1, 1, 0, 1, 5, 0]]  # zero width
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for bx in (b, bad_box):
            try:
                # only the checks: a zero-width box is appended, so a valid volume never reaches the encoder
                use = bx if bx is bad_box else _with_bad_row(bx)
                seg.segment_volume(volume, use)
            except Exception as err:  # noqa: BLE001
                _names_argument(err, "volume", "boxes")
            else:
                raise AssertionError(f"no error for boxes {use!r}")


def _with_bad_row(b, ncols=6):
    """b plus a zero-width box when b is well formed (so the call must fail); b itself otherwise."""
    bad = [1, 1, 0, 1, 5, 0] if ncols == 6 else [1, 1, 1, 5]
    if isinstance(b, list) and b and all(isinstance(r, list) and len(r) == ncols for r in b):
        return b + [bad]
    if isinstance(b, list) and len(b) == ncols and all(not isinstance(v, list) for v in b):
        return [b, bad]
    if isinstance(b, list) and not b:
        return [bad]
    if isinstance(b, np.ndarray) and b.size == 0:
        return [bad]
    return b


@MODEL
@given(
    depth=st.integers(1, 2),
    hw=st.sampled_from([(8, 8), (3, 20), (30, 2)]),
    dtype=st.sampled_from([np.uint8, np.int16, np.float32]),
    window=st.sampled_from([None, "abdomen", (400, 40)]),
    strategy=st.sampled_from(["propagate", "slicewise"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_volume_on_tiny_inputs(seg, depth, hw, dtype, window, strategy, seed):
    rng = np.random.default_rng(seed)
    h, w = hw
    vol = rng.integers(0, 200, (depth, h, w)).astype(dtype)
    vol.flat[0] = 255
    res = seg.segment_volume(vol, [[0, 0, 0, w, h, depth - 1]], window=window, strategy=strategy)
    assert res.label_map.shape == (depth, h, w) and res.label_map.dtype == np.uint16
    assert res.boxes.shape == (1, 6)


# ------------------------------------------------------------------------------------------------- options
OPTION_VALUES = st.one_of(st.none(), st.integers(-3, 3), st.text(max_size=6), st.floats(allow_nan=True),
                          st.booleans(), st.just(object()))


@CHEAP
@given(
    name=st.sampled_from(["precision", "device", "threads", "performance_hint", "volume_strategy"]),
    value=OPTION_VALUES,
)
def test_constructor_options(name, value):
    """An invalid option raises ConfigurationError naming it (valid values would compile the model: skipped)."""
    valid = {
        "precision": value in ("fp32", "bf16", "int8"),
        "device": isinstance(value, str) and value != "",
        "threads": value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 1),
        "performance_hint": value in ("LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT"),
        "volume_strategy": value in ("propagate", "slicewise"),
    }[name]
    assume(not valid)
    with pytest.raises(ConfigurationError) as info:
        Segmenter(**{name: value})
    assert name in str(info.value)


@DECODER
@given(
    strategy=st.one_of(st.none(), st.text(max_size=8), st.integers()),
    window=st.one_of(st.none(), st.text(max_size=8), st.tuples(NUMBERS, NUMBERS), st.lists(NUMBERS, max_size=3)),
    cache_slices=st.one_of(st.integers(-(2**70), 2**70), st.floats(allow_nan=True), st.none(), st.text(max_size=3)),
)
def test_volume_options(seg, strategy, window, cache_slices):
    """segment_volume options on a tiny int16 volume with a valid box: result or an error naming the option."""
    vol = np.arange(2 * 6 * 6, dtype=np.int16).reshape(2, 6, 6)
    valid_strategy = strategy in (None, "propagate", "slicewise")
    assume(not valid_strategy or not isinstance(cache_slices, int) or cache_slices < 0 or window not in (None,))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = seg.segment_volume(vol, [[0, 0, 0, 6, 6, 1]], strategy=strategy, window=window,
                                     cache_slices=cache_slices)
    except Exception as err:  # noqa: BLE001
        _names_argument(err, "strategy", "window", "cache_slices")
        return
    assert res.label_map.shape == (2, 6, 6) and res.label_map.dtype == np.uint16


# ------------------------------------------------------------------------------------------------- regressions
@pytest.mark.parametrize("bad", [[10**400, 0, 5, 5], [[1, 2, 3, 4j]], np.array([1 + 2j, 0, 3, 4])])
def test_boxes_beyond_float64_or_complex_are_invalid_boxes(bad):
    # found by test_predict_any_boxes: 10**400 escaped as OverflowError; complex boxes lost their imaginary part
    from medsam_edge.errors import InvalidBoxError
    from medsam_edge.prompts import as_boxes

    with pytest.raises(InvalidBoxError, match="boxes"):
        as_boxes(bad)
