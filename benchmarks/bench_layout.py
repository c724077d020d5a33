"""Encoder graph layout A/B: channels-first attention stages (the export since 2026-11-27) vs the checkpoint's
channels-last formulation (tokens as (B, H, W, C), permutes around every local convolution and merge).

    python benchmarks/bench_layout.py [--runs 20] [--calib 16] [--out benchmarks/results/layout.json]

Needs the export extra (torch + nncf). Both graphs are exported from the same verified checkpoint in this process
and run the same calibration images; the script checks they compute the same embedding (f32 execution), then times
them interleaved run by run (2 threads, LATENCY hint) at f32 and bf16 execution and after the same NNCF PTQ
(TRANSFORMER, ``--calib`` calibration images) on each, and prints the channels-first / channels-last ratios. The
machine is shared: only ratios within one run mean something.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import openvino as ov  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from medsam_edge.export import convert, fetch_checkpoint, load_litemedsam, tinyvit  # noqa: E402


# ------------------------------------------------------------------ the channels-last formulation, for comparison


def _split_windows_cl(x: torch.Tensor, window: int):
    b, h, w, c = x.shape
    pad_h, pad_w = (window - h % window) % window, (window - w % window) % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    ph, pw = h + pad_h, w + pad_w
    x = x.view(b, ph // window, window, pw // window, window, c).transpose(2, 3)
    return x.reshape(-1, window * window, c), ph, pw


def _merge_windows_cl(x, window, batch, ph, pw, h, w):
    c = x.shape[2]
    x = x.view(batch, ph // window, pw // window, window, window, c).transpose(2, 3).reshape(batch, ph, pw, c)
    return x[:, :h, :w] if (ph != h or pw != w) else x


def _mlp_cl(mlp: tinyvit.FeedForward, x: torch.Tensor) -> torch.Tensor:
    """The MLP on (B, H, W, C) tokens: nn.LayerNorm + Linear layers, from the 1x1 conv modules' parameters."""
    y = F.layer_norm(x, (x.shape[-1],), mlp.norm.weight, mlp.norm.bias, mlp.norm.eps)
    y = F.gelu(F.linear(y, mlp.fc1.weight[:, :, 0, 0], mlp.fc1.bias))
    return F.linear(y, mlp.fc2.weight[:, :, 0, 0], mlp.fc2.bias)


def _block_cl(self, x):
    b, h, w, _ = x.shape
    windows, ph, pw = _split_windows_cl(x, self.window)
    x = x + _merge_windows_cl(self.attn(windows), self.window, b, ph, pw, h, w)
    x = self.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    return x + _mlp_cl(self.mlp, x)


def _stage_cl(self, x):
    for block in self.blocks:
        x = block(x)
    if self.downsample is not None:
        x = self.downsample(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    return x


def _encoder_cl(self, image):
    x = self.layers[0](self.patch_embed(image)).permute(0, 2, 3, 1)
    for stage in self.layers[1:]:
        x = stage(x)
    return self.neck(x.permute(0, 3, 1, 2))


def channels_last(model):
    """Switch a loaded LiteMedSAM's encoder to the channels-last formulation (same parameters)."""
    enc = model.image_encoder
    for module in enc.modules():
        if isinstance(module, tinyvit.TinyViTBlock):
            module.forward = types.MethodType(_block_cl, module)
        elif isinstance(module, tinyvit.AttentionStage):
            module.forward = types.MethodType(_stage_cl, module)
    enc.forward = types.MethodType(_encoder_cl, enc)
    return model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--calib", type=int, default=16, help="calibration images for the PTQ comparison")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "layout.json"))
    args = parser.parse_args(argv)

    from calibration import quantize as q

    checkpoint = fetch_checkpoint()
    models = {"channels_first": convert.convert_encoder(load_litemedsam(checkpoint)),
              "channels_last": convert.convert_encoder(channels_last(load_litemedsam(checkpoint)))}
    items = q.calibration_items()[: args.calib]
    x = items[0].tensor

    def compiled(graphs: dict, precision: str) -> dict:
        core = ov.Core()
        return {k: q.compile_model(m, precision=precision, core=core) for k, m in graphs.items()}

    def timed(graphs: dict) -> dict[str, float]:  # interleaved run by run (calibration/quantize.py's bench)
        medians = q.bench({k: (c, {0: x}) for k, c in graphs.items()}, runs=args.runs)
        return {k: round(v, 1) for k, v in medians.items()}

    f32 = compiled(models, "f32")
    outs = {k: c.create_infer_request().infer({0: x})[0].copy() for k, c in f32.items()}
    ref = outs["channels_last"]
    rel = float(np.linalg.norm(outs["channels_first"] - ref) / np.linalg.norm(ref))
    print(f"embedding rel. L2 difference channels-first vs channels-last at f32: {rel:.2e}", flush=True)
    if rel > 1e-4:
        raise SystemExit("the two graphs disagree: not the same network")
    result: dict = {"embedding_rel_l2_f32": rel, "runs": args.runs, "threads": 2, "hint": "LATENCY",
                    "openvino": ov.__version__, "machine": platform.processor() or platform.machine(), "ms": {}}
    result["ms"]["f32"] = timed(f32)
    del f32
    result["ms"]["bf16"] = timed(compiled(models, "bf16"))
    import nncf

    data = nncf.Dataset([it.tensor for it in items])
    quantized = {k: nncf.quantize(m, data, model_type=nncf.ModelType.TRANSFORMER, subset_size=len(items))
                 for k, m in models.items()}
    result["ms"]["int8 (PTQ, f32 rest)"] = timed(compiled(quantized, "f32"))
    result["int8_calibration_images"] = len(items)
    for mode, row in result["ms"].items():
        row["ratio"] = round(row["channels_first"] / row["channels_last"], 3)
        print(f"{mode:22s} channels-last {row['channels_last']:7.1f} ms  channels-first {row['channels_first']:7.1f} ms"
              f"  ratio {row['ratio']:.3f}", flush=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
