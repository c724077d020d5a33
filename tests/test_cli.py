"""The command line, driven as a person would: subprocesses, files on disk, exit codes."""

from __future__ import annotations

import csv
import json
from pathlib import Path
import subprocess
import sys

import cv2
import numpy as np
import pytest
import SimpleITK as sitk

from calibration.data import load_fixtures

pytestmark = pytest.mark.model


def run(*args, cwd=None, timeout=600):
    proc = subprocess.run([sys.executable, "-m", "medsam_edge", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)
    return proc


def read_png(path):
    data = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert data is not None, f"{path} is not a readable PNG"
    return data


def test_no_argument_runs_the_bundled_example(tmp_path):
    proc = run("--precision", "fp32", "--threads", "2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "bundled example" in proc.stdout
    mask = read_png(tmp_path / "medsam_edge_example" / "nuclei_mask.png")
    overlay = read_png(tmp_path / "medsam_edge_example" / "nuclei_overlay.png")
    assert mask.shape == (512, 512) and set(np.unique(mask)) <= set(range(7)) and mask.max() == 6
    assert overlay.shape == (512, 512, 3)


def test_2d_png_with_boxes_and_overlay(tmp_path):
    sample = next(s for s in load_fixtures("2d") if s.image.shape[0] != s.image.shape[1])
    h, w = sample.image.shape[:2]
    cv2.imwrite(str(tmp_path / "img.png"), sample.image[:, :, 0])
    box_args = []
    for b in sample.boxes[:3]:
        box_args += ["--box", *b.tolist()]
    proc = run("segment", tmp_path / "img.png", *box_args, "-o", tmp_path / "out" / "mask.png",
               "--overlay", tmp_path / "out" / "overlay.png", "--precision", "fp32", "-q")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""  # --quiet
    mask = read_png(tmp_path / "out" / "mask.png")
    assert mask.shape == (h, w) and mask.max() <= 3 and mask.max() >= 1
    assert read_png(tmp_path / "out" / "overlay.png").shape == (h, w, 3)


def test_3d_nifti_keeps_geometry_and_writes_a_mosaic(tmp_path):
    vol = next(s for s in load_fixtures("3d"))
    img = sitk.GetImageFromArray(vol.image)
    img.SetSpacing((0.8, 0.9, 2.5))
    img.SetOrigin((10.0, -20.0, 5.0))
    sitk.WriteImage(img, str(tmp_path / "vol.nii.gz"))
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"boxes": vol.boxes.tolist()}))
    proc = run("segment", tmp_path / "vol.nii.gz", "--boxes", boxes, "-o", tmp_path / "seg.nii.gz",
               "--overlay", tmp_path / "mosaic.png", "--precision", "fp32")
    assert proc.returncode == 0, proc.stderr
    seg = sitk.ReadImage(str(tmp_path / "seg.nii.gz"))
    assert seg.GetSize() == img.GetSize()
    assert np.allclose(seg.GetSpacing(), img.GetSpacing()) and np.allclose(seg.GetOrigin(), img.GetOrigin())
    labels = sitk.GetArrayFromImage(seg)
    assert set(np.unique(labels)) <= set(range(len(vol.boxes) + 1)) and labels.max() >= 1
    assert read_png(tmp_path / "mosaic.png").ndim == 3
    # the slice-skipping mode: same geometry, labels on every slice of the boxes; a step below 1 is refused
    proc = run("segment", tmp_path / "vol.nii.gz", "--boxes", boxes, "-o", tmp_path / "seg2.nii.gz",
               "--precision", "fp32", "--slice-step", "2")
    assert proc.returncode == 0, proc.stderr
    skipped = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "seg2.nii.gz")))
    assert skipped.shape == labels.shape and 2 * (skipped > 0).sum() > (labels > 0).sum()
    z_lo, z_hi = int(vol.boxes[:, 2].min()), int(vol.boxes[:, 5].max())
    assert all(skipped[z].any() for z in range(z_lo, z_hi + 1) if labels[z].any())
    proc = run("segment", tmp_path / "vol.nii.gz", "--boxes", boxes, "-o", tmp_path / "seg3.nii.gz",
               "--slice-step", "0")
    assert proc.returncode == 2 and "--slice-step" in proc.stderr and not (tmp_path / "seg3.nii.gz").exists()


def test_folder_of_challenge_npz(tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    samples = [s for s in load_fixtures("2d") if s.gts is not None][:2] + load_fixtures("3d")[:1]
    for k, s in enumerate(samples):
        name = f"{'3D' if s.is_3d else '2D'}Box_{s.modality}_{k}.npz"
        np.savez_compressed(inputs / name, imgs=s.image, boxes=s.boxes)
    proc = run("segment", inputs, "-o", tmp_path / "segs", "--precision", "fp32")
    assert proc.returncode == 0, proc.stderr
    for k, s in enumerate(samples):
        name = f"{'3D' if s.is_3d else '2D'}Box_{s.modality}_{k}.npz"
        with np.load(tmp_path / "segs" / name, allow_pickle=False) as f:
            segs = f["segs"]
        assert segs.shape == s.image.shape[: 3 if s.is_3d else 2]
        assert segs.max() >= 1
    with open(tmp_path / "segs" / "efficiency.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(samples) and all(float(r["time"]) > 0 for r in rows)


@pytest.mark.parametrize(
    "args, message",
    [
        (["segment", "/nonexistent/scan.png", "--box", "1", "2", "3", "4"], "does not exist"),
        (["segment", "__SELF__"], "unsupported file type"),
    ],
)
def test_errors_are_actionable(args, message, tmp_path):
    if "__SELF__" in args:
        bad = tmp_path / "notes.xyz"
        bad.write_text("hello")
        args = [str(bad) if a == "__SELF__" else a for a in args]
    proc = run(*args)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_the_models_load_on_a_second_thread_while_the_input_is_read(tmp_path, monkeypatch, capsys):
    """``segment`` starts loading the models before it reads the input: the loader runs on its own thread and is
    still running while the file is read; its result is the Segmenter used; a loading error reaches the caller as
    the command's typed error (exit 2), and an input error is reported instead of the loader's result."""
    import threading

    from medsam_edge import cli, io
    from medsam_edge.errors import MedsamEdgeError, ModelFileError

    img = (np.arange(64 * 80) % 251).astype(np.uint8).reshape(64, 80)
    cv2.imwrite(str(tmp_path / "img.png"), img)
    loading, release, seen = threading.Event(), threading.Event(), {}

    class FakeSegmenter:
        class options:
            precision, device = "fake", "CPU"

        def __call__(self, image, boxes):
            seen["called_with"] = image.shape
            raise MedsamEdgeError("the fake segmenter was used")

    def slow_segmenter(args):
        seen["loader_thread"] = threading.current_thread().name
        loading.set()
        assert release.wait(30)
        return FakeSegmenter()

    real_read = io.read_image

    def read_while_loading(path, *a, **k):
        assert loading.wait(10), "the models were not being loaded while the input was read"
        seen["read_while_loading"] = not release.is_set()
        release.set()
        return real_read(path, *a, **k)

    monkeypatch.setattr(cli, "_segmenter", slow_segmenter)
    monkeypatch.setattr(io, "read_image", read_while_loading)
    assert cli.main(["segment", str(tmp_path / "img.png"), "--box", "5", "5", "40", "30", "-q"]) == 2
    assert "the fake segmenter was used" in capsys.readouterr().err
    assert seen == {"loader_thread": "medsam-edge-cli-load", "read_while_loading": True, "called_with": (64, 80)}

    def failing_segmenter(args):
        raise ModelFileError("encoder_int8.xml is missing (expected sha256 0123)")

    monkeypatch.setattr(io, "read_image", real_read)
    monkeypatch.setattr(cli, "_segmenter", failing_segmenter)
    assert cli.main(["segment", str(tmp_path / "img.png"), "--box", "5", "5", "40", "30", "-q"]) == 2
    assert "encoder_int8.xml is missing" in capsys.readouterr().err
    # an unreadable input is the error the user sees, although the (failing) loader also ran
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    assert cli.main(["segment", str(tmp_path / "broken.png"), "--box", "5", "5", "40", "30", "-q"]) == 2
    err = capsys.readouterr().err
    assert "broken.png" in err and "encoder_int8.xml" not in err


def test_box_outside_the_image_names_the_size(tmp_path):
    img = (np.arange(64 * 80) % 251).astype(np.uint8).reshape(64, 80)
    cv2.imwrite(str(tmp_path / "img.png"), img)
    proc = run("segment", tmp_path / "img.png", "--box", "100", "100", "120", "120", "--precision", "fp32")
    assert proc.returncode == 2
    assert "outside the image of width 80 and height 64" in proc.stderr


def test_help_and_info():
    proc = run("--help")
    assert proc.returncode == 0 and "examples:" in proc.stdout
    proc = run("info", "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["kernels"] in ("native", "numpy") and "CPU" in info["devices"]
    assert "encoder_fp16.bin" in info["models"]
    flags = Path("/proc/cpuinfo").read_text().split() if Path("/proc/cpuinfo").is_file() else []
    assert info["cpu_features"] == {f: f in flags for f in info["cpu_features"]}
    assert {"amx_int8", "avx512_bf16", "avx512_vnni", "avx_vnni"} <= set(info["cpu_features"])
    assert set(info["precisions"]) == {"fp32", "bf16", "int8"}
    assert ("bf16 on" in info["precisions"]["bf16"]) == (info["cpu_features"]["avx512_bf16"]
                                                         or info["cpu_features"]["amx_bf16"])


def test_eval_command(tmp_path):
    gt_dir, seg_dir = tmp_path / "gts", tmp_path / "segs"
    gt_dir.mkdir()
    seg_dir.mkdir()
    gts = np.zeros((40, 40), np.uint16)
    gts[5:20, 5:20] = 1
    gts[25:35, 20:38] = 2
    np.savez_compressed(gt_dir / "2DBox_CT_0.npz", gts=gts)
    segs = gts.copy()
    segs[5:20, 5:10] = 0
    np.savez_compressed(seg_dir / "2DBox_CT_0.npz", segs=segs)
    proc = run("eval", seg_dir, gt_dir)
    assert proc.returncode == 0, proc.stderr
    assert "CT" in proc.stdout and "DSC" in proc.stdout
