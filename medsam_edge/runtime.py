"""The one place that talks to OpenVINO.

:class:`Runtime` owns the ``ov.Core``, the device, the performance hint, the thread count, the compiled-model cache
directory and the execution precision. :class:`EncoderModel` and :class:`DecoderModel` wrap one compiled model and
one infer request each and return NumPy arrays that the caller owns (OpenVINO reuses its output tensors, so every
output that is kept is copied).
"""

from __future__ import annotations

import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ConfigurationError, ModelFileError

#: precision name -> (model variant on disk, OpenVINO INFERENCE_PRECISION_HINT)
PRECISIONS: dict[str, tuple[str, str]] = {
    "fp32": ("fp32", "f32"),  # FP16 + int8-residual weights (~fp32, folded at compile time), exact f32 execution
    "bf16": ("fp16", "bf16"),  # FP16-stored weights, bf16 execution (fast on CPUs with AVX-512 BF16 / AMX)
    "int8": ("int8", "f32"),  # INT8 encoder + FP32 decoder; f32 for non-quantized ops (bf16: -23% ms, less exact)
}
PERFORMANCE_HINTS = ("LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT")


class _Default:
    def __repr__(self) -> str:
        return "DEFAULT"


#: sentinel: use the default compiled-model cache directory
DEFAULT = _Default()


def default_cache_root() -> Path:
    """``$MEDSAM_EDGE_CACHE``, else ``$XDG_CACHE_HOME/medsam_edge``, else ``~/.cache/medsam_edge``."""
    env = os.environ.get("MEDSAM_EDGE_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "medsam_edge"


@dataclass(frozen=True)
class RuntimeOptions:
    """How models are compiled.

    Attributes:
        device: any OpenVINO device name ("CPU", "GPU", "AUTO", ...), passed through unchanged.
        precision: "int8", "fp32" or "bf16" (see :data:`PRECISIONS`).
        threads: ``INFERENCE_NUM_THREADS``; None leaves OpenVINO's default (all cores).
        performance_hint: "LATENCY" (default) or "THROUGHPUT"/"CUMULATIVE_THROUGHPUT".
        cache_dir: OpenVINO compiled-model cache folder; None disables caching.
    """

    device: str = "CPU"
    precision: str = "fp32"
    threads: int | None = None
    performance_hint: str = "LATENCY"
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigurationError(f"precision must be one of {sorted(PRECISIONS)}, got {self.precision!r}")
        if not isinstance(self.device, str) or not self.device:
            raise ConfigurationError(f"device must be an OpenVINO device name such as 'CPU', got {self.device!r}")
        if self.threads is not None and (
            isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1
        ):
            raise ConfigurationError(f"threads must be a positive integer or None, got {self.threads!r}")
        if self.performance_hint not in PERFORMANCE_HINTS:
            raise ConfigurationError(
                f"performance_hint must be one of {PERFORMANCE_HINTS}, got {self.performance_hint!r}"
            )

    @property
    def variant(self) -> str:
        return PRECISIONS[self.precision][0]

    @property
    def inference_precision(self) -> str:
        return PRECISIONS[self.precision][1]


_CORE = None
_CORE_LOCK = threading.Lock()


def core():
    """The process-wide ``ov.Core`` (created on first use)."""
    global _CORE
    with _CORE_LOCK:
        if _CORE is None:
            import openvino as ov

            _CORE = ov.Core()
        return _CORE


def resolve_cache_dir(cache_dir) -> str | None:
    """DEFAULT -> ``<cache root>/ov_cache``; None/"" -> None; a path is created if needed (None if it can't be)."""
    if cache_dir is None or cache_dir == "" or cache_dir is False:
        return None
    path = default_cache_root() / "ov_cache" if cache_dir is DEFAULT else Path(cache_dir).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        warnings.warn(f"compiled-model cache disabled: cannot create {path} ({exc})", RuntimeWarning, stacklevel=3)
        return None
    return str(path)


class Runtime:
    """Compiles IR files with one consistent set of options."""

    def __init__(self, options: RuntimeOptions) -> None:
        self.options = options

    def compile_properties(self) -> dict:
        opts = self.options
        props: dict = {
            "PERFORMANCE_HINT": opts.performance_hint,
            "INFERENCE_PRECISION_HINT": opts.inference_precision,
        }
        if opts.threads is not None:
            props["INFERENCE_NUM_THREADS"] = opts.threads
        if opts.cache_dir:
            props["CACHE_DIR"] = opts.cache_dir
        return props

    def compile(self, xml_path: Path):
        """Read and compile one IR; errors become :class:`ModelFileError` naming the file."""
        ov_core = core()
        props = self.compile_properties()
        try:
            return ov_core.compile_model(str(xml_path), self.options.device, props)
        except RuntimeError as exc:
            text = str(exc)
            if self.options.device.split(":")[0].split(".")[0] not in ov_core.available_devices and (
                "device" in text.lower() or "plugin" in text.lower()
            ):
                raise ConfigurationError(
                    f"OpenVINO device {self.options.device!r} is not available "
                    f"(available: {ov_core.available_devices}): {text.splitlines()[0] if text else ''}"
                ) from exc
            raise ModelFileError(f"OpenVINO could not read/compile model file {xml_path}: {text}") from exc
        except Exception as exc:  # pragma: no cover - unexpected OpenVINO failure types
            raise ModelFileError(f"OpenVINO could not read/compile model file {xml_path}: {exc}") from exc


class EncoderModel:
    """image (1, 3, 256, 256) float32 -> embedding (1, 256, 64, 64) float32 (a fresh array the caller owns)."""

    def __init__(self, compiled) -> None:
        self.compiled = compiled
        self._request = compiled.create_infer_request()
        self._out = compiled.outputs[0]

    def __call__(self, tensor: np.ndarray) -> np.ndarray:
        self._request.infer({0: tensor}, share_inputs=True)
        return np.array(self._request.get_tensor(self._out).data, dtype=np.float32, copy=True)


class DecoderModel:
    """embedding (1,256,64,64) + boxes (B,4) float32 in 256 space -> logits (B,256,256), iou (B,), both copied."""

    def __init__(self, compiled) -> None:
        self.compiled = compiled
        self._request = compiled.create_infer_request()
        names = {out.get_any_name(): out for out in compiled.outputs}
        self._logits = names.get("low_res_logits", compiled.outputs[0])
        self._iou = names.get("iou", compiled.outputs[1])
        in_names = {inp.get_any_name() for inp in compiled.inputs}
        self._emb_key = "embedding" if "embedding" in in_names else 0
        self._box_key = "boxes" if "boxes" in in_names else 1

    def __call__(self, embedding: np.ndarray, boxes256: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        boxes256 = np.ascontiguousarray(boxes256, dtype=np.float32).reshape(-1, 4)
        if boxes256.shape[0] == 0:
            return np.zeros((0, 256, 256), np.float32), np.zeros((0,), np.float32)
        self._request.infer({self._emb_key: embedding, self._box_key: boxes256})
        logits = np.array(self._request.get_tensor(self._logits).data, dtype=np.float32, copy=True)
        iou = np.array(self._request.get_tensor(self._iou).data, dtype=np.float32, copy=True)
        return logits.reshape(boxes256.shape[0], 256, 256), iou.reshape(boxes256.shape[0])
