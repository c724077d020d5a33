"""Would async / overlapped inference pay on this machine? A direct measurement.

Segmenter runs one LATENCY-hint stream that uses every core for each inference, one inference after another. The
alternative is two single-thread streams working on two slices at once (THROUGHPUT hint, ``NUM_STREAMS=2``, driven by
an ``AsyncInferQueue``), which is possible for the encoder in both 3D strategies (slice z+1's encoding never depends on
slice z's mask). This probe times N encoder inferences both ways, interleaved in rounds, and checks that the
throughput-mode outputs equal the latency-mode ones (a 1-thread stream has produced all-zero outputs with an INT8
model before: see shared/NOTES-openvino.md).

``python benchmarks/probe_overlap.py [--precisions int8 fp32] [--images 12] [--rounds 3] [--json out.json]``
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

from medsam_edge.bench import _test_image
from medsam_edge.errors import ModelFileError
from medsam_edge.models import resolve
from medsam_edge.runtime import PRECISIONS, core


def probe(precision: str, images: int = 12, rounds: int = 3) -> dict:
    variant, hint = PRECISIONS[precision]
    xml = str(resolve(variant, verify=False).encoder_xml)
    cores = len(os.sched_getaffinity(0))
    ov_core = core()
    latency = ov_core.compile_model(xml, "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": hint})
    streams = ov_core.compile_model(xml, "CPU", {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": cores,
                                                 "INFERENCE_NUM_THREADS": cores, "INFERENCE_PRECISION_HINT": hint})
    import openvino as ov

    base = _test_image()
    batch = [np.ascontiguousarray(np.roll(base, 7 * i, axis=3)) for i in range(images)]
    request = latency.create_infer_request()
    queue = ov.AsyncInferQueue(streams, cores)
    outputs: dict[int, np.ndarray] = {}

    def done(req, idx):
        outputs[idx] = req.get_output_tensor(0).data.copy()

    queue.set_callback(done)

    def run_latency() -> list[np.ndarray]:
        res = []
        for img in batch:
            request.infer({0: img})
            res.append(request.get_output_tensor(0).data.copy())
        return res

    def run_streams() -> None:
        for i, img in enumerate(batch):
            queue.start_async({0: img}, i)
        queue.wait_all()

    run_latency()  # warm-up both
    run_streams()
    lat_t, thr_t = [], []
    ref = None
    for r in range(rounds):
        for kind in (("latency", "streams") if r % 2 == 0 else ("streams", "latency")):
            t0 = time.perf_counter()
            if kind == "latency":
                ref = run_latency()
                lat_t.append(time.perf_counter() - t0)
            else:
                run_streams()
                thr_t.append(time.perf_counter() - t0)
    err = max(float(np.linalg.norm(outputs[i] - ref[i]) / max(np.linalg.norm(ref[i]), 1e-12)) for i in range(images))
    lat, thr = float(np.median(lat_t)), float(np.median(thr_t))
    return {"precision": precision, "images": images, "rounds": rounds, "streams": cores,
            "latency_mode_ms_per_image": round(1e3 * lat / images, 1),
            "two_streams_ms_per_image": round(1e3 * thr / images, 1),
            "throughput_gain": round(lat / thr, 3),
            "max_rel_diff_streams_vs_latency": round(err, 5),
            "loadavg": round(os.getloadavg()[0], 2)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="latency-mode vs two-stream encoder throughput")
    p.add_argument("--precisions", nargs="+", default=["int8", "fp32"])
    p.add_argument("--images", type=int, default=12)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    results = []
    for precision in args.precisions:
        try:
            results.append(probe(precision, args.images, args.rounds))
        except ModelFileError as exc:
            results.append({"precision": precision, "skipped": str(exc).splitlines()[0]})
        print(json.dumps(results[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
