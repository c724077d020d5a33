"""Where the memory of a 3D run goes: peak RSS of ``Segmenter.segment_volume`` on a 512x512x200 int16 CT-like volume.

Each measurement runs in a fresh interpreter (``--child``) that records, step by step, VmRSS and the peak since the
previous step (VmHWM, reset between steps by writing 5 to ``/proc/self/clear_refs``), plus tracemalloc's peak of
Python/NumPy allocations inside the run:

  start -> import (openvino, medsam_edge) -> Segmenter() built -> warm-up (one encode + one 3-box decode: OpenVINO
  allocates its working memory) -> volume loaded (int16 HU, 100 MB) -> segment_volume(window="abdomen") -> result kept.

The volume is the synthetic phantom of ``bench_pipeline.py`` (three organs, 61 slices each) mapped to Hounsfield-like
int16 values. ``--src DIR`` runs the child against another checkout of the package (e.g. a ``git worktree`` of the
previous commit with the built extension copied in), so before/after can be measured interleaved in one session:

    python benchmarks/bench_memory.py --src before=/tmp/medsam_before --src after=. --repeats 2 \
        --out benchmarks/results/memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pipeline import _run_sampled  # noqa: E402  (same directory; imports no torch)

ROOT = Path(__file__).resolve().parents[1]


def _status() -> dict:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("VmRSS", "VmHWM")):
            key, value = line.split(":")
            out[key] = round(int(value.split()[0]) / 1024, 1)
    return out


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def child(src: str, volume_path: str, boxes_json: str, cache_slices: int | None, strategy: str | None,
          precision: str | None = None) -> dict:
    if src:
        # use the package in ``src`` even when an editable install's finder maps medsam_edge elsewhere
        sys.meta_path[:] = [f for f in sys.meta_path if "Redirect" not in type(f).__name__]
        sys.path.insert(0, src)
    steps = []
    can_reset = _reset_peak()

    def mark(name: str, **extra) -> None:
        st = _status()
        steps.append({"step": name, "rss_mb": st.get("VmRSS"), "peak_mb": st.get("VmHWM"), **extra})
        _reset_peak()

    mark("start")
    import openvino  # noqa: F401

    import medsam_edge
    from medsam_edge import kernels

    mark("import")
    if precision == "reference":
        seg = medsam_edge.Segmenter.reference()
    elif precision:
        seg = medsam_edge.Segmenter(precision=precision)
    else:
        seg = medsam_edge.Segmenter()
    mark("segmenter built")
    probe = np.zeros((512, 512), np.uint8)
    probe[100:300, 150:350] = 200
    state = seg.encode(probe)
    seg.predict(np.array([[140, 90, 360, 310], [10, 10, 200, 200], [300, 300, 500, 500]]), state=state)
    del state
    mark("warm-up (1 encode + 3-box decode)")
    volume = np.load(volume_path)  # the int16 volume the parent wrote: its 100 MB and nothing else
    mark("volume loaded (int16)", volume_mb=round(volume.nbytes / 2**20, 1))
    boxes = np.asarray(json.loads(boxes_json), np.int64)
    import tracemalloc

    tracemalloc.start()
    kwargs = {"window": "abdomen"}
    if cache_slices is not None:
        kwargs["cache_slices"] = cache_slices
    if strategy:
        kwargs["strategy"] = strategy
    t0 = time.perf_counter()
    result = seg.segment_volume(volume, boxes, **kwargs)
    run_s = time.perf_counter() - t0
    traced_now, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    voxels = np.zeros(len(boxes) + 1, np.int64)
    for z in range(result.label_map.shape[0]):
        voxels += np.bincount(result.label_map[z].ravel(), minlength=len(boxes) + 1)[: len(boxes) + 1]
    mark("segment_volume", run_s=round(run_s, 2), tracemalloc_peak_mb=round(traced_peak / 2**20, 1),
         tracemalloc_kept_mb=round(traced_now / 2**20, 1), encoded_slices=result.encoded_slices)
    peak = max(s["peak_mb"] for s in steps)
    return {"src": src, "peak_rss_mb": peak, "peak_resettable": can_reset, "steps": steps,
            "label_voxels": voxels[1:].tolist(), "kernels": kernels.BACKEND,
            "strategy": result.strategy, "volume_shape": list(volume.shape)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src", action="append", default=[], metavar="NAME=DIR",
                   help="checkouts to measure (default: this one, as 'current'); repeatable")
    p.add_argument("--repeats", type=int, default=1, help="rounds; checkouts alternate within each round")
    p.add_argument("--depth", type=int, default=200)
    p.add_argument("--cache-slices", type=int, default=None)
    p.add_argument("--strategy", default=None)
    p.add_argument("--precision", default=None, choices=["int8", "bf16", "fp32", "reference"],
                   help="Segmenter(precision=...) or Segmenter.reference() (default: Segmenter())")
    p.add_argument("--out", type=Path)
    p.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        src, vol, boxes, cache, strategy, precision = args.child
        print(json.dumps(child(src, vol, boxes, None if cache == "-" else int(cache),
                               None if strategy == "-" else strategy, None if precision == "-" else precision)))
        return 0

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_pipeline import synthetic_volume

    srcs = [s.split("=", 1) for s in args.src] or [["current", ""]]
    work = Path(tempfile.mkdtemp(prefix="medsam_mem_"))
    vol, boxes, gt = synthetic_volume(args.depth)
    hu = np.empty(vol.shape, np.int16)
    for z in range(vol.shape[0]):  # uint8 phantom -> HU-like int16 (-400 .. 620)
        hu[z] = (vol[z].astype(np.int16) - 100) * 4
    path = work / "phantom_hu_int16.npy"
    np_save(path, hu)
    del vol, hu
    runs = []
    for rnd in range(args.repeats):
        for name, src in srcs:
            src_abs = str(Path(src).resolve()) if src else ""
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child", src_abs, str(path),
                   json.dumps(boxes.tolist()), str(args.cache_slices) if args.cache_slices is not None else "-",
                   args.strategy or "-", args.precision or "-"]
            rc, out, err, sampled = _run_sampled(cmd)
            if rc != 0:
                print(err[-3000:], file=sys.stderr)
                raise SystemExit(f"child {name} failed")
            res = json.loads(out.strip().splitlines()[-1])
            res.update(name=name, round=rnd, sampled_peak_mb=sampled,
                       peak_rss_mb=max(res["peak_rss_mb"], sampled), loadavg=round(os.getloadavg()[0], 2))
            runs.append(res)
            steps = ", ".join(f"{s['step']}: {s['rss_mb']}/{s['peak_mb']}" for s in res["steps"])
            print(f"[{name} r{rnd}] peak {res['peak_rss_mb']} MB | {steps} | voxels {res['label_voxels']}",
                  flush=True)
    summary = {}
    for name, _ in srcs:
        peaks = [r["peak_rss_mb"] for r in runs if r["name"] == name]
        summary[name] = {"peak_rss_mb_min": min(peaks), "peak_rss_mb_max": max(peaks)}
    doc = {"precision": args.precision or "default",
           "volume": {"shape": [args.depth, 512, 512], "dtype": "int16", "boxes": boxes.tolist(),
                      "window": "abdomen", "gt_voxels": gt},
           "date": time.strftime("%Y-%m-%d %H:%M:%S"), "summary": summary, "runs": runs}
    print(json.dumps(summary, indent=1))
    if args.out:
        args.out.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


def np_save(path: Path, array) -> None:
    np.save(path, array)


if __name__ == "__main__":
    raise SystemExit(main())
