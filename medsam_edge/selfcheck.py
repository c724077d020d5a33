"""Golden-input self-check of a freshly compiled model.

A compiled model can compute the wrong function without any error: OpenVINO's own compiled-model cache has served
a blob compiled under one ``INFERENCE_PRECISION_HINT`` to a compile under another (2026.4, CPU: the cache key of an
in-memory model ignores the hint; on an AMX CPU the decoder then returned IoU 0.2451 for every box), and a new CPU's
plugin code path is untested by us until it runs. So every model :class:`medsam_edge.runtime.Runtime` compiles (not
one it reads back from its own cache entry, which is written only after this check passed) is run once on a tiny
golden input whose expected outputs ship in ``models/golden.npz`` (made by ``calibration/build_golden.py`` from the
checkpoint's network in torch at float32), and a result outside the tolerance of its precision raises
:class:`~medsam_edge.errors.ModelCheckError` naming the model, precision, device and the measured deviation.

Measures (see :data:`TOLERANCES`; figures measured per CPU are in ``calibration/README.md``, "Self-check"):

* encoder: relative L2 error of the 4x4-pooled embedding (``embedding_rel_l2``);
* decoder: the smallest per-box Dice of its masks (logit > 0) against the reference masks (``mask_dice_min``) and
  the largest predicted-IoU error (``iou_max_abs``), on the reference's pooled embedding (independent of the
  encoder).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .errors import ModelCheckError, ModelFileError

from .models import GOLDEN_NAME  # noqa: F401  (re-exported)

#: precision -> limits. A broken model is far outside them (the poisoned-cache decoder: IoU error 0.23, masks
#: covering the image); the figures each CPU measured are in calibration/README.md ("Self-check").
TOLERANCES: dict[str, dict[str, float]] = {
    # measured on AMD EPYC Zen 4 (AVX-512 BF16/VNNI, no AMX), 1 and 2 threads: 1e-5 / 1.0 / 0.0
    "fp32": {"embedding_rel_l2": 1e-3, "mask_dice_min": 0.99, "iou_max_abs": 2e-3},
    # measured there: 0.043 / 0.9926 / 0.0048
    "bf16": {"embedding_rel_l2": 0.10, "mask_dice_min": 0.90, "iou_max_abs": 0.05},
    # measured there: 0.085 / 0.985 / 0.0022 (INT8 encoder; the decoder runs in bf16)
    "int8": {"embedding_rel_l2": 0.20, "mask_dice_min": 0.90, "iou_max_abs": 0.05},
}


def encoder_input(image_u8: np.ndarray) -> np.ndarray:
    """(256, 256) uint8 -> the encoder's golden input (1, 3, 256, 256) float32."""
    grey = image_u8.astype(np.float32) / np.float32(255.0)
    return np.ascontiguousarray(np.broadcast_to(grey, (1, 3) + grey.shape))


def pool4(embedding: np.ndarray) -> np.ndarray:
    """(1, 256, 64, 64) -> (256, 16, 16): mean over 4x4 blocks (float64 sums, float32 result)."""
    e = np.asarray(embedding, np.float64).reshape(256, 16, 4, 16, 4)
    return e.mean(axis=(2, 4)).astype(np.float32)


def decoder_input(pooled: np.ndarray) -> np.ndarray:
    """(256, 16, 16) -> (1, 256, 64, 64) float32 by repeating every value over its 4x4 block."""
    full = np.repeat(np.repeat(np.asarray(pooled, np.float32), 4, axis=1), 4, axis=2)
    return np.ascontiguousarray(full[None])


@dataclass(frozen=True)
class Golden:
    image_u8: np.ndarray
    embedding_pool4: np.ndarray
    boxes: np.ndarray
    masks: np.ndarray
    iou: np.ndarray


@lru_cache(maxsize=4)
def load_golden(path: str) -> Golden:
    try:
        with np.load(path, allow_pickle=False) as data:
            return Golden(**{name: data[name] for name in Golden.__dataclass_fields__})
    except (OSError, ValueError, KeyError) as exc:
        raise ModelFileError(
            f"self-check file {path} is missing or unreadable ({exc}); reinstall medsam_edge or rebuild it with "
            "`python calibration/build_golden.py`"
        ) from exc


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def measure_encoder(run, golden: Golden) -> dict[str, float]:
    """``run(tensor) -> embedding``; deviation from the golden pooled embedding."""
    pooled = pool4(run(encoder_input(golden.image_u8)))
    ref = golden.embedding_pool4.astype(np.float64)
    return {"embedding_rel_l2": float(np.linalg.norm(pooled - ref) / np.linalg.norm(ref))}


def measure_decoder(run, golden: Golden, boxes_per_call: int) -> dict[str, float]:
    """``run(embedding, boxes (k, 4)) -> (logits (k, 256, 256), iou (k,))`` with k = ``boxes_per_call``."""
    embedding = decoder_input(golden.embedding_pool4)
    k = max(1, min(int(boxes_per_call), len(golden.boxes)))
    logits, iou = run(embedding, np.ascontiguousarray(golden.boxes[:k]))
    logits = np.asarray(logits, np.float32).reshape(k, 256, 256)
    dices = [_dice(logits[i] > 0, golden.masks[i]) for i in range(k)]
    return {
        "mask_dice_min": float(min(dices)),
        "iou_max_abs": float(np.abs(np.asarray(iou, np.float64).reshape(k) - golden.iou[:k]).max()),
    }


def verdict(measured: dict[str, float], precision: str) -> list[str]:
    """The limits ``measured`` breaks (empty: passed)."""
    limits = TOLERANCES[precision]
    broken = []
    for name, value in measured.items():
        limit = limits[name]
        bad = value < limit if name.endswith("_min") else value > limit
        if bad or not np.isfinite(value):
            broken.append(f"{name} {value:.4g} (limit {'>=' if name.endswith('_min') else '<='} {limit:g})")
    return broken


def check(kind: str, run, golden_path: Path, precision: str, device: str, model: str, boxes_per_call: int = 1
          ) -> dict[str, float]:
    """Run the golden input through ``run`` and raise :class:`ModelCheckError` when it is out of tolerance."""
    golden = load_golden(str(golden_path))
    if kind == "encoder":
        measured = measure_encoder(run, golden)
    else:
        measured = measure_decoder(run, golden, boxes_per_call)
    broken = verdict(measured, precision)
    if broken:
        raise ModelCheckError(
            f"self-check failed for {model} compiled for precision {precision!r} on device {device!r}: "
            f"{'; '.join(broken)} against the float32 reference in {golden_path.name}. The compiled model computes "
            "something else than the network (a plugin or cache fault on this machine); masks from it would be "
            "wrong. Try precision='fp32', another device, or report the CPU (`medsam-edge info`)."
        )
    return measured
