"""Input checks and the image <-> model coordinate transform.

:class:`Frame` owns the longest-side resize of one image *and* the matching box transform, so the two cannot drift
apart. Coordinates are pixels, XYXY, x along columns and y along rows, in the original image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InvalidBoxError, InvalidImageError
from .kernels import TARGET, resized_shape

#: largest accepted side of a 2D image, in pixels
MAX_SIDE = 32768


def check_image(image, name: str = "image") -> np.ndarray:
    """Validate a 2D image; returns it as an ndarray (no copy when possible).

    Accepted: (H, W), (H, W, 1) or (H, W, 3); dtypes uint8, uint16, int8, int16, int32, int64, uint32, float16/32/64;
    finite values; not constant; 1 <= H, W <= 32768 and an aspect ratio that leaves >= 1 pixel on both sides after
    the longest-side resize to 256.
    """
    if not isinstance(image, np.ndarray):
        try:
            image = np.asarray(image)
        except Exception as exc:  # noqa: BLE001 - anything that is not array-like
            raise InvalidImageError(f"{name} must be a NumPy array (H, W) or (H, W, 3), got {type(image).__name__}") from exc
    if image.dtype == np.bool_ or image.dtype.kind not in "uif":
        raise InvalidImageError(
            f"{name} dtype must be an integer or float type (uint8, uint16, int16, float32, ...), got {image.dtype}"
        )
    if image.ndim not in (2, 3):
        raise InvalidImageError(
            f"{name} must be (H, W) or (H, W, 3), got shape {image.shape}"
            + (" (use segment_volume for (z, y, x) volumes)" if image.ndim == 3 and image.shape[2] not in (1, 3, 4) else "")
        )
    if image.ndim == 3 and image.shape[2] not in (1, 3):
        raise InvalidImageError(
            f"{name} must have 1 or 3 channels in the last axis, got shape {image.shape}"
            + (" (drop the alpha channel: image[..., :3])" if image.shape[2] == 4 else "")
        )
    h, w = image.shape[:2]
    if h == 0 or w == 0:
        raise InvalidImageError(f"{name} is empty: shape {image.shape}, expected at least 1x1 pixels")
    if h > MAX_SIDE or w > MAX_SIDE:
        raise InvalidImageError(f"{name} is {h}x{w} pixels; the largest supported side is {MAX_SIDE}")
    new_h, new_w = resized_shape(h, w)
    if new_h == 0 or new_w == 0:
        raise InvalidImageError(
            f"{name} of shape {image.shape} is too elongated: it would be {new_h}x{new_w} at the model's 256 px "
            "input; expected an aspect ratio below 512:1"
        )
    if image.dtype.kind == "f":
        if not np.isfinite(image).all():
            raise InvalidImageError(f"{name} contains NaN or infinite values; expected finite values only")
    lo, hi = image.min(), image.max()
    if lo == hi:
        raise InvalidImageError(f"{name} is constant (every pixel is {lo!r}); nothing to segment")
    return image


def as_boxes(boxes, ncols: int = 4, name: str = "boxes") -> np.ndarray:
    """Any array-like -> float64 (N, ncols); (ncols,) becomes (1, ncols); (0,) or (0, ncols) is allowed."""
    try:
        complex_values = np.iscomplexobj(boxes)
        arr = None if complex_values else np.array(boxes, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as exc:  # (OverflowError: an int beyond float64, e.g. 10**400)
        raise InvalidBoxError(f"{name} must be numbers shaped (N, {ncols}), could not convert: {exc}") from exc
    if complex_values:
        raise InvalidBoxError(f"{name} must be real numbers shaped (N, {ncols}), got complex values")
    if arr.ndim == 1 and arr.shape[0] in (0, ncols):
        arr = arr.reshape(-1, ncols)
    if arr.ndim != 2 or arr.shape[1] != ncols:
        raise InvalidBoxError(f"{name} must have shape (N, {ncols}) or ({ncols},), got {arr.shape}")
    if not np.isfinite(arr).all():
        bad = int(np.nonzero(~np.isfinite(arr).all(axis=1))[0][0])
        raise InvalidBoxError(f"{name}[{bad}] = {arr[bad].tolist()} contains NaN or infinite values")
    return arr


def check_boxes_2d(boxes, height: int, width: int, name: str = "boxes") -> np.ndarray:
    """Validate XYXY boxes in original pixels against an image of ``height`` x ``width``.

    Rules: x_max > x_min and y_max > y_min (inverted and zero-area boxes are rejected); a box that does not overlap
    the image rectangle [0, W] x [0, H] is rejected; a box that overlaps it partly is clipped to it.

    Returns:
        (N, 4) float64 boxes after clipping.
    """
    arr = as_boxes(boxes, 4, name)
    for i, (x0, y0, x1, y1) in enumerate(arr):
        if x1 < x0 or y1 < y0:
            raise InvalidBoxError(
                f"{name}[{i}] = {[x0, y0, x1, y1]} is inverted; expected [x_min, y_min, x_max, y_max] with "
                "x_max > x_min and y_max > y_min"
            )
        if x1 == x0 or y1 == y0:
            raise InvalidBoxError(
                f"{name}[{i}] = {[x0, y0, x1, y1]} has zero width or height; expected x_max > x_min and y_max > y_min"
            )
        if x0 >= width or y0 >= height or x1 <= 0 or y1 <= 0:
            raise InvalidBoxError(
                f"{name}[{i}] = {[x0, y0, x1, y1]} lies outside the image of width {width} and height {height} "
                f"(x in [0, {width}], y in [0, {height}])"
            )
    clipped = arr.copy()
    np.clip(clipped[:, 0::2], 0, width, out=clipped[:, 0::2])
    np.clip(clipped[:, 1::2], 0, height, out=clipped[:, 1::2])
    return clipped


@dataclass(frozen=True)
class Frame:
    """The longest-side resize of one image of ``height`` x ``width`` to the model's 256 square."""

    height: int
    width: int

    @property
    def resized(self) -> tuple[int, int]:
        """(new_h, new_w) of the image inside the padded 256 x 256 model input."""
        return resized_shape(self.height, self.width)

    @property
    def ratio(self) -> float:
        return TARGET / max(self.height, self.width)

    def boxes_to_model(self, boxes: np.ndarray) -> np.ndarray:
        """(N, 4) XYXY original pixels -> (N, 4) float32 in 256 space, floored like the reference
        (``int(coord * (256 / max(H, W)))``)."""
        return np.floor(np.asarray(boxes, dtype=np.float64) * self.ratio).astype(np.float32)

    def boxes_from_model(self, boxes256: np.ndarray) -> np.ndarray:
        """(N, 4) boxes in 256 space -> (N, 4) float64 in original pixels (the inverse scale, no rounding)."""
        return np.asarray(boxes256, dtype=np.float64) / self.ratio
