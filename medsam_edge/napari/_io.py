"""Reader, writer and sample data of the napari plugin (no Qt, no napari import: plain layer-data tuples).

Layers carry ``scale`` = the file's spacing in array order (z, y, x), so image, boxes and masks sit on the anatomy
in millimetres; the full ITK geometry (spacing, origin, direction) travels in ``metadata["medsam_edge"]`` and the
writer hands it back to :func:`medsam_edge.io.write_labels`, which writes atomically. Layers without that metadata
(drawn in napari, other readers) are written with their ``scale`` as spacing, ``translate`` as origin and an
identity direction.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .. import io as medio
from ._core import rectangle_vertices

LayerData = tuple  # (data, kwargs, layer_type)
META_KEY = "medsam_edge"
#: formats the reader takes (pictures are left to napari's own reader)
MEDICAL_FORMATS = frozenset({"nifti", "nrrd", "metaimage", "dicom", "npz"})


def _format_of(path: str) -> str | None:
    p = Path(path)
    if p.is_dir():
        return "dicom-series"
    fmt = medio.READ_SUFFIXES.get(medio._suffix(p))  # noqa: SLF001 - the module's own suffix rule (.nii.gz)
    return fmt if fmt in MEDICAL_FORMATS else None


def get_reader(path: str | Sequence[str]) -> Callable[[Any], list[LayerData]] | None:
    """npe2 reader hook: a callable for one medical file or DICOM folder, else None (napari tries other readers)."""
    if not isinstance(path, (str, os.PathLike)):
        if len(path) != 1:
            return None
        path = path[0]
    return read_layers if _format_of(os.fspath(path)) else None


def geometry_meta(geometry: medio.Geometry | None) -> dict | None:
    if geometry is None:
        return None
    return {"spacing": list(geometry.spacing), "origin": list(geometry.origin), "direction": list(geometry.direction)}


def _scale(loaded: medio.LoadedImage, ndim: int) -> tuple[float, ...]:
    if loaded.geometry is not None:
        spacing = loaded.geometry.spacing_zyx
    elif loaded.spacing is not None and len(loaded.spacing) == ndim:
        spacing = tuple(float(v) for v in loaded.spacing)[::-1]  # challenge files: ITK (x, y, z) order
    else:
        spacing = (1.0,) * ndim
    return tuple(float(v) for v in spacing[-ndim:])


def _contrast(loaded: medio.LoadedImage) -> dict:
    """CT: the default abdomen window as contrast limits (what the segmenter sees); others: napari's default."""
    if (loaded.modality or "").upper() != "CT" or loaded.array.dtype == np.uint8:
        return {}
    from ..intensity import DEFAULT_CT_WINDOW, resolve_window

    width, level = resolve_window(DEFAULT_CT_WINDOW)
    return {"contrast_limits": (level - width / 2, level + width / 2)}


def box_layer(boxes: np.ndarray, ndim: int, scale: Sequence[float], name: str) -> LayerData:
    """A Shapes layer of the file's boxes: 2D (N, 4) XYXY, or 3D (N, 6) drawn on each box's middle slice with its
    z-range in the ``z_min`` / ``z_max`` features."""
    boxes = np.asarray(boxes, dtype=np.float64)
    kwargs: dict[str, Any] = {"name": name, "shape_type": "rectangle", "scale": tuple(scale), "edge_width": 1,
                              "edge_color": "yellow", "face_color": "transparent"}
    if ndim == 3 and boxes.ndim == 2 and boxes.shape[1] == 6:
        z_mid = [int((b[5] - b[2]) / 2 + b[2]) for b in boxes]  # the library's propagate middle slice
        data = [rectangle_vertices(b[[0, 1, 3, 4]], z) for b, z in zip(boxes, z_mid)]
        kwargs["features"] = {"z_min": boxes[:, 2].astype(int), "z_max": boxes[:, 5].astype(int)}
        kwargs["feature_defaults"] = {"z_min": -1, "z_max": -1}
    else:
        data = [rectangle_vertices(b) for b in boxes.reshape(-1, 4)]
    return data, kwargs, "shapes"


def loaded_layers(loaded: medio.LoadedImage, name: str) -> list[LayerData]:
    """Image layer (+ boxes) of a :class:`medsam_edge.io.LoadedImage`."""
    rgb = loaded.kind == "2d" and loaded.array.ndim == 3
    ndim = loaded.array.ndim - (1 if rgb else 0)
    scale = _scale(loaded, ndim)
    meta = {"geometry": geometry_meta(loaded.geometry), "modality": loaded.modality, "source": loaded.source,
            "format": loaded.format}
    kwargs = {"name": name, "scale": scale, "rgb": rgb, "metadata": {META_KEY: meta}, **_contrast(loaded)}
    layers: list[LayerData] = [(loaded.array, kwargs, "image")]
    if loaded.boxes is not None and len(loaded.boxes):
        layers.append(box_layer(loaded.boxes, ndim, scale, f"{name} boxes"))
    return layers


def _name(path: str) -> str:
    base = Path(path).name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm", ".dicom", ".npz"):
        if base.lower().endswith(suffix):
            return base[: -len(suffix)]
    return base


def read_layers(path: str | Sequence[str]) -> list[LayerData]:
    """Read one file or DICOM folder with :func:`medsam_edge.io.read_image`."""
    if not isinstance(path, (str, os.PathLike)):
        path = path[0]
    path = os.fspath(path)
    return loaded_layers(medio.read_image(path), _name(path))


# ---------------------------------------------------------------------------------------------------- writer
def geometry_for(meta: dict, ndim: int) -> medio.Geometry | None:
    """The geometry to write a labels layer with: the reader's (metadata) when it fits, else scale/translate."""
    stored = (meta.get("metadata") or {}).get(META_KEY, {}).get("geometry")
    if stored:
        geometry = medio.Geometry(stored["spacing"], stored["origin"], stored["direction"])
        if geometry.ndim == ndim or (ndim == 2 and geometry.ndim == 3):
            return geometry
    scale = meta.get("scale")
    if scale is None:
        return None
    spacing = tuple(float(v) for v in scale)[-ndim:][::-1]
    translate = meta.get("translate")
    origin = tuple(float(v) for v in translate)[-ndim:][::-1] if translate is not None else (0.0,) * ndim
    return medio.Geometry(spacing, origin, tuple(np.eye(ndim).ravel()))


def write_labels(path: str, data: Any, meta: dict) -> list[str]:
    """npe2 single-layer writer: :func:`medsam_edge.io.write_labels` (atomic; geometry kept where the format can)."""
    labels = np.asarray(data)
    medio.write_labels(path, labels, reference=geometry_for(meta, labels.ndim))
    return [path]


# ------------------------------------------------------------------------------------------------ sample data
def sample_nuclei() -> list[LayerData]:
    """The bundled example: a fluorescence-microscopy image and its six nuclei boxes."""
    from ..examples import load_example

    example = load_example("nuclei")
    image = (example.image, {"name": "nuclei", "metadata": {META_KEY: {"modality": None, "source": example.source}}},
             "image")
    return [image, box_layer(example.boxes, 2, (1.0, 1.0), "nuclei boxes")]
