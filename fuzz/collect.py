"""Summarise a fuzz/run_long.sh run (fuzz/out/) into benchmarks/results/fuzz.json and fuzz.md.

    python fuzz/collect.py [--out-dir fuzz/out [fuzz/out2 ...]] [--findings fuzz/findings.json]   # runs added up

Per kernel: executions, accepted calls (past the argument checks), rejections by exception type, seconds, whether
the run finished its planned executions, the exit code (missing = still running or stopped from outside) and the
number of sanitizer reports / crashes in its log. ``--findings`` adds the list of bugs found during development of
the harness (earlier runs), kept in fuzz/findings.json.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KERNELS = ("preprocess", "postprocess", "label_map", "resize_area", "box_from_mask", "paste_masks")
REPORT = re.compile(r"ERROR: AddressSanitizer|runtime error:|Segmentation fault|Traceback|Finding")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out-dir", nargs="+", default=[str(ROOT / "fuzz" / "out")],
                    help="run folders (fuzz/run_long.sh OUT); a kernel's runs in several folders are added up")
    ap.add_argument("--findings", default=str(ROOT / "fuzz" / "findings.json"))
    ap.add_argument("--note", default="")
    args = ap.parse_args(argv)
    kernels = {}
    for k in KERNELS:
        runs = []
        for folder in map(Path, args.out_dir):
            stats = folder / f"{k}.json"
            if not stats.exists():
                continue
            rec = json.loads(stats.read_text())[k]
            log = (folder / f"{k}.log").read_text(errors="replace") if (folder / f"{k}.log").exists() else ""
            rc = (folder / f"{k}.rc").read_text().strip() if (folder / f"{k}.rc").exists() else None
            rec["folder"] = folder.name
            rec["exit_code"] = None if rc is None else int(rc)
            rec["sanitizer_reports_or_crashes"] = len(REPORT.findall(log))
            rec["asan_refused_huge_allocations"] = log.count("failed to allocate")
            runs.append(rec)
        if not runs:
            kernels[k] = {"execs": 0, "note": "not run"}
            continue
        total: dict = {"execs": 0, "accepted": 0, "rejected": {}, "seconds": 0.0, "sanitizer_reports_or_crashes": 0}
        for r in runs:
            total["execs"] += r["execs"]
            total["accepted"] += r["accepted"]
            total["seconds"] = round(total["seconds"] + r["seconds"], 1)
            total["sanitizer_reports_or_crashes"] += r["sanitizer_reports_or_crashes"]
            for t, v in r["rejected"].items():
                total["rejected"][t] = total["rejected"].get(t, 0) + v
        total["finished"] = all(r["finished"] for r in runs if r.get("exit_code") not in (143, -15))
        total["seeds"] = [r["seed"] for r in runs]
        total["runs"] = runs
        kernels[k] = total
    findings = json.loads(Path(args.findings).read_text()) if Path(args.findings).exists() else []
    result = {
        "build": "ASan + UBSan (gcc 12, -fsanitize=address,undefined -fno-sanitize-recover=all), fuzz/build_sanitized.sh",
        "driver": "fuzz/fuzz_kernels.py, seeded random bytes (fuzz/run_long.sh)",
        "target_execs_per_kernel": 1_000_000,
        "note": args.note,
        "kernels": kernels,
        "findings_fixed": findings,
    }
    res_dir = ROOT / "benchmarks" / "results"
    (res_dir / "fuzz.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Fuzzing the native kernels",
        "",
        f"Build: {result['build']}. Driver: {result['driver']}. Target: 1,000,000 executions per kernel.",
        "",
    ]
    if args.note:
        lines += [args.note, ""]
    lines += [
        "| kernel | executions (all runs) | runs (seeds) | accepted | rejected (TypeError / ValueError / other) | seconds | "
        "finished | sanitizer reports / crashes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for k, r in kernels.items():
        rej = r.get("rejected", {})
        other = sum(v for t, v in rej.items() if t not in ("TypeError", "ValueError"))
        lines.append(
            f"| {k} | {r.get('execs', 0):,} | {', '.join(map(str, r.get('seeds', [])))} | {r.get('accepted', 0):,} | "
            f"{rej.get('TypeError', 0):,} / "
            f"{rej.get('ValueError', 0):,} / {other:,} | {r.get('seconds', '-')} | {r.get('finished', False)} | "
            f"{r.get('sanitizer_reports_or_crashes', '-')} |"
        )
    lines += ["", "## Bugs found (all fixed, with regression tests)", ""]
    for f in findings:
        lines.append(f"- **{f['kernel']}**: {f['bug']} Fix: {f['fix']} Test: `{f['test']}`.")
    (res_dir / "fuzz.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
