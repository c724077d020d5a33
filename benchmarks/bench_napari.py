#!/usr/bin/env python
"""Box -> mask latency in the napari widget (issue 19), in a real viewer under Xvfb.

    python benchmarks/bench_napari.py [--runs 10] [--precisions fp32,int8]

Two images: the bundled 512x512 nuclei example (uint8) and a synthetic 512x512 int16 CT-like slice (air, body
ellipse at soft-tissue HU with noise, a bone ring, two organs; modality CT, so the widget applies the default
abdomen window like the CLI). For each, one rectangle at a time is segmented through ``SegmentWidget.segment``:

* ``decode``: the image's embedding is cached (another box was segmented first): decoder + postprocess only;
* ``encode_decode``: the embedding cache is cleared before the box: encoder + decoder;
* ``library_predict``: ``Segmenter.predict`` on the same embedding outside the widget, same process (the floor).

Per run: the widget's own split (``Session.timing``: encode / decode seconds) and the wall time from the call to the
painted Labels layer (worker thread hop, paint, refresh; Qt events processed every 2 ms). The rectangle is added and
drawn on the canvas first (100 ms of event processing), as it is when a user releases the mouse. Undo after every
run.
Writes benchmarks/results/napari.json (median, p90, min in ms; CPU, flags, load average).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BOXES_NUCLEI = [[79, 192, 99, 206], [362, 58, 387, 88], [300, 300, 360, 350], [37, 334, 63, 360]]
BOXES_CT = [[150, 200, 230, 300], [290, 190, 380, 290], [230, 330, 290, 390], [120, 120, 400, 420]]


def start_xvfb() -> subprocess.Popen:
    """Xvfb on a free display; sets DISPLAY and QT_QPA_PLATFORM=xcb."""
    number = next(n for n in range(90, 200)
                  if not Path(f"/tmp/.X{n}-lock").exists() and not Path(f"/tmp/.X11-unix/X{n}").exists())
    proc = subprocess.Popen([shutil.which("Xvfb") or "Xvfb", f":{number}", "-screen", "0", "1600x1000x24",
                             "-nolisten", "tcp", "-noreset"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not Path(f"/tmp/.X11-unix/X{number}").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("Xvfb did not start")
        time.sleep(0.05)
    os.environ["DISPLAY"], os.environ["QT_QPA_PLATFORM"] = f":{number}", "xcb"
    return proc


def ct_slice(size: int = 512) -> np.ndarray:
    """A deterministic CT-like int16 slice in HU."""
    rng = np.random.default_rng(19)
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    c = size / 2
    out = np.full((size, size), -1000.0)
    body = ((xx - c) / (0.42 * size)) ** 2 + ((yy - c) / (0.34 * size)) ** 2 <= 1
    out[body] = 40 + rng.normal(0, 12, body.sum())
    ring = body & (((xx - c) / (0.38 * size)) ** 2 + ((yy - c) / (0.30 * size)) ** 2 > 1)
    out[ring] = 700
    out[((xx - 190) / 40) ** 2 + ((yy - 250) / 50) ** 2 <= 1] = 60  # liver-like
    out[((xx - 335) / 45) ** 2 + ((yy - 240) / 50) ** 2 <= 1] = 120  # contrast organ
    out[((xx - 260) / 25) ** 2 + ((yy - 360) / 25) ** 2 <= 1] = -80  # fat
    return out.astype(np.int16)


def _wait(app, widget) -> None:
    while widget.busy:
        app.processEvents()
        time.sleep(0.002)
    app.processEvents()


def _settle(app, seconds: float = 0.1) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.005)


def measure(viewer, widget, app, name: str, boxes: list, runs: int, precision: str) -> dict:
    from medsam_edge.napari import _core as core

    widget.image_box.setCurrentText(name)
    widget.precision_box.setCurrentText(precision)
    shapes = widget.boxes_layer()
    out: dict[str, list] = {}
    for mode in ("decode", "encode_decode"):
        rows = []
        for run in range(runs + 1):  # run 0 warms up (compile from the cache, first encode)
            box = boxes[run % len(boxes)]
            if mode == "encode_decode":
                widget.session.cache.clear()
            shapes.add_rectangles([core.rectangle_vertices(box)])
            _settle(app)  # the drawn rectangle is on screen before the request, as after a mouse release
            start = time.perf_counter()
            widget.segment()
            _wait(app, widget)
            wall = time.perf_counter() - start
            timing = widget.session.timing
            assert timing.encoded == (1 if mode == "encode_decode" or run == 0 else 0), (mode, run, timing)
            if run:
                rows.append({"wall_ms": wall * 1e3, "encode_ms": timing.encode_s * 1e3,
                             "decode_ms": timing.decode_s * 1e3})
            widget.undo()
        out[mode] = rows
    seg = widget.session.segmenter(precision)  # the library alone, same process, same embedding: predict()
    state = seg.encode(widget._source(viewer.layers[name]).image())
    rows = []
    for run in range(runs):
        start = time.perf_counter()
        seg.predict(np.array([boxes[run % len(boxes)]], dtype=np.float64), state=state)
        rows.append({"decode_ms": (time.perf_counter() - start) * 1e3})
    out["library_predict"] = rows
    return out


def summary(rows: list[dict]) -> dict:
    keys = rows[0].keys()
    return {k: {"median": round(float(np.median([r[k] for r in rows])), 1),
                "p90": round(float(np.percentile([r[k] for r in rows], 90)), 1),
                "min": round(float(min(r[k] for r in rows)), 1)} for k in keys}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--precisions", default="fp32")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "napari.json")
    args = ap.parse_args(argv)

    xvfb = start_xvfb()
    try:
        import napari
        from qtpy.QtWidgets import QApplication

        from medsam_edge.examples import load_example
        from medsam_edge.napari._widget import SegmentWidget
        from medsam_edge.runtime import cpu_features

        viewer = napari.Viewer(show=True)
        viewer.add_image(load_example("nuclei").image, name="nuclei")
        viewer.add_image(ct_slice(), name="ct", metadata={"medsam_edge": {"modality": "CT"}},
                         contrast_limits=(-160, 240))
        widget = SegmentWidget(viewer)
        viewer.window.add_dock_widget(widget)
        widget.auto_check.setChecked(False)
        app = QApplication.instance()
        load_start = os.getloadavg()
        result: dict = {"cpu": cpu_features()["model"], "cpu_flags": cpu_features()["flags"],
                        "cores": os.cpu_count(), "napari": napari.__version__, "runs": args.runs,
                        "loadavg_start": [round(v, 2) for v in load_start], "cases": {}}
        for precision in args.precisions.split(","):
            for name, boxes, what in (("nuclei", BOXES_NUCLEI, "512x512 uint8 microscopy (bundled example)"),
                                      ("ct", BOXES_CT, "512x512 int16 synthetic CT slice, abdomen window")):
                rows = measure(viewer, widget, app, name, boxes, args.runs, precision)
                result["cases"][f"{name}/{precision}"] = {"image": what, **{m: summary(r) for m, r in rows.items()}}
                print(name, precision, json.dumps(result["cases"][f"{name}/{precision}"]), flush=True)
        result["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
        viewer.close()
    finally:
        xvfb.terminate()
        xvfb.wait(10)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
