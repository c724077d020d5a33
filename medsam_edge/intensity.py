"""Intensity presets: turn CT Hounsfield units or MR/other intensities into the uint8 images LiteMedSAM expects.

This is the preparation users do *before* the model (it is not part of the reference inference). Two rules,
both from the challenge's data preparation (bowang-lab/MedSAM, ``pre_CT_MR.py``):

* CT: clip to a window, then scale to 0..255 (:func:`window_ct`).
* MR and everything else: clip to the 0.5 / 99.5 percentiles of the non-zero voxels, scale to 0..255, and keep
  zero voxels at zero (:func:`percentile_normalize`).

Windows are given as ``(width, level)`` -- width first, then level (also called centre), both in Hounsfield
units. The clipping range is ``[level - width / 2, level + width / 2]``.

Every function accepts any shape ((y, x), (y, x, c), (z, y, x), ...) and returns a new uint8 array of the same
shape (except :func:`to_uint8`, which hands a uint8 input back as is); the input is never modified.

Default behaviour versus ``match_upstream=True``
------------------------------------------------
By default the scaling uses the window (or percentile) bounds and rounds to the nearest integer, halves up:
``floor((clip(v) - low) * 255 / (high - low) + 0.5)``, so a CT voxel's grey level depends on its HU value only,
never on the rest of the volume.

``pre_CT_MR.py`` differs in three details, reproduced exactly by ``match_upstream=True`` (bit for bit: same
operation order; float32 input computed in float32 as the challenge's NumPy 1.x did, integer input in float64):

1. it scales by the minimum and maximum of the *clipped array* rather than by the window bounds, so a CT that
   does not reach both window ends is stretched (in practice CT almost always contains air and bone, so both
   ends are reached and the two agree apart from rounding);
2. it truncates (``np.uint8(float)``) instead of rounding, so its values are on average half a grey level lower;
3. for percentiles it selects voxels ``> 0`` (not ``!= 0``), which only matters for images with negative values.

Upstream divides by zero on constant input; here a constant input never raises (see each function).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping, Sequence, Union

import numpy as np

from .errors import ConfigurationError, InvalidImageError

__all__ = ["CT_WINDOWS", "DEFAULT_CT_WINDOW", "window_ct", "percentile_normalize", "to_uint8", "slice_converter"]

#: CT window presets as ``(width, level)`` in Hounsfield units (width first). Read-only mapping.
CT_WINDOWS: Mapping[str, tuple[float, float]] = MappingProxyType(
    {
        "abdomen": (400.0, 40.0),
        "lung": (1500.0, -600.0),
        "brain": (80.0, 40.0),
        "mediastinum": (350.0, 50.0),
    }
)

#: Preset used for CT when no window is given (the challenge's default: width 400, level 40).
DEFAULT_CT_WINDOW = "abdomen"

Window = Union[str, Sequence[float]]

# Elements processed per step; float64 temporaries stay at a few MB whatever the volume size.
_CHUNK = 1 << 20


def _numeric_input(array: object, what: str) -> np.ndarray:
    """Return ``array`` as a real-valued ndarray (bool becomes uint8); refuse other kinds and non-finite values."""
    arr = np.asarray(array)
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8)
    if arr.dtype.kind not in "iuf":
        raise InvalidImageError(f"{what}: expected a real-valued numeric array, got dtype {arr.dtype}")
    if arr.size == 0:
        raise InvalidImageError(f"{what}: the array is empty (shape {arr.shape}); expected at least one value")
    if arr.dtype.kind == "f" and not _all_finite(arr):
        raise InvalidImageError(f"{what}: the array holds NaN or infinite values; expected finite values only")
    return arr


def _all_finite(arr: np.ndarray) -> bool:
    """``np.isfinite(arr).all()`` in chunks (no boolean array the size of a volume)."""
    flat = arr.reshape(-1) if arr.flags.c_contiguous else None
    if flat is None:
        return all(np.isfinite(arr[i]).all() for i in range(arr.shape[0])) if arr.ndim > 1 else bool(np.isfinite(arr).all())
    return all(np.isfinite(flat[i:i + _CHUNK]).all() for i in range(0, flat.size, _CHUNK))


def resolve_window(window: Window) -> tuple[float, float]:
    """Return a CT window as ``(width, level)`` floats from a preset name or a ``(width, level)`` pair.

    Preset names are case-insensitive keys of :data:`CT_WINDOWS`. Raises :class:`ConfigurationError` for an
    unknown name, a pair of the wrong length, a non-finite value or a width that is not positive.
    """
    if isinstance(window, str):
        key = window.strip().lower()
        if key not in CT_WINDOWS:
            raise ConfigurationError(
                f"unknown CT window preset {window!r}; expected one of {sorted(CT_WINDOWS)} or a (width, level) pair"
            )
        return CT_WINDOWS[key]
    try:
        values = [float(v) for v in window]  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ConfigurationError(
            f"CT window {window!r} is neither a preset name nor a (width, level) pair of numbers"
        ) from None
    if len(values) != 2:
        raise ConfigurationError(f"CT window must be a (width, level) pair, got {len(values)} values: {window!r}")
    width, level = values
    if not (np.isfinite(width) and np.isfinite(level)) or width <= 0:
        raise ConfigurationError(
            f"CT window (width={width}, level={level}) is invalid; expected a finite width > 0 and a finite level"
        )
    return width, level


def _scale_rounded(src: np.ndarray, low: float, high: float, out: np.ndarray) -> None:
    """``out = floor((clip(src, low, high) - low) * 255 / (high - low) + 0.5)`` in float64, chunk by chunk."""
    flat_in = src.reshape(-1)
    flat_out = out.reshape(-1)
    span = high - low
    for start in range(0, flat_in.size, _CHUNK):
        chunk = np.clip(flat_in[start : start + _CHUNK].astype(np.float64), low, high)
        chunk -= low
        chunk *= 255.0
        chunk /= span
        chunk += 0.5
        np.floor(chunk, out=chunk)
        flat_out[start : start + _CHUNK] = chunk


def _upstream_dtype(src: np.ndarray) -> type:
    """Float type upstream's NumPy computed in: the input's own float type, float64 for integers."""
    return src.dtype.type if src.dtype.kind == "f" else np.float64


def _scale_upstream(src: np.ndarray, low: float, high: float, out: np.ndarray) -> None:
    """What ``pre_CT_MR.py`` does: clip, min-max of the clipped array, ``/ range * 255``, truncate to uint8.

    The arithmetic runs in the float type upstream's NumPy used (float32 stays float32, integers go to float64),
    in the same order, so results match bit for bit. A constant clipped array (upstream: 0 / 0 = NaN) gives zeros.
    """
    ftype = _upstream_dtype(src)
    low_f, high_f = ftype(low), ftype(high)
    # clip is monotonic, so min/max of the clipped array are the clipped min/max of the input.
    cmin = np.clip(ftype(src.min()), low_f, high_f)
    cmax = np.clip(ftype(src.max()), low_f, high_f)
    span = ftype(cmax - cmin)
    if not span > 0:
        out[...] = 0
        return
    flat_in = src.reshape(-1)
    flat_out = out.reshape(-1)
    for start in range(0, flat_in.size, _CHUNK):
        chunk = np.clip(flat_in[start : start + _CHUNK].astype(ftype), low_f, high_f)
        chunk -= cmin
        chunk /= span
        chunk *= ftype(255.0)
        flat_out[start : start + _CHUNK] = chunk  # float -> uint8 assignment truncates, like np.uint8(...)


def window_ct(array: object, window: Window = DEFAULT_CT_WINDOW, *, match_upstream: bool = False) -> np.ndarray:
    """Window a CT image or volume (Hounsfield units) to uint8.

    Args:
        array: CT values in HU, any shape ((y, x) or (z, y, x) usually), integer or float dtype, finite.
        window: a preset name from :data:`CT_WINDOWS` (case-insensitive) or a ``(width, level)`` pair in HU --
            width first. Default ``"abdomen"`` = (400, 40).
        match_upstream: reproduce ``pre_CT_MR.py`` exactly (min-max of the clipped array, truncation); see the
            module docstring.

    Returns:
        uint8 array of the input's shape. Default mode: values <= ``level - width/2`` become 0, values >=
        ``level + width/2`` become 255, in between ``floor((v - low) * 255 / width + 0.5)`` (round half up).
        With ``match_upstream=True`` an input constant after clipping gives all zeros.

    Raises:
        ConfigurationError: unknown preset or invalid (width, level).
        InvalidImageError: non-numeric, empty or non-finite input.
    """
    width, level = resolve_window(window)
    arr = _numeric_input(array, "window_ct")
    low, high = level - width / 2.0, level + width / 2.0
    out = np.empty(arr.shape, dtype=np.uint8)
    if match_upstream:
        _scale_upstream(arr, low, high, out)
    else:
        _scale_rounded(arr, low, high, out)
    return out


def percentile_normalize(
    array: object, lower: float = 0.5, upper: float = 99.5, *, match_upstream: bool = False
) -> np.ndarray:
    """Clip to percentiles of the non-zero voxels and scale to uint8; zero voxels stay zero (MR, PET, US, ...).

    Args:
        array: intensities, any shape, integer or float dtype, finite.
        lower, upper: percentiles in [0, 100], ``lower < upper``; computed with NumPy's default (linear)
            interpolation over the voxels that are ``!= 0`` (``> 0`` with ``match_upstream=True``).
        match_upstream: reproduce ``pre_CT_MR.py`` exactly (``> 0`` selection, truncation); see the module
            docstring.

    Returns:
        uint8 array of the input's shape. Voxels equal to 0 in the input are 0. Other voxels:
        ``floor((clip(v, p_low, p_high) - p_low) * 255 / (p_high - p_low) + 0.5)``, so voxels at or below the
        lower percentile also become 0, like upstream.

        Degenerate inputs never divide by zero:
        * no selected voxel (all zero; or, upstream mode, nothing > 0): all zeros;
        * ``p_high == p_low`` (one non-zero value, e.g. a binary mask): every non-zero voxel becomes 255.

    Raises:
        ConfigurationError: percentiles out of range or not increasing.
        InvalidImageError: non-numeric, empty or non-finite input.
    """
    lo_q, hi_q = float(lower), float(upper)
    if not (0.0 <= lo_q < hi_q <= 100.0):
        raise ConfigurationError(
            f"percentiles (lower={lower}, upper={upper}) are invalid; expected 0 <= lower < upper <= 100"
        )
    arr = _numeric_input(array, "percentile_normalize")
    return _apply_percentiles(arr, _percentile_bounds(arr, lo_q, hi_q, match_upstream), match_upstream)


def _percentile_bounds(arr: np.ndarray, lo_q: float, hi_q: float, match_upstream: bool) -> tuple[float, float] | None:
    """(p_low, p_high) of the selected voxels (``!= 0``, or ``> 0`` upstream), None when none is selected.

    Gathers the selected values slice by slice into one array (no whole-volume boolean mask or second copy) and lets
    ``np.percentile`` partition it in place: the same numbers as ``np.percentile(arr[arr != 0], ...)``.
    """
    parts = arr.reshape(-1, arr.shape[-1]) if arr.ndim >= 2 else arr.reshape(1, -1)
    step = max(1, _CHUNK // max(1, parts.shape[1]))

    def pick(block: np.ndarray) -> np.ndarray:
        return block > 0 if match_upstream else block != 0

    total = sum(int(np.count_nonzero(pick(parts[i:i + step]))) for i in range(0, parts.shape[0], step))
    if total == 0:
        return None
    selected = np.empty(total, dtype=arr.dtype)
    pos = 0
    for i in range(0, parts.shape[0], step):
        block = parts[i:i + step]
        values = block[pick(block)]
        selected[pos:pos + values.size] = values
        pos += values.size
    p_low, p_high = (float(v) for v in np.percentile(selected, [lo_q, hi_q], overwrite_input=True))
    return p_low, p_high


def _apply_percentiles(arr: np.ndarray, bounds: tuple[float, float] | None, match_upstream: bool) -> np.ndarray:
    """Scale ``arr`` to uint8 with percentile bounds from :func:`_percentile_bounds`; zero voxels stay zero."""
    out = np.zeros(arr.shape, dtype=np.uint8)
    if bounds is None:
        return out
    p_low, p_high = bounds
    background = arr == 0
    if p_high <= p_low:
        out[~background] = 255
        return out
    if match_upstream:
        _scale_upstream(arr, p_low, p_high, out)
    else:
        _scale_rounded(arr, p_low, p_high, out)
    out[background] = 0
    return out


def choose_window(modality: str | None = None, window: Window | None = None) -> Window | None:
    """The one intensity rule for data that is not uint8 (used by the library and the CLI alike).

    ``window`` given (preset name or ``(width, level)``): that CT window. Else ``modality`` ``"CT"``
    (case-insensitive, e.g. the DICOM Modality tag): the default ``"abdomen"`` window (400, 40). Else ``None``: the
    0.5-99.5 percentile rule of non-zero voxels (MR, PET, ultrasound, unknown).
    """
    if modality is not None and not isinstance(modality, str):
        raise ConfigurationError(f"modality must be a string such as 'CT' or 'MR' (or None), got {modality!r}")
    if window is not None:
        return window
    if modality is not None and modality.strip().upper() == "CT":
        return DEFAULT_CT_WINDOW
    return None


def image_2d(image: object, modality: str | None = None, window: Window | None = None) -> np.ndarray:
    """The 2D image the segmenter gets from a file or a viewer layer (the CLI, the cohort and napari alike).

    uint8 stays as it is; other dtypes are CT-windowed to uint8 when a ``window`` is given or the modality is CT
    (:func:`choose_window`), and otherwise passed on unchanged (the segmenter's preprocessing min-max normalises).
    """
    arr = np.asarray(image)
    if arr.dtype != np.uint8 and choose_window(modality, window) is not None:
        return to_uint8(arr, modality, window)
    return arr


def slice_converter(volume: object, window: Window | None = None, modality: str | None = None):
    """``f(z) -> uint8 slice`` equal to ``to_uint8(volume, modality, window)[z]`` (the rule of
    :func:`choose_window`: a CT window, or the percentile rule), without converting the whole volume.

    The percentile bounds need every voxel, so they are computed once here (memory: the non-zero values, at the
    volume's own dtype); each slice is then scaled on its own, which gives the same bytes as converting the volume at
    once (the rules are voxel-wise once the bounds are known). 3D arrays only.
    """
    arr = _numeric_input(volume, "volume")
    if arr.ndim != 3:
        raise InvalidImageError(f"volume must be (z, y, x), got shape {arr.shape}")
    window = choose_window(modality, window)
    if window is not None:
        resolve_window(window)  # fail now, not on the first slice
        return lambda z: window_ct(arr[z], window)
    bounds = _percentile_bounds(arr, 0.5, 99.5, False)
    return lambda z: _apply_percentiles(arr[z], bounds, False)


def to_uint8(
    array: object,
    modality: str | None = None,
    window: Window | None = None,
    *,
    match_upstream: bool = False,
) -> np.ndarray:
    """Bring any image or volume to uint8 with the rule that fits its modality.

    Rules, in order (2-4 are :func:`choose_window`):
    1. a uint8 array is returned unchanged (the same object; no copy), whatever ``modality``/``window`` say;
    2. ``window`` given (preset name or ``(width, level)``): CT windowing with it;
    3. ``modality`` ``"CT"`` (case-insensitive, e.g. the DICOM Modality tag): CT windowing with the default
       ``"abdomen"`` window (400, 40);
    4. anything else (``None``, ``"MR"``, ``"PT"``, ``"US"``, ...): :func:`percentile_normalize` with 0.5 / 99.5.

    Shapes are kept ((y, x), (y, x, c), (z, y, x), ...). ``match_upstream`` is passed on to the chosen function.
    """
    window = choose_window(modality, window)
    if isinstance(array, np.ndarray) and array.dtype == np.uint8:
        return array
    arr = np.asarray(array)
    if arr.dtype == np.uint8:
        return arr
    if window is not None:
        return window_ct(arr, window, match_upstream=match_upstream)
    return percentile_normalize(arr, match_upstream=match_upstream)
