"""Decoder latency, shipped model files against the model files of an earlier commit, in one process.

For issue 16 (decoder per box): the decoder IR of ``--before`` (a git revision; its ``medsam_edge/models`` folder is
extracted into a temporary folder) and the working tree's are compiled with the options ``Segmenter`` uses, for each
precision, and timed round-robin (before / after interleaved, the start rotating) on one random embedding with
1 / 4 / 8 / 32 boxes through ``Engine.decode_model`` (the product's path: static 1-box and 4-box requests, outputs
copied). Each pair is also compared: max |logit difference| and mask agreement.

``--snippets`` times the current files twice instead: ``RuntimeOptions(decoder_snippets=True)`` (OpenVINO's default
fusions) as "before" and the shipped setting (no snippets kernels in the decoder) as "after".

``python benchmarks/bench_decoder.py --before 1d58ac6 --out benchmarks/results/decoder.json``
``python benchmarks/bench_decoder.py --snippets --out benchmarks/results/decoder_snippets.json``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def extract_models(revision: str, folder: Path) -> Path:
    """Write ``medsam_edge/models`` of ``revision`` into ``folder`` (git archive | tar)."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", revision, "medsam_edge/models"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder / "medsam_edge" / "models"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", help="git revision whose model files are the baseline")
    ap.add_argument("--snippets", action="store_true", help="instead: the current files with the CPU plugin's "
                    "snippets kernels in the decoder (OpenVINO's default) as 'before', without them as 'after'")
    ap.add_argument("--precisions", default="fp32,bf16,int8")
    ap.add_argument("--boxes", default="1,4,8,32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if bool(args.before) == bool(args.snippets):
        ap.error("give either --before REV or --snippets")

    from medsam_edge.bench import _cpuinfo, _test_boxes
    from medsam_edge.engine import Engine
    from medsam_edge.runtime import RuntimeOptions

    boxes = tuple(int(b) for b in args.boxes.split(","))
    rng = np.random.default_rng(0)
    embedding = rng.standard_normal((1, 256, 64, 64)).astype(np.float32)
    batches = {b: _test_boxes(b) for b in boxes}
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        folders = {"before": extract_models(args.before, Path(tmp)) if args.before else None, "after": None}
        for precision in args.precisions.split(","):
            options = {name: RuntimeOptions(precision=precision, threads=args.threads, cache_dir=None,
                                            decoder_snippets=args.snippets and name == "before") for name in folders}
            variants = {name: Engine.open(options[name], folder) for name, folder in folders.items()}
            for b in boxes:
                for v in variants.values():  # warm-up
                    v.decode_model(embedding, batches[b])
                times = {name: [] for name in variants}
                order = list(variants)
                for r in range(max(3, args.rounds * 4 // max(b, 4))):
                    for name in order[r % 2:] + order[: r % 2]:
                        t0 = time.perf_counter()
                        variants[name].decode_model(embedding, batches[b])
                        times[name].append(time.perf_counter() - t0)
                logits = {name: v.decode_model(embedding, batches[b])[0] for name, v in variants.items()}
                rec = {"precision": precision, "boxes": b, "threads": args.threads,
                       "before_ms": 1e3 * statistics.median(times["before"]),
                       "after_ms": 1e3 * statistics.median(times["after"]),
                       "max_abs_logit_diff": float(np.abs(logits["before"] - logits["after"]).max()),
                       "mask_agreement": float(((logits["before"] > 0) == (logits["after"] > 0)).mean())}
                rec["before_ms_per_box"] = rec["before_ms"] / b
                rec["after_ms_per_box"] = rec["after_ms"] / b
                rec["ratio"] = rec["after_ms"] / rec["before_ms"]
                records.append(rec)
                print(f"{precision:5s} {b:3d} boxes  before {rec['before_ms']:7.1f} ms ({rec['before_ms_per_box']:5.1f}/box)"
                      f"  after {rec['after_ms']:7.1f} ms ({rec['after_ms_per_box']:5.1f}/box)  x{rec['ratio']:.2f}"
                      f"  |dlogit| {rec['max_abs_logit_diff']:.2e}  agree {rec['mask_agreement']:.6f}", flush=True)
    result = {"before": args.before or "decoder_snippets=True (same files)", "cpu": _cpuinfo(), "loadavg": os.getloadavg(), "records": records}
    if args.out:
        args.out.write_text(json.dumps(result, indent=1, default=lambda o: sorted(o) if isinstance(o, set) else str(o)) + "\n")


if __name__ == "__main__":
    main()
