"""Accuracy against ground truth and model latency per precision, same process (issue 15's measurement).

Every precision gets its own fresh compiled-model cache folder (nothing compiled by another precision can be read
back). On the labelled sets (``val``: 31 2D images; ``dev``: 9 2D + 6 3D cases) each case is segmented by every
precision, case-major, and scored against its ground truth with the challenge metrics
(:func:`medsam_edge.metrics.compute_dsc_nsd`: mean over the case's labels of DSC and NSD, 2 mm / 2 px tolerance,
spacing in mm for 3D). Summaries per set x dimension x modality, and the difference to fp32 in points (x100).

``int8-no-bf16`` (opt-in, ``--precisions fp32,bf16,int8,int8-no-bf16``) is ``precision="int8"`` as a CPU without
bf16 runs it, emulated: :func:`medsam_edge.runtime.bf16_available` patched to False while it is built, so the runtime
sends an f32 hint and the int8 variant runs its INT8 decoder (``decoder_f32`` in the manifest).

Latency: encoder (one 256x256 tensor) and decoder (1/4/8/32 boxes on one embedding) per precision, interleaved
rounds, median ms and ratios to fp32 and bf16 of the same run.

``python benchmarks/bench_precision_gt.py --out benchmarks/results/precision_gt.json``
``python benchmarks/bench_precision_gt.py --precisions fp32,int8,int8-no-bf16 --out benchmarks/results/precision_gt_no_bf16.json``
``python benchmarks/bench_precision_gt.py --precisions fp32,bf16,int8,bf16@before,int8@before --models
before=<worktree>/medsam_edge/models --out ...`` (the shipped files against another commit's, same process)
(needs the sets: ``python calibration/build_data.py``).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

PRECISIONS = ("fp32", "bf16", "int8")
NO_BF16 = "int8-no-bf16"  # precision="int8" as built on a CPU without bf16 (emulated)


def build_segmenter(key: str, threads: int, cache_dir: Path, model_dirs: dict | None = None):
    """``key``: a precision, ``int8-no-bf16``, or ``<precision>@<label>`` for that precision's model files from the
    folder ``model_dirs[label]`` (e.g. the models of an older commit, for a before/after of the shipped files)."""
    from medsam_edge import Segmenter
    from medsam_edge import runtime as runtime_module

    if "@" in key:
        precision, label = key.split("@", 1)
        return Segmenter(precision=precision, threads=threads, cache_dir=cache_dir, model_dir=model_dirs[label])
    if key != NO_BF16:
        return Segmenter(precision=key, threads=threads, cache_dir=cache_dir)
    original = runtime_module.bf16_available
    runtime_module.bf16_available = lambda device="CPU": False
    try:
        return Segmenter(precision="int8", threads=threads, cache_dir=cache_dir)
    finally:
        runtime_module.bf16_available = original


def cpu_name() -> dict:
    from medsam_edge.runtime import cpu_features

    name = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"model_name": name, **cpu_features()}


def score_sets(segmenters: dict, sets: dict) -> list[dict]:
    from medsam_edge.metrics import compute_dsc_nsd

    records = []
    keys = list(segmenters)
    for set_name, samples in sets.items():
        for ci, s in enumerate(samples):
            rec = {"set": set_name, "case": s.name, "dim": "3D" if s.is_3d else "2D", "modality": s.modality,
                   "n_boxes": int(len(s.boxes)), "results": {}}
            order = keys[ci % len(keys):] + keys[: ci % len(keys)]
            for key in order:
                seg = segmenters[key]
                t0 = time.perf_counter()
                if s.is_3d:
                    labels = seg.segment_volume(s.image, s.boxes).label_map
                else:
                    labels = seg(s.image, s.boxes).label_map
                wall = time.perf_counter() - t0
                sc = compute_dsc_nsd(labels, s.gts, s.spacing if s.is_3d else None)
                rec["results"][key] = {"dsc": float(sc.mean_dsc), "nsd": float(sc.mean_nsd), "time_s": wall}
            print(f"{set_name}/{s.name}: " + "  ".join(
                f"{k} {v['dsc']:.4f}/{v['nsd']:.4f}" for k, v in rec["results"].items()), flush=True)
            records.append(rec)
    return records


def summarise(records: list[dict], keys) -> dict:
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        for g in (f"{r['set']}", f"{r['set']}/{r['dim']}", f"{r['set']}/{r['dim']}/{r['modality']}",
                  f"all/{r['dim']}"):
            groups[g].append(r)
    out = {}
    for g, rs in sorted(groups.items()):
        row = {"cases": len(rs)}
        for k in keys:
            row[k] = {m: float(np.mean([r["results"][k][m] for r in rs])) for m in ("dsc", "nsd", "time_s")}
        for k in keys:
            if k != "fp32":
                row[f"{k}_minus_fp32_points"] = {m: 100 * (row[k][m] - row["fp32"][m]) for m in ("dsc", "nsd")}
        out[g] = row
    return out


def latency(segmenters: dict, rounds: int, box_counts=(1, 4, 8, 32)) -> dict:
    rng = np.random.default_rng(0)
    tensor = rng.standard_normal((1, 3, 256, 256)).astype(np.float32)
    embeddings = {k: s.engine.encode_tensor(tensor) for k, s in segmenters.items()}
    boxes = {n: np.sort(rng.uniform(10, 245, (n, 2, 2)), axis=1).reshape(n, 4)[:, [0, 2, 1, 3]].astype(np.float32)
             for n in box_counts}
    times: dict = defaultdict(list)
    for _ in range(2):  # warm-up
        for k, s in segmenters.items():
            s.engine.encode_tensor(tensor)
            for n in box_counts:
                s.engine.decode_model(embeddings[k], boxes[n])
    for _ in range(rounds):
        for k, s in segmenters.items():
            t0 = time.perf_counter()
            s.engine.encode_tensor(tensor)
            times[(k, "encoder")].append(time.perf_counter() - t0)
            for n in box_counts:
                t0 = time.perf_counter()
                s.engine.decode_model(embeddings[k], boxes[n])
                times[(k, f"decoder_{n}")].append(time.perf_counter() - t0)
    med = {f"{k}/{part}": 1000 * statistics.median(v) for (k, part), v in times.items()}
    out = {"median_ms": med, "ratios": {}}
    for k in segmenters:
        for part in ["encoder"] + [f"decoder_{n}" for n in box_counts]:
            for base in ("fp32", "bf16"):
                if base in segmenters and base != k:
                    out["ratios"][f"{k}/{base} {part}"] = med[f"{k}/{part}"] / med[f"{base}/{part}"]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--precisions", default=",".join(PRECISIONS))
    ap.add_argument("--sets", default="val,dev")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--models", action="append", default=[], metavar="LABEL=DIR",
                    help="model folder for keys <precision>@LABEL (e.g. before=<worktree>/medsam_edge/models)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    model_dirs = dict(m.split("=", 1) for m in args.models)

    from calibration import data as caldata
    from medsam_edge.runtime import execution_plan

    keys = args.precisions.split(",")
    sets = {name: caldata.load_set(name) for name in args.sets.split(",")}
    with tempfile.TemporaryDirectory(prefix="precision_gt_") as tmp:
        segmenters = {}
        for k in keys:
            t0 = time.perf_counter()
            segmenters[k] = build_segmenter(k, args.threads, Path(tmp) / k, model_dirs)
            print(f"{k}: compiled in {time.perf_counter() - t0:.1f} s (fresh cache)", flush=True)
        t0 = time.perf_counter()
        records = score_sets(segmenters, sets)
        accuracy_s = time.perf_counter() - t0
        lat = latency(segmenters, args.rounds)
    summary = summarise(records, keys)
    result = {
        "cpu": cpu_name(),
        "execution": execution_plan(),
        "threads": args.threads,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "accuracy_seconds": accuracy_s,
        "summary": summary,
        "latency": lat,
        "records": records,
    }
    print("\ngroup                         cases  " + "  ".join(f"{k:>15}" for k in keys) + "   (DSC/NSD)")
    for g, row in summary.items():
        print(f"{g:30s}{row['cases']:5d}  " + "  ".join(
            f"{row[k]['dsc']:.4f}/{row[k]['nsd']:.4f}" for k in keys))
    for name, v in lat["median_ms"].items():
        print(f"{name:24s} {v:8.1f} ms")
    for name, v in lat["ratios"].items():
        print(f"{name:30s} {v:6.3f}x")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
