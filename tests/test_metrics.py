"""Tests of medsam_edge.metrics: DSC, NSD (surface Dice), the neighbour-code tables and the distance transform.

Independent routes used here (test-only dependencies): scipy's EDT and pairwise distances, scikit-image's
Lorensen marching cubes, hand-derived closed forms for boxes, squares and spheres.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage
from scipy.spatial.distance import cdist

from medsam_edge import metrics as M
from medsam_edge.errors import ConfigurationError, InvalidImageError, MedsamEdgeError

pytestmark = pytest.mark.unit

RNG_SEED = 20240521


# ---------------------------------------------------------------------------------------------------------------
# helpers (independent of the implementation under test)
# ---------------------------------------------------------------------------------------------------------------


def _cell(code: int, nd: int) -> np.ndarray:
    """The 2x2(x2) cell of a neighbour code, following the documented layout (lowest-index corner = top bit)."""
    v = np.zeros((2,) * nd)
    for corner in itertools.product((0, 1), repeat=nd):
        idx = int("".join(map(str, corner)), 2)
        if code >> ((1 << nd) - 1 - idx) & 1:
            v[corner] = 1
    return v


def _skimage_code_areas(spacing) -> np.ndarray:
    """Per-code area from scikit-image's classic (Lorensen) marching cubes on the cell, minority class inside."""
    from skimage.measure import marching_cubes, mesh_surface_area

    out = np.zeros(256)
    for code in range(1, 255):
        v = _cell(code, 3)
        if v.sum() > 4:  # the convention documented in metrics: a code and its complement share one surface
            v = 1 - v
        verts, faces, _, _ = marching_cubes(v, 0.5, method="lorensen", spacing=tuple(spacing))
        out[code] = mesh_surface_area(verts.astype(np.float64), faces)
    return out


def _contour_code_lengths(spacing) -> np.ndarray:
    """Marching-squares contour length per 2D code, from the geometry of the 2x2 cell (midpoint cuts)."""
    s0, s1 = spacing
    half_diag = 0.5 * math.hypot(s0, s1)
    out = np.zeros(16)
    for code in range(16):
        v = _cell(code, 2)
        n = int(v.sum())
        if n in (1, 3):
            out[code] = half_diag
        elif n == 2:
            if v[0, 0] == v[0, 1]:  # the two set corners share a row: the cut runs along axis 1
                out[code] = s1
            elif v[0, 0] == v[1, 0]:  # they share a column: the cut runs along axis 0
                out[code] = s0
            else:  # diagonal: two separate corner cuts
                out[code] = 2 * half_diag
    return out


_SK_AREAS_CACHE: dict = {}


def _brute_force_nsd(pred, gt, spacing, tol):
    """NSD by direct enumeration: surfel corners by definition, areas from independent tables, pairwise distances."""
    pred = np.asarray(pred, bool)
    gt = np.asarray(gt, bool)
    nd = pred.ndim
    sp = np.asarray(spacing, float)
    if nd == 3:
        key = tuple(sp)
        if key not in _SK_AREAS_CACHE:
            _SK_AREAS_CACHE[key] = _skimage_code_areas(sp)
        table = _SK_AREAS_CACHE[key]
    else:
        table = _contour_code_lengths(sp)

    def surfels(mask):
        padded = np.pad(mask, 1)
        pts, areas = [], []
        for corner in itertools.product(*[range(n + 1) for n in mask.shape]):
            cell = padded[tuple(slice(c, c + 2) for c in corner)]
            if cell.any() and not cell.all():
                code = 0
                for off in itertools.product((0, 1), repeat=nd):
                    if cell[off]:
                        code |= 1 << ((1 << nd) - 1 - int("".join(map(str, off)), 2))
                pts.append(corner)
                areas.append(table[code])
        return np.array(pts, float).reshape(-1, nd) * sp, np.array(areas)

    pp, ap = surfels(pred)
    pg, ag = surfels(gt)
    if len(ap) + len(ag) == 0:
        return float("nan")
    if len(ap) == 0 or len(ag) == 0:
        return 0.0
    d = cdist(pp, pg)
    hit = ap[d.min(axis=1) <= tol].sum() + ag[d.min(axis=0) <= tol].sum()
    return hit / (ap.sum() + ag.sum())


def _ball(r, shape, center):
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum((g - c) ** 2 for g, c in zip(grids, center)) <= r * r


def _blob(rng, shape, sigma=1.5, quantile=None):
    x = ndimage.gaussian_filter(rng.random(shape), sigma)
    q = rng.uniform(0.5, 0.9) if quantile is None else quantile
    return x > np.quantile(x, q)


# ---------------------------------------------------------------------------------------------------------------
# lookup tables
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.7, 1.9, 3.1), (2.5, 0.4, 1.1), (5.0, 0.8, 0.8)])
def test_3d_table_matches_lorensen_marching_cubes_on_every_code(spacing):
    ours = M.neighbour_code_areas(spacing)
    ref = _skimage_code_areas(spacing)
    # Same triangles, areas summed in a different order: agreement to rounding.
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-14)
    assert ours[0] == 0 and ours[255] == 0


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.5, 2.0), (3.0, 0.7)])
def test_2d_table_matches_marching_squares_lengths(spacing):
    np.testing.assert_allclose(M.neighbour_code_areas(spacing), _contour_code_lengths(spacing), rtol=1e-13)


def test_known_table_values():
    t = M.neighbour_code_areas((1, 1, 1))
    assert t[1] == pytest.approx(math.sqrt(3) / 8)  # one corner: triangle through three edge midpoints
    assert t[3] == pytest.approx(math.sqrt(2) / 2)  # two corners along axis 2: a diagonal rectangle
    assert t[15] == pytest.approx(1.0)  # a full face of the cell: a unit square
    assert t[6] == pytest.approx(2 * math.sqrt(3) / 8)  # face diagonal: two separate corner triangles
    # three corners on a face: the classic pentagon split, 1/2 + sqrt(3)/4 + sqrt(3)/8
    assert t[7] == pytest.approx(0.5 + math.sqrt(3) / 4 + math.sqrt(3) / 8)
    # corner plus its 3 neighbours: planar regular hexagon of side sqrt(2)/2
    assert t[0b00010111] == pytest.approx(3 * math.sqrt(3) / 2 * 0.5)
    s = (2.0, 3.0, 5.0)
    t = M.neighbour_code_areas(s)
    assert t[1] == pytest.approx(math.sqrt((3 * 5) ** 2 + (2 * 5) ** 2 + (2 * 3) ** 2) / 8)
    assert t[15] == pytest.approx(3 * 5)  # bits 0..3 = the four corners with a=1: a plane normal to axis 0


def test_table_is_complement_symmetric_for_any_spacing():
    rng = np.random.default_rng(RNG_SEED)
    for _ in range(5):
        t = M.neighbour_code_areas(tuple(rng.uniform(0.2, 4, 3)))
        np.testing.assert_allclose(t, t[::-1], rtol=1e-13)


def test_largest_area_triangulation_is_unique_up_to_area_for_any_spacing():
    """Every triangulation tied for largest area gives the same area under every spacing (choice is harmless)."""
    rng = np.random.default_rng(RNG_SEED)
    spacings = [np.array([1.0, 1.0, 1.0])] + [rng.uniform(0.2, 4, 3) for _ in range(4)]

    def area(vecs, s):
        scale = np.array([s[1] * s[2], s[0] * s[2], s[0] * s[1]])
        return sum(np.linalg.norm(np.asarray(v) * scale) for v in vecs)

    checked = 0
    for code in range(256):
        inside = M._minority_inside(code, 3)
        for poly in M._close_polygons(M._cut_segments(inside, 3)):
            cands = []
            for tri in M._triangulations(len(poly)):
                vecs = [M._triangle_vector(poly[a], poly[b], poly[c]) for a, b, c in tri]
                cands.append((area(vecs, spacings[0]), vecs))
            best = max(a for a, _ in cands)
            tied = [v for a, v in cands if a > best - 1e-9]
            for s in spacings:
                vals = [area(v, s) for v in tied]
                assert max(vals) - min(vals) < 1e-9
            checked += len(poly) > 3
    assert checked > 0


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.0, 1.0, 1.0), (0.6, 1.7, 2.9)])
def test_box_surface_area_closed_form(spacing):
    k0, k1, k2 = 5, 7, 4
    s0, s1, s2 = spacing
    m = np.zeros((9, 11, 8), bool)
    m[2 : 2 + k0, 1 : 1 + k1, 3 : 3 + k2] = True
    faces = 2 * ((k1 - 1) * (k2 - 1) * s1 * s2 + (k0 - 1) * (k2 - 1) * s0 * s2 + (k0 - 1) * (k1 - 1) * s0 * s1)
    edges = (
        4
        * 0.5
        * ((k0 - 1) * s0 * math.hypot(s1, s2) + (k1 - 1) * s1 * math.hypot(s0, s2) + (k2 - 1) * s2 * math.hypot(s0, s1))
    )
    corners = math.sqrt((s1 * s2) ** 2 + (s0 * s2) ** 2 + (s0 * s1) ** 2)  # 8 corners x 1/8
    sd = M.surface_distances(m, m, spacing)
    assert sd.areas_pred.sum() == pytest.approx(faces + edges + corners, rel=1e-12)


def test_rectangle_perimeter_closed_form():
    s0, s1 = 0.8, 2.5
    m = np.zeros((12, 15), bool)
    m[3:9, 2:12] = True  # 6 x 10
    expected = 2 * 5 * s0 + 2 * 9 * s1 + 4 * 0.5 * math.hypot(s0, s1)
    assert M.surface_distances(m, m, (s0, s1)).areas_gt.sum() == pytest.approx(expected, rel=1e-12)


def test_sphere_total_area_matches_skimage_marching_cubes():
    from skimage.measure import marching_cubes, mesh_surface_area

    ball = _ball(9, (23, 23, 23), (11, 11, 11))
    sp = (1.5, 1.0, 0.7)
    ours = M.surface_distances(ball, ball, sp).areas_gt.sum()
    verts, faces, _, _ = marching_cubes(np.pad(ball, 1).astype(float), 0.5, method="lorensen", spacing=sp)
    assert ours == pytest.approx(mesh_surface_area(verts.astype(np.float64), faces), rel=1e-10)


# ---------------------------------------------------------------------------------------------------------------
# distance transform
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape,density",
    [((17,), 0.1), ((13, 21), 0.03), ((9, 11, 8), 0.02), ((1, 6, 5), 0.2), ((30, 4, 3), 0.01), ((40, 40), 0.001)],
)
def test_edt_matches_scipy(shape, density):
    rng = np.random.default_rng(RNG_SEED)
    for _ in range(4):
        f = rng.random(shape) < density
        f.flat[rng.integers(f.size)] = True
        sp = tuple(rng.uniform(0.3, 3.0, len(shape)))
        ours = M.distance_transform_edt(f, sp)
        ref = ndimage.distance_transform_edt(~f, sampling=sp)
        np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12)


def test_edt_of_no_features_is_inf_and_all_features_is_zero():
    assert np.all(np.isinf(M.distance_transform_edt(np.zeros((3, 4, 5), bool))))
    assert np.all(M.distance_transform_edt(np.ones((3, 4), bool)) == 0)


@pytest.mark.parametrize("spacing,bound", [((1.0, 1.0, 1.0), 2.0), ((2.5, 0.8, 0.8), 2.0), ((0.05, 0.07, 0.1), 2.0)])
def test_banded_edt_is_exact_below_the_bound(spacing, bound):
    """``max_distance`` keeps exact values up to the bound (window method, or the envelope fallback for fine grids)."""
    rng = np.random.default_rng(RNG_SEED)
    f = rng.random((24, 30, 28)) < 0.004
    full = M.distance_transform_edt(f, spacing)
    band = M.distance_transform_edt(f, spacing, max_distance=bound)
    inside = full <= bound
    # Equal up to the last bit: where two features are exactly equidistant the two methods may pick different ones,
    # whose float sums can differ by one ulp.
    np.testing.assert_allclose(band[inside], full[inside], rtol=1e-15, atol=0)
    assert np.all(np.isinf(band[~inside]))


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    shape=st.lists(st.integers(1, 9), min_size=1, max_size=3),
    density=st.floats(0.0, 0.6),
)
def test_edt_property_against_scipy(seed, shape, density):
    rng = np.random.default_rng(seed)
    f = rng.random(shape) < density
    if not f.any():
        f.flat[0] = True
    sp = tuple(rng.uniform(0.25, 4.0, len(shape)))
    np.testing.assert_allclose(
        M.distance_transform_edt(f, sp), ndimage.distance_transform_edt(~f, sampling=sp), rtol=1e-12, atol=1e-12
    )


# ---------------------------------------------------------------------------------------------------------------
# NSD and DSC: analytic cases
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("nd", [2, 3])
def test_identical_masks_score_one(nd):
    rng = np.random.default_rng(RNG_SEED)
    m = _blob(rng, (20,) * nd)
    assert M.dice(m, m) == 1.0
    assert M.normalized_surface_dice(m, m, None, 0.0) == 1.0


def test_empty_masks():
    z = np.zeros((6, 7), bool)
    one = z.copy()
    one[2, 3] = True
    assert math.isnan(M.dice(z, z))
    assert math.isnan(M.normalized_surface_dice(z, z))
    assert M.normalized_surface_dice(one, z) == 0.0
    assert M.normalized_surface_dice(z, one) == 0.0
    assert M.dice(one, z) == 0.0


@pytest.mark.parametrize("nd", [2, 3])
def test_disjoint_far_apart_score_zero(nd):
    a = np.zeros((40,) * nd, bool)
    b = np.zeros_like(a)
    a[(slice(2, 8),) * nd] = True
    b[(slice(30, 36),) * nd] = True
    assert M.dice(a, b) == 0.0
    assert M.normalized_surface_dice(a, b, None, 2.0) == 0.0


def test_sphere_shift_dsc_and_nsd():
    """Ball of radius r shifted by d voxels along an axis.

    DSC follows the two-sphere lens volume ``1 - 3d/(4r) + d^3/(16 r^3)`` up to voxelisation (<= 0.01 at r = 12).
    NSD is exactly 1 for d <= tau: the shifted surface is an exact translate of the original, so every surfel has a
    partner at distance exactly d. Past tau it falls strictly.
    """
    r, tau = 12, 2.0
    shape = (40, 34, 34)
    base = _ball(r, shape, (16, 17, 17))
    nsd = []
    for d in range(0, 9):
        moved = _ball(r, shape, (16 + d, 17, 17))
        expected_dsc = 1 - 3 * d / (4 * r) + d**3 / (16 * r**3)
        if d <= 6:
            assert M.dice(moved, base) == pytest.approx(expected_dsc, abs=0.01)
        nsd.append(M.normalized_surface_dice(moved, base, (1, 1, 1), tau))
    assert nsd[0] == nsd[1] == nsd[2] == 1.0
    assert all(a > b for a, b in zip(nsd[2:], nsd[3:]))
    assert nsd[-1] < 0.5


def _box_shift_nsd(n, k, spacing, tau):
    """Closed form NSD of an n^3 voxel cube vs the same cube shifted by k voxels along axis 0 (k * s0 > tau).

    Matched surfels of the original cube: the top face within tau (laterally) of the side walls, the top edges and
    corners (they lie on the shifted cube's walls), and the side walls / vertical edges from height
    ``k - floor(tau / s0)`` up. The bottom face, edges and corners are out of reach. By mirror symmetry the
    shifted cube scores the same.
    """
    s0, s1, s2 = spacing
    assert k * s0 > tau and k < n
    inner = range(1, n)
    top = sum(s1 * s2 for j in inner for m in inner if min(j, n - j) * s1 <= tau or min(m, n - m) * s2 <= tau)
    edge0 = s0 * 0.5 * math.hypot(s1, s2)
    edge1 = s1 * 0.5 * math.hypot(s0, s2)
    edge2 = s2 * 0.5 * math.hypot(s0, s1)
    corner = math.sqrt((s1 * s2) ** 2 + (s0 * s2) ** 2 + (s0 * s1) ** 2) / 8
    face0, face1, face2 = s1 * s2, s0 * s2, s0 * s1  # areas of surfels on faces normal to axis 0, 1, 2
    heights = [i for i in inner if i >= k - math.floor(tau / s0)]
    walls = len(heights) * (n - 1) * (2 * face1 + 2 * face2)
    vertical_edges = len(heights) * 4 * edge0
    matched = top + 2 * (n - 1) * (edge1 + edge2) + 4 * corner + walls + vertical_edges
    total = 2 * (n - 1) ** 2 * (face0 + face1 + face2) + 4 * (n - 1) * (edge0 + edge1 + edge2) + 8 * corner
    return matched / total


@pytest.mark.parametrize(
    "k,spacing", [(2, (2.0, 1.0, 1.0)), (3, (1.0, 1.0, 1.0)), (4, (1.0, 0.7, 1.3)), (3, (1.5, 2.0, 0.5))]
)
def test_cube_shift_nsd_closed_form(k, spacing):
    n = 10
    a = np.zeros((20, 14, 14), bool)
    a[3 : 3 + n, 2 : 2 + n, 2 : 2 + n] = True
    b = np.roll(a, k, axis=0)
    assert M.normalized_surface_dice(b, a, spacing, 2.0) == pytest.approx(_box_shift_nsd(n, k, spacing, 2.0), 1e-12)
    assert M.dice(a, b) == pytest.approx((n - k) / n)


def test_spacing_is_in_array_axis_order():
    """A one-voxel shift along axis 0 (z) costs s0; along axis 2 (x) costs s2. Spacing (2, 1, 1) vs (1, 1, 1)."""
    a = np.zeros((16, 16, 16), bool)
    a[4:12, 4:12, 4:12] = True
    z1, z2, x2 = np.roll(a, 1, 0), np.roll(a, 2, 0), np.roll(a, 2, 2)
    nsd = M.normalized_surface_dice
    assert nsd(z1, a, (2, 1, 1), 2.0) == 1.0  # 1 voxel * 2 mm = tau
    assert nsd(z2, a, (2, 1, 1), 2.0) < 1.0  # 4 mm > tau
    assert nsd(z2, a, (1, 1, 1), 2.0) == 1.0  # 2 mm = tau
    assert nsd(x2, a, (2, 1, 1), 2.0) == 1.0  # x spacing is 1: 2 mm
    assert nsd(x2, a, (1, 1, 2), 2.0) < 1.0  # ... unless x spacing is 2
    sc = M.compute_dsc_nsd(z2.astype(np.uint8), a.astype(np.uint8), (2, 1, 1))
    assert sc.nsd[1] == nsd(z2, a, (2, 1, 1), 2.0) and sc.spacing == (2.0, 1.0, 1.0)


def test_2d_square_shift_closed_form():
    """k x k square shifted by 3 px along x, tau = 2 (contour NSD).

    Original square: matched = both horizontal edges (2(k-1) x 1), the two right corners (2 x sqrt(2)/2), and the
    4 right-edge vertices within 2 px of the shifted square's horizontal edges; the left edge is 3 px away.
    """
    k = 20
    a = np.zeros((30, 40), bool)
    a[5 : 5 + k, 5 : 5 + k] = True
    b = np.roll(a, 3, axis=1)
    expected = (2 * k + 2 + math.sqrt(2)) / (4 * k - 4 + 2 * math.sqrt(2))
    assert M.normalized_surface_dice(b, a, None, 2.0) == pytest.approx(expected, rel=1e-12)
    assert M.normalized_surface_dice(np.roll(a, 2, axis=1), a) == 1.0
    assert M.dice(a, b) == pytest.approx((k - 3) / k)


def test_2d_disc_shift():
    a = _ball(15, (50, 50), (25, 25))
    vals = [M.normalized_surface_dice(np.roll(a, d, axis=0), a) for d in range(0, 7)]
    assert vals[:3] == [1.0, 1.0, 1.0]
    assert all(x > y for x, y in zip(vals[2:], vals[3:]))


# ---------------------------------------------------------------------------------------------------------------
# NSD: brute force on random shapes
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("nd", [2, 3])
def test_nsd_matches_brute_force_on_random_shapes(nd):
    """The brute force shares no code with the implementation (surfels by definition, skimage / hand tables,
    all-pairs distances). Both compute the same finite sum, so they agree to rounding (1e-12); tolerances are
    picked off the lattice of exact distances so that no surfel sits at distance == tau.
    """
    rng = np.random.default_rng(RNG_SEED + nd)
    for trial in range(8):
        shape = tuple(rng.integers(4, 13 if nd == 3 else 30, nd))
        p = _blob(rng, shape, sigma=1.0)
        g = _blob(rng, shape, sigma=1.0) if trial % 3 else np.roll(p, 1, axis=trial % nd)
        sp = tuple(rng.uniform(0.5, 2.5, nd))
        tol = float(rng.uniform(0.7, 3.3))
        ours = M.normalized_surface_dice(p, g, sp, tol)
        ref = _brute_force_nsd(p, g, sp, tol)
        assert ours == pytest.approx(ref, abs=1e-12), (trial, shape, sp, tol)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), nd=st.sampled_from([2, 3]))
def test_nsd_properties(seed, nd):
    rng = np.random.default_rng(seed)
    shape = tuple(rng.integers(3, 9, nd))
    p = rng.random(shape) < 0.4
    g = rng.random(shape) < 0.4
    sp = tuple(rng.uniform(0.5, 2.0, nd))
    tol = float(rng.uniform(0.3, 2.7))
    v = M.normalized_surface_dice(p, g, sp, tol)
    if not (p.any() or g.any()):
        assert math.isnan(v)
        return
    assert 0.0 <= v <= 1.0
    assert v == pytest.approx(M.normalized_surface_dice(g, p, sp, tol), abs=1e-12)  # symmetric
    assert v == pytest.approx(_brute_force_nsd(p, g, sp, tol), abs=1e-12)


def test_crop_is_exact_for_masks_touching_the_border():
    """Masks touching the array border: the result equals the one on a zero-padded copy (outside = background)."""
    rng = np.random.default_rng(RNG_SEED)
    p = _blob(rng, (10, 12, 9))
    g = np.roll(p, 1, axis=2)
    sp = (1.2, 0.9, 2.0)
    padded = M.normalized_surface_dice(np.pad(p, 3), np.pad(g, 3), sp, 2.0)
    assert M.normalized_surface_dice(p, g, sp, 2.0) == padded


# ---------------------------------------------------------------------------------------------------------------
# perturbations: the numbers move as predicted
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("nd", [2, 3])
def test_erosion_by_one_pixel(nd):
    """Eroding by one pixel: DSC = 2|E| / (|A| + |E|) exactly; every eroded surfel is within sqrt(nd) <= 2 of the
    original surface (and vice versa), so NSD at tau = 2 stays 1 (and drops below 1 at tau = 0.5)."""
    a = _ball(10, (26,) * nd, (13,) * nd)
    e = ndimage.binary_erosion(a)
    assert M.dice(e, a) == pytest.approx(2 * e.sum() / (a.sum() + e.sum()), abs=1e-15)
    assert M.normalized_surface_dice(e, a, None, 2.0) == 1.0
    assert M.normalized_surface_dice(e, a, None, 0.5) < 1.0
    sc = M.compute_dsc_nsd(e.astype(np.uint8), a.astype(np.uint8), nsd_2d="contour")
    assert sc.dsc[1] == pytest.approx(2 * e.sum() / (a.sum() + e.sum()))
    assert sc.nsd[1] == 1.0


def test_removing_voxels_far_from_tolerance_lowers_nsd_by_their_share():
    """Cut a slab off one face of a box, deeper than tau: DSC drops as counted, NSD drops below 1."""
    a = np.zeros((30, 30), bool)
    a[5:25, 5:25] = True
    cut = a.copy()
    cut[5:9, 5:25] = False  # 4 px off the top edge
    assert M.dice(cut, a) == pytest.approx(2 * 16 * 20 / (400 + 320))
    shallow = a.copy()
    shallow[5:7, 5:25] = False  # 2 px: still within tau
    assert M.normalized_surface_dice(shallow, a, None, 2.0) == 1.0
    assert M.normalized_surface_dice(cut, a, None, 2.0) < 1.0


# ---------------------------------------------------------------------------------------------------------------
# challenge aggregation
# ---------------------------------------------------------------------------------------------------------------


def _labels_2d():
    gt = np.zeros((40, 40), np.uint8)
    gt[2:12, 2:12] = 1
    gt[20:30, 2:12] = 2
    gt[5:15, 20:35] = 3
    return gt


def test_label_aggregation():
    gt = _labels_2d()
    seg = gt.copy()
    seg[seg == 2] = 0  # label 2 missed
    seg[35:38, 35:38] = 7  # a label above max(gt): ignored
    sc = M.compute_dsc_nsd(seg, gt, nsd_2d="contour")
    assert dict(sc.dsc) == {1: 1.0, 2: 0.0, 3: 1.0}
    assert dict(sc.nsd) == {1: 1.0, 2: 0.0, 3: 1.0}
    assert sc.mean_dsc == pytest.approx(2 / 3) and sc.mean_nsd == pytest.approx(2 / 3)
    assert not sc.nsd_gated


def test_label_absent_from_both_is_nan_and_left_out_of_the_mean():
    gt = _labels_2d()
    gt[gt == 2] = 0  # labels 1 and 3 remain, max(gt) = 3
    sc = M.compute_dsc_nsd(gt.copy(), gt)
    assert math.isnan(sc.dsc[2]) and math.isnan(sc.nsd[2])
    assert sc.mean_dsc == 1.0 and sc.mean_nsd == 1.0
    seg = gt.copy()
    seg[20:30, 2:12] = 2  # now label 2 is only in seg: a false positive, scored 0
    sc = M.compute_dsc_nsd(seg, gt)
    assert sc.dsc[2] == 0.0 and sc.nsd[2] == 0.0
    assert sc.mean_dsc == pytest.approx(2 / 3)


def test_gt_without_foreground():
    sc = M.compute_dsc_nsd(np.ones((5, 5), np.uint8), np.zeros((5, 5), np.uint8))
    assert math.isnan(sc.mean_dsc) and math.isnan(sc.mean_nsd) and dict(sc.dsc) == {}


def test_nsd_is_zero_when_mean_dsc_is_at_most_0_2():
    gt = np.zeros((30, 30), np.uint8)
    gt[5:15, 5:15] = 1  # 100 px
    seg = np.roll(gt, 8, axis=1)  # overlap 10 x 2 = 20 px -> DSC = 40 / 200 = 0.2
    sc = M.compute_dsc_nsd(seg, gt)
    assert sc.mean_dsc == pytest.approx(0.2)
    assert sc.nsd_gated and sc.nsd[1] == 0.0 and sc.mean_nsd == 0.0
    seg = np.roll(gt, 7, axis=1)  # overlap 30 px -> DSC 0.3: NSD is computed
    sc = M.compute_dsc_nsd(seg, gt)
    assert sc.mean_dsc == pytest.approx(0.3) and not sc.nsd_gated and sc.mean_nsd > 0


def test_dsc_gate_uses_the_case_mean_not_each_label():
    gt = _labels_2d()
    seg = gt.copy()
    seg[seg == 3] = 0
    seg[5:15, 34:38] = 3  # label 3 barely overlaps: its DSC < 0.2, but the case mean is high
    sc = M.compute_dsc_nsd(seg, gt)
    assert sc.dsc[3] < 0.2 and sc.mean_dsc > 0.2
    assert not sc.nsd_gated and sc.nsd[3] > 0.0


def test_2d_challenge_mode_is_the_one_slice_volume_and_differs_from_contour():
    gt = _ball(12, (40, 40), (20, 20)).astype(np.uint8)
    seg = np.roll(gt, 4, axis=1)
    ch = M.compute_dsc_nsd(seg, gt)
    co = M.compute_dsc_nsd(seg, gt, nsd_2d="contour")
    assert ch.nsd_2d == "challenge" and co.nsd_2d == "contour"
    assert ch.nsd[1] == M.normalized_surface_dice(seg[..., None], gt[..., None], (1, 1, 1), 2.0)
    assert co.nsd[1] == M.normalized_surface_dice(seg, gt, (1, 1), 2.0)
    # In the one-slice volume the flat faces dominate and are mostly within tau: a much higher number.
    assert ch.nsd[1] > co.nsd[1] + 0.2
    assert M.compute_dsc_nsd(seg[None], gt[None], (1, 1, 1)).nsd_2d is None


def test_case_scores_are_read_only():
    sc = M.compute_dsc_nsd(_labels_2d(), _labels_2d())
    with pytest.raises(dataclasses.FrozenInstanceError):
        sc.mean_dsc = 0.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        sc.dsc[1] = 0.0  # type: ignore[index]


# ---------------------------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------------------------


def test_errors_say_what_was_wrong():
    a = np.zeros((4, 5), np.uint8)
    with pytest.raises(InvalidImageError, match="same shape"):
        M.compute_dsc_nsd(a, np.zeros((5, 4), np.uint8))
    with pytest.raises(InvalidImageError, match=r"\(sy, sx\)"):
        M.normalized_surface_dice(a, a, (1, 1, 1))
    with pytest.raises(InvalidImageError, match="> 0"):
        M.normalized_surface_dice(a, a, (1, -1))
    with pytest.raises(InvalidImageError, match="integer labels"):
        M.compute_dsc_nsd(a.astype(np.float32), a)
    with pytest.raises(InvalidImageError, match="2D"):
        M.normalized_surface_dice(np.zeros((2, 2, 2, 2)), np.zeros((2, 2, 2, 2)))
    with pytest.raises(ConfigurationError, match="tolerance"):
        M.normalized_surface_dice(a, a, None, -1)
    with pytest.raises(ConfigurationError, match="nsd_2d"):
        M.compute_dsc_nsd(a, a, nsd_2d="slab")
    with pytest.raises(InvalidImageError, match="NaN"):
        M.normalized_surface_dice(np.full((3, 3), np.nan), a[:3, :3])
    for exc_type in (InvalidImageError, ConfigurationError):
        assert issubclass(exc_type, MedsamEdgeError) and issubclass(exc_type, ValueError)


# ---------------------------------------------------------------------------------------------------------------
# speed (a scaled-down challenge case; the full 200 x 512 x 512 one is timed in the report, about 1-8 s)
# ---------------------------------------------------------------------------------------------------------------


def test_speed_on_a_multi_label_volume():
    shape = (100, 256, 256)
    gt = np.zeros(shape, np.uint8)
    for lab, (c, r) in enumerate(
        [((50, 128, 100), 40), ((40, 150, 180), 25), ((60, 90, 150), 15), ((30, 180, 70), 12), ((75, 130, 130), 10)],
        1,
    ):
        gt[_ball(r, shape, c)] = lab
    seg = np.roll(gt, (1, 2, -1), axis=(0, 1, 2))
    t0 = time.perf_counter()
    sc = M.compute_dsc_nsd(seg, gt, (2.5, 0.8, 0.8))
    elapsed = time.perf_counter() - t0
    assert 0.5 < sc.mean_nsd < 1.0 and 0.8 < sc.mean_dsc < 1.0
    assert elapsed < 30.0, f"5-label 100x256x256 case took {elapsed:.1f} s"
