"""IR pass: cut the attention windows out of the feature map in channels-last order (same numbers, less copying).

The export keeps TinyViT's feature maps as (B, C, H, W) (benchmarks/results/layout.md), and the CPU plugin runs the
convolutions on them channels-last (``acdb``). Each attention block pads the map to whole windows and partitions it
as ``reshape(B, C, nH, wh, nW, ww)`` + ``transpose(0, 2, 4, 3, 5, 1)``, and merges the windows back with the inverse
pair and a crop. The plugin cannot move a 6-D permutation across its layouts, so it reorders the padded map to
planar (``abcd``) first and then permutes it back to channels-last window order: two passes over the map, and on
the way back a permutation to planar, the crop and a reorder to channels-last again.

:func:`channels_last_windows` writes the same two steps through an explicit (B, H, W, C) view: ``transpose(0, 2, 3,
1)`` of the padded map (the plugin turns it and its layout reorder into nothing, as the map is channels-last in
memory already), ``reshape(B, nH, wh, nW, ww, C)`` + ``transpose(0, 1, 3, 2, 4, 5)``, which moves whole rows of
``ww x C`` values; the merge is the inverse, the crop on the (B, H, W, C) view, and ``transpose(0, 3, 1, 2)`` back
to the model's logical layout (again free for a channels-last consumer).

Only data movement changes, so every precision computes bit-identical embeddings (shipped fp32c at f32, fp16 and
int8 at bf16: max abs difference 0.0). Measured on AMD EPYC Zen 4 (benchmarks/results/layout.md, 2026-12-07).
"""

from __future__ import annotations

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from .row_strips import _i64, rebuilt

#: friendly-name marker of the nodes this pass adds (``<original name>/window_nhwc/<role>``)
MARK = "/window_nhwc/"
#: the export's window partition / merge permutations on (B, C, nH, wh, nW, ww) / (B, nH, nW, wh, ww, C)
PARTITION = [0, 2, 4, 3, 5, 1]
MERGE = [0, 5, 1, 3, 2, 4]
#: (B, nH, wh, nW, ww, C) -> (B, nH, nW, wh, ww, C): the rows of each window brought together (the merge applies
#: the inverse permutation)
WINDOW_ORDER = [0, 1, 3, 2, 4, 5]


def _static(value: ov.Output) -> list[int] | None:
    shape = value.get_partial_shape()
    return [int(d) for d in shape.to_shape()] if shape.is_static else None


def _only_consumer(value: ov.Output) -> ov.Node | None:
    targets = list(value.get_target_inputs())
    return targets[0].get_node() if len(targets) == 1 else None


def _constant_values(value: ov.Output) -> list[int] | None:
    node = value.get_node()
    return [int(v) for v in node.get_data().reshape(-1)] if node.get_type_name() == "Constant" else None


def _name(nodes: dict[str, ov.Node], base: str) -> None:
    for role, node in nodes.items():
        node.set_friendly_name(f"{base}{MARK}{role}")


def _partition(transpose: ov.Node) -> bool:
    """Rewrite ``reshape(B, C, nH, wh, nW, ww) -> transpose(PARTITION)`` of a (B, C, H, W) map; False if not that."""
    reshape = transpose.input_value(0).get_node()
    if reshape.get_type_name() != "Reshape" or _only_consumer(reshape.output(0)) is not transpose:
        return False
    source = reshape.input_value(0)
    dims, split = _static(source), _static(reshape.output(0))
    if dims is None or split is None or len(dims) != 4 or len(split) != 6:
        return False
    b, c, nh, wh, nw, ww = split
    if [b, c, nh * wh, nw * ww] != dims:
        return False
    nhwc = ops.transpose(source, _i64([0, 2, 3, 1]))
    rows = ops.reshape(nhwc, _i64([b, nh, wh, nw, ww, c]), False)
    windows = ops.transpose(rows, _i64(WINDOW_ORDER))
    _name({"partition/nhwc": nhwc, "partition/rows": rows, "partition/windows": windows}, transpose.get_friendly_name())
    transpose.output(0).replace(windows.output(0))
    return True


def _merge(transpose: ov.Node) -> bool:
    """Rewrite ``transpose(MERGE) -> reshape(B, C, Hp, Wp) [-> crop to (B, C, H, W)]``; False if not that."""
    windows = transpose.input_value(0)
    split = _static(windows)
    reshape = _only_consumer(transpose.output(0))
    if split is None or len(split) != 6 or reshape is None or reshape.get_type_name() != "Reshape":
        return False
    b, nh, nw, wh, ww, c = split
    if _static(reshape.output(0)) != [b, c, nh * wh, nw * ww]:
        return False
    end = reshape
    crop = _only_consumer(reshape.output(0))
    if crop is not None and crop.get_type_name() == "Slice" and crop.input_value(0).get_node() is reshape:
        start, step = _constant_values(crop.input_value(1)), _constant_values(crop.input_value(3))
        out = _static(crop.output(0))
        # a crop that keeps the first rows / columns (the export's un-padding); anything else stays as it is
        if start is not None and step is not None and out is not None and not any(start) and set(step) == {1} \
                and out[:2] == [b, c]:
            end = crop
    rows = ops.transpose(windows, _i64(np.argsort(WINDOW_ORDER)))
    nhwc = ops.reshape(rows, _i64([b, nh * wh, nw * ww, c]), False)
    nodes = {"merge/rows": rows, "merge/nhwc": nhwc}
    if end is not reshape:
        _, _, h, w = _static(end.output(0))
        nhwc = ops.slice(nhwc, _i64([0, 0, 0, 0]), _i64([b, h, w, c]), _i64([1, 1, 1, 1]))
        nodes["merge/crop"] = nhwc
    nchw = ops.transpose(nhwc, _i64([0, 3, 1, 2]))
    nodes["merge/nchw"] = nchw
    _name(nodes, transpose.get_friendly_name())
    end.output(0).replace(nchw.output(0))
    return True


def channels_last_windows(model: ov.Model) -> tuple[ov.Model, int]:
    """A new encoder model whose window partitions and merges go through channels-last views (module docstring), and
    the number of window partitions rewritten (the shipped encoders: 10, one per attention block, each with its
    merge). ``model`` is consumed (its graph is rewired); use the returned model. A model without the pattern (e.g. already rewritten) comes back with 0."""
    partitions = merges = 0
    for op in [op for op in model.get_ordered_ops() if op.get_type_name() == "Transpose"]:
        order = _constant_values(op.input_value(1))
        if order == PARTITION:
            partitions += _partition(op)
        elif order == MERGE:
            merges += _merge(op)
    # each rewrite computes the same tensor on its own, so a block whose merge did not match still is correct
    return (rebuilt(model), partitions) if partitions + merges else (model, 0)


def window_layout_count(model: ov.Model) -> int:
    """How many attention blocks of an encoder IR partition their windows through the channels-last view."""
    return sum(op.get_type_name() == "Transpose" and op.get_friendly_name().endswith(f"{MARK}partition/windows")
               for op in model.get_ops())
