"""The cohort runner's case list, boxes files and results table, without a cluster or a model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medsam_edge.cohort import (
    COLUMNS,
    CaseSpec,
    find_cases,
    read_results,
    run_cohort,
    side_boxes_file,
    write_results,
)
from medsam_edge.errors import ConfigurationError, InvalidBoxError, UnreadableFileError
from medsam_edge.jobs import output_path, read_boxes_json

pytestmark = pytest.mark.unit


def _npz(path: Path) -> Path:
    np.savez_compressed(path, imgs=np.zeros((8, 8), np.uint8), boxes=np.array([[1, 1, 5, 5]]))
    return path


def test_side_boxes_file_naming():
    assert side_boxes_file("/d/case.nii.gz") == Path("/d/case.boxes.json")
    assert side_boxes_file("/d/case.nii") == Path("/d/case.boxes.json")
    assert side_boxes_file("/d/ct.1.nrrd") == Path("/d/ct.1.boxes.json")
    assert side_boxes_file("/d/x.mha") == Path("/d/x.boxes.json")
    assert output_path("/in/case.nii.gz", "/out") == Path("/out/case.nii.gz")


def test_folder_cases(tmp_path):
    _npz(tmp_path / "a.npz")
    _npz(tmp_path / "b.npz")
    (tmp_path / "b.boxes.json").write_text("[[0, 0, 4, 4]]")
    (tmp_path / "vol.nii.gz").write_bytes(b"x")
    (tmp_path / "vol.boxes.json").write_text("[]")
    (tmp_path / "notes.txt").write_text("not a case")
    specs = find_cases(tmp_path, tmp_path / "out")
    assert [s.case for s in specs] == ["a.npz", "b.npz", "vol.nii.gz"]
    a, b, vol = specs
    assert a.boxes_file is None  # the boxes inside the .npz
    assert b.boxes_file == str(tmp_path / "b.boxes.json")  # a side file replaces them
    assert vol.boxes_file == str(tmp_path / "vol.boxes.json")
    assert vol.output == str(tmp_path / "out" / "vol.nii.gz")


def test_volume_without_boxes_file_is_still_a_case(tmp_path):
    (tmp_path / "vol.mha").write_bytes(b"x")
    (spec,) = find_cases(tmp_path, tmp_path / "out")
    assert spec.boxes_file == str(tmp_path / "vol.boxes.json")  # missing: that case's error in the table


def test_manifest(tmp_path):
    (tmp_path / "data").mkdir()
    _npz(tmp_path / "data" / "a.npz")
    (tmp_path / "data" / "b.nrrd").write_bytes(b"x")
    (tmp_path / "b.json").write_text('{"boxes": [[0, 0, 0, 4, 4, 2]]}')
    manifest = tmp_path / "cases.csv"
    manifest.write_text('path,boxes\ndata/a.npz,\ndata/b.nrrd,b.json\n'
                        f'{tmp_path / "data" / "a2.npz"},"[[1, 2, 3, 4]]"\n')
    a, b, c = find_cases(manifest, tmp_path / "out")
    assert (a.case, a.boxes_file, a.boxes) == ("a.npz", None, None)
    assert b.boxes_file == str(tmp_path / "b.json")
    assert c.boxes == [[1, 2, 3, 4]] and c.boxes_file is None


@pytest.mark.parametrize("text, message", [
    ("file,boxes\na.npz,\n", "no 'path' column"),
    ("path,boxes\na.npz,\"[[1, 2\"\n", "not a JSON list"),
    ("path\n\n", "holds no cases"),
])
def test_bad_manifest(tmp_path, text, message):
    (tmp_path / "m.csv").write_text(text)
    with pytest.raises(UnreadableFileError, match=message):
        find_cases(tmp_path / "m.csv", tmp_path / "out")


def test_duplicate_output_names_are_refused(tmp_path):
    for d in ("x", "y"):
        (tmp_path / d).mkdir()
        _npz(tmp_path / d / "case.npz")
    (tmp_path / "m.csv").write_text("path\nx/case.npz\ny/case.npz\n")
    with pytest.raises(ConfigurationError, match="would both write"):
        find_cases(tmp_path / "m.csv", tmp_path / "out")


def test_missing_or_empty_source(tmp_path):
    with pytest.raises(UnreadableFileError, match="does not exist"):
        find_cases(tmp_path / "nope", tmp_path / "out")
    with pytest.raises(UnreadableFileError, match="holds no cases"):
        find_cases(tmp_path, tmp_path / "out")


def test_read_boxes_json(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"boxes": [[1, 2, 3, 4]]}))
    assert read_boxes_json(tmp_path / "a.json").tolist() == [[1, 2, 3, 4]]
    (tmp_path / "b.json").write_text("[[1, 2, 3, 4, 5, 6]]")
    with pytest.raises(InvalidBoxError, match="6 numbers"):
        read_boxes_json(tmp_path / "a.json", 6)
    (tmp_path / "c.json").write_text("{not json")
    with pytest.raises(UnreadableFileError, match="cannot read boxes"):
        read_boxes_json(tmp_path / "c.json")
    with pytest.raises(UnreadableFileError, match="cannot read boxes"):
        read_boxes_json(tmp_path / "missing.json")


def test_results_table_round_trip(tmp_path):
    rows = [{"case": "a.npz", "seconds": "1.5", "segment_seconds": "1.2", "worker": "tcp://h:1", "status": "ok",
             "error": ""},
            {"case": "b.npz", "seconds": "", "segment_seconds": "", "worker": "", "status": "error",
             "error": "UnreadableFileError: b.npz, truncated"}]
    write_results(tmp_path / "results.csv", rows)
    assert (tmp_path / "results.csv").read_text().splitlines()[0] == ",".join(COLUMNS)
    assert read_results(tmp_path / "results.csv") == {r["case"]: r for r in rows}
    assert read_results(tmp_path / "none.csv") == {}


def test_case_spec_pickles():
    import pickle

    spec = CaseSpec(path="/in/a.npz", output="/out/a.npz", boxes=[[1, 2, 3, 4]])
    assert pickle.loads(pickle.dumps(spec)) == spec and spec.case == "a.npz"


def test_bad_counts_are_refused(tmp_path):
    _npz(tmp_path / "a.npz")
    with pytest.raises(ConfigurationError, match="workers must be a positive integer"):
        run_cohort(tmp_path, tmp_path / "out", workers=0)
    with pytest.raises(ConfigurationError, match="threads_per_worker"):
        run_cohort(tmp_path, tmp_path / "out", threads_per_worker=-1)
    with pytest.raises(ConfigurationError, match="local cluster"):
        run_cohort(tmp_path, tmp_path / "out", workers=2, address="tcp://127.0.0.1:1")


def test_core_import_has_no_dask_and_a_missing_dask_is_explained(tmp_path):
    _npz(tmp_path / "a.npz")
    code = f"""
import sys
import medsam_edge, medsam_edge.cohort, medsam_edge.jobs, medsam_edge.cli
assert not [m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')], 'dask imported'
sys.modules['distributed'] = None  # as if the cohort extra were not installed
from medsam_edge.errors import ConfigurationError
try:
    medsam_edge.cohort.run_cohort({str(tmp_path)!r}, {str(tmp_path / 'out')!r})
except ConfigurationError as exc:
    print(exc)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert 'pip install "medsam_edge[cohort]"' in proc.stdout


def test_stale_temporaries_are_removed(tmp_path):
    from medsam_edge.cohort import _remove_stale_temporaries

    (tmp_path / ".case.tmp-abc123.npz").write_bytes(b"half")
    (tmp_path / "case.npz").write_bytes(b"done")
    _remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case.npz"]
