"""Fuzz harness for the native kernels (medsam_edge._native, csrc/): every function exposed to Python.

Each execution turns a byte string into one call of one kernel: arrays of any dtype (bool, integers, float16/32/64,
big-endian, complex, object, strings, datetimes), any rank, shapes from 0 to far beyond the kernels' limits, and any
layout (C / Fortran order, sliced, reversed = negative strides, broadcast = zero strides, unaligned, read-only, a view
of the output buffer), values from random bits (NaN, inf, subnormals) or extremes; integer arguments (sizes, margin)
from the whole Python int range plus floats, None, strings, numpy scalars and wrong-length sequences.

A call passes when it either returns a result of the documented shape and dtype or raises TypeError / ValueError /
OverflowError (MemoryError only when the requested output cannot be allocated). Anything else - another exception
type, a wrong result shape, and of course a crash or a sanitizer report (the process dies) - is a finding. With
``--differential`` small, finite inputs are also compared with the NumPy/OpenCV twin (medsam_edge._kernels_py).

Work per call is bounded (inputs that would be accepted are shrunk to at most ~2^16 elements read or written) so the
run reaches millions of executions; shapes beyond the kernels' size limits are kept, since those are rejected before
any work.

Usage:
    python fuzz/fuzz_kernels.py --kernel preprocess --runs 1000000 [--native build/asan/_native*.so] [--atheris]
    python fuzz/fuzz_kernels.py --kernel all --runs 3000 --seed 1 --differential   # plain random bytes, no atheris

Without ``--atheris`` inputs are random byte strings from a seeded generator (the CI short run: tests/test_fuzz.py).
With ``--atheris`` the bytes come from atheris (coverage-guided on the Python side; the C++ is not instrumented for
coverage with gcc, so it is guided by the shape/dtype/layout branches of this harness). Sanitizer builds:
fuzz/build_sanitized.sh; long run: fuzz/run_long.sh.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import random
import struct
import sys
import time
from pathlib import Path

import numpy as np

KERNELS = ("preprocess", "postprocess", "label_map", "resize_area", "box_from_mask", "paste_masks")
MAX_SIDE = 1 << 24  # the native kernels' own size limit (csrc/module.cpp kMaxSide)
WORK_CAP = 1 << 16  # elements read or written per accepted call
ALLOWED = (TypeError, ValueError, OverflowError)
TRACE = bool(os.environ.get("MEDSAM_FUZZ_TRACE"))


class Finding(AssertionError):
    """A call broke the contract (wrong exception type or wrong result)."""


# ---------------------------------------------------------------------------------------------------- byte source
class Source:
    """Deterministic decisions from a byte string. Past its end, bytes come from a generator seeded with the string,
    so short inputs still make varied (and reproducible) choices."""

    __slots__ = ("data", "pos", "more")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.more = None

    def bytes(self, n: int) -> bytes:
        chunk = self.data[self.pos : self.pos + n]
        self.pos += len(chunk)
        if len(chunk) < n:
            if self.more is None:
                self.more = random.Random(self.data)
            chunk += self.more.randbytes(n - len(chunk))
        return chunk

    def int(self, lo: int, hi: int) -> int:
        """Integer in [lo, hi]."""
        span = hi - lo
        if span <= 0:
            return lo
        nbytes = (span.bit_length() + 7) // 8
        return lo + int.from_bytes(self.bytes(nbytes), "little") % (span + 1)

    def pick(self, seq):
        return seq[self.int(0, len(seq) - 1)]

    def chance(self, k: int) -> bool:
        """True with probability ~1/k."""
        return self.int(0, k - 1) == 0

    def float(self) -> float:
        return struct.unpack("<d", self.bytes(8))[0]


# ---------------------------------------------------------------------------------------------------- values
DTYPES_ANY = [
    np.bool_, np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.uint64, np.int64,
    np.float16, np.float32, np.float64, np.dtype(">f4"), np.dtype(">i2"), np.dtype(">u2"), np.dtype(">f8"),
    np.longdouble, np.complex64, np.complex128, object, np.dtype("U3"), np.dtype("S2"), np.dtype("M8[s]"),
    np.dtype("m8[s]"), np.dtype([("a", np.uint8), ("b", np.float32)]),
]
SPECIAL_FLOATS = [0.0, -0.0, 1.0, -1.0, 0.5, 1e-45, -1e-45, 1e-38, 3.4e38, -3.4e38, 1e300, np.inf, -np.inf, np.nan]


def _side(src: Source, *, allow_huge: bool = True) -> int:
    r = src.int(0, 15)
    if r == 0:
        return 0
    if r == 1:
        return 1
    if r <= 8:
        return src.int(2, 24)
    if r <= 11:
        return src.int(2, 300)
    if r == 12:
        return src.pick([255, 256, 257, 511, 512, 513, 1024, 2048, 4096])
    if r == 13:
        return src.int(300, 70000)
    if not allow_huge:
        return src.int(2, 1000)
    return src.pick([MAX_SIDE - 1, MAX_SIDE, MAX_SIDE + 1, 1 << 31, (1 << 31) - 1, 1 << 40, 1 << 62])


def _fill(src: Source, shape: tuple[int, ...], dtype) -> tuple[np.ndarray, bool]:
    """A C-contiguous array of `shape`; the flag says whether the values are 'nice' (finite, from a smooth
    distribution) so that the twin comparison is meaningful."""
    dt = np.dtype(dtype)
    n = math.prod(shape)
    mode = src.int(0, 9)
    if dt.kind in "OUSMmV":
        arr = np.zeros(shape, dtype=dt)
        return arr, False
    if mode <= 2:  # raw bits: NaN, inf, subnormals, any integer
        raw = src.bytes(min(64, n * dt.itemsize))
        rng = np.random.default_rng(int.from_bytes(src.bytes(4), "little"))
        bits = bytearray(rng.integers(0, 256, n * dt.itemsize, dtype=np.uint8).tobytes())
        bits[: len(raw)] = raw
        arr = np.frombuffer(bytes(bits), dtype=dt).reshape(shape).copy()
        if dt.kind == "b":
            arr = np.frombuffer(bytes(bits), dtype=np.uint8).reshape(shape).astype(bool)
        return arr, False
    if mode == 3:  # one special value everywhere (constant image)
        v = src.pick(SPECIAL_FLOATS)
        with np.errstate(all="ignore"):
            if dt.kind in "biu":
                info = np.iinfo(dt) if dt.kind != "b" else None
                v = src.pick([0, 1, info.max if info else 1, info.min if info else 0])
            return np.full(shape, v, dtype=dt), False
    if mode == 4:  # extremes mixed with special values
        rng = np.random.default_rng(int.from_bytes(src.bytes(4), "little"))
        if dt.kind == "b":
            return rng.integers(0, 2, shape).astype(bool), True
        if dt.kind in "iu":
            info = np.iinfo(dt)
            return rng.choice(np.array([info.min, info.max, 0, 1], dtype=dt), size=shape), True
        with np.errstate(all="ignore"):
            vals = np.array(SPECIAL_FLOATS, dtype=np.float64).astype(dt)
        return rng.choice(vals, size=shape), False
    # smooth, finite values (the twin comparison applies)
    rng = np.random.default_rng(int.from_bytes(src.bytes(4), "little"))
    if dt.kind == "b":
        return rng.random(shape) < rng.random(), True
    if dt.kind in "iu":
        info = np.iinfo(dt)
        lo, hi = max(int(info.min), -(1 << 20)), min(int(info.max), 1 << 20)
        if src.chance(2):
            lo, hi = max(lo, 0), min(hi, 255)
        return rng.integers(lo, hi, size=shape, endpoint=True).astype(dt), True
    if dt.kind == "c":
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dt), False
    scale = src.pick([1.0, 100.0, 1e-3, 4000.0])
    return (rng.standard_normal(shape) * scale).astype(dt), True


def make_array(src: Source, shape: tuple[int, ...], dtype) -> tuple[np.ndarray, bool]:
    """An array of logical `shape` in one of many memory layouts; see the module docstring."""
    n = 1
    for s in shape:
        n *= s
    layout = src.int(0, 9)
    if n > WORK_CAP or layout == 0:  # zero strides: any logical size from a tiny base
        base_shape = tuple(1 if (s > 4 or src.chance(2)) else s for s in shape)
        base, nice = _fill(src, base_shape, dtype)
        try:
            return np.broadcast_to(base, shape), nice
        except ValueError:  # numpy refuses sizes past intp: cap the sides just past the kernels' limit
            return np.broadcast_to(base, tuple(min(s, MAX_SIDE + 1) for s in shape)), nice
    arr, nice = _fill(src, shape, dtype)
    if layout == 1 and arr.ndim >= 1:
        arr = np.asfortranarray(arr)
    elif layout == 2 and arr.ndim >= 1:  # every axis reversed: negative strides
        arr = arr[tuple(slice(None, None, -1) for _ in shape)]
    elif layout == 3 and arr.ndim >= 1:  # one axis reversed
        ax = src.int(0, arr.ndim - 1)
        arr = np.flip(arr, axis=ax)
    elif layout == 4 and arr.ndim >= 1:  # sliced out of a larger array (non-contiguous, possibly reversed)
        step = src.pick([2, 3, -2])
        big_shape = tuple(max(s, 1) * abs(step) for s in shape)
        big = np.zeros(big_shape, dtype=arr.dtype)
        sl = tuple(slice(None, None, step) for _ in shape)
        view = big[sl]
        view = view[tuple(slice(0, s) for s in shape)]
        view[...] = arr
        arr = view
    elif layout == 5 and arr.dtype.kind not in "OV":  # unaligned: one byte into a buffer
        buf = np.zeros(arr.nbytes + 1, dtype=np.uint8)
        view = buf[1:].view(arr.dtype).reshape(arr.shape) if arr.nbytes else arr
        if arr.nbytes:
            view[...] = arr
        arr = view
    elif layout == 6 and arr.ndim >= 2:  # axes swapped (transposed view)
        arr = np.swapaxes(arr, 0, 1)
        arr = np.ascontiguousarray(arr) if src.chance(2) else arr
        arr = np.swapaxes(arr, 0, 1) if arr.shape != shape else arr
    if src.chance(4) and arr.flags.writeable:
        arr.setflags(write=False)
    return arr, nice


def weird_int(src: Source, typical):
    """An argument meant to be an integer: usually a plausible one, sometimes anything."""
    r = src.int(0, 23)
    if r < 12:
        return typical
    if r >= 17:
        return typical
    if r == 12:
        # (sizes the kernels accept, up to MAX_SIDE, would only test the machine's memory: typical values are bounded)
        return src.pick([0, -1, 1, MAX_SIDE + 1, 1 << 31, -(1 << 31), 1 << 63, -(1 << 63) - 1, 1 << 100])
    if r == 13:
        return src.pick([np.int64(typical), np.uint8(min(max(typical, 0), 255)), np.int32(-5), True, False])
    if r == 14:
        return src.pick([float(typical), 2.5, float("nan"), float("inf"), np.float32(3)])
    if r == 15:
        return src.pick([None, "7", b"7", [typical], (typical,), object(), np.array(typical), np.array([typical])])
    return src.int(-(1 << 64), 1 << 64)  # r == 16


def weird_pair(src: Source, typical: tuple[int, int]):
    r = src.int(0, 15)
    if r < 6 or r >= 10:
        return (weird_int(src, typical[0]), weird_int(src, typical[1]))
    if r == 6:
        return [typical[0], typical[1]]
    if r == 7:
        return np.array(typical, dtype=src.pick([np.int64, np.int32, np.uint16, np.float64]))
    if r == 8:
        return src.pick([(), (1,), (1, 2, 3), None, 5, "ab", {1: 2}, (None, None)])
    return (src.int(-3, 300), src.int(-3, 300))


def _shrink(dims: list[int], cost, limit: int = MAX_SIDE) -> list[int]:
    """Halve the largest dims until cost(dims) <= WORK_CAP, unless some dim is past `limit` (rejected cheaply) or 0."""
    dims = list(dims)
    while cost(dims) > WORK_CAP and 0 not in dims and 1 < max(dims) <= limit:
        i = max(range(len(dims)), key=lambda k: dims[k])
        dims[i] = max(1, dims[i] // 2)
    return dims


def _array_dtype(src: Source, usual) -> object:
    return usual[src.int(0, len(usual) - 1)] if not src.chance(6) else DTYPES_ANY[src.int(0, len(DTYPES_ANY) - 1)]


# ---------------------------------------------------------------------------------------------------- per kernel
def _cases_preprocess(src: Source):
    nd = src.pick([2, 2, 2, 3, 3, 3, 1, 4, 0])
    dims = [_side(src) for _ in range(nd)]
    if nd == 3 and not src.chance(4):
        dims[2] = src.pick([1, 3])
    dims = _shrink(dims, lambda d: math.prod(d))
    dtype = _array_dtype(src, [np.uint8, np.uint8, np.float32, np.int16, np.uint16, np.float64, np.bool_, np.float16])
    image, nice = make_array(src, tuple(dims), dtype)
    out = None
    r = src.int(0, 9)
    if r == 1:
        out = np.full((1, 3, 256, 256), np.nan, np.float32)
    elif r == 2:
        out = src.pick([
            np.zeros((1, 3, 256, 256), np.float64), np.zeros((3, 256, 256), np.float32),
            np.zeros((1, 3, 256, 512), np.float32)[..., ::2], np.zeros((1, 3, 256, 256), ">f4"),
            [0.0], "out", np.zeros((1, 3, 256, 256), np.float32).T,
        ])
    elif r == 3:
        out = np.zeros((1, 3, 256, 256), np.float32)
        if src.chance(2):
            out.setflags(write=False)
        elif src.chance(2):  # the image is a view of the output buffer
            image = out[0, src.int(0, 2), : src.int(1, 256), : src.int(1, 256)]
            image[...] = np.arange(image.size, dtype=np.float32).reshape(image.shape) % 7
            nice = True
    elif r == 4:  # unaligned out
        buf = np.zeros(3 * 256 * 256 * 4 + 1, np.uint8)
        out = buf[1:].view(np.float32).reshape(1, 3, 256, 256)
    return (image, out), {"nice": nice}


def _check_preprocess(native, twin, args, res, meta, differential):
    image, out = args
    if not (isinstance(res, tuple) and len(res) == 2):
        raise Finding(f"preprocess returned {type(res)}")
    tensor, (nh, nw) = res
    if tensor.shape != (1, 3, 256, 256) or tensor.dtype != np.float32:
        raise Finding(f"preprocess tensor {tensor.shape} {tensor.dtype}")
    if out is not None and tensor is not out and not np.shares_memory(tensor, out):
        raise Finding("preprocess did not write into out")
    h, w = image.shape[:2]
    if (nh, nw) != twin.resized_shape(h, w):
        raise Finding(f"preprocess size {(nh, nw)} != {twin.resized_shape(h, w)}")
    if differential and meta["nice"] and h * w <= 1 << 16 and not np.shares_memory(image, tensor):
        want, _ = twin.preprocess(np.asarray(image))
        tol = 0 if image.dtype == np.uint8 else 1e-5
        if not np.allclose(tensor, want, atol=tol, rtol=0, equal_nan=True):
            raise Finding(f"preprocess differs from the twin by {np.nanmax(np.abs(tensor - want))}")


def _cases_postprocess(src: Source):
    nd = src.pick([3, 3, 4, 2, 5])
    b = src.pick([0, 1, 1, 2, 3, src.int(0, 70000)])
    lh = src.pick([256, 256, src.int(0, 300), _side(src, allow_huge=False)])
    lw = src.pick([256, 256, src.int(0, 300), _side(src, allow_huge=False)])
    oh = src.pick([src.int(1, 64), src.int(1, 600), _side(src)])
    ow = src.pick([src.int(1, 64), src.int(1, 600), _side(src)])
    # the logits are read (and converted to float32 when another dtype) whatever the output size: always bounded
    b, lh, lw = _shrink([b, lh, lw], lambda d: d[0] * d[1] * d[2], limit=1 << 62)
    if max(oh, ow) <= MAX_SIDE:
        b, oh, ow = _shrink([b, oh, ow], lambda d: d[0] * (d[1] * d[2] + lh * lw))
    nh = src.int(1, lh) if lh else src.int(0, 3)
    nw = src.int(1, lw) if lw else src.int(0, 3)
    shape = {3: (b, lh, lw), 4: (b, src.pick([1, 1, 2, 0]), lh, lw), 2: (lh, lw), 5: (b, 1, 1, lh, lw)}[nd]
    dtype = _array_dtype(src, [np.float32, np.float32, np.float32, np.float64, np.float16, np.int32])
    logits, nice = make_array(src, shape, dtype)
    return (logits, weird_pair(src, (nh, nw)), weird_pair(src, (oh, ow))), {"nice": nice}


def _check_postprocess(native, twin, args, res, meta, differential):
    logits, new_hw, orig_hw = args
    h, w = int(orig_hw[0]), int(orig_hw[1])
    if not isinstance(res, np.ndarray) or res.dtype != np.bool_ or res.shape != (logits.shape[0], h, w):
        raise Finding(f"postprocess result {getattr(res, 'shape', res)} {getattr(res, 'dtype', '')}")
    if differential and meta["nice"] and res.size <= 1 << 16 and logits.dtype == np.float32:
        import cv2

        before = cv2.ipp.useIPP()
        cv2.ipp.setUseIPP(False)
        try:
            want = twin.postprocess(np.asarray(logits), (int(new_hw[0]), int(new_hw[1])), (h, w))
        finally:
            cv2.ipp.setUseIPP(before)
        if not np.array_equal(res, want):
            raise Finding(f"postprocess differs from the twin in {int((res != want).sum())} pixels")


def _cases_label_map(src: Source):
    nd = src.pick([3, 3, 3, 2, 4])
    dims = [src.pick([0, 1, 2, 3, src.int(0, 40), src.int(0, 70000)])] + [_side(src) for _ in range(nd - 1)]
    if dims[0] <= 65535:  # (more masks than fit uint16 are rejected before any work)
        dims = _shrink(dims, lambda d: math.prod(d) + (d[1] * d[2] if len(d) == 3 else 0), limit=1 << 62)
    if len(dims) == 3 and dims[0] == 0 and 0 not in dims[1:] and max(dims[1:]) <= MAX_SIDE:
        # zero masks still write an (H, W) label map: bound it like any other output (_shrink stops at a 0 side)
        dims[1:] = _shrink(dims[1:], lambda d: d[0] * d[1])
    dtype = _array_dtype(src, [np.bool_, np.bool_, np.bool_, np.uint8])
    masks, nice = make_array(src, tuple(dims), dtype)
    return (masks,), {"nice": nice}


def _check_label_map(native, twin, args, res, meta, differential):
    (masks,) = args
    if not isinstance(res, np.ndarray) or res.dtype != np.uint16 or res.shape != masks.shape[1:]:
        raise Finding(f"label_map result {getattr(res, 'shape', res)}")
    if differential and masks.size <= 1 << 18:
        want = twin.label_map(np.asarray(masks))
        if not np.array_equal(res, want):
            raise Finding("label_map differs from the twin")


def _cases_resize_area(src: Source):
    nd = src.pick([2, 2, 2, 3, 3, 3, 1, 4])
    dims = [_side(src) for _ in range(nd)]
    if nd == 3 and not src.chance(4):
        dims[2] = src.pick([1, 2, 3, 4])
    nh = src.pick([src.int(1, 64), src.int(1, 600), _side(src)])
    nw = src.pick([src.int(1, 64), src.int(1, 600), _side(src)])
    cn = dims[2] if nd == 3 else 1
    if nd >= 2 and 0 not in dims and max(dims) <= MAX_SIDE:
        # the source alone first: nh / nw may be replaced by accepted odd values (True, 1) below
        dims[:2] = _shrink(dims[:2], lambda d: d[0] * d[1] * max(cn, 1))
        if max(nh, nw) <= MAX_SIDE:
            d = _shrink(dims[:2] + [nh, nw], lambda d: (d[0] * d[1] + d[2] * d[3]) * max(cn, 1))
            dims[:2], nh, nw = d[:2], d[2], d[3]
    dtype = _array_dtype(src, [np.uint8, np.float32, np.uint8, np.float32, np.dtype(">f4")])
    image, nice = make_array(src, tuple(dims), dtype)
    return (image, weird_int(src, nh), weird_int(src, nw)), {"nice": nice}


def _check_resize_area(native, twin, args, res, meta, differential):
    image, nh, nw = args
    shape = (int(nh), int(nw)) + ((image.shape[2],) if image.ndim == 3 else ())
    want_dtype = np.uint8 if image.dtype == np.uint8 else np.float32
    if not isinstance(res, np.ndarray) or res.shape != shape or res.dtype != want_dtype:
        raise Finding(f"resize_area result {getattr(res, 'shape', res)} {getattr(res, 'dtype', '')} for {shape}")
    if (
        differential
        and meta["nice"]
        and image.size <= 1 << 16
        and res.size <= 1 << 16
        and image.dtype in (np.uint8, np.float32)
        and (image.ndim == 2 or image.shape[2] in (1, 3, 4))
    ):
        want = twin.resize_area(np.asarray(image), int(nh), int(nw))
        if image.dtype == np.uint8 and not np.array_equal(res, want):
            raise Finding("resize_area (uint8) differs from cv2")
        if image.dtype == np.float32 and not np.allclose(res, want, rtol=1e-6, atol=1e-6 * float(np.abs(want).max(initial=1))):
            raise Finding("resize_area (float32) differs from cv2")


def _cases_box_from_mask(src: Source):
    nd = src.pick([2, 2, 2, 1, 3])
    dims = _shrink([_side(src) for _ in range(nd)], lambda d: math.prod(d))
    dtype = _array_dtype(src, [np.uint8, np.uint8, np.bool_, np.uint16, np.int32, np.int64, np.dtype(">i2")])
    mask, nice = make_array(src, tuple(dims), dtype)
    margin = weird_int(src, src.pick([3, 0, 1, 10, -3, 300]))
    return (mask, margin), {"nice": nice}


def _check_box_from_mask(native, twin, args, res, meta, differential):
    mask, margin = args
    if res is not None:
        if not isinstance(res, np.ndarray) or res.shape != (4,) or res.dtype != np.int64:
            raise Finding(f"box_from_mask result {res!r}")
        if res.min() < 0 or res.max() > 256:
            raise Finding(f"box_from_mask box {res} outside [0, 256]")
    if differential and mask.size <= 1 << 16 and mask.dtype.kind in "bui":
        want = twin.box_from_mask(np.asarray(mask), int(margin))
        if (want is None) != (res is None) or (want is not None and not np.array_equal(want, res)):
            raise Finding(f"box_from_mask {res} != twin {want}")


def _labels_slice(src: Source, h: int, w: int):
    """The (H, W) uint16 label slice paste_masks writes into, in any layout; sometimes the wrong thing."""
    r = src.int(0, 15)
    if r == 0:  # a slice of a (z, y, x) label volume, as the 3D loop passes it
        vol = np.zeros((3, h, w), np.uint16)
        return vol[src.int(0, 2)]
    if r == 1:  # strided / reversed views
        big = np.zeros((h * 2, w * 2), np.uint16)
        return src.pick([big[::2, ::2], big[::-2, ::2], big[:h, ::-1][:, :w], big[::2, :w].T[:w, :h].T])
    if r == 2:  # transposed (Fortran order)
        return np.zeros((w, h), np.uint16).T
    if r == 3:
        bad = np.zeros((h, w), src.pick([np.int16, np.uint8, np.float32, np.dtype(">u2"), np.uint32, np.bool_]))
        return bad
    if r == 4:
        ro = np.zeros((h, w), np.uint16)
        ro.setflags(write=False)
        return ro
    if r == 5:  # unaligned
        buf = np.zeros(h * w * 2 + 1, np.uint8)
        return buf[1:].view(np.uint16).reshape(h, w) if h * w else np.zeros((h, w), np.uint16)
    if r == 6:
        return src.pick([None, [[0]], np.zeros((h, w, 1), np.uint16), np.zeros((w,), np.uint16),
                         np.broadcast_to(np.zeros(1, np.uint16), (h, w)), np.zeros((0, w), np.uint16)])
    if r == 7:  # prefilled labels (the max rule must keep larger existing values)
        rng = np.random.default_rng(int.from_bytes(src.bytes(4), "little"))
        return rng.integers(0, 6, (h, w)).astype(np.uint16)
    return np.zeros((h, w), np.uint16)


def _int_vector(src: Source, n: int, lo: int, hi: int):
    r = src.int(0, 11)
    if r < 7:  # valid: 1..hi, in an integer dtype that holds hi
        dt = src.pick([np.int64, np.int32, np.uint16] + ([np.uint8] if hi <= 255 else []))
        return ((np.arange(n) % hi) + 1).astype(dt)
    if r == 7:  # wrong length
        return np.ones(n + src.pick([1, -1, 5]) if n else 1, np.int64)
    if r == 8:  # out of range
        return np.full(n, src.pick([-1, hi + 1, 1 << 40, -(1 << 63)]), np.int64)
    if r == 9:
        return src.pick([np.ones(n, np.float64), None, "ab", [1] * n, np.ones((n, 1), np.int64), np.ones(n, bool)])
    if r == 10:
        return np.broadcast_to(np.int64(1), (n,))
    return np.array([src.int(lo, hi) for _ in range(n)], dtype=np.int64)


def _cases_paste_masks(src: Source):
    nd = src.pick([3, 3, 4, 2])
    b = src.pick([0, 1, 1, 2, 3, 5, src.int(0, 300)])
    lh = src.pick([256, 256, src.int(0, 300), _side(src, allow_huge=False)])
    lw = src.pick([256, 256, src.int(0, 300), _side(src, allow_huge=False)])
    h = src.pick([src.int(1, 64), src.int(1, 300), _side(src, allow_huge=False), 1])
    w = src.pick([src.int(1, 64), src.int(1, 300), _side(src, allow_huge=False), 1])
    b, lh, lw = _shrink([b, lh, lw], lambda d: d[0] * d[1] * d[2], limit=1 << 62)
    b, h, w = _shrink([b, h, w], lambda d: d[0] * (d[1] * d[2] + lh * lw))
    nh = src.int(1, lh) if lh else src.int(0, 3)
    nw = src.int(1, lw) if lw else src.int(0, 3)
    shape = {3: (b, lh, lw), 4: (b, src.pick([1, 1, 2, 0]), lh, lw), 2: (lh, lw)}[nd]
    dtype = _array_dtype(src, [np.float32, np.float32, np.float32, np.float64, np.float16, np.int32])
    logits, nice = make_array(src, shape, dtype)
    labels = _labels_slice(src, h, w)
    values = _int_vector(src, b, 0, 65535)
    marks = _int_vector(src, b, 0, 255)
    margin = weird_int(src, src.pick([3, 0, 1, 10, -3, 300]))
    before = labels.copy() if isinstance(labels, np.ndarray) else None
    return (logits, weird_pair(src, (nh, nw)), labels, values, marks, margin), {"nice": nice, "before": before}


def _check_paste_masks(native, twin, args, res, meta, differential):
    logits, new_hw, labels, values, marks, margin = args
    b = logits.shape[0]
    if not (isinstance(res, tuple) and len(res) == 2):
        raise Finding(f"paste_masks returned {type(res)}")
    boxes, crops = res
    if not isinstance(boxes, np.ndarray) or boxes.shape != (b, 4) or boxes.dtype != np.int64:
        raise Finding(f"paste_masks boxes {getattr(boxes, 'shape', boxes)}")
    if not isinstance(crops, list) or len(crops) != b:
        raise Finding(f"paste_masks crops {type(crops)} of length {len(crops) if hasattr(crops, '__len__') else '?'}")
    for row in boxes:
        if not ((row == -1).all() or (row.min() >= 0 and row.max() <= 256)):
            raise Finding(f"paste_masks next box {row} is neither -1s nor inside [0, 256]")
    h, w = labels.shape
    for c in crops:
        if c is None:
            continue
        y0, x0, m = c
        if m.dtype != np.bool_ or m.ndim != 2 or y0 < 0 or x0 < 0 or y0 + m.shape[0] > h or x0 + m.shape[1] > w:
            raise Finding(f"paste_masks crop at {(y0, x0)} of shape {m.shape} outside {(h, w)}")
    if meta["before"] is not None and (labels < meta["before"]).any():
        raise Finding("paste_masks lowered a label (the rule is max(label, value))")
    if differential and meta["nice"] and logits.dtype == np.float32 and b * h * w <= 1 << 16:
        import cv2

        want_labels = meta["before"].copy()
        before = cv2.ipp.useIPP()
        cv2.ipp.setUseIPP(False)
        try:
            want_boxes, want_crops = twin.paste_masks(np.asarray(logits), (int(new_hw[0]), int(new_hw[1])), want_labels,
                                                      np.asarray(values), np.asarray(marks), int(margin))
        finally:
            cv2.ipp.setUseIPP(before)
        if not np.array_equal(labels, want_labels):
            raise Finding(f"paste_masks labels differ from the twin in {int((labels != want_labels).sum())} pixels")
        if not np.array_equal(boxes, want_boxes):
            raise Finding(f"paste_masks boxes {boxes.tolist()} != twin {want_boxes.tolist()}")
        for c, t in zip(crops, want_crops):
            if (c is None) != (t is None) or (c is not None and (c[:2] != t[:2] or not np.array_equal(c[2], t[2]))):
                raise Finding("paste_masks crops differ from the twin")


CASES = {k: globals()[f"_cases_{k}"] for k in KERNELS}
CHECKS = {k: globals()[f"_check_{k}"] for k in KERNELS}


# ---------------------------------------------------------------------------------------------------- driver
def load_native(path: str | None):
    """The sanitized module at `path`, or the installed medsam_edge._native."""
    if not path:
        from medsam_edge import _native

        return _native
    # (a name of its own: CPython caches extension modules by name, so "medsam_edge._native" could hand back the
    # installed build when the package was imported first)
    spec = importlib.util.spec_from_file_location("medsam_fuzz_target._native", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Runner:
    def __init__(self, native, kernel: str, differential: bool) -> None:
        from medsam_edge import _kernels_py as twin

        self.native, self.twin, self.kernel, self.differential = native, twin, kernel, differential
        self.fn = getattr(native, kernel)
        self.execs = 0
        self.accepted = 0
        self.rejected: dict[str, int] = {}
        self.progress = None  # called every 1000 executions (atheris ends the process without atexit)

    def one(self, data: bytes) -> None:
        src = Source(data)
        try:
            args, meta = CASES[self.kernel](src)
        except (ValueError, OverflowError, MemoryError):  # numpy refused to build the input (not the kernel's business)
            return
        self.execs += 1
        if self.progress is not None and self.execs % 1000 == 0:
            self.progress()
        if TRACE:
            print(self.kernel, describe(args), file=sys.stderr, flush=True)
        try:
            with np.errstate(all="ignore"):
                res = self.fn(*args)
        except ALLOWED as exc:
            self.rejected[type(exc).__name__] = self.rejected.get(type(exc).__name__, 0) + 1
            if TRACE:
                print("  ->", type(exc).__name__, str(exc)[:60], file=sys.stderr, flush=True)
            return
        except MemoryError:
            self.rejected["MemoryError"] = self.rejected.get("MemoryError", 0) + 1
            return
        except Exception as exc:  # noqa: BLE001 - this is the finding
            raise Finding(f"{self.kernel} raised {type(exc).__name__}: {exc}\n{describe(args)}") from exc
        self.accepted += 1
        with np.errstate(all="ignore"):
            try:
                CHECKS[self.kernel](self.native, self.twin, args, res, meta, self.differential)
            except Finding as exc:
                raise Finding(f"{exc}\n{describe(args)}") from None


def describe(args) -> str:
    parts = []
    for a in args:
        if isinstance(a, np.ndarray):
            parts.append(f"array(shape={a.shape}, dtype={a.dtype}, strides={a.strides}, "
                         f"aligned={a.flags.aligned}, writeable={a.flags.writeable})")
        else:
            parts.append(repr(a)[:200])
    return "args: " + ", ".join(parts)


def run_random(runner: Runner, runs: int, seed: int, max_seconds: float | None = None, progress=None) -> None:
    """`runs` executions from seeded random byte strings; `progress(runner)` is called every 5000 executions."""
    rng = random.Random(seed)
    t0 = time.monotonic()
    for i in range(runs):
        runner.one(rng.randbytes(rng.choice((8, 16, 32, 64, 128))))
        if progress is not None and i % 5000 == 4999:
            progress(runner)
        if max_seconds is not None and (i & 63) == 0 and time.monotonic() - t0 > max_seconds:
            break


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kernel", default="all", choices=KERNELS + ("all",))
    ap.add_argument("--runs", type=int, default=10000, help="executions per kernel")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--native", default=None, help="path of a (sanitized) _native*.so; default: the installed one")
    ap.add_argument("--atheris", action="store_true", help="drive with atheris instead of seeded random bytes")
    ap.add_argument("--differential", action="store_true", help="compare small finite inputs with the twin")
    ap.add_argument("--stats", default=None, help="write a JSON line of counts here at the end")
    ap.add_argument("--corpus", default=None, help="atheris corpus folder")
    args, rest = ap.parse_known_args(argv)
    native = load_native(args.native)
    kernels = KERNELS if args.kernel == "all" else (args.kernel,)
    if args.atheris:
        if len(kernels) != 1:
            ap.error("--atheris fuzzes one kernel per process")
        import atheris

        # coverage of this harness's own branches (shape, dtype, layout, argument kinds) guides atheris
        module = sys.modules[__name__]
        for name, obj in list(vars(module).items()):
            if callable(obj) and getattr(obj, "__module__", None) == __name__ and name.startswith(("_", "make", "weird")):
                setattr(module, name, atheris.instrument_func(obj))
        CASES.update({k: getattr(module, f"_cases_{k}") for k in KERNELS})
        CHECKS.update({k: getattr(module, f"_check_{k}") for k in KERNELS})
        runner = Runner(native, kernels[0], args.differential)
        t0 = time.monotonic()

        def report():
            if args.stats:
                rec = {"kernel": runner.kernel, "execs": runner.execs, "accepted": runner.accepted,
                       "rejected": runner.rejected, "seconds": round(time.monotonic() - t0, 1),
                       "native": str(args.native or "installed"), "driver": "atheris"}
                Path(args.stats).write_text(json.dumps(rec) + "\n")

        import atexit

        atexit.register(report)
        runner.progress = report
        fuzz_argv = [sys.argv[0], f"-runs={args.runs}", f"-seed={args.seed or 1}", "-max_len=256", *rest]
        if args.corpus:
            os.makedirs(args.corpus, exist_ok=True)
            fuzz_argv.append(args.corpus)
        atheris.Setup(fuzz_argv, runner.one)
        atheris.Fuzz()
        return 0
    summary = {}
    for k in kernels:
        runner = Runner(native, k, args.differential)
        t0 = time.monotonic()

        def record(r, done=False):
            summary[k] = {"execs": r.execs, "accepted": r.accepted, "rejected": r.rejected,
                          "seconds": round(time.monotonic() - t0, 2), "finished": done, "seed": args.seed,
                          "native": str(args.native or "installed"), "driver": "random",
                          "differential": args.differential}
            if args.stats:
                tmp = Path(args.stats + ".tmp")
                tmp.write_text(json.dumps(summary) + "\n")
                os.replace(tmp, args.stats)

        run_random(runner, args.runs, args.seed, progress=record)
        record(runner, done=True)
        print(k, json.dumps(summary[k]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
