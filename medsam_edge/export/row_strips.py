"""IR pass: run the encoder's full-resolution part in horizontal strips (less working memory, same numbers).

LiteMedSAM's stem and stage 0 keep the input's 256 x 256 resolution: the MBConv expansions produce
(1, 256, 256, 256) maps, 64 MB each at f32, and they are what the CPU plugin's working memory is sized by.
:func:`split_rows` replaces the subgraph from the image to the first merge's output (stride 2, (1, 128, 128, 128)) by
``strips`` copies, each fed a band of image rows with a halo, each cropped to its own output rows, then concatenated.
Every operation in that part is a pointwise op, a 1x1 convolution or a 3x3 (depthwise) convolution, so with halos
that cover the 3x3 convolutions' reach the result is the same values computed in the same order: the shipped
encoders' embeddings are bit-identical with and without strips at f32 and bf16 execution.

Convolution weights (and the constant subgraphs that decode them, e.g. the fp32c residual storage) are shared by the
copies, so the .bin grows only by the copies' biases; the .xml gains the copies' layer entries.

Measured (AMD EPYC Zen 4, 2 threads, LATENCY; benchmarks/results/volume.md, 2026-12-07): compile + first inference
of the encoder alone 281 -> 212 MB at f32 (fp32c), 181 -> 146 MB at bf16 (fp16 IR), latency 0.99-1.01x. The
fine-tuned int8 encoder gets the strips after its fine-tuning (calibration/quantize.py; its bf16 results are
bit-identical too): once the window layout pass had removed its layout reorders, 245 -> 218 MB and 0.97-0.98x
the time (volume.md, 2026-12-07; before that pass: 1.00-1.06x, so it was left whole).
"""

from __future__ import annotations

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from ..errors import ExportError

#: strips used for the shipped fp16 / fp32c encoders (2 strips: f32 218 MB; 8: more .xml, no less memory)
ENCODER_ROW_STRIPS = 4
#: rows of halo above / below a strip: two MBConvs' 3x3 depthwise convs (1 row each) + the merge's stride-2 3x3
#: conv (1 row), rounded up above to keep the stride-2 sampling aligned (the band must start on an even row)
HALO_ABOVE = 4
HALO_BELOW = 2
FULL_RES_STRIDE = 2
#: ops whose input 1 (weights, possibly behind a constant decoding subgraph) the copies share. Other constants
#: (biases, BatchNorm shifts) are copied: the CPU plugin fuses a bias Add into its convolution only while the
#: constant has one consumer, and an unfused Add rounds the convolution's output to bf16 before the bias
WEIGHTED = ("Convolution", "GroupConvolution")


def _i64(values) -> ov.Node:
    return ops.constant(np.array(values, dtype=np.int64))


def _rows(x: ov.Output, lo: int, hi: int) -> ov.Output:
    return ops.slice(x, _i64([lo]), _i64([hi]), _i64([1]), _i64([2])).output(0)


def _constant_only(op: ov.Node, memo: dict) -> bool:
    """True for a Constant or a node computed from Constants alone (weight decoding, reshapes of weights)."""
    key = op.get_instance_id()
    if key not in memo:
        if op.get_type_name() == "Constant":
            memo[key] = True
        elif op.get_type_name() in ("Parameter", "Result") or op.get_input_size() == 0:
            memo[key] = False
        else:
            memo[key] = all(_constant_only(v.get_node(), memo) for v in op.input_values())
    return memo[key]


def full_resolution_ports(model: ov.Model) -> tuple[ov.Output, ov.Output]:
    """(image input, output of the first merge) of a LiteMedSAM encoder IR: the span :func:`split_rows` cuts.

    The first merge's output is the input of the first Pad (the first window split pads 128 -> 133 rows).
    """
    image = model.get_parameters()[0].output(0)
    for op in model.get_ordered_ops():
        if op.get_type_name() == "Pad":
            end = op.input_value(0)
            shape = end.get_partial_shape()
            if shape.is_static and list(shape.to_shape()) == [1, 128, 128, 128]:
                return image, end
            break
    raise ExportError("encoder IR: no (1, 128, 128, 128) tensor feeding the first window split's Pad")


def split_rows(model: ov.Model, strips: int = ENCODER_ROW_STRIPS) -> ov.Model:
    """A new encoder model whose full-resolution part runs in ``strips`` row bands (see the module docstring).

    ``model`` is consumed (its graph is rewired); use the returned model. ``strips <= 1`` returns ``model``.
    """
    if strips <= 1:
        return model
    start, end = full_resolution_ports(model)
    height = start.get_partial_shape()[2].get_length()
    step = height // strips
    if step * strips != height or step % FULL_RES_STRIDE or step < HALO_ABOVE:
        raise ExportError(f"cannot split {height} rows into {strips} strips (multiples of {FULL_RES_STRIDE})")
    start_consumers = list(start.get_target_inputs())
    end_consumers = list(end.get_target_inputs())
    param = ops.parameter(start.get_partial_shape(), start.get_element_type())
    for inp in start_consumers:
        inp.replace_source_output(param.output(0))
    span = ov.Model([ops.result(end)], [param], "full_resolution")
    originals = span.get_ordered_ops()
    memo: dict = {}
    pieces = []
    for i in range(strips):
        a, b = i * step, (i + 1) * step
        lo, hi = max(0, a - HALO_ABOVE), min(height, b + HALO_BELOW)
        copy = span.clone()
        copies = copy.get_ordered_ops()
        if [op.get_type_name() for op in copies] != [op.get_type_name() for op in originals]:  # pragma: no cover
            raise ExportError("encoder IR: the cloned span is not ordered like the original")
        twin = {dup.get_instance_id(): orig for orig, dup in zip(originals, copies)}
        for dup in copies:
            orig = twin[dup.get_instance_id()]
            if _constant_only(orig, memo) or dup.get_type_name() in ("Parameter", "Result"):
                continue
            dup.set_friendly_name(f"{orig.get_friendly_name()}/rows{i}")
            for out in dup.outputs():
                out.get_tensor().set_names({f"{n}/rows{i}" for n in out.get_names()})
            if dup.get_type_name() not in WEIGHTED:
                continue
            value = dup.input_value(1)
            src = twin[value.get_node().get_instance_id()]
            if _constant_only(src, memo):  # the copies share the original span's weights
                dup.input(1).replace_source_output(src.output(value.get_index()))
        band = _rows(start, lo, hi)
        for inp in list(copy.get_parameters()[0].output(0).get_target_inputs()):
            inp.replace_source_output(band)
        first = (a - lo) // FULL_RES_STRIDE
        pieces.append(_rows(copy.get_results()[0].input_value(0), first, first + step // FULL_RES_STRIDE))
    joined = ops.concat(pieces, 2)
    joined.set_friendly_name("full_resolution_rows/concat")
    for inp in end_consumers:
        inp.replace_source_output(joined.output(0))
    return rebuilt(model)


def rebuilt(model: ov.Model) -> ov.Model:
    """A model over ``model``'s rewired graph (nodes no result reaches are dropped), its rt_info kept, types
    re-inferred: how the IR passes of this package return their result."""
    result = ov.Model(model.get_results(), model.get_parameters(), model.get_friendly_name())
    for key in model.get_rt_info():
        result.set_rt_info(model.get_rt_info()[key], key)
    result.validate_nodes_and_infer_types()
    return result


def row_strip_count(model: ov.Model) -> int:
    """How many row strips an encoder IR's full-resolution part runs in (1 = whole)."""
    for op in model.get_ordered_ops():
        if op.get_friendly_name() == "full_resolution_rows/concat":
            return op.get_input_size()
    return 1
