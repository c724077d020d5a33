"""Short fuzz run of every native kernel (fuzz/fuzz_kernels.py, seeded random bytes, no atheris, no sanitizer) and
regression tests for the bugs the long sanitizer run found (fuzz/README.md, benchmarks/results/fuzz.json).

MEDSAM_FUZZ_NATIVE=<path of a _native*.so> runs these against another build (e.g. build/asan/, with the sanitizer
runtime in LD_PRELOAD) instead of the installed one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medsam_edge import _kernels_py as twin

ROOT = Path(__file__).resolve().parent.parent

import fuzz_kernels  # noqa: E402  (fuzz/ is on pytest's pythonpath, pyproject.toml)

pytestmark = pytest.mark.unit

NATIVE_PATH = os.environ.get("MEDSAM_FUZZ_NATIVE")
try:
    native = fuzz_kernels.load_native(NATIVE_PATH)
except ImportError:  # pragma: no cover - only without a compiled extension
    native = None

needs_native = pytest.mark.skipif(native is None, reason="medsam_edge._native is not built")
SHORT_RUNS = 1500  # per kernel (capped at 6 s each); about 1-4 s each with the twin comparison


@needs_native
@pytest.mark.parametrize("kernel", fuzz_kernels.KERNELS)
def test_short_fuzz_run(kernel):
    runner = fuzz_kernels.Runner(native, kernel, differential=True)
    fuzz_kernels.run_random(runner, SHORT_RUNS, seed=20261127, max_seconds=6)
    assert runner.execs >= 200, runner.execs
    # the generator must reach the kernels' work, not only their argument checks
    assert runner.accepted >= runner.execs // 10, (runner.accepted, runner.rejected)


def test_harness_flags_a_broken_kernel():
    """The harness is able to fail: a kernel returning the wrong shape or raising the wrong type is a finding."""

    class Broken:
        @staticmethod
        def label_map(masks):
            return np.zeros((1, 1), np.uint16)

        @staticmethod
        def box_from_mask(mask, margin=3):
            raise RuntimeError("boom")

    with pytest.raises(fuzz_kernels.Finding):
        fuzz_kernels.run_random(fuzz_kernels.Runner(Broken, "label_map", False), 200, seed=1)
    with pytest.raises(fuzz_kernels.Finding):
        fuzz_kernels.run_random(fuzz_kernels.Runner(Broken, "box_from_mask", False), 200, seed=1)


# ---------------------------------------------------------------------------------------------------- regressions
@needs_native
def test_resize_area_uint8_block_sum_does_not_wrap():
    # blocks of 4096 x 4096 pixels of 255 sum past 2^31 (UBSan: signed overflow; cv2 5.0 itself returns 0 here)
    img = np.broadcast_to(np.uint8(255), (8192, 8192))
    np.testing.assert_array_equal(native.resize_area(img, 2, 2), np.full((2, 2), 255, np.uint8))
    img = np.broadcast_to(np.uint8(200), (4096 * 3, 4096 * 3))
    np.testing.assert_array_equal(native.resize_area(img, 3, 3), np.full((3, 3), 200, np.uint8))


@needs_native
@pytest.mark.parametrize("src_hw,dst_hw,cn", [((512, 512), (1, 1), 0), ((600, 900), (2, 3), 0), ((520, 780), (2, 3), 3)])
def test_resize_area_float32_large_blocks_match_cv2(src_hw, dst_hw, cn):
    # blocks of more than 2^16 pixels take the streaming sum (no kx*ky tables, one block row at a time; before, a
    # huge broadcast source overflowed int kx*ky and allocated ky full rows); the summation order is unchanged
    rng = np.random.default_rng(5)
    shape = src_hw + ((cn,) if cn else ())
    img = rng.standard_normal(shape).astype(np.float32) * 100
    got = native.resize_area(img, *dst_hw)
    want = twin.resize_area(img, *dst_hw)
    np.testing.assert_array_equal(got, want)
    got_rev = native.resize_area(img[::-1, ::-1], *dst_hw)
    np.testing.assert_array_equal(got_rev, twin.resize_area(np.ascontiguousarray(img[::-1, ::-1]), *dst_hw))


@needs_native
def test_label_map_empty_rows_return_at_once():
    # (n, H, 0) masks used to loop over n * H empty rows: a (65535, 2^24, 0) view took hours
    code = (
        "import sys, numpy as np\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "import fuzz_kernels\n"
        "n = fuzz_kernels.load_native(sys.argv[2] or None)\n"
        "out = n.label_map(np.broadcast_to(np.zeros((1, 1, 1), bool), (65535, 1 << 24, 0)))\n"
        "assert out.shape == (1 << 24, 0) and out.dtype == np.uint16\n"
    )
    subprocess.run([sys.executable, "-c", code, str(ROOT / "fuzz"), NATIVE_PATH or ""], check=True, timeout=60)


@needs_native
def test_label_map_rejects_sides_past_the_limit():
    # a (1, 2^62, 0) view made the output's stride computation overflow int64 (UBSan, inside pybind11)
    masks = np.zeros((1, 1 << 62, 0), bool)
    with pytest.raises(ValueError, match="masks"):
        native.label_map(masks)


@needs_native
@pytest.mark.parametrize("margin", [-(1 << 31), -300, -3, 0, 3, 300, 1 << 31])
def test_box_from_mask_coordinates_stay_in_0_256(margin):
    mask = np.zeros((100, 120), np.uint8)
    mask[30:60, 40:90] = 1
    got = native.box_from_mask(mask, margin)
    want = twin.box_from_mask(mask, margin)
    np.testing.assert_array_equal(got, want)
    assert got.min() >= 0 and got.max() <= 256


@needs_native
@pytest.mark.parametrize("impl", ["native", "twin"])
def test_paste_masks_rejects_zero_marks_and_values(impl):
    """Found by the paste_masks fuzz run: mark 0 was accepted and the native kernel then returned an all-False crop
    for a mask that had written its label (the twin's crop was the mask). 0 is outside the documented 1..255 /
    1..65535 for both implementations now."""
    fn = native.paste_masks if impl == "native" else twin.paste_masks
    logits = np.full((2, 256, 256), 2.0, np.float32)
    for values, marks, name in (([1, 2], [1, 0], "marks"), ([0, 2], [1, 2], "values"), ([1, 2], [1, 256], "marks")):
        labels = np.zeros((8, 8), np.uint16)
        with pytest.raises(ValueError, match=name):
            fn(logits, (256, 256), labels, np.array(values), np.array(marks), 3)
    labels = np.zeros((8, 8), np.uint16)
    boxes, crops = fn(logits, (256, 256), labels, np.array([1, 2]), np.array([1, 255]), 3)
    assert (labels == 2).all() and all(c is not None and c[2].all() for c in crops)


@needs_native
def test_paste_masks_reads_unaligned_logits():
    """Found by UBSan in the paste_masks sanitizer run: C-contiguous float32 logits at an odd address passed the
    argument conversion unchanged and the upsampler loaded misaligned floats (undefined behaviour; silent on x86).
    The kernel now copies such logits to an aligned buffer; the result must equal the twin's. The misaligned read
    is only observable under UBSan: run with MEDSAM_FUZZ_NATIVE=build/asan/... (module docstring) to see the old
    code fail; in a normal build the test checks the result."""
    rng = np.random.default_rng(7)
    values = rng.standard_normal((2, 64, 64)).astype(np.float32)
    buf = np.zeros(values.nbytes + 1, np.uint8)
    logits = buf[1:].view(np.float32).reshape(values.shape)
    logits[...] = values
    assert not logits.flags.aligned and logits.flags.c_contiguous
    got_labels, want_labels = np.zeros((40, 50), np.uint16), np.zeros((40, 50), np.uint16)
    got = native.paste_masks(logits, (48, 60), got_labels, np.array([1, 2]), np.array([1, 2]), 3)
    want = twin.paste_masks(values, (48, 60), want_labels, np.array([1, 2]), np.array([1, 2]), 3)
    assert np.array_equal(got_labels, want_labels) and got_labels.any()
    assert np.array_equal(got[0], want[0])
