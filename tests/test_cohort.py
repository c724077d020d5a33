"""The cohort runner on a real local Dask cluster of 2 worker processes (not mocked).

Every output is compared with the serial ``medsam-edge segment`` run at the same OpenVINO thread count (1): the two
go through the same per-case function, so the label maps must be equal array for array, geometry included.
Faults: a truncated file, a volume without its boxes file, a rerun on a finished folder, a worker killed mid-case.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from calibration.data import load_fixtures
from medsam_edge import cli
from medsam_edge.io import read_image

distributed = pytest.importorskip("distributed", reason="the cohort extra (dask[distributed]) is not installed")

from medsam_edge import _cohort_dask  # noqa: E402
from medsam_edge.cohort import RESULTS_NAME, run_cohort  # noqa: E402

pytestmark = pytest.mark.slow

PRECISION = "int8"  # the fastest; outputs are compared at equal precision and threads, so any precision would do
NAMES_2D = ("2D_Microscopy_stardist_96x128", "2D_Microscopy_stardist_64x156", "2D_MR_emri_small")


def _small_volume():
    """The 3D fixture cut to 8 slices around its middle, boxes clipped to them (a few seconds at 1 thread)."""
    vol = load_fixtures("3d")[0]
    z0 = vol.image.shape[0] // 2 - 4
    image = np.ascontiguousarray(vol.image[z0:z0 + 8])
    boxes = vol.boxes.astype(np.int64).copy()
    boxes[:, 2] = np.clip(boxes[:, 2] - z0, 0, 7)
    boxes[:, 5] = np.clip(boxes[:, 5] - z0, 0, 7)
    keep = boxes[:, 5] > boxes[:, 2]
    return image, boxes[keep]


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> Path:
    """Three 2D challenge .npz files and one NIfTI volume with its NAME.boxes.json."""
    folder = tmp_path_factory.mktemp("cases")
    fixtures = {s.name: s for s in load_fixtures("2d")}
    for k, name in enumerate(NAMES_2D):
        s = fixtures[name]
        np.savez_compressed(folder / f"2DBox_{s.modality}_{k}.npz", imgs=s.image, boxes=s.boxes)
    image, boxes = _small_volume()
    img = sitk.GetImageFromArray(image)
    img.SetSpacing((0.8, 0.9, 2.5))
    img.SetOrigin((10.0, -20.0, 5.0))
    sitk.WriteImage(img, str(folder / "3DBox_MR_vol.nii.gz"))
    (folder / "3DBox_MR_vol.boxes.json").write_text(json.dumps({"boxes": boxes.tolist()}))
    return folder


@pytest.fixture(scope="module")
def serial(cases, tmp_path_factory) -> Path:
    """The serial run: ``segment FOLDER`` for the .npz files, ``segment FILE --boxes`` for the volume."""
    out = tmp_path_factory.mktemp("serial")
    common = ["--precision", PRECISION, "--threads", "1", "-q"]
    assert cli.main(["segment", str(cases), "-o", str(out), *common]) == 0
    assert cli.main(["segment", str(cases / "3DBox_MR_vol.nii.gz"), "--boxes", str(cases / "3DBox_MR_vol.boxes.json"),
                     "-o", str(out / "3DBox_MR_vol.nii.gz"), *common]) == 0
    return out


@pytest.fixture(scope="module")
def client():
    with _cohort_dask.local_cluster(2) as cluster, distributed.Client(cluster) as c:
        c.wait_for_workers(2)
        yield c


@pytest.fixture(scope="module")
def first_run(cases, client, tmp_path_factory):
    out = tmp_path_factory.mktemp("cohort")
    t0 = time.perf_counter()
    report = run_cohort(cases, out, client=client, precision=PRECISION, threads_per_worker=1, progress=False)
    return out, report, time.perf_counter() - t0


def _case_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith((".npz", ".nii.gz"))
                  and not p.name.endswith(".boxes.json"))


def _assert_same_output(a: Path, b: Path) -> None:
    if a.name.endswith(".npz"):
        with np.load(a, allow_pickle=False) as fa, np.load(b, allow_pickle=False) as fb:
            assert sorted(fa.files) == sorted(fb.files) == ["segs"]
            assert fa["segs"].dtype == fb["segs"].dtype == np.uint16
            np.testing.assert_array_equal(fa["segs"], fb["segs"], err_msg=a.name)
        return
    la, lb = read_image(a), read_image(b)
    np.testing.assert_array_equal(la.array, lb.array, err_msg=a.name)
    assert la.array.dtype == lb.array.dtype
    assert la.geometry == lb.geometry, a.name


def _rows(path: Path) -> dict[str, dict]:
    with open(path, newline="") as handle:
        return {r["case"]: r for r in csv.DictReader(handle)}


def test_outputs_equal_the_serial_run(cases, serial, first_run):
    out, report, seconds = first_run
    assert [r["status"] for r in report.rows] == ["ok"] * 4, report.rows
    assert report.workers and len(report.workers) == 2 and set(report.workers.values()) == {1}
    assert _case_files(out) == _case_files(cases) == _case_files(serial)
    for name in _case_files(cases):
        _assert_same_output(out / name, serial / name)
    vol = read_image(out / "3DBox_MR_vol.nii.gz")
    assert vol.geometry.spacing == pytest.approx((0.8, 0.9, 2.5)) and vol.array.max() >= 1
    table = _rows(out / RESULTS_NAME)
    assert set(table) == set(_case_files(cases))
    assert all(r["worker"].startswith("tcp://") and float(r["seconds"]) > 0 for r in table.values())
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]  # atomic writes leave no temporary files
    print(f"cohort of 4 cases on the shared 2-worker cluster: {seconds:.1f} s, timings {report.timings}")


def test_rerun_skips_finished_cases(cases, client, first_run):
    out, _, _ = first_run
    before = {name: os.stat(out / name).st_mtime_ns for name in _case_files(out)}
    report = run_cohort(cases, out, client=client, precision=PRECISION, threads_per_worker=1, progress=False)
    assert [r["status"] for r in report.rows] == ["skipped"] * 4
    assert "run" not in report.timings  # nothing was submitted
    assert {name: os.stat(out / name).st_mtime_ns for name in _case_files(out)} == before
    assert {r["status"] for r in _rows(out / RESULTS_NAME).values()} == {"skipped"}
    assert all(float(r["seconds"]) > 0 for r in report.rows)  # the first run's times are kept

    # one output gone (e.g. deleted by hand): only that case is computed again
    victim = "2DBox_Microscopy_1.npz"
    (out / victim).unlink()
    report = run_cohort(cases, out, client=client, precision=PRECISION, threads_per_worker=1, progress=False)
    status = {r["case"]: r["status"] for r in report.rows}
    assert status.pop(victim) == "ok" and set(status.values()) == {"skipped"}
    assert {name: os.stat(out / name).st_mtime_ns for name in _case_files(out) if name != victim} == {
        k: v for k, v in before.items() if k != victim}


def test_corrupt_cases_are_reported_and_the_run_goes_on(cases, serial, tmp_path):
    """Through the command line, on its own local cluster of 2 workers."""
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    good = "2DBox_Microscopy_0.npz"
    shutil.copy(cases / good, inputs / good)
    data = (cases / "2DBox_MR_2.npz").read_bytes()
    (inputs / "2DBox_MR_truncated.npz").write_bytes(data[: len(data) // 2])
    shutil.copy(cases / "3DBox_MR_vol.nii.gz", inputs / "3DBox_MR_noboxes.nii.gz")  # no .boxes.json beside it
    proc = subprocess.run([sys.executable, "-m", "medsam_edge", "cohort", str(inputs), "-o", str(tmp_path / "out"),
                           "--workers", "2", "--precision", PRECISION], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    table = _rows(tmp_path / "out" / RESULTS_NAME)
    assert table[good]["status"] == "ok"
    assert table["2DBox_MR_truncated.npz"]["status"] == "error"
    assert table["2DBox_MR_truncated.npz"]["error"].startswith("UnreadableFileError:")
    assert table["3DBox_MR_noboxes.nii.gz"]["status"] == "error"
    assert "3DBox_MR_noboxes.boxes.json" in table["3DBox_MR_noboxes.nii.gz"]["error"]
    assert "2DBox_MR_truncated.npz" in proc.stderr and "Traceback" not in proc.stderr
    assert "1 segmented" in proc.stdout and "2 failed" in proc.stdout
    _assert_same_output(tmp_path / "out" / good, serial / good)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [good, RESULTS_NAME]


def test_a_worker_killed_mid_case_has_the_case_retried(cases, serial, client, tmp_path):
    victim = "2DBox_MR_2.npz"
    marker = tmp_path / "stalled.pid"
    hook = f"{victim}|{marker}"
    key = _cohort_dask.STALL_ENV
    client.run(lambda: os.environ.__setitem__(key, hook))  # a lambda travels by value (this module is not importable there)
    killed: dict = {}

    def kill_when_stalled() -> None:
        deadline = time.monotonic() + 120
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        if marker.exists():
            killed["pid"] = int(marker.read_text())
            killed["address"] = next((a for a, pid in client.run(os.getpid).items() if pid == killed["pid"]), None)
            os.kill(killed["pid"], signal.SIGKILL)

    killer = threading.Thread(target=kill_when_stalled, daemon=True)
    killer.start()
    try:
        report = run_cohort(cases, tmp_path / "out", client=client, precision=PRECISION, threads_per_worker=1,
                            progress=False)
    finally:
        killer.join(timeout=5)
        client.run(lambda: os.environ.pop(key, None))
    assert killed.get("pid") and killed["address"], "the stalled case never started"
    rows = {r["case"]: r for r in report.rows}
    assert [r["status"] for r in report.rows] == ["ok"] * 4, report.rows
    assert rows[victim]["worker"] != killed["address"]  # finished by another (or the restarted) worker process
    for name in _case_files(cases):
        _assert_same_output(tmp_path / "out" / name, serial / name)
    print(f"killed worker {killed['address']} (pid {killed['pid']}) mid-case; {victim} finished on "
          f"{rows[victim]['worker']}")
