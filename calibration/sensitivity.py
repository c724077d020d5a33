#!/usr/bin/env python
"""Where LiteMedSAM's encoder turns small numeric errors into large embedding errors (diagnostic; needs torch).

    python calibration/sensitivity.py stem              # offset vs signal of the stem's output channels
    python calibration/sensitivity.py inject            # bf16-round one group of layer outputs at a time
    python calibration/sensitivity.py inject --groups patch_embed mlp.fc1 --images 3

``inject`` runs the torch encoder (FP32) on a few ``val`` images with the outputs of one group of layers rounded to
bf16 (forward hooks) and reports the relative L2 error of the embedding vs FP32 (overall, inside the image region
and in the zero-padded region of the 256x256 input) and the per-box mask DSC vs the FP32 masks (torch decoder).
``stem`` prints, for the stem's output channels, the spatial mean vs the spatial standard deviation.
Findings are summarised in calibration/README.md ("Where the error comes from").
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from calibration import data as caldata  # noqa: E402
from calibration import quantize as q  # noqa: E402
from medsam_edge import kernels  # noqa: E402
from medsam_edge.export import fetch_checkpoint, load_litemedsam  # noqa: E402
from medsam_edge.export.architecture import DecoderGraph, EncoderGraph  # noqa: E402

IMAGES = ("MR_mni_axial_060", "MR_mni_axial_084", "MR_mni_coronal_104", "MR_mni_sagittal_080",
          "Microscopy_stardist_right_t0")

#: group name -> (regex over encoder module names, hook on "output" or "input")
GROUPS: dict[str, tuple[str, str]] = {
    "all": (r".*(\.c|\.bn|qkv|proj|fc1|fc2|norm|neck\.\d)", "output"),  # 118 tensors
    "all-but-stem": (r"(?!patch_embed).*(\.c|\.bn|qkv|proj|fc1|fc2|norm|neck\.\d)", "output"),
    "input": (r"patch_embed", "input"),
    "patch_embed": (r"patch_embed\.seq\.[02]\.bn", "output"),
    "patch_embed.out": (r"patch_embed\.seq\.2\.bn", "output"),
    "stage0.mbconv": (r"layers\.0\.blocks\.\d\.conv\d\.bn", "output"),
    "stage0.merge": (r"layers\.0\.downsample\.conv\d\.bn", "output"),
    "attn.norm": (r"layers\.\d\.blocks\.\d\.attn\.norm", "output"),
    "attn.qkv": (r"layers\.\d\.blocks\.\d\.attn\.qkv", "output"),
    "attn.proj.in": (r"layers\.\d\.blocks\.\d\.attn\.proj", "input"),
    "attn.proj": (r"layers\.\d\.blocks\.\d\.attn\.proj", "output"),
    "local_conv": (r"layers\.\d\.blocks\.\d\.local_conv\.bn", "output"),
    "mlp.norm": (r"layers\.\d\.blocks\.\d\.mlp\.norm", "output"),
    "mlp.fc1": (r"layers\.\d\.blocks\.\d\.mlp\.fc1", "output"),
    "mlp.fc2.in": (r"layers\.\d\.blocks\.\d\.mlp\.fc2", "input"),
    "mlp.fc2": (r"layers\.\d\.blocks\.\d\.mlp\.fc2", "output"),
    "merges.1-2": (r"layers\.[12]\.downsample\.conv\d\.bn", "output"),
    "neck": (r"neck\.\d", "output"),
}


def to_bf16(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.bfloat16).to(torch.float32)


def load(images: int):
    model = load_litemedsam(fetch_checkpoint())
    items = [it for it in q.val_items() if it.name in IMAGES[:images]]
    return model, EncoderGraph(model).eval(), DecoderGraph(model).eval(), items


def masks_of(decoder, embedding: torch.Tensor, item: q.Item) -> np.ndarray:
    with torch.no_grad():
        logits, _ = decoder(embedding, torch.from_numpy(item.boxes256))
    return kernels.postprocess(logits.numpy().reshape(-1, 256, 256), item.frame.resized,
                               (item.frame.height, item.frame.width))


def image_region(item: q.Item) -> np.ndarray:
    """(64, 64) bool: embedding cells covering the resized image (the rest sees the zero padding)."""
    h, w = item.frame.resized
    inside = np.zeros((64, 64), bool)
    inside[: -(-h // 4), : -(-w // 4)] = True
    return inside


def cmd_inject(args: argparse.Namespace) -> int:
    model, encoder, decoder, items = load(args.images)
    modules = dict(model.image_encoder.named_modules())
    with torch.no_grad():
        reference = [encoder(torch.from_numpy(it.tensor)) for it in items]
    ref_masks = [masks_of(decoder, e, it) for e, it in zip(reference, items)]
    print(f"{'group':16s} {'layers':>6s} {'emb err':>8s} {'inside':>8s} {'padding':>8s} "
          f"{'DSC mean':>8s} {'p5':>7s} {'min':>7s}")
    for group in args.groups:
        pattern, where = GROUPS[group]
        targets = [m for n, m in modules.items() if re.fullmatch(pattern, n)]
        if where == "output":
            hooks = [m.register_forward_hook(lambda _m, _i, out: to_bf16(out)) for m in targets]
        else:
            hooks = [m.register_forward_pre_hook(lambda _m, inp: (to_bf16(inp[0]), *inp[1:])) for m in targets]
        errors, inside, padding, dsc = [], [], [], []
        try:
            with torch.no_grad():
                for it, ref, ref_m in zip(items, reference, ref_masks):
                    emb = encoder(torch.from_numpy(it.tensor))
                    diff, base = (emb - ref)[0].numpy(), ref[0].numpy()
                    region = image_region(it)
                    errors.append(np.linalg.norm(diff) / np.linalg.norm(base))
                    inside.append(np.linalg.norm(diff[:, region]) / np.linalg.norm(base[:, region]))
                    if (~region).any():
                        padding.append(np.linalg.norm(diff[:, ~region]) / np.linalg.norm(base[:, ~region]))
                    masks = masks_of(decoder, emb, it)
                    dsc += [q.dice(ref_m[i], masks[i]) for i in range(len(masks))]
        finally:
            for h in hooks:
                h.remove()
        d = np.array(dsc)
        pad = f"{np.mean(padding):8.4f}" if padding else f"{'-':>8s}"
        print(f"{group:16s} {len(targets):6d} {np.mean(errors):8.4f} {np.mean(inside):8.4f} {pad} "
              f"{d.mean():8.4f} {np.percentile(d, 5):7.4f} {d.min():7.4f}", flush=True)
    return 0


def cmd_stem(args: argparse.Namespace) -> int:
    model, _, _, items = load(args.images)
    stem = model.image_encoder.patch_embed
    first = model.image_encoder.layers[0].blocks[0].conv1
    with torch.no_grad():
        for it in items:
            out = stem(torch.from_numpy(it.tensor))[0]
            flat = out.reshape(out.shape[0], -1)
            mean, std = flat.mean(1).abs(), flat.std(1)
            ratio = mean / std
            step = float(flat.abs().max()) / 127  # a per-tensor symmetric INT8 step for this tensor
            expand = first(out[None])[0].reshape(first.c.out_channels, -1)
            print(f"{it.name}: stem output |mean| median {mean.median():.3f}, spatial std median {std.median():.4f} "
                  f"(min {std.min():.1e}); |mean|/std median {ratio.median():.1f}, max {ratio.max():.0f}; "
                  f"INT8 step {step:.4f} > std in {int((std < step).sum())}/{len(std)} channels; "
                  f"next 1x1 conv output std median {expand.std(1).median():.3f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    i = sub.add_parser("inject", help="bf16-round one group of layer outputs at a time")
    i.add_argument("--groups", nargs="+", default=list(GROUPS), choices=list(GROUPS))
    i.add_argument("--images", type=int, default=len(IMAGES))
    i.set_defaults(func=cmd_inject)
    s = sub.add_parser("stem", help="offset vs signal of the stem's output channels")
    s.add_argument("--images", type=int, default=2)
    s.set_defaults(func=cmd_stem)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
