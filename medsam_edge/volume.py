"""3D segmentation from 3D boxes: the slice loop, shared embeddings, propagation.

Axis order: volumes are (z, y, x) arrays (slice, row, column). 3D boxes are ``[x_min, y_min, z_min, x_max, y_max,
z_max]`` with inclusive z (the challenge order). Only axial (z) slices are segmented, in array order: a volume read
from a file is segmented in its stored orientation, whatever its direction cosines (see :mod:`medsam_edge.io`).

Strategies:

* ``"propagate"`` (the official LiteMedSAM loop, the reference): the middle slice ``z_mid = int((z_max - z_min) / 2 +
  z_min)`` uses the box's 2D part; going up (z_mid+1 .. z_max) and then down (z_mid-1 .. z_min), each slice's box is
  taken from the previous slice's mask of the same box (:func:`medsam_edge.kernels.box_from_mask`, 3 px margin in
  256 space), falling back to the 2D part when that mask is empty.
* ``"slicewise"``: every slice in [z_min, z_max] is prompted with the box's 2D part; slices are independent. The
  default of :class:`medsam_edge.Segmenter` (``Segmenter.reference()`` keeps ``"propagate"``): on the dev set it
  scored higher than the propagation (mean DSC 0.398 vs 0.338, NSD 0.455 vs 0.394, fp32, 6 MR volumes) and ran
  faster (no cache, no re-encoding); see benchmarks/results/volume.md.

Slice skipping (opt-in, either strategy): ``slice_step=k`` decodes each box only on its key slices (z % k == 0,
its first and last slice, and its middle slice for "propagate") and fills the slices between two key slices by
shape interpolation of their masks (:func:`medsam_edge.kernels.interpolate_masks`); ~1/k of the encodings
(dev set, int8: k = 2 0.56x the time, -0.3 DSC points; benchmarks/results/volume.md).

Work done once: all boxes are advanced together, so every slice is encoded once per sweep and every box active on a
slice is decoded against that slice's embedding in one decoder call. In ``"propagate"`` the upward sweep keeps the
embeddings the downward sweep will need in a bounded cache (``cache_slices`` x 4 MiB, default 16 = 64 MiB; only
slices some box's downward sweep will visit are kept, so a single box or ``"slicewise"`` keeps none); a slice that
does not fit is encoded again. At most ``cache_slices + 1`` embeddings exist at any time, whatever the depth.

Memory: besides the input and the uint16 label map (allocated zeroed without transparent huge pages, see
:func:`sparse_zeros`, so the 4 KiB pages no mask touches stay unallocated),
the loop holds one slice's logits and masks, each box's mask crops (for :meth:`VolumeResult.mask`) and 4 numbers of
propagation state per box. Non-uint8 volumes come in as a :class:`SliceSource` and are converted one slice at a time.
Per slice, :func:`medsam_edge.kernels.paste_masks` (native, GIL released) upsamples and thresholds the logits, raises
the label slice in place, crops each mask and computes the next slice's box by the reference rule in one call.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from . import kernels
from .errors import ConfigurationError, InvalidBoxError, InvalidImageError
from .prompts import MAX_SIDE, Frame, as_boxes

STRATEGIES = ("propagate", "slicewise")
#: most boxes per volume (labels are uint16)
MAX_BOXES = 65535


def check_slice_step(slice_step) -> int:
    """``slice_step`` as an int >= 1 (1 = every slice; k > 1 the slice-skipping mode), else ConfigurationError."""
    if isinstance(slice_step, bool) or not isinstance(slice_step, (int, np.integer)) or slice_step < 1:
        raise ConfigurationError(f"slice_step must be an integer >= 1 (1 = every slice), got {slice_step!r}")
    return int(slice_step)


def check_volume(volume, name: str = "volume") -> np.ndarray:
    """Validate a (z, y, x) volume: 3 dimensions, real dtype, finite, each side >= 1; returns an ndarray."""
    if not isinstance(volume, np.ndarray):
        try:
            volume = np.asarray(volume)
        except Exception as exc:  # noqa: BLE001
            raise InvalidImageError(f"{name} must be a (z, y, x) NumPy array, got {type(volume).__name__}") from exc
    if volume.dtype == np.bool_ or volume.dtype.kind not in "uif":
        raise InvalidImageError(f"{name} dtype must be an integer or float type, got {volume.dtype}")
    if volume.ndim != 3:
        hint = " (a 2D image: use Segmenter.predict / segmenter(image, boxes))" if volume.ndim == 2 else ""
        hint = hint or (" (4D input: pick one channel/time point first)" if volume.ndim == 4 else "")
        raise InvalidImageError(f"{name} must be a (z, y, x) volume with 3 dimensions, got shape {volume.shape}{hint}")
    if 0 in volume.shape:
        raise InvalidImageError(f"{name} is empty: shape {volume.shape}, expected at least 1 voxel on each axis")
    d, h, w = volume.shape
    if h > MAX_SIDE or w > MAX_SIDE:
        raise InvalidImageError(f"{name} slices are {h}x{w}; the largest supported side is {MAX_SIDE}")
    new_h, new_w = kernels.resized_shape(h, w)
    if new_h == 0 or new_w == 0:
        raise InvalidImageError(f"{name} slices of {h}x{w} are too elongated (aspect ratio must be below 512:1)")
    if volume.dtype.kind == "f" and not all(np.isfinite(volume[z]).all() for z in range(d)):  # slice by slice
        raise InvalidImageError(f"{name} contains NaN or infinite values; expected finite values only")
    return volume


class SliceSource:
    """A (z, y, x) volume seen as uint8 slices converted on demand (``source[z]``), so a 16-bit or float volume is
    never converted (or copied) as a whole; ``convert(z) -> (y, x) uint8``."""

    def __init__(self, array: np.ndarray, convert: Callable[[int], np.ndarray]) -> None:
        self.array = array
        self.convert = convert
        self.shape = tuple(array.shape)
        self.dtype = np.dtype(np.uint8)
        self.ndim = 3

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, z):
        if isinstance(z, (int, np.integer)):
            return self.convert(int(z))
        raise TypeError("SliceSource supports integer slice indices only")


def check_boxes_3d(boxes, shape: tuple[int, int, int], name: str = "boxes") -> np.ndarray:
    """Validate (N, 6) ``[x_min, y_min, z_min, x_max, y_max, z_max]`` boxes against a (z, y, x) ``shape``.

    z values are slice indices and must be integers; z_max >= z_min (a one-slice box is fine); x/y follow the 2D rules
    (x_max > x_min, y_max > y_min). Boxes partly outside the volume are clipped (x to [0, W], y to [0, H], z to
    [0, D-1]); boxes fully outside raise :class:`InvalidBoxError`.

    Returns:
        (N, 6) float64 clipped boxes (z entries integral).
    """
    d, h, w = shape
    arr = as_boxes(boxes, 6, name)
    for i, (x0, y0, z0, x1, y1, z1) in enumerate(arr):
        box = [x0, y0, z0, x1, y1, z1]
        if z0 != np.floor(z0) or z1 != np.floor(z1):
            raise InvalidBoxError(f"{name}[{i}] = {box}: z_min and z_max are slice indices and must be integers")
        if x1 < x0 or y1 < y0 or z1 < z0:
            raise InvalidBoxError(
                f"{name}[{i}] = {box} is inverted; expected [x_min, y_min, z_min, x_max, y_max, z_max] with "
                "x_max > x_min, y_max > y_min, z_max >= z_min"
            )
        if x1 == x0 or y1 == y0:
            raise InvalidBoxError(f"{name}[{i}] = {box} has zero width or height; expected x_max > x_min, y_max > y_min")
        if x0 >= w or y0 >= h or x1 <= 0 or y1 <= 0 or z0 > d - 1 or z1 < 0:
            raise InvalidBoxError(
                f"{name}[{i}] = {box} lies outside the volume (x in [0, {w}], y in [0, {h}], z in [0, {d - 1}])"
            )
    out = arr.copy()
    out[:, 0] = np.clip(out[:, 0], 0, w)
    out[:, 3] = np.clip(out[:, 3], 0, w)
    out[:, 1] = np.clip(out[:, 1], 0, h)
    out[:, 4] = np.clip(out[:, 4], 0, h)
    out[:, 2] = np.clip(out[:, 2], 0, d - 1)
    out[:, 5] = np.clip(out[:, 5], 0, d - 1)
    return out


@dataclass(frozen=True)
class _Piece:
    y0: int
    x0: int
    mask: np.ndarray  # bool crop


#: arrays at least this large are allocated by :func:`sparse_zeros` through their own mapping
SPARSE_ZEROS_MIN_BYTES = 4 << 20


def sparse_zeros(shape: tuple[int, ...], dtype) -> np.ndarray:
    """``np.zeros(shape, dtype)`` whose memory becomes resident 4 KiB page by 4 KiB page, only where written.

    NumPy asks the kernel for transparent huge pages on every allocation of 4 MiB or more
    (``madvise(MADV_HUGEPAGE)``), so the first write into a zeroed label map makes a whole 2 MiB of it resident: a
    512 x 512 uint16 label map with masks on 141 of 200 slices held 72 MB where 18 MB of pages carry labels. Large
    arrays get a private anonymous mapping marked ``MADV_NOHUGEPAGE`` instead (Linux; elsewhere, or when the kernel
    refuses, plain ``np.zeros``). The array owns its mapping (released with the last view); it is writeable.
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    advice = getattr(mmap, "MADV_NOHUGEPAGE", None)
    if nbytes < SPARSE_ZEROS_MIN_BYTES or advice is None or not hasattr(mmap, "MAP_ANONYMOUS"):
        return np.zeros(shape, dtype)
    try:
        buffer = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        buffer.madvise(advice)
    except (OSError, ValueError):
        return np.zeros(shape, dtype)
    return np.frombuffer(buffer, dtype=dtype).reshape(shape)


@dataclass(frozen=True)
class VolumeResult:
    """Labels for the boxes of one volume (arrays read-only).

    Attributes:
        label_map: (z, y, x) uint16; box i's voxels hold i + 1, a later box overwrites an earlier one.
        boxes: (N, 6) float64 boxes used, ``[x_min, y_min, z_min, x_max, y_max, z_max]`` after clipping.
        scores: (N, z) float32 predicted IoU of each box on each slice it was decoded on, NaN elsewhere.
        geometry: the volume's geometry (:class:`medsam_edge.io.Geometry`) when known, else None.
        strategy: "propagate" or "slicewise".
        encoded_slices: how many slice encodings ran (a slice encoded twice counts twice).
        slice_step: 1, or k of the slice-skipping mode (masks between a box's key slices interpolated).
    """

    label_map: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    geometry: object | None
    strategy: str
    encoded_slices: int
    slice_step: int = 1
    _pieces: tuple = field(repr=False, default=())

    def mask(self, i: int) -> np.ndarray:
        """(z, y, x) bool mask of box ``i`` alone (before later boxes overwrote it in the label map)."""
        if not 0 <= i < len(self._pieces):
            raise IndexError(f"box index {i} out of range for {len(self._pieces)} boxes")
        out = sparse_zeros(self.label_map.shape, bool)
        for z, piece in self._pieces[i].items():
            h, w = piece.mask.shape
            out[z, piece.y0:piece.y0 + h, piece.x0:piece.x0 + w] = piece.mask
        return out


def _paste_bool_masks(masks: np.ndarray, labels: np.ndarray, values: np.ndarray, marks: np.ndarray):
    """:func:`medsam_edge.kernels.paste_masks` for masks that are already full-resolution bool (the refine path)."""
    return kernels.paste_bool_masks(masks, labels, values, marks, 3)


class _Embeddings:
    """Encodes slices on demand; keeps at most ``capacity`` embeddings that are marked as needed later."""

    def __init__(self, volume: np.ndarray, encode: Callable[[np.ndarray], np.ndarray], capacity: int) -> None:
        self.volume = volume
        self.encode = encode
        self.capacity = max(0, capacity)
        self.kept: dict[int, np.ndarray] = {}
        self.count = 0

    def get(self, z: int, keep: bool = False) -> np.ndarray:
        emb = self.kept.pop(z, None)
        if emb is None:
            emb = self.encode(self.volume[z])
            self.count += 1
        if keep and self.capacity:
            if len(self.kept) >= self.capacity:
                lowest = min(self.kept)
                if lowest < z:
                    del self.kept[lowest]
                else:
                    return emb
            self.kept[z] = emb
        return emb


def segment_volume(
    volume: np.ndarray,
    boxes: np.ndarray,
    encode: Callable[[np.ndarray], np.ndarray],
    decode: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
    strategy: str = "propagate",
    cache_slices: int = 16,
    progress: Callable[[int, int], None] | None = None,
    geometry=None,
    refine=None,
    slice_step: int = 1,
) -> VolumeResult:
    """Run the slice loop. ``volume`` (z, y, x) and ``boxes`` (N, 6) must already be validated/clipped.

    ``encode(slice2d) -> (1, 256, 64, 64)`` embedding (any slice, constant slices included) and
    ``decode(embedding, boxes256 (B, 4)) -> (logits (B, 256, 256), iou (B,))``.
    ``refine``: optional :class:`medsam_edge.refine.Zoom` run on every slice after the full-slice decode, with each
    box's prompt in original pixels (the 2D part on its first slice, else the box from the previous slice's mask);
    its masks are the ones propagated.
    ``slice_step`` k > 1 (the opt-in slice-skipping mode): box b is decoded only on its key slices, those z in
    [z_min, z_max] with z % k == 0 plus z_min, z_max (and z_mid for "propagate"), so a slice is encoded only when it is
    some box's key slice; each run of slices between two consecutive key slices of a box is filled by
    :func:`medsam_edge.kernels.interpolate_masks` of the two masks (scores stay NaN there). Propagation carries the
    box from key slice to key slice. k = 1 is the plain loop.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    slice_step = check_slice_step(slice_step)
    d, h, w = volume.shape
    frame = Frame(h, w)
    n = len(boxes)
    if n > MAX_BOXES:
        raise InvalidBoxError(f"at most {MAX_BOXES} boxes fit a uint16 label map, got {n}")
    labels = sparse_zeros((d, h, w), np.uint16)
    scores = np.full((n, d), np.nan, dtype=np.float32)
    pieces: list[dict[int, _Piece]] = [dict() for _ in range(n)]
    if n == 0:
        return VolumeResult(labels, boxes, scores, geometry, strategy, 0, slice_step, tuple(pieces))

    zmin = boxes[:, 2].astype(np.int64)
    zmax = boxes[:, 5].astype(np.int64)
    zmid = np.array([int((int(b) - int(a)) / 2 + int(a)) for a, b in zip(zmin, zmax)], dtype=np.int64)
    box2d = frame.boxes_to_model(boxes[:, [0, 1, 3, 4]])  # (N, 4) float32 in 256 space
    label_values = np.minimum(np.arange(1, n + 1), 255).astype(np.uint8)  # the reference's uint8 label image

    if strategy == "propagate":
        up_start, up_end = zmid, zmax
        down_start, down_end = zmid - 1, zmin
    else:  # slicewise: one sweep over every box's whole range
        up_start, up_end = zmin, zmax
        down_start, down_end = zmin - 1, zmin  # empty

    def is_key(z: int) -> np.ndarray:
        """(N,) bool: is slice z one of each box's key slices (every slice when slice_step is 1)."""
        if slice_step == 1:
            return np.ones(n, dtype=bool)
        key = (z == zmin) | (z == zmax) | (z % slice_step == 0)
        return key | (z == zmid) if strategy == "propagate" else key

    if slice_step == 1:
        total = int((up_end - up_start + 1).clip(0).sum() + (down_start - down_end + 1).clip(0).sum())
    else:
        total = sum(int(is_key(z)[b]) for b in range(n) for z in range(int(zmin[b]), int(zmax[b]) + 1))
    done = 0
    emb_cache = _Embeddings(volume, encode, cache_slices if strategy == "propagate" else 0)
    # propagation state: each box's prompt for its next slice (256 space), None = its 2D part (first slice, or the
    # previous slice's mask was empty); only 4 numbers per box are carried from slice to slice, never masks
    last_box: list[np.ndarray | None] = [None] * n
    mid_box: list[np.ndarray | None] = [None] * n
    needed_down_lo = int(down_end.min())
    needed_down_hi = int(down_start.max())

    def run_slice(z: int, active: np.ndarray, prev: list[np.ndarray | None], keep: bool) -> list[np.ndarray | None]:
        nonlocal done
        prompts = np.empty((len(active), 4), dtype=np.float32)
        prompts_px = np.empty((len(active), 4), dtype=np.float64)  # the same boxes in original pixels (refine)
        for k, b in enumerate(active):
            box = prev[k]
            prompts[k] = box2d[b] if box is None else box
            prompts_px[k] = np.nan if box is None else frame.boxes_from_model(box)
        emb = emb_cache.get(z, keep=keep)
        logits, iou = decode(emb, prompts)
        lab = labels[z]
        if refine is None:
            # native: upsample + threshold, raise the label slice in place, crops and next boxes in one call
            next_boxes, crops = kernels.paste_masks(logits, frame.resized, lab, active + 1, label_values[active], 3)
        else:
            masks = kernels.postprocess(logits, frame.resized, (h, w))
            px = np.where(np.isnan(prompts_px), boxes[active][:, [0, 1, 3, 4]], prompts_px)
            masks, iou, _ = refine(volume[z], np.clip(px, 0, [w, h, w, h]), masks, iou, logits, frame)
            next_boxes, crops = _paste_bool_masks(masks, lab, active + 1, label_values[active])
        for k, b in enumerate(active):
            scores[b, z] = iou[k]
            if crops[k] is not None:
                pieces[b][z] = _Piece(int(crops[k][0]), int(crops[k][1]), crops[k][2])
        done += len(active)
        if progress is not None:
            progress(done, total)
        return [None if row[0] < 0 else row for row in next_boxes]

    # upward sweep (ascending z)
    for z in range(int(up_start.min()), int(up_end.max()) + 1):
        key = is_key(z)
        active = np.flatnonzero((up_start <= z) & (z <= up_end) & key)
        if active.size == 0:
            continue
        prev = [None if (strategy == "slicewise" or z == zmid[b]) else last_box[b] for b in active]
        keep = strategy == "propagate" and needed_down_lo <= z <= needed_down_hi and bool(
            ((down_end <= z) & (z <= down_start) & key).any()
        )
        found = run_slice(z, active, prev, keep)
        for k, b in enumerate(active):
            last_box[b] = found[k]
            if z == zmid[b]:
                mid_box[b] = found[k]

    # downward sweep (descending z), propagate only
    if strategy == "propagate" and needed_down_hi >= needed_down_lo:
        last_box = list(mid_box)
        for z in range(needed_down_hi, needed_down_lo - 1, -1):
            active = np.flatnonzero((down_end <= z) & (z <= down_start) & is_key(z))
            if active.size == 0:
                continue
            found = run_slice(z, active, [last_box[b] for b in active], keep=False)
            for k, b in enumerate(active):
                last_box[b] = found[k]

    if slice_step > 1:  # fill each box's slices between consecutive key slices by shape interpolation
        for b in range(n):
            keys = [z for z in range(int(zmin[b]), int(zmax[b]) + 1) if is_key(z)[b]]
            for za, zb in zip(keys[:-1], keys[1:]):
                if zb - za < 2:
                    continue
                ends = [pieces[b].get(za), pieces[b].get(zb)]
                ends = [None if p is None else (p.y0, p.x0, p.mask) for p in ends]
                between = range(za + 1, zb)
                filled = kernels.interpolate_masks(ends[0], ends[1], [(z - za) / (zb - za) for z in between], (h, w))
                for z, crop in zip(between, filled):
                    if crop is None:
                        continue
                    y0, x0, m = int(crop[0]), int(crop[1]), crop[2]
                    region = labels[z, y0:y0 + m.shape[0], x0:x0 + m.shape[1]]
                    region[m] = np.maximum(region[m], np.uint16(b + 1))
                    pieces[b][z] = _Piece(y0, x0, m)

    for arr in (labels, scores):
        arr.setflags(write=False)
    return VolumeResult(labels, boxes, scores, geometry, strategy, emb_cache.count, slice_step, tuple(pieces))
