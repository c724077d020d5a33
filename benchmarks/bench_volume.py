"""3D strategy and speed measurements for issue 4 (results in benchmarks/results/volume.json).

Two parts:

* ``--strategies``: every 3D dev case (challenge layout, ``~/.cache/medsam_edge/data/dev``) segmented with
  ``strategy="propagate"`` and ``strategy="slicewise"`` by one fp32 Segmenter, the two interleaved case by case with
  alternating order; wall time, slice encodings, DSC and NSD (:func:`medsam_edge.metrics.compute_dsc_nsd`, spacing
  (z, y, x) in mm, tolerance 2 mm). ``--src NAME=DIR`` runs the same in a child process per checkout (e.g. the
  previous commit as a ``git worktree`` with the built extension copied in) so before/after share the session.
* ``--decoder``: the decoder alone, in one process: the shipped decoder compiled with a dynamic box batch (one call for
  B boxes, what medsam_edge did before) against the static one-box compile that :class:`medsam_edge.runtime.DecoderModel`
  now uses (embedding fed once per call; one-box steps, 4-box steps for calls of >= 4 boxes), interleaved,
  B in (1, 3, 8); median ms per box.

    python benchmarks/bench_volume.py --strategies --decoder --out benchmarks/results/volume.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEV = Path(os.environ.get("MEDSAM_EDGE_DEV", Path.home() / ".cache" / "medsam_edge" / "data" / "dev"))


def load(case: Path) -> dict:
    with np.load(case, allow_pickle=False) as d:
        imgs, boxes, spacing = d["imgs"], d["boxes"], d["spacing"]
    with np.load(case.parent.parent / "gts" / case.name, allow_pickle=False) as g:
        gts = g["gts"]
    # dev files store spacing in ITK (x, y, z) order like the challenge files; arrays are (z, y, x)
    return {"name": case.stem, "imgs": imgs, "boxes": boxes, "gts": gts,
            "spacing": tuple(float(v) for v in np.asarray(spacing, float)[::-1])}


def interleaved_runs(cases: list[dict], runners: dict, repeats: int, key: str) -> list[dict]:
    """Every case (from :func:`load`) segmented by every runner (label -> ``case -> VolumeResult``), the runners'
    order rotating case by case and repeat by repeat so that the machine's drift falls on all alike; one row per run
    (wall time, slice encodings, DSC / NSD at 2 mm, load average), the runner's label under ``key``."""
    from medsam_edge.metrics import compute_dsc_nsd

    labels = list(runners)
    rows = []
    for rep in range(repeats):
        for ci, case in enumerate(cases):
            shift = (ci + rep) % len(labels)
            for label in labels[shift:] + labels[:shift]:
                load0 = os.getloadavg()[0]
                t0 = time.perf_counter()
                res = runners[label](case)
                wall = time.perf_counter() - t0
                sc = compute_dsc_nsd(np.asarray(res.label_map), case["gts"], case["spacing"], 2.0)
                rows.append({"case": case["name"], key: label, "repeat": rep, "wall_s": round(wall, 3),
                             "encoded_slices": res.encoded_slices, "dsc": round(float(sc.mean_dsc), 4),
                             "nsd": round(float(sc.mean_nsd), 4), "loadavg": round(load0, 2)})
                print(json.dumps(rows[-1]), flush=True)
    return rows


def summarize_runs(rows: list[dict], key: str) -> dict:
    """Per runner label (first-seen order): mean DSC / NSD, summed wall time and slice encodings, time and score
    differences to the first label (points)."""
    summary: dict = {}
    for label in dict.fromkeys(r[key] for r in rows):
        sel = [r for r in rows if r[key] == label]
        summary[label] = {"mean_dsc": round(float(np.mean([r["dsc"] for r in sel])), 4),
                          "mean_nsd": round(float(np.mean([r["nsd"] for r in sel])), 4),
                          "total_wall_s": round(float(sum(r["wall_s"] for r in sel)), 2),
                          "encoded_slices": int(sum(r["encoded_slices"] for r in sel))}
    base = next(iter(summary.values()))
    for s in summary.values():
        s["time_ratio_vs_first"] = round(s["total_wall_s"] / base["total_wall_s"], 3) if base["total_wall_s"] else None
        s["dsc_points_vs_first"] = round(100 * (s["mean_dsc"] - base["mean_dsc"]), 2)
        s["nsd_points_vs_first"] = round(100 * (s["mean_nsd"] - base["mean_nsd"]), 2)
    return summary


def write_runs(out: Path | None, seg, summary: dict, rows: list[dict], **facts) -> None:
    """Print ``summary`` and write it with the rows, the CPU, the Segmenter's threads / precision and ``facts`` to
    ``out`` (JSON) when given."""
    from medsam_edge.bench import cpu_label

    doc = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "cpu": cpu_label(), "threads": seg.options.threads,
           "precision": seg.options.precision, **facts, "summary": summary, "rows": rows}
    print(json.dumps(summary, indent=1))
    if out:
        out.write_text(json.dumps(doc, indent=1) + "\n")


def strategies_child(src: str, names: list[str], repeats: int) -> dict:
    if src:
        sys.meta_path[:] = [f for f in sys.meta_path if "Redirect" not in type(f).__name__]
        sys.path.insert(0, src)
    import medsam_edge
    from medsam_edge.metrics import compute_dsc_nsd

    seg = medsam_edge.Segmenter(precision="fp32")
    cases = [load(DEV / "inputs" / f"{n}.npz") for n in names]
    warm = cases[0]
    b = warm["boxes"][:1].copy()
    b[0, 5] = min(int(b[0, 5]), int(b[0, 2]) + 1)
    seg.segment_volume(warm["imgs"], b)
    rows = []
    for rep in range(repeats):
        for ci, case in enumerate(cases):
            order = ["propagate", "slicewise"] if (ci + rep) % 2 == 0 else ["slicewise", "propagate"]
            for strategy in order:
                load0 = os.getloadavg()[0]
                t0, c0 = time.perf_counter(), time.process_time()
                res = seg.segment_volume(case["imgs"], case["boxes"], strategy=strategy)
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                scores = compute_dsc_nsd(np.asarray(res.label_map), case["gts"], case["spacing"], 2.0)
                rows.append({"case": case["name"], "strategy": strategy, "repeat": rep, "wall_s": round(wall, 3),
                             "cpu_s": round(cpu, 3), "encoded_slices": res.encoded_slices,
                             "dsc": round(float(scores.mean_dsc), 4), "nsd": round(float(scores.mean_nsd), 4),
                             "loadavg": round(load0, 2)})
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return {"src": src or "current", "rows": rows}


def decoder_probe(rounds: int = 8) -> dict:
    import openvino as ov

    from medsam_edge.models import resolve
    from medsam_edge.runtime import DECODER_SHAPES, WIDE_DECODER_SHAPES, DecoderModel, Runtime, RuntimeOptions

    runtime = Runtime(RuntimeOptions(precision="fp32", cache_dir=None))
    xml = resolve("fp32", None, verify=False).decoder_xml
    dynamic = DecoderModel(runtime.compile(xml))
    static = DecoderModel(runtime.compile(xml, DECODER_SHAPES))
    shipped = DecoderModel(runtime.compile(xml, DECODER_SHAPES), wide=lambda: runtime.compile(xml, WIDE_DECODER_SHAPES))
    rng = np.random.default_rng(0)
    emb = rng.normal(0, 0.5, (1, 256, 64, 64)).astype(np.float32)
    corner = rng.integers(0, 150, (8, 2))
    boxes = np.concatenate([corner, corner + rng.integers(20, 100, (8, 2))], 1).astype(np.float32)
    models = [("dynamic batch", dynamic), ("static 1-box loop", static), ("static 1 + 4-box chunks (shipped)", shipped)]
    times: dict[str, dict[int, list[float]]] = {name: {} for name, _ in models}
    diffs = {}
    for name, model in models:
        model(emb, boxes[:3])  # warm-up
        model(emb, boxes[:8])
    for r in range(rounds):
        for n in (1, 3, 8):
            for name, model in (models[r % 3:] + models[:r % 3]):  # rotating order
                t0 = time.perf_counter()
                logits, _ = model(emb, boxes[:n])
                times[name].setdefault(n, []).append((time.perf_counter() - t0) / n)
            if r == 0:
                a, _ = dynamic(emb, boxes[:n])
                b, _ = shipped(emb, boxes[:n])
                diffs[n] = {"max_abs_logit_diff (shipped vs dynamic)": float(np.abs(a - b).max()),
                            "mask_agreement": float(((a > 0) == (b > 0)).mean())}
    out = {n: {name: round(1000 * float(np.median(times[name][n])), 2) for name in times} for n in (1, 3, 8)}
    for n in out:
        out[n]["shipped / dynamic time"] = round(out[n]["static 1 + 4-box chunks (shipped)"] / out[n]["dynamic batch"], 3)
        out[n]["1-box loop / dynamic time"] = round(out[n]["static 1-box loop"] / out[n]["dynamic batch"], 3)
        out[n].update(diffs[n])
    del ov
    return {"ms_per_box": out, "rounds": rounds, "loadavg": round(os.getloadavg()[0], 2)}


def summarise(rows: list[dict]) -> dict:
    out = {}
    for strategy in ("propagate", "slicewise"):
        sel = [r for r in rows if r["strategy"] == strategy]
        if not sel:
            continue
        out[strategy] = {"cases": len({r["case"] for r in sel}), "runs": len(sel),
                         "mean_dsc": round(float(np.mean([r["dsc"] for r in sel])), 4),
                         "mean_nsd": round(float(np.mean([r["nsd"] for r in sel])), 4),
                         "total_wall_s": round(float(sum(r["wall_s"] for r in sel)), 2),
                         "encoded_slices": int(sum(r["encoded_slices"] for r in sel))}
    if len(out) == 2:
        p, s = out["propagate"], out["slicewise"]
        per_case = {}
        for r in rows:
            per_case.setdefault(r["case"], {}).setdefault(r["strategy"], []).append(r)
        wins = sum(1 for c in per_case.values() if np.mean([r["dsc"] for r in c["slicewise"]]) >
                   np.mean([r["dsc"] for r in c["propagate"]]))
        out["slicewise - propagate"] = {"dsc_points": round(100 * (s["mean_dsc"] - p["mean_dsc"]), 2),
                                        "nsd_points": round(100 * (s["mean_nsd"] - p["mean_nsd"]), 2),
                                        "time_ratio": round(s["total_wall_s"] / p["total_wall_s"], 3),
                                        "slicewise_higher_dsc_cases": f"{wins} of {len(per_case)}"}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--strategies", action="store_true")
    p.add_argument("--decoder", action="store_true")
    p.add_argument("--cases", nargs="*", default=None, help="3D case names (default: every 3D dev case)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--src", action="append", default=[], metavar="NAME=DIR")
    p.add_argument("--out", type=Path)
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        src, names, repeats = args.child
        print(json.dumps(strategies_child(src, json.loads(names), int(repeats))))
        return 0
    doc = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "loadavg_start": round(os.getloadavg()[0], 2)}
    if args.decoder:
        doc["decoder"] = decoder_probe()
        print(json.dumps(doc["decoder"], indent=1), flush=True)
    if args.strategies:
        names = args.cases or sorted(c.stem for c in (DEV / "inputs").glob("3DBox_*.npz"))
        srcs = [s.split("=", 1) for s in args.src] or [["current", ""]]
        doc["strategies"] = {}
        for name, src in srcs:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child",
                   str(Path(src).resolve()) if src else "", json.dumps(names), str(args.repeats)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                print(proc.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"child {name} failed")
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            res["summary"] = summarise(res["rows"])
            doc["strategies"][name] = res
            print(name, json.dumps(res["summary"], indent=1), flush=True)
    doc["loadavg_end"] = round(os.getloadavg()[0], 2)
    if args.out:
        args.out.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
