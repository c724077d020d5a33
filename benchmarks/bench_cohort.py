"""Cohort runner on this machine: local Dask cluster start-up, 2 workers x 1 thread vs 1 process x 2 threads.

In one session, on the dev set's challenge ``.npz`` files (``calibration/build_data.py`` -> ``<cache>/dev/inputs``;
``--inputs`` for another folder):

1. start-up of a local cluster of 2 worker processes (``LocalCluster`` + ``Client`` + both workers up) and its
   shutdown, ``--startups`` times;
2. ``medsam-edge segment DEV -o A --threads 2`` (one process, 2 OpenVINO threads) and ``medsam-edge cohort DEV -o B
   --workers 2 --threads-per-worker 1`` (2 processes, 1 thread each), each a fresh command, wall time end to end
   (interpreter start, model load from the compiled-model cache, every case, the files); ``--rounds`` alternations;
3. the outputs compared array for array. A case whose label map differs is segmented again serially with 1 thread
   (the workers' thread count): OpenVINO's reductions are split by thread, so 1 and 2 threads can differ in a few
   pixels in bf16 execution; at equal threads the cohort must equal the serial run.

``python benchmarks/bench_cohort.py --precision int8`` -> ``benchmarks/results/cohort.json`` (+ ``cohort.md``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _load() -> float:
    return os.getloadavg()[0]


def cluster_startup(n: int) -> list[dict]:
    from distributed import Client

    from medsam_edge._cohort_dask import local_cluster

    runs = []
    for _ in range(n):
        t0 = time.perf_counter()
        cluster = local_cluster(2)
        client = Client(cluster)
        client.wait_for_workers(2)
        t1 = time.perf_counter()
        client.close()
        cluster.close()
        runs.append({"start_s": round(t1 - t0, 3), "shutdown_s": round(time.perf_counter() - t1, 3)})
    return runs


def _cli(*args: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "medsam_edge", *args], capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"medsam-edge {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return seconds, proc.stdout


def _segs(path: Path) -> np.ndarray:
    with np.load(path, allow_pickle=False) as f:
        return f["segs"]


def compare(names: list[str], a: Path, b: Path) -> dict[str, int]:
    """Differing voxels per case (0 = identical label maps)."""
    return {n: int((_segs(a / n) != _segs(b / n)).sum()) for n in names}


def _cohort_timings(stdout: str) -> dict:
    m = re.search(r"cluster ([\d.]+) s, models ([\d.]+) s, cases ([\d.]+) s", stdout)
    return {"cluster_start_s": float(m[1]), "models_s": float(m[2]), "cases_s": float(m[3])} if m else {}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inputs", type=Path, help="folder of challenge .npz files (default: the dev set's inputs)")
    ap.add_argument("--precision", default="int8", choices=["fp32", "bf16", "int8"])
    ap.add_argument("--rounds", type=int, default=1, help="serial/cohort alternations")
    ap.add_argument("--startups", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RESULTS / "cohort.json")
    ap.add_argument("--report-only", action="store_true", help="rewrite the .md from the existing --out JSON")
    args = ap.parse_args(argv)
    if args.report_only:
        args.out.with_suffix(".md").write_text(report(json.loads(args.out.read_text())))
        return 0

    from medsam_edge.runtime import cpu_features

    if args.inputs is None:
        from calibration.data import cache_dir

        args.inputs = cache_dir() / "dev" / "inputs"
    names = sorted(p.name for p in args.inputs.glob("*.npz"))
    if not names:
        raise SystemExit(f"no .npz cases in {args.inputs}; build the dev set with python calibration/build_data.py")
    work = Path(tempfile.mkdtemp(prefix="bench_cohort-"))
    result: dict = {"cpu": cpu_features(), "cores": os.cpu_count(), "inputs": str(args.inputs), "cases": len(names),
                    "precision": args.precision, "load_before": round(_load(), 2)}
    try:
        import dask
        import distributed

        result["dask"] = {"dask": dask.__version__, "distributed": distributed.__version__}
        result["cluster_startup"] = cluster_startup(args.startups)
        rounds = []
        for r in range(args.rounds):
            ser, coh = work / f"serial{r}", work / f"cohort{r}"
            load0 = _load()
            t_serial, _ = _cli("segment", str(args.inputs), "-o", str(ser), "--precision", args.precision,
                               "--threads", "2", "-q")
            t_cohort, stdout = _cli("cohort", str(args.inputs), "-o", str(coh), "--workers", "2",
                                    "--threads-per-worker", "1", "--precision", args.precision)
            with open(coh / "results.csv", newline="") as handle:
                table = list(csv.DictReader(handle))
            rounds.append({
                "serial_1x2_s": round(t_serial, 2), "cohort_2x1_s": round(t_cohort, 2),
                "speedup": round(t_serial / t_cohort, 3), "cohort": _cohort_timings(stdout),
                "statuses": sorted({row["status"] for row in table}),
                "worker_case_s_sum": round(sum(float(row["seconds"]) for row in table), 2),
                "segment_s_sum": round(sum(float(row["segment_seconds"]) for row in table), 2),
                "cases_per_worker": {w: sum(1 for row in table if row["worker"] == w)
                                     for w in sorted({row["worker"] for row in table})},
                "load": [round(load0, 2), round(_load(), 2)],
            })
        diff = compare(names, work / "cohort0", work / "serial0")
        differing = [n for n, d in diff.items() if d]
        result["rounds"] = rounds
        result["identity"] = {"cases_identical_to_serial_2_threads": len(names) - len(differing),
                              "differing_voxels": {n: diff[n] for n in differing}}
        if differing:
            sub, ser1 = work / "differing", work / "serial_1thread"
            sub.mkdir()
            for n in differing:
                shutil.copy(args.inputs / n, sub / n)
            _cli("segment", str(sub), "-o", str(ser1), "--precision", args.precision, "--threads", "1", "-q")
            again = compare(differing, work / "cohort0", ser1)
            result["identity"]["those_vs_serial_1_thread_differing_voxels"] = again
        result["identity"]["all_identical_at_equal_threads"] = not differing or not any(
            result["identity"]["those_vs_serial_1_thread_differing_voxels"].values())
        result["load_after"] = round(_load(), 2)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(report(result))
    print(report(result))
    return 0


def report(r: dict) -> str:
    flags = set(r["cpu"]["flags"])
    isa = ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in ("avx512_vnni", "avx512_bf16", "amx_bf16",
                                                                     "amx_int8"))
    starts = r["cluster_startup"]
    lines = [
        "# Cohort runner: 2 workers x 1 thread vs 1 process x 2 threads",
        "",
        f"CPU: {r['cpu']['model']} (lscpu model name; {r['cores']} logical CPUs; {isa}). Dask {r['dask']['distributed']}. "
        f"{r['cases']} cases ({r['inputs']}), precision {r['precision']}. Load average before/after: "
        f"{r['load_before']} / {r['load_after']} (shared machine).",
        "",
        "Local cluster of 2 worker processes, start (LocalCluster + Client + workers up) / shutdown: "
        + "; ".join(f"{s['start_s']:.2f} / {s['shutdown_s']:.2f} s" for s in starts) + ".",
        "",
        "| round | `segment FOLDER --threads 2` | `cohort --workers 2 --threads-per-worker 1` | serial / cohort | "
        "cohort: cluster, models, cases | cases per worker |",
        "|---|---|---|---|---|---|",
    ]
    for k, rd in enumerate(r["rounds"]):
        c = rd["cohort"]
        lines.append(f"| {k} | {rd['serial_1x2_s']:.1f} s | {rd['cohort_2x1_s']:.1f} s | {rd['speedup']:.2f} | "
                     f"{c.get('cluster_start_s', 0):.1f} / {c.get('models_s', 0):.1f} / {c.get('cases_s', 0):.1f} s "
                     f"| {', '.join(str(v) for v in rd['cases_per_worker'].values())} |")
    ident = r["identity"]
    for k, rd in enumerate(r["rounds"]):
        busy = rd["worker_case_s_sum"] / max(1, len(rd["cases_per_worker"]))
        cases_s = rd["cohort"].get("cases_s", 0)
        lines += ["", f"Round {k}, where the cohort's time went: the workers were busy {rd['worker_case_s_sum']:.1f} s "
                  f"in all ({busy:.1f} s each on average), {rd['segment_s_sum']:.1f} s of it segmenting; reading and "
                  f"writing {rd['worker_case_s_sum'] - rd['segment_s_sum']:.2f} s for {r['cases']} cases; the case "
                  f"phase took {cases_s:.1f} s, {cases_s - busy:.1f} s more than the average worker (scheduling, "
                  f"uneven case sizes at the end). Load average {rd['load'][0]} -> {rd['load'][1]}."]
    lines += [
        "",
        f"Outputs: {ident['cases_identical_to_serial_2_threads']} of {r['cases']} label maps identical to the "
        f"serial 2-thread run; differing voxels: {ident['differing_voxels'] or 'none'}"
        + (f"; those cases against a serial 1-thread run: {ident['those_vs_serial_1_thread_differing_voxels']}"
           if ident["differing_voxels"] else "")
        + f". Identical at equal thread count: {'yes' if ident['all_identical_at_equal_threads'] else 'NO'}.",
        "",
        "Wall times are whole commands (interpreter, model load from the compiled-model cache, every case, files). "
        "With a load average above the number of cores (other jobs on the machine), neither configuration had its "
        "cores to itself: the ratio then measures the runner's own cost, not what 2 x 1 gains over 1 x 2 on a quiet "
        "machine.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
