"""The napari plugin's Qt-free logic (medsam_edge/napari/_core.py, _io.py): no napari, no Qt, no compiled model."""

from __future__ import annotations

import numpy as np
import pytest

from medsam_edge import Segmenter
from medsam_edge.engine import Engine
from medsam_edge.napari import _core as core
from medsam_edge.napari import _io as plugin_io

pytestmark = [pytest.mark.unit]


def _fake_session(capacity: int = 3) -> tuple[core.Session, list[int]]:
    """A session whose segmenter's decoder marks the box itself (logit +1 inside, -1 outside, 256 frame)."""
    encoded: list[int] = []

    def encoder(tensor: np.ndarray) -> np.ndarray:
        encoded.append(1)
        return np.full((1, 256, 64, 64), float(tensor.mean()), dtype=np.float32)

    def decoder(embedding: np.ndarray, boxes256: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits = np.full((len(boxes256), 256, 256), -1.0, dtype=np.float32)
        for i, (x0, y0, x1, y1) in enumerate(np.round(boxes256).astype(int)):
            logits[i, y0:y1 + 1, x0:x1 + 1] = 1.0
        return logits, np.ones(len(boxes256), dtype=np.float32)

    def make(precision: str = "fp32") -> Segmenter:
        return Segmenter(engine=Engine(encoder, decoder))

    return core.Session(make, cache_slices=capacity), encoded


def test_rectangles_to_boxes_2d_and_3d():
    vertices = core.rectangle_vertices([10, 20, 30, 50])
    assert vertices.tolist() == [[20, 10], [20, 30], [50, 30], [50, 10]]
    (rect,) = core.rectangles([vertices, vertices[:2]], ["rectangle", "line"], 2)
    assert rect.box.tolist() == [10, 20, 30, 50] and rect.z is None
    flat = core.rectangles([core.rectangle_vertices([0, 0, 0, 5])], ["rectangle"], 2)
    assert flat == []  # zero height
    on_slice = core.rectangle_vertices([1, 2, 3, 4], z=7)
    tilted = on_slice.copy()
    tilted[0, 0] = 8
    rects = core.rectangles([on_slice, tilted], ["rectangle", "rectangle"], 3,
                            {"z_min": np.array([5, -1]), "z_max": np.array([9, -1])})
    assert len(rects) == 1 and rects[0].z == 7 and rects[0].z_range == (5, 9)


def test_to_image_coords_through_scale_and_translate():
    v = np.array([[4.0, 6.0]])
    out = core.to_image_coords(v, shapes_scale=(1, 1), shapes_translate=(0, 0), image_scale=(2, 3),
                               image_translate=(0, 3))
    assert out.tolist() == [[2.0, 1.0]]


def test_box3d_rules():
    a = core.Rectangle(b"a", np.array([10.0, 10, 20, 20]), z=5)
    b = core.Rectangle(b"b", np.array([12.0, 8, 24, 18]), z=9)
    assert core.group_3d([a, b]) == [[a, b]]
    assert core.box3d([a, b], depth=40).tolist() == [[10, 8, 5, 24, 20, 9]]
    assert core.box3d([a], depth=40, z_range=(2, 4)).tolist() == [[10, 10, 2, 20, 20, 5]]  # widened to slice 5
    assert core.box3d([a], depth=8).tolist() == [[10, 10, 0, 20, 20, 7]]  # +-5, clipped
    c = core.Rectangle(b"c", a.box, z=5, z_range=(1, 30))
    assert core.group_3d([c, b]) == [[c], [b]]
    assert core.box3d([c], depth=20).tolist() == [[10, 10, 1, 20, 20, 19]]


def test_embedding_cache_is_bounded_lru():
    cache = core.EmbeddingCache(2)
    cache.put(("L", 0, "fp32"), "s0")
    cache.put(("L", 1, "fp32"), "s1")
    assert cache.get(("L", 0, "fp32")) == "s0"  # 0 becomes the newest
    cache.put(("L", 2, "fp32"), "s2")
    assert cache.keys() == [("L", 0, "fp32"), ("L", 2, "fp32")]
    assert cache.get(("L", 1, "fp32")) is None and (cache.hits, cache.misses) == (1, 1)
    cache.put(("M", 0, "fp32"), "m")
    cache.drop_layer("L")
    assert cache.keys() == [("M", 0, "fp32")]


def test_object_stack_paint_undo_remove_accept():
    labels = np.zeros((6, 6), dtype=np.uint16)
    stack = core.ObjectStack(labels)
    m1 = np.zeros((6, 6), bool)
    m1[1:4, 1:4] = True
    m2 = np.zeros((6, 6), bool)
    m2[2:5, 2:5] = True
    m3 = np.zeros((6, 6), bool)
    m3[0, :] = True
    o1 = stack.paint(m1, [b"1"])
    stack.accept()
    o2 = stack.paint(m2, [b"2"])
    o3 = stack.paint(m3, [b"3"])
    assert (o1.label, o2.label, o3.label) == (1, 2, 3)
    expected = np.where(m3, 3, np.where(m2, 2, np.where(m1, 1, 0)))
    assert (labels == expected).all()
    assert stack.drop_missing({b"1", b"3"}) == [o2]  # rectangle 2 moved: its pending object goes, 3 stays on top
    assert (labels == np.where(m3, 3, np.where(m1, 1, 0))).all()
    assert stack.undo() is o3 and (labels == np.where(m1, 1, 0)).all()
    assert stack.next_label() == 3  # label 2 was removed out of order: never reused while 3 was in use
    assert stack.undo() is o1 and not labels.any() and stack.undo() is None
    assert stack.done_keys() == set()


def test_object_stack_volume_offsets():
    labels = np.zeros((5, 4, 4), dtype=np.uint16)
    stack = core.ObjectStack(labels)
    plane = np.zeros((4, 4), bool)
    plane[1, 1:3] = True
    stack.paint(plane, [b"p"], (3,))  # one slice of a volume
    block = np.zeros((2, 4, 4), bool)
    block[:, 2, 2] = True
    obj = stack.paint(block, [b"b"], (1,))  # a z-range
    assert labels[3, 1, 1:3].tolist() == [1, 1] and labels[1:3, 2, 2].tolist() == [2, 2] and labels.sum() == 6
    assert obj.voxels == 2 and obj.region[0] == slice(1, 3)
    empty = stack.paint(np.zeros((4, 4), bool), [b"e"], (0,))
    assert empty.voxels == 0
    stack.undo(), stack.undo(), stack.undo()
    assert not labels.any()


def test_session_encodes_each_slice_once_and_segments_like_the_library():
    session, encoded = _fake_session(capacity=2)
    volume = np.random.default_rng(0).integers(0, 2000, (4, 32, 40)).astype(np.int16)
    source = core.ImageSource("vol", volume, modality="MR")
    boxes = np.array([[5.0, 6, 20, 25], [1, 1, 9, 9]])
    first = session.segment_2d(source, 2, boxes)
    session.segment_2d(source, 2, boxes[:1])
    assert len(encoded) == 1 and session.timing.encoded == 0
    from medsam_edge.intensity import slice_converter

    reference = session.segmenter()(slice_converter(volume)(2), boxes)
    assert (first.label_map == reference.label_map).all()
    for z in (0, 1, 3):
        session.segment_2d(source, z, boxes[:1])
    assert len(session.cache) == 2 and len(encoded) == 5  # + the reference call above
    z0, mask = session.segment_3d(source, np.array([[5.0, 6, 1, 20, 25, 2]]))
    library = session.segmenter().segment_volume(volume, np.array([[5.0, 6, 1, 20, 25, 2]]), modality="MR")
    assert z0 == 1 and mask.shape == (2, 32, 40) and (mask == (library.label_map[1:3] > 0)).all()
    assert not library.label_map[[0, 3]].any()


def test_image_source_2d_rules():
    ct = np.linspace(-1000, 1000, 64 * 64).reshape(64, 64).astype(np.int16)
    assert core.ImageSource("a", ct, modality="CT").image().dtype == np.uint8  # CT window, like the CLI
    assert core.ImageSource("b", ct).image().dtype == np.int16  # min-max normalised by the segmenter
    rgb = np.zeros((8, 8, 3), np.uint8)
    src = core.ImageSource("c", rgb, rgb=True)
    assert src.ndim == 2 and src.shape == (8, 8)


def test_reader_layers_and_writer_geometry(tmp_path):
    import SimpleITK as sitk

    from medsam_edge import io as medio

    vol = (np.arange(4 * 5 * 6) % 50).reshape(4, 5, 6).astype(np.int16)
    image = sitk.GetImageFromArray(vol)
    image.SetSpacing((0.5, 0.7, 2.5))
    image.SetOrigin((1.0, -2.0, 3.0))
    image.SetDirection((0, 1, 0, 1, 0, 0, 0, 0, -1))
    path = tmp_path / "v.nii.gz"
    sitk.WriteImage(image, str(path))
    assert plugin_io.get_reader(str(path)) is not None and plugin_io.get_reader(str(tmp_path / "a.png")) is None
    ((data, kwargs, kind),) = plugin_io.read_layers(str(path))
    assert kind == "image" and kwargs["scale"] == pytest.approx((2.5, 0.7, 0.5)) and (data == vol).all()
    out = tmp_path / "labels.nrrd"
    labels = (vol > 20).astype(np.uint16)
    assert plugin_io.write_labels(str(out), labels, {"metadata": kwargs["metadata"], "scale": kwargs["scale"]}) == [
        str(out)]
    back = medio.read_image(out)
    source_geometry = medio.read_image(path).geometry
    assert back.geometry.spacing == pytest.approx(source_geometry.spacing)
    assert back.geometry.origin == pytest.approx(source_geometry.origin)
    assert back.geometry.direction == pytest.approx(source_geometry.direction)
    assert (back.array == labels).all()
    # no reader metadata: scale and translate become spacing and origin
    plain = tmp_path / "plain.mha"
    plugin_io.write_labels(str(plain), labels, {"scale": (3.0, 2.0, 1.0), "translate": (7.0, 8.0, 9.0)})
    geometry = medio.read_image(plain).geometry
    assert geometry.spacing == pytest.approx((1, 2, 3)) and geometry.origin == pytest.approx((9, 8, 7))


def test_reader_npz_boxes_and_sample():
    from pathlib import Path

    fixture = Path(__file__).parent / "fixtures" / "3D_MR_mni_block_2mm.npz"
    image, boxes = plugin_io.read_layers(str(fixture))
    assert image[2] == "image" and image[1]["scale"] == (2.0, 2.0, 2.0)
    data, kwargs, kind = boxes
    assert kind == "shapes" and len(data) == 3
    stored = np.load(fixture)["boxes"]
    rects = core.rectangles(data, ["rectangle"] * 3, 3, kwargs["features"])
    for rect, box in zip(rects, stored):
        assert rect.box.tolist() == box[[0, 1, 3, 4]].tolist() and rect.z_range == (box[2], box[5])
        assert core.box3d([rect], depth=40).tolist() == [box.tolist()]
    sample_image, sample_boxes = plugin_io.sample_nuclei()
    assert sample_image[0].shape == (512, 512) and len(sample_boxes[0]) == 6


def test_import_medsam_edge_does_not_import_the_plugin():
    import subprocess
    import sys

    code = ("import sys, medsam_edge; bad = [m for m in sys.modules if m.startswith('medsam_edge.napari') "
            "or m.split('.')[0] in ('napari', 'qtpy', 'PySide6', 'PyQt5', 'PyQt6')]; print(bad); assert not bad")
    subprocess.run([sys.executable, "-c", code], check=True)
