"""ROI zoom: re-segment small targets on an enlarged crop and keep, per box, the mask the decoder trusts more.

LiteMedSAM sees every image at 256 px on its longest side, so a target of 12 px in a 512 px image covers 6 model
pixels. The zoom pass cuts a square window around one or more boxes out of the original image, runs the ordinary
pipeline on that window (its own encoder call: the window is a different image), maps the mask back into the full
image and then, box by box, keeps either the full-image mask or the zoomed mask: the one with the larger predicted
IoU (the decoder's own quality estimate). Nothing here touches OpenVINO: :class:`Zoom` is handed the encode/decode
callables of a :class:`medsam_edge.Segmenter`.

Geometry (all in original pixels, XYXY boxes, windows ``(x0, y0, x1, y1)`` with exclusive ends):

* window of one box: a square of side ``max(scale * longest box side, min_side)`` (rounded up), centred on the box,
  shifted to lie inside the image; on an axis where the image is shorter than the side it covers the whole axis;
* window of a group of boxes: the same rule applied to the union box of the group;
* gain of a window: ``max(H, W) / max(window sides)`` = how many times more model pixels the target gets;
* boxes are planned into at most ``max_crops`` windows per image (per slice in 3D): boxes whose longest side is above
  ``max_box`` or whose own window gains less than ``min_gain`` are not zoomed; nearby boxes share a window while
  the merged window still gains ``min_gain``; if more windows remain than ``max_crops``, the ones with the largest
  benefit (sum over their boxes of ``log(gain)``) are kept and the other boxes keep their full-image masks.

Costs: one encoder call per window plus one decoder call per zoomed box, on top of the full-image pipeline. With the
defaults (one window per image; in 3D one window on every 2nd slice of each sweep, :class:`VolumeZoom`) the dev set
ran at 1.5-1.7x the default pipeline's time (``benchmarks/results/refine.md``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from . import kernels
from .errors import ConfigurationError
from .prompts import Frame

#: accepted values of ``Segmenter(refine=...)`` given as a string (None = the reference pipeline, no refinement)
REFINE_MODES = ("zoom",)
#: how a window smaller than the model input is enlarged before the encoder
UPSCALE_METHODS = ("linear", "area")
#: how the zoomed and the full-image mask of a box are combined
SELECT_METHODS = ("iou", "zoom", "fuse")


@dataclass(frozen=True)
class ZoomOptions:
    """Settings of the ROI zoom (the defaults are the ones the dev set chose; see benchmarks/results/refine.md).

    Attributes:
        scale: window side as a multiple of the box's longest side (>= 1).
        min_side: smallest window side in pixels (>= 8).
        min_gain: a window is used only if it gives the target at least this many times more model pixels (> 1).
        max_box: boxes whose longest side (original pixels) exceeds this are not zoomed; None = no limit.
        max_crops: at most this many windows (extra encoder calls) per image or slice (>= 1).
        upscale: "linear" (bilinear enlargement of the window to the model input) or "area" (OpenCV INTER_AREA,
            what the reference preprocessing would do).
        select: "iou" (keep the mask with the larger predicted IoU), "zoom" (always the zoomed mask) or "fuse"
            (average the two logit maps inside the window).
        margin: with ``select="iou"`` the zoomed mask must beat the full one by more than this predicted IoU.
        volume_step: in 3D, the zoom runs on every ``volume_step``-th slice of each sweep (1 = every slice); the
            slices in between are prompted from the zoomed masks through the usual propagation. 2 keeps the 3D cost
            under 2x the default.
    """

    scale: float = 1.5
    min_side: int = 64
    min_gain: float = 1.5
    max_box: float | None = None
    max_crops: int = 1
    upscale: str = "linear"
    select: str = "iou"
    margin: float = 0.0
    volume_step: int = 2

    def __post_init__(self) -> None:
        def number(name, value, low, strict=False):
            ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
            ok = ok and math.isfinite(float(value)) and (float(value) > low if strict else float(value) >= low)
            if not ok:
                rel = ">" if strict else ">="
                raise ConfigurationError(f"ZoomOptions.{name} must be a finite number {rel} {low}, got {value!r}")

        number("scale", self.scale, 1.0)
        number("min_side", self.min_side, 8)
        number("min_gain", self.min_gain, 1.0, strict=True)
        if self.max_box is not None:
            number("max_box", self.max_box, 0.0, strict=True)
        number("margin", self.margin, -1.0)
        if not isinstance(self.max_crops, (int, np.integer)) or isinstance(self.max_crops, bool) or self.max_crops < 1:
            raise ConfigurationError(f"ZoomOptions.max_crops must be an integer >= 1, got {self.max_crops!r}")
        if not isinstance(self.volume_step, (int, np.integer)) or isinstance(self.volume_step, bool) or \
                self.volume_step < 1:
            raise ConfigurationError(f"ZoomOptions.volume_step must be an integer >= 1, got {self.volume_step!r}")
        if self.upscale not in UPSCALE_METHODS:
            raise ConfigurationError(f"ZoomOptions.upscale must be one of {UPSCALE_METHODS}, got {self.upscale!r}")
        if self.select not in SELECT_METHODS:
            raise ConfigurationError(f"ZoomOptions.select must be one of {SELECT_METHODS}, got {self.select!r}")


def check_refine(refine) -> ZoomOptions | None:
    """``Segmenter(refine=...)`` -> options: None (reference pipeline), "zoom" (defaults) or a :class:`ZoomOptions`."""
    if refine is None:
        return None
    if isinstance(refine, ZoomOptions):
        return refine
    if isinstance(refine, str) and refine in REFINE_MODES:
        return ZoomOptions()
    raise ConfigurationError(
        f"refine must be None (the reference pipeline), one of {REFINE_MODES} or a ZoomOptions, got {refine!r}"
    )


# -- geometry ------------------------------------------------------------------------------------------------------
def crop_window(box, height: int, width: int, scale: float = 1.5, min_side: int = 64) -> tuple[int, int, int, int]:
    """Square window ``(x0, y0, x1, y1)`` (exclusive ends) around ``box`` XYXY, inside a ``height`` x ``width`` image.

    Side ``ceil(max(scale * longest box side, min_side))``, centred on the box, shifted to stay inside the image; an
    axis shorter than the side is covered entirely.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    side = int(math.ceil(max(scale * max(x1 - x0, y1 - y0), float(min_side))))

    def axis(lo: float, hi: float, size: int) -> tuple[int, int]:
        if side >= size:
            return 0, size
        start = int(math.floor((lo + hi) / 2.0 - side / 2.0 + 0.5))
        start = min(max(start, 0), size - side)
        return start, start + side

    wx0, wx1 = axis(x0, x1, width)
    wy0, wy1 = axis(y0, y1, height)
    return wx0, wy0, wx1, wy1


def window_gain(window, height: int, width: int) -> float:
    """How many times more model pixels a target gets in ``window`` than in the full image."""
    x0, y0, x1, y1 = window
    return max(height, width) / max(x1 - x0, y1 - y0)


def boxes_in_window(boxes: np.ndarray, window) -> np.ndarray:
    """(N, 4) boxes in original pixels -> the same boxes in window pixels, clipped to the window."""
    x0, y0, x1, y1 = window
    out = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) - np.array([x0, y0, x0, y0], dtype=np.float64)
    np.clip(out[:, 0::2], 0, x1 - x0, out=out[:, 0::2])
    np.clip(out[:, 1::2], 0, y1 - y0, out=out[:, 1::2])
    return out


def paste(masks: np.ndarray, window, height: int, width: int) -> np.ndarray:
    """(B, h, w) window masks -> (B, height, width) full-image masks (False outside the window)."""
    x0, y0, x1, y1 = window
    out = np.zeros((masks.shape[0], height, width), dtype=masks.dtype)
    out[:, y0:y1, x0:x1] = masks
    return out


@dataclass(frozen=True)
class Crop:
    """One planned window and the indices of the boxes it serves."""

    window: tuple[int, int, int, int]
    members: tuple[int, ...]
    gain: float


def _union_windows(boxes: np.ndarray, height: int, width: int, opts: ZoomOptions) -> np.ndarray:
    """Side of the window of the union of every pair of boxes: (N, N) float."""
    lo = np.minimum(boxes[:, None, :2], boxes[None, :, :2])
    hi = np.maximum(boxes[:, None, 2:], boxes[None, :, 2:])
    longest = np.max(hi - lo, axis=2)
    side = np.ceil(np.maximum(opts.scale * longest, float(opts.min_side)))
    return np.minimum(side, max(height, width))


def plan_crops(boxes, height: int, width: int, opts: ZoomOptions) -> list[Crop]:
    """Group ``boxes`` (N, 4, original pixels) into at most ``opts.max_crops`` windows (see the module docstring)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    full = float(max(height, width))
    longest = np.max(boxes[:, 2:] - boxes[:, :2], axis=1) if len(boxes) else np.zeros(0)
    own_side = np.ceil(np.maximum(opts.scale * longest, float(opts.min_side)))
    eligible = full / np.maximum(own_side, 1.0) >= opts.min_gain
    if opts.max_box is not None:
        eligible &= longest <= opts.max_box
    idx = np.flatnonzero(eligible)
    if idx.size == 0:
        return []
    groups = [[int(i)] for i in idx]
    union = boxes[idx].copy()  # union box of each group
    limit = full / opts.min_gain  # largest window side allowed
    while len(groups) > 1:
        side = _union_windows(union, height, width, opts)
        own = np.diag(side).copy()
        np.fill_diagonal(side, np.inf)
        # a merge that does not enlarge either window is free; otherwise merge only while over budget
        grow = side - np.maximum(own[:, None], own[None, :])
        allowed = side <= limit
        if len(groups) <= opts.max_crops:
            allowed &= grow <= 0
        if not allowed.any():
            break
        cost = np.where(allowed, side, np.inf)
        a, b = np.unravel_index(int(np.argmin(cost)), cost.shape)
        a, b = (int(a), int(b)) if a < b else (int(b), int(a))
        groups[a].extend(groups[b])
        union[a, :2] = np.minimum(union[a, :2], union[b, :2])
        union[a, 2:] = np.maximum(union[a, 2:], union[b, 2:])
        del groups[b]
        union = np.delete(union, b, axis=0)
    crops = []
    for members, ub in zip(groups, union):
        window = crop_window(ub, height, width, opts.scale, opts.min_side)
        crops.append(Crop(window, tuple(sorted(members)), window_gain(window, height, width)))
    crops.sort(key=lambda c: (-len(c.members) * math.log(c.gain), c.members))
    return sorted(crops[: opts.max_crops], key=lambda c: c.members)


# -- the zoom pass ---------------------------------------------------------------------------------------------------
def enlarge(crop: np.ndarray, method: str) -> np.ndarray:
    """Enlarge a window smaller than the model input to its model size with ``method`` ("linear" or "area").

    A window already at least as large as the model input is returned as it is (the preprocessing shrinks it).
    "area" also returns the window unchanged: the preprocessing's own INTER_AREA resize then enlarges it.
    """
    h, w = crop.shape[:2]
    new_h, new_w = kernels.resized_shape(h, w)
    if method == "area" or (new_h <= h and new_w <= w):
        return crop
    src = crop if crop.dtype in (np.uint8, np.float32) else crop.astype(np.float32)
    src = np.ascontiguousarray(src[:, :, 0] if src.ndim == 3 and src.shape[2] == 1 else src)
    import cv2

    return cv2.resize(src, (new_w, new_h), interpolation=cv2.INTER_LINEAR)


def _upsampled_logits(logits: np.ndarray, frame: Frame) -> np.ndarray:
    """(B, 256, 256) low-res logits -> (B, H, W) float32, the bilinear map the masks are thresholded from."""
    import cv2

    new_h, new_w = frame.resized
    out = np.empty((logits.shape[0], frame.height, frame.width), dtype=np.float32)
    for i in range(logits.shape[0]):
        crop = np.ascontiguousarray(logits[i, :new_h, :new_w])
        out[i] = cv2.resize(crop, (frame.width, frame.height), interpolation=cv2.INTER_LINEAR)
    return out


class Zoom:
    """Runs the zoom pass for one image given the full-image results.

    Args:
        options: :class:`ZoomOptions`.
        encode: ``tensor (1, 3, 256, 256) -> embedding``; ``decode``: ``(embedding, boxes256) -> (logits, iou)``.
    """

    def __init__(self, options: ZoomOptions, encode: Callable, decode: Callable) -> None:
        self.options = options
        self.encode = encode
        self.decode = decode
        self._input = np.zeros((1, 3, kernels.TARGET, kernels.TARGET), dtype=np.float32)
        self.encoded = 0  # windows encoded so far (for cost accounting)

    def window_results(self, image: np.ndarray, boxes: np.ndarray, crop: Crop):
        """Logits (B, 256, 256), iou (B,) and the window frame for the member boxes of ``crop``; None if the window
        is constant (nothing to see)."""
        x0, y0, x1, y1 = crop.window
        patch = image[y0:y1, x0:x1]
        if patch.min() == patch.max():
            return None
        frame = Frame(y1 - y0, x1 - x0)
        tensor, _ = kernels.preprocess(enlarge(patch, self.options.upscale), self._input)
        embedding = self.encode(tensor)
        self.encoded += 1
        local = boxes_in_window(boxes[list(crop.members)], crop.window)
        logits, iou = self.decode(embedding, frame.boxes_to_model(local))
        return logits, iou, frame

    def __call__(self, image: np.ndarray, boxes: np.ndarray, masks: np.ndarray, scores: np.ndarray,
                 logits: np.ndarray | None = None, frame: Frame | None = None):
        """Refine ``masks`` (N, H, W) bool / ``scores`` (N,) of ``boxes`` (N, 4, original pixels) on ``image``.

        ``logits`` (N, 256, 256) and ``frame`` of the full-image pass are needed only for ``select="fuse"``.
        Returns new (masks, scores, zoomed) arrays; ``zoomed`` (N,) bool says which boxes took the zoomed mask.
        """
        opts = self.options
        h, w = image.shape[:2]
        masks = np.array(masks, dtype=bool, copy=True)
        scores = np.array(scores, dtype=np.float32, copy=True)
        zoomed = np.zeros(len(boxes), dtype=bool)
        for crop in plan_crops(boxes, h, w, opts):
            got = self.window_results(image, boxes, crop)
            if got is None:
                continue
            zlogits, ziou, zframe = got
            x0, y0, x1, y1 = crop.window
            if opts.select == "fuse" and logits is not None and frame is not None:
                full_up = _upsampled_logits(logits[list(crop.members)], frame)
                zoom_up = _upsampled_logits(zlogits, zframe)
                fused = full_up.copy()
                fused[:, y0:y1, x0:x1] = 0.5 * (full_up[:, y0:y1, x0:x1] + zoom_up)
                for k, b in enumerate(crop.members):
                    masks[b] = fused[k] > 0
                    scores[b] = 0.5 * (scores[b] + ziou[k])
                    zoomed[b] = True
                continue
            zmasks = kernels.postprocess(zlogits, zframe.resized, (zframe.height, zframe.width))
            for k, b in enumerate(crop.members):
                if opts.select == "zoom" or ziou[k] > scores[b] + opts.margin:
                    masks[b] = False
                    masks[b, y0:y1, x0:x1] = zmasks[k]
                    scores[b] = ziou[k]
                    zoomed[b] = True
        return masks, scores, zoomed


class VolumeZoom:
    """The zoom for one volume: acts on the 1st, (1 + step)-th, ... call (slice) and passes the others through."""

    def __init__(self, zoom: Zoom) -> None:
        self.zoom = zoom
        self.calls = 0

    def __call__(self, image, boxes, masks, scores, logits=None, frame=None):
        k = self.calls
        self.calls += 1
        if k % self.zoom.options.volume_step:
            return masks, scores, np.zeros(len(boxes), dtype=bool)
        return self.zoom(image, boxes, masks, scores, logits, frame)


def with_options(options: ZoomOptions, **changes) -> ZoomOptions:
    """A copy of ``options`` with ``changes`` (validated)."""
    return replace(options, **changes)
