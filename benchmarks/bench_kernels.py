"""Native kernels vs the NumPy/OpenCV twin: preprocess and postprocess timings.

    python benchmarks/bench_kernels.py                 # default threading (OpenCV and native use all cores)
    python benchmarks/bench_kernels.py --threads 1     # both single-threaded
    python benchmarks/bench_kernels.py --threads 1 --clock cpu   # CPU time: steadier on a busy machine
    python benchmarks/bench_kernels.py --json out.json

Cases: 512x512 grey, 1024x1024 RGB (1 box each) and 3000x3000 grey with 5 boxes, all uint8. Reported numbers are
medians over --repeat runs after a warm-up, in milliseconds; ratio = twin / native (higher is better). The twin's
postprocess uses cv2.resize, which in the opencv-python wheels runs float32 INTER_LINEAR through Intel IPP.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=0, help="threads for OpenCV and the native kernels (0: default)")
    p.add_argument("--repeat", type=int, default=30, help="timed runs per measurement (median reported)")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall", help="wall time, or process CPU time (all threads)")
    p.add_argument("--json", help="also write the results to this JSON file")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads > 0:  # must be set before the native module is first used
        os.environ["MEDSAM_EDGE_NUM_THREADS"] = str(args.threads)

    import cv2
    import numpy as np

    from medsam_edge import _kernels_py as twin
    from medsam_edge import kernels

    if kernels.BACKEND != "native":
        print("medsam_edge._native is not available (BACKEND = %r); nothing to compare" % kernels.BACKEND)
        return 1
    from medsam_edge import _native as native

    if args.threads > 0:
        cv2.setNumThreads(args.threads)

    clock = time.perf_counter if args.clock == "wall" else time.process_time

    def median_ms(fn, *a):
        fn(*a)
        times = []
        for _ in range(args.repeat):
            t0 = clock()
            fn(*a)
            times.append(clock() - t0)
        return statistics.median(times) * 1e3

    rng = np.random.default_rng(0)

    def image(h, w, c):
        # smooth anatomy-like content plus noise: realistic for the resize paths
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        base = 110 + 60 * np.sin(yy / h * 9) * np.cos(xx / w * 7) + rng.normal(0, 12, (h, w)).astype(np.float32)
        img = np.clip(base, 0, 255).astype(np.uint8)
        return np.repeat(img[:, :, None], c, axis=2) if c > 1 else img

    def logits(b):
        coarse = rng.standard_normal((b, 12, 12)).astype(np.float32) * 8
        return np.stack([cv2.resize(c, (256, 256), interpolation=cv2.INTER_CUBIC) for c in coarse])[:, None]

    cases = [("512x512 grey", (512, 512, 1), 1), ("1024x1024 RGB", (1024, 1024, 3), 1), ("3000x3000 grey", (3000, 3000, 1), 5)]
    results = []
    print(
        f"threads: {'default' if args.threads <= 0 else args.threads} (cv2 {cv2.getNumThreads()}), clock: {args.clock}, "
        f"cv2 {cv2.__version__}, IPP {cv2.ipp.useIPP()}, numpy {np.__version__}, {platform.machine()}"
    )
    print(f"{'case':<16} {'kernel':<12} {'boxes':>5} {'twin ms':>9} {'native ms':>10} {'ratio':>7}")
    for name, (h, w, c), boxes in cases:
        img = image(h, w, c)
        out = np.empty((1, 3, 256, 256), np.float32)
        t_pre = median_ms(twin.preprocess, img, out)
        n_pre = median_ms(native.preprocess, img, out)
        new_hw = twin.resized_shape(h, w)
        lg = logits(boxes)
        t_post = median_ms(twin.postprocess, lg, new_hw, (h, w))
        n_post = median_ms(native.postprocess, lg, new_hw, (h, w))
        for kernel, t, n, b in (("preprocess", t_pre, n_pre, "-"), ("postprocess", t_post, n_post, boxes)):
            print(f"{name:<16} {kernel:<12} {b!s:>5} {t:>9.3f} {n:>10.3f} {t / n:>6.1f}x")
            results.append({"case": name, "kernel": kernel, "boxes": b, "twin_ms": t, "native_ms": n, "ratio": t / n})
    if args.json:
        meta = {"threads": args.threads, "clock": args.clock, "cv2": cv2.__version__, "python": sys.version.split()[0]}
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
