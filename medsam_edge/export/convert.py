"""Torch -> OpenVINO IR export of LiteMedSAM (``torch.export`` + ``ov.convert_model``, no ONNX), with a parity check.

Two IRs are written::

    encoder_<tag>.xml/.bin  image (1, 3, 256, 256) f32 -> embedding (1, 256, 64, 64) f32
    decoder_<tag>.xml/.bin  embedding (1, 256, 64, 64) f32 + boxes (B, 4) f32, XYXY in 256 space
                            -> low_res_logits (B, 1, 256, 256) f32 (mask = logit > 0), iou (B, 1) f32

Keeping the files small: OpenVINO folds everything computed from weights alone into constants. Two such folds are
large and cheap to recompute, so after conversion they are replaced by the small subgraphs that produce them (the
CPU plugin folds them again at compile time, so inference speed is unchanged):

* TinyViT's attention-bias tables (heads, w*w, w*w), gathered from (heads, w*w) learned biases (stage 2 alone:
  6 x 5 x 196 x 196 values);
* the decoder's dense positional encoding (1, 4096, 256), Fourier features of the grid from a (2, 128) matrix.

FP16 storage, precisely: every *small* f32 constant (at most 4096 values: biases, norm parameters, BatchNorm shifts
folded into convolution biases, the Fourier matrix, scalars) is stored as the sum of two FP16 constants
``hi + lo`` (``hi = fp16(x)``, ``lo = fp16(x - hi)``; ~2**-22 relative error), costing ~0.1 MB in all. Measured on
this checkpoint, rounding those few values to FP16 caused more than half of the FP16 encoder's error (embedding
relative L2 0.69% -> 0.29%), and the Fourier matrix, multiplied by 2*pi before ``sin``/``cos``, turns FP16
rounding into phase errors of ~1e-2. Large weight matrices are stored in plain FP16.
"""

from __future__ import annotations

import importlib
import math
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
import openvino.opset13 as ops
import torch

from ..errors import ExportError
from .architecture import EncoderGraph, LiteMedSAM, load_litemedsam
from .checkpoint import CHECKPOINT_SHA256, SOURCE_REQUIREMENT, WHEEL_MEMBER, fetch_checkpoint, file_sha256
from .factored_decoder import FactoredDecoderGraph
from .passes import apply_encoder_passes
from .row_strips import ENCODER_ROW_STRIPS

ENCODER_INPUTS = ("image",)
ENCODER_OUTPUTS = ("embedding",)
DECODER_INPUTS = ("embedding", "boxes")
DECODER_OUTPUTS = ("low_res_logits", "iou")
MODEL_INFO = "model_info"
INPUT_SIZE = 256
EMBEDDING_SIZE = 64
MASK_THRESHOLD = 0.0
SMALL_CONSTANT_VALUES = 4096  # constants up to this many values keep ~fp32 precision in FP16 IRs

# Parity gates (IR executed at f32 vs torch): relative L2 error of the embedding, worst mask DSC.
PARITY_LIMITS = {
    "fp32": {"embedding_rel_l2": 1e-4, "mask_dsc_min": 0.995},
    "fp16": {"embedding_rel_l2": 1e-2, "mask_dsc_min": 0.98},
}

Builder = Callable[[tuple[int, ...]], ov.Output]


# --------------------------------------------------------------------------------------------------- conversion


def _to_openvino(
    graph: torch.nn.Module,
    example: tuple[torch.Tensor, ...],
    inputs: list[tuple[list[int], ov.Type]],
    dynamic_shapes: dict[str, Any] | None = None,
) -> ov.Model:
    """torch.export the module (no TorchScript tracing), then convert it with the given input shapes/types."""
    with torch.no_grad():
        program = torch.export.export(graph.eval(), example, dynamic_shapes=dynamic_shapes)
    with warnings.catch_warnings():  # openvino's torch frontend still uses a pytree API torch deprecates
        warnings.simplefilter("ignore", FutureWarning)
        return ov.convert_model(program, input=inputs)


def convert_encoder(model: LiteMedSAM, report: dict[str, Any] | None = None) -> ov.Model:
    """FP32 in-memory IR of the encoder, ports named ``image`` -> ``embedding``, bias tables compacted.

    ``report`` (optional) receives ``attention_bias_tables``: how many folded tables were replaced.
    """
    size = [1, 3, INPUT_SIZE, INPUT_SIZE]
    ov_model = _to_openvino(EncoderGraph(model), (torch.rand(size),), [(size, ov.Type.f32)])
    name_ports(ov_model, ENCODER_INPUTS, ENCODER_OUTPUTS)
    replaced = compact_attention_biases(ov_model, model)
    if report is not None:
        report["attention_bias_tables"] = replaced
    return ov_model


def convert_decoder(model: LiteMedSAM, report: dict[str, Any] | None = None) -> ov.Model:
    """FP32 in-memory IR of the decoder (batch of boxes dynamic), ports named, positional encoding compacted.

    The graph exported is :class:`~.factored_decoder.FactoredDecoderGraph` (same function and weights as
    ``DecoderGraph``, re-associated for fewer operations per box); parity is still checked against ``DecoderGraph``.
    ``report`` (optional) receives ``positional_encoding``: how many folded encodings were replaced.
    """
    embedding = torch.rand(1, 256, EMBEDDING_SIZE, EMBEDDING_SIZE)
    boxes = torch.tensor([[10.0, 20.0, 200.0, 220.0], [40.0, 30.0, 90.0, 120.0]])
    ov_model = _to_openvino(
        FactoredDecoderGraph(model.prompt_encoder, model.mask_decoder),
        (embedding, boxes),
        [(list(embedding.shape), ov.Type.f32), ([-1, 4], ov.Type.f32)],
        dynamic_shapes={"embedding": None, "boxes": {0: torch.export.Dim("boxes", min=1, max=65536)}},
    )
    name_ports(ov_model, DECODER_INPUTS, DECODER_OUTPUTS)
    replaced = compact_positional_encoding(ov_model, model)
    if report is not None:
        report["positional_encoding"] = replaced
    return ov_model


def name_ports(ov_model: ov.Model, inputs: tuple[str, ...], outputs: tuple[str, ...]) -> None:
    """Give the model's inputs/outputs exactly these tensor names, in order."""
    if len(ov_model.inputs) != len(inputs) or len(ov_model.outputs) != len(outputs):
        raise ExportError(
            f"converted model has {len(ov_model.inputs)} inputs / {len(ov_model.outputs)} outputs, "
            f"expected {len(inputs)} / {len(outputs)}"
        )
    for port, name in zip(ov_model.inputs, inputs, strict=True):
        port.get_tensor().set_names({name})
    for port, name in zip(ov_model.outputs, outputs, strict=True):
        port.get_tensor().set_names({name})


# ------------------------------------------------------------------------------------------------ compaction


def _constants(ov_model: ov.Model, size: int | None = None) -> list[ov.Node]:
    """f32 Constant nodes of ``ov_model`` (optionally only those with ``size`` elements)."""
    found = []
    for node in ov_model.get_ordered_ops():
        if node.get_type_name() != "Constant" or node.get_output_element_type(0) != ov.Type.f32:
            continue
        if size is None or int(np.prod(node.get_output_shape(0), dtype=np.int64)) == size:
            found.append(node)
    return found


def _replace(node: ov.Node, builder: Builder) -> None:
    """Reroute every consumer of constant ``node`` to ``builder(shape)`` (an output of the same shape)."""
    replacement = builder(tuple(node.get_output_shape(0)))
    for target in list(node.output(0).get_target_inputs()):
        target.replace_source_output(replacement)


def _shape_const(shape: tuple[int, ...]) -> ov.Node:
    return ops.constant(np.array(shape, dtype=np.int64))


def _bias_table_builder(biases: np.ndarray, window: int, distance: ov.Node) -> Builder:
    """Subgraph (heads, w*w) learned biases -> (heads, w*w, w*w) table; see ``tinyvit.relative_offset_index``.

    table[h, (yi, xi), (yj, xj)] = biases[h, |yi - yj| * w + |xi - xj|]: two gathers with the (w, w) matrix
    |a - b| along the y and x offset axes, then a transpose to (h, yi, xi, yj, xj).
    """
    heads = biases.shape[0]

    def build(shape: tuple[int, ...]) -> ov.Output:
        grid = ops.constant(biases.reshape(heads, window, window).astype(np.float32))
        by_y = ops.gather(grid, distance, ops.constant(np.int64(1)))  # (h, yi, yj, dx)
        by_xy = ops.gather(by_y, distance, ops.constant(np.int64(3)))  # (h, yi, yj, xi, xj)
        ordered = ops.transpose(by_xy, ops.constant(np.array([0, 1, 3, 2, 4], dtype=np.int64)))
        return ops.reshape(ordered, _shape_const(shape), special_zero=False).output(0)

    return build


def compact_attention_biases(ov_model: ov.Model, model: LiteMedSAM) -> int:
    """Replace folded TinyViT bias tables by their gather subgraphs; returns how many were replaced."""
    wanted: dict[bytes, Builder] = {}
    sizes = set()
    distances: dict[int, ov.Node] = {}
    for attn in model.image_encoder.attention_modules():
        window = attn.window
        if window not in distances:
            axis = np.arange(window)
            distances[window] = ops.constant(np.abs(axis[:, None] - axis[None, :]).astype(np.int32))
        with torch.no_grad():
            table = attn.bias_table().numpy().astype(np.float32)
            biases = attn.attention_biases.numpy()
        wanted[table.tobytes()] = _bias_table_builder(biases, window, distances[window])
        sizes.add(table.size)
    replaced = 0
    for node in _constants(ov_model):
        if int(np.prod(node.get_output_shape(0), dtype=np.int64)) not in sizes:
            continue
        builder = wanted.get(node.get_data().astype(np.float32).tobytes())
        if builder is not None:
            _replace(node, builder)
            replaced += 1
    ov_model.validate_nodes_and_infer_types()
    return replaced


def _split_constant(values: np.ndarray) -> ov.Output:
    """``values`` as Add(hi, lo) of two FP16-exact f32 constants, ~2**-22 relative error after FP16 storage."""
    values = values.astype(np.float32)
    hi = values.astype(np.float16).astype(np.float32)
    lo = (values - hi).astype(np.float16).astype(np.float32)
    return ops.add(ops.constant(hi), ops.constant(lo)).output(0)


def _fourier_builder(gaussian: np.ndarray) -> Builder:
    """Subgraph producing the (1, H*W, C) grid encoding: [sin, cos]((2 * centres - 1) @ (2*pi * G)).

    2*pi is folded into the matrix (in float64) so that no scalar is left to FP16 rounding.
    """
    scaled = (2.0 * math.pi * gaussian.astype(np.float64)).astype(np.float32)

    def build(shape: tuple[int, ...]) -> ov.Output:
        side = EMBEDDING_SIZE
        centres = (np.arange(side, dtype=np.float32) + 0.5) / side
        xy = np.stack([np.tile(centres, side), np.repeat(centres, side)], axis=-1)  # row-major grid, (x, y)
        unit = ops.constant((2.0 * xy - 1.0).astype(np.float32))  # exact in FP16: odd multiples of 1/64
        phase = ops.matmul(unit, ops.constant(scaled), False, False)
        features = ops.concat([ops.sin(phase), ops.cos(phase)], axis=-1)  # (H*W, C)
        return ops.reshape(features, _shape_const(shape), special_zero=False).output(0)

    return build


def compact_positional_encoding(ov_model: ov.Model, model: LiteMedSAM) -> int:
    """Replace the folded dense positional encoding by its Fourier subgraph; returns how many were replaced."""
    with torch.no_grad():
        dense = model.prompt_encoder.positional_tokens().numpy()  # (1, H*W, C)
        gaussian = model.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix.numpy()
    replaced = 0
    for node in _constants(ov_model, dense.size):
        if np.allclose(node.get_data().reshape(dense.shape), dense, rtol=0.0, atol=1e-5):
            _replace(node, _fourier_builder(gaussian))
            replaced += 1
    ov_model.validate_nodes_and_infer_types()
    return replaced


def _split_builder(values: np.ndarray) -> Builder:
    return lambda shape: _split_constant(values.reshape(shape))


def keep_small_constants_precise(ov_model: ov.Model, max_values: int = SMALL_CONSTANT_VALUES) -> int:
    """Before saving with FP16 weights: store each small f32 constant as an FP16 hi + lo pair (see module doc).

    Constants with at most ``max_values`` values (biases, norm parameters, BN shifts, the Fourier matrix, scalars)
    are replaced by ``Add(hi, lo)`` unless FP16 already holds them exactly. Returns how many were replaced.
    """
    replaced = 0
    for node in _constants(ov_model):
        values = node.get_data()
        if values.size > max_values or np.array_equal(values.astype(np.float16).astype(np.float32), values):
            continue
        _replace(node, _split_builder(values.copy()))
        replaced += 1
    ov_model.validate_nodes_and_infer_types()
    return replaced


# ------------------------------------------------------------------------------------------------- metadata


def _package_version() -> str:
    try:
        return str(getattr(importlib.import_module("medsam_edge"), "__version__", "unknown"))
    except Exception:  # pragma: no cover - the package is importable whenever this module is
        return "unknown"


def model_info(kind: str, storage: str, checkpoint_sha256: str) -> dict[str, str]:
    """The ``model_info`` rt_info entries of an exported IR (all values as strings)."""
    return {
        "model_type": f"litemedsam_{kind}",
        "input_size": str(INPUT_SIZE),
        "embedding_size": str(EMBEDDING_SIZE),
        "mask_threshold": str(MASK_THRESHOLD),
        "mask_threshold_kind": "logit",
        "source_package": SOURCE_REQUIREMENT,
        "source_file": WHEEL_MEMBER,
        "checkpoint_sha256": checkpoint_sha256,
        "weights_storage": storage,
        "openvino_version": ov.get_version(),
        "torch_version": torch.__version__,
        "medsam_edge_version": _package_version(),
    }


def set_model_info(ov_model: ov.Model, info: dict[str, str]) -> None:
    """Store ``info`` under ``rt_info["model_info"]`` (saved into the IR's XML)."""
    for key, value in info.items():
        ov_model.set_rt_info(str(value), [MODEL_INFO, key])


def read_model_info(ov_model: ov.Model) -> dict[str, str]:
    """The ``model_info`` section of an IR's rt_info as a str -> str dict (empty if absent)."""
    if not ov_model.has_rt_info([MODEL_INFO]):
        return {}
    section = ov_model.get_rt_info([MODEL_INFO])
    return {key: value.astype(str) for key, value in section.astype(dict).items()}


# --------------------------------------------------------------------------------------------------- parity


def parity_inputs() -> tuple[np.ndarray, np.ndarray]:
    """A deterministic grey test image (1, 3, 256, 256) in [0, 1] with two blobs, and 4 boxes (4, 4) around them."""
    yy, xx = np.mgrid[0:INPUT_SIZE, 0:INPUT_SIZE].astype(np.float32) / (INPUT_SIZE - 1)
    blob = np.exp(-((xx - 0.32) ** 2 + (yy - 0.38) ** 2) / 0.012)
    disk = (((xx - 0.70) ** 2 + (yy - 0.66) ** 2) < 0.11**2).astype(np.float32)
    noise = np.random.default_rng(0).normal(0.0, 0.03, size=xx.shape).astype(np.float32)
    grey = 0.15 + 0.6 * blob + 0.45 * disk + 0.08 * np.sin(9 * xx) * np.cos(7 * yy) + noise
    grey = (grey - grey.min()) / (grey.max() - grey.min())
    image = np.ascontiguousarray(np.broadcast_to(grey, (1, 3, INPUT_SIZE, INPUT_SIZE)), dtype=np.float32)
    boxes = np.array(
        [[45, 55, 120, 140], [145, 138, 215, 202], [30, 30, 230, 230], [150, 40, 200, 90]], dtype=np.float32
    )
    return image, boxes


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice similarity of two boolean masks (1.0 when both are empty)."""
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def compile_f32(core: ov.Core, model: ov.Model | str | os.PathLike, threads: int = 2) -> ov.CompiledModel:
    """Compile for CPU with f32 execution forced (this CPU would otherwise run FP32 IRs in bf16)."""
    return core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads})


def compare_with_torch(
    model: LiteMedSAM, encoder: ov.CompiledModel, decoder: ov.CompiledModel,
    image: np.ndarray, boxes: np.ndarray,
) -> dict[str, float]:
    """IR vs torch on one image (1, 3, 256, 256) and boxes (B, 4): embedding errors, logit/IoU errors, mask DSC.

    The decoder IR gets the *torch* embedding so that decoder and encoder errors are measured separately;
    the masks also go through the IR embedding (end-to-end DSC).
    """
    torch_embedding, torch_logits, torch_iou = (t.numpy() for t in model.segment(
        torch.from_numpy(image), torch.from_numpy(boxes)))
    ir_embedding = encoder({ENCODER_INPUTS[0]: image})[ENCODER_OUTPUTS[0]].copy()
    same_in = decoder({DECODER_INPUTS[0]: torch_embedding, DECODER_INPUTS[1]: boxes})
    logits_same_in = same_in[DECODER_OUTPUTS[0]].copy()
    iou_same_in = same_in[DECODER_OUTPUTS[1]].copy()
    end_to_end = decoder({DECODER_INPUTS[0]: ir_embedding, DECODER_INPUTS[1]: boxes})[DECODER_OUTPUTS[0]].copy()
    single = decoder({DECODER_INPUTS[0]: torch_embedding, DECODER_INPUTS[1]: boxes[:1]})[DECODER_OUTPUTS[0]].copy()
    if single.shape != (1, 1, INPUT_SIZE, INPUT_SIZE) or end_to_end.shape != torch_logits.shape:
        raise ExportError(f"decoder IR output shapes {single.shape} / {end_to_end.shape} are wrong")

    diff = ir_embedding - torch_embedding
    reference_masks = torch_logits > MASK_THRESHOLD
    dsc = [dice(reference_masks[i], end_to_end[i] > MASK_THRESHOLD) for i in range(len(boxes))]
    return {
        "embedding_max_abs": float(np.abs(diff).max()),
        "embedding_rel_l2": float(np.linalg.norm(diff) / np.linalg.norm(torch_embedding)),
        "embedding_rel_max": float(np.abs(diff).max() / np.abs(torch_embedding).max()),
        "decoder_logits_max_abs": float(np.abs(logits_same_in - torch_logits).max()),
        "decoder_iou_max_abs": float(np.abs(iou_same_in - torch_iou).max()),
        "decoder_single_box_max_abs": float(np.abs(single[0] - torch_logits[0]).max()),
        "decoder_mask_dsc_min": min(
            dice(reference_masks[i], logits_same_in[i] > MASK_THRESHOLD) for i in range(len(boxes))),
        "mask_dsc_min": float(min(dsc)),
        "mask_dsc_mean": float(np.mean(dsc)),
    }


def check_parity(
    model: LiteMedSAM, encoder_xml: Path, decoder_xml: Path, storage: str, threads: int = 2
) -> dict[str, float]:
    """Run the saved IRs once at f32 on :func:`parity_inputs` and gate them against torch (raises ExportError)."""
    core = ov.Core()
    image, boxes = parity_inputs()
    metrics = compare_with_torch(
        model, compile_f32(core, encoder_xml, threads), compile_f32(core, decoder_xml, threads), image, boxes
    )
    limits = PARITY_LIMITS[storage]
    if metrics["embedding_rel_l2"] > limits["embedding_rel_l2"] or metrics["mask_dsc_min"] < limits["mask_dsc_min"]:
        raise ExportError(f"exported IRs ({storage}) disagree with torch beyond {limits}: {metrics}")
    return metrics


# -------------------------------------------------------------------------------------------------- export


def _save_pair(
    encoder: ov.Model, decoder: ov.Model, folder: Path, tag: str, compress_to_fp16: bool
) -> tuple[Path, Path]:
    encoder_xml = folder / f"encoder_{tag}.xml"
    decoder_xml = folder / f"decoder_{tag}.xml"
    ov.save_model(encoder, encoder_xml, compress_to_fp16=compress_to_fp16)
    ov.save_model(decoder, decoder_xml, compress_to_fp16=compress_to_fp16)
    return encoder_xml, decoder_xml


def _install(files: list[Path], out_dir: Path) -> list[Path]:
    """Move verified files from the staging folder into ``out_dir`` (each move atomic)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    installed = []
    for path in files:
        target = out_dir / path.name
        os.replace(path, target)
        installed.append(target)
    return installed


def export_models(
    checkpoint: str | os.PathLike | None = None,
    *,
    out_dir: str | os.PathLike,
    compress_to_fp16: bool = True,
    tag: str | None = None,
    expected_sha256: str | None = CHECKPOINT_SHA256,
    verify: bool = True,
    cache_dir: str | os.PathLike | None = None,
    threads: int = 2,
    row_strips: int = ENCODER_ROW_STRIPS,
    attention_passes: bool = True,
) -> dict[str, Any]:
    """Export encoder + decoder IRs of LiteMedSAM into ``out_dir``.

    Args:
        checkpoint: state-dict file; default: the verified official checkpoint (:func:`fetch_checkpoint`).
        out_dir: destination folder; files are staged beside it and moved in only after the parity check.
        compress_to_fp16: store weights in FP16 (computation stays f32 or whatever the runtime hint says).
        tag: file-name tag, default ``"fp16"`` or ``"fp32"`` after the storage.
        expected_sha256: checksum the checkpoint must have; None for a custom (e.g. fine-tuned) checkpoint.
        verify: run both IRs once at f32 and compare with torch (raises :class:`ExportError` when off).
        cache_dir: cache for the downloaded checkpoint.
        threads: CPU threads for torch and the parity run.
        row_strips: the encoder's full-resolution part in this many row strips (:mod:`.row_strips`; same numbers,
            less working memory); 1 keeps the graph whole (what post-training quantization needs).
        attention_passes: apply :mod:`.passes` to the encoder's attention blocks (q, k, v products of their own,
            channels-last window partitions; same numbers at f32, less data movement); False keeps the graph as
            converted (the quantization base).

    Returns:
        ``{"encoder": Path, "decoder": Path, "storage", "files": {name: bytes}, "parity": {...} | None,
        "compacted": {...}, "seconds": {...}, "model_info": {...}}``.
    """
    started = time.perf_counter()
    storage = "fp16" if compress_to_fp16 else "fp32"
    path = Path(checkpoint) if checkpoint is not None else fetch_checkpoint(cache_dir)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model = load_litemedsam(path, expected_sha256)
        encoder, decoder, report = convert_pair(model, storage, file_sha256(path), row_strips, attention_passes)
        t0 = time.perf_counter()
        files, parity = _write_verified(
            model, encoder, decoder, Path(out_dir), tag or storage, storage, verify, threads
        )
        report["seconds"]["save_and_parity"] = time.perf_counter() - t0
    finally:
        torch.set_num_threads(previous_threads)
    report["seconds"]["total"] = time.perf_counter() - started
    return {
        "encoder": files[0],
        "decoder": files[2],
        "storage": storage,
        "files": {p.name: p.stat().st_size for p in files},
        "parity": parity,
        "compacted": report["compacted"],
        "seconds": report["seconds"],
        "model_info": {"encoder": read_model_info(encoder), "decoder": read_model_info(decoder)},
    }


def convert_pair(
    model: LiteMedSAM, storage: str, checkpoint_sha256: str, row_strips: int = ENCODER_ROW_STRIPS,
    attention_passes: bool = True,
) -> tuple[ov.Model, ov.Model, dict]:
    """Both in-memory IRs, ready to save with ``storage`` ("fp16" / "fp32") weights, metadata set; the encoder's
    full-resolution part in ``row_strips`` row strips (:func:`.row_strips.split_rows`, 1 = whole), its attention
    blocks rewritten by the attention passes of :func:`.passes.apply_encoder_passes` when ``attention_passes``.

    Returns (encoder, decoder, report) with ``report["compacted"]`` (replacement counts, ``encoder_row_strips``,
    ``encoder_qkv_split``, ``encoder_window_nhwc``)
    and ``report["seconds"]``.
    """
    compacted: dict[str, int] = {}
    t0 = time.perf_counter()
    encoder, counts = apply_encoder_passes(convert_encoder(model, compacted), row_strips, attention_passes)
    compacted.update(counts)
    t1 = time.perf_counter()
    decoder = convert_decoder(model, compacted)
    t2 = time.perf_counter()
    if storage == "fp16":
        compacted["precise_small_constants"] = sum(keep_small_constants_precise(m) for m in (encoder, decoder))
    set_model_info(encoder, model_info("encoder", storage, checkpoint_sha256))
    set_model_info(decoder, model_info("decoder", storage, checkpoint_sha256))
    seconds = {"convert_encoder": t1 - t0, "convert_decoder": t2 - t1}
    return encoder, decoder, {"compacted": compacted, "seconds": seconds}


def _write_verified(
    model: LiteMedSAM, encoder: ov.Model, decoder: ov.Model, out: Path, tag: str, storage: str, verify: bool,
    threads: int,
) -> tuple[list[Path], dict[str, float] | None]:
    """Save the pair in a staging folder inside ``out``, check parity, then move the 4 files into ``out``.

    Returns ([encoder.xml, encoder.bin, decoder.xml, decoder.bin] in ``out``, parity metrics or None).
    """
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=out))
    try:
        encoder_xml, decoder_xml = _save_pair(encoder, decoder, staging, tag, storage == "fp16")
        parity = check_parity(model, encoder_xml, decoder_xml, storage, threads) if verify else None
        staged = [encoder_xml, encoder_xml.with_suffix(".bin"), decoder_xml, decoder_xml.with_suffix(".bin")]
        return _install(staged, out), parity
    finally:
        shutil.rmtree(staging, ignore_errors=True)
