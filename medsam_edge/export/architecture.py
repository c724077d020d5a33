"""LiteMedSAM assembled from our own modules, and the two graphs we export.

* :class:`LiteMedSAM` holds ``image_encoder`` / ``prompt_encoder`` / ``mask_decoder`` so that the checkpoint's
  state-dict keys load with ``strict=True``.
* :class:`EncoderGraph`: image (1, 3, 256, 256) -> embedding (1, 256, 64, 64).
* :class:`DecoderGraph`: embedding (1, 256, 64, 64) + boxes (B, 4) -> logits (B, 1, 256, 256), IoU (B, 1).
"""

from __future__ import annotations

import os

import torch
from torch import nn

from .checkpoint import CHECKPOINT_SHA256, load_state_dict
from .sam_heads import HeadsConfig, MaskDecoder, PromptEncoder
from .tinyvit import EncoderConfig, TinyViTEncoder


class LiteMedSAM(nn.Module):
    """Container of the three parts; use :class:`EncoderGraph` / :class:`DecoderGraph` to run them."""

    def __init__(self, encoder: EncoderConfig | None = None, heads: HeadsConfig | None = None) -> None:
        super().__init__()
        heads = heads or HeadsConfig()
        self.image_encoder = TinyViTEncoder(encoder)
        self.prompt_encoder = PromptEncoder(heads)
        self.mask_decoder = MaskDecoder(heads)

    @torch.no_grad()
    def segment(self, image: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Convenience: image (1, 3, 256, 256), boxes (B, 4) -> (embedding, logits (B, 1, 256, 256), IoU (B, 1))."""
        embedding = EncoderGraph(self)(image)
        logits, iou = DecoderGraph(self)(embedding, boxes)
        return embedding, logits, iou


def load_litemedsam(
    checkpoint: str | os.PathLike, expected_sha256: str | None = CHECKPOINT_SHA256
) -> LiteMedSAM:
    """Build :class:`LiteMedSAM`, load the (verified) checkpoint strictly and switch to eval mode."""
    model = LiteMedSAM()
    model.load_state_dict(load_state_dict(checkpoint, expected_sha256), strict=True)
    return model.eval()


class EncoderGraph(nn.Module):
    """Export view of the encoder: image (1, 3, 256, 256) float32 -> embedding (1, 256, 64, 64) float32."""

    def __init__(self, model: LiteMedSAM) -> None:
        super().__init__()
        self.encoder = model.image_encoder

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.encoder(image)


class DecoderGraph(nn.Module):
    """Export view of prompt encoder + mask decoder for box prompts, single-mask output.

    Inputs: embedding (1, 256, 64, 64) float32; boxes (B, 4) float32 XYXY in 256-pixel space.
    Outputs: low-resolution logits (B, 1, 256, 256) (mask = logit > 0) and predicted IoU (B, 1).
    """

    def __init__(self, model: LiteMedSAM) -> None:
        super().__init__()
        self.prompt_encoder = model.prompt_encoder
        self.mask_decoder = model.mask_decoder

    def forward(self, embedding: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        prompts = self.prompt_encoder.embed_boxes(boxes)
        dense = embedding + self.prompt_encoder.no_mask_embedding()
        return self.mask_decoder(dense, self.prompt_encoder.positional_tokens(), prompts)
