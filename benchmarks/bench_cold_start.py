"""Cold start, warm cache: ``import medsam_edge`` + ``Segmenter()`` + first and second 2D call, fresh interpreters.

Each checkout (``--src NAME=DIR``, default the current tree) gets its own compiled-model cache folder, filled by one
run first; then the checkouts' runs alternate (``--runs`` each) so all share the machine's state. The child is
:data:`bench_pipeline.COLD_START_CHILD` (the clock starts before ``import medsam_edge``); the image is the bundled
512x512 nuclei example with its 6 boxes. Medians per checkout and the ratio to the first one.

    python benchmarks/bench_cold_start.py --src before=/tmp/before --src after=. --out benchmarks/results/cold_start.json
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
from bench_pipeline import COLD_START_CHILD  # noqa: E402

PRELUDE = ("import sys; sys.meta_path[:] = [f for f in sys.meta_path if 'Redirect' not in type(f).__name__]; "
           "sys.path.insert(0, sys.argv.pop(1))\n")
KEYS = ("import_s", "construct_s", "ready_s", "first_call_s", "second_call_s", "total_s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src", action="append", default=[], metavar="NAME=DIR")
    p.add_argument("--precision", default="int8")
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--boxes", type=int, default=None, help="use the example's first N boxes (default: all 6)")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    from medsam_edge.bench import cpu_label
    from medsam_edge.examples import load_example

    ex = load_example()
    work = Path(tempfile.mkdtemp(prefix="medsam_cold_"))
    boxes = ex.boxes if args.boxes is None else ex.boxes[:args.boxes]
    np.savez(work / "case.npz", image=ex.image, boxes=boxes)
    srcs = [s.split("=", 1) for s in args.src] or [["current", str(Path(__file__).resolve().parents[1])]]

    def child(name: str, src: str) -> dict:
        cmd = [sys.executable, "-c", PRELUDE + COLD_START_CHILD, str(Path(src).resolve()), args.precision,
               str(work / f"cache-{name}"), str(work / "case.npz")]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(work), check=False)
        if proc.returncode != 0:
            raise SystemExit(f"{name} failed: {proc.stderr[-2000:]}")
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        out["loadavg"] = round(os.getloadavg()[0], 2)
        return out

    for name, src in srcs:
        child(name, src)  # fills this checkout's cache
    runs: dict[str, list[dict]] = {name: [] for name, _ in srcs}
    for r in range(args.runs):
        for name, src in (srcs[r % len(srcs):] + srcs[:r % len(srcs)]):
            runs[name].append(child(name, src))
            print(name, json.dumps({k: round(runs[name][-1][k], 3) for k in KEYS}), flush=True)
    median = {name: {k: round(float(np.median([x[k] for x in rs])), 4) for k in KEYS} for name, rs in runs.items()}
    first = srcs[0][0]
    ratio = {name: {k: round(m[k] / median[first][k], 3) for k in KEYS} for name, m in median.items()}
    doc = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "cpu": cpu_label(), "precision": args.precision,
           "image_shape": list(ex.image.shape), "boxes": len(boxes), "median": median,
           f"ratio_to_{first}": ratio, "runs": runs}
    print(json.dumps({"median": median, "ratio": ratio}, indent=1))
    if args.out:
        args.out.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
