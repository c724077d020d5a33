#!/usr/bin/env python
"""Quantization-aware fine-tuning of the encoder against the FP32 model (issue 3; needs torch + nncf).

    python calibration/qat.py train --steps 400 --out <cache>/quantize/qat   # fine-tune, checkpoint every --save-every
    python calibration/qat.py eval --ckpt <cache>/quantize/qat/student_400.pt    # torch eval on val (emb. error, DSC)
    python calibration/qat.py export --ckpt ... --xml <cache>/quantize/variants/encoder_qat.xml

How it works:

1. NNCF places the quantizers on the torch encoder (``nncf.quantize``, TRANSFORMER type, 64 calib images) with
   ``FLOAT_LAYERS[float_layers]`` kept in float (default ``tr_3``: stem + the first MBConv's expand conv) and, in
   addition, the internals of the LayerNorms written out over channels (neck, MLPs): an 8-bit quantizer on
   ``variance + eps`` rounds it to 0 and the CPU plugin's fused graph returns inf.
2. Every NNCF quantizer is replaced by a fixed fake-quantizer with an integer zero point (``FixedFQ``:
   ``torch.fake_quantize_per_{tensor,channel}_affine``, the ops OpenVINO converts to FakeQuantize), initialised from
   NNCF's ranges. What is trained is exactly what is exported; NNCF's own quantizers keep a non-integer zero
   point that no exportable op expresses.
3. The student's weights (ranges fixed) are fine-tuned with the straight-through estimator to match the FP32
   teacher: loss = relative squared embedding error + mask-logit error through the frozen FP32 decoder on the
   image's calibration boxes. Adam, cosine learning rate, one image per step, calib images in the seeded order.
4. ``export``: torch.export + ``ov.convert_model`` -> an IR with FakeQuantize nodes that the CPU plugin runs in INT8.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import types
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from calibration import quantize as q  # noqa: E402
from medsam_edge import kernels  # noqa: E402
from medsam_edge.export import fetch_checkpoint, load_litemedsam  # noqa: E402
from medsam_edge.export.architecture import DecoderGraph, EncoderGraph  # noqa: E402

#: NNCF torch node-name patterns always kept in float: the LayerNorms' internals (an 8-bit quantizer on
#: ``variance + eps`` rounds it to 0; see the module docstring). Their outputs are still quantized where a quantized
#: layer reads them.
NORM_PATTERNS = (r".*neck/[13]/.*", r".*mlp/norm/.*")
#: which convolutions stay in float, by name: ``tr_3`` = the stem's two 1x1 convs + the first MBConv's 1x1 expand conv
#: (the PTQ recipe's choice), ``stem`` = the stem's two only
FLOAT_LAYERS = {"tr_3": (r".*patch_embed.*", r".*encoder/conv1/c/conv2d/0$"), "stem": (r".*patch_embed.*",)}
CALIB_SUBSET = 64


class FixedFQ:
    """Forward of a fixed fake-quantizer (integer zero point), bound onto an NNCF quantizer module."""

    @staticmethod
    def bind(module) -> None:
        with torch.no_grad():
            qmin, qmax, scale, zp = module.get_parameters_for_torch_fq()
        axis = int(np.argmax(module.scale_shape)) if module.per_channel else None
        scale = scale.detach().reshape(-1).float().clone()
        zp = zp.detach().reshape(-1).to(torch.int32).clone()
        module.register_buffer("fq_scale", scale if axis is not None else scale[:1].clone())
        module.register_buffer("fq_zero_point", zp if axis is not None else zp[:1].clone())
        module.fq_meta = (int(qmin), int(qmax), axis, bool(int(module.enabled[0]) == 1))
        module.forward = types.MethodType(FixedFQ.forward, module)
        FixedFQ.refresh(module)

    @staticmethod
    def refresh(module) -> None:
        """Per-tensor scale / zero point as Python numbers (torch.export cannot read a buffer into a scalar)."""
        module.fq_tensor = (float(module.fq_scale[0]), int(module.fq_zero_point[0]))

    @staticmethod
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qmin, qmax, axis, on = self.fq_meta
        if not on:
            return x
        if axis is not None:
            return torch.fake_quantize_per_channel_affine(x, self.fq_scale, self.fq_zero_point, axis, qmin, qmax)
        return torch.fake_quantize_per_tensor_affine(x, self.fq_tensor[0], self.fq_tensor[1], qmin, qmax)


def load_teacher():
    model = load_litemedsam(fetch_checkpoint())
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def build_student(items: list[q.Item], subset: int = CALIB_SUBSET, log=print, state: str | None = None,
                  float_layers: str = "tr_3"):
    """NNCF-placed quantizers on a fresh FP32 encoder (``FLOAT_LAYERS[float_layers]`` and the norms in float),
    replaced by :class:`FixedFQ`. With ``state`` (a saved student), NNCF only builds the structure (2 images) and the
    weights, ranges and SmoothQuant scales come from it."""
    if state:
        subset = 2
    import nncf
    import nncf.torch.quantization.layers as layers

    encoder = EncoderGraph(load_litemedsam(fetch_checkpoint())).eval()
    data = [torch.from_numpy(it.tensor) for it in items[:subset]]
    t0 = time.perf_counter()
    student = nncf.quantize(
        encoder, nncf.Dataset(data), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(data),
        ignored_scope=nncf.IgnoredScope(patterns=list(FLOAT_LAYERS[float_layers] + NORM_PATTERNS), validate=False),
    )
    count = 0
    for module in student.modules():
        if isinstance(module, layers.BaseQuantizer):
            FixedFQ.bind(module)
            count += 1
    if state:
        student.load_state_dict(torch.load(state, weights_only=True))
        for module in student.modules():
            if isinstance(module, layers.BaseQuantizer):
                FixedFQ.refresh(module)
    log(f"student: {count} quantizers (NNCF placement, {len(data)} calib images, {time.perf_counter() - t0:.0f} s)")
    return student.eval()


def teacher_targets(teacher, decoder, tensor: torch.Tensor, boxes: torch.Tensor):
    with torch.no_grad():
        emb = EncoderGraph(teacher)(tensor)
        logits, _ = decoder(emb, boxes)
    return emb, logits


def losses(student_emb, t_emb, decoder, boxes, t_logits, logit_weight: float):
    emb_loss = ((student_emb - t_emb) ** 2).sum() / (t_emb ** 2).sum()
    if logit_weight <= 0:
        return emb_loss, emb_loss.detach() * 0
    logits, _ = decoder(student_emb, boxes)
    # where the mask decision happens: weight errors by the teacher's sigmoid slope (|logit| small -> large weight)
    w = torch.sigmoid(t_logits) * (1 - torch.sigmoid(t_logits)) * 4
    logit_loss = (w * (logits - t_logits) ** 2).mean()
    return emb_loss + logit_weight * logit_loss, logit_loss.detach()


def cmd_train(args) -> int:
    train(q.calibration_items(), steps=args.steps, lr=args.lr, accum=args.accum, logit_weight=args.logit_weight,
          subset=args.subset, out=Path(args.out), resume=args.resume, save_every=args.save_every, threads=args.threads,
          float_layers=args.float_layers)
    return 0


def train(items: list[q.Item], *, steps: int, lr: float, accum: int = 4, logit_weight: float = 1.0,
          subset: int = CALIB_SUBSET, out: Path, resume: str | None = None, save_every: int = 60,
          threads: int = 2, stop: int | None = None, float_layers: str = "tr_3") -> Path:
    """Fine-tune a student on ``steps`` images (cosine learning rate from ``lr`` over ``steps``), stopping after
    ``stop`` images if given; returns the last checkpoint (``student_<images>.pt`` in ``out``).

    ``out`` holds one schedule: if it already has checkpoints of this schedule (same steps, lr, accum, logit weight,
    subset in its ``train_log.json``) below ``stop``, training continues after the latest one at its place in the
    schedule (with its optimiser state when saved, else a fresh Adam)."""
    config = {"steps": steps, "stop": stop, "lr": lr, "accum": accum, "logit_weight": logit_weight,
              "subset": subset, "resume": resume, "float_layers": float_layers}
    stop = min(stop or steps, steps)
    torch.manual_seed(0)
    torch.set_num_threads(threads)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    teacher = load_teacher()
    decoder = DecoderGraph(teacher).eval()
    init = out / f"student_0_s{subset}.pt"
    start, log = (0, []) if resume else latest_checkpoint(out, config, stop)
    state = resume or (str(out / f"student_{start}.pt") if start else str(init) if init.is_file() else None)
    student = build_student(items, subset, state=state, float_layers=float_layers)
    if not init.is_file():
        torch.save(student.state_dict(), init)
    params = []
    for name, p in student.named_parameters():
        if not p.requires_grad:
            continue
        if "nncf" in name.split(".")[0]:  # NNCF's quantizer ranges (__nncf_hooks...) are unused by FixedFQ: frozen
            p.requires_grad_(False)
        else:
            params.append(p)
    opt = torch.optim.Adam(params, lr=lr)
    if start and (out / f"optim_{start}.pt").is_file():
        opt.load_state_dict(torch.load(out / f"optim_{start}.pt", weights_only=True))
    if start:
        print(f"continuing the schedule after image {start} ({out / f'student_{start}.pt'})", flush=True)
    opt.zero_grad(set_to_none=True)
    cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    t0 = time.perf_counter() - (log[-1]["seconds"] if log else 0.0)
    order = np.random.default_rng(1).permutation(len(items))
    for step in range(start + 1, stop + 1):
        rate = lr * 0.5 * (1 + math.cos(math.pi * (step - 1) / steps))
        for g in opt.param_groups:
            g["lr"] = rate
        idx = int(order[(step - 1) % len(items)])
        it = items[idx]
        x = torch.from_numpy(it.tensor)
        boxes = torch.from_numpy(np.ascontiguousarray(it.boxes256, np.float32))
        if idx not in cache:
            cache[idx] = teacher_targets(teacher, decoder, x, boxes)
        t_emb, t_logits = cache[idx]
        loss, logit_loss = losses(student(x), t_emb, decoder, boxes, t_logits, logit_weight)
        (loss / accum).backward()
        if step % accum == 0:  # one optimiser step per `accum` images
            opt.step()
            opt.zero_grad(set_to_none=True)
        log.append({"step": step, "loss": float(loss.detach()), "logit_loss": float(logit_loss), "lr": rate,
                    "seconds": round(time.perf_counter() - t0, 1)})
        if step % 10 == 0 or step == 1:
            recent = log[-10:]
            print(f"step {step}: loss {np.mean([r['loss'] for r in recent]):.5f} "
                  f"(logit {np.mean([r['logit_loss'] for r in recent]):.5f}) lr {rate:.2e} {log[-1]['seconds']} s",
                  flush=True)
        if step % save_every == 0 or step == stop:
            ckpt, optim = out / f"student_{step}.pt", out / f"optim_{step}.pt"
            torch.save(opt.state_dict(), optim.with_suffix(".tmp"))
            optim.with_suffix(".tmp").replace(optim)
            torch.save(student.state_dict(), ckpt.with_suffix(".tmp"))
            ckpt.with_suffix(".tmp").replace(ckpt)
            (out / "train_log.json").write_text(json.dumps({"args": config, "log": log}))
    return out / f"student_{stop}.pt"


def latest_checkpoint(out: Path, config: dict, stop: int) -> tuple[int, list[dict]]:
    """(images done, their log) of the latest checkpoint of ``config``'s schedule in ``out`` below ``stop``."""
    try:
        saved = json.loads((out / "train_log.json").read_text())
    except (OSError, ValueError):
        return 0, []
    keys = ("steps", "lr", "accum", "logit_weight", "subset", "float_layers")
    if any(saved.get("args", {}).get(k, "tr_3" if k == "float_layers" else None) != config[k] for k in keys):
        return 0, []
    done = [int(f.stem.split("_")[1]) for f in out.glob("student_*.pt") if f.stem.split("_")[1].isdigit()]
    done = [k for k in done if 0 < k < stop]
    if not done:
        return 0, []
    start = max(done)
    return start, [r for r in saved.get("log", []) if r["step"] <= start]


def evaluate_torch(student, teacher, items: list[q.Item]) -> dict:
    """Relative embedding error and mask DSC vs FP32 (torch, eager) on ``items``."""
    decoder = DecoderGraph(teacher).eval()
    errs, dscs = [], []
    with torch.no_grad():
        for it in items:
            x = torch.from_numpy(it.tensor)
            boxes = torch.from_numpy(np.ascontiguousarray(it.boxes256, np.float32))
            t_emb, t_logits = teacher_targets(teacher, decoder, x, boxes)
            s_emb = student(x)
            s_logits, _ = decoder(s_emb, boxes)
            errs.append(float((s_emb - t_emb).norm() / t_emb.norm()))
            shape = (it.frame.height, it.frame.width)
            mt = kernels.postprocess(t_logits.numpy()[:, 0], it.frame.resized, shape)
            ms = kernels.postprocess(s_logits.numpy()[:, 0], it.frame.resized, shape)
            dscs += [q.dice(a, b) for a, b in zip(mt, ms)]
    d = np.array(dscs)
    return {"images": len(items), "boxes": len(d), "emb_error": float(np.mean(errs)), "dsc_mean": float(d.mean()),
            "dsc_p5": float(np.percentile(d, 5)), "dsc_min": float(d.min())}


def cmd_eval(args) -> int:
    torch.set_num_threads(args.threads)
    items = q.calibration_items()
    teacher = load_teacher()
    student = build_student(items, args.subset, state=args.ckpt, float_layers=args.float_layers)
    val = q.val_items()[: args.images] if args.images else q.val_items()
    print(json.dumps(evaluate_torch(student, teacher, val)))
    return 0


def export_student(student, xml: Path) -> Path:
    import warnings

    import openvino as ov

    from medsam_edge.export.convert import ENCODER_INPUTS, ENCODER_OUTPUTS, compact_attention_biases, name_ports

    x = torch.zeros(1, 3, 256, 256)
    with torch.no_grad():
        program = torch.export.export(student.eval(), (x,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model = ov.convert_model(program, input=[([1, 3, 256, 256], ov.Type.f32)])
    name_ports(model, ENCODER_INPUTS, ENCODER_OUTPUTS)
    # the folded TinyViT bias tables back to their small gather subgraphs (the student's own, trained, biases)
    compact_attention_biases(model, types.SimpleNamespace(image_encoder=student.encoder))
    xml.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, xml, compress_to_fp16=False)
    return xml


def cmd_export(args) -> int:
    items = q.calibration_items()
    student = build_student(items, args.subset, state=args.ckpt, float_layers=args.float_layers)
    print(export_student(student, Path(args.xml)))
    return 0


def cmd_ov_eval(args) -> int:
    """The exported IR through OpenVINO on the val split, like quantize.py's frontier (FP32 decoder, f32 execution):
    DSC vs FP32 / vs GT, embedding error, encoder ms interleaved with the FP32 IR and the shipped int8 encoder."""
    import openvino as ov

    enc_fp32, dec_fp32 = q.fp32_pair()
    specs = [q.PairSpec("qat", Path(args.xml), dec_fp32)]
    shipped = REPO / "medsam_edge" / "models" / "encoder_int8.xml"
    if shipped.is_file():
        specs.append(q.PairSpec("shipped int8", shipped, dec_fp32))
    items = q.val_items()[: args.images] if args.images else q.val_items()
    results = q.evaluate(specs, items, q.PairSpec("fp32", enc_fp32, dec_fp32), runs=args.runs)
    core = ov.Core()
    ref = q.compile_model(enc_fp32, core=core)
    for spec in specs:
        enc = q.compile_model(spec.encoder, core=core)
        errs = [float(np.linalg.norm(a - b) / np.linalg.norm(a))
                for a, b in zip(q.run_encoder(ref, (it.tensor for it in items)),
                                q.run_encoder(enc, (it.tensor for it in items)))]
        results[spec.name]["emb_error"] = float(np.mean(errs))
    for name, row in results.items():
        row["encoder_ratio_vs_fp32"] = round(row["encoder_ms"] / results["fp32"]["encoder_ms"], 3)
    print(json.dumps(results, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--steps", type=int, default=400)
    t.add_argument("--lr", type=float, default=1e-5)
    t.add_argument("--logit-weight", type=float, default=1.0)
    t.add_argument("--save-every", type=int, default=50)
    t.add_argument("--accum", type=int, default=1, help="images per optimiser step (gradient accumulation)")
    t.add_argument("--out", default=str(q.work_dir() / "qat"))
    t.add_argument("--resume", default=None)
    e = sub.add_parser("eval")
    e.add_argument("--ckpt", default=None)
    e.add_argument("--images", type=int, default=0)
    x = sub.add_parser("export")
    x.add_argument("--ckpt", default=None)
    x.add_argument("--xml", required=True)
    o = sub.add_parser("ov-eval")
    o.add_argument("--xml", required=True)
    o.add_argument("--images", type=int, default=0)
    o.add_argument("--runs", type=int, default=15)
    o.add_argument("--json", default=None)
    for p in (t, e, x):
        p.add_argument("--subset", type=int, default=CALIB_SUBSET)
        p.add_argument("--threads", type=int, default=2)
        p.add_argument("--float-layers", default="tr_3", choices=sorted(FLOAT_LAYERS))
    args = ap.parse_args(argv)
    return {"train": cmd_train, "eval": cmd_eval, "export": cmd_export, "ov-eval": cmd_ov_eval}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
