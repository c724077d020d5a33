"""Where the decoder's time goes: OpenVINO per-node counters (PERF_COUNT) of the shipped decoder, grouped by node type.

For issue 16 (decoder <= 10 ms per box): compiles the decoder of one precision with ``PERF_COUNT`` on, static box
counts 1 and 8, runs ``--runs`` inferences on a random embedding after warm-up and prints / writes the summed real time
per layer type and the 15 slowest nodes (median over runs).

``python benchmarks/profile_decoder.py --precision fp32 --out benchmarks/results/decoder_profile.json``
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict
from pathlib import Path

import numpy as np


def profile(precision: str, boxes: int, runs: int, threads: int) -> dict:
    import openvino as ov

    from medsam_edge.models import resolve
    from medsam_edge.runtime import RuntimeOptions

    opts = RuntimeOptions(precision=precision, threads=threads)
    pair = resolve(opts.variant)
    core = ov.Core()
    model = core.read_model(str(pair.decoder_xml))
    model.reshape({"boxes": [boxes, 4]})
    compiled = core.compile_model(model, "CPU", {"PERF_COUNT": True, "INFERENCE_PRECISION_HINT": opts.inference_precision,
                                                 "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    rng = np.random.default_rng(0)
    inputs = {"embedding": rng.standard_normal((1, 256, 64, 64)).astype(np.float32),
              "boxes": np.tile(np.array([[60, 70, 150, 170]], np.float32), (boxes, 1))}
    for _ in range(3):
        request.infer(inputs)
    per_node: dict = defaultdict(list)
    node_type: dict = {}
    walls = []
    for _ in range(runs):
        t0 = time.perf_counter()
        request.infer(inputs)
        walls.append(time.perf_counter() - t0)
        for info in request.profiling_info:
            per_node[info.node_name].append(info.real_time.total_seconds() * 1e3)
            node_type[info.node_name] = f"{info.node_type} [{info.exec_type}]"
    med = {n: statistics.median(v) for n, v in per_node.items()}
    by_type: dict = defaultdict(float)
    for n, v in med.items():
        by_type[node_type[n]] += v
    total = sum(med.values())
    return {
        "precision": precision, "execution": opts.inference_precision, "boxes": boxes, "threads": threads,
        "wall_ms_median": 1e3 * statistics.median(walls), "nodes_ms_sum": total,
        "by_type_ms": dict(sorted(by_type.items(), key=lambda kv: -kv[1])),
        "slowest_nodes_ms": [(n, node_type[n], v) for n, v in sorted(med.items(), key=lambda kv: -kv[1])[:15]],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--boxes", default="1,8")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    from bench_precision_gt import cpu_name

    results = {"cpu": cpu_name(), "profiles": []}
    for n in (int(b) for b in args.boxes.split(",")):
        r = profile(args.precision, n, args.runs, args.threads)
        results["profiles"].append(r)
        print(f"\n{args.precision} ({r['execution']}), {n} box(es): wall {r['wall_ms_median']:.1f} ms, "
              f"nodes {r['nodes_ms_sum']:.1f} ms")
        for t, v in list(r["by_type_ms"].items())[:12]:
            print(f"  {t:45s} {v:7.2f} ms  {100 * v / r['nodes_ms_sum']:5.1f}%")
        for name, t, v in r["slowest_nodes_ms"][:8]:
            print(f"    {v:7.2f} ms  {t:35s} {name[:70]}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
