"""The plugin's logic without Qt or napari: rectangles -> boxes, the embedding cache, label composition, undo.

Coordinates: napari keeps a pixel's centre at an integer data coordinate, the same convention as the library's boxes
(XYXY, x along columns, challenge boxes are inclusive pixel indices), so a rectangle with corner vertices
``(row0, col0)`` and ``(row1, col1)`` is the box ``[col0, row0, col1, row1]`` with no half-pixel shift. Shapes data
is converted to the image layer's data coordinates through both layers' ``scale`` and ``translate`` first.

Objects: every segmented box (2D) or box group (3D) is one object with its own label id. Objects live on a stack:
the newest ones are *pending* (shown, re-done when their rectangle moves or is deleted), :meth:`ObjectStack.accept`
commits them, :meth:`ObjectStack.undo` removes the newest object whatever its state. Each object keeps only the
bounding region it painted, its mask there and the label values it replaced, so undo is exact and costs memory in
proportion to the object, not to the volume.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Sequence

import numpy as np

from ..errors import InvalidBoxError
from ..runtime import DEFAULT_PRECISION
from ..segmenter import ImageState, SegmentationResult, Segmenter

PRECISIONS = ("int8", "fp32", "bf16")  # the first is the widget's default (the library default)
#: embeddings kept per widget by default (4 MiB each)
DEFAULT_CACHE_SLICES = 16
#: how far a single 3D rectangle reaches up and down when no z-range is given
DEFAULT_HALF_DEPTH = 5


# ------------------------------------------------------------------------------------------------- rectangles
@dataclass(frozen=True)
class Rectangle:
    """One rectangle of a Shapes layer in the image's pixel coordinates.

    Attributes:
        key: identity of the rectangle (its vertices as drawn); a moved rectangle gets a new key.
        box: (4,) float64 ``[x_min, y_min, x_max, y_max]`` in image pixels.
        z: the slice it was drawn on (volumes), None for 2D images.
        z_range: ``(z_min, z_max)`` stored with the rectangle (a challenge ``.npz`` 3D box), or None.
    """

    key: bytes
    box: np.ndarray
    z: int | None = None
    z_range: tuple[int, int] | None = None


def to_image_coords(vertices: np.ndarray, shapes_scale: Sequence[float], shapes_translate: Sequence[float],
                    image_scale: Sequence[float], image_translate: Sequence[float]) -> np.ndarray:
    """Vertices in the Shapes layer's data coordinates -> the image layer's data coordinates (last axes aligned)."""
    v = np.asarray(vertices, dtype=np.float64)
    n = v.shape[1]
    s_scale, s_shift = np.asarray(shapes_scale, float)[-n:], np.asarray(shapes_translate, float)[-n:]
    i_scale, i_shift = np.asarray(image_scale, float)[-n:], np.asarray(image_translate, float)[-n:]
    return (v * s_scale + s_shift - i_shift) / i_scale


def _z_range(features: dict[str, Sequence] | None, index: int) -> tuple[int, int] | None:
    if not features or "z_min" not in features or "z_max" not in features:
        return None
    lo, hi = features["z_min"][index], features["z_max"][index]
    try:
        lo, hi = float(lo), float(hi)
    except (TypeError, ValueError):
        return None
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0 or hi < lo:
        return None
    return int(lo), int(hi)


def rectangle_key(vertices: np.ndarray) -> bytes:
    """A rectangle's identity: its vertices rounded to 1/1000 pixel."""
    return np.round(np.asarray(vertices, dtype=np.float64), 3).tobytes()


def rectangles(data: Sequence[np.ndarray], shape_types: Sequence[str], image_ndim: int,
               features: dict[str, Sequence] | None = None) -> list[Rectangle]:
    """The rectangles of a Shapes layer's ``data`` (already in image data coordinates) as boxes.

    ``image_ndim`` is the image's spatial dimension (2 or 3). Other shape types are ignored, and so are 3D
    rectangles that are not drawn on one slice. A rotated rectangle gives its axis-aligned bounding box.
    ``features`` (column name -> values) may hold ``z_min`` / ``z_max`` per shape (negative or NaN: not set).
    """
    out: list[Rectangle] = []
    for index, (vertices, kind) in enumerate(zip(data, shape_types)):
        if kind != "rectangle":
            continue
        v = np.asarray(vertices, dtype=np.float64)[:, -image_ndim:]
        rows, cols = v[:, -2], v[:, -1]
        box = np.array([cols.min(), rows.min(), cols.max(), rows.max()], dtype=np.float64)
        if box[2] <= box[0] or box[3] <= box[1]:
            continue
        z = None
        if image_ndim == 3:
            zs = np.round(v[:, 0])
            if zs.min() != zs.max():
                continue
            z = int(zs[0])
        out.append(Rectangle(rectangle_key(vertices), box, z, _z_range(features, index)))
    return out


def rectangle_vertices(box: Sequence[float], z: float | None = None) -> np.ndarray:
    """Vertices of the napari rectangle for an XYXY ``box`` (``(4, 2)`` rows/cols, or ``(4, 3)`` on slice ``z``)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    corners = np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], dtype=np.float64)
    if z is None:
        return corners
    return np.column_stack([np.full(4, float(z)), corners])


def group_3d(new: Sequence[Rectangle]) -> list[list[Rectangle]]:
    """Objects of newly drawn volume rectangles: exactly two on different slices make one object (the z-range
    between them); otherwise every rectangle is an object of its own."""
    if len(new) == 2 and new[0].z != new[1].z and new[0].z_range is None and new[1].z_range is None:
        return [sorted(new, key=lambda r: r.z)]
    return [[r] for r in new]


def box3d(group: Sequence[Rectangle], depth: int, z_range: tuple[int, int] | None = None) -> np.ndarray:
    """(1, 6) ``[x_min, y_min, z_min, x_max, y_max, z_max]`` for one object of volume rectangles.

    Two rectangles: the union of their 2D boxes, from the lower slice to the upper one. One rectangle: its own
    ``z_range`` if it carries one, else ``z_range`` (widened to include the rectangle's slice), else
    ``DEFAULT_HALF_DEPTH`` slices either side. z is clipped to the volume.
    """
    if not group:
        raise InvalidBoxError("a 3D object needs at least one rectangle")
    boxes = np.array([r.box for r in group])
    zs = [r.z for r in group]
    if len(group) >= 2:
        lo, hi = min(zs), max(zs)
    elif group[0].z_range is not None:
        lo, hi = group[0].z_range
    elif z_range is not None:
        lo, hi = min(z_range[0], zs[0]), max(z_range[1], zs[0])
    else:
        lo, hi = zs[0] - DEFAULT_HALF_DEPTH, zs[0] + DEFAULT_HALF_DEPTH
    lo, hi = max(0, int(lo)), min(depth - 1, int(hi))
    return np.array([[boxes[:, 0].min(), boxes[:, 1].min(), lo, boxes[:, 2].max(), boxes[:, 3].max(), hi]],
                    dtype=np.float64)


# ------------------------------------------------------------------------------------------------ image source
class ImageSource:
    """An image layer's data seen the way the library's CLI sees a file.

    2D images: uint8 as it is; other dtypes with a CT window (``window`` given or modality CT) windowed to uint8, else
    passed on (the segmenter min-max normalises). Volumes: uint8 as they are, else the volume rule of
    :func:`medsam_edge.intensity.slice_converter` (CT window or the volume's 0.5-99.5 percentiles, computed once),
    slice by slice.

    Args:
        key: identity of the layer (the cache key's first part).
        data: (y, x), (y, x, 3) or (z, y, x) array-like (a napari layer's ``data``).
        rgb: the last axis is colour (2D only).
        modality: e.g. "CT" (from the reader's metadata), or None.
        window: CT preset name or (width, level), or None.
    """

    def __init__(self, key: Hashable, data: Any, rgb: bool = False, modality: str | None = None,
                 window: Any = None) -> None:
        self.key = key
        self.data = data
        self.rgb = rgb
        self.modality = modality
        self.window = window
        self._convert: Callable[[int], np.ndarray] | None = None
        self._lock = threading.Lock()

    @property
    def ndim(self) -> int:
        """Spatial dimension: 2 or 3."""
        return len(self.data.shape) - (1 if self.rgb else 0)

    @property
    def shape(self) -> tuple[int, ...]:
        """Spatial shape: (y, x) or (z, y, x)."""
        return tuple(self.data.shape[: self.ndim])

    def _converter(self) -> Callable[[int], np.ndarray]:
        with self._lock:
            if self._convert is None:
                from ..intensity import slice_converter

                self._convert = slice_converter(np.asarray(self.data), self.window, self.modality)
            return self._convert

    def image(self, z: int | None = None) -> np.ndarray:
        """The 2D image the segmenter gets: the image itself, or slice ``z`` of a volume."""
        if self.ndim == 2:
            from ..intensity import image_2d

            return image_2d(self.data, self.modality, self.window)
        if z is None:
            raise InvalidBoxError("a box on a volume needs its slice index")
        if self.data.dtype == np.uint8:
            return np.asarray(self.data[z])
        return self._converter()(int(z))

    def volume(self, z0: int, z1: int) -> np.ndarray:
        """Slices ``z0..z1`` (inclusive) as a uint8 (z, y, x) array: the same bytes the library's volume rule gives."""
        if self.data.dtype == np.uint8:
            return np.asarray(self.data[z0:z1 + 1])
        convert = self._converter()
        return np.stack([convert(z) for z in range(z0, z1 + 1)])


# ------------------------------------------------------------------------------------------------------- cache
class EmbeddingCache:
    """Bounded least-recently-used store of :class:`~medsam_edge.ImageState` per (layer, slice, precision)."""

    def __init__(self, capacity: int = DEFAULT_CACHE_SLICES) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._items: OrderedDict[Hashable, ImageState] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> ImageState | None:
        with self._lock:
            state = self._items.get(key)
            if state is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return state

    def put(self, key: Hashable, state: ImageState) -> None:
        with self._lock:
            self._items[key] = state
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def drop_layer(self, layer_key: Hashable) -> None:
        """Forget every embedding of one layer (its data changed or it was removed)."""
        with self._lock:
            for key in [k for k in self._items if k[0] == layer_key]:
                del self._items[key]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def keys(self) -> list[Hashable]:
        with self._lock:
            return list(self._items)

    def __len__(self) -> int:
        return len(self._items)


# ------------------------------------------------------------------------------------------------------ models
@dataclass
class Timing:
    """Seconds spent in the last request: 2D encoding (0 on a cache hit) and decoding, or the whole 3D run."""

    encode_s: float = 0.0
    decode_s: float = 0.0
    volume_s: float = 0.0
    encoded: int = 0

    def text(self) -> str:
        if self.volume_s:
            return f"3D run {self.volume_s * 1e3:.0f} ms ({self.encoded} slices encoded)"
        return f"encode {self.encode_s * 1e3:.0f} ms ({self.encoded} slice(s)), decode {self.decode_s * 1e3:.0f} ms"


class Session:
    """Segmenters per precision (built on first use), the embedding cache and the two request kinds.

    Thread use: requests run in a worker thread; the segmenter serialises its own calls.
    """

    def __init__(self, make_segmenter: Callable[..., Segmenter] = Segmenter,
                 cache_slices: int = DEFAULT_CACHE_SLICES) -> None:
        self._make = make_segmenter
        self._segmenters: dict[str, Segmenter] = {}
        self._lock = threading.Lock()
        self.cache = EmbeddingCache(cache_slices)
        self.timing = Timing()

    def segmenter(self, precision: str = DEFAULT_PRECISION) -> Segmenter:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        with self._lock:
            if precision not in self._segmenters:
                self._segmenters[precision] = self._make(precision=precision)
            return self._segmenters[precision]

    def state(self, source: ImageSource, z: int | None, precision: str = DEFAULT_PRECISION) -> ImageState:
        """The embedding of the image (or slice ``z``), from the cache or encoded now."""
        key = (source.key, z, precision)
        state = self.cache.get(key)
        if state is None:
            start = time.perf_counter()
            state = self.segmenter(precision).encode(source.image(z))
            self.timing.encode_s += time.perf_counter() - start
            self.timing.encoded += 1
            self.cache.put(key, state)
        return state

    def segment_2d(self, source: ImageSource, z: int | None, boxes: np.ndarray,
                   precision: str = DEFAULT_PRECISION) -> SegmentationResult:
        """Masks for (N, 4) boxes on the image or on slice ``z``: encode only if that slice is not cached."""
        self.timing = Timing()
        state = self.state(source, z, precision)
        start = time.perf_counter()
        result = self.segmenter(precision).predict(boxes, state=state)
        self.timing.decode_s = time.perf_counter() - start
        return result

    def segment_3d(self, source: ImageSource, box: np.ndarray, precision: str = DEFAULT_PRECISION,
                   strategy: str = "slicewise") -> tuple[int, np.ndarray]:
        """One (1, 6) box through :meth:`Segmenter.segment_volume` on the box's z-range only.

        Returns ``(z_min, mask)``: the (z_max - z_min + 1, y, x) bool mask of slices z_min..z_max. The slices are
        converted with the volume's rule first, so the result equals ``segment_volume`` on the whole volume.
        """
        self.timing = Timing()
        z0, z1 = int(box[0, 2]), int(box[0, 5])
        local = box.copy()
        local[0, 2], local[0, 5] = 0, z1 - z0
        start = time.perf_counter()
        result = self.segmenter(precision).segment_volume(source.volume(z0, z1), local, strategy=strategy)
        self.timing.volume_s = time.perf_counter() - start
        self.timing.encoded = result.encoded_slices
        return z0, result.label_map > 0


# ------------------------------------------------------------------------------------------------------ labels
def _bbox(mask: np.ndarray) -> tuple[slice, ...]:
    """Smallest region holding every True of ``mask`` (empty slices for an empty mask)."""
    if not mask.any():
        return tuple(slice(0, 0) for _ in mask.shape)
    out = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hit = np.flatnonzero(mask.any(axis=other))
        out.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(out)


@dataclass
class LabelObject:
    """One painted object: its label, the rectangles it came from, the region, its mask there, what it replaced."""

    label: int
    keys: tuple[bytes, ...]
    region: tuple[slice, ...]
    mask: np.ndarray = field(repr=False)
    before: np.ndarray = field(repr=False)
    accepted: bool = False

    @property
    def voxels(self) -> int:
        return int(self.mask.sum())


class ObjectStack:
    """The objects painted into one label array (edited in place), newest last.

    Pending objects always form the top of the stack (accept commits all of them), so removing one is exact: the
    objects above it are lifted, it is undone, and they are painted again.
    """

    def __init__(self, labels: np.ndarray) -> None:
        self.labels = labels
        self.objects: list[LabelObject] = []
        self._next = int(labels.max()) + 1 if labels.size else 1

    def next_label(self) -> int:
        return self._next

    def done_keys(self) -> set[bytes]:
        return {key for obj in self.objects for key in obj.keys}

    def pending(self) -> list[LabelObject]:
        return [obj for obj in self.objects if not obj.accepted]

    def paint(self, mask: np.ndarray, keys: Sequence[bytes], offset: Sequence[int] = ()) -> LabelObject:
        """Add an object: ``mask`` covers ``labels`` from ``offset`` on (leading axes; e.g. ``(z,)`` for one slice
        of a volume, ``(z0,)`` for a z-range); its voxels get a new label id."""
        mask = np.asarray(mask, dtype=bool)
        while mask.ndim < self.labels.ndim:
            mask = mask[np.newaxis]
        shift = tuple(int(v) for v in offset) + (0,) * (self.labels.ndim - len(offset))
        local = _bbox(mask)
        crop = mask[local]
        region = tuple(slice(s.start + d, s.stop + d) for s, d in zip(local, shift))
        obj = LabelObject(self._next, tuple(keys), region, crop, np.array(self.labels[region], copy=True))
        self._apply(obj)
        self._next += 1
        self.objects.append(obj)
        return obj

    def _apply(self, obj: LabelObject) -> None:
        obj.before = np.array(self.labels[obj.region], copy=True)
        view = self.labels[obj.region]
        view[obj.mask] = obj.label

    def _revert(self, obj: LabelObject) -> None:
        view = self.labels[obj.region]
        view[obj.mask] = obj.before[obj.mask]

    def undo(self) -> LabelObject | None:
        """Remove the newest object (pending or accepted); returns it, or None when there is none."""
        if not self.objects:
            return None
        obj = self.objects.pop()
        self._revert(obj)
        if obj.label == self._next - 1:
            self._next = obj.label
        return obj

    def remove(self, obj: LabelObject) -> None:
        """Remove any object exactly: lift the ones above it, undo it, paint them again."""
        index = self.objects.index(obj)
        above = self.objects[index + 1:]
        for other in reversed(above):
            self._revert(other)
        self._revert(obj)
        del self.objects[index:]
        for other in above:
            self._apply(other)
            self.objects.append(other)

    def drop_missing(self, present: set[bytes]) -> list[LabelObject]:
        """Remove pending objects whose rectangles are gone (moved or deleted); returns them."""
        gone = [obj for obj in self.pending() if not set(obj.keys) <= present]
        for obj in reversed(gone):
            self.remove(obj)
        return gone

    def accept(self) -> list[LabelObject]:
        """Commit every pending object; returns them."""
        done = self.pending()
        for obj in done:
            obj.accepted = True
        return done
