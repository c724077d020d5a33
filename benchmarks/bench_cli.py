"""``medsam-edge segment`` end to end: wall time and peak RSS of whole command-line runs, fresh processes.

What a user of the command waits for: interpreter start, imports, reading the input, loading the models (from the
compiled-model cache, filled by one run per checkout first), segmenting, writing the label map. Each checkout
(``--src NAME=DIR``, default the current tree) runs its own ``medsam_edge.cli.main`` with its own cache folder; the
checkouts alternate run by run on each input so they share the machine's state. Inputs (built in a temporary folder):

- ``png``: the bundled 512 x 512 nuclei example with its 6 boxes (``--boxes`` JSON);
- ``nii_small``: a 3D dev volume (123 x 68 x 99 uint8 MR as ``.nii.gz``, its 6 boxes), if the dev set is built;
- ``nii_512``: a 512 x 512 x 200 int16 phantom as ``.nii.gz`` (65 MB compressed), one box over 11 slices, so reading
  the file is a large share of the run.

Peak RSS is the child's ``ru_maxrss``. Medians per checkout and input, and the ratio to the first checkout.

    python benchmarks/bench_cli.py --src before=/tmp/before --src after=. --out benchmarks/results/cli.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PRELUDE = ("import sys; sys.meta_path[:] = [f for f in sys.meta_path if 'Redirect' not in type(f).__name__]; "
           "sys.path.insert(0, sys.argv.pop(1))\n")
CHILD = PRELUDE + "from medsam_edge.cli import main\nsys.exit(main(sys.argv[1:]))\n"


def _inputs(work: Path) -> dict[str, list[str]]:
    import SimpleITK as sitk

    from medsam_edge.examples import load_example

    ex = load_example()
    (work / "boxes2d.json").write_text(json.dumps(np.asarray(ex.boxes).tolist()))
    cases = {"png": [str(ex.path), "--boxes", str(work / "boxes2d.json")]}
    dev = Path(os.environ.get("MEDSAM_EDGE_CACHE", "~/.cache/medsam_edge")).expanduser() / "data" / "dev" / "inputs"
    small = dev / "3DBox_MR_mni_coronal_1p5mm.npz"
    if small.is_file():
        d = np.load(small)
        sitk.WriteImage(sitk.GetImageFromArray(d["imgs"]), str(work / "small.nii.gz"))
        (work / "boxes_small.json").write_text(json.dumps(d["boxes"].tolist()))
        cases["nii_small"] = [str(work / "small.nii.gz"), "--boxes", str(work / "boxes_small.json")]
    rng = np.random.default_rng(0)
    vol = (rng.standard_normal((200, 512, 512)) * 40 + 100).astype(np.int16)
    vol[60:140, 150:350, 120:380] += 700
    sitk.WriteImage(sitk.GetImageFromArray(vol), str(work / "phantom.nii.gz"))
    del vol
    cases["nii_512"] = [str(work / "phantom.nii.gz"), "--box3d", "100", "130", "95", "400", "370", "105",
                        "--window", "abdomen"]
    return cases


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src", action="append", default=[], metavar="NAME=DIR")
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--cases", default="png,nii_512", help="comma-separated: png, nii_small, nii_512")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    from medsam_edge.bench import cpu_label

    work = Path(tempfile.mkdtemp(prefix="medsam_cli_"))
    cases = {k: v for k, v in _inputs(work).items() if k in args.cases.split(",")}
    srcs = [s.split("=", 1) for s in args.src] or [["current", str(Path(__file__).resolve().parents[1])]]

    def child(name: str, src: str, case: str) -> dict:
        out = work / f"out-{name}-{case}{'.png' if case == 'png' else '.nii.gz'}"
        cmd = [sys.executable, "-c", CHILD, str(Path(src).resolve()), "segment", *cases[case], "-o", str(out), "-q"]
        env = dict(os.environ, MEDSAM_EDGE_CACHE=str(work / f"cache-{name}"))
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(work), env=env, check=False)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"{name} {case} failed: {proc.stderr[-2000:]}")
        return {"wall_s": wall, "output_bytes": out.stat().st_size, "loadavg": round(os.getloadavg()[0], 2)}

    # one run per checkout fills its compiled-model cache; every measured run is started from a fresh forked
    # process (_isolated), so that its RUSAGE_CHILDREN maximum is that run's own peak RSS
    for name, src in srcs:
        child(name, src, "png")
    runs: dict = {name: {case: [] for case in cases} for name, _ in srcs}
    for r in range(args.runs):
        for case in cases:
            order = srcs if r % 2 == 0 else srcs[::-1]
            for name, src in order:
                runs[name][case].append(_isolated(child, name, src, case))
    med = {name: {case: {k: float(np.median([x[k] for x in rs])) for k in ("wall_s", "maxrss_mb")}
                  for case, rs in per.items()} for name, per in runs.items()}
    first = srcs[0][0]
    ratio = {name: {case: {k: round(v[k] / med[first][case][k], 3) for k in v} for case, v in per.items()}
             for name, per in med.items()}
    result = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "cpu": cpu_label(), "cases": {k: v[1:] for k, v in
              cases.items()}, "median": med, "ratio_to_" + first: ratio, "runs": runs}
    text = json.dumps(result, indent=1)
    print(json.dumps({"median": med, "ratio": ratio}, indent=1))
    if args.out:
        args.out.write_text(text + "\n")
    return 0


def _isolated(child, name: str, src: str, case: str) -> dict:
    """Run ``child`` in a fresh forked process so that its RUSAGE_CHILDREN maximum is this run's own peak."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    parent, kid = ctx.Pipe(duplex=False)

    def target():
        res = child(name, src, case)
        res["maxrss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        kid.send(res)

    proc = ctx.Process(target=target)
    proc.start()
    res = parent.recv()
    proc.join()
    if proc.exitcode != 0:
        raise SystemExit(f"{name} {case}: run failed")
    return res


if __name__ == "__main__":
    raise SystemExit(main())
