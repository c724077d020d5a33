"""Pre/post-processing kernels: the native extension when present, else the NumPy/OpenCV twin.

Set ``MEDSAM_EDGE_PURE_PYTHON=1`` to force the twin. ``BACKEND`` says which one is in use ("native" or "numpy").
The semantics of every function are documented in :mod:`medsam_edge._kernels_py`.
"""

from __future__ import annotations

import os

from . import _kernels_py as _py

TARGET = _py.TARGET
resized_shape = _py.resized_shape
# paste_masks for masks already at full resolution (the ROI-zoom path): NumPy only, its box rule is the twin's
# box_from_mask (bit-exact with the native one, tests/test_kernels.py)
paste_bool_masks = _py.paste_bool_masks
# shape interpolation of the slice-skipping mode: NumPy + OpenCV's exact distance transform, no native twin
interpolate_masks = _py.interpolate_masks

_FORCE_PY = os.environ.get("MEDSAM_EDGE_PURE_PYTHON", "").strip().lower() not in ("", "0", "false", "no")

_native = None
if not _FORCE_PY:
    try:  # pragma: no cover - depends on the build
        from . import _native  # type: ignore[attr-defined]
    except ImportError:
        _native = None

if _native is not None and hasattr(_native, "preprocess"):
    BACKEND = "native"
    preprocess = _native.preprocess
    postprocess = _native.postprocess
    label_map = _native.label_map
    resize_area = _native.resize_area
    box_from_mask = _native.box_from_mask
    paste_masks = getattr(_native, "paste_masks", _py.paste_masks)  # an extension built before it existed: the twin
else:
    BACKEND = "numpy"
    preprocess = _py.preprocess
    postprocess = _py.postprocess
    label_map = _py.label_map
    resize_area = _py.resize_area
    box_from_mask = _py.box_from_mask
    paste_masks = _py.paste_masks

__all__ = [
    "BACKEND",
    "TARGET",
    "resized_shape",
    "preprocess",
    "postprocess",
    "label_map",
    "resize_area",
    "box_from_mask",
    "paste_masks",
    "paste_bool_masks",
    "interpolate_masks",
]
