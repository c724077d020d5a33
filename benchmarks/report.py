"""Turn ``results/models.json`` + ``results/pipeline.json`` into ``RESULTS.md`` and ``accuracy_vs_time.png``.

``python benchmarks/report.py [--results benchmarks/results]`` (``run_all.py`` calls :func:`write_report`).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from medsam_edge.bench import format_table

SHORT = {"official": "(a) official torch", "simple_ov": "(b) simple OV fp32", "default": "(c) default",
         "reference": "(d) reference", "default_slicewise": "(e) default slicewise",
         "reference_slicewise": "(f) reference slicewise", "int8": "(g) int8", "int8_slicewise": "(h) int8 slicewise"}
ORDER = list(SHORT)

#: the targets of issues 5 and 16 (issue 16 raised the aim over (a) from 15x to 20x)
TARGET_SPEEDUP_A = 20.0
TARGET_DSC_POINTS = 0.5
TARGET_SPEEDUP_B = 2.5
TARGET_COLD_S = 0.3
TARGET_RSS_MB = 300.0


def _f(v, digits=3, empty="-"):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return empty
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _keys(d: dict) -> list[str]:
    return [k for k in ORDER if k in d]


def pipeline_totals_md(summary: dict, group: str, title: str) -> list[str]:
    g = summary.get(group)
    if not g:
        return []
    has_a = "official" in g and "speedup_vs_official" in g["official"]
    head = "| pipeline | cases | time s | CPU s | DSC | NSD |"
    sep = "|---|---|---|---|---|---|"
    if has_a:
        head += " x faster than (a) | DSC - (a), points | NSD - (a), points |"
        sep += "---|---|---|"
    if "simple_ov" in g:
        head += " x faster than (b) |"
        sep += "---|"
    lines = [f"**{title}**", "", head, sep]
    for k in _keys(g):
        v = g[k]
        name = SHORT[k] + (f" (= {SHORT[v['alias_of']].split(' ')[0]}, same configuration, not run twice)"
                           if v.get("alias_of") else "")
        row = f"| {name} | {v['cases']} | {v['time_s']:.2f} | {v['cpu_s']:.1f} | {v['mean_dsc']:.4f} | {v['mean_nsd']:.4f} |"
        if has_a:
            row += f" {_f(v.get('speedup_vs_official'), 2)} | {_f(v.get('dsc_minus_official_points'), 2)} | " \
                   f"{_f(v.get('nsd_minus_official_points'), 2)} |"
        if "simple_ov" in g:
            row += f" {_f(v.get('speedup_vs_simple_ov'), 2)} |"
        lines.append(row)
    return lines + [""]


def per_case_md(cases: list[dict]) -> list[str]:
    keys = [k for k in ORDER if any(k in c["results"] for c in cases)]
    lines = ["| case | shape | boxes | slice x box | load | " + " | ".join(SHORT[k] for k in keys) + " |",
             "|---|---|---|---|---|" + "---|" * len(keys)]
    for c in cases:
        cells = []
        for k in keys:
            r = c["results"].get(k)
            if r is not None and r.get("alias_of"):
                cells.append(f"= {SHORT[r['alias_of']].split(' ')[0]}")
            else:
                cells.append("" if r is None else f"{r['time_s']:.2f} s / {r['dsc']:.3f} / {r['nsd']:.3f}")
        load = c["loadavg"][0] if c.get("loadavg") else ""
        lines.append(f"| {c['case']} | {'x'.join(map(str, c['shape']))} | {c['n_boxes']} | {c['slice_box_pairs']} | "
                     f"{load} | " + " | ".join(cells) + " |")
    return lines + ["", "(cells: wall time / DSC / NSD)", ""]


def agreement_md(cases: list[dict]) -> list[str]:
    pairs = sorted({p for c in cases for p in c.get("agreement", {})})
    if not pairs:
        return []
    lines = ["| case | " + " | ".join(p.replace("_vs_", " vs ") + " (mean / min)" for p in pairs) + " |",
             "|---|" + "---|" * len(pairs)]
    for c in cases:
        ag = c.get("agreement", {})
        if not ag:
            continue
        cells = [f"{_f(ag[p]['mean'], 4)} / {_f(ag[p]['min'], 4)}" if p in ag else "" for p in pairs]
        lines.append(f"| {c['case']} | " + " | ".join(cells) + " |")
    return lines + [""]


def strategy_md(strategy: dict) -> list[str]:
    if not strategy:
        return ["(propagate vs slicewise: not measured; the int8 model files were missing)", ""]
    lines = []
    for name, row in strategy.items():
        lines += [f"**{name}**", "", "| case | propagate DSC / NSD / s | slicewise DSC / NSD / s |", "|---|---|---|"]
        for case, c in row["cases"].items():
            p, s = c["propagate"], c["slicewise"]
            lines.append(f"| {case} | {p['dsc']:.4f} / {p['nsd']:.4f} / {p['time_s']:.2f} | "
                         f"{s['dsc']:.4f} / {s['nsd']:.4f} / {s['time_s']:.2f} |")
        p, s = row["propagate"], row["slicewise"]
        lines.append(f"| **mean / total** | **{p['mean_dsc']:.4f} / {p['mean_nsd']:.4f} / {p['time_s']:.2f}** | "
                     f"**{s['mean_dsc']:.4f} / {s['mean_nsd']:.4f} / {s['time_s']:.2f}** |")
        lines += ["", f"slicewise has the higher DSC on {row['slicewise_wins_dsc']} of {len(row['cases'])} cases.", ""]
    return lines


def stages_md(stages: dict | None, title: str) -> list[str]:
    if not stages:
        return []
    lines = [f"**{title}** (total {stages['total_s']:.2f} s" +
             (f", {stages['encoded_slices']} slice encodings" if "encoded_slices" in stages else "") + ")", "",
             "| stage | s | calls | % |", "|---|---|---|---|"]
    for name, v in stages["stages"].items():
        lines.append(f"| {name} | {v['s']:.3f} | {_f(v['calls'])} | {_f(v['pct'], 1)} |")
    return lines + [""]


def coldstart_md(cold: dict | None) -> list[str]:
    if not cold:
        return []
    if "precision" in cold:  # one precision (older layout)
        cold = {cold["precision"]: cold}
    lines = []
    for precision, res in cold.items():
        tag = " (the default)" if res.get("is_default") else ""
        lines += [f"**`Segmenter(precision={precision!r})`{tag}**: fresh interpreter, `import medsam_edge`, construction "
                  f"with `cache_dir=`, first call on a {'x'.join(map(str, res['image_shape']))} image with "
                  f"{res['n_boxes']} boxes; medians of {len(res['empty_cache']['runs'])} runs with an empty cache dir "
                  f"and {len(res['warm_cache']['runs'])} with a warm one (cache {res['cache_bytes'] / 1e6:.1f} MB).", "",
                  "| cache | import s | construct s | first call s | import+construct s | "
                  "import+construct+first call s | whole process s (incl. interpreter) | second call s |",
                  "|---|---|---|---|---|---|---|---|"]
        for name in ("empty_cache", "warm_cache"):
            m = res[name]["median"]
            lines.append(f"| {name.replace('_', ' ')} | {m['import_s']:.3f} | {m['construct_s']:.3f} | "
                         f"{m['first_call_s']:.3f} | {m['ready_s']:.3f} | {m['total_s']:.3f} | "
                         f"{m['process_wall_s']:.3f} | {m['second_call_s']:.3f} |")
        m = res["warm_cache"]["median"]
        lines += ["", f"(the sha256 check of the model files is {m['verify_sha256_s']:.3f} s of the construct time)",
                  ""]
    return lines


def rss_md(rss: dict | None) -> list[str]:
    if not rss:
        return []
    vol = rss["volume"]
    lines = [f"Volume {'x'.join(map(str, vol['shape']))} {vol['dtype']} ({vol['note']}), boxes "
             f"{vol['boxes']}; one fresh process per pipeline.", "",
             "| pipeline | peak RSS MB | polled VmRSS MB | VmHWM MB | ru_maxrss MB | after import+build MB | "
             "+ volume MB | after run MB | run s | voxels per label (phantom truth "
             + ", ".join(map(str, vol["gt_voxels"])) + ") | note |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, target in (rss.get("aliases") or {}).items():
        lines.append(f"| {SHORT[key]} | = {SHORT[target]} (same configuration) | | | | | | | | | |")
    for key in _keys(rss["runs"]):
        r = rss["runs"][key]
        if "error" in r:
            lines.append(f"| {SHORT[key]} | failed: {r['error'][:100]} | | | | | | | | | |")
            continue
        marks = r["rss_marks_mb"]
        lines.append(f"| {SHORT[key]} | **{r['peak_rss_mb']}** | {r.get('sampled_peak_mb')} | {r.get('vmhwm_mb')} | "
                     f"{r['ru_maxrss_mb']} | {marks['pipeline_ready'].get('VmRSS')} | "
                     f"{marks['volume_loaded'].get('VmRSS')} | {marks['after_run'].get('VmRSS')} | "
                     f"{r['run_s']} | {', '.join(map(str, r['label_voxels']))} | {r.get('note', '')} |")
    return lines + ["", "Peak RSS: the largest of the child's VmRSS polled every 10 ms by the parent, its VmHWM and its "
                    "ru_maxrss (the latter only when above the parent's own peak, which Linux children inherit)."
                    " 'after import+build': the pipeline object constructed (models compiled, torch imported for "
                    "(a)); '+ volume': the 52 MB volume loaded.", ""]


def targets_md(pipe: dict) -> list[str]:
    lines = ["| target | pipeline | measured | met? |", "|---|---|---|---|"]
    summ = pipe.get("summary", {})
    sub = summ.get("official_subset", {})
    allg = summ.get("all", {})
    est = summ.get("official_estimate_all")
    default_prec = (pipe.get("meta", {}).get("default_config") or ["?"])[0]
    for key in ("default", "int8"):
        name = f"{SHORT[key]} ({default_prec})" if key == "default" else SHORT[key]
        if key in sub and "speedup_vs_official" in sub[key]:
            sp, dd = sub[key]["speedup_vs_official"], sub[key]["dsc_minus_official_points"]
            lines.append(f"| >= {TARGET_SPEEDUP_A:g}x faster than (a), cases (a) ran on | {name} | {sp:.2f}x | "
                         f"{'yes' if sp >= TARGET_SPEEDUP_A else 'no'} |")
            sub3 = summ.get("official_subset_3D", {}).get(key)
            if sub3 and "speedup_vs_official" in sub3:
                lines.append(f"| (same, 3D cases (a) ran on) | {name} | {sub3['speedup_vs_official']:.2f}x | "
                             f"{'yes' if sub3['speedup_vs_official'] >= TARGET_SPEEDUP_A else 'no'} |")
            if est and key in allg:
                ratio = est["time_s"] / allg[key]["time_s"]
                lines.append(f"| (same, all cases; (a) estimated where not run) | {name} | {ratio:.1f}x (estimate) | "
                             f"{'yes' if ratio >= TARGET_SPEEDUP_A else 'no'} |")
            lines.append(f"| DSC within {TARGET_DSC_POINTS} points of (a), cases (a) ran on | {name} | {dd:+.2f} points | "
                         f"{'yes' if dd >= -TARGET_DSC_POINTS else 'no'} |")
            if sub3 and "dsc_minus_official_points" in sub3:
                d3 = sub3["dsc_minus_official_points"]
                lines.append(f"| (same, 3D cases (a) ran on) | {name} | {d3:+.2f} points | "
                             f"{'yes' if d3 >= -TARGET_DSC_POINTS else 'no'} |")
        if key in allg and "simple_ov" in allg and allg[key].get("speedup_vs_simple_ov"):
            sp = allg[key]["speedup_vs_simple_ov"]
            lines.append(f"| >= {TARGET_SPEEDUP_B:g}x faster than (b), all cases | {name} | {sp:.2f}x | "
                         f"{'yes' if sp >= TARGET_SPEEDUP_B else 'no'} |")
    cold = pipe.get("coldstart") or {}
    if "precision" in cold:
        cold = {cold["precision"]: cold}
    for precision, res in cold.items():
        m = res["warm_cache"]["median"]
        lines.append(f"| cold start from cache <= {TARGET_COLD_S} s | `Segmenter(precision={precision!r})` | "
                     f"import+construct {m['ready_s']:.3f} s; + first call {m['total_s']:.3f} s | "
                     f"{'yes' if m['ready_s'] <= TARGET_COLD_S else 'no'} / "
                     f"{'yes' if m['total_s'] <= TARGET_COLD_S else 'no'} |")
    runs = (pipe.get("rss") or {}).get("runs", {})
    aliases = (pipe.get("rss") or {}).get("aliases", {})
    for key in ("default", "int8"):
        r = runs.get(aliases.get(key, key))
        if r and "error" not in r:
            name = f"{SHORT[key]} ({default_prec})" if key == "default" else SHORT[key]
            lines.append(f"| peak RSS <= {TARGET_RSS_MB:g} MB on 512x512x200 | {name} | {r['peak_rss_mb']} MB | "
                         f"{'yes' if r['peak_rss_mb'] <= TARGET_RSS_MB else 'no'} |")
    return lines + [""]


def make_chart(pipe: dict, path: Path) -> Path | None:
    """Accuracy vs total time per pipeline: left on the cases (a) ran on, right on every 3D dev case."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print('matplotlib missing: pip install -e ".[bench]" for the chart', file=sys.stderr)
        return None
    summ = pipe.get("summary", {})
    panels = []
    for group, title in (("official_subset", "cases the official pipeline (a) ran on"), ("3D", "all 3D dev cases")):
        g = summ.get(group)
        if not g:
            continue
        n = max(v["cases"] for v in g.values())
        # a pipeline missing cases is not comparable; an alias would hide the point it copies
        complete = {k: v for k, v in g.items() if v["cases"] == n and not v.get("alias_of")}
        if complete:
            panels.append((title, n, complete, g))
    if not panels:
        return None
    colours = {"official": "#d62728", "simple_ov": "#ff7f0e", "default": "#1f77b4", "reference": "#2ca02c",
               "default_slicewise": "#17becf", "reference_slicewise": "#8c564b", "int8": "#9467bd",
               "int8_slicewise": "#e377c2"}
    fig, axes = plt.subplots(1, len(panels), figsize=(7.0 * len(panels), 5.6), squeeze=False)
    for ax, (title, n, g, g_all) in zip(axes[0], panels, strict=True):
        keys = _keys(g)
        for j, k in enumerate(keys):
            v = g[k]
            speed = f", {v['speedup_vs_official']:.1f}x faster than (a)" \
                if v.get("speedup_vs_official") and k != "official" else ""
            same = [SHORT[a].split(" ")[0] for a, w in g_all.items() if w.get("alias_of") == k]
            name = SHORT[k] + (" = " + " = ".join(same) if same else "")
            ax.scatter(v["time_s"], v["mean_dsc"], s=110, color=colours[k], marker="o", zorder=3,
                       label=f"{name}: {v['time_s']:.1f} s{speed}; DSC {v['mean_dsc']:.3f}, NSD {v['mean_nsd']:.3f}")
            ax.scatter(v["time_s"], v["mean_nsd"], s=80, facecolors="none", edgecolors=colours[k], marker="s",
                       linewidths=1.8, zorder=3)
            dy = 10 if j % 2 == 0 else -16
            ax.annotate(SHORT[k].split(" ")[0], (v["time_s"], v["mean_dsc"]), textcoords="offset points",
                        xytext=(7, dy), fontsize=10, color=colours[k], fontweight="bold")
        ax.set_xscale("log")
        times = [g[k]["time_s"] for k in keys]
        ax.set_xlim(min(times) / 1.6, max(times) * 1.6)
        ax.set_xlabel("total wall time over these cases, s (log scale; left is faster)")
        ax.set_ylabel("mean DSC (filled circles) / mean NSD (open squares)")
        ax.set_title(f"{title} ({n} cases)", fontsize=11)
        ax.grid(True, which="both", alpha=0.3)
        lo = min(min(g[k]["mean_dsc"], g[k]["mean_nsd"]) for k in keys)
        hi = max(max(g[k]["mean_dsc"], g[k]["mean_nsd"]) for k in keys)
        span = max(hi - lo, 0.05)
        ax.set_ylim(max(0.0, lo - 0.9 * span), min(1.02, hi + 0.15 * span))
        ax.legend(fontsize=8, loc="lower left", framealpha=0.9)
    meta = pipe.get("meta", {})
    fig.suptitle(f"LiteMedSAM pipelines on the dev set: accuracy vs time (2-core CPU; 1-min load average "
                 f"{meta.get('loadavg_start', ['?'])[0]} at start, {meta.get('loadavg_end', ['?'])[0]} at end)",
                 fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(results: Path, run_info: dict | None = None) -> Path:
    models = json.loads((results / "models.json").read_text()) if (results / "models.json").is_file() else []
    profiles = []
    if isinstance(models, dict):
        models, profiles = models.get("records", []), models.get("profiles", [])
    pipe = json.loads((results / "pipeline.json").read_text()) if (results / "pipeline.json").is_file() else {}
    extra = json.loads((results / "pipeline_memory.json").read_text()) \
        if (results / "pipeline_memory.json").is_file() else {}
    for key in ("coldstart", "rss"):
        if key in extra:
            pipe[key] = extra[key]
    pipe.setdefault("skipped", {}).update(extra.get("skipped", {}))
    for group in (pipe.get("summary") or {}).values():  # mark aliases in the totals (older pipeline.json lack it)
        if isinstance(group, dict):
            for key, target in (pipe.get("aliases") or {}).items():
                if isinstance(group.get(key), dict):
                    group[key]["alias_of"] = target
    meta = pipe.get("meta", {})
    machine = next((r["machine"] for r in models if "machine" in r), None)
    out = ["# medsam_edge benchmark results", ""]
    if run_info:
        out += [f"`python benchmarks/run_all.py` on {run_info.get('date')}: **{run_info['wall_s'] / 60:.1f} min** "
                f"wall ({', '.join(f'{k} {v:.0f} s' for k, v in run_info['steps'].items())}); load average (1 min) "
                f"{run_info.get('loadavg_start')} at start, {run_info.get('loadavg_end')} at the end "
                f"(other jobs share this 2-core machine: compare ratios within one run, not absolute times).", ""]
    if machine:
        peaks = ", ".join(f"{k} {v:.0f}" for k, v in machine["peak_gmacs"].items() if v)
        out += [f"Machine: {machine['cpu']}, {machine['cores']} cores, clock {machine['clock_ghz']:.3f} GHz "
                f"({machine['clock_source']}). Peak GMAC/s = {machine['formula']}: {peaks}.", ""]
    versions = {k: meta[k] for k in ("python", "openvino", "torch", "medsam_edge", "kernels") if k in meta}
    if versions:
        out += ["Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".", ""]
    if pipe.get("skipped"):
        out += ["**Not measured:** " + "; ".join(f"{k}: {v}" for k, v in pipe["skipped"].items()), ""]

    out += ["## Targets", ""] + targets_md(pipe)
    out += ["## Model latency (`medsam_edge.bench.bench_models`)", "",
            "Raw OpenVINO infer requests, variants interleaved round-robin; median / p90 after warm-up. "
            "'% int8 peak': achieved GMAC/s over the machine's INT8 peak; '% own peak': over the peak of the "
            "variant's own data type. 'check': embedding relative L2 error / decoder mask Dice against fp32 on a test "
            "image.", ""]
    if models:
        ok = [r for r in models if "skipped" not in r]
        if ok:
            out += [f"load average {ok[0]['loadavg_start']} -> {ok[0]['loadavg_end']}, {ok[0]['n']} timed rounds", ""]
        out += [format_table(models), ""]
    if profiles:
        out += ["### Where the model time goes (OpenVINO per-node counters, shares of summed node time)", "",
                "| model | total ms | top node types (share) | top kernels |", "|---|---|---|---|"]
        for prof in profiles:
            name = f"{prof['precision']} {prof['part']}" + (f" x{prof['boxes']}" if prof.get("boxes") else "") + \
                f", {prof['threads']} threads"
            types = ", ".join(f"{r['type']} {r['pct']}%" for r in prof["by_type"][:7])
            kernels = ", ".join(f"{r['type']}/{r['kernel']} {r['pct']}%" for r in prof["by_kernel"][:4])
            out.append(f"| {name} | {prof['total_ms']} | {types} | {kernels} |")
        out += ["", "('Subgraph': fused element-wise blocks (GELU, add, scale, softmax parts); 'Reorder'/'Transpose': "
                "layout changes, e.g. TinyViT's window partitioning; 'FullyConnected': the transformer GEMMs.)", ""]
    if pipe.get("summary"):
        summ = pipe["summary"]
        out += ["## Pipelines on the dev set", "",
                f"(a) ran on: {', '.join(meta.get('official_cases', []))}.", ""]
        out += pipeline_totals_md(summ, "official_subset", "Cases the official pipeline ran on")
        out += pipeline_totals_md(summ, "official_subset_3D", "3D cases the official pipeline ran on")
        out += pipeline_totals_md(summ, "all", "All dev cases")
        out += pipeline_totals_md(summ, "2D", "2D cases")
        out += pipeline_totals_md(summ, "3D", "3D cases")
        est = summ.get("official_estimate_all")
        if est:
            out += [f"(a) on all cases, estimated: {est['time_s']:.0f} s ({est['s_per_slice_box_3d']:.3f} s per "
                    f"3D slice-box pair, measured; {est['note']}).", ""]
        out += ["### Per case", ""] + per_case_md(pipe["cases"])
        out += ["### Agreement between pipelines (per-label Dice of the label maps)", ""] + agreement_md(pipe["cases"])
        out += ["### 3D strategy: propagate vs slicewise", ""] + strategy_md(pipe.get("strategy_3d"))
    rss_runs = (pipe.get("rss") or {}).get("runs", {})
    if pipe.get("stages_3d") or any(r.get("stages") for r in rss_runs.values()):
        out += ["## Where the 3D time goes (stage profile of `segment_volume`)", "",
                "Encoder/decoder include the copy of their outputs; pre/post-processing and box-from-mask are the "
                f"{meta.get('kernels', '?')} kernels; 'other' is the Python slice loop (label merge, mask crops).", ""]
        for name, st in (pipe.get("stages_3d") or {}).items():
            out += stages_md(st, f"{name}, dev 3D cases, propagate")
        for key, r in rss_runs.items():
            if r.get("stages"):
                out += stages_md(r["stages"], f"{SHORT[key]}, synthetic 512x512x200 volume, 3 boxes x 61 slices, "
                                              "propagate")
    if pipe.get("coldstart"):
        out += ["## Cold start", ""] + coldstart_md(pipe["coldstart"])
    if pipe.get("rss"):
        out += ["## Peak memory", ""] + rss_md(pipe["rss"])
    overlap = json.loads((results / "overlap.json").read_text()) if (results / "overlap.json").is_file() else []
    if overlap:
        out += ["## Would two encoder streams pay? (`benchmarks/probe_overlap.py`)", "",
                "Encoder throughput: one LATENCY stream using every core (what Segmenter does) vs two single-thread "
                "streams fed by an AsyncInferQueue (two slices at once).", "",
                "| precision | latency mode ms/image | 2 streams ms/image | gain | max rel. diff of outputs | load |",
                "|---|---|---|---|---|---|"]
        for r in overlap:
            if "skipped" in r:
                out.append(f"| {r['precision']} | skipped: {r['skipped'][:80]} | | | | |")
            else:
                out.append(f"| {r['precision']} | {r['latency_mode_ms_per_image']} | {r['two_streams_ms_per_image']} | "
                           f"{r['throughput_gain']:.2f}x | {r['max_rel_diff_streams_vs_latency']} | {r['loadavg']} |")
        out.append("")
    chart = make_chart(pipe, results / "accuracy_vs_time.png")
    if chart:
        out += ["## Chart", "", f"![accuracy vs time]({chart.name})", ""]
    path = results / "RESULTS.md"
    path.write_text("\n".join(out) + "\n")
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Write RESULTS.md and the chart from the JSON results")
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args(argv)
    info = None
    if (args.results / "run_all.json").is_file():
        info = json.loads((args.results / "run_all.json").read_text())
    print(write_report(args.results, info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
