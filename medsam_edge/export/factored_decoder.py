"""The exported decoder graph: the checkpoint's SAM heads, re-associated so that the CPU does less per box.

:class:`~medsam_edge.export.architecture.DecoderGraph` is the plain definition (the one the checkpoint parity is
about). :class:`FactoredDecoderGraph` computes the same function from the same weights with fewer operations per
box; nothing is re-trained or approximated, the differences are float rounding (measured in
``calibration/README.md``).

Notation: S = 4096 image tokens, C = 256 channels, T = 7 prompt tokens per box, h = 8 heads of width d (16 in the
cross attentions), B boxes.

Why it is cheaper. A cross attention between the T tokens and the S image tokens projects the S side to
``inner = h * d`` channels (S x C x inner multiply-adds per projection); once the image tokens differ per box
(after the first image-to-token update), that is paid per box, three or four times per block. Because only T
tokens sit on the other side, the products can be re-associated so that the S side meets a T-sized matrix:

* token -> image, keys ``k = x Wk^T + bk``: ``q k^T = (q Wk) x^T + q bk^T``; the last term is constant along the
  keys and drops out of the softmax. Values: ``softmax(.) (x Wv^T + bv) = (softmax(.) x) Wv^T + bv`` (rows sum to
  one). Per box: two S x C x (h T) products (h T = 56) instead of two S x C x inner projections (inner = 128).
* image -> token, queries ``q = x Wq^T + bq``: ``q k^T = x (k Wq)^T + bq k^T`` (a per-key bias); the output
  projection ``concat_h(a_h v_h) Wo^T = sum_h a_h (v_h Wo_h^T)``: one S x (h T) x C product. The scores are
  kept key-major, (B, h T, S), so that each head's softmax over its T keys runs along a middle axis with the S
  image tokens innermost (see ``_Factored._mix``).
* Where the image side is still shared by all boxes (the first block) the shared projections are computed once
  (batch 1, broadcast), as in the plain graph.
* Output upscaling: a 2 x 2, stride-2 transposed convolution is a per-pixel linear map, so both run as matrix
  products on token-major data (S, C) -> (S, 4, C/4) -> (S, 4, 4, C/8), LayerNorm and GELU per sub-pixel, the
  hyper-network dot product per sub-pixel, and only the (S, 16) scalar logits are shuffled into the 256 x 256
  grid (no (B, C/8, 256, 256) planar tensor and no layout reorders).

Inputs and outputs are those of ``DecoderGraph``: embedding (1, C, 64, 64) + boxes (B, 4) in 256-pixel space ->
logits (B, 1, 256, 256), IoU (B, 1).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .sam_heads import Attention, MaskDecoder, PromptEncoder, TwoWayBlock


def _heads_first(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """Projection weight (inner, C) -> (heads, d, C)."""
    inner, channels = weight.shape
    return weight.reshape(heads, inner // heads, channels)


def _split(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, N, inner) -> (B, heads, N, d)."""
    return x.unflatten(2, (heads, -1)).transpose(1, 2)


def _block_diagonal(k: torch.Tensor) -> torch.Tensor:
    """Per-head keys (B, h, T, d) -> block-diagonal (B, h * d, h * T): row h*d + j, column h*T + t = k[h, t, j]."""
    b, h, t, d = k.shape
    eye = torch.eye(h, dtype=k.dtype, device=k.device)
    blocks = k.transpose(2, 3)[:, :, :, None, :] * eye[None, :, None, :, None]  # (B, h, d, h, T)
    return blocks.reshape(b, h * d, h * t)


class _Factored(nn.Module):
    """Re-associated forms of one :class:`Attention` module (same weights, read at export time)."""

    def __init__(self, attn: Attention) -> None:
        super().__init__()
        self.attn = attn
        self.h = attn.heads
        self.scale = 1.0 / math.sqrt(attn.head_dim)

    # ----------------------------------------------------------------------------------------- token -> image
    def token_to_image(self, q_in: torch.Tensor, k_in: torch.Tensor, v_in: torch.Tensor) -> torch.Tensor:
        """q_in (B, T, C) tokens; k_in = x + pe, v_in = x (B, S, C) per-box image tokens -> (B, T, C)."""
        a = self.attn
        b, t, _ = q_in.shape
        q = _split(a.q_proj(q_in), self.h) * self.scale  # (B, h, T, d)
        qk = (q @ _heads_first(a.k_proj.weight, self.h)).reshape(b, self.h * t, -1)  # (B, h T, C)
        probs = (qk @ k_in.transpose(1, 2)).softmax(dim=-1)  # (B, h T, S); q . bk is constant along S
        context = (probs @ v_in).reshape(b, self.h, t, -1)  # (B, h, T, C)
        wv = _heads_first(a.v_proj.weight, self.h).transpose(1, 2)  # (h, C, d)
        out = context @ wv + a.v_proj.bias.reshape(self.h, 1, -1)  # (B, h, T, d); rows of probs sum to 1
        return a.out_proj(out.transpose(1, 2).flatten(2))

    # ----------------------------------------------------------------------------------------- image -> token
    def _values_out(self, v_in: torch.Tensor) -> torch.Tensor:
        """Token values (B, T, C) -> per-head values already through the output projection (B, h T, C)."""
        a = self.attn
        b, t, _ = v_in.shape
        v = _split(a.v_proj(v_in), self.h)  # (B, h, T, d)
        wo = a.out_proj.weight.reshape(a.out_proj.weight.shape[0], self.h, -1).permute(1, 2, 0)  # (h, d, C)
        return (v @ wo).reshape(b, self.h * t, -1)

    def _mix(self, scores: torch.Tensor, v_in: torch.Tensor) -> torch.Tensor:
        """Key-major scores (B, h T, S) -> softmax over each head's T keys -> (B, S, C) incl. the output projection.

        Key-major so that the softmax runs over a middle axis of (B, h, T, S) with the S image tokens innermost: the
        CPU plugin's softmax over an innermost axis of only T = 7 values took ~0.9 ms per box and attention (bf16,
        AMD Zen 5), over the middle axis it is a few per cent of that.
        """
        b, ht, s = scores.shape
        probs = scores.reshape(b, self.h, -1, s).softmax(dim=2).reshape(b, ht, s)
        return probs.transpose(1, 2) @ self._values_out(v_in) + self.attn.out_proj.bias

    def image_to_token_shared(self, q_in: torch.Tensor, k_in: torch.Tensor, v_in: torch.Tensor) -> torch.Tensor:
        """q_in (1, S, C) image tokens + pe, shared by all boxes; k_in, v_in (B, T, C) tokens -> (B, S, C)."""
        a = self.attn
        q = a.q_proj(q_in) * self.scale  # (1, S, inner), once for all boxes
        k = _split(a.k_proj(k_in), self.h)  # (B, h, T, d)
        return self._mix(_block_diagonal(k).transpose(1, 2) @ q.transpose(1, 2), v_in)

    def image_to_token(self, q_in: torch.Tensor, k_in: torch.Tensor, v_in: torch.Tensor) -> torch.Tensor:
        """q_in (B, S, C) per-box image tokens + pe; k_in, v_in (B, T, C) tokens -> (B, S, C)."""
        a = self.attn
        b, t, _ = k_in.shape
        k = _split(a.k_proj(k_in), self.h) * self.scale  # (B, h, T, d)
        kq = (k @ _heads_first(a.q_proj.weight, self.h)).reshape(b, self.h * t, -1)  # (B, h T, C)
        bias = (k @ a.q_proj.bias.reshape(self.h, -1, 1)).reshape(b, self.h * t, 1)  # bq . k per key
        return self._mix(kq @ q_in.transpose(1, 2) + bias, v_in)


class FactoredDecoderGraph(nn.Module):
    """Same inputs, outputs and weights as ``DecoderGraph``; fewer multiply-adds per box (see module doc)."""

    def __init__(self, prompt_encoder: PromptEncoder, mask_decoder: MaskDecoder) -> None:
        super().__init__()
        self.prompt_encoder = prompt_encoder
        self.decoder = mask_decoder
        transformer = mask_decoder.transformer
        self.blocks: list[TwoWayBlock] = list(transformer.layers)
        self.t2i = nn.ModuleList(_Factored(blk.cross_attn_token_to_image) for blk in self.blocks)
        self.i2t = nn.ModuleList(_Factored(blk.cross_attn_image_to_token) for blk in self.blocks)
        self.final = _Factored(transformer.final_attn_token_to_image)

    def _upscaled_logits(self, image_tokens: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Image tokens (B, S, C) + hyper-network weights (B, C/8) -> logits (B, 1, 4 g, 4 g) on the g x g grid."""
        up1, norm, _, up2, _ = self.decoder.output_upscaling
        b, s, _ = image_tokens.shape
        side = math.isqrt(s)
        c1, c2 = up1.weight.shape[1], up2.weight.shape[1]
        w1 = up1.weight.permute(0, 2, 3, 1).reshape(up1.weight.shape[0], 4 * c1)  # (C, (ky kx c1))
        x = (image_tokens @ w1).reshape(b, s, 4, c1) + up1.bias  # (B, S, 4, C/4)
        x = F.gelu(F.layer_norm(x, (c1,), norm.weight, norm.bias, norm.eps))
        w2 = up2.weight.permute(0, 2, 3, 1).reshape(c1, 4 * c2)  # (C/4, (ky kx c2))
        x = F.gelu((x @ w2).reshape(b, s * 16, c2) + up2.bias)  # (B, S * 4 * 4, C/8)
        logits = x @ weights.unsqueeze(-1)  # (B, S * 16, 1)
        # (B, gy, gx, ky1, kx1, ky2, kx2) -> row 4 gy + 2 ky1 + ky2, column 4 gx + 2 kx1 + kx2
        logits = logits.reshape(b, side, side, 2, 2, 2, 2).permute(0, 1, 3, 5, 2, 4, 6)
        return logits.reshape(b, 1, 4 * side, 4 * side)

    def forward(self, embedding: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pe_enc, dec = self.prompt_encoder, self.decoder
        prompts = pe_enc.embed_boxes(boxes)  # (B, 2, C)
        b = prompts.shape[0]
        learned = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
        tokens = torch.cat([learned.unsqueeze(0).expand(b, -1, -1), prompts], dim=1)  # (B, T, C)
        image_pe = pe_enc.positional_tokens()  # (1, S, C)
        # token-major once; the dense no-mask term is added after the transpose so that every consumer reads one
        # materialised (1, S, C) tensor (a transpose feeding a MatMul directly is folded into it and then redone
        # per consumer by the CPU plugin: ~2 ms each)
        keys = embedding.flatten(2).transpose(1, 2) + pe_enc.no_mask_embedding().reshape(1, 1, -1)  # (1, S, C)

        queries = tokens
        for i, blk in enumerate(self.blocks):
            queries = blk.self_attend(queries, tokens)
            keys_pos = keys + image_pe
            if i == 0:  # image side shared by all boxes (batch 1): the plain attention projects it once
                attended = blk.cross_attn_token_to_image(queries + tokens, keys_pos, keys)
            else:
                attended = self.t2i[i].token_to_image(queries + tokens, keys_pos, keys)
            queries = blk.norm2(queries + attended)
            queries = blk.norm3(queries + blk.mlp(queries))
            if i == 0:
                update = self.i2t[i].image_to_token_shared(keys_pos, queries + tokens, queries)
            else:
                update = self.i2t[i].image_to_token(keys_pos, queries + tokens, queries)
            keys = blk.norm4(keys + update)
        attended = self.final.token_to_image(queries + tokens, keys + image_pe, keys)
        queries = dec.transformer.norm_final_attn(queries + attended)

        weights = dec.output_hypernetworks_mlps[0](queries[:, 1, :])  # (B, C/8)
        logits = self._upscaled_logits(keys, weights)
        iou = dec.iou_prediction_head(queries[:, 0, :])[:, :1]
        return logits, iou
