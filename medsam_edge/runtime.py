"""The one place that talks to OpenVINO.

:class:`Runtime` owns the ``ov.Core``, the device, the performance hint, the thread count, the compiled-model cache
directory and the execution precision. :class:`EncoderModel` and :class:`DecoderModel` wrap one compiled model and
one infer request each and return NumPy arrays that the caller owns (OpenVINO reuses its output tensors, so every
output that is kept is copied).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import ConfigurationError, ModelFileError

#: precision name -> (model variant on disk, OpenVINO INFERENCE_PRECISION_HINT)
PRECISIONS: dict[str, tuple[str, str]] = {
    "fp32": ("fp32", "f32"),  # FP16 + int8-residual weights (~fp32, folded at compile time), exact f32 execution
    "bf16": ("fp16", "bf16"),  # FP16-stored weights, bf16 execution (fast on CPUs with AVX-512 BF16 / AMX)
    # INT8 encoder + FP32 decoder; bf16 for the non-quantized ops where the CPU has it (val split: encoder 0.46x instead
    # of 0.51x the fp32 encoder, decoder 0.7x, agreement with fp32 not lower; calibration/README.md, fourth round).
    # Where the CPU has no bf16 the execution is f32 and the variant's INT8 decoder runs instead (decoder 0.73-0.80x
    # the FP32 one at f32, AMD Zen 4; calibration/README.md, "INT8 decoder")
    "int8": ("int8", "bf16"),
}
PERFORMANCE_HINTS = ("LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT")


#: the precision ``Segmenter()``, the CLI, the cohort runner and the napari widget use unless told otherwise:
#: INT8 (NNCF-quantized encoder; decoder in bf16 where the CPU has AVX-512 BF16 / AMX, else f32). Measured against
#: ground truth it is level with fp32 on this product's val/dev sets (calibration/README.md); fp32 stays
#: ``Segmenter.reference()``.
DEFAULT_PRECISION = "int8"


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
        precision: "int8" (default, :data:`DEFAULT_PRECISION`), "fp32" or "bf16" (see :data:`PRECISIONS`).
        threads: ``INFERENCE_NUM_THREADS``; None leaves OpenVINO's default (all cores).
        performance_hint: "LATENCY" (default) or "THROUGHPUT"/"CUMULATIVE_THROUGHPUT".
        cache_dir: medsam_edge's compiled-model cache folder (keyed entries, see :class:`Runtime`); None disables it.
        cpu_pinning: ``ENABLE_CPU_PINNING``; None leaves OpenVINO's default. Several processes on one machine (the
            cohort runner's workers) want False: each process otherwise pins its threads from core 0 on.
        decoder_snippets: let the CPU plugin fuse the decoder's attentions into its "snippets" kernels (OpenVINO's
            default). Off by default (:data:`DECODER_CPU_PROPERTIES`): without them the decoder ran 11-18% faster per
            box at bf16 and f32 on AMD Zen 5 (benchmarks/bench_decoder.py --snippets). The encoder keeps them (2x
            slower without).
    """

    device: str = "CPU"
    precision: str = DEFAULT_PRECISION
    threads: int | None = None
    performance_hint: str = "LATENCY"
    cache_dir: str | None = None
    cpu_pinning: bool | None = None
    decoder_snippets: bool = False

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigurationError(f"precision must be one of {sorted(PRECISIONS)}, got {self.precision!r}")
        if not isinstance(self.device, str) or not self.device:
            raise ConfigurationError(f"device must be an OpenVINO device name such as 'CPU', got {self.device!r}")
        if self.threads is not None and (
            isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1
        ):
            raise ConfigurationError(f"threads must be a positive integer or None, got {self.threads!r}")
        if not isinstance(self.decoder_snippets, bool):
            raise ConfigurationError(f"decoder_snippets must be True or False, got {self.decoder_snippets!r}")
        if self.cpu_pinning is not None and not isinstance(self.cpu_pinning, bool):
            raise ConfigurationError(f"cpu_pinning must be True, False or None, got {self.cpu_pinning!r}")
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

    @property
    def execution_precision(self) -> str:
        """What the models execute as on this device: :attr:`inference_precision`, or "f32" where bf16 is asked for
        and the CPU has no bf16 (the hint sent to OpenVINO is then f32 too, so that the cache key says what runs)."""
        hint = self.inference_precision
        return "f32" if hint == "bf16" and not bf16_available(self.device) else hint


_CORE = None
_CORE_LOCK = threading.Lock()
_OVC = "openvino.tools.ovc"


def _convert_model(*args, **kwargs):
    """``openvino.convert_model`` as installed by :func:`openvino`: loads the model converter on its first call."""
    import importlib

    return importlib.import_module(_OVC).convert_model(*args, **kwargs)


def openvino():
    """The ``openvino`` module, imported without its model converter when this process has not imported it yet.

    ``openvino/__init__.py`` (2026.4) ends with ``from openvino.tools.ovc import convert_model``, which loads the
    converter and its telemetry: 0.06 of the 0.15 s that ``import openvino`` takes (AMD EPYC Zen 4, fresh
    interpreters), and nothing on the inference path uses it. During that first import the converter module is a
    placeholder whose ``convert_model`` imports the real converter when called, so ``openvino.convert_model`` keeps
    working (export, NNCF); ``import openvino.tools.ovc`` afterwards loads the real module.
    """
    import sys

    if "openvino" not in sys.modules and _OVC not in sys.modules:
        import types

        placeholder = types.ModuleType(_OVC)
        placeholder.convert_model = _convert_model
        sys.modules[_OVC] = placeholder
        try:
            import openvino as ov
        finally:
            if sys.modules.get(_OVC) is placeholder:
                del sys.modules[_OVC]
        return ov
    import openvino as ov

    return ov


def core():
    """The process-wide ``ov.Core`` (created on first use)."""
    global _CORE
    with _CORE_LOCK:
        if _CORE is None:
            _CORE = openvino().Core()
        return _CORE


def resolve_cache_dir(cache_dir) -> str | None:
    """DEFAULT -> ``<cache root>/compiled``; None/"" -> None; a path is created if needed (None if it can't be)."""
    if cache_dir is None or cache_dir == "" or cache_dir is False:
        return None
    path = default_cache_root() / "compiled" if cache_dir is DEFAULT else Path(cache_dir).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        warnings.warn(f"compiled-model cache disabled: cannot create {path} ({exc})", RuntimeWarning, stacklevel=3)
        return None
    return str(path)


#: bump when the layout or the meaning of a cache entry changes
CACHE_FORMAT = 1
#: CPU flags that decide which kernels OpenVINO's CPU plugin runs (and so what a compiled blob contains)
CPU_FLAGS = ("avx2", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16",
             "amx_int8", "amx_fp16")


def trim_heap() -> bool:
    """Give the C heap's free pages back to the system (glibc ``malloc_trim(0)``); False where there is no glibc.

    Importing or compiling a model leaves freed blocks behind in glibc's heaps (the blob's deserialisation, the plugin's
    graph passes, the decoder's arena of its compile thread), which stay resident until reused. Called once the models
    are built: peak RSS of the 512x512x200 int16 run 385.9 -> 383.0 MB from the cache, 446.1 -> 419.2 MB on a run that
    compiles the models (AMD EPYC Zen 4, ``benchmarks/results/memory_trim_heap.json``); it takes ~0.05 ms.
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


@lru_cache(maxsize=1)
def _malloc_trim():
    """glibc's ``malloc_trim`` from the symbols this process already has loaded, or None (musl, macOS, Windows)."""
    import ctypes

    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


@lru_cache(maxsize=1)
def cpu_features() -> dict:
    """``{"model": name, "flags": [...]}`` of this machine's CPU (Linux ``/proc/cpuinfo``; elsewhere name only).

    ``platform.processor()`` is asked only where ``/proc/cpuinfo`` names no model: on Linux it runs ``uname -p`` in a
    subprocess, which cost 40 ms of every ``Segmenter()`` construction (AMD EPYC Zen 4, OpenVINO loaded)."""
    name, flags = None, set()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name":
                    name = value.strip()
                elif key == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    if name is None:
        import platform

        name = platform.processor() or platform.machine()
    return {"model": name, "flags": [f for f in CPU_FLAGS if f in flags]}


@lru_cache(maxsize=8)
def bf16_available(device: str = "CPU") -> bool:
    """Whether OpenVINO can execute bf16 on ``device`` (its ``OPTIMIZATION_CAPABILITIES``; a CPU without AVX-512 BF16
    or AMX runs a bf16 hint as f32). Non-CPU devices are trusted to map the hint themselves (True)."""
    if _device_family(device) != "CPU":
        return True
    try:
        caps = {str(c).upper() for c in core().get_property(device, "OPTIMIZATION_CAPABILITIES")}
    except Exception:  # noqa: BLE001 - device not available: judge from the flags alone
        return bool({"avx512_bf16", "amx_bf16"} & set(cpu_features()["flags"]))
    return "BF16" in caps


def execution_plan(device: str = "CPU") -> dict[str, str]:
    """What each precision executes as on this machine's CPU (from its ISA flags and OpenVINO's capabilities)."""
    flags = set(cpu_features()["flags"])
    f32 = "f32 (AVX-512)" if "avx512f" in flags else "f32 (AVX2)" if "avx2" in flags else "f32"
    if bf16_available(device):
        bf16 = "bf16 on AMX-BF16 tiles" if "amx_bf16" in flags else "bf16 on AVX-512 BF16"
    else:
        bf16 = None
    if "amx_int8" in flags:
        int8 = "AMX-INT8"
    elif "avx512_vnni" in flags:
        int8 = "AVX-512 VNNI"
    elif "avx_vnni" in flags:
        int8 = "AVX-VNNI"
    else:
        int8 = "AVX2 without VNNI (slow int8)"
    rest = bf16 or f32
    return {
        "fp32": f"{f32}, FP16+residual weights folded to f32",
        "bf16": f"{bf16}, FP16-stored weights" if bf16 else f"{f32} (no bf16 on this CPU: like fp32, FP16 weights)",
        "int8": f"quantized convolutions/matmuls in int8 on {int8}; the other ops in {rest}; decoder: "
                + ("the fp32c decoder in bf16" if bf16 else "the INT8 decoder (decoder_int8), f32 for its other ops"),
    }


def _device_family(device: str) -> str:
    """"CPU" of "CPU", "GPU" of "GPU.1" or "GPU:0": the device name without its index."""
    return device.split(":")[0].split(".")[0]


def _file_digest(path: Path, known: dict | None) -> dict:
    """Identity of one model file for the cache key: the manifest's sha256 when known, else computed; + size/mtime."""
    stat = path.stat()
    digest = (known or {}).get(path.name)
    if digest is None:
        from .models import sha256_of

        digest = sha256_of(path)
    return {"name": path.name, "sha256": digest, "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


class Runtime:
    """Compiles IR files with one consistent set of options, through medsam_edge's own compiled-model cache.

    Why not OpenVINO's ``CACHE_DIR``: in OpenVINO 2026.4 (CPU plugin) the cache key of a model reshaped in memory
    does not include ``INFERENCE_PRECISION_HINT`` (and compiling from the file path collides too), so a blob compiled
    at f32 was served to a bf16 compile of the same decoder, and on an AMX CPU (Sapphire Rapids) that blob then
    returned garbage (IoU 0.2451 for every box) without an error, for every later process reading the folder. So the
    cache is keyed here: one entry folder per (model files' sha256, static shapes, device and its name, this CPU's
    model and ISA flags, every compile property we set, OpenVINO version, cache format); an entry holds exactly one
    blob (``compiled.export_model``), written atomically only after the freshly compiled model passed its golden
    self-check (:mod:`medsam_edge.selfcheck`), and read back with ``core.import_model`` under the same properties.
    Two configurations that differ in anything therefore never share a blob, and a blob on disk has passed the check.

    ``log`` lists what each :meth:`compile` did (source "compiled" or "cache", seconds, self-check figures).
    """

    def __init__(self, options: RuntimeOptions, digests: dict | None = None, golden: Path | None = None) -> None:
        self.options = options
        #: what the models execute as (decided once: "f32" for a bf16 hint on a CPU without bf16)
        self.execution_precision = options.execution_precision
        self.digests = digests  # {file name: sha256} known from the manifest (saves hashing the files again)
        self.golden = golden
        self.log: list[dict] = []

    def decoder_properties(self) -> dict:
        """Extra compile properties of the decoder (:data:`DECODER_CPU_PROPERTIES` on the CPU unless
        ``decoder_snippets``)."""
        if self.options.decoder_snippets or _device_family(self.options.device) != "CPU":
            return {}
        return dict(DECODER_CPU_PROPERTIES)

    def compile_properties(self, extra: dict | None = None) -> dict:
        opts = self.options
        props: dict = {
            "PERFORMANCE_HINT": opts.performance_hint,
            "INFERENCE_PRECISION_HINT": self.execution_precision,
        }
        if opts.threads is not None:
            props["INFERENCE_NUM_THREADS"] = opts.threads
        if opts.cpu_pinning is not None:
            props["ENABLE_CPU_PINNING"] = opts.cpu_pinning
        props.update(extra or {})
        return props

    def cache_entry(self, xml_path: Path, shapes: dict | None = None, properties: dict | None = None) -> Path | None:
        """The cache entry folder of this model under these options (None: caching off)."""
        if not self.options.cache_dir:
            return None
        ov = openvino()
        xml_path = Path(xml_path)
        try:
            device_name = str(core().get_property(self.options.device, "FULL_DEVICE_NAME"))
        except Exception:  # noqa: BLE001 - an unknown device fails later, at compile time, with a clear error
            device_name = "?"
        key = {
            "format": CACHE_FORMAT,
            "openvino": ov.get_version(),
            "device": self.options.device,
            "device_name": device_name,
            "cpu": cpu_features(),
            "files": [_file_digest(xml_path, self.digests), _file_digest(xml_path.with_suffix(".bin"), self.digests)],
            "shapes": {k: list(v) for k, v in sorted((shapes or {}).items())},
            "properties": {k: str(v) for k, v in sorted(self.compile_properties(properties).items())},
        }
        text = json.dumps(key, sort_keys=True)
        return Path(self.options.cache_dir) / f"{xml_path.stem}-{hashlib.sha256(text.encode()).hexdigest()[:24]}"

    def compile(self, xml_path: Path, shapes: dict | None = None, check: str | None = None,
                properties: dict | None = None):
        """Read and compile one IR (or import its verified blob from the cache); errors name the file.

        ``shapes`` ({input name: static shape}) reshapes the model before compiling: a static shape lets the CPU
        plugin plan and reuse its working memory (a dynamic-batch decoder allocates ~45 MB more per box in a call).
        ``check`` ("encoder" / "decoder" / None) runs the golden self-check on a fresh compile and refuses a model
        outside the tolerance of this precision (:class:`~medsam_edge.errors.ModelCheckError`).
        ``properties``: compile properties of this model on top of :meth:`compile_properties` (part of the key).
        """
        t0 = time.perf_counter()
        entry = self.cache_entry(xml_path, shapes, properties)
        compiled = self._import(entry, properties) if entry is not None else None
        if compiled is not None:
            self.log.append({"model": Path(xml_path).name, "shapes": shapes, "source": "cache",
                             "seconds": time.perf_counter() - t0})
            return compiled
        compiled = self._compile(Path(xml_path), shapes, properties)
        t1 = time.perf_counter()
        measured = self._self_check(compiled, Path(xml_path), check) if check else None
        check_seconds = time.perf_counter() - t1
        if entry is not None:
            self._store(entry, compiled, {"model": Path(xml_path).name, "shapes": shapes, "self_check": measured})
        self.log.append({"model": Path(xml_path).name, "shapes": shapes, "source": "compiled",
                         "seconds": time.perf_counter() - t0, "self_check": measured,
                         "self_check_seconds": check_seconds if check else 0.0})
        return compiled

    def _compile(self, xml_path: Path, shapes: dict | None, properties: dict | None = None):
        ov_core = core()
        props = self.compile_properties(properties)
        try:
            if shapes:
                model = ov_core.read_model(str(xml_path))
                model.reshape(shapes)
                return ov_core.compile_model(model, self.options.device, props)
            return ov_core.compile_model(str(xml_path), self.options.device, props)
        except RuntimeError as exc:
            text = str(exc)
            if _device_family(self.options.device) not in ov_core.available_devices and (
                "device" in text.lower() or "plugin" in text.lower()
            ):
                raise ConfigurationError(
                    f"OpenVINO device {self.options.device!r} is not available "
                    f"(available: {ov_core.available_devices}): {text.splitlines()[0] if text else ''}"
                ) from exc
            raise ModelFileError(f"OpenVINO could not read/compile model file {xml_path}: {text}") from exc
        except Exception as exc:  # pragma: no cover - unexpected OpenVINO failure types
            raise ModelFileError(f"OpenVINO could not read/compile model file {xml_path}: {exc}") from exc

    def _self_check(self, compiled, xml_path: Path, kind: str) -> dict:
        from . import selfcheck
        from .models import MODEL_DIR

        golden = self.golden or MODEL_DIR / selfcheck.GOLDEN_NAME
        if kind == "encoder":
            def run(tensor):
                return compiled({0: tensor})[compiled.outputs[0]]
            boxes_per_call = 1
        else:
            shape = compiled.input("boxes").get_partial_shape()
            boxes_per_call = int(shape[0].get_length()) if shape.is_static else 4

            def run(embedding, boxes):
                out = compiled({"embedding": embedding, "boxes": boxes})
                return out[compiled.output("low_res_logits")], out[compiled.output("iou")]
        return selfcheck.check(kind, run, golden, self.options.precision, self.options.device, xml_path.name,
                               boxes_per_call)

    def _import(self, entry: Path, properties: dict | None = None):
        blob = entry / BLOB_NAME
        if not blob.is_file():
            return None
        try:
            data = blob.read_bytes()
            return core().import_model(data, self.options.device, self.compile_properties(properties))
        except Exception as exc:  # noqa: BLE001 - an unreadable entry is dropped and the model compiled afresh
            warnings.warn(f"dropping compiled-model cache entry {entry} ({exc}); compiling again",
                          RuntimeWarning, stacklevel=4)
            shutil.rmtree(entry, ignore_errors=True)
            return None

    def _store(self, entry: Path, compiled, facts: dict) -> None:
        """Write the entry's description, then its blob (blob last: a blob on disk means a complete, checked entry)."""
        import io

        try:
            entry.mkdir(parents=True, exist_ok=True)
            stream = io.BytesIO()
            compiled.export_model(stream)
            _write_atomic(entry / "entry.json", json.dumps(facts, indent=2, default=str).encode())
            _write_atomic(entry / BLOB_NAME, stream.getvalue())
        except Exception as exc:  # noqa: BLE001 - a cache that cannot be written only costs time
            warnings.warn(f"compiled-model cache entry {entry} not written ({exc})", RuntimeWarning, stacklevel=4)


BLOB_NAME = "model.blob"


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


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
    """embedding (1,256,64,64) + boxes (B,4) float32 in 256 space -> logits (B,256,256), iou (B,), both copied.

    With a decoder compiled for a static number of boxes (:data:`DECODER_SHAPES`: one), boxes are decoded in steps
    against an embedding fed once per call. A static shape lets OpenVINO plan its working memory: ~35 MB for one box,
    where a dynamic-batch decoder takes ~90 MB for one box and ~45 MB more per further box of a call (8 boxes: ~400 MB).
    ``wide`` (optional) compiles, on first need, a decoder for :data:`WIDE_BOXES` boxes per call that calls with at
    least that many boxes use for their full chunks (faster per box for many boxes; ~90 MB more working memory, paid
    only by a process that makes such calls). A compiled model whose box input is dynamic is called once per call.
    """

    def __init__(self, compiled, wide: Callable[[], object] | None = None) -> None:
        self.compiled = compiled
        self._wide_factory = wide
        names = {out.get_any_name(): out for out in compiled.outputs}
        self._logits = names.get("low_res_logits", compiled.outputs[0])
        self._iou = names.get("iou", compiled.outputs[1])
        inputs = {inp.get_any_name(): inp for inp in compiled.inputs}
        self._emb_key = "embedding" if "embedding" in inputs else 0
        self._box_key = "boxes" if "boxes" in inputs else 1
        shape = inputs.get("boxes", compiled.inputs[1]).get_partial_shape()
        self._step = int(shape[0].get_length()) if shape.is_static else None  # boxes per infer call
        self._request = compiled.create_infer_request()
        self._wide: tuple | None = None  # (request, boxes per call) once compiled
        self._emb = None  # (1, 256, 64, 64) input buffer of the static-shape path, bound to the requests once

    def __call__(self, embedding: np.ndarray, boxes256: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        boxes256 = np.ascontiguousarray(boxes256, dtype=np.float32).reshape(-1, 4)
        n = boxes256.shape[0]
        if n == 0:
            return np.zeros((0, 256, 256), np.float32), np.zeros((0,), np.float32)
        if self._step is None:
            self._request.infer({self._emb_key: embedding, self._box_key: boxes256})
            logits = np.array(self._request.get_tensor(self._logits).data, dtype=np.float32, copy=True)
            iou = np.array(self._request.get_tensor(self._iou).data, dtype=np.float32, copy=True)
            return logits.reshape(n, 256, 256), iou.reshape(n)
        if self._emb is None:
            self._emb = np.empty((1, 256, 64, 64), np.float32)
            self._set(self._request, self._emb_key, self._emb)
        np.copyto(self._emb, np.reshape(embedding, self._emb.shape))  # fed once, shared by every box of this call
        logits = np.empty((n, 256, 256), np.float32)
        iou = np.empty((n,), np.float32)
        start = 0
        if self._wide_factory is not None and n >= WIDE_BOXES:
            request, step = self._wide_request()
            while n - start >= step:
                self._run(request, step, boxes256[start:start + step], logits[start:start + step],
                          iou[start:start + step])
                start += step
        while start < n:
            count = min(self._step, n - start)
            self._run(self._request, self._step, boxes256[start:start + count], logits[start:start + count],
                      iou[start:start + count])
            start += count
        return logits, iou

    def _wide_request(self) -> tuple:
        if self._wide is None:
            compiled = self._wide_factory()
            request = compiled.create_infer_request()
            names = {out.get_any_name(): out for out in compiled.outputs}
            shape = [inp for inp in compiled.inputs if inp.get_any_name() == "boxes"][0].get_partial_shape()
            self._set(request, self._emb_key, self._emb)
            self._wide = (request, int(shape[0].get_length()), names["low_res_logits"], names["iou"])
        request, step = self._wide[0], self._wide[1]
        return request, step

    def _run(self, request, step: int, chunk: np.ndarray, logits_out: np.ndarray, iou_out: np.ndarray) -> None:
        count = chunk.shape[0]
        if count < step:  # pad a short chunk by repeating its last box
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], step - count, axis=0)])
        self._set(request, self._box_key, np.ascontiguousarray(chunk))
        request.infer()
        wide = self._wide is not None and request is self._wide[0]
        out_logits = self._wide[2] if wide else self._logits
        out_iou = self._wide[3] if wide else self._iou
        logits_out[...] = request.get_tensor(out_logits).data.reshape(step, 256, 256)[:count]
        iou_out[...] = request.get_tensor(out_iou).data.reshape(step)[:count]

    @staticmethod
    def _set(request, key, array: np.ndarray) -> None:
        if isinstance(key, int):
            request.set_input_tensor(key, _ov_tensor(array))
        else:
            request.set_tensor(key, _ov_tensor(array))


#: the decoder's own CPU compile properties: no snippets kernels (its attentions ran 11-18% faster per box through the
#: plugin's plain MatMul / Softmax nodes, bf16 and f32, AMD Zen 5, 2 threads); see RuntimeOptions.decoder_snippets
DECODER_CPU_PROPERTIES = {"SNIPPETS_MODE": "DISABLE"}
#: static input shapes the decoder is compiled with (one box per infer call; see :class:`DecoderModel`)
DECODER_SHAPES = {"boxes": [1, 4]}
#: boxes per call of the optional wide decoder (calls with at least this many boxes)
WIDE_BOXES = 4
WIDE_DECODER_SHAPES = {"boxes": [WIDE_BOXES, 4]}


def _ov_tensor(array: np.ndarray):
    return openvino().Tensor(array, shared_memory=True)
