"""Accuracy gate of the shipped INT8 models (``precision="int8"``) against ground truth, and their sanity checks.

The gate is what users score: on the committed fixtures that carry labels (12 2D images: 6 MNI152 MR planes and
6 stardist microscopy crops, 125 boxes; one 3D MR block, 3 structures) every case is segmented by
``Segmenter(precision="int8")`` and by ``Segmenter(precision="fp32")`` in the same run, and scored against its ground
truth with the challenge metrics (mean DSC / NSD per case, :func:`medsam_edge.metrics.compute_dsc_nsd`). INT8 must
stay within ``MAX_LOSS_POINTS`` (x100) of fp32 on the mean over cases, for DSC and NSD, in 2D and in 3D. Agreement with fp32
masks is reported in the failure message as a diagnostic and checked only against a floor that a broken model
(poisoned cache, bad re-quantization: agreement ~0.06-0.34) falls through.

The same gate covers the int8 path of CPUs without bf16 (AVX-VNNI laptops), emulated here: with
:func:`medsam_edge.runtime.bf16_available` patched to False the runtime sends an f32 hint and the int8 variant runs its
INT8 decoder (``decoder_f32`` in the manifest) instead of the fp32c decoder it runs at bf16.

``MEDSAM_EDGE_INT8_MODEL_DIR`` points the INT8 side at another model folder (with its own ``manifest.json``), e.g. a
candidate quantization; the FP32 side always uses the shipped fp32 IRs.
"""

from __future__ import annotations

import os
import re

import numpy as np
import pytest

from calibration.data import load_fixtures
from medsam_edge import Segmenter, kernels
from medsam_edge.metrics import compute_dsc_nsd
from medsam_edge.models import load_manifest
from medsam_edge.prompts import Frame, check_boxes_2d
from medsam_edge import runtime as runtime_module
from medsam_edge.runtime import DECODER_SHAPES, PRECISIONS, DecoderModel, EncoderModel, Runtime, RuntimeOptions

pytestmark = pytest.mark.model

INT8_DIR = os.environ.get("MEDSAM_EDGE_INT8_MODEL_DIR") or None

# Measured on these fixtures at 2 threads (shipped qat_240 INT8 encoder + fp32 decoder, bf16 for the rest), AMD EPYC
# Zen 4 (AVX-512 VNNI + BF16, no AMX), 2026-12-04, mean DSC / NSD:
#   2D (12 cases): fp32 0.5632 / 0.6936, bf16 0.5620 / 0.6936, int8 0.5660 / 0.6975 (int8 +0.28 / +0.39 points)
#   3D (1 case, 3 structures): fp32 0.3360 / 0.5287, bf16 0.3444 / 0.5344, int8 0.3334 / 0.5233 (-0.26 / -0.54)
# AMD EPYC Zen 5 (family 26 model 2; AVX-512 VNNI + BF16, no AMX), 2026-12-06, decoder key-major + no snippets:
#   2D: fp32 0.5632 / 0.6936, bf16 0.5618 / 0.6935, int8 0.5657 / 0.6972 (int8 +0.26 / +0.36 points)
#   3D: fp32 0.3360 / 0.5287, bf16 0.3436 / 0.5343, int8 0.3327 / 0.5243 (-0.33 / -0.44)
# AMD EPYC Zen 4 (family 25 model 17), 2026-12-06, with the no-bf16 path (INT8 decoder, f32 execution, emulated):
#   2D: int8 +0.26 / +0.36, int8_f32 +0.33 / -0.01 points; 3D: int8 -0.33 / -0.44, int8_f32 -0.57 / -0.63
# bf16 alone moves the 3D case by +0.76 to +0.84 points, so 3D gets the wider limit. Not yet measured on an AMX CPU (Sapphire
# Rapids): a session there records its row here.
MAX_LOSS_POINTS = {"2D": 1.5, "3D": 2.5}
AGREEMENT_FLOOR = 0.80  # mean per-box DSC int8 vs fp32: 0.935 measured; a broken model measured 0.06


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def _no_bf16_segmenter(**kwargs) -> Segmenter:
    """``Segmenter(precision="int8")`` as a CPU without bf16 builds it (f32 hint, the variant's f32 decoder)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runtime_module, "bf16_available", lambda device="CPU": False)
        return Segmenter(precision="int8", threads=2, model_dir=INT8_DIR, **kwargs)


@pytest.fixture(scope="module")
def fixtures():
    return load_fixtures("2d")


@pytest.fixture(scope="module")
def gate_scores():
    """{dim: {precision: [(dsc, nsd) per case]}} on the labelled fixtures, plus per-box agreement int8 vs fp32."""
    labelled = [s for s in load_fixtures("all") if s.gts is not None]
    assert sum(not s.is_3d for s in labelled) >= 12 and any(s.is_3d for s in labelled), "labelled fixtures missing"
    segs = {"int8": Segmenter(precision="int8", threads=2, model_dir=INT8_DIR),
            "int8_f32": _no_bf16_segmenter(),
            "fp32": Segmenter(precision="fp32", threads=2)}
    scores: dict = {dim: {key: [] for key in segs} for dim in ("2D", "3D")}
    agreement, agreement_f32 = [], []
    for sample in labelled:
        dim = "3D" if sample.is_3d else "2D"
        masks = {}
        for key, seg in segs.items():
            if sample.is_3d:
                labels = seg.segment_volume(sample.image, sample.boxes).label_map
            else:
                res = seg(sample.image, sample.boxes)
                labels, masks[key] = res.label_map, res.masks
            sc = compute_dsc_nsd(labels, sample.gts, sample.spacing if sample.is_3d else None)
            scores[dim][key].append((sample.name, sc.mean_dsc, sc.mean_nsd))
        if masks:
            agreement += [_dice(masks["int8"][i], masks["fp32"][i]) for i in range(len(masks["int8"]))]
            agreement_f32 += [_dice(masks["int8_f32"][i], masks["fp32"][i]) for i in range(len(masks["int8"]))]
    return scores, np.array(agreement), np.array(agreement_f32)


@pytest.mark.parametrize("key", ["int8", "int8_f32"])
@pytest.mark.parametrize("dim", ["2D", "3D"])
def test_int8_accuracy_vs_ground_truth_within_fp32(gate_scores, dim, key):
    """``int8``: this CPU's int8 path; ``int8_f32``: the path of a CPU without bf16 (INT8 decoder, f32 elsewhere)."""
    scores, agreement, agreement_f32 = gate_scores
    agreement = agreement if key == "int8" else agreement_f32
    int8 = np.array([[d, n] for _, d, n in scores[dim][key]])
    fp32 = np.array([[d, n] for _, d, n in scores[dim]["fp32"]])
    assert np.isfinite(int8).all() and np.isfinite(fp32).all()
    loss = 100 * (fp32.mean(axis=0) - int8.mean(axis=0))
    detail = (f"{dim}: fp32 DSC/NSD {fp32[:, 0].mean():.4f}/{fp32[:, 1].mean():.4f}, {key} "
              f"{int8[:, 0].mean():.4f}/{int8[:, 1].mean():.4f} over {len(int8)} cases; agreement with fp32 "
              f"(diagnostic) mean {agreement.mean():.3f}")
    limit = MAX_LOSS_POINTS[dim]
    assert loss[0] <= limit, f"{key} loses {loss[0]:.2f} DSC points (max {limit}); {detail}"
    assert loss[1] <= limit, f"{key} loses {loss[1]:.2f} NSD points (max {limit}); {detail}"


def test_int8_not_broken(gate_scores):
    """A broken INT8 model (e.g. a blob of another precision, a bad re-quantization) agrees with nothing."""
    _, agreement, agreement_f32 = gate_scores
    assert len(agreement) >= 120, "all labelled 2D fixture boxes must be scored"
    assert agreement.mean() >= AGREEMENT_FLOOR, f"mean DSC int8 vs fp32 {agreement.mean():.3f} < {AGREEMENT_FLOOR}"
    assert agreement_f32.mean() >= AGREEMENT_FLOOR, (
        f"mean DSC int8 (no-bf16 path) vs fp32 {agreement_f32.mean():.3f} < {AGREEMENT_FLOOR}")


def test_no_bf16_cpu_runs_the_int8_decoder_at_f32():
    """Without bf16 the int8 variant compiles its INT8 decoder with an f32 hint (and passes its self-check); with
    bf16 it runs the fp32c decoder. Both are in the manifest and verified."""
    from medsam_edge.models import resolve

    pair = resolve("int8", INT8_DIR)
    assert pair.decoder_f32_xml is not None and pair.decoder_f32_xml.name == "decoder_int8.xml"
    seg = _no_bf16_segmenter(cache_dir=None)
    assert seg.runtime.execution_precision == "f32"
    assert seg.info["execution_precision"] == "f32" and seg.info["decoder"] == str(pair.decoder_f32_xml)
    compiled = {e["model"]: e for e in seg.runtime.log}
    assert set(compiled) == {"encoder_int8.xml", "decoder_int8.xml"}
    assert compiled["decoder_int8.xml"]["self_check"]["mask_dice_min"] >= 0.9
    assert pair.decoder_for("bf16") == pair.decoder_xml and pair.decoder_for("f32") == pair.decoder_f32_xml


@pytest.mark.parametrize("bf16", [True, False], ids=["this-cpu", "no-bf16"])
@pytest.mark.parametrize("hint", ["LATENCY", "THROUGHPUT"])
def test_int8_logits_finite_and_nonempty_at_1_and_2_threads(fixtures, hint, bf16, monkeypatch):
    """Guards OpenVINO CPU issues seen with quantized decoders when a stream has one thread: all-zero logits (PTQ)
    and wrong logits with THROUGHPUT on 2 threads = 2 one-thread streams (weight-only INT8 decoder). ``no-bf16``:
    the INT8 decoder at f32, as a CPU without bf16 runs it."""
    from medsam_edge.models import resolve

    if not bf16:
        monkeypatch.setattr(runtime_module, "bf16_available", lambda device="CPU": False)
    pair = resolve("int8", INT8_DIR)
    samples = [s for s in fixtures if "stardist_256x256" in s.name]  # 12 clear nuclei: every mask non-empty
    assert samples
    results = {}
    for threads in (1, 2):
        runtime = Runtime(RuntimeOptions(precision="int8", threads=threads, performance_hint=hint))
        encoder = EncoderModel(runtime.compile(pair.encoder_xml))
        # compiled as the product compiles it (static 1-box requests, its decoder properties): with a dynamic box
        # dimension OpenVINO 2026.4.1 miscomputes INT8 decoders (calibration/README.md, "INT8 decoder")
        decoder = DecoderModel(runtime.compile(pair.decoder_for(runtime.execution_precision), DECODER_SHAPES,
                                               properties=runtime.decoder_properties()))
        masks = []
        for sample in samples:
            frame = Frame(*sample.image.shape[:2])
            tensor, _ = kernels.preprocess(sample.image)
            embedding = encoder(tensor)
            logits, iou = decoder(embedding, frame.boxes_to_model(check_boxes_2d(sample.boxes, *sample.image.shape[:2])))
            assert np.isfinite(logits).all() and np.isfinite(iou).all(), f"{threads} thread(s): non-finite output"
            assert np.abs(logits).max() > 0 and np.abs(iou).max() > 0, f"{threads} thread(s): all-zero output"
            positive = (logits > 0).reshape(len(logits), -1).any(axis=1)
            assert positive.mean() >= 0.9, f"{threads} thread(s), {sample.name}: {int((~positive).sum())} empty masks"
            masks.append(logits > 0)
        results[threads] = masks
    for a, b in zip(results[1], results[2]):
        dsc = [_dice(a[i], b[i]) for i in range(len(a))]
        assert min(dsc) >= 0.98, f"1-thread and 2-thread int8 masks disagree (min DSC {min(dsc):.3f})"


def test_manifest_int8_entry_has_gate_figures_and_fingerprint():
    entry = load_manifest(INT8_DIR)["variants"]["int8"]
    assert re.fullmatch(r"[0-9a-f]{64}", entry["calibration"]["fingerprint"])
    gate = entry["gate"]
    for key in ("mean", "p5", "min"):
        assert 0.0 <= gate["dsc_vs_fp32"][key] <= 1.0
    assert isinstance(gate["passed"], bool) and "limits" in gate  # the issue-3 targets and whether they were met
    assert gate["dsc_vs_gt"]["fp32"] - gate["dsc_vs_gt"]["int8"] <= 0.005  # not worse vs ground truth
    latency = gate["latency_ms"]
    assert latency["encoder_int8"] > 0 and latency["encoder_fp32_f32"] > 0 and latency["decoder_int8_1box"] > 0
    assert len(gate["thread_check"]) == 4
    assert all(m["finite"] and m["nonzero"] and m["dsc_vs_2thread_latency_mean"] >= 0.98
               for m in gate["thread_check"].values())
    assert entry["execution_precision"] == PRECISIONS["int8"][1]  # the runtime runs what was gated
    assert entry["encoder"] == "encoder_int8.xml"
    assert entry["decoder"] in ("decoder_int8.xml", "decoder_fp32c.xml")  # unquantized decoder: shared fp32 file
    # the INT8 decoder of CPUs without bf16: quantized from the same checkpoint, gated vs ground truth at f32
    assert entry["decoder_f32"] == "decoder_int8.xml" and entry["weights_storage"]["decoder_f32"] == "int8"
    dec_gate = entry["quantization"]["decoder_f32"]["gate"]
    assert dec_gate["passed"] and set(dec_gate["thread_modes"]) == {"f32"} and len(dec_gate["thread_modes"]["f32"]) == 4
    gt = dec_gate["dsc_vs_gt"]
    assert gt["shipped int8 @f32"] - gt["new int8 @f32"] <= dec_gate["gt_drop_max"]
    # the fp16 variant (fp32/bf16 precisions) must survive the int8 manifest merge
    assert "fp16" in load_manifest()["variants"]
