"""The public :class:`Segmenter`: image + boxes -> one mask per box.

Two steps, like SAM's predictor: :meth:`Segmenter.set_image` encodes the image once (the expensive part, ~0.1-0.3 s)
and :meth:`Segmenter.predict` decodes any number of boxes against that embedding (all boxes in one batched call).
``segmenter(image, boxes)`` does both.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from . import kernels
from .errors import ConfigurationError, InvalidBoxError, NotReadyError
from .engine import Engine
from .prompts import Frame, check_boxes_2d, check_image
from .refine import VolumeZoom, Zoom, ZoomOptions, check_refine
from .runtime import DEFAULT, DEFAULT_PRECISION, RuntimeOptions, resolve_cache_dir
from .volume import STRATEGIES, SliceSource, VolumeResult, check_boxes_3d, check_slice_step, check_volume
from .volume import segment_volume as run_volume


def _frozen(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


@dataclass(frozen=True)
class SegmentationResult:
    """Masks for the boxes of one 2D image (arrays are read-only).

    Attributes:
        masks: (N, H, W) bool, one mask per box, in the input order.
        scores: (N,) float32, the decoder's predicted IoU of each mask.
        label_map: (H, W) uint16; box i's pixels hold i + 1, a later box overwrites an earlier one where they overlap.
        boxes: (N, 4) float64, the boxes used, XYXY in original pixels after clipping to the image.
    """

    masks: np.ndarray
    scores: np.ndarray
    label_map: np.ndarray
    boxes: np.ndarray


@dataclass(frozen=True)
class ImageState:
    """What :meth:`Segmenter.set_image` keeps: the embedding and the image geometry."""

    embedding: np.ndarray = field(repr=False)  # (1, 256, 64, 64) float32
    frame: Frame
    image: np.ndarray | None = field(default=None, repr=False)  # kept only when the segmenter refines (ROI zoom)


class Segmenter:
    """LiteMedSAM on OpenVINO.

    Args:
        precision: "int8" (default: the NNCF-quantized encoder, the decoder in bf16 on CPUs with AVX-512 BF16 / AMX
            and f32 elsewhere; ~2.5x faster encoder than fp32 on AVX-512 VNNI; DSC / NSD against ground truth level
            with fp32 on the val and dev sets, see calibration/README.md), "fp32" (exact f32 execution of near-FP32
            weights; the reference configuration, what :meth:`reference` uses) or "bf16" (bf16 execution of the
            FP16-stored model). Masks of different precisions can differ on boxes where the model itself is unsure.
        device: OpenVINO device name, default "CPU"; any name OpenVINO knows passes through.
        threads: inference threads (None: OpenVINO's default, all cores).
        cpu_pinning: pin inference threads to cores (None: OpenVINO's default); False for several processes
            sharing one machine.
        performance_hint: "LATENCY" (default) or "THROUGHPUT".
        cache_dir: compiled-model cache folder (medsam_edge's own keyed cache: one entry per model file, shapes,
            device, CPU, compile properties and OpenVINO version, written only after the model passed its golden
            self-check; see :class:`medsam_edge.runtime.Runtime`); default under the user cache dir
            (``$MEDSAM_EDGE_CACHE``, ``$XDG_CACHE_HOME/medsam_edge`` or ``~/.cache/medsam_edge``); None disables it.
        model_dir: folder with IR files and a ``manifest.json`` (default: the files shipped in the package).
        verify_models: check every model file's sha256 against the manifest before loading (default True).
        volume_strategy: default 3D strategy of :meth:`segment_volume`: "slicewise" (default: every slice of a box's
            z-range prompted with its 2D part; higher DSC/NSD than the official propagation on the dev set, and
            faster) or "propagate" (the official LiteMedSAM loop; what :meth:`reference` uses). See
            :mod:`medsam_edge.volume` and benchmarks/results/volume.md.
        refine: None (default: the reference pipeline), "zoom" or a :class:`medsam_edge.refine.ZoomOptions`: ROI zoom,
            an opt-in accuracy booster for small targets (one more encoder call per image or slice, at most 2x the
            time); each zoomed box keeps the mask with the larger predicted IoU. See :mod:`medsam_edge.refine`.
        engine: a ready :class:`medsam_edge.engine.Engine` (e.g. one shared by several segmenters, or wrapped by a
            timer) instead of compiling one; the runtime options are then the engine's.

    One instance may be shared by threads: calls are serialised by an internal lock. For parallel throughput use one
    instance per thread.
    """

    def __init__(
        self,
        precision: str = DEFAULT_PRECISION,
        *,
        device: str = "CPU",
        threads: int | None = None,
        performance_hint: str = "LATENCY",
        cache_dir=DEFAULT,
        model_dir=None,
        verify_models: bool = True,
        volume_strategy: str = "slicewise",
        refine: str | ZoomOptions | None = None,
        engine: Engine | None = None,
        cpu_pinning: bool | None = None,
    ) -> None:
        self.refine = check_refine(refine)
        if volume_strategy not in STRATEGIES:
            raise ConfigurationError(f"volume_strategy must be one of {STRATEGIES}, got {volume_strategy!r}")
        self.volume_strategy = volume_strategy
        self.options = RuntimeOptions(
            device=device,
            precision=precision,
            threads=threads,
            performance_hint=performance_hint,
            cache_dir=resolve_cache_dir(cache_dir),
            cpu_pinning=cpu_pinning,
        )
        self.engine = engine if engine is not None else Engine.open(self.options, model_dir, verify_models)
        if self.engine.runtime is not None:
            self.options = self.engine.runtime.options
        self.models = self.engine.models
        self.runtime = self.engine.runtime
        self._state: ImageState | None = None
        self._lock = threading.RLock()
        self._zoom = (Zoom(self.refine, self.engine.encode_tensor, self.engine.decode_model)
                      if self.refine is not None else None)

    @classmethod
    def reference(cls, **kwargs) -> "Segmenter":
        """The configuration that reproduces the official LiteMedSAM pipeline: fp32 execution, propagation in 3D."""
        kwargs.setdefault("precision", "fp32")
        kwargs.setdefault("volume_strategy", "propagate")
        return cls(**kwargs)

    # -- 2D ------------------------------------------------------------------------------------------------------
    def encode(self, image) -> ImageState:
        """Validate and encode one 2D image; returns the state without keeping it."""
        return self._encode_checked(check_image(image))

    def _encode_checked(self, image: np.ndarray) -> ImageState:
        frame = Frame(int(image.shape[0]), int(image.shape[1]))
        with self._lock:
            embedding = self.engine.encode(image)
        kept = _frozen(np.array(image, copy=True)) if self._zoom is not None else None
        return ImageState(embedding=_frozen(embedding), frame=frame, image=kept)

    def set_image(self, image) -> ImageState:
        """Encode ``image`` and keep it for :meth:`predict`.

        Args:
            image: (H, W), (H, W, 1) or (H, W, 3) array; uint8 (processed exactly like the reference), or uint16,
                int16, float, ... (converted to float32 and min-max normalised: no clipping, so prepare CT/MR
                intensities first, see :mod:`medsam_edge.intensity`). Must be finite and not constant.
        """
        state = self.encode(image)
        with self._lock:
            self._state = state
        return state

    def predict(self, boxes, state: ImageState | None = None) -> SegmentationResult:
        """Masks for ``boxes`` on the image given to :meth:`set_image` (or on ``state``).

        Args:
            boxes: (N, 4) or (4,) XYXY in original pixels (x along columns); N may be 0. Boxes partly outside the
                image are clipped to it; boxes fully outside, inverted or of zero width/height raise
                :class:`~medsam_edge.errors.InvalidBoxError`.
        """
        with self._lock:
            state = state if state is not None else self._state
            if state is None:
                raise NotReadyError("predict() needs an image: call set_image(image) first")
            return self._predict_checked(check_boxes_2d(boxes, state.frame.height, state.frame.width), state)

    def _predict_checked(self, clipped: np.ndarray, state: ImageState) -> SegmentationResult:
        frame = state.frame
        with self._lock:
            logits, iou = self.engine.decode(state.embedding, clipped, frame)
            masks = kernels.postprocess(logits, frame.resized, (frame.height, frame.width))
            if self._zoom is not None and state.image is not None and len(clipped):
                masks, iou, _ = self._zoom(state.image, clipped, masks, iou, logits, frame)
        labels = kernels.label_map(masks)
        return SegmentationResult(
            masks=_frozen(masks), scores=_frozen(iou), label_map=_frozen(labels), boxes=_frozen(clipped)
        )

    def __call__(self, image, boxes) -> SegmentationResult:
        """Segment ``boxes`` on ``image`` in one call (does not change the image kept by :meth:`set_image`)."""
        image = check_image(image)
        clipped = check_boxes_2d(boxes, int(image.shape[0]), int(image.shape[1]))  # fail before the encoder
        return self._predict_checked(clipped, self._encode_checked(image))

    # -- 3D ------------------------------------------------------------------------------------------------------
    def segment_volume(
        self,
        volume,
        boxes,
        *,
        strategy: str | None = None,
        window=None,
        modality: str | None = None,
        cache_slices: int = 16,
        progress=None,
        slice_step: int = 1,
    ) -> VolumeResult:
        """Segment a 3D volume from 3D boxes.

        Args:
            volume: a (z, y, x) array, a SimpleITK image, a :class:`medsam_edge.io.LoadedImage` or a file path
                (NIfTI, NRRD, MHA, DICOM folder, challenge ``.npz``), read by :func:`medsam_edge.io.open_volume`.
                uint8 volumes are used as they are (the challenge's prepared intensities). Other dtypes are mapped to
                uint8 slice by slice with the rule of :func:`medsam_edge.intensity.choose_window` (the CLI uses the
                same): ``window`` given (a CT preset name such as "abdomen", "lung", "brain", "mediastinum", or a
                (width, level) pair) -> that CT window; else modality CT (``modality``, or the file's DICOM
                Modality tag) -> the abdomen window; else the 0.5-99.5 percentile rule of non-zero voxels.
            modality: e.g. "CT" or "MR"; default: what the file says (DICOM), else unknown.
            boxes: (N, 6) ``[x_min, y_min, z_min, x_max, y_max, z_max]`` in voxels, z inclusive (challenge order).
                A challenge ``.npz`` path brings its own boxes when ``boxes`` is None.
            strategy: "slicewise" or "propagate" (the official loop); default: this segmenter's ``volume_strategy``
                ("slicewise" unless set; "propagate" for :meth:`reference`).
            cache_slices: embeddings kept between the upward and downward sweeps (4 MiB each).
            progress: optional callable ``(done, total)`` called after each slice.
            slice_step: 1 (default) decodes every slice of every box. k > 1 is the opt-in slice-skipping mode: each
                box is decoded on every k-th slice (z % k == 0) and its first and last slice, the slices between
                are filled by shape interpolation of the two masks (signed distances); about 1/k of the encodings,
                at some accuracy cost (benchmarks/results/volume.md gives DSC / NSD vs time for k = 1, 2, 3).

        Returns:
            :class:`VolumeResult` with the uint16 label map, per-box masks on demand and the geometry (spacing, origin
            and direction in ITK (x, y, z) order; ``geometry.spacing_zyx`` matches the array axes).
        """
        from .io import open_volume

        loaded = open_volume(volume)
        array, geometry = loaded.array, loaded.geometry
        if boxes is None:
            boxes = loaded.boxes
        if boxes is None:
            raise InvalidBoxError("boxes are required: (N, 6) [x_min, y_min, z_min, x_max, y_max, z_max]")
        array = check_volume(array)
        clipped = check_boxes_3d(boxes, array.shape)
        strategy = strategy or self.volume_strategy
        if strategy not in STRATEGIES:
            raise ConfigurationError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        if isinstance(cache_slices, bool) or not isinstance(cache_slices, (int, np.integer)) or cache_slices < 0:
            raise ConfigurationError(f"cache_slices must be a non-negative integer, got {cache_slices!r}")
        slice_step = check_slice_step(slice_step)
        if array.dtype != np.uint8:  # converted slice by slice when the loop reads it, never as a whole volume
            from .intensity import slice_converter

            array = SliceSource(array, slice_converter(array, window, modality or loaded.modality))

        with self._lock:
            return run_volume(
                array, clipped, self.engine.encode, self.engine.decode_model, strategy=strategy, cache_slices=cache_slices,
                progress=progress, geometry=geometry, refine=VolumeZoom(self._zoom) if self._zoom is not None else None,
                slice_step=slice_step,
            )

    # -- introspection ---------------------------------------------------------------------------------------------
    @property
    def info(self) -> dict:
        """Device, precision, threads, model files and kernel backend in use."""
        try:
            value = self.engine.encoder.compiled.get_property("INFERENCE_PRECISION_HINT")
            exec_precision = value.to_string() if hasattr(value, "to_string") else str(value)
        except Exception:  # noqa: BLE001 - not every device reports it; a wrapped engine has no compiled model
            exec_precision = "unknown"
        return {
            "device": self.options.device,
            "precision": self.options.precision,
            "execution_precision": exec_precision,
            "threads": self.options.threads,
            "performance_hint": self.options.performance_hint,
            "cache_dir": self.options.cache_dir,
            "encoder": str(self.models.encoder_xml) if self.models else None,
            "decoder": (str(self.models.decoder_for(self.runtime.execution_precision if self.runtime else "f32"))
                        if self.models else None),
            "kernels": kernels.BACKEND,
            "volume_strategy": self.volume_strategy,
            "refine": None if self.refine is None else repr(self.refine),
            "compiled_models": [dict(entry) for entry in self.runtime.log] if self.runtime else [],
        }
