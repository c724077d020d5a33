"""The slice-skipping mode on the 3D dev cases (issue 16): DSC / NSD vs time for slice_step k = 1, 2, 3.

One Segmenter (default precision and strategy unless told), every 3D dev case (challenge layout, the data set of
``calibration/build_data.py``), the k values interleaved case by case in a rotating order so that all share the
machine's state; wall time, slice encodings and the challenge DSC / NSD against ground truth (tolerance 2 mm, spacing
from the file). Ratios to k = 1 are computed from the same run.

    python benchmarks/bench_slice_step.py --out benchmarks/results/slice_step.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from bench_volume import DEV, load


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", default="1,2,3")
    p.add_argument("--precision", default=None, help="default: the library's default precision")
    p.add_argument("--strategy", default=None, help="default: the library's default strategy")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)

    import medsam_edge
    from medsam_edge.bench import cpu_label
    from medsam_edge.metrics import compute_dsc_nsd

    steps = [int(k) for k in args.steps.split(",")]
    kw = {"precision": args.precision} if args.precision else {}
    seg = medsam_edge.Segmenter(**kw)
    names = sorted(c.stem for c in (DEV / "inputs").glob("3DBox_*.npz"))
    if not names:
        raise SystemExit(f"no 3D dev cases in {DEV / 'inputs'} (run calibration/build_data.py)")
    cases = [load(DEV / "inputs" / f"{n}.npz") for n in names]
    warm = cases[0]
    seg.segment_volume(warm["imgs"], warm["boxes"][:1], strategy=args.strategy)
    rows = []
    for rep in range(args.repeats):
        for ci, case in enumerate(cases):
            r = (ci + rep) % len(steps)
            for k in steps[r:] + steps[:r]:
                load0 = os.getloadavg()[0]
                t0 = time.perf_counter()
                res = seg.segment_volume(case["imgs"], case["boxes"], strategy=args.strategy, slice_step=k)
                wall = time.perf_counter() - t0
                sc = compute_dsc_nsd(np.asarray(res.label_map), case["gts"], case["spacing"], 2.0)
                rows.append({"case": case["name"], "slice_step": k, "repeat": rep, "wall_s": round(wall, 3),
                             "encoded_slices": res.encoded_slices, "dsc": round(float(sc.mean_dsc), 4),
                             "nsd": round(float(sc.mean_nsd), 4), "loadavg": round(load0, 2)})
                print(json.dumps(rows[-1]), flush=True)
    summary = {}
    for k in steps:
        sel = [r for r in rows if r["slice_step"] == k]
        summary[k] = {"mean_dsc": round(float(np.mean([r["dsc"] for r in sel])), 4),
                      "mean_nsd": round(float(np.mean([r["nsd"] for r in sel])), 4),
                      "total_wall_s": round(float(sum(r["wall_s"] for r in sel)), 2),
                      "encoded_slices": int(sum(r["encoded_slices"] for r in sel))}
    base = summary[steps[0]]
    for k in steps:
        s = summary[k]
        s["time_ratio_vs_first"] = round(s["total_wall_s"] / base["total_wall_s"], 3)
        s["dsc_points_vs_first"] = round(100 * (s["mean_dsc"] - base["mean_dsc"]), 2)
        s["nsd_points_vs_first"] = round(100 * (s["mean_nsd"] - base["mean_nsd"]), 2)
    doc = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "cpu": cpu_label(), "threads": seg.options.threads,
           "precision": seg.options.precision, "strategy": args.strategy or seg.volume_strategy,
           "cases": names, "summary": summary, "rows": rows}
    print(json.dumps(summary, indent=1))
    if args.out:
        args.out.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
