"""ROI-zoom booster vs the default pipeline on the labelled dev set: DSC/NSD per target, case and size bucket, time.

Both pipelines run in one process on the same cases, interleaved case by case (the order alternates between cases so
that a load change on the shared machine does not favour one side); the time ratio is computed per case and over
the set. Accuracy: the challenge DSC and NSD (:func:`medsam_edge.metrics.compute_dsc_nsd`; 3D spacing (z, y, x) mm,
2D 1 px, tolerance 2) per label = per target (box i <-> label i + 1), then

* mean per case (the challenge's aggregation) and mean per target, default vs booster, in 2D and in 3D;
* the paired bootstrap 95% CI of the mean per-target difference (targets resampled with replacement);
* per size bucket of the box's longest side in original pixels (< 16, 16-32, 32-64, > 64; 3D: the x/y part);
* the number of targets whose DSC got worse by more than 0.05.

``python benchmarks/bench_refine.py`` writes ``benchmarks/results/refine.json`` and ``refine.md``. Variants:
``--variant name='{"max_crops": 2}'`` (ZoomOptions fields as JSON; repeatable; the first one is the headline).
``--only 2DBox`` / ``--only 3DBox`` run a subset; ``--merge a.json b.json`` combines such runs into one report
(variants present in every run only).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from medsam_edge import Segmenter  # noqa: E402
from medsam_edge.metrics import compute_dsc_nsd  # noqa: E402
from medsam_edge.refine import ZoomOptions  # noqa: E402

DEV = Path(os.environ.get("MEDSAM_EDGE_CACHE", Path.home() / ".cache" / "medsam_edge")) / "data" / "dev"
BUCKETS = ((0, 16, "<16"), (16, 32, "16-32"), (32, 64, "32-64"), (64, float("inf"), ">64"))


def bucket_of(longest: float) -> str:
    for lo, hi, name in BUCKETS:
        if lo <= longest < hi:
            return name
    return BUCKETS[-1][2]


def load_case(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as d:
        imgs, boxes = d["imgs"], d["boxes"]
        spacing = d["spacing"] if "spacing" in d.files else None
    with np.load(path.parent.parent / "gts" / path.name, allow_pickle=False) as g:
        gts = g["gts"]
    is3d = boxes.shape[1] == 6
    xy = boxes[:, [0, 1, 3, 4]] if is3d else boxes
    longest = np.maximum(xy[:, 2] - xy[:, 0], xy[:, 3] - xy[:, 1]).astype(float)
    sp = tuple(float(v) for v in np.asarray(spacing, dtype=float)[::-1]) if is3d else None  # stored (x, y, z)
    return {"name": path.stem, "imgs": imgs, "boxes": boxes, "gts": gts, "is3d": is3d, "spacing": sp,
            "longest": longest}


def run(seg: Segmenter, case: dict) -> tuple[np.ndarray, float, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    if case["is3d"]:
        labels = seg.segment_volume(case["imgs"], case["boxes"]).label_map
    else:
        labels = seg(case["imgs"], case["boxes"]).label_map
    return np.asarray(labels), time.perf_counter() - t0, time.process_time() - c0


def score(labels: np.ndarray, case: dict) -> tuple[list[float], list[float], float, float]:
    s = compute_dsc_nsd(labels, case["gts"], case["spacing"], 2.0)
    n = len(case["boxes"])
    return ([s.dsc.get(i + 1, float("nan")) for i in range(n)], [s.nsd.get(i + 1, float("nan")) for i in range(n)],
            s.mean_dsc, s.mean_nsd)


def bootstrap_ci(diff: np.ndarray, reps: int = 10000, seed: int = 0) -> tuple[float, float]:
    diff = diff[~np.isnan(diff)]
    if diff.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, diff.size, size=(reps, diff.size))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def summarise(records: list[dict], variant: str) -> dict:
    out = {}
    for dim in ("2D", "3D"):
        recs = [r for r in records if r["dim"] == dim]
        if not recs:
            continue
        d0 = np.concatenate([r["default"]["dsc"] for r in recs])
        d1 = np.concatenate([r[variant]["dsc"] for r in recs])
        n0 = np.concatenate([r["default"]["nsd"] for r in recs])
        n1 = np.concatenate([r[variant]["nsd"] for r in recs])
        size = np.concatenate([r["longest"] for r in recs])
        t0 = sum(r["default"]["seconds"] for r in recs)
        t1 = sum(r[variant]["seconds"] for r in recs)
        dd, dn = d1 - d0, n1 - n0
        buckets = {}
        for _, _, name in BUCKETS:
            sel = np.array([bucket_of(v) == name for v in size])
            if sel.any():
                buckets[name] = {
                    "targets": int(sel.sum()),
                    "dsc_default": float(np.nanmean(d0[sel])), "dsc_booster": float(np.nanmean(d1[sel])),
                    "nsd_default": float(np.nanmean(n0[sel])), "nsd_booster": float(np.nanmean(n1[sel])),
                    "dsc_diff_ci95": bootstrap_ci(dd[sel]), "worse_by_0.05": int((dd[sel] < -0.05).sum()),
                    "better_by_0.05": int((dd[sel] > 0.05).sum()),
                }
        out[dim] = {
            "cases": len(recs), "targets": int(d0.size),
            "case_mean_dsc": [float(np.mean([r["default"]["mean_dsc"] for r in recs])),
                              float(np.mean([r[variant]["mean_dsc"] for r in recs]))],
            "case_mean_nsd": [float(np.mean([r["default"]["mean_nsd"] for r in recs])),
                              float(np.mean([r[variant]["mean_nsd"] for r in recs]))],
            "target_mean_dsc": [float(np.nanmean(d0)), float(np.nanmean(d1))],
            "target_mean_nsd": [float(np.nanmean(n0)), float(np.nanmean(n1))],
            "dsc_diff_ci95": bootstrap_ci(dd), "nsd_diff_ci95": bootstrap_ci(dn),
            "worse_by_0.05": int((dd < -0.05).sum()), "better_by_0.05": int((dd > 0.05).sum()),
            "seconds": [t0, t1], "time_ratio": t1 / t0,
            "cpu_seconds": [sum(r["default"]["cpu"] for r in recs), sum(r[variant]["cpu"] for r in recs)],
            "cpu_ratio": sum(r[variant]["cpu"] for r in recs) / sum(r["default"]["cpu"] for r in recs),
            "case_cpu_ratio_max": max(r[variant]["cpu"] / r["default"]["cpu"] for r in recs),
            "case_time_ratio_max": max(r[variant]["seconds"] / r["default"]["seconds"] for r in recs),
            "buckets": buckets,
        }
    return out


def markdown(result: dict) -> str:
    head = result["headline"]
    lines = [
        "# ROI zoom booster vs default (dev set)",
        "",
        f"Generated by `benchmarks/bench_refine.py` on {result['date']} (load average at start "
        f"{result['loadavg']}). Default = `Segmenter()` (the reference pipeline); booster = "
        f"`Segmenter(refine={ZoomOptions(**result['variants'][head])!r})`. Both run in the same process, "
        "interleaved case by case; DSC/NSD are the challenge metrics per target (box i <-> label i+1); CIs are paired "
        "bootstrap 95% intervals of the mean per-target difference (10,000 resamples of targets).",
        "",
    ]
    for name, summ in result["summary"].items():
        lines += [f"## Variant `{name}`: changes from the defaults {json.dumps(result['variants'][name])}", ""]
        lines += ["| | cases | targets | DSC default | DSC booster | dDSC 95% CI | NSD default | NSD booster | "
                  "dNSD 95% CI | worse >0.05 | better >0.05 | time ratio wall (set / worst case) | CPU (set / worst case) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for dim, s in summ.items():
            lines.append(
                f"| {dim} per case | {s['cases']} | {s['targets']} | {s['case_mean_dsc'][0]:.4f} | "
                f"{s['case_mean_dsc'][1]:.4f} | | {s['case_mean_nsd'][0]:.4f} | {s['case_mean_nsd'][1]:.4f} | | | | "
                f"{s['time_ratio']:.2f} / {s['case_time_ratio_max']:.2f} | "
                f"{s['cpu_ratio']:.2f} / {s['case_cpu_ratio_max']:.2f} |")
            lines.append(
                f"| {dim} per target | | | {s['target_mean_dsc'][0]:.4f} | {s['target_mean_dsc'][1]:.4f} | "
                f"[{s['dsc_diff_ci95'][0]:+.4f}, {s['dsc_diff_ci95'][1]:+.4f}] | {s['target_mean_nsd'][0]:.4f} | "
                f"{s['target_mean_nsd'][1]:.4f} | [{s['nsd_diff_ci95'][0]:+.4f}, {s['nsd_diff_ci95'][1]:+.4f}] | "
                f"{s['worse_by_0.05']} | {s['better_by_0.05']} | | |")
        lines += ["", "Per size bucket (box longest side, original pixels):", "",
                  "| dim | bucket | targets | DSC default | DSC booster | dDSC 95% CI | NSD default | NSD booster | "
                  "worse >0.05 | better >0.05 |", "|---|---|---|---|---|---|---|---|---|---|"]
        for dim, s in summ.items():
            for b, v in s["buckets"].items():
                lines.append(
                    f"| {dim} | {b} | {v['targets']} | {v['dsc_default']:.4f} | {v['dsc_booster']:.4f} | "
                    f"[{v['dsc_diff_ci95'][0]:+.4f}, {v['dsc_diff_ci95'][1]:+.4f}] | {v['nsd_default']:.4f} | "
                    f"{v['nsd_booster']:.4f} | {v['worse_by_0.05']} | {v['better_by_0.05']} |")
        lines.append("")
    lines += ["## Per case", "", "| case | targets | DSC default | NSD default | "
              + " | ".join(f"DSC {v} | NSD {v} | time x {v} (wall / CPU)" for v in result["variants"]) + " |",
              "|---|---|---|---|" + "---|---|---|" * len(result["variants"])]
    for r in result["cases"]:
        cells = [f"{r[v]['mean_dsc']:.4f} | {r[v]['mean_nsd']:.4f} | {r[v]['seconds'] / r['default']['seconds']:.2f}"
                 f" / {r[v]['cpu'] / r['default']['cpu']:.2f}" for v in result["variants"]]
        lines.append(f"| {r['case']} | {len(r['longest'])} | {r['default']['mean_dsc']:.4f} | "
                     f"{r['default']['mean_nsd']:.4f} | " + " | ".join(cells) + " |")
    lines += ["", f"Wall and process CPU seconds per case are in `refine.json` (`cases[].<pipeline>.seconds`, `.cpu`); "
              f"threads {result['threads']}. Under heavy shared load the CPU-time ratio is the stable one: a long case's "
              "wall time also measures how much of the machine the process got.", ""]
    return "\n".join(lines)


def _finish(records: list[dict], variants: dict, meta: dict, out: Path, md: Path | None) -> dict:
    for rec in records:
        for key in ["default", *variants]:
            rec[key]["dsc"] = np.asarray(rec[key]["dsc"], dtype=float)
            rec[key]["nsd"] = np.asarray(rec[key]["nsd"], dtype=float)
        rec["longest"] = np.asarray(rec["longest"], dtype=float)
    summary = {name: summarise(records, name) for name in variants}
    for rec in records:
        for key in ["default", *variants]:
            rec[key]["dsc"] = rec[key]["dsc"].tolist()
            rec[key]["nsd"] = rec[key]["nsd"].tolist()
        rec["longest"] = rec["longest"].tolist()
    result = {**meta, "headline": next(iter(variants)), "variants": variants, "summary": summary, "cases": records}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    (md or out.with_suffix(".md")).write_text(markdown(result))
    return result


def merge(paths: list[Path], out: Path, md: Path | None) -> dict:
    runs = [json.loads(Path(p).read_text()) for p in paths]
    names = [n for n in runs[0]["variants"] if all(n in r["variants"] for r in runs)]
    variants = {n: runs[0]["variants"][n] for n in names}
    records = []
    for r in runs:
        for rec in r["cases"]:
            records.append({k: v for k, v in rec.items() if k in ("case", "dim", "longest", "default", *names)})
    meta = {"date": " + ".join(r["date"] for r in runs), "loadavg": [r["loadavg"] for r in runs],
            "threads": runs[0]["threads"], "merged_from": [str(p) for p in paths]}
    return _finish(records, variants, meta, out, md)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEV)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "refine.json")
    ap.add_argument("--md", type=Path, default=None, help="markdown report (default: --out with .md)")
    ap.add_argument("--variant", action="append", default=[], help="name=JSON ZoomOptions fields (repeatable)")
    ap.add_argument("--only", default="", help="comma-separated substrings: run the cases whose name has one")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--merge", nargs="+", type=Path, default=None, help="combine earlier JSON runs, run nothing")
    args = ap.parse_args(argv)
    if args.merge:
        print(markdown(merge(args.merge, args.out, args.md)))
        return 0
    variants = {}
    for spec in args.variant or ["zoom={}"]:
        name, _, js = spec.partition("=")
        variants[name] = json.loads(js or "{}")
    segs = {"default": Segmenter(threads=args.threads)}
    for name, fields in variants.items():
        segs[name] = Segmenter(threads=args.threads, refine=ZoomOptions(**fields))
    only = [part for part in args.only.split(",") if part] or [""]
    files = sorted(p for p in (args.data / "inputs").glob("*.npz") if any(part in p.name for part in only))
    cases = [load_case(p) for p in files]
    warm = next((c for c in cases if not c["is3d"]), None)
    if warm is not None:  # compile / first-call costs out of the timings
        for s in segs.values():
            s(warm["imgs"], warm["boxes"][:1])
    load = [round(v, 2) for v in os.getloadavg()]
    records = []
    for i, case in enumerate(cases):
        order = list(segs) if i % 2 == 0 else list(segs)[::-1]
        rec = {"case": case["name"], "dim": "3D" if case["is3d"] else "2D", "longest": case["longest"].tolist()}
        for key in order:
            labels, wall, cpu = run(segs[key], case)
            dsc, nsd, mdsc, mnsd = score(labels, case)
            rec[key] = {"dsc": dsc, "nsd": nsd, "mean_dsc": mdsc, "mean_nsd": mnsd, "seconds": wall, "cpu": cpu}
        msg = " ".join(f"{k} {rec[k]['mean_dsc']:.3f}/{rec[k]['mean_nsd']:.3f} {rec[k]['seconds']:.1f}s" for k in segs)
        print(f"[{time.strftime('%H:%M:%S')}] {case['name']}: {msg}", file=sys.stderr, flush=True)
        records.append(rec)
        partial = args.out.with_suffix(".partial.json")  # survives an interrupted run
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps({"variants": variants, "threads": args.threads, "loadavg": load,
                                       "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cases": records}))
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "loadavg": load, "threads": args.threads}
    print(markdown(_finish(records, variants, meta, args.out, args.md)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
