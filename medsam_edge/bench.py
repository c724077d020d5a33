"""Model-level benchmark: encoder and decoder latency per precision and thread count (no torch needed).

:func:`bench_models` compiles every requested (precision, threads) variant of the shipped IR files with the same
options :class:`medsam_edge.Segmenter` uses, then times the raw OpenVINO infer requests (no pre/post-processing, no
output copies):

* ``encoder``: one 1x3x256x256 image -> 1x256x64x64 embedding;
* ``decoder`` with 1 box and with 8 boxes in one batched call.

The machine is assumed shared and noisy, so the variants are interleaved round-robin: each round runs every
(variant, part) task once, and the starting task rotates from round to round. ``warmup`` rounds are discarded;
``repeats`` rounds are kept; median and p90 are reported. The 1-minute load average is recorded before and after.

Throughput is reported as achieved GMAC/s using multiply-accumulate counts taken from the IR itself (MatMul,
(Group)Convolution and transposed convolution nodes; ~37.5 GMAC for the encoder, ~1.8 GMAC for the decoder with one
box), and as a percentage of the machine's peak, derived as ``cores x clock x MAC/cycle/core`` (see
:func:`machine_peak`). Each variant also gets a quick output check against fp32 (embedding relative error, decoder
mask Dice), because a fast but wrong variant must not look good in a latency table.

:func:`op_profile` splits one model's time by OpenVINO node type (performance counters).

``python -m medsam_edge.bench [--profile]`` prints a table and the JSON ``{"records": [...], "profiles": [...]}``.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from .errors import MedsamEdgeError, ModelFileError
from .models import resolve as resolve_models
from .runtime import DEFAULT, PRECISIONS, Runtime, RuntimeOptions, openvino, resolve_cache_dir

#: MAC counts used when the IR cannot be inspected (counted on the fp16 IR with :func:`count_macs`)
FALLBACK_GMAC = {"encoder": 37.474, "decoder_1": 1.806, "decoder_8": 11.619}

#: Multiply-accumulates per cycle per core for each data type on a core with two full-width (512-bit) AVX-512
#: pipes that can each start one fused multiply-add / dot-product instruction per cycle (AMD Zen 5, Intel server
#: cores with two FMA units): INT8 VPDPBUSD = 16 lanes x 4 products; BF16 VDPBF16PS = 16 lanes x 2; FP32 FMA = 16.
MACS_PER_CYCLE = {"int8": 2 * 64, "bf16": 2 * 32, "fp32": 2 * 16}


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:  # pragma: no cover - not on every platform
        return None


def _cpuinfo() -> dict:
    """Model name, flags and clock from /proc/cpuinfo (Linux); empty values elsewhere."""
    info = {"model_name": platform.processor() or "", "flags": set(), "mhz": None, "family": None, "model": None}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "model name" and not info["model_name"]:
            info["model_name"] = value
        elif key == "model name":
            info["model_name"] = info["model_name"] or value
        elif key == "cpu family" and info["family"] is None:
            info["family"] = value
        elif key == "model" and info["model"] is None:
            info["model"] = value
        elif key == "flags" and not info["flags"]:
            info["flags"] = set(value.split())
        elif key == "cpu MHz" and info["mhz"] is None:
            try:
                info["mhz"] = float(value)
            except ValueError:
                pass
    return info


def cpu_label() -> str:
    """'model name (family F model M; AMX / AVX-512 BF16 / VNNI flags)': names like 'AMD EPYC' cover Zen 4 and Zen 5
    alike, so benchmark results carry the family and model too."""
    info = _cpuinfo()
    flags = [f for f in ("amx_int8", "amx_bf16", "avx512_bf16", "avx512_vnni", "avx_vnni") if f in info["flags"]]
    return (f"{info['model_name'] or 'unknown'} (family {info['family'] or '?'} model {info['model'] or '?'}; "
            f"{' '.join(flags)})")


def machine_peak(clock_ghz: float | None = None, cores: int | None = None) -> dict:
    """Peak multiply-accumulate rates of this machine: ``cores x clock x MAC/cycle/core`` per data type.

    The clock is the ``cpu MHz`` of /proc/cpuinfo unless ``clock_ghz`` is given (in a VM that is usually the nominal
    clock; a core that boosts runs faster, so the real peak can be higher). Cores are the CPUs this process may run
    on. MAC/cycle/core come from :data:`MACS_PER_CYCLE` when the CPU has AVX-512 VNNI (for int8) / AVX-512 BF16 (for
    bf16); without them the int8/bf16 figures fall back to what 512-bit FP32 FMA gives.
    """
    cpu = _cpuinfo()
    if cores is None:
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - not Linux
            cores = os.cpu_count() or 1
    source = "argument"
    if clock_ghz is None:
        clock_ghz = (cpu["mhz"] or 0.0) / 1000.0 or None
        source = "/proc/cpuinfo cpu MHz"
    flags = cpu["flags"]
    per_cycle = dict(MACS_PER_CYCLE)
    if "avx512_vnni" not in flags:
        per_cycle["int8"] = per_cycle["fp32"]
    if "avx512_bf16" not in flags:
        per_cycle["bf16"] = per_cycle["fp32"]
    peaks = {k: (cores * clock_ghz * v if clock_ghz else None) for k, v in per_cycle.items()}
    return {
        "cpu": cpu["model_name"],
        "cores": cores,
        "clock_ghz": clock_ghz,
        "clock_source": source,
        "macs_per_cycle_per_core": per_cycle,
        "peak_gmacs": peaks,
        "formula": "cores x clock_ghz x macs_per_cycle_per_core (int8: 2 x 512-bit VPDPBUSD/cycle = 128; "
                   "bf16: 2 x VDPBF16PS = 64; fp32: 2 x FMA = 32)",
    }


def count_macs(model) -> float:
    """Multiply-accumulates (in GMAC) of the MatMul / convolution nodes of an ``ov.Model`` with static shapes."""
    total = 0
    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        if kind not in ("MatMul", "Convolution", "GroupConvolution", "ConvolutionBackpropData",
                        "GroupConvolutionBackpropData"):
            continue
        out = math.prod(op.get_output_partial_shape(0).to_shape())
        if kind == "MatMul":
            a = list(op.get_input_partial_shape(0).to_shape())
            inner = a[-2] if op.get_attributes().get("transpose_a") else a[-1]
            total += out * inner
        elif kind == "Convolution":  # weights (Cout, Cin, kh, kw)
            total += out * math.prod(op.get_input_partial_shape(1).to_shape()[1:])
        elif kind == "GroupConvolution":  # weights (G, Cout/G, Cin/G, kh, kw)
            total += out * math.prod(op.get_input_partial_shape(1).to_shape()[2:])
        else:  # transposed convolution: every input element meets Cout x kh x kw weights
            inp = math.prod(op.get_input_partial_shape(0).to_shape())
            total += inp * math.prod(op.get_input_partial_shape(1).to_shape()[1:])
    return total / 1e9


def model_gmacs(encoder_xml, decoder_xml, boxes=(1, 8)) -> dict:
    """{"encoder": GMAC, "decoder_<b>": GMAC for each box count}, counted on the IR (fallback: fixed numbers)."""
    return dict(_model_gmacs(str(encoder_xml), str(decoder_xml), tuple(int(b) for b in boxes)))


@functools.lru_cache(maxsize=8)
def _model_gmacs(encoder_xml: str, decoder_xml: str, boxes: tuple) -> dict:
    try:
        from .runtime import core

        ov_core = core()
        out = {"encoder": count_macs(ov_core.read_model(str(encoder_xml)))}
        for b in boxes:
            dec = ov_core.read_model(str(decoder_xml))
            shapes = {}
            for port in dec.inputs:
                rank = port.get_partial_shape().rank.get_length()
                shapes[port] = [b, 4] if rank == 2 else [1, 256, 64, 64]
            dec.reshape(shapes)
            out[f"decoder_{b}"] = count_macs(dec)
        return out
    except Exception:  # noqa: BLE001 - counting is informative only
        return {k: v for k, v in FALLBACK_GMAC.items() if k == "encoder" or int(k.split("_")[1]) in boxes}


def _test_image(size: int = 256) -> np.ndarray:
    """A deterministic, image-like 1x3xSxS float32 input in [0, 1] (smooth blobs + texture, padded corner)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = 0.5 + 0.25 * np.sin(9 * x + 3 * y) * np.cos(7 * y)
    for cx, cy, r, v in ((0.3, 0.35, 0.12, 0.9), (0.65, 0.5, 0.18, 0.2), (0.5, 0.75, 0.08, 1.0)):
        img = np.where((x - cx) ** 2 + (y - cy) ** 2 < r * r, v, img)
    img += 0.03 * np.random.default_rng(0).standard_normal(img.shape).astype(np.float32)
    img[:, int(size * 0.85):] = 0.0  # the zero padding of a non-square image
    img = (img - img.min()) / (img.max() - img.min())
    return np.ascontiguousarray(np.repeat(img[None, None], 3, axis=1), dtype=np.float32)


def _test_boxes(n: int) -> np.ndarray:
    base = np.array([[40, 50, 120, 130], [120, 90, 210, 170], [100, 160, 150, 220], [10, 10, 240, 240]], np.float32)
    reps = -(-n // len(base))
    boxes = np.tile(base, (reps, 1))[:n].copy()
    boxes += np.arange(n, dtype=np.float32)[:, None] % 3  # not all identical
    return boxes


def _pct(values, q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


class _Variant:
    """One compiled (precision, threads) pair with one infer request per task; the decoder is compiled with a static
    box count per batch size, as the product runs it (a dynamic box dimension adds Broadcast work and memory)."""

    def __init__(self, precision: str, threads: int, model_dir, cache_dir, boxes) -> None:
        self.precision = precision
        self.threads = threads
        options = RuntimeOptions(precision=precision, threads=threads, cache_dir=cache_dir)
        self.models = resolve_models(options.variant, model_dir, verify=False)
        runtime = Runtime(options)
        t0 = time.perf_counter()
        self.encoder = runtime.compile(self.models.encoder_xml)
        self.decoders = {b: runtime.compile(self.models.decoder_for(runtime.execution_precision), {"boxes": [b, 4]},
                                            properties=runtime.decoder_properties()) for b in boxes}
        self.compile_s = time.perf_counter() - t0
        self.enc_request = self.encoder.create_infer_request()
        self.dec_requests = {b: d.create_infer_request() for b, d in self.decoders.items()}
        names = {p.get_any_name() for p in next(iter(self.decoders.values())).inputs}
        self.emb_key = "embedding" if "embedding" in names else 0
        self.box_key = "boxes" if "boxes" in names else 1
        self.execution = self._execution_precision()

    def _execution_precision(self) -> str:
        try:
            value = self.encoder.get_property("INFERENCE_PRECISION_HINT")
            return value.to_string() if hasattr(value, "to_string") else str(value)
        except Exception:  # noqa: BLE001
            return "unknown"

    def encode(self, image: np.ndarray) -> None:
        self.enc_request.infer({0: image}, share_inputs=True)

    def decode(self, embedding: np.ndarray, boxes: np.ndarray) -> None:
        self.dec_requests[len(boxes)].infer({self.emb_key: embedding, self.box_key: boxes}, share_inputs=True)

    def embedding(self, image: np.ndarray) -> np.ndarray:
        self.encode(image)
        return np.array(self.enc_request.get_output_tensor(0).data, dtype=np.float32, copy=True)

    def logits(self, embedding: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        self.decode(embedding, boxes)
        req = self.dec_requests[len(boxes)]
        decoder = self.decoders[len(boxes)]
        out = {o.get_any_name(): o for o in decoder.outputs}
        port = out.get("low_res_logits", decoder.outputs[0])
        return np.array(req.get_tensor(port).data, dtype=np.float32, copy=True)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def bench_models(
    precisions=("fp32", "bf16", "int8"),
    threads=(1, 2),
    repeats: int = 30,
    warmup: int = 5,
    *,
    boxes=(1, 8),
    model_dir=None,
    cache_dir=DEFAULT,
    clock_ghz: float | None = None,
    check: bool = True,
    progress=None,
) -> list[dict]:
    """Time encoder and decoder of every (precision, threads) variant; one record per (variant, part).

    Args:
        precisions: any of "fp32", "bf16", "int8". A precision whose model files are missing (e.g. the int8 files
            before they are built) yields one record with ``"skipped"`` set to the reason instead of numbers.
        threads: thread counts (``INFERENCE_NUM_THREADS``) to compile each precision with.
        repeats: timed rounds (each round times every variant and part once, round-robin).
        warmup: discarded rounds before the timed ones.
        boxes: decoder batch sizes to time.
        model_dir: IR folder (default: the shipped models); cache_dir: OpenVINO compiled-model cache (DEFAULT: the
            user cache, like Segmenter; None: no cache).
        clock_ghz: override the clock used for the peak (default: /proc/cpuinfo).
        check: compare each variant's outputs with fp32 (embedding relative L2 error, decoder mask Dice).
        progress: optional callable(str) for status lines.

    Returns:
        records with keys ``precision, threads, part ("encoder"/"decoder"), boxes, execution_precision, n,
        median_ms, p90_ms, mean_ms, min_ms, gmac, gmacs_per_s, pct_int8_peak, pct_own_peak, compile_s, loadavg_start,
        loadavg_end, machine`` (+ ``embedding_rel_err`` / ``mask_dice_vs_fp32`` when checked), or
        ``precision, threads, skipped``.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError("repeats must be >= 1 and warmup >= 0")
    for p in precisions:
        if p not in PRECISIONS:
            raise ValueError(f"unknown precision {p!r}; expected one of {sorted(PRECISIONS)}")
    boxes = tuple(int(b) for b in boxes)
    cache = resolve_cache_dir(cache_dir)
    say = progress or (lambda _msg: None)
    peak = machine_peak(clock_ghz)
    load_start = _loadavg()

    variants: list[_Variant] = []
    skipped: dict[tuple[str, int], str] = {}
    for p in precisions:
        for t in threads:
            try:
                variants.append(_Variant(p, int(t), model_dir, cache, boxes))
                say(f"compiled {p} x{t} threads in {variants[-1].compile_s:.1f} s")
            except (ModelFileError, MedsamEdgeError) as exc:
                first = str(exc).splitlines()[0]
                say(f"skipping {p} x{t}: {first}")
                skipped[(p, int(t))] = first
    if not variants:
        return [{"precision": p, "threads": t, "skipped": why} for (p, t), why in skipped.items()]

    gmacs = model_gmacs(variants[0].models.encoder_xml, variants[0].models.decoder_xml, boxes)
    image = _test_image()
    batch = {b: _test_boxes(b) for b in boxes}
    ref = next((v for v in variants if v.precision == "fp32"), variants[0])
    ref_emb = ref.embedding(image)

    # tasks: (variant index, part, boxes); timings per task
    tasks = [(i, "encoder", None) for i in range(len(variants))]
    tasks += [(i, "decoder", b) for i in range(len(variants)) for b in boxes]
    times: dict[int, list[float]] = {k: [] for k in range(len(tasks))}
    order = list(range(len(tasks)))
    for rnd in range(warmup + repeats):
        shift = rnd % len(order)
        for k in order[shift:] + order[:shift]:
            i, part, b = tasks[k]
            v = variants[i]
            t0 = time.perf_counter()
            if part == "encoder":
                v.encode(image)
            else:
                v.decode(ref_emb, batch[b])
            dt = time.perf_counter() - t0
            if rnd >= warmup:
                times[k].append(dt)
        if rnd == warmup - 1 or (rnd >= warmup and (rnd - warmup + 1) % 10 == 0):
            say(f"round {rnd + 1}/{warmup + repeats}")
    load_end = _loadavg()

    checks: dict[int, dict] = {}
    if check:
        ref_masks = {b: ref.logits(ref_emb, batch[b]) > 0 for b in boxes}
        for i, v in enumerate(variants):
            emb = v.embedding(image)
            err = float(np.linalg.norm(emb - ref_emb) / max(np.linalg.norm(ref_emb), 1e-12))
            dices = {b: _dice(v.logits(ref_emb, batch[b]) > 0, ref_masks[b]) for b in boxes}
            checks[i] = {"embedding_rel_err": round(err, 5),
                         "mask_dice_vs_fp32": {str(b): round(d, 5) for b, d in dices.items()}}

    int8_peak = peak["peak_gmacs"]["int8"]
    measured: dict[tuple[str, int], list[dict]] = {}
    for k, (i, part, b) in enumerate(tasks):
        v = variants[i]
        ms = np.asarray(times[k]) * 1e3
        gmac = gmacs["encoder"] if part == "encoder" else gmacs.get(f"decoder_{b}", float("nan"))
        med = float(np.median(ms))
        rate = gmac / (med / 1e3)
        own_peak = peak["peak_gmacs"].get(v.precision)
        rec = {
            "precision": v.precision,
            "threads": v.threads,
            "part": part,
            "boxes": b,
            "execution_precision": v.execution,
            "n": int(ms.size),
            "median_ms": round(med, 3),
            "p90_ms": round(_pct(ms, 90), 3),
            "mean_ms": round(float(ms.mean()), 3),
            "min_ms": round(float(ms.min()), 3),
            "gmac": round(gmac, 3),
            "gmacs_per_s": round(rate, 1),
            "pct_int8_peak": round(100.0 * rate / int8_peak, 1) if int8_peak else None,
            "pct_own_peak": round(100.0 * rate / own_peak, 1) if own_peak else None,
            "compile_s": round(v.compile_s, 2),
            "loadavg_start": load_start,
            "loadavg_end": load_end,
            "machine": peak,
        }
        if i in checks:
            rec["embedding_rel_err"] = checks[i]["embedding_rel_err"]
            rec["mask_dice_vs_fp32"] = checks[i]["mask_dice_vs_fp32"].get(str(b)) if b else None
        measured.setdefault((v.precision, v.threads), []).append(rec)
    records: list[dict] = []
    for p in precisions:  # the requested order, skipped variants in place
        for t in threads:
            if (p, int(t)) in skipped:
                records.append({"precision": p, "threads": int(t), "skipped": skipped[(p, int(t))]})
            else:
                records.extend(measured.get((p, int(t)), []))
    return records


def op_profile(precision: str = "int8", threads: int | None = None, part: str = "encoder", boxes: int = 8,
               repeats: int = 5, *, model_dir=None, top: int = 12) -> dict:
    """Where one model spends its time, from OpenVINO's per-node performance counters (``PERF_COUNT``).

    Returns ``{"precision", "threads", "part", "boxes", "total_ms", "by_type": [{"type", "ms", "pct"}...],
    "by_kernel": [{"type", "kernel", "ms", "pct"}...]}``: times of executed nodes summed per node type (after OpenVINO's
    fusions: "Subgraph" is a fused element-wise block, "Reorder" a layout conversion) and per (type, kernel), averaged
    over ``repeats`` inferences after one warm-up. Counters add some overhead; use the shares, not the total.
    """
    ov = openvino()

    options = RuntimeOptions(precision=precision, threads=threads, cache_dir=None)
    pair = resolve_models(options.variant, model_dir, verify=False)
    runtime = Runtime(options)
    props = runtime.compile_properties(runtime.decoder_properties() if part == "decoder" else None)
    props["PERF_COUNT"] = True
    from .runtime import core

    if part == "encoder":
        compiled = core().compile_model(str(pair.encoder_xml), "CPU", props)
    else:  # a static box count, as the product compiles it
        model = core().read_model(str(pair.decoder_for(runtime.execution_precision)))
        model.reshape({"boxes": [boxes, 4]})
        compiled = core().compile_model(model, "CPU", props)
    request = compiled.create_infer_request()
    image = _test_image()
    if part == "encoder":
        inputs = {0: image}
    else:
        enc = core().compile_model(str(pair.encoder_xml), "CPU", Runtime(options).compile_properties())
        emb_request = enc.create_infer_request()
        emb_request.infer({0: image})
        embedding = np.array(emb_request.get_output_tensor(0).data, copy=True)
        names = {port.get_any_name() for port in compiled.inputs}
        inputs = {("embedding" if "embedding" in names else 0): embedding,
                  ("boxes" if "boxes" in names else 1): _test_boxes(boxes)}
    request.infer(inputs)
    by_type: dict[str, float] = {}
    by_kernel: dict[tuple[str, str], float] = {}
    for _ in range(repeats):
        request.infer(inputs)
        for info in request.profiling_info:
            if info.status != ov.ProfilingInfo.Status.EXECUTED:
                continue
            ms = info.real_time.total_seconds() * 1e3 / repeats
            by_type[info.node_type] = by_type.get(info.node_type, 0.0) + ms
            key = (info.node_type, info.exec_type)
            by_kernel[key] = by_kernel.get(key, 0.0) + ms
    total = sum(by_type.values()) or 1.0
    return {
        "precision": precision, "threads": threads, "part": part, "boxes": boxes if part == "decoder" else None,
        "total_ms": round(total, 2),
        "by_type": [{"type": k, "ms": round(v, 2), "pct": round(100 * v / total, 1)}
                    for k, v in sorted(by_type.items(), key=lambda kv: -kv[1])[:top]],
        "by_kernel": [{"type": k[0], "kernel": k[1], "ms": round(v, 2), "pct": round(100 * v / total, 1)}
                      for k, v in sorted(by_kernel.items(), key=lambda kv: -kv[1])[:top]],
        "loadavg": _loadavg(),
    }


def format_table(records: list[dict]) -> str:
    """A Markdown table of :func:`bench_models` records."""
    head = ("| precision | threads | part | median ms | p90 ms | GMAC | GMAC/s | % int8 peak | % own peak | check |\n"
            "|---|---|---|---|---|---|---|---|---|---|")
    rows = [head]
    for r in records:
        if "skipped" in r:
            rows.append(f"| {r['precision']} | {r['threads']} | (skipped: {r['skipped'][:80]}) |  |  |  |  |  |  |  |")
            continue
        part = r["part"] if r["part"] == "encoder" else f"decoder x{r['boxes']}"
        if r["part"] == "encoder":
            chk = f"emb err {r['embedding_rel_err']:.3f}" if "embedding_rel_err" in r else ""
        else:
            chk = f"mask DSC {r['mask_dice_vs_fp32']:.3f}" if r.get("mask_dice_vs_fp32") is not None else ""
        rows.append(
            f"| {r['precision']} ({r['execution_precision']}) | {r['threads']} | {part} | {r['median_ms']:.1f} | "
            f"{r['p90_ms']:.1f} | {r['gmac']:.2f} | {r['gmacs_per_s']:.0f} | {r['pct_int8_peak']} | "
            f"{r['pct_own_peak']} | {chk} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="medsam-edge bench", description="Encoder/decoder latency per precision and "
                                "thread count (round-robin interleaved; median and p90 after warm-up).")
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "int8"], choices=sorted(PRECISIONS))
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--boxes", nargs="+", type=int, default=[1, 8], help="decoder batch sizes")
    p.add_argument("--clock-ghz", type=float, help="clock for the peak (default: /proc/cpuinfo cpu MHz)")
    p.add_argument("--json", type=Path, help="write the JSON ({'records': [...], 'profiles': [...]}) to this file "
                   "instead of printing it")
    p.add_argument("--profile", action="store_true",
                   help="also print per-op-type time shares (OpenVINO PERF_COUNT) of encoder and 8-box decoder at "
                        "each precision with the largest thread count")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    args = p.parse_args(argv)
    say = None if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    records = bench_models(tuple(args.precisions), tuple(args.threads), args.repeats, args.warmup,
                           boxes=tuple(args.boxes), clock_ghz=args.clock_ghz, progress=say)
    print(format_table(records))
    machine = next((r["machine"] for r in records if "machine" in r), None)
    if machine:
        peaks = ", ".join(f"{k} {v:.0f}" for k, v in machine["peak_gmacs"].items() if v)
        print(f"\npeak GMAC/s ({machine['formula']}; {machine['cores']} cores x {machine['clock_ghz']} GHz from "
              f"{machine['clock_source']}): {peaks}")
    profiles = []
    if args.profile:
        for prec in args.precisions:
            for part in ("encoder", "decoder"):
                try:
                    prof = op_profile(prec, max(args.threads), part, max(args.boxes))
                except MedsamEdgeError as exc:
                    print(f"\nprofile {prec} {part}: skipped ({str(exc).splitlines()[0]})")
                    continue
                profiles.append(prof)
                shares = ", ".join(f"{r['type']} {r['pct']}%" for r in prof["by_type"][:8])
                print(f"\nprofile {prec} {part}{' x' + str(prof['boxes']) if prof['boxes'] else ''} "
                      f"({prof['threads']} threads, {prof['total_ms']} ms): {shares}")
    text = json.dumps({"records": records, "profiles": profiles}, indent=1)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
        print(f"JSON written to {args.json}")
    else:
        print(text)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
