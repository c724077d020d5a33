"""A faithful torch implementation of the official LiteMedSAM inference (the baseline of every comparison).

Written from the facts in ``shared/SPEC-litemedsam.md`` (the challenge's CVPR24_LiteMedSAM_infer.py): per-image
min-max normalisation, longest-side INTER_AREA resize, boxes floored into 256 space, one decoder call per box,
crop + bilinear upsample + sigmoid > 0.5, uint8 label images; in 3D the middle-slice propagation that re-encodes every
slice for every box. ``model`` is the checkpoint's own torch model (attributes ``image_encoder``, ``prompt_encoder``,
``mask_decoder`` with SAM's call signatures). Needs torch: benchmarks and tests only.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F


def _resize_longest(image: np.ndarray, target: int = 256) -> np.ndarray:
    h, w = image.shape[0], image.shape[1]
    scale = target * 1.0 / max(h, w)
    new_h, new_w = int(h * scale + 0.5), int(w * scale + 0.5)
    return cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)


def _pad(image: np.ndarray, target: int = 256) -> np.ndarray:
    pad_h, pad_w = target - image.shape[0], target - image.shape[1]
    widths = ((0, pad_h), (0, pad_w)) + (((0, 0),) if image.ndim == 3 else ())
    return np.pad(image, widths)


def _box_to_256(box, h: int, w: int) -> np.ndarray:
    ratio = 256 / max(h, w)
    return np.array([int(v * ratio) for v in box], dtype=np.float64)


def _box_from_mask256(mask256: np.ndarray, shift: int = 3) -> np.ndarray:
    ys, xs = np.where(mask256 > 0)
    h, w = mask256.shape
    return np.array(
        [max(0, xs.min() - shift), max(0, ys.min() - shift), min(w, xs.max() + shift), min(h, ys.max() + shift)]
    )


def _encode(model, img_3c: np.ndarray):
    img256 = _resize_longest(img_3c)
    new_h, new_w = img256.shape[:2]
    norm = (img256 - img256.min()) / np.clip(img256.max() - img256.min(), a_min=1e-8, a_max=None)
    tensor = torch.tensor(_pad(norm)).float().permute(2, 0, 1).unsqueeze(0)
    with torch.no_grad():
        return model.image_encoder(tensor), (new_h, new_w)


def _decode(model, embedding, box256: np.ndarray, new_hw, orig_hw):
    box = torch.as_tensor(box256[None, None, :], dtype=torch.float)
    with torch.no_grad():
        sparse, dense = model.prompt_encoder(points=None, boxes=box, masks=None)
        logits, iou = model.mask_decoder(
            image_embeddings=embedding,
            image_pe=model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
        logits = logits[..., : new_hw[0], : new_hw[1]]
        up = F.interpolate(logits, size=orig_hw, mode="bilinear", align_corners=False)
        prob = torch.sigmoid(up).squeeze().cpu().numpy()
    return (prob > 0.5).astype(np.uint8), float(iou.squeeze())


def infer_2d(model, imgs: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """imgs (H, W, 3) or (H, W) uint8, boxes (N, 4) -> (H, W) uint8 label image (box i -> i + 1, later wins)."""
    img_3c = imgs if imgs.ndim == 3 else np.repeat(imgs[:, :, None], 3, axis=-1)
    h, w = img_3c.shape[:2]
    segs = np.zeros((h, w), dtype=np.uint8)
    embedding, new_hw = _encode(model, img_3c)
    for idx, box in enumerate(boxes, start=1):
        mask, _ = _decode(model, embedding, _box_to_256(box, h, w), new_hw, (h, w))
        segs[mask > 0] = idx
    return segs


def infer_3d(model, imgs: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """imgs (D, H, W) uint8, boxes (N, 6) [x_min, y_min, z_min, x_max, y_max, z_max] -> (D, H, W) uint8 labels.

    The official loop, including its cost: every slice is encoded again for every box. (Unlike the original, a
    one-slice box is allowed instead of failing an assertion.)
    """
    depth = imgs.shape[0]
    segs = np.zeros_like(imgs, dtype=np.uint8)
    for idx, box3d in enumerate(boxes, start=1):
        temp = np.zeros_like(imgs, dtype=np.uint8)
        x_min, y_min, z_min, x_max, y_max, z_max = (int(v) for v in box3d)
        mid_box = np.array([x_min, y_min, x_max, y_max])
        z_mid = int((z_max - z_min) / 2 + z_min)

        def step(z: int, prev_z: int | None) -> None:
            img_3c = np.repeat(imgs[z][:, :, None], 3, axis=-1)
            h, w = img_3c.shape[:2]
            embedding, new_hw = _encode(model, img_3c)
            box256 = _box_to_256(mid_box, h, w)
            if prev_z is not None:
                prev256 = _resize_longest(temp[prev_z])
                if np.max(prev256) > 0:
                    box256 = _box_from_mask256(_pad(prev256))
            mask, _ = _decode(model, embedding, box256, new_hw, (h, w))
            temp[z, mask > 0] = idx

        for z in range(z_mid, min(z_max + 1, depth)):
            step(z, None if z == z_mid else z - 1)
        for z in range(z_mid - 1, max(-1, z_min - 1), -1):
            step(z, z + 1)
        segs[temp > 0] = idx
    return segs
