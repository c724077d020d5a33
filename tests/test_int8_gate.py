"""Accuracy gate of the shipped INT8 models (``precision="int8"``, opt-in) against FP32 execution.

On the committed 2D fixtures (28 images, 207 boxes, 7 modalities) every box is segmented by
``Segmenter(precision="int8")`` and ``Segmenter(precision="fp32")``; the per-box mask DSC between the two must stay
close to what the shipped quantization measured (thresholds below). A bad re-quantization of ``encoder_int8`` /
``decoder_int8`` fails here before it ships.

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
from medsam_edge.models import load_manifest
from medsam_edge.prompts import Frame, check_boxes_2d
from medsam_edge.runtime import PRECISIONS, DecoderModel, EncoderModel, Runtime, RuntimeOptions

pytestmark = pytest.mark.model

INT8_DIR = os.environ.get("MEDSAM_EDGE_INT8_MODEL_DIR") or None

# Measured with the shipped pair (INT8 encoder "qat_240" on the channels-first graph: NNCF placement +
# quantization-aware fine-tuning against FP32, calibration/qat.py; FP32 decoder; bf16 for the non-quantized ops) on
# these 207 boxes at 2 threads: mean DSC 0.935, 5th percentile 0.825, 3 boxes below 0.5 (f32 for the non-quantized
# ops: 0.935 / 0.800 / 2; the same recipe on the earlier channels-last
# graph: 0.921 / 0.796 / 3; the "tr_3" PTQ encoder: 0.906 / 0.707 / 3; "tr_dw0": 0.896 / 0.675 / 5). The fixtures
# share source files with the calibration set the fine-tuning saw, so the held-out val split (calibration/README.md)
# is the accuracy figure; this is a regression gate.
# NOTE: this is below the issue-3 target (mean >= 0.99 vs FP32); see calibration/README.md "Where the error comes
# from". The gate guards against a *worse* re-quantization, with a margin for noise: mean -0.010, p5 -0.025 of the f32
# figures, and at most 4 boxes below 0.5. Every earlier encoder fails it (mean 0.921 and lower), and so does a broken
# decoder (default-preset PTQ: p5 0.0 on val).
MEAN_DSC_MIN = 0.925
P5_DSC_MIN = 0.775
BOX_DSC_FLOOR = 0.5
MAX_BOXES_BELOW_FLOOR = 4


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


@pytest.fixture(scope="module")
def fixtures():
    return load_fixtures("2d")


@pytest.fixture(scope="module")
def per_box_dsc(fixtures):
    int8 = Segmenter(precision="int8", threads=2, model_dir=INT8_DIR)
    fp32 = Segmenter(precision="fp32", threads=2)
    scores = []
    for sample in fixtures:
        a = int8(sample.image, sample.boxes).masks
        b = fp32(sample.image, sample.boxes).masks
        scores += [(f"{sample.name}[{i}]", _dice(a[i], b[i])) for i in range(len(a))]
    return scores


def test_int8_masks_match_fp32_on_fixtures(per_box_dsc):
    values = np.array([v for _, v in per_box_dsc])
    assert len(values) >= 200, "all fixture boxes must be scored"
    worst = sorted(per_box_dsc, key=lambda kv: kv[1])[:5]
    assert values.mean() >= MEAN_DSC_MIN, f"mean DSC int8 vs fp32 {values.mean():.4f} < {MEAN_DSC_MIN}; worst {worst}"
    p5 = float(np.percentile(values, 5))
    assert p5 >= P5_DSC_MIN, f"5th percentile DSC int8 vs fp32 {p5:.4f} < {P5_DSC_MIN}; worst {worst}"
    below = int((values < BOX_DSC_FLOOR).sum())
    assert below <= MAX_BOXES_BELOW_FLOOR, f"{below} boxes with DSC < {BOX_DSC_FLOOR} (max {MAX_BOXES_BELOW_FLOOR}): {worst}"


@pytest.mark.parametrize("hint", ["LATENCY", "THROUGHPUT"])
def test_int8_logits_finite_and_nonempty_at_1_and_2_threads(fixtures, hint):
    """Guards OpenVINO CPU issues seen with quantized decoders when a stream has one thread: all-zero logits (PTQ)
    and wrong logits with THROUGHPUT on 2 threads = 2 one-thread streams (weight-only INT8 decoder)."""
    from medsam_edge.models import resolve

    pair = resolve("int8", INT8_DIR)
    samples = [s for s in fixtures if "stardist_256x256" in s.name]  # 12 clear nuclei: every mask non-empty
    assert samples
    results = {}
    for threads in (1, 2):
        runtime = Runtime(RuntimeOptions(precision="int8", threads=threads, performance_hint=hint))
        encoder = EncoderModel(runtime.compile(pair.encoder_xml))
        decoder = DecoderModel(runtime.compile(pair.decoder_xml))
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
    # the fp16 variant (fp32/bf16 precisions) must survive the int8 manifest merge
    assert "fp16" in load_manifest()["variants"]
