"""Two (or more) model folders side by side on the 3D dev cases: wall time and DSC / NSD of ``segment_volume``.

For IR passes that change the shipped files (issue 16): one process, one :class:`medsam_edge.Segmenter` per model
folder (same precision, strategy and threads), every 3D dev case (challenge layout, ``MEDSAM_EDGE_DEV``, default
``~/.cache/medsam_edge/data/dev``) run by each, the order alternating case by case, so that the machine's drift falls
on both alike. Scores: :func:`medsam_edge.metrics.compute_dsc_nsd` (spacing (z, y, x) mm, tolerance 2 mm).

    git worktree add /tmp/before <commit>   # the earlier files
    python benchmarks/bench_models_3d.py --models before=/tmp/before/medsam_edge/models --models after=shipped \\
        --out benchmarks/results/<name>.json
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
    p.add_argument("--models", action="append", required=True, metavar="LABEL=DIR",
                   help="a model folder ('shipped': the installed package's); give two or more")
    p.add_argument("--precision", default=None, help="default: the library's default precision")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)

    import medsam_edge
    from medsam_edge.bench import cpu_label
    from medsam_edge.metrics import compute_dsc_nsd

    folders = {}
    for spec in args.models:
        label, _, folder = spec.partition("=")
        if not label or not folder:
            p.error(f"--models wants LABEL=DIR, got {spec!r}")
        folders[label] = None if folder == "shipped" else Path(folder)
    if len(folders) < 2:
        p.error("give at least two --models")
    kw = {"precision": args.precision} if args.precision else {}
    segs = {label: medsam_edge.Segmenter(model_dir=folder, **kw) for label, folder in folders.items()}
    names = sorted(c.stem for c in (DEV / "inputs").glob("3DBox_*.npz"))
    if not names:
        raise SystemExit(f"no 3D dev cases in {DEV / 'inputs'} (run calibration/build_data.py)")
    cases = [load(DEV / "inputs" / f"{n}.npz") for n in names]
    for seg in segs.values():  # compile + first inferences outside the timing
        seg.segment_volume(cases[0]["imgs"], cases[0]["boxes"][:1])
    labels = list(segs)
    rows = []
    for rep in range(args.repeats):
        for ci, case in enumerate(cases):
            shift = (ci + rep) % len(labels)
            for label in labels[shift:] + labels[:shift]:
                load0 = os.getloadavg()[0]
                t0 = time.perf_counter()
                res = segs[label].segment_volume(case["imgs"], case["boxes"])
                wall = time.perf_counter() - t0
                sc = compute_dsc_nsd(np.asarray(res.label_map), case["gts"], case["spacing"], 2.0)
                rows.append({"case": case["name"], "models": label, "repeat": rep, "wall_s": round(wall, 3),
                             "encoded_slices": res.encoded_slices, "dsc": round(float(sc.mean_dsc), 4),
                             "nsd": round(float(sc.mean_nsd), 4), "loadavg": round(load0, 2)})
                print(json.dumps(rows[-1]), flush=True)
    summary = {}
    for label in labels:
        sel = [r for r in rows if r["models"] == label]
        summary[label] = {"total_wall_s": round(float(sum(r["wall_s"] for r in sel)), 2),
                          "mean_dsc": round(float(np.mean([r["dsc"] for r in sel])), 4),
                          "mean_nsd": round(float(np.mean([r["nsd"] for r in sel])), 4)}
    base = summary[labels[0]]
    for label in labels:
        summary[label]["time_ratio_vs_first"] = round(summary[label]["total_wall_s"] / base["total_wall_s"], 3)
    seg = segs[labels[0]]
    doc = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "cpu": cpu_label(), "threads": seg.options.threads,
           "precision": seg.options.precision, "strategy": seg.volume_strategy,
           "models": {k: str(v) if v else "shipped" for k, v in folders.items()}, "cases": names,
           "summary": summary, "rows": rows}
    print(json.dumps(summary, indent=1))
    if args.out:
        args.out.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
