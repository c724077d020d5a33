"""NumPy/OpenCV twin of the native kernels (``medsam_edge._native``).

This module *defines* the semantics; the C++ kernels in ``csrc/`` must give the same answers (tests compare them).
No function keeps state; ``preprocess`` writes into a caller-given ``out`` buffer and ``paste_masks`` into the
caller's label slices, the others return new arrays. They validate nothing beyond what they need (the public API
validates first).

Conventions
-----------
* Images are (H, W) or (H, W, C) arrays, C in {1, 3}, row-major (y, x).
* ``TARGET`` (256) is the model's input side. Resize keeps the aspect ratio so that the longest side becomes 256:
  ``scale = 256 / max(H, W)``, ``new_h = int(H * scale + 0.5)``, ``new_w = int(W * scale + 0.5)`` (double precision,
  exactly as the official LiteMedSAM pipeline).
* uint8 images are resized as uint8 (OpenCV ``INTER_AREA`` with its rounding), like the reference; every other dtype
  is converted to float32 first and resized in float32 (no rounding), so 12/16-bit data keep their precision.
* Normalisation is per image over all channels: ``(x - min) / max(max - min, 1e-8)`` computed in float64 and stored
  as float32; padding is zeros at the bottom/right.
"""

from __future__ import annotations

import numpy as np

TARGET = 256


def _cv2():
    """OpenCV, imported on first use (15 MB RSS and ~20 ms of ``import medsam_edge`` that the native kernels never
    need)."""
    import cv2

    return cv2


def resized_shape(h: int, w: int, target: int = TARGET) -> tuple[int, int]:
    """(new_h, new_w) of the longest-side resize, exactly as the reference computes it."""
    scale = target * 1.0 / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


def resize_area(image: np.ndarray, new_h: int, new_w: int) -> np.ndarray:
    """OpenCV ``INTER_AREA`` resize of a (H, W) or (H, W, C) uint8 or float32 image to (new_h, new_w[, C])."""
    cv2 = _cv2()
    image = np.ascontiguousarray(image)
    squeeze_channel = image.ndim == 3 and image.shape[2] == 1
    src = image[:, :, 0] if squeeze_channel else image
    out = cv2.resize(src, (new_w, new_h), interpolation=cv2.INTER_AREA)
    if image.ndim == 3 and out.ndim == 2:
        out = out[:, :, None]
    return out


def preprocess(image: np.ndarray, out: np.ndarray | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """Image -> model input.

    Args:
        image: (H, W), (H, W, 1) or (H, W, 3) array of any real dtype, finite values.
        out: optional preallocated (1, 3, 256, 256) float32 C-contiguous buffer, overwritten.

    Returns:
        (tensor, (new_h, new_w)): the (1, 3, 256, 256) float32 input (grey images repeated to 3 channels) and the
        size of the resized image inside the padded square.
    """
    h, w = image.shape[:2]
    new_h, new_w = resized_shape(h, w)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.dtype != np.uint8:
        image = image.astype(np.float32)
    resized = resize_area(image, new_h, new_w)
    lo = float(resized.min())
    hi = float(resized.max())
    norm = (resized.astype(np.float64) - lo) / max(hi - lo, 1e-8)
    if out is None:
        out = np.zeros((1, 3, TARGET, TARGET), dtype=np.float32)
    else:
        out[...] = 0.0
    if norm.ndim == 2:
        out[0, :, :new_h, :new_w] = norm[None, :, :].astype(np.float32)
    else:
        out[0, :, :new_h, :new_w] = np.transpose(norm, (2, 0, 1)).astype(np.float32)
    return out, (new_h, new_w)


def postprocess(logits: np.ndarray, new_hw: tuple[int, int], orig_hw: tuple[int, int]) -> np.ndarray:
    """Low-resolution logits -> full-resolution boolean masks.

    Args:
        logits: (B, 256, 256) float32 (a (B, 1, 256, 256) array is accepted too).
        new_hw: (new_h, new_w) of the resized image inside the 256 square; logits are cropped to it.
        orig_hw: (H, W) of the original image.

    Returns:
        (B, H, W) bool: bilinear upsampling (half-pixel centres, like torch ``align_corners=False``) then
        ``logit > 0`` (the reference's ``sigmoid > 0.5``).
    """
    cv2 = _cv2()
    logits = np.asarray(logits, dtype=np.float32)
    if logits.ndim == 4:
        logits = logits[:, 0]
    new_h, new_w = new_hw
    h, w = orig_hw
    masks = np.empty((logits.shape[0], h, w), dtype=bool)
    for i in range(logits.shape[0]):
        crop = np.ascontiguousarray(logits[i, :new_h, :new_w])
        up = cv2.resize(crop, (w, h), interpolation=cv2.INTER_LINEAR)
        masks[i] = up > 0
    return masks


def label_map(masks: np.ndarray) -> np.ndarray:
    """(N, H, W) bool -> (H, W) uint16 label map; mask i gets label i + 1, later masks overwrite earlier ones."""
    n, h, w = masks.shape
    labels = np.zeros((h, w), dtype=np.uint16)
    for i in range(n):
        labels[masks[i]] = i + 1
    return labels


def box_from_mask(mask: np.ndarray, margin: int = 3) -> np.ndarray | None:
    """Reference rule for the next slice's box in 3D propagation, in 256 space.

    ``mask`` is the previous slice's (H, W) uint8 mask holding the box's label value (the reference resizes the
    label image itself, so the value matters for INTER_AREA rounding). It is resized with the longest-side rule,
    padded to 256; the tight box of pixels > 0 is widened by ``margin`` on each side and each coordinate is clamped
    to [0, 256].
    Returns int64 [x_min, y_min, x_max, y_max] or None when the resized mask is empty.
    """
    h, w = mask.shape
    new_h, new_w = resized_shape(h, w)
    small = resize_area(np.ascontiguousarray(mask, dtype=np.uint8), new_h, new_w)
    ys, xs = np.nonzero(small > 0)
    if ys.size == 0:
        return None
    def clamp(v: int) -> int:  # both sides: a negative margin moves the sides inwards
        return min(TARGET, max(0, v))

    x_min = clamp(int(xs.min()) - margin)
    x_max = clamp(int(xs.max()) + margin)
    y_min = clamp(int(ys.min()) - margin)
    y_max = clamp(int(ys.max()) + margin)
    return np.array([x_min, y_min, x_max, y_max], dtype=np.int64)


def paste_masks(
    logits: np.ndarray,
    new_hw: tuple[int, int],
    labels: np.ndarray,
    values: np.ndarray,
    marks: np.ndarray,
    margin: int = 3,
) -> tuple[np.ndarray, list]:
    """One slice of the 3D loop: logits -> masks written into a label slice, their crops and the next slice's boxes.

    For each box ``k`` in order: the mask is ``postprocess(logits[k], new_hw, labels.shape)``; where it is set,
    ``labels = max(labels, values[k])`` (in place: with ascending values a later box overwrites an earlier one);
    the next slice's box is ``box_from_mask(mask * marks[k], margin)`` (the reference resizes its uint8 label image,
    so the value ``marks[k]`` matters for INTER_AREA rounding).

    Args:
        logits: (B, 256, 256) or (B, 1, 256, 256) float32 low-resolution logits.
        new_hw: (new_h, new_w) of the resized slice inside the 256 square.
        labels: (H, W) uint16 label slice, written in place (may be a view into a (z, y, x) label volume).
        values: (B,) label values (1..65535) written where each mask is set.
        marks: (B,) uint8 values (1..255) of each mask for the box rule.
        margin: pixels added on each side of the tight box in 256 space.

    Returns:
        (next_boxes, crops): (B, 4) int64 ``[x_min, y_min, x_max, y_max]`` in 256 space, a row of -1 where the
        resized mask is empty (the caller falls back to the 2D box); ``crops[k]`` is ``(y0, x0, bool crop of the
        mask's bounding box)`` or None for an empty mask.
    """
    logits = np.asarray(logits, dtype=np.float32)
    if logits.ndim == 4:
        logits = logits[:, 0]
    _check_label_values(values, "values", len(logits), 65535)
    _check_label_values(marks, "marks", len(logits), 255)
    return paste_bool_masks(postprocess(logits, new_hw, labels.shape), labels, values, marks, margin)


def _check_label_values(v, name: str, n: int, hi: int) -> None:
    """`v` must be n integers in 1..hi (a 0 would write nothing and, as a mark, lose the mask's box)."""
    a = np.asarray(v)
    if n == 0 and a.shape == (0,):  # [] (float64 to numpy) for zero boxes
        return
    if a.dtype.kind not in "uib" or a.shape != (n,):
        raise ValueError(f"{name} must be ({n},) integers, got shape {a.shape} dtype {a.dtype}")
    if n and (a.min() < 1 or a.max() > hi):
        raise ValueError(f"{name} must be in [1, {hi}], got [{a.min()}, {a.max()}]")


def paste_bool_masks(
    masks: np.ndarray, labels: np.ndarray, values: np.ndarray, marks: np.ndarray, margin: int = 3
) -> tuple[np.ndarray, list]:
    """:func:`paste_masks` after the upsampling: ``masks`` (B, H, W) bool at the label slice's size."""
    next_boxes = np.full((len(masks), 4), -1, dtype=np.int64)
    crops: list = []
    for k, mask in enumerate(masks):
        labels[mask] = np.maximum(labels[mask], np.uint16(values[k]))
        rows = np.flatnonzero(mask.any(axis=1))
        if rows.size == 0:
            crops.append(None)
        else:
            cols = np.flatnonzero(mask.any(axis=0))
            y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
            crops.append((y0, x0, mask[y0:y1, x0:x1].copy()))
        box = box_from_mask(mask.astype(np.uint8) * np.uint8(marks[k]), margin)
        if box is not None:
            next_boxes[k] = box
    return next_boxes, crops


def interpolate_masks(first, last, fractions, shape: tuple[int, int]) -> list:
    """Shape interpolation between two masks of one box on two slices (the slice-skipping mode's fill).

    ``first`` and ``last`` are crops ``(y0, x0, bool crop)`` as :func:`paste_bool_masks` returns them, or None for an
    empty mask; ``fractions`` are positions t in (0, 1) between them (0 = ``first``, 1 = ``last``); ``shape`` is the
    (H, W) slice. Each mask becomes a signed distance map (exact Euclidean, OpenCV ``DIST_MASK_PRECISE``; positive
    inside: distance to the nearest outside pixel, negative outside: minus the distance to the nearest inside
    pixel) on the union of the two bounding boxes plus one pixel, and the mask at t is ``(1 - t) * sdf_first + t *
    sdf_last > 0``, so t = 0 and t = 1 give the two masks back and a disc of radius r0 turns into one of radius
    about (1 - t) r0 + t r1. Where the blend is empty although both masks are not (shapes too far apart to overlap
    in between), the nearer mask is repeated (``first`` for t <= 0.5). With one mask empty, the other is repeated up
    to halfway (t < 0.5 for ``first``, t > 0.5 for ``last``) and nothing after; both empty -> nothing.

    Returns:
        one entry per fraction: ``(y0, x0, bool crop)`` clipped to the slice and tightened, or None when empty.
    """
    cv2 = _cv2()
    h, w = shape
    if first is None and last is None:
        return [None] * len(fractions)
    if first is None or last is None:
        keep, near = (first, lambda t: t < 0.5) if last is None else (last, lambda t: t > 0.5)
        return [(keep[0], keep[1], keep[2].copy()) if near(t) else None for t in fractions]
    (ay, ax, am), (by, bx, bm) = first, last
    y0, x0 = min(ay, by) - 1, min(ax, bx) - 1
    y1, x1 = max(ay + am.shape[0], by + bm.shape[0]) + 1, max(ax + am.shape[1], bx + bm.shape[1]) + 1

    def sdf(py, px, m):
        canvas = np.zeros((y1 - y0, x1 - x0), np.uint8)
        canvas[py - y0:py - y0 + m.shape[0], px - x0:px - x0 + m.shape[1]] = m
        inside = cv2.distanceTransform(canvas, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        outside = cv2.distanceTransform(1 - canvas, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        return inside - outside

    da, db = sdf(ay, ax, am), sdf(by, bx, bm)
    out: list = []
    for t in fractions:
        mask = ((1.0 - t) * da + t * db) > 0
        # clip the canvas (which may reach one pixel past the slice) to the slice, then tighten to the mask
        cy0, cx0 = max(0, -y0), max(0, -x0)
        mask = mask[cy0:min(mask.shape[0], h - y0), cx0:min(mask.shape[1], w - x0)]
        rows = np.flatnonzero(mask.any(axis=1))
        if rows.size == 0:
            near = first if t <= 0.5 else last
            out.append((near[0], near[1], near[2].copy()))
            continue
        cols = np.flatnonzero(mask.any(axis=0))
        r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        out.append((y0 + cy0 + r0, x0 + cx0 + c0, mask[r0:r1, c0:c1].copy()))
    return out
