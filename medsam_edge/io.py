"""Read medical images and volumes with their geometry; write label maps atomically with the geometry kept.

Axis orders (said once here, and again wherever geometry appears):

* arrays are NumPy order: ``(z, y, x)`` for volumes, ``(y, x)`` or ``(y, x, c)`` for 2D images;
* ITK geometry (:class:`Geometry` ``spacing`` / ``origin``) is ``(x, y, z)`` (``(x, y)`` in 2D), in millimetres;
  ``direction`` is the row-major ITK direction matrix whose *columns* are the x, y, z axes in patient (LPS) space.
  :attr:`Geometry.spacing_zyx` / :attr:`Geometry.origin_zyx` give the reversed, array-order tuples.

Formats read by :func:`read_image` (dispatch on the suffix, case-insensitive):

============================  ===========================  ======================================================
suffix                        reader                       result
============================  ===========================  ======================================================
``.nii`` ``.nii.gz``          SimpleITK NiftiImageIO       2D or 3D, geometry; truncation checked by us (ITK does
                                                           not notice a short NIfTI file and fills in garbage)
``.nrrd`` ``.nhdr``           SimpleITK NrrdImageIO        2D or 3D, geometry
``.mha`` ``.mhd``             SimpleITK MetaImageIO        2D or 3D, geometry
``.dcm`` ``.dicom`` or no     SimpleITK GDCMImageIO        one DICOM file; a single frame is 2D, several are 3D.
known suffix + "DICM" magic                                Files without a suffix are read as DICOM when they
                                                           carry the "DICM" preamble.
a folder                      ImageSeriesReader +          DICOM series (3D, or 2D when it has one single-frame
                              GetGDCMSeriesIDs/FileNames   file); see "DICOM folders" below
``.png`` ``.jpg`` ``.jpeg``   OpenCV ``IMREAD_UNCHANGED``  2D, no geometry; BGR(A) -> RGB, alpha dropped, 16-bit
``.tif`` ``.tiff``                                         and float kept; EXIF orientation is *not* applied;
                                                           a multi-page TIFF gives its first page and a warning
``.npz``                      challenge file (see below)   ``imgs`` (+ ``boxes``, ``spacing``); no geometry
============================  ===========================  ======================================================

``kind`` follows the file: NIfTI/NRRD/MetaImage keep their ITK dimension (a 3D file with one slice stays ``"3d"``),
while a DICOM image with a single frame is ``"2d"`` (its :class:`Geometry` stays 3D and places that slice).

DICOM folders: all DICOM series directly inside the folder are listed (not recursively). When there are several,
the one with the most files is read (ties: the series instance UID that sorts first as text); a
:class:`UserWarning` is issued and the choice is recorded in :attr:`LoadedImage.notes`. The chosen series is
checked before it is stacked: all slices must share one orientation and be evenly spaced along the slice normal
(1 % tolerance); otherwise a slice is missing, duplicated (several echoes/phases in one series) or the series
mixes acquisitions, and ITK would silently stack it with a wrong spacing. A file with the DICOM preamble that GDCM cannot parse (e.g. truncated)
makes the folder unreadable rather than silently dropping a slice.

Challenge ``.npz`` files are opened with ``np.load(..., allow_pickle=False)`` and inspected first: object arrays are
refused (never unpickled), and each member's ``.npy`` header is read to compare the bytes its shape declares with
the member's real (uncompressed) size before anything is allocated, so a few-byte file claiming a 10 GB array is
refused at once; a member claiming more than DEFLATE can expand, or more than ``max_npz_bytes`` (default 4 GiB),
is refused too. ``imgs`` is required; ``boxes`` and ``spacing`` are optional. ``spacing`` is returned exactly as
stored: the challenge's own files hold it in ITK ``(x, y, z)`` order next to ``(z, y, x)`` arrays (MedSAM issue
401), which is why :func:`read_image` does not turn it into a :class:`Geometry`.

Writing (:func:`write_labels`, :func:`write_npz_segs`): label maps are uint16 (PNG: 8-bit when every label is
below 256, so ordinary viewers show it; TIFF: always 16-bit), written atomically (temporary file
in the same folder with the right suffix, fsync, ``os.replace``, folder fsync) so a reader sees either the old
file or the complete new one; on any error the temporary file is removed and an existing file is left untouched.
Geometry comes from the reference (``CopyInformation``-equivalent); label maps are never resampled -- a shape
that differs from the reference is an error.

Errors: every read failure raises :class:`~medsam_edge.errors.UnreadableFileError` naming the path and what was
expected. Write failures: :class:`~medsam_edge.errors.ConfigurationError` (unsupported suffix, ``extra`` not
allowed), :class:`~medsam_edge.errors.InvalidImageError` (labels of a wrong dtype/shape/range or not matching the
reference), and ``OSError`` for the file system (missing folder, permissions, disk full, SimpleITK write error).
"""

from __future__ import annotations

import errno
import math
import os
import stat
import struct
import sys
import tempfile
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping, Sequence, Union

import numpy as np
import numpy.lib.format as npy_format

from .errors import ConfigurationError, InvalidImageError, UnreadableFileError, UnwritableFileError

__all__ = [
    "Geometry",
    "LoadedImage",
    "read_image",
    "write_labels",
    "write_npz_segs",
    "READ_SUFFIXES",
    "WRITE_SUFFIXES",
    "DEFAULT_MAX_NPZ_BYTES",
]

PathLike = Union[str, "os.PathLike[str]"]


class _LazyModule:
    """A module imported on first attribute access."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str):
        import importlib

        return getattr(importlib.import_module(self._name), attr)


#: OpenCV reads and writes PNG / JPEG / TIFF only; a caller who passes arrays does not import it (15 MB RSS)
cv2 = _LazyModule("cv2")


#: SimpleITK: ~105 MB of RSS once imported (AMD EPYC, the PyPI wheel; benchmarks/results/memory_lazy_sitk.json), which a
#: caller who passes arrays never needs
sitk = _LazyModule("SimpleITK")


def _is_sitk_image(obj) -> bool:
    """Is ``obj`` a SimpleITK image (without importing SimpleITK: nobody made one if it is not imported)."""
    module = sys.modules.get("SimpleITK")
    return module is not None and isinstance(obj, module.Image)

#: Suffix -> format name understood by :func:`read_image` (a folder means a DICOM series). Read-only.
READ_SUFFIXES: Mapping[str, str] = MappingProxyType(
    {
        ".nii": "nifti",
        ".nii.gz": "nifti",
        ".nrrd": "nrrd",
        ".nhdr": "nrrd",
        ".mha": "metaimage",
        ".mhd": "metaimage",
        ".dcm": "dicom",
        ".dicom": "dicom",
        ".png": "png",
        ".jpg": "jpeg",
        ".jpeg": "jpeg",
        ".tif": "tiff",
        ".tiff": "tiff",
        ".npz": "npz",
    }
)

#: Suffix -> format name understood by :func:`write_labels`. Read-only.
WRITE_SUFFIXES: Mapping[str, str] = MappingProxyType(
    {
        ".nii": "nifti",
        ".nii.gz": "nifti",
        ".nrrd": "nrrd",
        ".mha": "metaimage",
        ".png": "png",
        ".tif": "tiff",
        ".tiff": "tiff",
        ".npz": "npz",
    }
)

#: Largest array (bytes) one ``.npz`` member may declare; larger ones are refused before any allocation.
DEFAULT_MAX_NPZ_BYTES = 4 << 30

_LABELS = {
    "nifti": "NIfTI (.nii/.nii.gz)",
    "nrrd": "NRRD (.nrrd/.nhdr)",
    "metaimage": "MetaImage (.mha/.mhd)",
    "dicom": "DICOM",
    "dicom-series": "folder holding a DICOM series",
    "png": "PNG",
    "jpeg": "JPEG",
    "tiff": "TIFF",
    "npz": "challenge .npz (keys imgs, boxes, spacing)",
}
_SITK_IO = {"nifti": "NiftiImageIO", "nrrd": "NrrdImageIO", "metaimage": "MetaImageIO", "dicom": "GDCMImageIO"}
_DEFLATE_MAX_RATIO = 1032  # the best ratio DEFLATE can reach; a larger claimed ratio is a lie.


# --------------------------------------------------------------------------------------------------- geometry
@dataclass(frozen=True)
class Geometry:
    """Physical placement of an image, in ITK conventions (the order of ``array.shape`` reversed).

    Attributes:
        spacing: voxel size in mm, ITK order ``(x, y, z)`` (``(x, y)`` for 2D images); all > 0.
        origin: physical position (mm, LPS) of the centre of voxel index 0, ITK order ``(x, y, z)``.
        direction: direction cosines, row-major, 9 floats for 3D (4 for 2D). Column ``j`` is the physical
            direction of ITK axis ``j`` (x, y, z), exactly as ``sitk.Image.GetDirection()``.

    A NumPy array of shape ``(z, y, x)`` paired with this geometry has ``spacing_zyx`` as its per-axis spacing.
    """

    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]

    def __post_init__(self) -> None:
        spacing = tuple(float(v) for v in self.spacing)
        origin = tuple(float(v) for v in self.origin)
        direction = tuple(float(v) for v in self.direction)
        ndim = len(spacing)
        if ndim not in (2, 3):
            raise InvalidImageError(f"Geometry: spacing must have 2 or 3 values (x, y[, z]), got {spacing}")
        if len(origin) != ndim or len(direction) != ndim * ndim:
            raise InvalidImageError(
                f"Geometry: for {ndim}D, expected {ndim} origin values (x, y[, z]) and {ndim * ndim} direction "
                f"values (row-major), got {len(origin)} and {len(direction)}"
            )
        values = spacing + origin + direction
        if not all(math.isfinite(v) for v in values):
            raise InvalidImageError(f"Geometry: all values must be finite, got spacing={spacing}, origin={origin}")
        if min(spacing) <= 0:
            raise InvalidImageError(f"Geometry: spacing (x, y[, z]) must be > 0, got {spacing}")
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "origin", origin)
        object.__setattr__(self, "direction", direction)

    @property
    def ndim(self) -> int:
        """Number of spatial dimensions (2 or 3)."""
        return len(self.spacing)

    @property
    def spacing_zyx(self) -> tuple[float, ...]:
        """Spacing in array order ``(z, y, x)`` (``(y, x)`` in 2D), mm."""
        return self.spacing[::-1]

    @property
    def origin_zyx(self) -> tuple[float, ...]:
        """Origin in array order ``(z, y, x)`` (``(y, x)`` in 2D), mm."""
        return self.origin[::-1]

    @property
    def direction_matrix(self) -> np.ndarray:
        """Direction as a ``(ndim, ndim)`` float64 matrix in ITK order; column ``j`` is ITK axis ``j`` (x, y, z)."""
        return np.asarray(self.direction, dtype=np.float64).reshape(self.ndim, self.ndim)

    @classmethod
    def from_sitk(cls, image: sitk.Image) -> "Geometry":
        """Geometry of a SimpleITK image (spacing/origin ``(x, y, z)``, direction row-major)."""
        return cls(image.GetSpacing(), image.GetOrigin(), image.GetDirection())

    def apply_to(self, image: sitk.Image) -> sitk.Image:
        """Set this spacing, origin and direction (ITK ``(x, y, z)`` order) on ``image`` in place and return it.

        Raises InvalidImageError when the image's dimension differs from :attr:`ndim`.
        """
        if image.GetDimension() != self.ndim:
            raise InvalidImageError(
                f"cannot apply a {self.ndim}D geometry to a {image.GetDimension()}D image"
            )
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image


# --------------------------------------------------------------------------------------------- loaded image
@dataclass(frozen=True, eq=False)
class LoadedImage:
    """An image or volume as read from disk, with what the file said about it.

    Attributes:
        array: pixel data. ``kind == "3d"``: ``(z, y, x)`` (``(z, y, x, c)`` for multi-component volumes such as
            colour ultrasound cines). ``kind == "2d"``: ``(y, x)`` or ``(y, x, c)`` with RGB channel order.
            dtype as stored (CT usually int16 in HU after the DICOM rescale, PNG uint8/uint16, ...).
        kind: ``"2d"`` or ``"3d"``.
        source: the path that was read, as a string.
        format: ``"nifti"``, ``"nrrd"``, ``"metaimage"``, ``"dicom"``, ``"dicom-series"``, ``"png"``, ``"jpeg"``,
            ``"tiff"`` or ``"npz"``.
        geometry: ITK geometry (spacing/origin ``(x, y, z)``); ``None`` for plain pictures and ``.npz`` files.
            For a single-frame DICOM image (``kind == "2d"``) it is the 3D geometry of that slice.
        boxes: ``.npz`` only: the ``boxes`` array as stored (``(N, 4)`` ``[x_min, y_min, x_max, y_max]`` in 2D,
            ``(N, 6)`` ``[x_min, y_min, z_min, x_max, y_max, z_max]`` in 3D), or ``None``.
        spacing: ``.npz`` only: the ``spacing`` values exactly as stored (challenge files: ITK ``(x, y, z)`` order),
            or ``None``.
        modality: DICOM Modality tag (0008,0060), e.g. ``"CT"`` or ``"MR"``; ``None`` for other formats.
        notes: human-readable remarks about choices made while reading (series picked, alpha dropped, ...).
    """

    array: np.ndarray
    kind: str
    source: str
    format: str
    geometry: Geometry | None = None
    boxes: np.ndarray | None = None
    spacing: tuple[float, ...] | None = None
    modality: str | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """Shape without the channel axis: ``(z, y, x)`` for 3D, ``(y, x)`` for 2D."""
        return tuple(self.array.shape[: 3 if self.kind == "3d" else 2])


# ------------------------------------------------------------------------------------------------- helpers
def _suffix(path: Path) -> str:
    """Lower-case suffix, with ``.nii.gz`` kept whole; ``""`` when there is none."""
    name = path.name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return os.path.splitext(name)[1]


def _supported_text() -> str:
    return (
        ", ".join(READ_SUFFIXES)
        + "; a DICOM file of any name with the 'DICM' preamble; or a folder holding a DICOM series"
    )


def _has_dicom_preamble(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _sitk_reason(exc: BaseException) -> str:
    """The last meaningful line of a (long, multi-line) SimpleITK error."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    # "Reason: <errno text>" lines repeat a stale errno (e.g. "Success") and mislead; prefer the line before.
    useful = [line for line in lines if not line.startswith(("Reason:", "Exception thrown in SimpleITK"))]
    reason = (useful or lines or [type(exc).__name__])[-1]
    return reason.replace("sitk::ERROR: ", "").replace("ITK ERROR: ", "")


def _warn(message: str) -> None:
    # stacklevel 4: _warn <- reader helper <- read_image <- caller
    warnings.warn(message, UserWarning, stacklevel=4)


# ---------------------------------------------------------------------------------------------- NIfTI check
# NIfTI datatype code -> bits per voxel.
_NIFTI_BITS = {
    2: 8, 4: 16, 8: 32, 16: 32, 32: 64, 64: 64, 128: 24, 256: 8, 512: 16, 768: 32,
    1024: 64, 1280: 64, 1536: 128, 1792: 128, 2048: 256, 2304: 32,
}


def _nifti_needed_bytes(header: bytes, path: Path) -> int:
    """Bytes a NIfTI-1/2 single file must hold (``vox_offset`` + voxel data), from its header."""
    for endian in "<>":
        if len(header) >= 4 and struct.unpack_from(endian + "i", header, 0)[0] in (348, 540):
            break
    else:
        raise UnreadableFileError(f"{path}: not a NIfTI file (header size field is neither 348 nor 540)")
    sizeof_hdr = struct.unpack_from(endian + "i", header, 0)[0]
    if len(header) < sizeof_hdr:
        raise UnreadableFileError(f"{path}: NIfTI header is truncated ({len(header)} of {sizeof_hdr} bytes)")
    if sizeof_hdr == 348:
        dims = struct.unpack_from(endian + "8h", header, 40)
        datatype, bitpix = struct.unpack_from(endian + "2h", header, 70)
        vox_offset = struct.unpack_from(endian + "f", header, 108)[0]
    else:
        datatype, bitpix = struct.unpack_from(endian + "2h", header, 12)
        dims = struct.unpack_from(endian + "8q", header, 16)
        vox_offset = struct.unpack_from(endian + "q", header, 168)[0]
    bitpix = _NIFTI_BITS.get(datatype, bitpix)  # trust the datatype code over bitpix when it is a known one
    ndim = dims[0]
    if not 1 <= ndim <= 7 or bitpix <= 0 or not math.isfinite(vox_offset) or vox_offset < 0:
        raise UnreadableFileError(f"{path}: corrupt NIfTI header (dim[0]={ndim}, bitpix={bitpix})")
    count = 1
    for d in dims[1 : ndim + 1]:
        if d < 0:
            raise UnreadableFileError(f"{path}: corrupt NIfTI header (negative dimension {d})")
        count *= max(int(d), 1)
    return max(int(vox_offset), sizeof_hdr) + (count * bitpix + 7) // 8


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def _check_nifti_complete(path: Path) -> None:
    """Raise UnreadableFileError when a NIfTI file (plain or gzip) is shorter than its header says.

    ITK reads a short NIfTI without complaint and leaves the missing voxels undefined, so this must be checked
    here. For ``.nii.gz`` the gzip stream is decompressed once in 1 MB steps (its CRC and length are checked too).
    """
    gzipped = _is_gzip(path)
    if not gzipped:
        with open(path, "rb") as fh:
            header = fh.read(540)
        needed = _nifti_needed_bytes(header, path)
        size = path.stat().st_size
        if size < needed:
            raise UnreadableFileError(
                f"{path}: NIfTI file is truncated ({size} bytes, its header needs {needed}); expected a complete file"
            )
        return
    import gzip

    chunk = bytearray(1 << 20)
    total = 0
    header = b""
    try:
        with gzip.open(path, "rb") as gz:
            while True:
                n = gz.readinto(chunk)
                if not n:
                    break
                if len(header) < 540:
                    header += bytes(chunk[: min(n, 540 - len(header))])
                total += n
    except (EOFError, OSError, zlib.error) as exc:
        raise UnreadableFileError(
            f"{path}: gzip stream is truncated or corrupt ({exc}); expected a complete .nii.gz file"
        ) from exc
    needed = _nifti_needed_bytes(header, path)
    if total < needed:
        raise UnreadableFileError(
            f"{path}: NIfTI data is truncated ({total} bytes after decompression, its header needs {needed}); "
            "expected a complete file"
        )


# ------------------------------------------------------------------------------------- NIfTI voxels, one pass
#: NIfTI datatype code -> (NumPy dtype, little-endian; the SimpleITK pixel type ITK reads it as) for the direct read
_NIFTI_DIRECT = {
    2: ("<u1", "sitkUInt8"), 4: ("<i2", "sitkInt16"), 8: ("<i4", "sitkInt32"), 16: ("<f4", "sitkFloat32"),
    64: ("<f8", "sitkFloat64"), 256: ("<i1", "sitkInt8"), 512: ("<u2", "sitkUInt16"), 768: ("<u4", "sitkUInt32"),
}
_READ_STEP = 8 << 20


def _read_nifti_direct(path: Path) -> "LoadedImage | None":
    """Read a plain 3D NIfTI-1 single file's voxels straight into the array; None: let ITK read it.

    ITK's NIfTI reader decompresses the file into a buffer of its own and copies that into the image, so
    ``sitk.ReadImage`` holds the volume twice at its peak, and the completeness check before it
    (:func:`_check_nifti_complete`) decompresses a ``.nii.gz`` once more. Here the gzip stream is decompressed
    once, into the final array, which also checks it is complete (its length and CRC at the end). ITK still decides
    the geometry: ``ReadImageInformation`` (header only) gives spacing, origin and direction, and its size, pixel
    type and component count must be exactly what the header says. Only the simple case is taken: little-endian
    NIfTI-1 ``n+1`` file, 3 dimensions, one integer / float component type, no intensity scaling (``scl_slope`` 0, 1
    or NaN and ``scl_inter`` 0 or NaN); everything else (2D, 4D, RGB, scaled, big-endian, NIfTI-2, .hdr/.img)
    goes through ITK. The voxels are the file's, in its index order, as ITK gives them.
    """
    import gzip

    gzipped = _is_gzip(path)
    opener = gzip.open if gzipped else open
    try:
        with opener(path, "rb") as fh:
            header = fh.read(348)
    except (OSError, EOFError, zlib.error):
        return None  # the checked ITK path reports it
    if len(header) < 348 or struct.unpack_from("<i", header, 0)[0] != 348 or header[344:348] != b"n+1\0":
        return None
    dims = struct.unpack_from("<8h", header, 40)
    datatype = struct.unpack_from("<h", header, 70)[0]
    vox_offset, slope, inter = struct.unpack_from("<3f", header, 108)
    if dims[0] != 3 or min(dims[1:4]) < 1 or datatype not in _NIFTI_DIRECT:
        return None
    if not (slope in (0.0, 1.0) or math.isnan(slope)) or not (inter == 0.0 or math.isnan(inter)):
        return None
    if not (math.isfinite(vox_offset) and vox_offset == int(vox_offset) and vox_offset >= 352):
        return None
    dtype, pixel = _NIFTI_DIRECT[datatype]
    reader = sitk.ImageFileReader()
    reader.SetImageIO("NiftiImageIO")
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None
    if (reader.GetDimension() != 3 or tuple(reader.GetSize()) != tuple(dims[1:4])
            or reader.GetNumberOfComponents() != 1 or reader.GetPixelID() != getattr(sitk, pixel)):
        return None
    # ITK's full read then turns a negative spacing into a flipped direction (and would replace a singular
    # direction): such headers go through it too, so that the geometry is the one sitk.ReadImage gives
    direction = np.asarray(reader.GetDirection(), dtype=np.float64).reshape(3, 3)
    if min(reader.GetSpacing()) <= 0 or not abs(np.linalg.det(direction)) > 1e-6:
        return None
    array = np.empty((dims[3], dims[2], dims[1]), dtype=np.dtype(dtype).newbyteorder("="))
    target = memoryview(array.reshape(-1).view(np.uint8))
    filled = 0
    try:
        with opener(path, "rb") as fh:
            fh.seek(int(vox_offset))
            while filled < array.nbytes:
                n = fh.readinto(target[filled: filled + _READ_STEP])
                if not n:
                    break
                filled += n
            if gzipped:
                while fh.read(_READ_STEP):  # to the end of the stream: gzip checks its CRC and length there
                    pass
    except (EOFError, OSError, zlib.error) as exc:
        raise UnreadableFileError(
            f"{path}: gzip stream is truncated or corrupt ({exc}); expected a complete .nii.gz file"
            if gzipped else f"{path}: could not be read as {_LABELS['nifti']} ({exc}); expected a complete file"
        ) from exc
    if filled < array.nbytes:
        needed = int(vox_offset) + array.nbytes
        raise UnreadableFileError(
            f"{path}: NIfTI data is truncated ({int(vox_offset) + filled} bytes"
            f"{' after decompression' if gzipped else ''}, its header needs {needed}); expected a complete file"
        )
    return LoadedImage(array=array, kind="3d", source=str(path), format="nifti", geometry=Geometry.from_sitk(reader))


# ------------------------------------------------------------------------------------------- SimpleITK read
class _ImageBuffer:
    """Owns a SimpleITK image for the NumPy array over its pixel buffer (the array's ``base``)."""

    def __init__(self, image: "sitk.Image", view: np.ndarray) -> None:
        self.image = image
        self.__array_interface__ = {"shape": view.shape, "typestr": view.dtype.str, "version": 3,
                                    "data": (view.ctypes.data, False)}


def pixels_of(image: "sitk.Image") -> np.ndarray:
    """The pixels of a SimpleITK image as a writeable ``(z, y, x[, c])`` / ``(y, x[, c])`` array, without a copy.

    ``sitk.GetArrayFromImage`` copies the buffer, so reading a volume held it twice for a moment (a 512 x 512 x 200
    int16 volume: 100 MB more at the read's peak); ``sitk.GetArrayViewFromImage`` is read-only and does not keep the
    image alive. The array returned here views the image's buffer and keeps the image alive through its ``base``.
    """
    view = sitk.GetArrayViewFromImage(image)  # makes the image's buffer its own (MakeUnique)
    if view.size == 0:
        return view.copy()
    return np.asarray(_ImageBuffer(image, view))


def _image_to_loaded(
    image: sitk.Image,
    path: Path,
    fmt: str,
    *,
    dicom: bool,
    modality: str | None = None,
    notes: Sequence[str] = (),
) -> LoadedImage:
    dim = image.GetDimension()
    if dim not in (2, 3):
        raise UnreadableFileError(f"{path} holds a {dim}D image; expected a 2D image or a 3D volume")
    array = pixels_of(image)  # (z, y, x[, c]) or (y, x[, c]), over the image's own buffer
    geometry = Geometry.from_sitk(image)
    kind = "3d" if dim == 3 else "2d"
    notes = list(notes)
    if dicom and dim == 3 and image.GetSize()[2] == 1:
        array = array[0]
        kind = "2d"
        notes.append("single-frame DICOM image read as 2D; geometry keeps the slice's 3D placement")
    return LoadedImage(
        array=array,
        kind=kind,
        source=str(path),
        format=fmt,
        geometry=geometry,
        modality=modality,
        notes=tuple(notes),
    )


def _dicom_tag(reader: Any, key: str, index: int | None = None) -> str | None:
    if index is None:
        if not reader.HasMetaDataKey(key):
            return None
        return reader.GetMetaData(key).strip() or None
    if not reader.HasMetaDataKey(index, key):
        return None
    return reader.GetMetaData(index, key).strip() or None


def _read_sitk_file(path: Path, fmt: str) -> LoadedImage:
    if fmt == "nifti":
        loaded = _read_nifti_direct(path)
        if loaded is not None:
            return loaded
        _check_nifti_complete(path)
    reader = sitk.ImageFileReader()
    reader.SetImageIO(_SITK_IO[fmt])
    reader.SetFileName(str(path))
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise UnreadableFileError(
            f"{path}: could not be read as {_LABELS[fmt]}: {_sitk_reason(exc)}; expected a complete, valid file "
            "(it may be truncated or corrupt)"
        ) from exc
    modality = _dicom_tag(reader, "0008|0060") if fmt == "dicom" else None
    return _image_to_loaded(image, path, fmt, dicom=fmt == "dicom", modality=modality)


# --------------------------------------------------------------------------------------------- DICOM series
def _parse_ds(text: str | None, count: int) -> np.ndarray | None:
    """A DICOM decimal-string multi-value (``a\\b\\c``) as floats, or None when absent or malformed."""
    if text is None:
        return None
    try:
        values = np.array([float(v) for v in text.split("\\")], dtype=np.float64)
    except ValueError:
        return None
    if values.size != count or not np.isfinite(values).all():
        return None
    return values


def _check_series_slices(folder: Path, files: Sequence[str], notes: list[str]) -> str | None:
    """Read each file's header; check one orientation and even slice spacing. Return the Modality tag."""
    reader = sitk.ImageFileReader()
    reader.SetImageIO("GDCMImageIO")
    positions: list[np.ndarray | None] = []
    orientations: list[np.ndarray | None] = []
    modality = None
    for i, name in enumerate(files):
        reader.SetFileName(name)
        try:
            reader.ReadImageInformation()
        except RuntimeError as exc:
            raise UnreadableFileError(
                f"{folder}: DICOM file {Path(name).name} of the series cannot be read ({_sitk_reason(exc)}); "
                "expected a complete series"
            ) from exc
        if i == 0:
            modality = _dicom_tag(reader, "0008|0060")
        positions.append(_parse_ds(_dicom_tag(reader, "0020|0032"), 3))
        orientations.append(_parse_ds(_dicom_tag(reader, "0020|0037"), 6))
    if len(files) < 2:
        return modality
    if any(p is None for p in positions) or any(o is None for o in orientations):
        notes.append(
            "some slices lack Image Position/Orientation (0020,0032)/(0020,0037); "
            "slice order and spacing were left to GDCM/ITK and could not be checked"
        )
        return modality
    pos = np.stack([p for p in positions if p is not None])
    ori = np.stack([o for o in orientations if o is not None])
    first = ori[0]
    deviation = np.max(np.abs(ori - first), axis=1)
    if deviation.max() > 1e-4:
        k = int(np.argmax(deviation))
        raise UnreadableFileError(
            f"{folder}: slice {Path(files[k]).name} has orientation {ori[k].tolist()} but the first slice has "
            f"{first.tolist()}; expected one orientation for the whole series"
        )
    normal = np.cross(first[:3], first[3:])
    along = pos @ normal  # slice positions along the normal, mm
    gaps = np.abs(np.diff(along))
    if gaps.min() < 1e-3:
        i = int(np.argmin(gaps))
        raise UnreadableFileError(
            f"{folder}: DICOM files {Path(files[i]).name} and {Path(files[i + 1]).name} lie at the same slice "
            "position (several echoes, phases or copies in one series?); expected one file per slice"
        )
    median = float(np.median(gaps))
    worst = float(np.max(np.abs(gaps - median)))
    if worst > max(0.01 * median, 1e-3):
        raise UnreadableFileError(
            f"{folder}: DICOM slices are not evenly spaced (gaps from {gaps.min():.4g} to {gaps.max():.4g} mm, "
            f"typical {median:.4g} mm): a slice is missing or unreadable, or the series mixes acquisitions; "
            "expected a complete, evenly spaced series"
        )
    return modality


def _read_dicom_series(folder: Path) -> LoadedImage:
    try:
        entries = [e for e in os.scandir(folder) if e.is_file() and not e.name.startswith(".")]
    except OSError as exc:
        raise UnreadableFileError(f"{folder}: cannot list the folder ({exc}); expected a readable folder") from exc
    if not entries:
        raise UnreadableFileError(
            f"{folder} is a folder without files; expected DICOM files directly inside it (subfolders are not "
            f"searched) or a file ({_supported_text()})"
        )
    series_ids = sorted(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
    if not series_ids:
        raise UnreadableFileError(
            f"{folder} is a folder without any readable DICOM series; expected DICOM files directly inside it "
            f"(subfolders are not searched) or a file ({_supported_text()})"
        )
    members = {uid: list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)) for uid in series_ids}
    listed = {os.path.normcase(os.path.abspath(f)) for files in members.values() for f in files}
    broken = sorted(
        e.name
        for e in entries
        if e.name.upper() != "DICOMDIR"
        and os.path.normcase(os.path.abspath(e.path)) not in listed
        and _has_dicom_preamble(Path(e.path))
    )
    if broken:
        shown = ", ".join(broken[:5]) + (f" and {len(broken) - 5} more" if len(broken) > 5 else "")
        raise UnreadableFileError(
            f"{folder}: file(s) {shown} look like DICOM but cannot be parsed (truncated or corrupt?); "
            "expected every DICOM file of the folder to be readable, so no slice is silently lost"
        )
    chosen = min(series_ids, key=lambda uid: (-len(members[uid]), uid))
    files = members[chosen]
    notes: list[str] = []
    if len(series_ids) > 1:
        rest = [uid for uid in series_ids if uid != chosen]
        others = ", ".join(f"{uid} ({len(members[uid])} files)" for uid in rest[:5])
        if len(rest) > 5:
            others += f" and {len(rest) - 5} more"
        message = (
            f"{folder} holds {len(series_ids)} DICOM series; read the one with the most files, {chosen} "
            f"({len(files)} files); ignored: {others}"
        )
        notes.append(message)
        _warn(message)
    else:
        notes.append(f"DICOM series {chosen} ({len(files)} files)")
    modality = _check_series_slices(folder, files, notes)
    reader = sitk.ImageSeriesReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileNames(files)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise UnreadableFileError(
            f"{folder}: DICOM series {chosen} could not be read: {_sitk_reason(exc)}; expected a complete, valid "
            "series"
        ) from exc
    return _image_to_loaded(image, folder, "dicom-series", dicom=True, modality=modality, notes=notes)


# ------------------------------------------------------------------------------------------------- pictures
def _tiff_has_more_pages(data: np.ndarray) -> bool:
    """True when a TIFF's first image directory links to another one (multi-page); False if unsure."""
    raw = data.tobytes()[:16]
    if len(raw) < 8 or raw[:2] not in (b"II", b"MM"):
        return False
    e = "<" if raw[:2] == b"II" else ">"
    magic = struct.unpack_from(e + "H", raw, 2)[0]
    buf = data  # uint8 view of the whole file
    try:
        if magic == 42:
            ifd = struct.unpack_from(e + "I", raw, 4)[0]
            count = struct.unpack_from(e + "H", buf, ifd)[0]
            nxt = struct.unpack_from(e + "I", buf, ifd + 2 + 12 * count)[0]
        elif magic == 43 and len(raw) >= 16:
            ifd = struct.unpack_from(e + "Q", raw, 8)[0]
            count = struct.unpack_from(e + "Q", buf, ifd)[0]
            nxt = struct.unpack_from(e + "Q", buf, ifd + 8 + 20 * count)[0]
        else:
            return False
    except struct.error:
        return False
    return nxt != 0


def _read_picture(path: Path, fmt: str) -> LoadedImage:
    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise UnreadableFileError(
            f"{path}: OpenCV could not decode it as {_LABELS[fmt]}; expected a complete, valid {_LABELS[fmt]} file "
            "(it may be truncated or corrupt)"
        )
    notes: list[str] = []
    if image.ndim == 3:
        channels = image.shape[2]
        if channels == 1:
            image = image[:, :, 0]
        elif channels == 2:
            image = np.ascontiguousarray(image[:, :, 0])
            notes.append("grey + alpha image: alpha dropped")
        elif channels in (3, 4):
            image = np.ascontiguousarray(image[:, :, 2::-1])  # BGR(A) -> RGB, alpha dropped
            if channels == 4:
                notes.append("alpha channel dropped")
        else:
            raise UnreadableFileError(f"{path}: {channels}-channel picture; expected grey, RGB or RGBA")
    if fmt == "tiff" and _tiff_has_more_pages(data):
        message = f"{path} is a multi-page TIFF; only the first page was read"
        notes.append(message)
        _warn(message)
    return LoadedImage(array=image, kind="2d", source=str(path), format=fmt, notes=tuple(notes))


# ------------------------------------------------------------------------------------------------------ npz
def _check_npz_member(path: Path, zf: zipfile.ZipFile, key: str, max_bytes: int) -> None:
    """Validate member ``key`` from its zip entry and ``.npy`` header only; raise before anything is allocated."""
    info = zf.getinfo(key + ".npy")
    if info.compress_type == zipfile.ZIP_STORED:
        if info.file_size != info.compress_size:
            raise UnreadableFileError(f"{path}: zip entry {info.filename} has inconsistent sizes; the file is corrupt")
    elif info.compress_type == zipfile.ZIP_DEFLATED:
        if info.file_size > info.compress_size * _DEFLATE_MAX_RATIO + 1024:
            raise UnreadableFileError(
                f"{path}: zip entry {info.filename} claims {info.file_size} bytes from {info.compress_size} "
                "compressed bytes, more than DEFLATE can produce; the file is corrupt or hostile"
            )
    else:
        raise UnreadableFileError(
            f"{path}: zip entry {info.filename} uses compression method {info.compress_type}; expected stored or "
            "deflated members as written by numpy.savez / savez_compressed"
        )
    with zf.open(info) as fp:
        version = npy_format.read_magic(fp)
        if version == (1, 0):
            shape, _fortran, dtype = npy_format.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, _fortran, dtype = npy_format.read_array_header_2_0(fp)
        else:
            raise UnreadableFileError(
                f"{path}: member {key!r} uses .npy format version {version}; expected version 1.0 or 2.0"
            )
        header_end = fp.tell()
    if dtype.hasobject:
        raise UnreadableFileError(
            f"{path}: member {key!r} is an object array (dtype {dtype}); loading it would need unpickling, which is "
            "refused; expected a numeric array"
        )
    declared = dtype.itemsize
    for d in shape:
        declared *= int(d)
    available = info.file_size - header_end
    if declared > available:
        raise UnreadableFileError(
            f"{path}: member {key!r} declares shape {shape} {dtype} ({declared} bytes) but holds only {available} "
            "bytes; the file is truncated, corrupt or hostile"
        )
    if declared > max_bytes:
        raise UnreadableFileError(
            f"{path}: member {key!r} declares shape {shape} {dtype} ({declared} bytes), above the limit of "
            f"{max_bytes} bytes (max_npz_bytes)"
        )


def _read_npz(path: Path, max_bytes: int) -> LoadedImage:
    with open(path, "rb") as fh:
        if not zipfile.is_zipfile(fh):
            raise UnreadableFileError(f"{path}: not a zip archive; expected a challenge .npz file (numpy.savez)")
        fh.seek(0)
        with zipfile.ZipFile(fh) as zf:
            names = {n[:-4] for n in zf.namelist() if n.endswith(".npy")}
            if "imgs" not in names:
                raise UnreadableFileError(
                    f"{path}: no 'imgs' array (found {sorted(names) or 'none'}); expected keys imgs (required), "
                    "boxes and spacing (optional)"
                )
            wanted = [k for k in ("imgs", "boxes", "spacing") if k in names]
            for key in wanted:
                _check_npz_member(path, zf, key, max_bytes)
        fh.seek(0)
        with np.load(fh, allow_pickle=False) as npz:
            loaded = {key: npz[key] for key in wanted}

    imgs = loaded["imgs"]
    if imgs.dtype.kind not in "biuf":
        raise UnreadableFileError(f"{path}: 'imgs' has dtype {imgs.dtype}; expected a numeric image array")
    boxes = loaded.get("boxes")
    if boxes is not None:
        if boxes.dtype.kind not in "iuf":
            raise UnreadableFileError(f"{path}: 'boxes' has dtype {boxes.dtype}; expected numbers")
        if boxes.ndim == 1 and boxes.size in (4, 6):
            boxes = boxes.reshape(1, -1)
        if boxes.ndim != 2 or boxes.shape[1] not in (4, 6):
            raise UnreadableFileError(
                f"{path}: 'boxes' has shape {boxes.shape}; expected (N, 4) for 2D or (N, 6) for 3D"
            )
    spacing = None
    if "spacing" in loaded:
        raw = loaded["spacing"]
        if raw.dtype.kind not in "iuf":
            raise UnreadableFileError(f"{path}: 'spacing' has dtype {raw.dtype}; expected numbers")
        spacing = tuple(float(v) for v in raw.reshape(-1))

    if boxes is not None and boxes.shape[1] == 6:
        kind = "3d"
        if imgs.ndim != 3:
            raise UnreadableFileError(f"{path}: 3D boxes (N, 6) with 'imgs' of shape {imgs.shape}; expected (D, H, W)")
    elif boxes is not None:
        kind = "2d"
        if not (imgs.ndim == 2 or (imgs.ndim == 3 and imgs.shape[2] == 3)):
            raise UnreadableFileError(
                f"{path}: 2D boxes (N, 4) with 'imgs' of shape {imgs.shape}; expected (H, W) or (H, W, 3)"
            )
    elif imgs.ndim == 2 or (imgs.ndim == 3 and imgs.shape[2] == 3):
        kind = "2d"
    elif imgs.ndim == 3:
        kind = "3d"
    else:
        raise UnreadableFileError(f"{path}: 'imgs' has shape {imgs.shape}; expected (H, W), (H, W, 3) or (D, H, W)")
    return LoadedImage(array=imgs, kind=kind, source=str(path), format="npz", boxes=boxes, spacing=spacing)


# ------------------------------------------------------------------------------------------------ read_image
def read_image(path: PathLike, *, max_npz_bytes: int = DEFAULT_MAX_NPZ_BYTES) -> LoadedImage:
    """Read an image, a volume, a DICOM series folder or a challenge ``.npz`` file.

    Args:
        path: a file (format from its suffix, see the module docstring) or a folder holding a DICOM series.
        max_npz_bytes: largest array one ``.npz`` member may declare (bytes); protects against hostile files.

    Returns:
        :class:`LoadedImage`; ``array`` is ``(z, y, x)`` for volumes and ``(y, x)`` / ``(y, x, c)`` for 2D images;
        ``geometry`` spacing/origin are in ITK ``(x, y, z)`` order.

    Raises:
        UnreadableFileError: the path does not exist, is a folder where a file is expected (or a folder without
            DICOM), is empty, truncated, corrupt, of an unsupported suffix, or a hostile ``.npz``.
    """
    p = Path(os.fspath(path))
    suffix = _suffix(p)
    fmt = READ_SUFFIXES.get(suffix)
    expected = _LABELS[fmt] if fmt else f"one of: {_supported_text()}"
    try:
        st = p.stat()
    except FileNotFoundError:
        raise UnreadableFileError(f"{p} does not exist; expected {expected}") from None
    except OSError as exc:
        raise UnreadableFileError(f"{p} cannot be accessed ({exc}); expected {expected}") from exc
    if stat.S_ISDIR(st.st_mode):
        if fmt is not None:
            raise UnreadableFileError(f"{p} is a folder; expected a {expected} file")
        return _read_dicom_series(p)
    if not stat.S_ISREG(st.st_mode):
        raise UnreadableFileError(f"{p} is not a regular file; expected {expected}")
    if st.st_size == 0:
        raise UnreadableFileError(f"{p} is empty (0 bytes); expected {expected}")
    if fmt is None:
        if not _has_dicom_preamble(p):
            raise UnreadableFileError(f"{p}: unsupported file type (suffix {suffix!r}); expected {expected}")
        fmt = "dicom"
    try:
        if fmt in _SITK_IO:
            return _read_sitk_file(p, fmt)
        if fmt == "npz":
            return _read_npz(p, max_npz_bytes)
        return _read_picture(p, fmt)
    except UnreadableFileError:
        raise
    except (OSError, ValueError, EOFError, RuntimeError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        raise UnreadableFileError(
            f"{p}: could not be read as {_LABELS[fmt]} ({type(exc).__name__}: {exc}); expected a complete, valid "
            "file (it may be truncated or corrupt)"
        ) from exc


def open_volume(source: object) -> LoadedImage:
    """One way in for a volume: a (z, y, x) array, a SimpleITK image, a :class:`LoadedImage` or a path.

    Returns a :class:`LoadedImage` with the data, the geometry (SimpleITK images and medical files), the boxes
    (challenge ``.npz``) and the modality (DICOM), so that the library and the CLI apply the same intensity rule
    (:func:`medsam_edge.intensity.choose_window`). Arrays are not copied and not checked here (the segmenter does).
    """
    if isinstance(source, LoadedImage):
        return source
    if isinstance(source, (str, os.PathLike)):
        return read_image(source)
    if _is_sitk_image(source):
        return LoadedImage(array=pixels_of(source), kind="3d" if source.GetDimension() == 3 else "2d",
                           source="<SimpleITK image>", format="sitk", geometry=Geometry.from_sitk(source))
    return LoadedImage(array=source, kind="3d", source="<array>", format="array")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------- writing
def _as_labels(labels: object, what: str = "labels") -> np.ndarray:
    """``labels`` as a C-contiguous uint16 array; refuse non-integer dtypes, values outside 0..65535, bad shapes."""
    arr = np.asarray(labels)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint16)
    elif arr.dtype.kind not in "iu":
        raise InvalidImageError(f"{what}: expected an integer (or bool) label array, got dtype {arr.dtype}")
    if arr.ndim not in (2, 3):
        raise InvalidImageError(f"{what}: expected shape (y, x) or (z, y, x), got {arr.shape}")
    if arr.size == 0:
        raise InvalidImageError(f"{what}: the array is empty (shape {arr.shape})")
    if arr.dtype != np.uint16:
        low, high = int(arr.min()), int(arr.max())
        if low < 0 or high > 65535:
            raise InvalidImageError(f"{what}: values span {low}..{high}; expected labels in 0..65535 (uint16)")
        arr = arr.astype(np.uint16)
    return np.ascontiguousarray(arr)


def _umask() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    current = os.umask(0o022)  # no read-only query exists elsewhere; restore at once
    os.umask(current)
    return current


def _fsync_file(name: str) -> None:
    fd = os.open(name, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    if os.name != "posix":
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(target: Path, suffix: str, write: Callable[[str], None]) -> Path:
    """Run ``write(temp_name)`` on a temp file next to ``target`` (same suffix), fsync it, then ``os.replace``.

    On any exception (including KeyboardInterrupt) the temp file is removed and ``target`` is untouched.
    """
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        raise UnwritableFileError(errno.ENOENT, f"cannot write {target}: folder {directory} does not exist")
    if target.is_dir():
        raise UnwritableFileError(errno.EISDIR, f"cannot write {target}: it is a folder")
    try:
        return _atomic_write_unchecked(target, directory, suffix, write)
    except UnwritableFileError:
        raise
    except OSError as exc:
        raise UnwritableFileError(exc.errno, f"cannot write {target}: {exc.strerror or exc}") from exc


def _atomic_write_unchecked(target: Path, directory: Path, suffix: str, write: Callable[[str], None]) -> Path:
    name = target.name
    stem = name[: len(name) - len(suffix)] if suffix and name.lower().endswith(suffix) else name
    fd, temp = tempfile.mkstemp(prefix=f".{stem[:100]}.tmp-", suffix=suffix, dir=directory)
    os.close(fd)
    try:
        write(temp)
        _fsync_file(temp)
        try:
            mode = stat.S_IMODE(os.stat(target).st_mode)
        except FileNotFoundError:
            mode = 0o666 & ~_umask()
        os.chmod(temp, mode)
        os.replace(temp, target)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise
    _fsync_dir(directory)
    return target


def _write_bytes(data: bytes) -> Callable[[str], None]:
    def write(temp: str) -> None:
        with open(temp, "wb") as fh:
            fh.write(data)

    return write


def _write_sitk(image: sitk.Image, target: Path) -> Callable[[str], None]:
    def write(temp: str) -> None:
        try:
            sitk.WriteImage(image, temp, True)
        except RuntimeError as exc:
            raise OSError(f"SimpleITK could not write {target}: {_sitk_reason(exc)}") from exc

    return write


def write_npz_segs(path: PathLike, segs: object, **extra: object) -> Path:
    """Atomically write a challenge result file: ``np.savez_compressed`` with ``segs`` (uint16) and ``extra`` arrays.

    Args:
        path: destination; written exactly as given (add ``.npz`` yourself).
        segs: label map, ``(y, x)`` or ``(z, y, x)``, integer or bool, values 0..65535; stored as uint16.
        extra: further named arrays stored beside ``segs`` (e.g. ``boxes``, ``spacing``); object arrays refused
            so the file loads with ``allow_pickle=False``.

    Returns the path written. Raises InvalidImageError for bad labels, ConfigurationError for a bad ``extra``,
    OSError for file-system failures (the old file, if any, is then left as it was).
    """
    target = Path(os.fspath(path))
    seg_array = _as_labels(segs, "segs")
    arrays: dict[str, np.ndarray] = {}
    for key, value in extra.items():
        if not key or "/" in key or "\\" in key:
            raise ConfigurationError(f"extra array name {key!r} is invalid; expected a plain name")
        arr = np.asarray(value)
        if arr.dtype.hasobject:
            raise ConfigurationError(
                f"extra array {key!r} has dtype {arr.dtype}; expected a numeric or string array (no objects)"
            )
        arrays[key] = arr

    def write(temp: str) -> None:
        with open(temp, "wb") as fh:
            np.savez_compressed(fh, segs=seg_array, **arrays)

    return _atomic_write(target, _suffix(target), write)


def _reference_geometry(
    reference: object, labels: np.ndarray
) -> tuple[Geometry | None, sitk.Image | None]:
    """Check ``labels`` against ``reference`` (shape must match exactly) and return what carries the geometry."""
    if reference is None:
        return None, None
    if isinstance(reference, LoadedImage):
        if labels.shape != reference.spatial_shape:
            raise InvalidImageError(
                f"labels shape {labels.shape} differs from the reference image's {reference.spatial_shape} "
                "((z, y, x) or (y, x)); label maps are never resampled"
            )
        return reference.geometry, None
    if isinstance(reference, Geometry):
        return reference, None
    if _is_sitk_image(reference):
        size_zyx = tuple(reference.GetSize()[::-1])
        fits = labels.shape == size_zyx or (
            labels.ndim == 2 and len(size_zyx) == 3 and size_zyx[0] == 1 and labels.shape == size_zyx[1:]
        )
        if not fits:
            raise InvalidImageError(
                f"labels shape {labels.shape} differs from the reference image's {size_zyx} (z, y, x); "
                "label maps are never resampled"
            )
        return None, reference
    raise ConfigurationError(
        f"reference must be None, a Geometry, a LoadedImage or a SimpleITK image, got {type(reference).__name__}"
    )


def write_labels(
    path: PathLike,
    labels: object,
    reference: Geometry | LoadedImage | sitk.Image | None = None,
    extra: Mapping[str, object] | None = None,
) -> Path:
    """Atomically write a uint16 label map, keeping the reference's geometry; format from the suffix.

    Args:
        path: destination. Suffixes: ``.nii``, ``.nii.gz``, ``.nrrd``, ``.mha`` (geometry kept; NRRD/MHA are
            gzip-compressed), ``.png`` (2D; uint8 when every label is < 256, else 16-bit), ``.tif``/``.tiff``
            (2D; always 16-bit), ``.npz`` (challenge result: key ``segs``, uint16, ``np.savez_compressed``).
        labels: integer or bool array, ``(z, y, x)`` or ``(y, x)`` in array order, values 0..65535.
        reference: where the geometry comes from -- a :class:`Geometry` (spacing/origin ITK ``(x, y, z)``), the
            :class:`LoadedImage` the labels were computed on (its shape must equal ``labels.shape``), or a SimpleITK
            image (``CopyInformation``). A 2D label map with a 3D reference of one slice (single-frame DICOM) is
            written as a ``(1, y, x)`` volume. PNG/TIFF/NPZ cannot store geometry; it is dropped there.
        extra: ``.npz`` only: further named arrays saved beside ``segs``.

    Returns the path written. Label maps are never resampled: a shape differing from the reference is an error.

    Raises:
        ConfigurationError: unsupported suffix (read-only ones such as ``.mhd``/``.nhdr`` included, since they
            would need two files), or ``extra`` with a non-``.npz`` format.
        InvalidImageError: labels of a wrong dtype, shape or range, or not matching the reference.
        OSError: the folder does not exist, permissions, disk full, SimpleITK write failure. An existing file at
            ``path`` is left untouched in every failure case.
    """
    target = Path(os.fspath(path))
    suffix = _suffix(target)
    fmt = WRITE_SUFFIXES.get(suffix)
    if fmt is None:
        raise ConfigurationError(
            f"cannot write label maps to {target} (suffix {suffix!r}); expected one of {', '.join(WRITE_SUFFIXES)}"
        )
    if extra and fmt != "npz":
        raise ConfigurationError(f"extra arrays can only be stored in .npz files, not in {target}")
    if extra and "segs" in extra:
        raise ConfigurationError("extra may not contain 'segs'; that key holds the label map")
    lab = _as_labels(labels)
    geometry, ref_image = _reference_geometry(reference, lab)

    if fmt == "npz":
        return write_npz_segs(target, lab, **dict(extra or {}))

    if fmt in ("png", "tiff"):
        if lab.ndim != 2:
            raise InvalidImageError(
                f"{fmt.upper()} holds 2D label maps only, got shape {lab.shape}; use .nii.gz, .nrrd, .mha or .npz "
                "for volumes"
            )
        if fmt == "png" and int(lab.max()) < 256:
            ok, encoded = cv2.imencode(".png", lab.astype(np.uint8))
        else:
            ok, encoded = cv2.imencode(".png" if fmt == "png" else ".tif", lab)
        if not ok:
            raise OSError(f"OpenCV could not encode {target} as {fmt.upper()}")
        return _atomic_write(target, suffix, _write_bytes(encoded.tobytes()))

    ndim_needed = ref_image.GetDimension() if ref_image is not None else (geometry.ndim if geometry else lab.ndim)
    if lab.ndim == 2 and ndim_needed == 3:
        lab = lab[np.newaxis]
    elif lab.ndim != ndim_needed:
        raise InvalidImageError(
            f"labels of shape {lab.shape} cannot take a {ndim_needed}D reference geometry; expected "
            f"{ndim_needed} axes"
        )
    image = sitk.GetImageFromArray(lab)  # (z, y, x) array -> ITK size (x, y, z)
    if ref_image is not None:
        image.CopyInformation(ref_image)
    elif geometry is not None:
        geometry.apply_to(image)
    return _atomic_write(target, suffix, _write_sitk(image, target))
