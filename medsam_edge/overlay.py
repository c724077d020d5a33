"""Pictures of results: the image with coloured masks and boxes (2D), a mosaic of slices (3D)."""

from __future__ import annotations

import numpy as np

# distinct colours (RGB), cycled by label
_PALETTE = np.array(
    [
        (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
        (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
    ],
    dtype=np.float32,
)


def to_display_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W[, 1|3]) any dtype -> (H, W, 3) uint8, min-max scaled when not uint8."""
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.dtype != np.uint8:
        f = img.astype(np.float64)
        lo, hi = float(f.min()), float(f.max())
        img = ((f - lo) / max(hi - lo, 1e-12) * 255.0 + 0.5).astype(np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return np.ascontiguousarray(img)


def overlay_2d(image: np.ndarray, label_map: np.ndarray, boxes: np.ndarray | None = None, alpha: float = 0.45) -> np.ndarray:
    """(H, W, 3) uint8 RGB picture: labels blended in colour, mask outlines and boxes drawn on top."""
    import cv2

    rgb = to_display_rgb(image).astype(np.float32)
    labels = np.asarray(label_map)
    out = rgb.copy()
    n = int(labels.max()) if labels.size else 0
    for lab in range(1, n + 1):
        sel = labels == lab
        if not sel.any():
            continue
        colour = _PALETTE[(lab - 1) % len(_PALETTE)]
        out[sel] = (1 - alpha) * rgb[sel] + alpha * colour
    out = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    thickness = max(1, round(max(labels.shape) / 400))
    for lab in range(1, n + 1):
        sel = (labels == lab).astype(np.uint8)
        if sel.any():
            contours, _ = cv2.findContours(sel, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            colour = tuple(int(c) for c in _PALETTE[(lab - 1) % len(_PALETTE)])
            cv2.drawContours(out, contours, -1, colour, thickness)
    if boxes is not None:
        for i, box in enumerate(np.asarray(boxes).reshape(-1, 4)):
            x0, y0, x1, y1 = (int(round(v)) for v in box)
            colour = tuple(int(c) for c in _PALETTE[i % len(_PALETTE)])
            cv2.rectangle(out, (x0, y0), (x1, y1), colour, thickness)
    return out


def mosaic_3d(volume: np.ndarray, labels: np.ndarray, boxes: np.ndarray | None = None, max_tiles: int = 16) -> np.ndarray:
    """A grid of axial slices through the labelled z-range, each an :func:`overlay_2d` picture (uint8 RGB)."""
    vol = np.asarray(volume)
    lab = np.asarray(labels)
    zs = np.nonzero(lab.reshape(lab.shape[0], -1).any(axis=1))[0]
    if zs.size == 0:
        zs = np.arange(vol.shape[0])
    picks = np.unique(np.linspace(zs.min(), zs.max(), num=min(max_tiles, zs.size)).round().astype(int))
    lo, hi = float(vol.min()), float(vol.max())
    tiles = []
    for z in picks:
        sl = vol[z].astype(np.float64)
        sl8 = ((sl - lo) / max(hi - lo, 1e-12) * 255 + 0.5).astype(np.uint8)
        sl_boxes = None
        if boxes is not None and len(boxes):
            b = np.asarray(boxes).reshape(-1, 6)
            inside = (b[:, 2] <= z) & (z <= b[:, 5])
            sl_boxes = np.where(inside[:, None], b[:, [0, 1, 3, 4]], -10)
        tiles.append(overlay_2d(sl8, lab[z], sl_boxes))
    cols = int(np.ceil(np.sqrt(len(tiles))))
    rows = int(np.ceil(len(tiles) / cols))
    h, w = tiles[0].shape[:2]
    grid = np.zeros((rows * h, cols * w, 3), dtype=np.uint8)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, cols)
        grid[r * h:(r + 1) * h, c * w:(c + 1) * w] = tile
    return grid
