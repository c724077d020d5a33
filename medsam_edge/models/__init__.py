"""The model files shipped inside the package, and their manifest.

Layout (all in this folder)::

    manifest.json            sha256 + size of every shipped file, the source checkpoint, per-variant facts
    encoder_<variant>.xml/.bin   image (1,3,256,256) f32 -> embedding (1,256,64,64) f32
    decoder_<variant>.xml/.bin   embedding (1,256,64,64) f32 + boxes (B,4) f32 in 256 space
                                 -> low_res_logits (B,1,256,256) f32, iou (B,1) f32

Variants: ``fp32`` (``*_fp32c``: FP16 + int8 residual weights, ~fp32 accuracy, serves the fp32 precision), ``fp16``
(weights stored in FP16, serves bf16) and ``int8`` (NNCF-quantized INT8 encoder with the fp32c decoder run at bf16
where the CPU has it: the default precision; on a CPU without bf16 its ``decoder_f32``, the INT8 ``decoder_int8``,
runs at f32 instead). See :data:`medsam_edge.runtime.PRECISIONS`. Compile decoders with a static box count, as
:class:`medsam_edge.runtime.DecoderModel` does: with a dynamic box dimension OpenVINO 2026.4.1's CPU plugin
miscomputes INT8 decoders (calibration/README.md).
Files are regenerated only by ``calibration/build_models.py``; :func:`write_manifest` records them.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ModelFileError

MODEL_DIR = Path(__file__).resolve().parent
MANIFEST_NAME = "manifest.json"
GOLDEN_NAME = "golden.npz"  # medsam_edge.selfcheck's inputs and expected outputs
REGENERATE_HINT = (
    "reinstall medsam_edge, or regenerate the files with `python calibration/build_models.py` "
    "(needs the export extra: pip install 'medsam_edge[export]')"
)


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelPair:
    """Paths of one verified encoder/decoder pair."""

    variant: str
    encoder_xml: Path
    decoder_xml: Path
    #: {file name: sha256} of the pair's files as the manifest lists them (checked against the files when verified)
    digests: dict = field(default_factory=dict, compare=False)
    #: the self-check's golden file (medsam_edge.selfcheck), verified like the IR files
    golden: Path | None = None
    #: the decoder to run instead where the execution is f32 (a CPU without bf16), if the variant has one: the int8
    #: variant's INT8 decoder (calibration/README.md, "INT8 decoder")
    decoder_f32_xml: Path | None = None

    def decoder_for(self, execution: str) -> Path:
        """The decoder IR that runs at ``execution`` ("f32" / "bf16" / ..., what the device really executes)."""
        return self.decoder_f32_xml if execution == "f32" and self.decoder_f32_xml is not None else self.decoder_xml


def load_manifest(model_dir: str | os.PathLike | None = None) -> dict:
    """Read ``manifest.json`` of ``model_dir`` (default: the shipped models)."""
    folder = Path(model_dir) if model_dir is not None else MODEL_DIR
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise ModelFileError(f"model manifest {path} is missing; {REGENERATE_HINT}")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"model manifest {path} is unreadable ({exc}); {REGENERATE_HINT}") from exc


def verify_file(path: Path, entry: dict) -> None:
    """Check that ``path`` exists and matches the manifest entry (size and sha256)."""
    if not path.is_file():
        raise ModelFileError(f"model file {path} is missing; {REGENERATE_HINT}")
    size = path.stat().st_size
    if "bytes" in entry and size != entry["bytes"]:
        raise ModelFileError(
            f"model file {path} has {size} bytes, expected {entry['bytes']} (sha256 {entry['sha256']}): "
            f"truncated or replaced; {REGENERATE_HINT}"
        )
    actual = sha256_of(path)
    if actual != entry["sha256"]:
        raise ModelFileError(
            f"model file {path} has sha256 {actual}, expected {entry['sha256']}: corrupt or tampered; "
            f"{REGENERATE_HINT}"
        )


def resolve(variant: str, model_dir: str | os.PathLike | None = None, verify: bool = True) -> ModelPair:
    """Paths of the encoder/decoder IRs of ``variant``, each file checked against the manifest."""
    folder = Path(model_dir) if model_dir is not None else MODEL_DIR
    manifest = load_manifest(folder)
    variants = manifest.get("variants", {})
    if variant not in variants:
        raise ModelFileError(
            f"model variant {variant!r} is not in {folder / MANIFEST_NAME} (has: {sorted(variants)}); {REGENERATE_HINT}"
        )
    info = variants[variant]
    files = manifest.get("files", {})
    parts = ("encoder", "decoder", "decoder_f32") if "decoder_f32" in info else ("encoder", "decoder")
    for part in parts:
        xml = info[part]
        for name in (xml, xml[: -len(".xml")] + ".bin"):
            if name not in files:
                raise ModelFileError(f"model file {name} is not listed in {folder / MANIFEST_NAME}; {REGENERATE_HINT}")
            if verify:
                verify_file(folder / name, files[name])
            elif not (folder / name).is_file():
                raise ModelFileError(f"model file {folder / name} is missing; {REGENERATE_HINT}")
    digests = {}
    for part in parts:
        for name in (info[part], info[part][: -len(".xml")] + ".bin"):
            digests[name] = files[name]["sha256"]
    golden = None
    if GOLDEN_NAME in files:
        golden = folder / GOLDEN_NAME
        if verify:
            verify_file(golden, files[GOLDEN_NAME])
    decoder_f32 = folder / info["decoder_f32"] if "decoder_f32" in info else None
    return ModelPair(variant, folder / info["encoder"], folder / info["decoder"], digests, golden, decoder_f32)


def write_manifest(model_dir: str | os.PathLike, variants: dict, source: dict, extra: dict | None = None) -> Path:
    """(Re)write ``manifest.json`` listing every ``*.xml``/``*.bin``/``*.npz`` (the self-check's golden file) in ``model_dir`` with size and sha256.

    ``variants`` maps a variant name to at least ``{"encoder": "<file>.xml", "decoder": "<file>.xml"}`` plus any facts
    (gate figures, calibration fingerprint). ``source`` describes the checkpoint (package, file, sha256).
    """
    folder = Path(model_dir)
    files = {}
    for path in sorted(folder.iterdir()):
        if path.suffix in (".xml", ".bin", ".npz"):
            files[path.name] = {"sha256": sha256_of(path), "bytes": path.stat().st_size}
    manifest = {"format": 1, "source": source, "variants": variants, "files": files}
    if extra:
        manifest.update(extra)
    target = folder / MANIFEST_NAME
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, target)
    return target
