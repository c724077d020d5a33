"""Compact near-FP32 weight storage: every large f32 weight as an FP16 value plus a per-element low-bit residual.

Why: plain FP16 weights (2 bytes each) keep only 11 significant bits, which is enough to flip a few LiteMedSAM
masks, while FP32 weights (4 bytes) break the 30 MB size budget. The scheme below stores 3 bytes per weight
(int8 residual) or 2.5 bytes (int4 residual) and recovers ~19 (int8) or ~15 (int4) significant bits.

Encoding of one weight ``w`` (f32)::

    h     = fp16(w)                                  round to nearest: |w - h| <= unit,
    unit  = max(|h|, 2**-14) * 2**-11                the half-ULP bound of FP16 (normals and subnormals alike)
    step  = unit / 2**(bits - 1)                     a power-of-two multiple of max(|h|, 2**-14): exact in f32
    q     = round((w - h) / step), clipped to the signed ``bits``-bit range
    w'    = f32(h) + q * step                        what the graph computes (one f32 rounding, in the Add)

``|w - h| <= unit`` holds for every finite ``w`` within FP16 range: for a normal ``h`` half an ULP is at most
``|h| * 2**-11``, for subnormal (or zero) ``h`` it is ``2**-25 = 2**-14 * 2**-11``. Hence ``q`` needs at most
``bits`` signed bits (a value at exactly +2**(bits-1) only arises on an exact rounding tie and is clipped, costing
at most one ``step``), and the reconstruction error is ``<= step / 2`` plus the final f32 rounding:

    |w' - w| <= max(|h|, 2**-14) * 2**-(11 + bits) + ulp_f32(w) / 2

i.e. a relative error <= 2**-19 (int8) / 2**-15 (int4) for weights >= 2**-14 in magnitude, and an absolute error
<= 2**-33 (int8) / 2**-29 (int4) below that. ``q`` is chosen by trying round(r) and its neighbours with exactly the
graph's f32 arithmetic, so the stored code is the best one the decoder formula can express.

Graph form (replaces the weight constant, feeding the original consumers)::

    Constant f16 (h) -> Convert f32 ----------------------------------------------+-> Add -> consumer
                             '-> Abs -> Maximum(2**-14) -> Multiply(2**-(10+bits)) |
    Constant i8/i4 (q) -> Convert f32 ---------------------------------> Multiply -'

Everything in it derives from constants, so OpenVINO's CPU plugin folds it back to one f32 constant while
compiling (run-time graph and latency are those of the FP32 IR; see tests/test_storage.py). The i8/i4 ``Convert``
deliberately feeds a ``Multiply`` whose other input is *not* a constant, and an ``Add`` follows, so the pattern is
not one of the plugin's weight-decompression (dequantize-on-the-fly) forms.

Small constants (at most ``min_values`` values: biases, norm parameters, scalars, the Fourier matrix, the
attention-bias grids) are left as exact f32: at that size an FP16+residual split saves next to nothing. The model
must therefore be saved with ``ov.save_model(..., compress_to_fp16=False)``; the FP16 halves are built here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import openvino as ov
import openvino.opset13 as ops

#: residual-code widths supported by :func:`compact_weights`
RESIDUAL_BITS = (4, 8)
#: constants with at most this many values stay plain f32 (same threshold as convert.SMALL_CONSTANT_VALUES)
MIN_VALUES = 4096
#: smallest normal FP16 magnitude; below it FP16's absolute spacing is constant (2**-24)
FP16_MIN_NORMAL = np.float32(2.0**-14)
FP16_MAX = 65504.0
#: the rt_info / manifest name of this storage scheme
SCHEME = "fp16+int{bits}_residual"


def scheme_name(bits: int) -> str:
    """Human/machine-readable storage tag, e.g. ``fp16+int8_residual``."""
    return SCHEME.format(bits=bits)


def _check_bits(bits: int) -> None:
    if bits not in RESIDUAL_BITS:
        raise ValueError(f"residual bits must be one of {RESIDUAL_BITS}, got {bits!r}")


def step_scale(bits: int) -> np.float32:
    """``2**-(10 + bits)``: multiplied by ``max(|h|, 2**-14)`` it gives the residual step (``unit / 2**(bits-1)``)."""
    _check_bits(bits)
    return np.float32(2.0 ** -(10 + bits))


def _steps(hi: np.ndarray, bits: int) -> np.ndarray:
    """Per-element residual step in f32, computed with the same operations (and roundings) as the graph."""
    return (np.maximum(np.abs(hi), FP16_MIN_NORMAL) * step_scale(bits)).astype(np.float32)


def decode_residual(hi: np.ndarray, codes: np.ndarray, bits: int) -> np.ndarray:
    """NumPy mirror of the graph: ``f32(hi) + f32(codes) * step`` in float32 (bit-identical to OpenVINO's folding)."""
    hi32 = np.asarray(hi, dtype=np.float16).astype(np.float32)
    return (hi32 + codes.astype(np.float32) * _steps(hi32, bits)).astype(np.float32)


def encode_residual(values: np.ndarray, bits: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Split f32 ``values`` into (FP16 array ``hi``, int8 array ``codes`` in the signed ``bits``-bit range).

    Raises ValueError for non-finite values or magnitudes beyond FP16's range (the scheme has no exponent room).
    """
    _check_bits(bits)
    values = np.asarray(values, dtype=np.float32)
    if not np.all(np.isfinite(values)) or (values.size and float(np.abs(values).max()) > FP16_MAX):
        raise ValueError("fp16+residual storage needs finite values within the FP16 range (|x| <= 65504)")
    hi = values.astype(np.float16)
    codes, err = _best_codes(values, hi, bits)
    # |w - h| can sit just below half an FP16 ULP, where the code rounds to +2**(bits-1), one past the int range.
    # There the other FP16 neighbour above w (h' = next FP16 towards +inf) leaves a residual near -half-ULP, which
    # the negative side of the range holds; take it whenever it reconstructs w more closely.
    edge = codes == 2 ** (bits - 1) - 1
    if edge.any():
        alt_hi = hi.copy()
        alt_hi[edge] = np.nextafter(hi[edge], np.float16(np.inf))
        alt_codes, alt_err = _best_codes(values[edge], alt_hi[edge], bits)
        better = alt_err < err[edge]
        index = np.flatnonzero(edge.ravel())[better.ravel()]
        hi.ravel()[index] = alt_hi.ravel()[index]
        codes.ravel()[index] = alt_codes.ravel()[better.ravel()]
    return hi, codes


def _best_codes(values: np.ndarray, hi: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """For fixed FP16 ``hi``: the int8 codes (in the ``bits`` range) whose decoded value is nearest ``values``,
    evaluated with the graph's f32 arithmetic, and the resulting absolute errors (f32)."""
    hi32 = hi.astype(np.float32)
    step = _steps(hi32, bits)
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    # the residual (values - hi32) is exact in f32 (Sterbenz), so only the division rounds here
    guess = np.clip(np.rint((values - hi32) / step), low, high).astype(np.int32)
    best = guess.copy()
    best_err = np.abs(hi32 + guess.astype(np.float32) * step - values)
    for delta in (-1, 1):  # the final f32 Add may round either way: keep the code whose result lands closest
        cand = np.clip(guess + delta, low, high)
        err = np.abs(hi32 + cand.astype(np.float32) * step - values)
        better = err < best_err
        best[better] = cand[better]
        best_err[better] = err[better]
    return best.astype(np.int8), best_err


def error_bound(values: np.ndarray, bits: int = 8) -> np.ndarray:
    """Per-element guaranteed bound on ``|decode(encode(values)) - values|`` (see the module docstring)."""
    values = np.asarray(values, dtype=np.float32)
    hi32 = values.astype(np.float16).astype(np.float32)
    floor = np.maximum(np.abs(hi32), FP16_MIN_NORMAL).astype(np.float64)
    f32_half_ulp = np.spacing(np.abs(values)).astype(np.float64) / 2
    return floor * 2.0 ** -(11 + bits) + f32_half_ulp


def _code_constant(codes: np.ndarray, bits: int) -> ov.Node:
    """An i8 Constant, or a packed i4 Constant (two codes per byte, low nibble first as OpenVINO stores i4)."""
    if bits == 8:
        return ops.constant(np.ascontiguousarray(codes, dtype=np.int8))
    flat = codes.astype(np.int16).ravel() & 0xF
    if flat.size % 2:
        flat = np.append(flat, 0)
    packed = (flat[0::2] | (flat[1::2] << 4)).astype(np.uint8)
    tensor = ov.Tensor(ov.Type.i4, ov.Shape(list(codes.shape)))
    np.copyto(tensor.data.reshape(-1), packed[: tensor.data.size])
    return ov.op.Constant(tensor)


def residual_subgraph(values: np.ndarray, bits: int = 8) -> ov.Output:
    """The graph that reproduces ``decode_residual(*encode_residual(values, bits), bits)`` (f32, same shape)."""
    hi, codes = encode_residual(values, bits)
    hi32 = ops.convert(ops.constant(hi), ov.Type.f32)
    magnitude = ops.maximum(ops.abs(hi32), ops.constant(FP16_MIN_NORMAL))
    step = ops.multiply(magnitude, ops.constant(step_scale(bits)))
    correction = ops.multiply(ops.convert(_code_constant(codes, bits), ov.Type.f32), step)
    return ops.add(hi32, correction).output(0)


@dataclass
class StorageReport:
    """What :func:`compact_weights` did: per-tensor facts and totals."""

    bits: int
    scheme: str
    tensors: list[dict] = field(default_factory=list)  # name, shape, values, max_abs_err, max_rel_err
    compacted_values: int = 0
    kept_f32_values: int = 0

    @property
    def stored_bytes(self) -> float:
        """Weight bytes after compaction (residual values: 2 + bits/8 bytes; kept constants: 4 bytes)."""
        return self.compacted_values * (2 + self.bits / 8) + self.kept_f32_values * 4


def _f32_constants(ov_model: ov.Model) -> list[ov.Node]:
    return [
        node for node in ov_model.get_ordered_ops()
        if node.get_type_name() == "Constant" and node.get_output_element_type(0) == ov.Type.f32
    ]


def compact_weights(
    ov_model: ov.Model, bits: int = 8, min_values: int = MIN_VALUES, copy: bool = True
) -> tuple[ov.Model, StorageReport]:
    """Return ``ov_model`` with every f32 constant of more than ``min_values`` values in FP16 + residual form.

    Args:
        ov_model: an FP32 model (e.g. from ``convert.convert_pair(..., "fp32", ...)``); not modified if ``copy``.
        bits: residual code width, 8 (int8, ~2**-19 relative error) or 4 (int4, ~2**-15).
        min_values: constants up to this size stay exact f32.
        copy: work on ``ov_model.clone()`` (default) instead of rewriting ``ov_model`` in place.

    Returns:
        (model to save with ``compress_to_fp16=False``, :class:`StorageReport`).
    """
    _check_bits(bits)
    model = ov_model.clone() if copy else ov_model
    report = StorageReport(bits=bits, scheme=scheme_name(bits))
    for node in _f32_constants(model):
        values = node.get_data()
        if values.size <= min_values:
            report.kept_f32_values += int(values.size)
            continue
        values = values.astype(np.float32, copy=True)
        rebuilt = residual_subgraph(values, bits)
        decoded = decode_residual(*encode_residual(values, bits), bits)
        err = np.abs(decoded.astype(np.float64) - values)
        report.tensors.append({
            "name": node.get_friendly_name(),
            "shape": tuple(int(d) for d in values.shape),
            "values": int(values.size),
            "max_abs_err": float(err.max()),
            "max_rel_err": float((err / np.maximum(np.abs(values), FP16_MIN_NORMAL)).max()),
        })
        report.compacted_values += int(values.size)
        for target in list(node.output(0).get_target_inputs()):
            target.replace_source_output(rebuilt)
    model.validate_nodes_and_infer_types()
    return model, report


def expand_weights(ov_model: ov.Model) -> ov.Model:
    """Inverse view for checks: a clone of a compact model with each residual subgraph replaced by the f32
    constant it computes (via :func:`decode_residual`). Matches the compact model's outputs bit for bit."""
    model = ov_model.clone()
    for add in [n for n in model.get_ordered_ops() if n.get_type_name() == "Add"]:
        decoded = _match_residual(add)
        if decoded is None:
            continue
        replacement = ops.constant(decoded).output(0)
        for target in list(add.output(0).get_target_inputs()):
            target.replace_source_output(replacement)
    model.validate_nodes_and_infer_types()
    return model


def _source(output: ov.Output) -> ov.Node:
    return output.get_node()


def _match_residual(add: ov.Node) -> np.ndarray | None:
    """If ``add`` is the root of a :func:`residual_subgraph`, the f32 array it computes; else None."""
    convert_hi = _source(add.input_value(0))
    correction = _source(add.input_value(1))
    if convert_hi.get_type_name() != "Convert" or correction.get_type_name() != "Multiply":
        return None
    hi_const = _source(convert_hi.input_value(0))
    code_convert = _source(correction.input_value(0))
    step = _source(correction.input_value(1))
    if (hi_const.get_type_name() != "Constant" or hi_const.get_output_element_type(0) != ov.Type.f16
            or code_convert.get_type_name() != "Convert" or step.get_type_name() != "Multiply"):
        return None
    code_const = _source(code_convert.input_value(0))
    scale_const = _source(step.input_value(1))
    if code_const.get_type_name() != "Constant" or scale_const.get_type_name() != "Constant":
        return None
    bits = {ov.Type.i8: 8, ov.Type.i4: 4}.get(code_const.get_output_element_type(0))
    if bits is None or float(scale_const.get_data()) != float(step_scale(bits)):
        return None
    codes = code_const.get_data() if bits == 8 else _unpack_i4(code_const)
    return decode_residual(hi_const.get_data(), codes.reshape(hi_const.get_output_shape(0)), bits)


def _unpack_i4(const: ov.Node) -> np.ndarray:
    shape = [int(d) for d in const.get_output_shape(0)]
    count = int(np.prod(shape, dtype=np.int64))
    packed = np.frombuffer(const.get_data().tobytes(), dtype=np.uint8)
    nibbles = np.empty(packed.size * 2, dtype=np.int8)
    nibbles[0::2] = (packed & 0xF).astype(np.int8)
    nibbles[1::2] = (packed >> 4).astype(np.int8)
    nibbles = np.where(nibbles >= 8, nibbles - 16, nibbles).astype(np.int8)
    return nibbles[:count].reshape(shape)


def compare_models(
    reference: ov.Model | str, candidate: ov.Model | str, inputs: dict[str, np.ndarray], threads: int = 2
) -> dict[str, dict[str, float]]:
    """Run both models once at f32 on ``inputs``; per output name: ``max_abs`` and ``rel_l2`` of candidate - reference.

    Used as the export-time gate of the compact IRs against the FP32 model they were made from.
    """
    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads}
    results = []
    for model in (reference, candidate):
        compiled = core.compile_model(model, "CPU", config)
        outputs = compiled(inputs)
        results.append({port.get_any_name(): np.array(outputs[port], dtype=np.float64) for port in compiled.outputs})
    metrics = {}
    for name, ref in results[0].items():
        diff = results[1][name] - ref
        metrics[name] = {
            "max_abs": float(np.abs(diff).max()),
            "rel_l2": float(np.linalg.norm(diff) / max(np.linalg.norm(ref), 1e-30)),
        }
    return metrics
