"""The slice-skipping mode on the 3D dev cases (issue 16): DSC / NSD vs time for slice_step k = 1, 2, 3.

One Segmenter (default precision and strategy unless told), every 3D dev case (challenge layout, the data set of
``calibration/build_data.py``), the k values interleaved case by case in a rotating order so that all share the
machine's state; wall time, slice encodings and the challenge DSC / NSD against ground truth (tolerance 2 mm, spacing
from the file). Ratios to k = 1 are computed from the same run.

    python benchmarks/bench_slice_step.py --out benchmarks/results/slice_step.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench_volume import DEV, interleaved_runs, load, summarize_runs, write_runs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", default="1,2,3")
    p.add_argument("--precision", default=None, help="default: the library's default precision")
    p.add_argument("--strategy", default=None, help="default: the library's default strategy")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)

    import medsam_edge

    steps = [int(k) for k in args.steps.split(",")]
    kw = {"precision": args.precision} if args.precision else {}
    seg = medsam_edge.Segmenter(**kw)
    names = sorted(c.stem for c in (DEV / "inputs").glob("3DBox_*.npz"))
    if not names:
        raise SystemExit(f"no 3D dev cases in {DEV / 'inputs'} (run calibration/build_data.py)")
    cases = [load(DEV / "inputs" / f"{n}.npz") for n in names]
    warm = cases[0]
    seg.segment_volume(warm["imgs"], warm["boxes"][:1], strategy=args.strategy)
    runners = {k: (lambda case, k=k: seg.segment_volume(case["imgs"], case["boxes"], strategy=args.strategy,
                                                         slice_step=k)) for k in steps}
    rows = interleaved_runs(cases, runners, args.repeats, "slice_step")
    summary = summarize_runs(rows, "slice_step")
    write_runs(args.out, seg, summary, rows, strategy=args.strategy or seg.volume_strategy, cases=names)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
