"""The model behind a :class:`~medsam_edge.Segmenter`: one object, one contract.

:class:`Engine` joins LiteMedSAM's two compiled models with the preprocessing that feeds them:

* ``encode(image) -> embedding``: an (H, W[, C]) image of any real dtype (validated by the caller) -> the
  (1, 256, 64, 64) float32 embedding; resize / normalise / pad happen inside (``kernels.preprocess``).
* ``encode_tensor(tensor) -> embedding``: an already prepared (1, 3, 256, 256) model input (the ROI zoom's windows).
* ``decode(embedding, boxes, frame) -> (logits, iou)``: boxes (N, 4) XYXY in the pixels of the image that
  ``frame`` describes -> (N, 256, 256) float32 logits in the model frame and (N,) predicted IoU.
* ``decode_model(embedding, boxes256)``: the same with boxes already in the model frame (the 3D loop's boxes from
  masks live there).

Its facts (input size, embedding size, mask threshold) come from the IR's ``rt_info`` ``model_info`` section that
the export writes (read from the XML text, without OpenVINO). :meth:`Engine.open` compiles the shipped (or given)
IR files through :class:`~medsam_edge.runtime.Runtime`; ``Engine(encoder, decoder)`` wraps any pair of callables
(tests use fakes, benchmarks timing wrappers), so nothing outside the package needs to touch a Segmenter's internals.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from . import kernels
from .errors import ModelFileError
from .prompts import Frame

Encoder = Callable[[np.ndarray], np.ndarray]
Decoder = Callable[[np.ndarray, np.ndarray], "tuple[np.ndarray, np.ndarray]"]


@dataclass(frozen=True)
class EngineFacts:
    """What the model files say about themselves (``rt_info`` ``model_info``)."""

    input_size: int = kernels.TARGET
    embedding_size: int = 64
    mask_threshold: float = 0.0


def read_facts(xml_path: Path) -> EngineFacts:
    """``model_info`` of an IR, parsed from the end of its XML (where OpenVINO writes ``rt_info``)."""
    try:
        with open(xml_path, "rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - 16384))
            tail = handle.read().decode("utf-8", "replace")
    except OSError as exc:
        raise ModelFileError(f"cannot read model file {xml_path}: {exc}") from exc
    block = re.search(r"<model_info>(.*?)</model_info>", tail, re.S)
    if block is None:
        return EngineFacts()
    values = dict(re.findall(r'<(\w+) value="([^"]*)"', block.group(1)))
    facts = EngineFacts(
        input_size=int(values.get("input_size", kernels.TARGET)),
        embedding_size=int(values.get("embedding_size", 64)),
        mask_threshold=float(values.get("mask_threshold", 0.0)),
    )
    if facts.input_size != kernels.TARGET or facts.mask_threshold != 0.0:
        raise ModelFileError(
            f"{xml_path}: model_info says input_size {facts.input_size}, mask_threshold {facts.mask_threshold}; "
            f"this version of medsam_edge runs LiteMedSAM IRs with input_size {kernels.TARGET} and logit threshold 0"
        )
    return facts


class Engine:
    """Encoder + decoder with one contract (see the module docstring). Not thread-safe: one caller at a time."""

    def __init__(self, encoder: Encoder, decoder: Decoder, facts: EngineFacts | None = None, *,
                 runtime=None, models=None) -> None:
        self.encoder = encoder  # tensor (1, 3, 256, 256) -> embedding (1, 256, 64, 64), a fresh array
        self.decoder = decoder  # (embedding, boxes256 (N, 4)) -> (logits (N, 256, 256), iou (N,))
        self.facts = facts or EngineFacts()
        self.runtime = runtime  # the Runtime that compiled the models (None for wrapped callables)
        self.models = models  # the ModelPair the models came from (None for wrapped callables)
        size = self.facts.input_size
        self._input = np.zeros((1, 3, size, size), dtype=np.float32)

    @classmethod
    def open(cls, options, model_dir=None, verify_models: bool = True) -> "Engine":
        """Compile the IR pair of ``options.precision`` (a :class:`~medsam_edge.runtime.RuntimeOptions`)."""
        from .models import resolve
        from .runtime import DECODER_SHAPES, WIDE_DECODER_SHAPES, DecoderModel, EncoderModel, Runtime, trim_heap

        models = resolve(options.variant, model_dir, verify=verify_models)
        runtime = Runtime(options, digests=models.digests, golden=models.golden)
        # a variant may name another decoder for f32 execution (int8 on a CPU without bf16: its INT8 decoder)
        decoder_xml = models.decoder_for(runtime.execution_precision)
        facts = read_facts(models.encoder_xml)
        read_facts(decoder_xml)
        # the decoder is imported (or compiled) on a second thread while this one does the encoder: OpenVINO releases
        # the GIL there, so a warm start costs about the encoder's import instead of the sum (benchmarks/results/
        # cold_start.json); an encoder error wins over a decoder error, and both threads have ended on return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="medsam-edge-compile") as pool:
            decoder_props = runtime.decoder_properties()
            pending = pool.submit(runtime.compile, decoder_xml, DECODER_SHAPES, "decoder", decoder_props)
            try:
                encoder_compiled = runtime.compile(models.encoder_xml, check="encoder")
            except BaseException:
                wait([pending])
                raise
            decoder_compiled = pending.result()
        trim_heap()  # what the import / compile freed goes back to the system (runtime.trim_heap)
        encoder = EncoderModel(encoder_compiled)
        decoder = DecoderModel(
            decoder_compiled,
            wide=lambda: runtime.compile(decoder_xml, WIDE_DECODER_SHAPES, check="decoder",
                                         properties=decoder_props),
        )
        return cls(encoder, decoder, facts, runtime=runtime, models=models)

    def wrapped(self, wrap: Callable[[str, Callable], Callable]) -> "Engine":
        """A new engine whose encoder/decoder are ``wrap(name, fn)`` of these (timers, spies); same facts."""
        return Engine(wrap("encoder", self.encoder), wrap("decoder", self.decoder), self.facts,
                      runtime=self.runtime, models=self.models)

    def encode(self, image: np.ndarray) -> np.ndarray:
        tensor, _ = kernels.preprocess(image, self._input)
        return self.encoder(tensor)

    def encode_tensor(self, tensor: np.ndarray) -> np.ndarray:
        return self.encoder(tensor)

    def decode(self, embedding: np.ndarray, boxes: np.ndarray, frame: Frame) -> tuple[np.ndarray, np.ndarray]:
        return self.decoder(embedding, frame.boxes_to_model(boxes))

    def decode_model(self, embedding: np.ndarray, boxes256: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.decoder(embedding, boxes256)
