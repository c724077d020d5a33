#!/usr/bin/env python
"""Regenerate ``medsam_edge/models/golden.npz``: the self-check every freshly compiled model must pass.

    python calibration/build_golden.py          # needs the export extra (torch), reads the verified checkpoint

The expected outputs come from the checkpoint's own network in torch at float32 (``medsam_edge.export``), not from
an IR, so that a CPU plugin or a cache that breaks every IR cannot also break the reference. The inputs are
deterministic and small (see :mod:`medsam_edge.selfcheck` for how they are turned into model inputs):

* ``image_u8`` (256, 256) uint8: the bundled example (fluorescence nuclei), resized and padded like the reference
  pipeline; the encoder's golden input is ``image_u8 / 255`` repeated to 3 channels.
* ``embedding_pool4`` (256, 16, 16) float32: the torch embedding of that input, averaged over 4x4 blocks; the
  encoder check compares the pooled embedding of the compiled model with it. Repeated back to (1, 256, 64, 64) it is
  also the decoder's golden input (so the decoder is checked on its own, whatever the encoder does).
* ``boxes`` (4, 4) float32 in 256 space; ``masks`` (4, 256, 256) bool = torch logits > 0 on the repeated pooled
  embedding; ``iou`` (4,) float32.

The file is listed in ``manifest.json`` with its sha256 like the IR files.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # running from a source checkout without installing
    sys.path.insert(0, str(REPO))

from medsam_edge import kernels  # noqa: E402
from medsam_edge.examples import load_example  # noqa: E402
from medsam_edge.models import MODEL_DIR, load_manifest, write_manifest  # noqa: E402
from medsam_edge.prompts import Frame  # noqa: E402
from medsam_edge.selfcheck import GOLDEN_NAME, decoder_input, encoder_input, pool4  # noqa: E402


def build(out: Path) -> dict:
    import torch

    from medsam_edge.export import fetch_checkpoint, load_litemedsam
    from medsam_edge.export.architecture import DecoderGraph, EncoderGraph

    example = load_example()
    tensor, _ = kernels.preprocess(example.image)
    image_u8 = np.rint(tensor[0, 0] * 255.0).astype(np.uint8)  # the example is grey: 3 equal channels
    frame = Frame(*example.image.shape[:2])
    boxes = frame.boxes_to_model(np.asarray(example.boxes[:4], np.float64)).astype(np.float32)

    model = load_litemedsam(fetch_checkpoint())
    encoder, decoder = EncoderGraph(model).eval(), DecoderGraph(model).eval()
    with torch.no_grad():
        embedding = encoder(torch.from_numpy(encoder_input(image_u8))).numpy()
        pooled = pool4(embedding)
        logits, iou = (t.numpy() for t in decoder(torch.from_numpy(decoder_input(pooled)), torch.from_numpy(boxes)))
    masks = logits[:, 0] > 0
    golden = {
        "image_u8": image_u8,
        "embedding_pool4": pooled.astype(np.float32),
        "boxes": boxes,
        "masks": masks,
        "iou": iou.reshape(-1).astype(np.float32),
    }
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez_compressed(tmp, **golden)
    tmp.replace(out)
    return {"mask_pixels": masks.reshape(len(boxes), -1).sum(1).tolist(), "iou": golden["iou"].round(4).tolist()}


def main() -> int:
    out = MODEL_DIR / GOLDEN_NAME
    facts = build(out)
    manifest = load_manifest(MODEL_DIR)
    extra = {k: v for k, v in manifest.items() if k not in ("format", "source", "variants", "files")}
    write_manifest(MODEL_DIR, variants=manifest["variants"], source=manifest["source"], extra=extra or None)
    print(f"wrote {out} ({out.stat().st_size} bytes): {facts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
