"""The public 2D API: results, typed errors for bad input, no torch at run time."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import medsam_edge
from medsam_edge import (
    ConfigurationError,
    InvalidBoxError,
    InvalidImageError,
    MedsamEdgeError,
    ModelFileError,
    NotReadyError,
    Segmenter,
)
from medsam_edge.examples import load_example
from medsam_edge.metrics import dice

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def seg():
    return Segmenter(precision="fp32", threads=2)


@pytest.fixture(scope="module")
def example():
    return load_example()


def test_example_result_shapes_and_accuracy(seg, example):
    res = seg(example.image, example.boxes)
    n, (h, w) = len(example.boxes), example.image.shape[:2]
    assert res.masks.shape == (n, h, w) and res.masks.dtype == bool
    assert res.scores.shape == (n,) and res.scores.dtype == np.float32
    assert res.label_map.shape == (h, w) and res.label_map.dtype == np.uint16
    assert res.boxes.shape == (n, 4)
    assert not res.masks.flags.writeable and not res.label_map.flags.writeable
    # nuclei are easy targets: every box must find its nucleus
    dsc = [dice(res.masks[i], example.ground_truth == i + 1) for i in range(n)]
    assert min(dsc) > 0.7, dsc
    # label map: later boxes win, every mask pixel is labelled
    for i in range(n):
        assert (res.label_map[res.masks[i]] >= i + 1).all()
    assert ((res.label_map > 0) == res.masks.any(axis=0)).all()


def test_two_step_equals_one_call(seg, example):
    seg.set_image(example.image)
    a = seg.predict(example.boxes[:2])
    b = seg(example.image, example.boxes[:2])
    assert np.array_equal(a.masks, b.masks)
    # batched decoding equals one box at a time
    one = seg.predict(example.boxes[1])
    assert np.array_equal(one.masks[0], a.masks[1])


def test_grey_equals_repeated_rgb_and_dtypes(seg, example):
    grey = example.image
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    a = seg(grey, example.boxes[:2])
    b = seg(rgb, example.boxes[:2])
    assert np.array_equal(a.masks, b.masks)
    # a uint16 image with the same content scaled is min-max normalised to nearly the same input
    c = seg(grey.astype(np.uint16) * 257, example.boxes[:2])
    agree = (c.masks == a.masks).mean()
    assert agree > 0.995


def test_zero_boxes(seg, example):
    res = seg(example.image, np.zeros((0, 4)))
    assert res.masks.shape == (0,) + example.image.shape[:2]
    assert res.label_map.max() == 0


def test_partly_outside_box_is_clipped(seg, example):
    h, w = example.image.shape[:2]
    res = seg(example.image, [[-20, -30, 40, 50], [w - 10, h - 10, w + 100, h + 100]])
    assert res.boxes.tolist() == [[0, 0, 40, 50], [w - 10, h - 10, w, h]]


@pytest.mark.parametrize(
    "image, match",
    [
        (np.zeros((0, 10), np.uint8), "empty"),
        (np.zeros((10, 0, 3), np.uint8), "empty"),
        (np.full((20, 20), 7, np.uint8), "constant"),
        (np.ones((4, 20, 20, 3), np.uint8), r"\(H, W\)"),
        (np.ones((20, 20, 2), np.uint8), "channels"),
        (np.ones((20, 20, 4), np.uint8), "alpha"),
        (np.where(np.eye(20) > 0, np.nan, 1.0), "NaN"),
        (np.where(np.eye(20) > 0, np.inf, 1.0), "infinite"),
        (np.ones((20, 20), bool), "dtype"),
        (np.array([["a", "b"], ["c", "d"]]), "dtype"),
        (np.arange(2000, dtype=np.uint8).reshape(1, 2000), "elongated"),
        ("not an image", "dtype"),
    ],
)
def test_bad_images_raise_typed_errors(seg, image, match):
    with pytest.raises(InvalidImageError, match=match):
        seg.set_image(image)


@pytest.mark.parametrize(
    "boxes, match",
    [
        ([[10, 10, 5, 20]], "inverted"),
        ([[10, 10, 20, 5]], "inverted"),
        ([[10, 10, 10, 20]], "zero width"),
        ([[600, 10, 700, 20]], "outside"),
        ([[-50, -50, -1, -1]], "outside"),
        ([[0, 0, np.nan, 10]], "NaN"),
        ([[0, 0, np.inf, 10]], "infinite"),
        ([[1, 2, 3]], "shape"),
        ([[[1, 2, 3, 4]]], "shape"),
        ("abc", "numbers"),
    ],
)
def test_bad_boxes_raise_typed_errors(seg, example, boxes, match):
    seg.set_image(example.image)
    with pytest.raises(InvalidBoxError, match=match):
        seg.predict(boxes)


def test_errors_share_one_base_class():
    for cls in (InvalidImageError, InvalidBoxError, NotReadyError, ModelFileError, ConfigurationError):
        assert issubclass(cls, MedsamEdgeError)


def test_predict_before_set_image():
    fresh = Segmenter(precision="fp32", threads=1)
    with pytest.raises(NotReadyError, match="set_image"):
        fresh.predict([[0, 0, 10, 10]])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"precision": "int4"}, "precision"),
        ({"threads": 0}, "threads"),
        ({"threads": 1.5}, "threads"),
        ({"performance_hint": "FAST"}, "performance_hint"),
        ({"device": ""}, "device"),
    ],
)
def test_bad_options(kwargs, match):
    with pytest.raises(ConfigurationError, match=match):
        Segmenter(**kwargs)


def test_unknown_device_is_a_typed_error():
    with pytest.raises(MedsamEdgeError, match="NOSUCHDEVICE"):
        Segmenter(precision="fp32", device="NOSUCHDEVICE")


def _copy_models(tmp_path):
    import shutil

    from medsam_edge.models import MODEL_DIR

    dst = tmp_path / "models"
    shutil.copytree(MODEL_DIR, dst, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    return dst


def test_corrupt_model_file_names_the_file(tmp_path):
    folder = _copy_models(tmp_path)
    target = folder / "encoder_fp32c.bin"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="encoder_fp32c.bin.*expected [0-9a-f]{64}"):
        Segmenter(precision="fp32", model_dir=folder)


# decoder_int8: the int8 variant's decoder for CPUs without bf16, checked whatever CPU runs
@pytest.mark.parametrize("precision, name", [("fp32", "decoder_fp32c.bin"), ("int8", "decoder_int8.bin")])
def test_truncated_and_missing_model_files(tmp_path, precision, name):
    folder = _copy_models(tmp_path)
    dec = folder / name
    dec.write_bytes(dec.read_bytes()[:1000])
    with pytest.raises(ModelFileError, match=f"{name}.*truncated"):
        Segmenter(precision=precision, model_dir=folder)
    dec.unlink()
    with pytest.raises(ModelFileError, match=f"{name}.*missing.*regenerate"):
        Segmenter(precision=precision, model_dir=folder)


def test_segmenting_never_imports_torch():
    code = textwrap.dedent(
        """
        import sys
        import numpy as np
        import medsam_edge
        from medsam_edge.examples import load_example
        ex = load_example()
        res = medsam_edge.Segmenter(precision="fp32", threads=1)(ex.image, ex.boxes)
        assert res.masks.any()
        bad = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "timm", "nncf"))
        print("BAD", bad)
        sys.exit(1 if bad else 0)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_info(seg):
    info = seg.info
    assert info["precision"] == "fp32" and info["device"] == "CPU"
    assert "f32" in info["execution_precision"].lower()
    assert info["kernels"] in ("native", "numpy")
    assert info["volume_strategy"] == "slicewise" and info["refine"] is None
    assert medsam_edge.__version__


def test_slice_step_on_a_labelled_volume_encodes_fewer_slices_and_keeps_its_score(seg):
    """The slice-skipping mode on the labelled MNI fixture (GM/WM boxes over 13-29 slices), scored against its
    ground truth: k = 2 encodes about half the slices and its DSC stays within 3 points of k = 1."""
    from calibration.data import load_fixtures
    from medsam_edge.metrics import compute_dsc_nsd

    vol = load_fixtures("3d")[0]
    spacing = tuple(float(v) for v in np.asarray(vol.spacing, float)[::-1])
    runs = {k: seg.segment_volume(vol.image, vol.boxes, slice_step=k) for k in (1, 2)}
    scores = {k: compute_dsc_nsd(np.asarray(r.label_map), vol.gts, spacing, 2.0) for k, r in runs.items()}
    assert runs[2].slice_step == 2 and runs[2].encoded_slices <= 0.6 * runs[1].encoded_slices
    assert runs[2].label_map.max() == len(vol.boxes)
    assert float(scores[2].mean_dsc) > float(scores[1].mean_dsc) - 0.03, (scores[1].mean_dsc, scores[2].mean_dsc)
    for bad in (0, 2.0, None):
        with pytest.raises(ConfigurationError, match="slice_step"):
            seg.segment_volume(vol.image, vol.boxes, slice_step=bad)


def test_models_compile_on_two_threads_and_none_is_left_running(tmp_path):
    """Engine.open imports the decoder on a helper thread while it does the encoder; both are done on return, and
    a broken encoder file is the error raised even though the decoder thread succeeded."""
    import shutil
    import threading

    from medsam_edge.models import MODEL_DIR, load_manifest

    seg = Segmenter(precision="fp32", cache_dir=None)
    assert not [t for t in threading.enumerate() if t.name.startswith("medsam-edge-compile")]
    assert sorted(e["model"] for e in seg.runtime.log) == ["decoder_fp32c.xml", "encoder_fp32c.xml"]
    variant = load_manifest()["variants"]["fp32"]
    for name in (variant["encoder"], variant["decoder"]):
        for suffix in (".xml", ".bin"):
            shutil.copy(MODEL_DIR / name.replace(".xml", suffix), tmp_path / name.replace(".xml", suffix))
    shutil.copy(MODEL_DIR / "manifest.json", tmp_path / "manifest.json")
    shutil.copy(MODEL_DIR / "golden.npz", tmp_path / "golden.npz")
    (tmp_path / variant["encoder"]).write_text("<net><broken")
    with pytest.raises(ModelFileError, match="encoder"):
        Segmenter(precision="fp32", model_dir=tmp_path, verify_models=False, cache_dir=None)
    assert not [t for t in threading.enumerate() if t.name.startswith("medsam-edge-compile")]


def test_array_volumes_never_import_simpleitk_and_files_still_do(tmp_path):
    """SimpleITK costs ~105 MB of RSS when imported; a volume given as an array does not need it (io imports it on
    first use), nor OpenCV a 2D image with the native kernels. A NIfTI path afterwards is still read, with its
    geometry."""
    code = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        import medsam_edge
        vol = np.zeros((6, 40, 40), np.int16)
        vol[1:5, 10:30, 10:30] = 300
        seg = medsam_edge.Segmenter(precision="fp32", threads=1)
        res = seg.segment_volume(vol, [[8, 8, 1, 32, 32, 4]], window="abdomen")
        assert res.label_map.max() == 1
        assert "SimpleITK" not in sys.modules, "imported by the array path"
        image = np.zeros((64, 80), np.uint8)
        image[20:40, 20:50] = 200
        assert seg(image, [[15, 15, 55, 45]]).label_map.max() == 1
        # OpenCV (15 MB RSS) only backs the NumPy twin and the opt-in paths; the native kernels do without it
        from medsam_edge import kernels
        assert kernels.BACKEND != "native" or "cv2" not in sys.modules, "cv2 imported with native kernels"
        import SimpleITK as sitk
        img = sitk.GetImageFromArray(vol)
        img.SetSpacing((0.5, 0.5, 3.0))
        sitk.WriteImage(img, r"{tmp_path / 'v.nii.gz'}")
        res = seg.segment_volume(r"{tmp_path / 'v.nii.gz'}", [[8, 8, 1, 32, 32, 4]], window="abdomen")
        assert res.label_map.max() == 1 and tuple(res.geometry.spacing) == (0.5, 0.5, 3.0)
        res = seg.segment_volume(img, [[8, 8, 1, 32, 32, 4]], window="abdomen")
        assert res.geometry is not None and tuple(res.geometry.spacing) == (0.5, 0.5, 3.0)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_segmenting_does_not_load_the_model_converter_and_convert_model_still_works():
    """The runtime imports openvino without ``openvino.tools.ovc`` (0.06 s of a cold start); a caller's
    ``openvino.convert_model`` afterwards loads the real converter and converts, and the placeholder is gone."""
    code = textwrap.dedent(
        """
        import sys
        import numpy as np
        import medsam_edge
        seg = medsam_edge.Segmenter(precision="fp32", threads=1)
        image = np.zeros((64, 80), np.uint8)
        image[20:40, 20:50] = 200
        assert seg(image, [[15, 15, 55, 45]]).label_map.max() == 1
        loaded = sorted(m for m in sys.modules if m.startswith("openvino.tools") or "telemetry" in m)
        assert loaded == [], loaded
        import openvino as ov
        import torch
        model = ov.convert_model(torch.nn.Linear(3, 2), example_input=torch.zeros(1, 3), input=[1, 3])
        assert isinstance(model, ov.Model) and model.output(0).get_partial_shape() == ov.PartialShape([1, 2])
        import openvino.tools.ovc as ovc
        assert ovc.__file__ and ovc.convert_model is not ov.convert_model
        assert sys.modules["openvino.tools.ovc"] is ovc
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
