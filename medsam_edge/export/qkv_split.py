"""IR pass: compute each window attention's queries, keys and values with their own matrix product.

TinyViT's attention projects the tokens with one Linear to ``heads x (key_dim + key_dim + value_dim)`` channels,
reshapes to (windows, tokens, heads, 3 x dim), moves the heads forward and splits the last axis into q, k, v. The
CPU plugin runs that VariadicSplit with its reference kernel (``ref_bf16``: 7.2 of ~220 ms of the int8 encoder on AMD
Zen 4, 14.5 of ~370 ms of the fp16 encoder at bf16). :func:`split_qkv` gives q, k and v a matrix product each: the
Linear's weight rows (and bias entries) of that part, taken from every head, then the part's reshape and head
transpose. The split disappears; the products add up to the same multiply-adds.

Values: each output channel is the same dot product as before, so f32 execution of the fp32c encoder gives a
bit-identical embedding. Under bf16 / INT8 execution the plugin fuses the graph differently, and the fine-tuned
INT8 encoder's quantizers turn last-bit differences into other rounding decisions (its embedding moves by ~9% rel.
L2 on a random input, about as far as it is from FP32 either way); accuracy is therefore judged against ground
truth (benchmarks/results/RESULTS.md, calibration/README.md).

The weights are sliced through the constant subgraph that decodes them (int8 + scale, FP16 + int8 residual, plain
f32); only elementwise decoding ops are followed, anything else leaves that attention block unchanged.
"""

from __future__ import annotations

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from .row_strips import _i64, rebuilt

#: friendly-name marker of the nodes this pass adds (``<split name>/qkv_split/part<j>/<op>``)
MARK = "/qkv_split/"
#: decoding ops of a weight or bias constant subgraph that act element by element (slicing commutes with them)
ELEMENTWISE = {
    "Convert": None,
    "Multiply": ops.multiply,
    "Add": ops.add,
    "Subtract": ops.subtract,
    "Divide": ops.divide,
    "Maximum": ops.maximum,
    "Minimum": ops.minimum,
    "Abs": ops.abs,
}


class _NotSliceable(Exception):
    pass


def _sliceable(value: ov.Output, axis: int, full: int) -> bool:
    shape = value.get_partial_shape()
    if not shape.is_static:
        raise _NotSliceable("dynamic shape")
    dims = list(shape.to_shape())
    if len(dims) < -axis or dims[axis] == 1:
        return False  # broadcast along the sliced axis: shared by every part
    if dims[axis] != full:
        raise _NotSliceable(f"axis {axis} has {dims[axis]} entries, not {full}")
    return True


def slice_constant(value: ov.Output, axis: int, rows: np.ndarray, full: int) -> ov.Output:
    """A copy of the constant subgraph computing ``value``, keeping ``rows`` of ``axis`` (negative: numpy broadcasting
    aligns from the right). Constants that broadcast along ``axis`` are shared with the original."""
    if not _sliceable(value, axis, full):
        return value
    node = value.get_node()
    kind = node.get_type_name()
    if kind == "Constant":
        data = node.get_data()
        return ops.constant(np.ascontiguousarray(np.take(data, rows, axis=axis)),
                            dtype=node.get_output_element_type(0)).output(0)
    if kind not in ELEMENTWISE:
        raise _NotSliceable(f"weights decoded by {kind}")
    inputs = [slice_constant(v, axis, rows, full) for v in node.input_values()]
    if kind == "Convert":
        return ops.convert(inputs[0], node.get_output_element_type(0)).output(0)
    return ELEMENTWISE[kind](*inputs).output(0)


def part_rows(heads: int, width: int, offset: int, size: int) -> np.ndarray:
    """Output channels of the fused projection that belong to one part: channels ``offset .. offset + size`` of every
    head, the projection's channels being ordered (head, part channel)."""
    return (np.arange(heads, dtype=np.int64)[:, None] * width + offset + np.arange(size, dtype=np.int64)).reshape(-1)


def _pattern(split: ov.Node):
    """(matmul, bias add, reshape) feeding ``split`` through the head transpose, or None."""
    transpose = split.input_value(0).get_node()
    if transpose.get_type_name() != "Transpose":
        return None
    order = transpose.input_value(1).get_node()
    if order.get_type_name() != "Constant" or [int(v) for v in order.get_data().reshape(-1)] != [0, 2, 1, 3]:
        return None
    reshape = transpose.input_value(0).get_node()
    add = reshape.input_value(0).get_node()
    if reshape.get_type_name() != "Reshape" or add.get_type_name() != "Add":
        return None
    matmul = add.input_value(0).get_node()
    if matmul.get_type_name() != "MatMul":
        return None
    attrs = matmul.get_attributes()
    if attrs["transpose_a"] or not attrs["transpose_b"]:
        return None
    axis = split.input_value(1).get_node()
    if axis.get_type_name() != "Constant" or int(axis.get_data().reshape(-1)[0]) not in (3, -1):
        return None
    if not reshape.get_output_partial_shape(0).is_static:
        return None
    return matmul, add, reshape


def split_qkv(model: ov.Model) -> tuple[ov.Model, int]:
    """A new encoder model whose attention blocks compute q, k, v with one matrix product each (module docstring),
    and the number of blocks rewritten. ``model`` is consumed (its graph is rewired); use the returned model.
    A model without the pattern (e.g. already rewritten) comes back with count 0."""
    count = 0
    for split in [op for op in model.get_ordered_ops() if op.get_type_name() == "VariadicSplit"]:
        found = _pattern(split)
        if found is None:
            continue
        matmul, add, reshape = found
        sizes_node = split.input_value(2).get_node()
        if sizes_node.get_type_name() != "Constant":
            continue
        sizes = [int(s) for s in sizes_node.get_data().reshape(-1)]
        windows, tokens, heads, width = (int(d) for d in reshape.get_output_shape(0))
        if sum(sizes) != width or min(sizes) <= 0:
            continue
        full = heads * width
        tokens_in = matmul.input_value(0)
        parts = []
        try:
            offset = 0
            for size in sizes:
                rows = part_rows(heads, width, offset, size)
                offset += size
                parts.append((size, slice_constant(matmul.input_value(1), -2, rows, full),
                              slice_constant(add.input_value(1), -1, rows, full)))
        except _NotSliceable:
            continue
        base = split.get_friendly_name()
        for j, (size, weight, bias) in enumerate(parts):
            product = ops.matmul(tokens_in, weight, False, True)
            biased = ops.add(product, bias)
            shaped = ops.reshape(biased, _i64([windows, tokens, heads, size]), False)
            moved = ops.transpose(shaped, _i64([0, 2, 1, 3]))
            for node, tag in ((product, "matmul"), (biased, "add"), (shaped, "reshape"), (moved, "transpose")):
                node.set_friendly_name(f"{base}{MARK}part{j}/{tag}")
            for target in list(split.output(j).get_target_inputs()):
                target.replace_source_output(moved.output(0))
        count += 1
    return (rebuilt(model), count) if count else (model, 0)


def qkv_split_count(model: ov.Model) -> int:
    """How many attention blocks of an encoder IR compute q, k, v with separate products (0: none rewritten)."""
    return sum(op.get_type_name() == "Transpose" and MARK in op.get_friendly_name() and
               op.get_friendly_name().endswith("part0/transpose") for op in model.get_ops())
