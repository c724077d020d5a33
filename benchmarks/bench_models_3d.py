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
from pathlib import Path

from bench_volume import DEV, interleaved_runs, load, summarize_runs, write_runs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", action="append", required=True, metavar="LABEL=DIR",
                   help="a model folder ('shipped': the installed package's); give two or more")
    p.add_argument("--precision", default=None, help="default: the library's default precision")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)

    import medsam_edge

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
    runners = {label: (lambda case, seg=seg: seg.segment_volume(case["imgs"], case["boxes"]))
               for label, seg in segs.items()}
    rows = interleaved_runs(cases, runners, args.repeats, "models")
    summary = summarize_runs(rows, "models")
    seg = segs[labels[0]]
    write_runs(args.out, seg, summary, rows, strategy=seg.volume_strategy,
               models={k: str(v) if v else "shipped" for k, v in folders.items()}, cases=names)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
