"""The napari plugin in a real viewer under a virtual display (Xvfb), against the library's own results.

Needs the ``gui-test`` extra and Debian's ``xvfb`` plus the Qt xcb libraries (``scripts/gui_deps.sh``). Skips only
when napari is not installed; with napari installed, a missing Xvfb is a failure, not a skip. The module starts its
own Xvfb (``-displayfd``: a free display number) before the first QApplication exists and uses Qt's xcb platform
(``QT_QPA_PLATFORM=offscreen`` cannot draw image layers). Screenshots go to
$TMPDIR/medsam_edge_napari_screens/ (``MEDSAM_EDGE_UPDATE_SCREENSHOTS=1``: docs/napari_2d.png, docs/napari_3d.png).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

napari = pytest.importorskip("napari")

from medsam_edge import Segmenter  # noqa: E402
from medsam_edge.napari import _core as core  # noqa: E402

pytestmark = [pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
SHOT_DIR = Path(os.environ.get("TMPDIR", "/tmp")) / "medsam_edge_napari_screens"
FIXTURE_3D = ROOT / "tests" / "fixtures" / "3D_MR_mni_block_2mm.npz"
WIDGET = "Segment boxes (LiteMedSAM)"
WAIT_MS = 60_000


def _free_display() -> int:
    for number in range(90, 200):
        if not Path(f"/tmp/.X{number}-lock").exists() and not Path(f"/tmp/.X11-unix/X{number}").exists():
            return number
    pytest.fail("no free X display number in :90-:199")


@pytest.fixture(scope="session", autouse=True)
def virtual_display():
    """Xvfb for this module's session, started before pytest-qt creates the QApplication."""
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        pytest.fail("napari is installed but Xvfb is not: run scripts/gui_deps.sh (Debian package xvfb)")
    number = _free_display()
    proc = subprocess.Popen([xvfb, f":{number}", "-screen", "0", "1600x1000x24", "-nolisten", "tcp", "-noreset"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    socket = Path(f"/tmp/.X11-unix/X{number}")
    deadline = time.monotonic() + 20
    while not socket.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"Xvfb :{number} did not start: {proc.stderr.read().decode(errors='replace')[-500:]}")
        time.sleep(0.05)
    saved = {key: os.environ.get(key) for key in ("DISPLAY", "QT_QPA_PLATFORM")}
    os.environ["DISPLAY"], os.environ["QT_QPA_PLATFORM"] = f":{number}", "xcb"
    yield f":{number}"
    proc.terminate()
    proc.wait(10)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def library() -> Segmenter:
    return Segmenter()


def _open_widget(viewer):
    viewer.window.resize(1500, 900)
    _, widget = viewer.window.add_plugin_dock_widget("medsam_edge", WIDGET)
    return widget


def _wait(qtbot, widget) -> None:
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    assert not widget.status.text().startswith("error"), widget.status.text()


def _screenshot(viewer, qtbot, name: str) -> Path:
    qtbot.wait(300)  # let vispy draw the last refresh
    # the committed pictures (docs/) are rewritten only on request, so a test run leaves the checkout clean
    folder = ROOT / "docs" if os.environ.get("MEDSAM_EDGE_UPDATE_SCREENSHOTS") == "1" else SHOT_DIR
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(path), canvas_only=False, flash=False)
    image = viewer.screenshot(canvas_only=True, flash=False)
    assert image.std() > 5, "the canvas screenshot is blank"
    return path


def test_2d_sample_boxes_to_labels_undo(make_napari_viewer, qtbot, library):
    viewer = make_napari_viewer(show=True)
    viewer.open_sample("medsam_edge", "nuclei")
    widget = _open_widget(viewer)
    image = viewer.layers["nuclei"].data
    shapes = viewer.layers["nuclei boxes"]
    boxes = np.array([r.box for r in core.rectangles(shapes.data, shapes.shape_type, 2)])

    widget.segment()
    _wait(qtbot, widget)
    labels = viewer.layers["nuclei labels"]
    assert (labels.data == library(image, boxes).label_map).all()
    assert widget.session.timing.encoded == 1

    extra = [300.0, 300.0, 360.0, 350.0]  # XYXY
    shapes.add_rectangles([core.rectangle_vertices(extra)])  # "segment while drawing": the edit triggers a run
    qtbot.waitUntil(lambda: len(widget.stack().objects) == 7, timeout=WAIT_MS)
    _wait(qtbot, widget)
    assert widget.session.timing.encoded == 0  # the embedding came from the cache
    expected = library(image, np.vstack([boxes, extra])).label_map
    assert (labels.data == expected).all()
    _screenshot(viewer, qtbot, "napari_2d.png")

    widget.undo()
    assert (labels.data == library(image, boxes).label_map).all()
    assert len(shapes.data) == 6  # its rectangle went with it
    widget.accept()
    assert not widget.stack().pending()


def test_3d_box_with_z_range_and_two_boxes(make_napari_viewer, qtbot, library):
    """A volume read by the plugin (2 mm MNI block): one rectangle + below/above, then the same 3D box as two
    rectangles on its first and last slices with the propagation; each equals segment_volume for that box."""
    viewer = make_napari_viewer(show=True)
    viewer.open(str(FIXTURE_3D), plugin="medsam_edge")
    widget = _open_widget(viewer)
    name = FIXTURE_3D.stem
    volume = viewer.layers[name].data
    boxes_layer = viewer.layers[f"{name} boxes"]
    assert tuple(viewer.layers[name].scale) == (2.0, 2.0, 2.0) and len(boxes_layer.data) == 3  # the file's boxes
    assert widget.mode_box.currentText() == "3D"
    boxes_layer.selected_data = set(range(3))
    boxes_layer.remove_selected()  # the file's boxes span 13-29 slices: too slow for a test on a shared CPU

    x0, y0, x1, y1 = np.load(FIXTURE_3D)["boxes"][0][[0, 1, 3, 4]].astype(np.float64)
    z_mid, half = 28, 2
    box3d = np.array([[x0, y0, z_mid - half, x1, y1, z_mid + half]])
    widget.below_spin.setValue(half)
    widget.above_spin.setValue(half)
    boxes_layer.add_rectangles([core.rectangle_vertices([x0, y0, x1, y1], z_mid)])
    widget.segment()
    _wait(qtbot, widget)
    labels = viewer.layers[f"{name} labels"]
    slicewise = library.segment_volume(volume, box3d, strategy="slicewise").label_map
    assert slicewise.any() and (labels.data == slicewise).all()
    assert widget.session.timing.encoded == 2 * half + 1  # only the box's slices were encoded
    viewer.dims.set_point(0, z_mid * 2.0)
    _screenshot(viewer, qtbot, "napari_3d.png")

    widget.undo()
    assert not labels.data.any() and len(boxes_layer.data) == 0
    widget.strategy_box.setCurrentText("propagate")
    boxes_layer.add_rectangles([core.rectangle_vertices([x0, y0, x1, y1], z) for z in (z_mid - half, z_mid + half)])
    widget.segment()
    _wait(qtbot, widget)
    propagated = library.segment_volume(volume, box3d, strategy="propagate").label_map
    assert (labels.data == propagated).all() and len(widget.stack().objects) == 1


def test_npe2_reader_writer_roundtrip_keeps_geometry(tmp_path):
    """Without Qt: npe2 finds the reader and writer through the installed manifest."""
    import npe2
    import SimpleITK as sitk

    from medsam_edge import io as medio

    vol = (np.arange(6 * 7 * 8) % 90).reshape(6, 7, 8).astype(np.int16)
    image = sitk.GetImageFromArray(vol)
    image.SetSpacing((0.8, 0.9, 3.0))
    image.SetOrigin((-10.0, 20.0, 5.0))
    image.SetDirection((1, 0, 0, 0, -1, 0, 0, 0, 1))
    path = tmp_path / "ct.nrrd"
    sitk.WriteImage(image, str(path))
    layers = npe2.read([str(path)], stack=False, plugin_name="medsam_edge")
    (data, kwargs, kind) = layers[0]
    assert kind == "image" and tuple(kwargs["scale"]) == pytest.approx((3.0, 0.9, 0.8))
    labels = (np.asarray(data) > 40).astype(np.uint16)
    out = tmp_path / "labels.nii.gz"
    written = npe2.write(str(out), [(labels, {"metadata": kwargs["metadata"], "scale": kwargs["scale"]}, "labels")],
                         plugin_name="medsam_edge")
    assert written == [str(out)]
    back = medio.read_image(out)
    assert (back.array == labels).all()
    assert back.geometry.spacing == pytest.approx((0.8, 0.9, 3.0))
    assert back.geometry.origin == pytest.approx((-10.0, 20.0, 5.0))
    assert back.geometry.direction == pytest.approx((1, 0, 0, 0, -1, 0, 0, 0, 1))
