"""Regenerate the small real example shipped inside the package (medsam_edge/examples/).

Source: the ``stardist`` wheel's ``stardist/data/images/img2d.tif`` (fluorescence microscopy of nuclei) and its
label image ``mask2d.tif`` (read from the wheel as a zip; nothing is installed). The 512x512 uint16 image is scaled
to uint8 with the 0.5-99.5 percentile rule; boxes are the tight boxes of six labelled nuclei of different sizes.

    python calibration/build_example.py
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import cv2
import numpy as np

STARDIST = "stardist==0.9.2"
OUT = Path(__file__).resolve().parents[1] / "medsam_edge" / "examples"


def _wheel(spec: str, folder: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", spec, "-d", str(folder)], check=True)
    return next(folder.glob(spec.split("==")[0] + "-*.whl"))


def main() -> None:
    import tifffile

    with tempfile.TemporaryDirectory() as tmp:
        wheel = zipfile.ZipFile(_wheel(STARDIST, Path(tmp)))
        img = tifffile.imread(io.BytesIO(wheel.read("stardist/data/images/img2d.tif"))).astype(np.float64)
        mask = tifffile.imread(io.BytesIO(wheel.read("stardist/data/images/mask2d.tif")))
    nz = img[img > 0]
    lo, hi = np.percentile(nz, [0.5, 99.5])
    img8 = np.where(img > 0, (np.clip(img, lo, hi) - lo) / (hi - lo) * 255.0, 0).round().astype(np.uint8)
    # six nuclei spread over sizes, away from the border
    labels = [lab for lab in range(1, int(mask.max()) + 1) if (mask == lab).any()]
    areas = {lab: int((mask == lab).sum()) for lab in labels}
    chosen = []
    for q in (0.15, 0.3, 0.45, 0.6, 0.75, 0.9):
        target = np.quantile(list(areas.values()), q)
        lab = min((l for l in labels if l not in chosen), key=lambda l: abs(areas[l] - target))
        chosen.append(lab)
    boxes, gts = [], np.zeros(mask.shape, np.uint16)
    for i, lab in enumerate(chosen):
        ys, xs = np.nonzero(mask == lab)
        boxes.append([int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())])
        gts[mask == lab] = i + 1
    OUT.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(OUT / "nuclei.png"), img8)
    cv2.imwrite(str(OUT / "nuclei_gt.png"), gts.astype(np.uint8))
    (OUT / "nuclei.json").write_text(json.dumps({
        "image": "nuclei.png",
        "ground_truth": "nuclei_gt.png",
        "boxes_xyxy": boxes,
        "modality": "Microscopy (fluorescence nuclei)",
        "source": f"{STARDIST} wheel, stardist/data/images/img2d.tif + mask2d.tif (BSD-3-Clause)",
    }, indent=2) + "\n")
    print(f"wrote {OUT}: {len(boxes)} boxes")


if __name__ == "__main__":
    main()
