"""One case, start to finish: read a file, segment it with its boxes, write the label map atomically.

:func:`segment_case` is the single per-case function behind ``medsam-edge segment`` (one file or a folder of challenge
``.npz`` files) and ``medsam-edge cohort`` (:mod:`medsam_edge.cohort`), so the two write the same files by
construction: the same name (:func:`output_path`), format, geometry and intensity rule.

Boxes come, in this order, from the caller (an array, or a function of the expected box width 4 / 6 so that a caller
can check its own options once the file's kind is known), from the file itself (challenge ``.npz``), or from a boxes
JSON file (:func:`read_boxes_json`: a list of boxes or ``{"boxes": [...]}``).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Union

import numpy as np

from .errors import InvalidBoxError, UnreadableFileError

if TYPE_CHECKING:  # pragma: no cover
    from .segmenter import Segmenter

#: Boxes given by the caller: an (N, 4) / (N, 6) array, a function ``ncols -> array | None`` or None.
BoxesArg = Union[np.ndarray, Callable[[int], Union[np.ndarray, None]], None]
#: A Segmenter, or a zero-argument function returning one (built on first use, after the input was read and checked).
SegmenterArg = Union["Segmenter", Callable[[], "Segmenter"]]
#: Progress of a 3D case: ``(slices done, slices total)``.
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class CaseResult:
    """What :func:`segment_case` did.

    Attributes:
        case: the input's file name.
        output: the label map written (None when no output was asked for).
        seconds: time spent in segmentation (reading and writing excluded), as ``efficiency.csv`` reports it.
        kind: ``"2d"`` or ``"3d"``.
        boxes: number of boxes segmented.
    """

    case: str
    output: Path | None
    seconds: float
    kind: str
    boxes: int


def output_path(input_path: os.PathLike | str, out_dir: os.PathLike | str) -> Path:
    """Where a folder run writes the label map of ``input_path``: ``out_dir`` / the input's file name.

    The suffix is kept, so the output has the input's format (``.npz`` -> ``segs`` key, NIfTI / NRRD / MHA with the
    input's geometry).
    """
    return Path(out_dir) / Path(input_path).name


def read_boxes_json(path: os.PathLike | str, ncols: int | None = None) -> np.ndarray:
    """Boxes from a JSON file: a list of boxes (4 or 6 numbers each) or ``{"boxes": [...]}``.

    Raises:
        UnreadableFileError: the file is missing or not JSON.
        InvalidBoxError: the boxes are not rows of ``ncols`` (or of 4 / 6) numbers.
    """
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise UnreadableFileError(f"cannot read boxes from {path}: {exc}; expected a JSON list") from exc
    boxes = data.get("boxes") if isinstance(data, dict) else data
    if not isinstance(boxes, list):
        raise InvalidBoxError(f"{path}: expected a JSON list of boxes or {{'boxes': [...]}}, got {type(boxes).__name__}")
    return as_boxes(boxes, ncols, what=str(path))


def as_boxes(boxes: object, ncols: int | None, what: str = "boxes") -> np.ndarray:
    """``boxes`` as a float64 (N, ncols) array (``ncols`` None: 4 or 6); InvalidBoxError names ``what``."""
    try:
        arr = np.asarray(boxes, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidBoxError(f"{what}: boxes must be lists of {ncols or '4 or 6'} numbers: {exc}") from exc
    widths = (ncols,) if ncols else (4, 6)
    if arr.ndim != 2 or arr.shape[1] not in widths:
        raise InvalidBoxError(
            f"{what}: expected boxes of {ncols or '4 or 6'} numbers each for this input, got shape {arr.shape}"
        )
    return arr


def _resolve_boxes(boxes: BoxesArg, loaded, ncols: int, path: Path) -> np.ndarray:
    given = boxes(ncols) if callable(boxes) else boxes
    if given is not None:
        return as_boxes(given, ncols, what=str(path))
    if loaded.boxes is not None:
        return np.asarray(loaded.boxes, dtype=np.float64)
    hint = "--box X0 Y0 X1 Y1" if ncols == 4 else "--box3d X0 Y0 Z0 X1 Y1 Z1"
    raise InvalidBoxError(f"{path}: no boxes; give {hint} (repeatable) or --boxes FILE.json")


def _get(segmenter: SegmenterArg) -> "Segmenter":
    from .segmenter import Segmenter

    return segmenter if isinstance(segmenter, Segmenter) else segmenter()


def segment_case(
    segmenter: SegmenterArg,
    input_path: os.PathLike | str,
    output: os.PathLike | str | None,
    *,
    boxes: BoxesArg = None,
    window: str | tuple[float, float] | None = None,
    strategy: str | None = None,
    overlay: os.PathLike | str | None = None,
    slice_step: int = 1,
    progress: Progress | None = None,
) -> CaseResult:
    """Segment one file and write its label map.

    Args:
        segmenter: the Segmenter to use, or a function building it (called only once the input was read).
        input_path: any file :func:`medsam_edge.io.read_image` reads (challenge ``.npz``, NIfTI, NRRD, MHA, DICOM,
            PNG, ...).
        output: label-map file; ``.npz`` is written as a challenge file (``segs``), other suffixes by
            :func:`medsam_edge.io.write_labels` with the input's geometry. None: write nothing.
        boxes: see :data:`BoxesArg`; None uses the file's own boxes (``.npz``).
        window: CT window for non-uint8 data (preset name or ``(width, level)``), as ``--window``.
        strategy: 3D strategy (None: the segmenter's default).
        overlay: also write a PNG picture of the result (3D: a mosaic of slices).
        slice_step: 3D only: k > 1 decodes every k-th slice and interpolates the rest (see
            :meth:`medsam_edge.Segmenter.segment_volume`).
        progress: called with ``(done, total)`` slices during a 3D case.

    Every file is written atomically (a temporary file renamed into place), so an existing output is complete.

    Raises:
        MedsamEdgeError: a subclass naming what was wrong (unreadable file, bad boxes, bad image, unwritable output).
    """
    from .intensity import image_2d, to_uint8
    from .io import read_image, write_labels, write_npz_segs
    from .overlay import mosaic_3d, overlay_2d

    path = Path(input_path)
    loaded = read_image(path)
    if loaded.kind == "2d":
        box_array = _resolve_boxes(boxes, loaded, 4, path)
        image = image_2d(loaded.array, loaded.modality, window)
        seg = _get(segmenter)
        t0 = time.perf_counter()
        result = seg(image, box_array)
        seconds = time.perf_counter() - t0
        labels = result.label_map
        picture = overlay_2d(image, labels, result.boxes) if overlay else None
    else:
        box_array = _resolve_boxes(boxes, loaded, 6, path)
        seg = _get(segmenter)
        t0 = time.perf_counter()
        # the library converts non-uint8 data slice by slice with the same rule (no uint8 copy of the volume)
        vres = seg.segment_volume(loaded, box_array, strategy=strategy, window=window, progress=progress,
                                  slice_step=slice_step)
        seconds = time.perf_counter() - t0
        labels = vres.label_map
        picture = mosaic_3d(to_uint8(loaded.array, loaded.modality, window), labels, vres.boxes) if overlay else None
    kind = loaded.kind
    # the writer below copies the label map into a SimpleITK image; a volume's input voxels (as large as the label
    # map for 16-bit data) are not needed any more, so they are released first (the CLI's peak RSS was the write)
    reference = (loaded.geometry if kind == "3d" else loaded) if loaded.geometry is not None else None
    del loaded
    out = Path(output) if output is not None else None
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.name.lower().endswith(".npz"):
            write_npz_segs(out, labels)
        else:
            write_labels(out, labels, reference=reference)
    if picture is not None:
        write_png_atomic(Path(overlay), picture)
    return CaseResult(case=path.name, output=out, seconds=seconds, kind=kind, boxes=len(box_array))


def write_png_atomic(path: Path, rgb: np.ndarray) -> None:
    """An RGB picture as PNG, written atomically (parent folders created)."""
    import cv2

    from .errors import MedsamEdgeError
    from .io import _atomic_write, _write_bytes

    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise MedsamEdgeError(f"could not encode the overlay PNG for {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, ".png", _write_bytes(buf.tobytes()))
