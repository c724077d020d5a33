"""The IR passes every shipped encoder gets after conversion (or, for the int8 encoder, after fine-tuning), in order.
Each keeps the numbers: f32 execution of the fp32c encoder is bit-identical with and without them, and so are the
int8 encoder's bf16 results (tests/test_export.py; benchmarks/results/layout.md, volume.md).

* ``encoder_row_strips`` (:mod:`.row_strips`): the full-resolution part in row strips (less working memory).
* ``encoder_qkv_split`` (:mod:`.qkv_split`): each attention block's q, k, v get a product of their own.
* ``encoder_window_nhwc`` (:mod:`.window_layout`): window partition / merge through channels-last views.
"""

from __future__ import annotations

import openvino as ov

from .qkv_split import qkv_split_count, split_qkv
from .row_strips import ENCODER_ROW_STRIPS, row_strip_count, split_rows
from .window_layout import channels_last_windows, window_layout_count

#: (report key, pass, count of an IR that has it) of the attention blocks, applied in this order
ATTENTION_PASSES = (
    ("encoder_qkv_split", split_qkv, qkv_split_count),
    ("encoder_window_nhwc", channels_last_windows, window_layout_count),
)


def apply_encoder_passes(encoder: ov.Model, row_strips: int = ENCODER_ROW_STRIPS, attention: bool = True
                         ) -> tuple[ov.Model, dict[str, int]]:
    """``encoder`` with its full-resolution part in ``row_strips`` strips (1: whole; an IR in strips already is left
    as it is) and, when ``attention``, every attention pass applied. ``encoder`` is consumed; use the result.
    Returns it with the counts of :func:`encoder_pass_counts` for the result."""
    if row_strip_count(encoder) == 1:
        encoder = split_rows(encoder, row_strips)
    if attention:
        for _, rewrite, _ in ATTENTION_PASSES:
            encoder, _ = rewrite(encoder)
    return encoder, encoder_pass_counts(encoder)


def encoder_pass_counts(encoder: ov.Model) -> dict[str, int]:
    """Row strips of an encoder IR's full-resolution part and its attention blocks that have each attention pass
    (shipped encoders: 4 strips, 10 blocks each)."""
    return {"encoder_row_strips": row_strip_count(encoder),
            **{key: count(encoder) for key, _, count in ATTENTION_PASSES}}
