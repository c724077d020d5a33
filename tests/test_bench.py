"""Smoke test of the model-level benchmark (medsam_edge.bench): structure and positive numbers, a few seconds."""

from __future__ import annotations

import json
import sys

from medsam_edge import bench
import pytest

pytestmark = pytest.mark.model

NUMERIC = ("median_ms", "p90_ms", "mean_ms", "min_ms", "gmac", "gmacs_per_s", "pct_int8_peak", "pct_own_peak")


def test_bench_models_one_precision_two_rounds():
    # one thread: on a loaded 2-core machine a 2-thread stream can be many times slower than on an idle one
    records = bench.bench_models(precisions=("bf16",), threads=(1,), repeats=2, warmup=0, boxes=(1, 3),
                                 cache_dir=None)
    assert [(r["part"], r["boxes"]) for r in records] == [("encoder", None), ("decoder", 1), ("decoder", 3)]
    for r in records:
        assert r["precision"] == "bf16" and r["threads"] == 1 and r["n"] == 2
        assert r["execution_precision"] == "bf16"
        for key in NUMERIC:
            assert isinstance(r[key], float) and r[key] > 0, (key, r[key])
        assert r["p90_ms"] >= r["median_ms"] >= r["min_ms"]
        assert r["machine"]["cores"] >= 1 and r["machine"]["peak_gmacs"]["int8"] > 0
    enc, dec1, dec3 = records
    assert 30 < enc["gmac"] < 45  # ~37.5 GMAC counted from the IR
    assert 1.0 < dec1["gmac"] < dec3["gmac"]
    assert enc["embedding_rel_err"] == 0.0  # the check compares with fp32, or with itself when fp32 is not timed
    json.dumps(records)  # JSON-serialisable as main() prints it


def test_missing_variant_is_skipped_not_raised(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"format": 1, "variants": {}, "files": {}}))
    records = bench.bench_models(precisions=("int8",), threads=(1,), repeats=1, warmup=0, model_dir=tmp_path,
                                 cache_dir=None)
    assert records == [{"precision": "int8", "threads": 1, "skipped": records[0]["skipped"]}]
    assert "int8" in records[0]["skipped"]


def test_bench_does_not_import_torch():
    assert "medsam_edge.bench" in sys.modules
    import subprocess

    code = "import sys, medsam_edge.bench; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_benchmark_scripts_compile():
    """Every script in benchmarks/ and calibration/ parses (they are not imported by the other tests)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    scripts = sorted([*root.glob("benchmarks/*.py"), *root.glob("calibration/*.py"), *root.glob("fuzz/*.py")])
    assert len(scripts) >= 8
    for path in scripts:
        compile(path.read_text(encoding="utf-8"), str(path), "exec")  # SyntaxError names the file and line


def test_default_alias_on_2d_cases_is_the_2d_pipeline():
    import bench_pipeline as B  # benchmarks/ is on pytest's pythonpath (pyproject.toml)

    assert B.alias_target("default", "reference_slicewise", is_3d=False) == "reference"
    assert B.alias_target("default", "reference_slicewise", is_3d=True) == "reference_slicewise"
    assert B.alias_target("default", "reference", is_3d=False) == "reference"
    assert B.alias_target("default_slicewise", "reference_slicewise", is_3d=False) == "reference_slicewise"
