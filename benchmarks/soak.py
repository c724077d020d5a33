"""Soak test: many consecutive segmentations in one process; resident memory and time per call over the run.

    python benchmarks/soak.py [--calls 1000] [--out benchmarks/results/soak.json]

Calls alternate between 2D images (64..192 px, uint8 / uint16 / float32, 1-3 boxes) and small 3D volumes (2-3 slices of
48..96 px, 1-2 boxes), all made from a seeded generator, through one Segmenter (fp32, the default). RSS is read after
every call (psutil). Reported: RSS at calls 100 and N and its growth (target < 5 %), and time per call in the first
and last deciles of the run per kind (2D and 3D separately, since they cost differently), whose ratio shows drift, as
wall time and as the process's CPU time (both move with other jobs on a shared machine). The drift check that load
cannot fake is ``replay``: after the run the aged process re-runs the first 100 jobs, a fresh process runs the same
jobs, then the aged process again; aged / fresh near 1 means no slowdown with age.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from medsam_edge import Segmenter  # noqa: E402


def make_job(rng: np.random.Generator, i: int):
    """A 2D job on even calls and every third odd call is 3D (about 2/3 2D, 1/3 3D)."""
    if i % 3 != 2:
        h, w = int(rng.integers(64, 193)), int(rng.integers(64, 193))
        dtype = (np.uint8, np.uint16, np.float32)[i % 3 if i % 3 < 2 else 0]
        yy, xx = np.mgrid[:h, :w]
        cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
        blob = np.exp(-(((yy - cy) / (0.2 * h)) ** 2 + ((xx - cx) / (0.2 * w)) ** 2))
        image = (blob * 200 + rng.normal(0, 10, (h, w))).clip(0, 255).astype(dtype)
        n = int(rng.integers(1, 4))
        boxes = []
        for _ in range(n):
            x0, y0 = rng.uniform(0, 0.5) * w, rng.uniform(0, 0.5) * h
            boxes.append([x0, y0, x0 + rng.uniform(0.2, 0.5) * w, y0 + rng.uniform(0.2, 0.5) * h])
        return "2d", image, np.array(boxes)
    d, h, w = int(rng.integers(2, 4)), int(rng.integers(48, 97)), int(rng.integers(48, 97))
    zz, yy, xx = np.mgrid[:d, :h, :w]
    ball = np.exp(-(((yy - h / 2) / (0.25 * h)) ** 2 + ((xx - w / 2) / (0.25 * w)) ** 2 + ((zz - d / 2) / d) ** 2))
    volume = (ball * 220 + rng.normal(0, 8, (d, h, w))).clip(0, 255).astype(np.uint8)
    n = int(rng.integers(1, 3))
    boxes = [[w * 0.25 + k, h * 0.25, 0, w * 0.75, h * 0.75 - k, d - 1] for k in range(n)]
    return "3d", volume, np.array(boxes, dtype=np.float64)


def run_job(seg, kind: str, data: np.ndarray, boxes: np.ndarray) -> None:
    """One segmentation; checks the result's shape."""
    if kind == "2d":
        assert seg(data, boxes).masks.shape == (len(boxes),) + data.shape[:2]
    else:
        assert seg.segment_volume(data, boxes).label_map.shape == data.shape


def time_jobs(seg, seed: int, count: int) -> list[tuple[str, float]]:
    """(kind, seconds) of the first ``count`` jobs of the run with ``seed`` (the same jobs, regenerated)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        kind, data, boxes = make_job(rng, i)
        t0 = time.perf_counter()
        run_job(seg, kind, data, boxes)
        out.append((kind, time.perf_counter() - t0))
    return out


def replay(seg, args) -> dict:
    """Drift check that machine load cannot fake: the aged process (after all calls) re-runs the first ``replay``
    jobs, a fresh process runs the same jobs (after one warm-up pass), then the aged process once more (A-B-A, so a
    steady change of the machine's load cancels). Reported: median ms per kind and aged / fresh."""
    import subprocess

    first = time_jobs(seg, args.seed, args.replay)
    proc = subprocess.run([sys.executable, __file__, "--fresh-replay", str(args.replay), "--seed", str(args.seed),
                           "--threads", str(args.threads)], capture_output=True, text=True, check=True)
    fresh = [tuple(x) for x in json.loads(proc.stdout.strip().splitlines()[-1])]
    second = time_jobs(seg, args.seed, args.replay)
    res = {"jobs": args.replay, "order": "aged, fresh process (second pass), aged"}
    for kind in ("2d", "3d"):
        aged = [t for k, t in first + second if k == kind]
        new = [t for k, t in fresh if k == kind]
        if aged and new:
            a, f = statistics.median(aged) * 1e3, statistics.median(new) * 1e3
            res[kind] = {"aged_ms": round(a, 1), "fresh_ms": round(f, 1), "aged_over_fresh": round(a / f, 3)}
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2, help="OpenVINO inference threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "soak.json"))
    ap.add_argument("--replay", type=int, default=100, help="jobs re-run by the aged and a fresh process (0: off)")
    ap.add_argument("--fresh-replay", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.fresh_replay:  # the fresh side of replay(): warm-up pass, then the timed pass as JSON on stdout
        seg = Segmenter(threads=args.threads)
        time_jobs(seg, args.seed, args.fresh_replay)
        print(json.dumps(time_jobs(seg, args.seed, args.fresh_replay)))
        return 0

    proc = psutil.Process()
    seg = Segmenter(threads=args.threads)
    rng = np.random.default_rng(args.seed)
    rss, secs, cpus, kinds = [], [], [], []
    t_start = time.time()
    for i in range(args.calls):
        kind, data, boxes = make_job(rng, i)
        t0, c0 = time.perf_counter(), time.process_time()
        run_job(seg, kind, data, boxes)
        secs.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
        kinds.append(kind)
        rss.append(proc.memory_info().rss)
        if (i + 1) % 100 == 0:
            print(f"call {i + 1}: rss {rss[-1] / 2**20:.1f} MiB, last call {secs[-1] * 1e3:.0f} ms", flush=True)
        if (i + 1) % 25 == 0 and i + 1 < args.calls:  # partial results, so an interrupted run still reports
            write(summary(rss, secs, cpus, kinds, args, seg, t_start, finished=False), args.out)
    result = summary(rss, secs, cpus, kinds, args, seg, t_start, finished=True)
    if args.replay:
        result["replay"] = replay(seg, args)
    write(result, args.out)
    print(json.dumps(result, indent=2))
    return 0


def write(result: dict, out: str) -> None:
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(path)


def summary(rss, secs, cpus, kinds, args, seg, t_start, finished: bool) -> dict:
    n = len(secs)
    ref = min(100, n) - 1
    decile = max(1, n // 10)

    def decile_ms(kind, part, values=secs):
        idx = range(0, decile) if part == "first" else range(n - decile, n)
        vals = [values[j] for j in idx if kinds[j] == kind]
        return round(statistics.median(vals) * 1e3, 1) if vals else None

    timing = {}
    for kind in ("2d", "3d"):
        first, last = decile_ms(kind, "first"), decile_ms(kind, "last")
        mine = [s for s, k in zip(secs, kinds) if k == kind]
        timing[kind] = {
            "calls": len(mine),
            "median_ms_first_decile": first,
            "median_ms_last_decile": last,
            "last_over_first": round(last / first, 3) if first and last else None,
            "median_ms_all": round(statistics.median(mine) * 1e3, 1) if mine else None,
        }
        # CPU time of the process per call: less sensitive than wall time to other jobs on a shared machine
        cf, cl = decile_ms(kind, "first", cpus), decile_ms(kind, "last", cpus)
        timing[kind].update(cpu_ms_first_decile=cf, cpu_ms_last_decile=cl,
                            cpu_last_over_first=round(cl / cf, 3) if cf and cl else None)
    return {
        "calls_planned": args.calls,
        "calls_done": n,
        "finished": finished,
        "mix": {"2d": kinds.count("2d"), "3d": kinds.count("3d")},
        "rss_mib_at_call": {str(ref + 1): round(rss[ref] / 2**20, 1), str(n): round(rss[-1] / 2**20, 1)},
        "rss_growth_after_call_100_pct": round((rss[-1] / rss[ref] - 1) * 100, 2),
        "rss_mib_max": round(max(rss) / 2**20, 1),
        "rss_mib_every_25": [round(rss[j] / 2**20, 1) for j in range(24, n, 25)],
        "time_per_call": timing,
        "wall_seconds": round(time.time() - t_start, 1),
        "machine": {"cpus": psutil.cpu_count(), "python": platform.python_version(),
                    "load_avg_at_write": [round(x, 2) for x in psutil.getloadavg()]},
        "segmenter": {"precision": "fp32", "threads": args.threads, "kernels": seg.info["kernels"]},
    }


if __name__ == "__main__":
    sys.exit(main())
