"""medsam_edge: LiteMedSAM promptable medical image segmentation on CPUs with OpenVINO.

Public API::

    from medsam_edge import Segmenter
    seg = Segmenter()                      # fp32 on CPU (the reference); precision="bf16"/"int8" are faster
    result = seg(image, boxes)             # image (H, W[, 3]); boxes (N, 4) XYXY pixels
    result.masks, result.scores, result.label_map

Importing medsam_edge never imports torch.
"""

from __future__ import annotations

from .errors import (
    ConfigurationError,
    ExportError,
    InvalidBoxError,
    InvalidImageError,
    MedsamEdgeError,
    ModelCheckError,
    ModelFileError,
    NotReadyError,
    UnreadableFileError,
    UnwritableFileError,
)
from .segmenter import ImageState, SegmentationResult, Segmenter
from .volume import VolumeResult

__version__ = "0.1.0"

__all__ = [
    "Segmenter",
    "SegmentationResult",
    "ImageState",
    "VolumeResult",
    "MedsamEdgeError",
    "InvalidImageError",
    "InvalidBoxError",
    "NotReadyError",
    "ModelCheckError",
    "ModelFileError",
    "UnreadableFileError",
    "UnwritableFileError",
    "ConfigurationError",
    "ExportError",
    "__version__",
]
