"""Type stub of the private native extension (csrc/, pybind11).

Semantics are defined by :mod:`medsam_edge._kernels_py`; every function here returns the same values (bit for bit on
uint8 data; see tests/test_kernels.py for the exact guarantees). All functions validate their arguments and raise
``TypeError`` (wrong kind of data) or ``ValueError`` (wrong shape or size); they release the GIL while computing.
``MEDSAM_EDGE_NUM_THREADS`` (default: the CPU count, at most 8) bounds the threads used for large images.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

TARGET: int

def preprocess(
    image: npt.ArrayLike, out: npt.NDArray[np.float32] | None = None
) -> tuple[npt.NDArray[np.float32], tuple[int, int]]:
    """(H, W), (H, W, 1) or (H, W, 3) image of any real dtype -> ((1, 3, 256, 256) float32 input, (new_h, new_w)).

    uint8 images are resized as uint8 (OpenCV INTER_AREA, same rounding); any other dtype is converted to float32
    first. ``out``, when given, must be a writeable C-contiguous (1, 3, 256, 256) float32 array; it is overwritten and
    returned.
    """

def postprocess(
    logits: npt.ArrayLike, new_hw: tuple[int, int], orig_hw: tuple[int, int]
) -> npt.NDArray[np.bool_]:
    """(B, h, w) or (B, 1, h, w) logits -> (B, H, W) bool masks.

    Crop to ``new_hw``, bilinear upsampling with half-pixel centres to ``orig_hw`` (OpenCV INTER_LINEAR as computed by
    OpenCV's own code, = torch ``align_corners=False``), then ``logit > 0``. ``new_hw`` must fit inside (h, w).
    """

def label_map(masks: npt.NDArray[np.bool_]) -> npt.NDArray[np.uint16]:
    """(N, H, W) bool -> (H, W) uint16: mask i gets label i + 1, later masks win; N <= 65535."""

def resize_area(image: npt.ArrayLike, new_h: int, new_w: int) -> npt.NDArray[np.uint8] | npt.NDArray[np.float32]:
    """OpenCV INTER_AREA resize of a uint8 or float32 (H, W) or (H, W, C) image, C <= 4; the dtype is kept."""

def box_from_mask(mask: npt.ArrayLike, margin: int = 3) -> npt.NDArray[np.int64] | None:
    """Next-slice box int64 [x_min, y_min, x_max, y_max] in 256 space from an (H, W) uint8 (or bool / integer) mask.

    Returns None when the resized mask is empty.
    """

def paste_masks(
    logits: npt.ArrayLike,
    new_hw: tuple[int, int],
    labels: npt.NDArray[np.uint16],
    values: npt.ArrayLike,
    marks: npt.ArrayLike,
    margin: int = 3,
) -> tuple[npt.NDArray[np.int64], list[tuple[int, int, npt.NDArray[np.bool_]] | None]]:
    """One slice of the 3D loop: each box's upsampled, thresholded mask raises ``labels`` (H, W) uint16 in place to
    ``values[k]``; returns the next slice's boxes in 256 space ((B, 4) int64, -1 rows where the mask resized with the
    reference rule is empty; mask value ``marks[k]``) and a ``(y0, x0, bool crop)`` per box (None when empty).
    Values must be in [1, 65535], marks in [1, 255] (0 is refused: it would be background). Releases the GIL.
    """
