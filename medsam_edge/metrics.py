"""Segmentation metrics of the LiteMedSAM challenge: Dice (DSC) and normalized surface Dice (NSD).

Everything here is NumPy only (no scipy, no scikit-image, no torch).

Axis and spacing conventions
----------------------------
* 2D masks are ``(y, x)`` arrays; 2D spacing is ``(sy, sx)`` and defaults to 1 pixel on both axes.
* 3D masks are ``(z, y, x)`` arrays; 3D spacing is ``(sz, sy, sx)`` -- the same order as the array axes -- and
  defaults to 1 on every axis. The challenge ``.npz`` files store ``spacing`` in ITK ``(x, y, z)`` order;
  :mod:`medsam_edge.evaluate` reorders it before it reaches this module.

Surface definition (the DeepMind ``surface-distance`` / Medical Segmentation Decathlon one)
------------------------------------------------------------------------------------------
The surface of a mask lives on the grid of voxel *corners*. A volume of shape ``(n0, n1, n2)`` has
``(n0 + 1, n1 + 1, n2 + 1)`` corners; corner ``(i, j, k)`` is shared by the eight voxels ``(i - 1 + a, j - 1 + b,
k - 1 + c)`` with ``a, b, c`` in ``{0, 1}`` (voxels outside the array count as background). Its *neighbour code* is
the 8-bit number whose bit ``7 - (4a + 2b + c)`` is set when voxel ``(a, b, c)`` of that 2x2x2 cell is foreground
(so the lowest-index voxel is the most significant bit; in 2D the 2x2 cell gives bit ``3 - (2a + b)``). A corner is a
*surfel* when its code is neither 0 nor all-ones. Its area (its length in 2D) is the area of the marching-cubes
(marching-squares) surface patch inside its cell, for the given spacing; see :func:`neighbour_code_areas`.

NSD at tolerance ``tau`` is ``(sum of pred surfel areas within tau of the gt surface + sum of gt surfel areas within
tau of the pred surface) / (total pred surfel area + total gt surfel area)``, where "distance to a surface" is the
Euclidean distance (in spacing units) from the surfel corner to the nearest surfel corner of the other mask.

How the area tables are built (from first principles, once, on first use)
-------------------------------------------------------------------------
For each of the 256 (16 in 2D) cell configurations the cut surface is extracted by walking the cell's faces:
every cell edge whose two corners differ is cut at its midpoint; on each face the cut points are joined into
segments; on a face whose foreground corners sit on a diagonal ("ambiguous" face) the segments cut off each corner
of the *minority* class (foreground when at most half of the cell is foreground, background otherwise -- the
Lorensen & Cline convention that makes a code and its complement share one surface). The segments close into
polygons (triangle ... hexagon). Each polygon is split into triangles; among all triangulations of a polygon the one
with the largest total area is taken. For planar polygons every triangulation is equivalent; for the two non-planar
kinds that occur (the pentagon of "three corners on a face" and the hexagon of the 4-corner "chair") the largest-area
split is exactly the classic marching-cubes case triangulation, and every largest-area split yields the same area
for any spacing (tests check both facts, and check the table against ``skimage.measure.marching_cubes(...,
method="lorensen")`` on each configuration).
The table stores, per code, the area vectors (half cross products) of its triangles in voxel units; for a spacing
``(s0, s1, s2)`` a triangle's area vector scales to ``(n0 * s1 * s2, n1 * s0 * s2, n2 * s0 * s1)`` (exact for any
axis-aligned scaling), and the code's area is the sum of the lengths of its scaled triangle vectors. 2D is the same
with segments: a segment ``(d0, d1)`` has length ``sqrt((d0 * s0) ** 2 + (d1 * s1) ** 2)``.

Distances come from an exact separable squared Euclidean distance transform with per-axis spacing
(:func:`distance_transform_edt`): an exact 1D nearest-feature scan along the first axis, then the lower envelope of
parabolas (Felzenszwalb & Huttenlocher) along each further axis, vectorised over all lines of the volume.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from .errors import ConfigurationError, InvalidImageError

__all__ = [
    "CaseScores",
    "SurfaceDistances",
    "NSD_DSC_THRESHOLD",
    "NSD_2D_MODES",
    "compute_dsc_nsd",
    "dice",
    "distance_transform_edt",
    "neighbour_code_areas",
    "normalized_surface_dice",
    "squared_distance_transform",
    "surface_distances",
]

#: A case whose mean DSC is at most this value gets NSD 0 (the challenge rule; NSD is not computed at all).
NSD_DSC_THRESHOLD = 0.2

#: How :func:`compute_dsc_nsd` measures NSD on 2D cases. ``"challenge"``: as the challenge's evaluation script does,
#: the (y, x) image is treated as a one-slice volume ``(y, x, 1)`` with spacing ``(sy, sx, 1)`` and measured with the
#: 3D surfel method (its top and bottom faces are part of the surface, so the number behaves much like a tolerant
#: area overlap). ``"contour"``: the genuine 2D contour NSD with the 16-code contour-length table.
NSD_2D_MODES = ("challenge", "contour")


# ----------------------------------------------------------------------------------------------------------------
# input checks
# ----------------------------------------------------------------------------------------------------------------


def _as_mask(name: str, a, *, ndims=(2, 3)) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim not in ndims:
        raise InvalidImageError(
            f"{name} must be a {' or '.join(f'{d}D' for d in ndims)} array, got shape {arr.shape} ({arr.ndim}D)"
        )
    if arr.dtype == bool:
        return arr
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise InvalidImageError(f"{name} must be a boolean or numeric mask, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        raise InvalidImageError(f"{name} contains NaN or infinite values; expected a binary mask")
    return arr != 0


def _as_labels(name: str, a) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim not in (2, 3):
        raise InvalidImageError(f"{name} must be a 2D (y, x) or 3D (z, y, x) label map, got shape {arr.shape}")
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if not np.issubdtype(arr.dtype, np.integer):
        raise InvalidImageError(
            f"{name} must hold integer labels (0 = background, 1..K = objects), got dtype {arr.dtype}"
        )
    return arr


def _check_same_shape(a: np.ndarray, b: np.ndarray, names=("pred", "gt")) -> None:
    if a.shape != b.shape:
        raise InvalidImageError(f"{names[0]} and {names[1]} must have the same shape, got {a.shape} and {b.shape}")


def _normalise_spacing(spacing, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    try:
        sp = tuple(float(s) for s in np.asarray(spacing, dtype=float).reshape(-1))
    except (TypeError, ValueError) as exc:
        raise InvalidImageError(f"spacing must be {ndim} positive numbers, got {spacing!r}") from exc
    order = "(sy, sx)" if ndim == 2 else "(sz, sy, sx)"
    if len(sp) != ndim:
        raise InvalidImageError(
            f"spacing must have one value per array axis, {order} for a {ndim}D mask, got {len(sp)} values {sp}"
        )
    if not all(math.isfinite(s) and s > 0 for s in sp):
        raise InvalidImageError(f"spacing values must be finite and > 0, got {sp}")
    return sp


def _check_tolerance(tolerance) -> float:
    try:
        tol = float(tolerance)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"tolerance must be a number >= 0 (in spacing units), got {tolerance!r}") from exc
    if not (math.isfinite(tol) and tol >= 0):
        raise ConfigurationError(f"tolerance must be finite and >= 0 (in spacing units), got {tolerance!r}")
    return tol


# ----------------------------------------------------------------------------------------------------------------
# Dice
# ----------------------------------------------------------------------------------------------------------------


def dice(pred, gt) -> float:
    """Dice coefficient ``2 |pred & gt| / (|pred| + |gt|)`` of two binary masks of the same shape.

    Any nonzero value counts as foreground. Works for 2D ``(y, x)`` and 3D ``(z, y, x)`` masks (and any other
    dimension; Dice needs no spacing). Two empty masks give ``nan`` -- the challenge's convention (its script
    returns NaN there); :func:`compute_dsc_nsd` leaves such labels out of the case mean.
    """
    p = _as_mask("pred", pred, ndims=tuple(range(0, 33)))
    g = _as_mask("gt", gt, ndims=tuple(range(0, 33)))
    _check_same_shape(p, g)
    total = int(np.count_nonzero(p)) + int(np.count_nonzero(g))
    if total == 0:
        return float("nan")
    return 2.0 * int(np.count_nonzero(p & g)) / total


# ----------------------------------------------------------------------------------------------------------------
# neighbour-code tables
# ----------------------------------------------------------------------------------------------------------------


def _corner_bit(offset: tuple[int, ...]) -> int:
    """Bit of the cell corner ``offset`` (each 0/1) in the neighbour code: the lowest-index corner is the top bit."""
    nd = len(offset)
    idx = 0
    for o in offset:
        idx = (idx << 1) | o
    return (1 << nd) - 1 - idx


def _face_cycles(nd: int) -> list[list[tuple[int, ...]]]:
    """The faces of the unit cell (squares) as cycles of 4 corners; in 2D the cell itself is the only face."""
    if nd == 2:
        return [[(0, 0), (0, 1), (1, 1), (1, 0)]]
    faces = []
    for axis in range(3):
        others = [i for i in range(3) if i != axis]
        for side in (0, 1):
            cyc = []
            for p, q in ((0, 0), (0, 1), (1, 1), (1, 0)):
                c = [0, 0, 0]
                c[axis], c[others[0]], c[others[1]] = side, p, q
                cyc.append(tuple(c))
            faces.append(cyc)
    return faces


def _minority_inside(code: int, nd: int) -> frozenset:
    """Corners of the class whose corners get cut off on ambiguous faces (see the module docstring)."""
    corners = list(itertools.product((0, 1), repeat=nd))
    fg = frozenset(c for c in corners if (code >> _corner_bit(c)) & 1)
    if len(fg) * 2 <= len(corners):
        return fg
    return frozenset(corners) - fg


def _cut_segments(inside: frozenset, nd: int) -> list[tuple[tuple[float, ...], tuple[float, ...]]]:
    """Segments (pairs of edge midpoints, in voxel units) where the surface crosses each face of the cell."""

    def mid(p, q):
        return tuple((a + b) / 2.0 for a, b in zip(p, q))

    segs = []
    for cyc in _face_cycles(nd):
        ins = [c in inside for c in cyc]
        cut_edges = [i for i in range(4) if ins[i] != ins[(i + 1) % 4]]  # edge i joins cyc[i] and cyc[i + 1]
        if len(cut_edges) == 2:
            e0, e1 = cut_edges
            segs.append((mid(cyc[e0], cyc[(e0 + 1) % 4]), mid(cyc[e1], cyc[(e1 + 1) % 4])))
        elif len(cut_edges) == 4:  # diagonal face: cut off each corner of the minority class separately
            for i in range(4):
                if ins[i]:
                    segs.append((mid(cyc[(i - 1) % 4], cyc[i]), mid(cyc[i], cyc[(i + 1) % 4])))
    return segs


def _close_polygons(segs) -> list[list[tuple[float, ...]]]:
    """Join segments that share end points into closed polygons (every cut point has exactly two segments)."""
    remaining = list(segs)
    polys = []
    while remaining:
        a, b = remaining.pop(0)
        loop = [a, b]
        while loop[-1] != loop[0]:
            for j, (p, q) in enumerate(remaining):
                if p == loop[-1] or q == loop[-1]:
                    loop.append(q if p == loop[-1] else p)
                    remaining.pop(j)
                    break
            else:  # pragma: no cover - impossible for a cell surface
                raise AssertionError("open surface polygon while building the neighbour-code table")
        polys.append(loop[:-1])
    return polys


def _triangulations(n: int):
    """All triangulations of a polygon with vertices 0..n-1 (as lists of index triples), in a fixed order."""

    def rec(idx):
        if len(idx) < 3:
            yield []
            return
        i, j = idx[0], idx[-1]
        for m in range(1, len(idx) - 1):
            for left in rec(idx[: m + 1]):
                for right in rec(idx[m:]):
                    yield left + [(i, idx[m], j)] + right

    yield from rec(list(range(n)))


def _triangle_vector(p, q, r) -> np.ndarray:
    return 0.5 * np.cross(np.subtract(q, p), np.subtract(r, p))


def _largest_area_triangles(poly) -> list[np.ndarray]:
    best, best_area = None, -1.0
    for tri in _triangulations(len(poly)):
        vecs = [_triangle_vector(poly[a], poly[b], poly[c]) for a, b, c in tri]
        area = float(sum(np.linalg.norm(v) for v in vecs))
        if area > best_area + 1e-12:
            best, best_area = vecs, area
    return best


@functools.cache
def _code_vectors(nd: int) -> np.ndarray:
    """Per neighbour code, the area vectors (3D) or segment vectors (2D) of its surface pieces, in voxel units.

    Shape ``(2 ** 2 ** nd, max_pieces, nd)``, zero padded. Built once from the cell geometry (module docstring).
    """
    ncodes = 1 << (1 << nd)
    pieces: list[list[np.ndarray]] = []
    for code in range(ncodes):
        inside = _minority_inside(code, nd)
        segs = _cut_segments(inside, nd)
        if nd == 2:
            vecs = [np.subtract(b, a) for a, b in segs]
        else:
            vecs = [v for poly in _close_polygons(segs) for v in _largest_area_triangles(poly)]
        pieces.append(vecs)
    width = max(1, max(len(v) for v in pieces))
    table = np.zeros((ncodes, width, nd), dtype=np.float64)
    for code, vecs in enumerate(pieces):
        for i, v in enumerate(vecs):
            table[code, i] = v
    table.setflags(write=False)
    return table


def neighbour_code_areas(spacing: Sequence[float]) -> np.ndarray:
    """Surface area (3D) or contour length (2D) of the surface patch of each neighbour code, for a spacing.

    ``spacing`` has one value per array axis: ``(sy, sx)`` for 2D ``(y, x)`` masks (16 codes, lengths in spacing
    units) and ``(sz, sy, sx)`` for 3D ``(z, y, x)`` masks (256 codes, areas in squared spacing units).
    Codes 0 and all-ones have area 0. See the module docstring for the code layout and how the table is built.
    """
    sp = np.asarray(spacing, dtype=np.float64).reshape(-1)
    if sp.size not in (2, 3) or not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise InvalidImageError(
            f"spacing must be 2 values (sy, sx) or 3 values (sz, sy, sx), finite and > 0, got {spacing!r}"
        )
    vec = _code_vectors(sp.size)
    if sp.size == 2:
        scale = sp  # a segment (d0, d1) is (d0 * sy, d1 * sx) long
    else:
        scale = np.array([sp[1] * sp[2], sp[0] * sp[2], sp[0] * sp[1]])  # cofactors of diag(spacing)
    return np.sqrt(((vec * scale) ** 2).sum(axis=-1)).sum(axis=-1)


# ----------------------------------------------------------------------------------------------------------------
# exact Euclidean distance transform (NumPy, anisotropic)
# ----------------------------------------------------------------------------------------------------------------


def _nearest_feature_scan(feat: np.ndarray, step: float) -> np.ndarray:
    """Squared distance along axis 0 to the nearest True of the same line (inf when the line has none)."""
    n = feat.shape[0]
    big = np.int64(4 * n + 8)
    pos = np.arange(n, dtype=np.int64).reshape((n,) + (1,) * (feat.ndim - 1))
    left = np.where(feat, pos, -big)
    np.maximum.accumulate(left, axis=0, out=left)
    right = np.where(feat, pos, big)
    right = np.minimum.accumulate(right[::-1], axis=0)[::-1]
    gap = np.minimum(pos - left, right - pos)
    out = (gap.astype(np.float64) * step) ** 2
    out[gap >= big - n] = np.inf
    return out


def _parabola_envelope(f: np.ndarray, step: float) -> np.ndarray:
    """``out[p] = min_q f[q] + ((p - q) * step) ** 2`` along axis 0 of a 2D array ``(n, lines)``, exactly.

    Felzenszwalb & Huttenlocher's lower envelope, run for all lines at once (the loops go over positions; each
    step works on the vector of lines that need it). ``f`` may hold ``inf`` (no feature seen yet).
    """
    n, m = f.shape
    out = np.full((n, m), np.inf)
    if n == 0 or m == 0:
        return out
    live = np.flatnonzero(np.isfinite(f).any(axis=0))
    if live.size == 0:
        return out
    g = np.ascontiguousarray(f[:, live])
    a = g.shape[1]
    if n == 1:
        out[:, live] = g
        return out
    finite = np.isfinite(g)
    w = step * step
    qpos = np.arange(n, dtype=np.float64)
    h = g + w * (qpos**2)[:, None]  # f[q] + w q^2; the intersection of parabolas q and r is at
    #                                   (h[q] - h[r]) / (2 w (q - r))
    apex = np.zeros((n, a), dtype=np.int64)  # apex[j, line]: position of the j-th parabola of the envelope
    bound = np.empty((n + 1, a))  # bound[j, line]: where the j-th parabola starts to be the lowest
    top = np.full(a, -1, dtype=np.int64)  # index of the last parabola of the envelope (-1: empty)
    for q in range(n):
        lines = np.flatnonzero(finite[q])
        if lines.size == 0:
            continue
        fresh = top[lines] < 0
        if fresh.any():
            c = lines[fresh]
            top[c] = 0
            apex[0, c] = q
            bound[0, c] = -np.inf
            bound[1, c] = np.inf
            lines = lines[~fresh]
        hq = h[q]
        while lines.size:
            t = top[lines]
            r = apex[t, lines]
            s = (hq[lines] - h[r, lines]) / (2.0 * w * (q - r))
            drop = s <= bound[t, lines]
            keep = ~drop
            if keep.any():
                c = lines[keep]
                t1 = t[keep] + 1
                top[c] = t1
                apex[t1, c] = q
                bound[t1, c] = s[keep]
                bound[t1 + 1, c] = np.inf
            lines = lines[drop]
            top[lines] -= 1
    cols = np.arange(a)
    j = np.zeros(a, dtype=np.int64)
    res = np.empty((n, a))
    for p in range(n):
        move = np.flatnonzero(bound[j + 1, cols] < p)
        while move.size:
            j[move] += 1
            move = move[bound[j[move] + 1, move] < p]
        r = apex[j, cols]
        res[p] = g[r, cols] + ((p - r) * step) ** 2
    out[:, live] = res
    return out


def _window_pass(d2: np.ndarray, axis: int, step: float, reach: int) -> np.ndarray:
    """``out[p] = min_{|k| <= reach} d2[p + k] + (k * step) ** 2`` along ``axis`` (positions outside are skipped)."""
    out = d2.copy()
    buf = np.empty_like(d2)
    n = d2.shape[axis]

    def sl(a, b):
        return (slice(None),) * axis + (slice(a, b),)

    for k in range(1, min(reach, n - 1) + 1):
        add = (k * step) ** 2
        np.add(d2[sl(None, n - k)], add, out=buf[sl(None, n - k)])
        np.minimum(out[sl(k, None)], buf[sl(None, n - k)], out=out[sl(k, None)])
        np.add(d2[sl(k, None)], add, out=buf[sl(k, None)])
        np.minimum(out[sl(None, n - k)], buf[sl(k, None)], out=out[sl(None, n - k)])
    return out


#: Above this many steps per axis, the banded transform (``max_distance``) falls back to the full envelope method.
_MAX_WINDOW_STEPS = 24


def squared_distance_transform(
    features, spacing: Sequence[float] | None = None, max_distance: float | None = None
) -> np.ndarray:
    """Exact squared Euclidean distance from every element to the nearest True element of ``features``.

    ``features`` is an N-D boolean array (any N >= 1); ``spacing`` has one value per array axis, in array-axis order
    (``(sy, sx)`` for a 2D ``(y, x)`` array, ``(sz, sy, sx)`` for a 3D ``(z, y, x)`` one), default 1 per axis.
    Where ``features`` has no True element at all the result is ``inf`` everywhere. float64 output; a squared
    distance is accumulated as ``(d0 * s0) ** 2 + (d1 * s1) ** 2 + ...`` in axis order.

    ``max_distance`` (same unit as ``spacing``) bounds the work: distances ``<= max_distance`` are still exact and
    every larger one is reported as ``inf``. It is exact because the nearest feature of a point within
    ``max_distance`` differs from it by at most ``max_distance / s`` steps along each axis ``s``, so each separable
    pass only has to look that far (a windowed minimum instead of the full lower envelope of parabolas).
    """
    feat = np.asarray(features)
    if feat.dtype != bool:
        feat = feat != 0
    if feat.ndim == 0:
        raise InvalidImageError("features must have at least one axis")
    sp = (1.0,) * feat.ndim if spacing is None else tuple(float(s) for s in spacing)
    if len(sp) != feat.ndim or not all(math.isfinite(s) and s > 0 for s in sp):
        raise InvalidImageError(
            f"spacing must have {feat.ndim} finite values > 0 (one per array axis), got {spacing!r}"
        )
    if max_distance is not None:
        max_distance = float(max_distance)
        if not (max_distance >= 0):
            raise ConfigurationError(f"max_distance must be >= 0 or None, got {max_distance!r}")
    if feat.size == 0:
        return np.zeros(feat.shape)
    if not feat.any():
        return np.full(feat.shape, np.inf)
    banded = max_distance is not None and math.isfinite(max_distance)
    reach0 = int(math.floor(max_distance / sp[0])) + 1 if banded else None
    if banded and reach0 <= _MAX_WINDOW_STEPS:
        d2 = _window_pass(np.where(feat, 0.0, np.inf), 0, sp[0], reach0)
    else:
        d2 = _nearest_feature_scan(feat, sp[0])
    for axis in range(1, feat.ndim):
        reach = int(math.floor(max_distance / sp[axis])) + 1 if banded else None
        if banded and reach <= _MAX_WINDOW_STEPS:
            d2 = _window_pass(d2, axis, sp[axis], reach)
        else:
            moved = np.moveaxis(d2, axis, 0)
            shp = moved.shape
            env = _parabola_envelope(moved.reshape(shp[0], -1), sp[axis])
            d2 = np.moveaxis(env.reshape(shp), 0, axis)
    if banded:
        # Anything above the bound may be an over-estimate (its nearest feature was out of the window): drop it.
        d2[d2 > (max_distance * (1.0 + 1e-9)) ** 2] = np.inf
    return np.ascontiguousarray(d2)


def distance_transform_edt(
    features, spacing: Sequence[float] | None = None, max_distance: float | None = None
) -> np.ndarray:
    """Exact Euclidean distance to the nearest True element of ``features`` (``inf`` when there is none).

    ``spacing`` is in array-axis order: ``(sy, sx)`` for 2D ``(y, x)``, ``(sz, sy, sx)`` for 3D ``(z, y, x)``;
    default 1 per axis. Note the convention is the reverse of ``scipy.ndimage.distance_transform_edt`` (which
    measures the distance to the nearest *zero*): here True marks the features. With ``max_distance``, distances
    above it are returned as ``inf`` (and the transform is much faster); see :func:`squared_distance_transform`.
    """
    return np.sqrt(squared_distance_transform(features, spacing, max_distance))


# ----------------------------------------------------------------------------------------------------------------
# surface distances and NSD
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SurfaceDistances:
    """Surfels of two masks: their areas (lengths in 2D) and their distance to the other mask's surface.

    Arrays are unsorted, in corner-grid raster order. Distances are ``inf`` when the other mask is empty.
    """

    areas_pred: np.ndarray
    dist_pred_to_gt: np.ndarray
    areas_gt: np.ndarray
    dist_gt_to_pred: np.ndarray


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    sl = []
    for axis in range(mask.ndim):
        proj = mask.any(axis=tuple(i for i in range(mask.ndim) if i != axis))
        idx = np.flatnonzero(proj)
        if idx.size == 0:
            return None
        sl.append(slice(int(idx[0]), int(idx[-1]) + 1))
    return tuple(sl)


def _neighbour_codes(padded: np.ndarray) -> np.ndarray:
    """Neighbour code of every corner of a mask already padded by one background voxel on every side."""
    nd = padded.ndim
    shape = tuple(s - 1 for s in padded.shape)
    codes = np.zeros(shape, dtype=np.uint8)
    for offset in itertools.product((0, 1), repeat=nd):
        part = padded[tuple(slice(o, o + s) for o, s in zip(offset, shape))]
        codes |= part << np.uint8(_corner_bit(offset))
    return codes


def surface_distances(
    pred, gt, spacing: Sequence[float] | None = None, max_distance: float | None = None
) -> SurfaceDistances:
    """Surfel areas of ``pred`` and ``gt`` and the distance of each surfel to the other mask's surface.

    Masks are 2D ``(y, x)`` or 3D ``(z, y, x)``, same shape, nonzero = foreground. ``spacing`` is in the same axis
    order as the array: ``(sy, sx)`` in 2D (default 1 pixel), ``(sz, sy, sx)`` in 3D (default 1 per axis).
    Only the bounding box of ``pred | gt`` (plus the one-voxel border of corners) is processed; this is exact,
    since every surfel of either mask lies inside it. With ``max_distance`` (spacing units), distances above it are
    reported as ``inf`` and the distance transform only looks that far (much faster; exact below the bound).
    """
    p = _as_mask("pred", pred)
    g = _as_mask("gt", gt)
    _check_same_shape(p, g)
    sp = _normalise_spacing(spacing, p.ndim)
    empty = np.zeros(0)
    box = _bounding_box(p | g)
    if box is None:
        return SurfaceDistances(empty, empty, empty, empty)
    pad = [(1, 1)] * p.ndim
    code_p = _neighbour_codes(np.pad(p[box], pad).astype(np.uint8))
    code_g = _neighbour_codes(np.pad(g[box], pad).astype(np.uint8))
    full = (1 << (1 << p.ndim)) - 1
    surf_p = (code_p != 0) & (code_p != full)
    surf_g = (code_g != 0) & (code_g != full)
    table = neighbour_code_areas(sp)
    areas_p = table[code_p[surf_p]]
    areas_g = table[code_g[surf_g]]
    if surf_g.any() and surf_p.any():
        dist_p = np.sqrt(squared_distance_transform(surf_g, sp, max_distance)[surf_p])
        dist_g = np.sqrt(squared_distance_transform(surf_p, sp, max_distance)[surf_g])
    else:
        dist_p = np.full(areas_p.shape, np.inf)
        dist_g = np.full(areas_g.shape, np.inf)
    return SurfaceDistances(areas_p, dist_p, areas_g, dist_g)


def normalized_surface_dice(pred, gt, spacing: Sequence[float] | None = None, tolerance: float = 2.0) -> float:
    """Normalized surface Dice (surface Dice at tolerance ``tau``) of two binary masks.

    ``pred`` and ``gt`` are 2D ``(y, x)`` or 3D ``(z, y, x)`` masks of the same shape (nonzero = foreground).
    ``spacing`` is in array-axis order: ``(sy, sx)`` for 2D (default 1 pixel per axis), ``(sz, sy, sx)`` for 3D
    (default 1 per axis); ``tolerance`` is in the same unit (mm for a spacing in mm). A surfel counts as matched when
    its distance to the other surface is ``<= tolerance``.

    2D masks use the 2D contour method (16-code contour lengths). To reproduce the challenge's number for a 2D
    image, use :func:`compute_dsc_nsd` (its default ``nsd_2d="challenge"`` measures the image as a one-slice volume).

    Returns ``nan`` when both masks are empty, 0.0 when exactly one is empty.
    """
    tol = _check_tolerance(tolerance)
    sd = surface_distances(pred, gt, spacing, max_distance=tol)
    total = float(sd.areas_pred.sum() + sd.areas_gt.sum())
    if total == 0.0:
        return float("nan")
    hit = float(sd.areas_pred[sd.dist_pred_to_gt <= tol].sum() + sd.areas_gt[sd.dist_gt_to_pred <= tol].sum())
    return hit / total


# ----------------------------------------------------------------------------------------------------------------
# challenge aggregation
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CaseScores:
    """Scores of one case, as the challenge aggregates them.

    ``dsc`` / ``nsd`` map each label 1..max(gt) to its score (read-only mappings). ``mean_dsc`` / ``mean_nsd`` are
    the means over the labels whose score is defined (``nan`` labels -- absent from both seg and gt -- are left
    out). ``nsd_gated`` is True when ``mean_dsc <= 0.2`` so NSD was set to 0 without being computed.
    ``spacing`` is the one used, in array-axis order ((sy, sx) or (sz, sy, sx)); ``nsd_2d`` the 2D NSD mode.
    """

    dsc: Mapping[int, float]
    nsd: Mapping[int, float]
    mean_dsc: float
    mean_nsd: float
    nsd_gated: bool
    spacing: tuple[float, ...]
    tolerance: float
    nsd_2d: str | None = None


def _nanmean(values) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return float(sum(vals) / len(vals)) if vals else float("nan")


def compute_dsc_nsd(
    seg,
    gt,
    spacing: Sequence[float] | None = None,
    tolerance: float = 2.0,
    *,
    nsd_2d: str = "challenge",
) -> CaseScores:
    """DSC and NSD of a multi-label segmentation against its ground truth, aggregated like the challenge.

    ``seg`` and ``gt`` are integer label maps of the same shape: 2D ``(y, x)`` or 3D ``(z, y, x)``; 0 is background.
    ``spacing`` is in array-axis order: ``(sz, sy, sx)`` for 3D (default 1 per axis; the challenge uses the case's
    spacing in mm), ``(sy, sx)`` for 2D (default 1 pixel, which is what the challenge uses). ``tolerance`` is in the
    spacing unit (2 mm / 2 pixels in the challenge).

    Aggregation (following the challenge script ``evaluation/compute_metrics.py`` of bowang-lab/MedSAM):

    * labels are ``1 .. max(gt)``; labels of ``seg`` above ``max(gt)`` are ignored (not penalised);
    * a label present in only one of seg / gt scores DSC 0 and NSD 0;
    * a label absent from both scores ``nan`` (the challenge's Dice of two empty masks). The challenge's plain
      mean would then make the whole case ``nan``; here such labels are left out of the means instead;
    * if the mean DSC is ``<= 0.2`` the NSD of every label is 0 and is not computed (``nsd_gated``) -- the rule
      is applied to the case mean, as the challenge script does;
    * a gt without any foreground label has no labels: both means are ``nan``.

    ``nsd_2d`` picks the NSD of 2D cases: ``"challenge"`` (default; the image is measured as a one-slice
    ``(y, x, 1)`` volume with spacing ``(sy, sx, 1)`` and the 3D surfel table, exactly as the challenge script does)
    or ``"contour"`` (true 2D contour NSD). It has no effect on 3D cases.
    """
    s = _as_labels("seg", seg)
    g = _as_labels("gt", gt)
    _check_same_shape(s, g, ("seg", "gt"))
    sp = _normalise_spacing(spacing, g.ndim)
    tol = _check_tolerance(tolerance)
    if nsd_2d not in NSD_2D_MODES:
        raise ConfigurationError(f"nsd_2d must be one of {NSD_2D_MODES}, got {nsd_2d!r}")
    num = int(g.max()) if g.size else 0
    if num < 1:
        return CaseScores(
            MappingProxyType({}),
            MappingProxyType({}),
            float("nan"),
            float("nan"),
            False,
            sp,
            tol,
            nsd_2d if g.ndim == 2 else None,
        )
    in_range_s = (s >= 1) & (s <= num)
    fg = (g >= 1) | in_range_s
    box = _bounding_box(fg)
    if box is None:  # pragma: no cover - num >= 1 implies gt has foreground
        box = tuple(slice(0, n) for n in g.shape)
    gc = np.where(g[box] >= 1, g[box], 0).astype(np.int64)
    sc = np.where(in_range_s[box], s[box], 0).astype(np.int64)
    n_g = np.bincount(gc.ravel(), minlength=num + 1)
    n_s = np.bincount(sc.ravel(), minlength=num + 1)
    n_both = np.bincount(gc[gc == sc].ravel(), minlength=num + 1)
    dsc: dict[int, float] = {}
    for lab in range(1, num + 1):
        tot = int(n_g[lab] + n_s[lab])
        dsc[lab] = float("nan") if tot == 0 else 2.0 * int(n_both[lab]) / tot
    mean_dsc = _nanmean(dsc.values())

    nsd: dict[int, float] = {}
    gated = not (mean_dsc > NSD_DSC_THRESHOLD)
    for lab in range(1, num + 1):
        if math.isnan(dsc[lab]):
            nsd[lab] = float("nan")
        elif gated or n_g[lab] == 0 or n_s[lab] == 0:
            nsd[lab] = 0.0
        else:
            m_s = sc == lab
            m_g = gc == lab
            lab_sp = sp
            if g.ndim == 2 and nsd_2d == "challenge":
                m_s, m_g, lab_sp = m_s[..., None], m_g[..., None], (sp[0], sp[1], 1.0)
            nsd[lab] = normalized_surface_dice(m_s, m_g, lab_sp, tol)
    mean_nsd = _nanmean(nsd.values())
    return CaseScores(
        MappingProxyType(dsc),
        MappingProxyType(nsd),
        mean_dsc,
        mean_nsd,
        gated,
        sp,
        tol,
        nsd_2d if g.ndim == 2 else None,
    )
