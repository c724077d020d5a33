"""The IR passes every shipped encoder's attention blocks get after conversion (or, for the int8 encoder, after
fine-tuning), in order. Each keeps the numbers: f32 execution of the fp32c encoder is bit-identical with and without
them (tests/test_export.py); the row strips of the full-resolution part are applied separately
(:func:`.row_strips.split_rows`, not on the int8 encoder).

* ``encoder_qkv_split`` (:mod:`.qkv_split`): each block's q, k, v get a product of their own (no split kernel).
* ``encoder_window_nhwc`` (:mod:`.window_layout`): window partition / merge through channels-last views.
"""

from __future__ import annotations

import openvino as ov

from .qkv_split import qkv_split_count, split_qkv
from .window_layout import channels_last_windows, window_layout_count

#: (report key, pass, count of an IR that has it), applied in this order
ATTENTION_PASSES = (
    ("encoder_qkv_split", split_qkv, qkv_split_count),
    ("encoder_window_nhwc", channels_last_windows, window_layout_count),
)


def apply_attention_passes(encoder: ov.Model) -> tuple[ov.Model, dict[str, int]]:
    """``encoder`` with every attention pass applied (it is consumed; use the result) and the blocks each rewrote
    (0 where the IR had that pass already)."""
    counts = {}
    for key, rewrite, _ in ATTENTION_PASSES:
        encoder, counts[key] = rewrite(encoder)
    return encoder, counts


def attention_pass_counts(encoder: ov.Model) -> dict[str, int]:
    """The blocks of an encoder IR that have each attention pass (10 each for the shipped encoders)."""
    return {key: count(encoder) for key, _, count in ATTENTION_PASSES}
