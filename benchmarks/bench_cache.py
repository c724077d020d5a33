#!/usr/bin/env python
"""Cold start from a warm compiled-model cache, before vs after medsam_edge's own keyed cache (issue 14).

    python benchmarks/bench_cache.py --before REV      # REV: a commit that still used OpenVINO's CACHE_DIR

Each run is a fresh interpreter: ``import medsam_edge`` + ``Segmenter(precision=p, cache_dir=warm folder)``, and
separately the same with an empty folder (a fresh compile, which now includes the golden self-check). "before"
runs the source tree of REV (checked out into a temporary worktree and imported ahead of the installed package);
both sides use the NumPy kernels (``MEDSAM_EDGE_PURE_PYTHON=1``) so that only the Python sources differ. Runs
alternate before/after so machine load hits both alike. Writes ``benchmarks/results/cache.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import sys, time
src = sys.argv[3]
if src:
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__.lower()]
    sys.path.insert(0, src)
t0 = time.perf_counter()
import medsam_edge
t1 = time.perf_counter()
seg = medsam_edge.Segmenter(precision=sys.argv[1], cache_dir=sys.argv[2])
t2 = time.perf_counter()
import json
log = getattr(getattr(seg, "runtime", None), "log", [])
assert medsam_edge.__file__.startswith(src or "/"), medsam_edge.__file__
print(json.dumps({"import_s": t1 - t0, "construct_s": t2 - t1, "ready_s": t2 - t0,
                  "self_check_s": sum(e.get("self_check_seconds", 0.0) for e in log)}))
"""


def child(precision: str, cache: Path, src: str) -> dict:
    env = dict(os.environ, MEDSAM_EDGE_PURE_PYTHON="1")
    proc = subprocess.run([sys.executable, "-c", CHILD, precision, str(cache), src], capture_output=True, text=True,
                          env=env, cwd=tempfile.gettempdir(), check=False)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True, help="git revision of the previous cache code")
    ap.add_argument("--precisions", default="fp32,bf16,int8")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "cache.json")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="medsam_cache_bench_"))
    old = work / "before"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(old), args.before], check=True,
                   capture_output=True)
    sides = {"before": str(old), "after": str(REPO)}
    result = {"cpu": open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0].strip(": \t")
              if os.path.exists("/proc/cpuinfo") else "?", "before_rev": args.before,
              "loadavg_start": os.getloadavg()[0], "precisions": {}}
    try:
        for precision in args.precisions.split(","):
            rows = {side: {"fresh": [], "warm": []} for side in sides}
            for side, src in sides.items():  # warm each side's own folder once
                child(precision, work / f"{side}-{precision}", src)
            for i in range(args.runs):
                for side, src in (sides.items() if i % 2 == 0 else reversed(list(sides.items()))):
                    rows[side]["warm"].append(child(precision, work / f"{side}-{precision}", src))
                    rows[side]["fresh"].append(child(precision, work / f"{side}-{precision}-fresh{i}", src))
            summary = {side: {kind: {k: round(float(np.median([r[k] for r in runs])), 4) for k in runs[0]}
                              for kind, runs in kinds.items()} for side, kinds in rows.items()}
            result["precisions"][precision] = summary
            print(precision, json.dumps(summary), flush=True)
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(old)], check=False)
    result["loadavg_end"] = os.getloadavg()[0]
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
