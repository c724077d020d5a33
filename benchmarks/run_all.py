"""Run every benchmark and write ``benchmarks/results/``: models.json, pipeline.json, pipeline_memory.json,
overlap.json, run_all.json, RESULTS.md and accuracy_vs_time.png.

    python benchmarks/run_all.py            # the full run (~19-20 min on an otherwise idle 2-core machine)
    python benchmarks/run_all.py --quick    # a smoke run of the whole chain (~2-4 min)

Steps, each in its own process so none inherits another's memory, threads or imported torch:

1. model latency: ``python -m medsam_edge.bench`` (fp32/bf16/int8 x 1/2 threads, 30 rounds after 5 warm-up rounds);
2. pipelines on the dev set (3D stage profile of the default and int8 runs included):
   ``benchmarks/bench_pipeline.py --skip coldstart rss``
   ((a), the official torch pipeline, on every 2D case and the cheapest 3D case: ``--official``);
3. cold start and peak RSS, from a small parent process: ``benchmarks/bench_pipeline.py --skip accuracy``;
4. one LATENCY stream vs two single-thread streams for the encoder: ``benchmarks/probe_overlap.py``;
5. the report.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:  # pragma: no cover
        return None


def _run(name: str, cmd: list[str], steps: dict) -> None:
    print(f"== {name}: {' '.join(cmd[1:])}  (load {_load()})", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=str(ROOT), check=False)
    steps[name] = time.perf_counter() - t0
    print(f"== {name}: {steps[name]:.0f} s, exit {proc.returncode}", flush=True)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed (exit {proc.returncode})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--official", default="2d+1", help="cases for the official torch pipeline (see bench_pipeline.py)")
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="few repeats, one case per dimension, small RSS volume")
    args = p.parse_args(argv)
    out = args.results
    out.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    steps: dict[str, float] = {}
    info = {"date": time.strftime("%Y-%m-%d %H:%M"), "loadavg_start": _load(), "quick": args.quick}
    t0 = time.perf_counter()

    repeats, warmup = (3, 1) if args.quick else (args.repeats, args.warmup)
    _run("models", [py, "-m", "medsam_edge.bench", "--repeats", str(repeats), "--warmup", str(warmup), "-q",
                    "--profile",
                    "--json", str(out / "models.json")], steps)
    extra = ["--limit", "1", "--official", "2d"] if args.quick else ["--official", args.official]
    _run("pipelines", [py, "benchmarks/bench_pipeline.py", "--out", str(out / "pipeline.json"),
                       "--skip", "coldstart", "rss", *extra], steps)
    mem = ["--rss-depth", "40", "--official-rss-slices", "2"] if args.quick else ["--official-rss-slices", "4"]
    _run("coldstart+rss", [py, "benchmarks/bench_pipeline.py", "--out", str(out / "pipeline_memory.json"),
                           "--skip", "accuracy", *mem], steps)

    _run("overlap", [py, "benchmarks/probe_overlap.py", "--json", str(out / "overlap.json"),
                     *(["--images", "4", "--rounds", "1"] if args.quick else ["--images", "8", "--rounds", "2"])],
         steps)

    info["wall_s"] = round(time.perf_counter() - t0, 1)
    info["steps"] = {k: round(v, 1) for k, v in steps.items()}
    info["loadavg_end"] = _load()
    (out / "run_all.json").write_text(json.dumps(info, indent=1) + "\n")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from report import write_report

    report = write_report(out, info)
    print(f"== done in {info['wall_s'] / 60:.1f} min: {report}, {out / 'accuracy_vs_time.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
