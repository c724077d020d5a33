"""The compiled-model cache and the golden self-check (issue 14).

OpenVINO 2026.4's own cache served a blob compiled at one INFERENCE_PRECISION_HINT to a compile at another, and on an
AMX CPU that gave garbage masks silently. These tests compile every precision after every other one into one fresh
cache folder, read the folder back in this process and in another one, and compare each result with the same
precision compiled without any cache.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from medsam_edge import ConfigurationError, ModelCheckError, Segmenter
from medsam_edge.examples import load_example
from medsam_edge.models import MODEL_DIR, resolve
from medsam_edge.runtime import BLOB_NAME, DECODER_SHAPES, WIDE_DECODER_SHAPES, Runtime, RuntimeOptions, cpu_features
from medsam_edge.selfcheck import GOLDEN_NAME, TOLERANCES, load_golden

pytestmark = pytest.mark.slow

PRECISIONS = ("fp32", "bf16", "int8")
EXAMPLE = load_example()  # 6 boxes: the wide (4-box) decoder is compiled and used too


def _run(seg: Segmenter):
    result = seg(EXAMPLE.image, EXAMPLE.boxes)
    return result.masks.copy(), result.scores.copy()


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def _assert_same(got, want, what: str) -> None:
    """Masks per box DSC >= 0.999 and scores within 1e-3 (on AMD Zen 4 they are bit-identical; see calibration/README)."""
    masks, scores = got
    ref_masks, ref_scores = want
    dices = [_dice(m, r) for m, r in zip(masks, ref_masks)]
    assert min(dices) >= 0.999, f"{what}: per-box DSC vs uncached {np.round(dices, 4).tolist()}"
    assert np.abs(scores - ref_scores).max() <= 1e-3, f"{what}: scores {scores} vs uncached {ref_scores}"


@pytest.fixture(scope="module")
def uncached():
    return {p: _run(Segmenter(precision=p, cache_dir=None)) for p in PRECISIONS}


@pytest.mark.parametrize("order", [("fp32", "int8", "bf16"), ("bf16", "int8", "fp32")], ids="->".join)
def test_every_precision_order_in_one_fresh_cache(tmp_path, uncached, order):
    """Each precision compiled into a folder that already holds the ones before it; the two orders cover all six
    ordered pairs (fp32->int8, fp32->bf16, int8->bf16 and their reverses). Then every one is read back."""
    cache = tmp_path / "cache"
    for i, precision in enumerate(order):
        seg = Segmenter(precision=precision, cache_dir=cache)
        _assert_same(_run(seg), uncached[precision], f"{precision} compiled after {order[:i]}")
        assert [e["source"] for e in seg.runtime.log] == ["compiled"] * 3, seg.runtime.log
    for precision in order:
        again = Segmenter(precision=precision, cache_dir=cache)
        _assert_same(_run(again), uncached[precision], f"{precision} read from the cache after {order}")
        assert [e["source"] for e in again.runtime.log] == ["cache"] * 3, again.runtime.log
    entries = sorted(p.name for p in cache.iterdir())
    assert len(entries) == 9, entries  # 3 models (encoder, 1-box and 4-box decoder) per precision, none shared
    assert all((cache / e / BLOB_NAME).is_file() for e in entries)


def test_cache_key_differs_for_every_setting():
    """Same file + same compile settings -> same entry; any difference in settings or shapes -> another entry."""
    pair = resolve("fp32")
    by_settings: dict = {}
    for precision, threads, hint in itertools.product(PRECISIONS, (None, 1, 2), ("LATENCY", "THROUGHPUT")):
        options = RuntimeOptions(precision=precision, threads=threads, performance_hint=hint, cache_dir="/x")
        rt = Runtime(options)
        for shapes in (None, DECODER_SHAPES, WIDE_DECODER_SHAPES):
            settings = (options.inference_precision, threads, hint, str(shapes))
            by_settings.setdefault(settings, set()).add(rt.cache_entry(pair.decoder_xml, shapes))
    assert all(len(entries) == 1 for entries in by_settings.values())
    assert len(set().union(*by_settings.values())) == len(by_settings) == 2 * 3 * 2 * 3  # f32/bf16 x threads x ...
    assert Runtime(RuntimeOptions(cache_dir=None)).cache_entry(pair.decoder_xml) is None


def test_decoder_properties_are_part_of_the_key_and_cpu_only():
    """The decoder compiles without snippets kernels on the CPU (unless decoder_snippets): another cache entry than
    the same file under OpenVINO's defaults, and nothing extra on another device."""
    from medsam_edge.runtime import DECODER_CPU_PROPERTIES

    pair = resolve("fp32")
    shipped = Runtime(RuntimeOptions(cache_dir="/x"))
    default = Runtime(RuntimeOptions(cache_dir="/x", decoder_snippets=True))
    assert shipped.decoder_properties() == DECODER_CPU_PROPERTIES == {"SNIPPETS_MODE": "DISABLE"}
    assert default.decoder_properties() == {}
    assert Runtime(RuntimeOptions(device="GPU", cache_dir="/x")).decoder_properties() == {}
    a = shipped.cache_entry(pair.decoder_xml, DECODER_SHAPES, shipped.decoder_properties())
    b = default.cache_entry(pair.decoder_xml, DECODER_SHAPES, default.decoder_properties())
    assert a != b and a == shipped.cache_entry(pair.decoder_xml, DECODER_SHAPES, dict(DECODER_CPU_PROPERTIES))
    assert shipped.compile_properties(shipped.decoder_properties())["SNIPPETS_MODE"] == "DISABLE"
    assert "SNIPPETS_MODE" not in shipped.compile_properties()
    with pytest.raises(ConfigurationError, match="decoder_snippets"):
        RuntimeOptions(decoder_snippets="no")


def test_cache_key_follows_the_model_file(tmp_path):
    import shutil

    for name in ("decoder_fp32c.xml", "decoder_fp32c.bin"):
        shutil.copy(MODEL_DIR / name, tmp_path / name)
    rt = Runtime(RuntimeOptions(cache_dir=str(tmp_path / "c")))
    before = rt.cache_entry(tmp_path / "decoder_fp32c.xml")
    with open(tmp_path / "decoder_fp32c.bin", "r+b") as handle:  # same size, other content
        handle.seek(100)
        handle.write(b"\x01\x02")
    assert rt.cache_entry(tmp_path / "decoder_fp32c.xml") != before


_CHILD = textwrap.dedent("""
    import json, sys
    import numpy as np
    from medsam_edge import Segmenter
    from medsam_edge.examples import load_example
    ex = load_example()
    out = {}
    for precision in sys.argv[2].split(","):
        seg = Segmenter(precision=precision, cache_dir=sys.argv[1])
        r = seg(ex.image, ex.boxes)
        out[precision] = {"sources": [e["source"] for e in seg.runtime.log],
                          "masks": np.packbits(r.masks).tolist(), "scores": r.scores.tolist()}
    print(json.dumps(out))
""")


def _child(cache: Path, precisions: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(cache), precisions], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_cache_across_processes(tmp_path, uncached):
    cache = tmp_path / "cache"
    written = _child(cache, "fp32,int8")  # another process compiles fp32 then int8 into the folder
    assert all(s == "compiled" for p in written.values() for s in p["sources"])
    for precision in ("int8", "fp32"):  # this process reads them, in the other order
        seg = Segmenter(precision=precision, cache_dir=cache)
        _assert_same(_run(seg), uncached[precision], f"{precision} written by another process")
        assert [e["source"] for e in seg.runtime.log] == ["cache"] * 3
    Segmenter(precision="bf16", cache_dir=cache)(EXAMPLE.image, EXAMPLE.boxes)  # this process adds bf16 ...
    read = _child(cache, "bf16,int8,fp32")  # ... and a third process reads all three
    for precision, got in read.items():
        assert got["sources"] == ["cache"] * 3, (precision, got["sources"])
        masks = np.unpackbits(np.array(got["masks"], np.uint8))[: uncached[precision][0].size]
        _assert_same((masks.reshape(uncached[precision][0].shape).astype(bool), np.array(got["scores"])),
                     uncached[precision], f"{precision} read by a third process")


def test_corrupt_cache_entry_is_dropped_and_recompiled(tmp_path, uncached):
    cache = tmp_path / "cache"
    Segmenter(precision="bf16", cache_dir=cache)
    blobs = sorted(cache.glob(f"*/{BLOB_NAME}"))
    assert len(blobs) == 2  # encoder + 1-box decoder (the 4-box one is compiled on first need)
    for blob in blobs:
        blob.write_bytes(b"not a compiled model" * 100)
    with pytest.warns(RuntimeWarning, match="dropping compiled-model cache entry"):
        seg = Segmenter(precision="bf16", cache_dir=cache)
    assert [e["source"] for e in seg.runtime.log] == ["compiled", "compiled"]
    _assert_same(_run(seg), uncached["bf16"], "bf16 after a corrupt entry")


def _golden_with(tmp_path: Path, name: str, **changes) -> Path:
    golden = load_golden(str(MODEL_DIR / GOLDEN_NAME))
    data = {name: getattr(golden, name) for name in golden.__dataclass_fields__}
    data.update(changes)
    path = tmp_path / f"golden_{name}.npz"  # a new name each time: load_golden caches by path
    np.savez(path, **data)
    return path


def test_self_check_refuses_a_model_that_computes_something_else(tmp_path):
    """A golden that disagrees with the model stands for a model that disagrees with the golden."""
    golden = load_golden(str(MODEL_DIR / GOLDEN_NAME))
    pair = resolve("fp16")
    options = RuntimeOptions(precision="bf16", cache_dir=str(tmp_path / "cache"))
    bad_iou = _golden_with(tmp_path, "iou", iou=golden.iou + 0.23)  # the poisoned decoder's IoU error on an AMX CPU
    with pytest.raises(ModelCheckError) as info:
        Runtime(options, golden=bad_iou).compile(pair.decoder_xml, DECODER_SHAPES, check="decoder")
    text = str(info.value)
    assert "decoder_fp16.xml" in text and "'bf16'" in text and "'CPU'" in text and "iou_max_abs 0.2" in text
    assert not list((tmp_path / "cache").glob(f"*/{BLOB_NAME}")), "a model that failed its check was cached"
    full = _golden_with(tmp_path, "masks", masks=np.ones_like(golden.masks))  # masks covering the image
    with pytest.raises(ModelCheckError, match="mask_dice_min"):
        Runtime(options, golden=full).compile(pair.decoder_xml, DECODER_SHAPES, check="decoder")
    scaled = _golden_with(tmp_path, "embedding", embedding_pool4=golden.embedding_pool4 * 1.5)
    with pytest.raises(ModelCheckError, match="embedding_rel_l2"):
        Runtime(options, golden=scaled).compile(pair.encoder_xml, check="encoder")


@pytest.mark.parametrize("precision", PRECISIONS)
def test_self_check_runs_on_fresh_compiles_only(tmp_path, precision):
    cache = tmp_path / "cache"
    fresh = Segmenter(precision=precision, cache_dir=cache)
    for entry in fresh.runtime.log:
        assert entry["source"] == "compiled" and entry["self_check"], entry
        limits = TOLERANCES[precision]
        for name, value in entry["self_check"].items():
            assert (value >= limits[name]) if name.endswith("_min") else (value <= limits[name]), (name, value)
    warm = Segmenter(precision=precision, cache_dir=cache)
    assert all(e["source"] == "cache" and "self_check" not in e for e in warm.runtime.log)


def test_cpu_features_lists_known_flags():
    features = cpu_features()
    assert features["model"]
    flags = set(Path("/proc/cpuinfo").read_text().split()) if Path("/proc/cpuinfo").is_file() else set()
    for flag in ("avx2", "avx512_bf16", "amx_int8", "avx_vnni", "avx512_vnni"):
        assert (flag in features["flags"]) == (flag in flags), flag


def test_golden_file_is_what_the_builder_makes(tmp_path):
    """The shipped golden outputs are the checkpoint's network in torch (calibration/build_golden.py)."""
    pytest.importorskip("torch")
    from calibration.build_golden import build

    out = tmp_path / GOLDEN_NAME
    build(out)
    made, shipped = load_golden(str(out)), load_golden(str(MODEL_DIR / GOLDEN_NAME))
    assert np.array_equal(made.image_u8, shipped.image_u8) and np.array_equal(made.boxes, shipped.boxes)
    ref = shipped.embedding_pool4
    assert np.linalg.norm(made.embedding_pool4 - ref) / np.linalg.norm(ref) < 1e-5
    assert min(_dice(a, b) for a, b in zip(made.masks, shipped.masks)) >= 0.999
    assert np.abs(made.iou - shipped.iou).max() < 1e-4
    assert 50 < shipped.masks.reshape(4, -1).sum(1).min()  # real targets, not empty masks


def test_golden_file_is_verified_like_the_models(tmp_path):
    import shutil

    from medsam_edge import ModelFileError

    for path in MODEL_DIR.iterdir():
        if path.name.startswith(("encoder_fp16", "decoder_fp16")) or path.name in ("manifest.json", GOLDEN_NAME):
            shutil.copy(path, tmp_path / path.name)
    assert resolve("fp16", tmp_path).golden == tmp_path / GOLDEN_NAME
    with open(tmp_path / GOLDEN_NAME, "r+b") as handle:
        handle.seek(200)
        handle.write(b"\xff\xfe")
    with pytest.raises(ModelFileError, match="golden.npz"):
        resolve("fp16", tmp_path)


TRIM_CHILD = textwrap.dedent("""
    import ctypes, json, sys
    from medsam_edge.runtime import trim_heap

    def rss_kb():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS"):
                return int(line.split()[1])

    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
    freed, done = [], []
    for _ in range(2):  # twice: every call trims, not only the first
        blocks = [libc.malloc(4000) for _ in range(20000)]  # ~80 MB of small blocks in the main heap
        for b in blocks:
            libc.memset(b, 1, 4000)
        guard = libc.malloc(4000)  # keeps the heap's top in use, so free() alone cannot shrink it
        for b in blocks:
            libc.free(b)
        before = rss_kb()
        done.append(trim_heap() if sys.argv[1] == "trim" else False)
        freed.append((before - rss_kb()) / 1024)
    print(json.dumps({"trimmed": all(done), "freed_mb": min(freed), "max_freed_mb": max(freed)}))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc heap behaviour")
def test_trim_heap_returns_freed_heap_pages_to_the_system():
    out = {}
    for mode in ("trim", "none"):
        proc = subprocess.run([sys.executable, "-c", TRIM_CHILD, mode], capture_output=True, text=True, check=True)
        out[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["trim"]["trimmed"] is True
    assert out["trim"]["freed_mb"] > 40, out  # the freed blocks leave the process
    assert out["none"]["max_freed_mb"] < 10, out  # and without the trim they stay resident


def test_engine_trims_the_heap_once_the_models_are_built(monkeypatch):
    from medsam_edge import runtime

    calls = []
    real = runtime.trim_heap
    monkeypatch.setattr(runtime, "trim_heap", lambda: calls.append(1) or real())
    seg = Segmenter(precision="fp32", cache_dir=None)
    assert calls == [1]
    assert seg(load_example().image, load_example().boxes[:1]).masks.shape[0] == 1
