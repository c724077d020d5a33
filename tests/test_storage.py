"""FP16 + low-bit residual weight storage (medsam_edge.export.storage) and the shipped "fp32" variant built with it.

Unit part (no torch): reconstruction error within the proven per-element bound on adversarial random weights, the
graph computing exactly what the NumPy mirror computes, OpenVINO folding it away at compile time.
Model part (needs torch + the cached checkpoint): the real LiteMedSAM weights, file sizes under the 30 MB budget,
compact IR outputs vs the FP32 IR, and the shipped files / manifest / runtime mapping.

Why the output tolerances are what they are: each weight is perturbed by at most 2**-19 (int8 residual) of its
magnitude. The same model with plain FP16 weights (2**-11, 256x coarser) is off by ~3e-3 (embedding relative L2);
error that propagates linearly predicts ~1.1e-5 for int8, measured ~1.5e-5 (encoder) and ~2e-6 (decoder logits).
The gates (6e-5 / 2e-5) leave ~4-10x headroom for thread-count and kernel-order noise while still failing loudly
if a tensor were left in FP16 (~1e-3) or a residual were decoded wrongly (>> 1e-4).
"""

from __future__ import annotations

import collections
import json
from pathlib import Path

import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest

from medsam_edge.export import storage

pytestmark = pytest.mark.model

F32 = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 2}
BUDGET_BYTES = 30_000_000
EMBEDDING_REL_L2 = 6e-5
LOGITS_REL_L2 = 2e-5


def _adversarial_weights(rng: np.random.Generator, n: int = 200_000) -> np.ndarray:
    """Normal weights over 14 decades, plus FP16-exact values, near-ties at +-half an FP16 ULP, FP16 subnormals,
    zeros and signed zeros, and values at the ends of the binades."""
    scales = 10.0 ** rng.uniform(-9, 2.5, size=n)
    w = (rng.standard_normal(n) * scales).astype(np.float32)
    h = w[: n // 8].astype(np.float16)
    ulp = np.abs(np.spacing(h).astype(np.float32))
    ties = (h.astype(np.float32) + np.sign(rng.standard_normal(h.size)).astype(np.float32) * ulp / 2
            * np.float32(1 - 2.0**-12)).astype(np.float32)
    extras = [
        h.astype(np.float32),  # exact in FP16: residual 0
        ties,  # the code would round to +-2**(bits-1)
        np.float32(2.0**-24) * rng.integers(-1023, 1024, size=4096).astype(np.float32),  # FP16 subnormal grid
        (rng.standard_normal(4096) * 2.0**-20).astype(np.float32),  # between subnormal points
        np.array([0.0, -0.0, 2.0**-14, -(2.0**-14), 65504.0, -65504.0, 1.0, 2.0 - 2.0**-23], np.float32),
    ]
    return np.concatenate([w, *extras]).astype(np.float32)


@pytest.mark.parametrize("bits", storage.RESIDUAL_BITS)
def test_reconstruction_within_bound_on_random_weights(bits: int) -> None:
    w = _adversarial_weights(np.random.default_rng(bits))
    hi, codes = storage.encode_residual(w, bits)
    assert hi.dtype == np.float16 and codes.dtype == np.int8
    assert codes.min() >= -(2 ** (bits - 1)) and codes.max() <= 2 ** (bits - 1) - 1
    decoded = storage.decode_residual(hi, codes, bits)
    err = np.abs(decoded.astype(np.float64) - w)
    bound = storage.error_bound(w, bits)
    assert np.all(err <= bound), f"worst err/bound {float((err / bound).max()):.3f}"
    # in relative terms: 2**-(11+bits) of the magnitude (+ f32 rounding) above FP16's normal range
    normal = np.abs(w) >= 2.0**-14
    assert (err[normal] / np.abs(w[normal])).max() <= 2.0 ** -(11 + bits) * (1 + 2.0**-10) + 2.0**-24
    # and far better than FP16 alone, whose error is up to 2**-11 relative
    fp16_err = np.abs(w.astype(np.float16).astype(np.float64) - w)
    assert err[normal].max() <= fp16_err[normal].max()
    print(f"\nint{bits}: max rel err {float((err[normal] / np.abs(w[normal])).max()):.3e}, "
          f"max err/bound {float((err / bound).max()):.3f}")


def test_rejects_values_fp16_cannot_hold() -> None:
    for bad in (np.array([1.0, np.nan], np.float32), np.array([7e4], np.float32), np.array([np.inf], np.float32)):
        with pytest.raises(ValueError):
            storage.encode_residual(bad)
    with pytest.raises(ValueError):
        storage.encode_residual(np.ones(3, np.float32), bits=6)


def test_int4_packing_round_trip() -> None:
    codes = np.random.default_rng(1).integers(-8, 8, size=(3, 5, 7)).astype(np.int8)  # odd count: padded nibble
    const = storage._code_constant(codes, 4)
    assert const.get_output_element_type(0) == ov.Type.i4
    assert np.array_equal(storage._unpack_i4(const), codes)


def _tiny_model(weight: np.ndarray) -> ov.Model:
    x = ops.parameter([2, weight.shape[0]], ov.Type.f32, name="x")
    y = ops.matmul(x, ops.constant(weight), False, False)
    return ov.Model([y], [x], "tiny")


@pytest.mark.parametrize("bits", storage.RESIDUAL_BITS)
def test_graph_equals_numpy_mirror_and_is_folded(bits: int) -> None:
    """The subgraph, folded by the CPU plugin, yields exactly ``decode_residual`` (checked bit for bit through an
    identity-like MatMul), and the compiled graph has the same layers as the FP32 one (nothing left at run time)."""
    rng = np.random.default_rng(10 + bits)
    weight = (rng.standard_normal((96, 96)) * 0.05).astype(np.float32)
    weight[0, :8] = [0.0, 2.0**-20, -(2.0**-25), 1e-7, 3.0, -3.0, 2.0**-14, 0.125061]
    fp32 = _tiny_model(weight)
    compact, report = storage.compact_weights(fp32, bits)
    assert report.compacted_values == weight.size and len(report.tensors) == 1
    assert fp32.get_ordered_ops()[1].get_type_name() == "Constant"  # copy=True left the input model alone
    types = collections.Counter(n.get_type_name() for n in compact.get_ordered_ops())
    assert types["Convert"] == 2 and types["Add"] == 1 and types["Multiply"] == 2

    core = ov.Core()
    eye = np.zeros((2, 96), np.float32)
    eye[0, 0] = eye[1, 1] = 1.0  # rows 0 and 1 of the weight, reproduced exactly (x * 1 + sum of zeros)
    hi, codes = storage.encode_residual(weight, bits)
    expected = storage.decode_residual(hi, codes, bits)[:2]
    got = core.compile_model(compact, "CPU", F32)({0: eye})[0]
    assert np.array_equal(got, expected)

    x = rng.standard_normal((2, 96)).astype(np.float32)
    expanded = storage.expand_weights(compact)
    assert "Convert" not in {n.get_type_name() for n in expanded.get_ordered_ops()}
    out = [core.compile_model(m, "CPU", F32)({0: x})[0] for m in (compact, expanded)]
    assert np.array_equal(out[0], out[1])

    def runtime_layers(model: ov.Model) -> collections.Counter:
        runtime = core.compile_model(model, "CPU", F32).get_runtime_model()
        return collections.Counter(n.get_rt_info()["layerType"].astype(str) for n in runtime.get_ordered_ops())

    assert runtime_layers(compact) == runtime_layers(fp32)


def test_small_constants_stay_exact_f32() -> None:
    small = np.random.default_rng(3).standard_normal((64, 64)).astype(np.float32)  # 4096 values: the limit
    compact, report = storage.compact_weights(_tiny_model(small), 8)
    assert report.compacted_values == 0 and report.kept_f32_values == small.size
    consts = [n for n in compact.get_ordered_ops() if n.get_type_name() == "Constant"]
    assert len(consts) == 1 and np.array_equal(consts[0].get_data(), small)


# ------------------------------------------------------------------------------------------ the real model


@pytest.fixture(scope="module")
def fp32_models() -> dict[str, ov.Model]:
    """In-memory FP32 IRs converted from the official checkpoint (the uncompressed reference)."""
    pytest.importorskip("torch", reason="needs torch: pip install 'medsam_edge[export]'")
    from medsam_edge.export.architecture import load_litemedsam
    from medsam_edge.export.checkpoint import (
        CHECKPOINT_SHA256,
        fetch_checkpoint,
        file_sha256,
    )
    from medsam_edge.export.convert import convert_pair

    path = fetch_checkpoint()
    encoder, decoder, _ = convert_pair(load_litemedsam(path, CHECKPOINT_SHA256), "fp32", file_sha256(path))
    return {"encoder": encoder, "decoder": decoder}


@pytest.fixture(scope="module")
def compact_files(fp32_models: dict[str, ov.Model], tmp_path_factory: pytest.TempPathFactory) -> dict:
    from calibration.build_models import FP32_RESIDUAL_BITS

    folder = tmp_path_factory.mktemp("fp32c")
    files, reports = {}, {}
    for part, model in fp32_models.items():
        compact, reports[part] = storage.compact_weights(model, FP32_RESIDUAL_BITS[part])
        files[part] = folder / f"{part}_fp32c.xml"
        ov.save_model(compact, files[part], compress_to_fp16=False)
    return {"xml": files, "reports": reports}


def test_real_weights_within_bound(fp32_models: dict[str, ov.Model]) -> None:
    rows = []
    for part, model in fp32_models.items():
        for node in model.get_ordered_ops():
            if node.get_type_name() != "Constant" or node.get_output_element_type(0) != ov.Type.f32:
                continue
            w = node.get_data().astype(np.float32)
            if w.size <= storage.MIN_VALUES:
                continue
            for bits in storage.RESIDUAL_BITS:
                err = np.abs(storage.decode_residual(*storage.encode_residual(w, bits), bits).astype(np.float64) - w)
                assert np.all(err <= storage.error_bound(w, bits)), (part, node.get_friendly_name(), bits)
                rel = err / np.maximum(np.abs(w), 2.0**-14)
                rows.append((part, bits, float(rel.max()), float(np.linalg.norm(err) / np.linalg.norm(w))))
    for part in fp32_models:
        for bits in storage.RESIDUAL_BITS:
            sel = [r for r in rows if r[0] == part and r[1] == bits]
            print(f"\n{part} int{bits}: {len(sel)} tensors, max rel err {max(r[2] for r in sel):.3e}, "
                  f"worst tensor rel L2 {max(r[3] for r in sel):.3e}")
            assert max(r[2] for r in sel) <= 2.0 ** -(11 + bits) * (1 + 2.0**-10) + 2.0**-24


def test_compact_files_fit_the_budget(compact_files: dict) -> None:
    sizes = {p.name: p.stat().st_size for x in compact_files["xml"].values() for p in (x, x.with_suffix(".bin"))}
    print("\ncompact IR bytes:", sizes, "total", sum(sizes.values()))
    assert sum(sizes.values()) <= BUDGET_BYTES
    for report in compact_files["reports"].values():
        assert report.tensors and all(t["values"] > storage.MIN_VALUES for t in report.tensors)


def test_compact_ir_matches_fp32_ir(fp32_models: dict[str, ov.Model], compact_files: dict) -> None:
    from medsam_edge.export.convert import parity_inputs

    image, boxes = parity_inputs()
    embedding = np.random.default_rng(0).normal(0.0, 0.5, size=(1, 256, 64, 64)).astype(np.float32)
    enc = storage.compare_models(fp32_models["encoder"], str(compact_files["xml"]["encoder"]), {"image": image})
    dec = storage.compare_models(fp32_models["decoder"], str(compact_files["xml"]["decoder"]),
                                 {"embedding": embedding, "boxes": boxes})
    print("\nencoder vs FP32:", enc, "\ndecoder vs FP32:", dec)
    assert enc["embedding"]["rel_l2"] < EMBEDDING_REL_L2
    assert dec["low_res_logits"]["rel_l2"] < LOGITS_REL_L2
    assert dec["iou"]["max_abs"] < 1e-4


def test_compact_ir_folds_to_the_fp32_runtime_graph(fp32_models: dict[str, ov.Model], compact_files: dict) -> None:
    """Same compiled layers as the FP32 IR, and bit-identical to the IR holding the decoded f32 weights."""
    from medsam_edge.export.convert import parity_inputs

    core = ov.Core()
    image, _ = parity_inputs()
    compact = core.read_model(compact_files["xml"]["encoder"])
    compiled = {name: core.compile_model(m, "CPU", F32) for name, m in
                (("fp32", fp32_models["encoder"]), ("compact", compact), ("expanded", storage.expand_weights(compact)))}
    layers = {name: collections.Counter(n.get_rt_info()["layerType"].astype(str)
                                        for n in c.get_runtime_model().get_ordered_ops())
              for name, c in compiled.items()}
    assert layers["compact"] == layers["fp32"]
    out = {name: c({0: image})[0].copy() for name, c in compiled.items()}
    assert np.array_equal(out["compact"], out["expanded"])


# ------------------------------------------------------------------------------------- shipped variant


def test_shipped_fp32_variant() -> None:
    from medsam_edge import models
    from medsam_edge.export.convert import read_model_info
    from medsam_edge.runtime import PRECISIONS

    assert PRECISIONS["fp32"] == ("fp32", "f32") and PRECISIONS["bf16"][0] == "fp16"
    manifest = models.load_manifest()
    if "fp32" not in manifest["variants"]:
        pytest.skip("fp32 variant not built: python calibration/build_models.py --variant fp32")
    pair = models.resolve("fp32")  # checksums
    facts = manifest["variants"]["fp32"]
    total = sum(manifest["files"][Path(x).name]["bytes"] + manifest["files"][Path(x).with_suffix(".bin").name]["bytes"]
                for x in (facts["encoder"], facts["decoder"]))
    assert total <= BUDGET_BYTES and facts["total_bytes"] == total
    assert facts["parity_vs_fp32_ir"]["embedding_rel_l2"] < EMBEDDING_REL_L2
    for xml in (pair.encoder_xml, pair.decoder_xml):
        info = read_model_info(ov.Core().read_model(xml))
        assert info["weights_storage"] == storage.scheme_name(8) == facts["weights_storage"]
        assert "2**-14" in info["weights_storage_detail"]
    print("\nshipped fp32 variant:", json.dumps({k: facts[k] for k in ("total_bytes", "parity_vs_fp32_ir")}))


def layout_transposes(model: ov.Model) -> list[str]:
    """Names of the model's rank-4 Transposes that move channels between axis 1 and axis 3."""
    found = []
    for op in model.get_ops():
        if op.get_type_name() != "Transpose":
            continue
        order_node = op.input_value(1).get_node()
        if order_node.get_type_name() != "Constant":
            continue
        order = tuple(int(v) for v in order_node.get_data().reshape(-1))
        if order in ((0, 2, 3, 1), (0, 3, 1, 2)):
            found.append(op.get_friendly_name())
    return found


@pytest.mark.parametrize("variant", ["fp32", "fp16", "int8"])
def test_shipped_encoders_keep_feature_maps_channels_first(variant: str) -> None:
    """The export keeps (B, C, H, W) through the attention stages (medsam_edge/export/tinyvit.py): no NCHW<->NHWC
    permutes around the local convolutions (they and their layout reorders cost the CPU plugin 15-30% of the encoder,
    benchmarks/results/layout.md). A re-export from a channels-last formulation has 26 of them. The only ones are
    the window layout pass's views at each attention block's window partition (after the padding) and merge (after
    the crop), where the plugin's channels-last memory makes them free."""
    from medsam_edge import models
    from medsam_edge.export import qkv_split, window_layout

    if variant not in models.load_manifest()["variants"]:
        pytest.skip(f"{variant} variant not built")
    encoder = ov.Core().read_model(models.resolve(variant).encoder_xml)
    layout = layout_transposes(encoder)
    assert sorted(name.rsplit(window_layout.MARK, 1)[-1] for name in layout) == ["merge/nchw"] * 10 + \
        ["partition/nhwc"] * 10
    for op in encoder.get_ops():
        if op.get_friendly_name() in layout and op.get_friendly_name().endswith("partition/nhwc"):
            assert op.input_value(0).get_node().get_type_name() == "Pad"
        if op.get_friendly_name() in layout and op.get_friendly_name().endswith("merge/nchw"):
            assert op.input_value(0).get_node().get_type_name() == "Slice"
    transposes = [op.get_friendly_name() for op in encoder.get_ops() if op.get_type_name() == "Transpose"]
    # the q/k/v split turns each block's head transpose into one per part; the window layout pass replaces each
    # block's partition and merge permutation by two transposes
    assert sum(qkv_split.MARK not in name and window_layout.MARK not in name for name in transposes) <= 30
    assert sum(qkv_split.MARK in name for name in transposes) == 30
    assert sum(window_layout.MARK in name for name in transposes) == 40


@pytest.mark.parametrize("variant", ["fp32", "fp16", "int8"])
def test_shipped_encoders_have_the_ir_passes(variant: str) -> None:
    """Every shipped encoder (medsam_edge/export/passes.py) runs its full-resolution part in 4 row strips (less
    working memory, same embedding), computes each attention block's q, k, v with a product of its own (no
    VariadicSplit: the CPU plugin's reference kernel, 3% of the int8 encoder) and cuts its windows through
    channels-last views (the plugin's reorders around the partitions were ~7% of it): ten blocks each."""
    from medsam_edge import models
    from medsam_edge.export.passes import encoder_pass_counts

    encoder = ov.Core().read_model(models.resolve(variant).encoder_xml)
    assert [op.get_friendly_name() for op in encoder.get_ops() if op.get_type_name() == "VariadicSplit"] == []
    assert encoder_pass_counts(encoder) == {"encoder_row_strips": 4, "encoder_qkv_split": 10,
                                            "encoder_window_nhwc": 10}


def _fused_qkv_graph(heads: int = 3, dim: int = 4, channels: int = 8, tokens: int = 5, windows: int = 2):
    """A small window attention projection as the quantized encoder has it: int8 weights decoded by Convert and a
    per-channel scale, a bias, the (windows, tokens, heads, 3 x dim) reshape, head transpose and q/k/v split."""
    rng = np.random.default_rng(11)
    width = 3 * dim
    x = ops.parameter([windows, tokens, channels], ov.Type.f32)
    weight = ops.multiply(ops.convert(ops.constant(rng.integers(-127, 128, (heads * width, channels), np.int8)),
                                      ov.Type.f32),
                          ops.constant(rng.uniform(0.01, 0.1, (heads * width, 1)).astype(np.float32)))
    bias = ops.constant(rng.standard_normal((1, 1, heads * width)).astype(np.float32))
    fused = ops.add(ops.matmul(x, weight, False, True), bias)
    shaped = ops.reshape(fused, ops.constant(np.array([windows, tokens, heads, width], np.int64)), False)
    moved = ops.transpose(shaped, ops.constant(np.array([0, 2, 1, 3], np.int64)))
    q, k, v = ops.variadic_split(moved, ops.constant(np.int64(3)),
                                 ops.constant(np.array([dim, dim, dim], np.int64))).outputs()
    scores = ops.matmul(q, k, False, True)
    out = ops.matmul(scores, v, False, False)
    return ov.Model([out.output(0), q, k, v], [x])


def test_qkv_split_slices_quantized_weights() -> None:
    """The pass slices weights through their int8 decoding (Convert, per-channel scale) and the bias, and the new
    graph's q, k, v and attention output equal the fused graph's at f32 exactly; a graph without the pattern (the
    rewritten one) is returned as it is."""
    from medsam_edge.export.qkv_split import qkv_split_count, split_qkv

    x = np.random.default_rng(12).standard_normal((2, 5, 8)).astype(np.float32)

    def run(model: ov.Model) -> list[np.ndarray]:
        compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        return [v.copy() for v in compiled.create_infer_request().infer({0: x}).values()]

    expected = run(_fused_qkv_graph())
    split, count = split_qkv(_fused_qkv_graph())
    assert count == 1 and qkv_split_count(split) == 1
    assert not [op for op in split.get_ops() if op.get_type_name() == "VariadicSplit"]
    for got, want in zip(run(split), expected):
        np.testing.assert_array_equal(got, want)
    again, count = split_qkv(split)
    assert count == 0 and again is split


def test_layout_transposes_are_found() -> None:
    """The check above can fail: it finds both channel moves in a small graph."""
    x = ops.parameter([1, 8, 4, 4], ov.Type.f32)
    to_last = ops.transpose(x, ops.constant(np.array([0, 2, 3, 1], np.int64)))
    to_last.set_friendly_name("to_last")
    back = ops.transpose(ops.relu(to_last), ops.constant(np.array([0, 3, 1, 2], np.int64)))
    back.set_friendly_name("back")
    other = ops.transpose(back, ops.constant(np.array([0, 1, 3, 2], np.int64)))
    model = ov.Model([other], [x])
    assert sorted(layout_transposes(model)) == ["back", "to_last"]
