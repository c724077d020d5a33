"""The dock widget: rectangles in a Shapes layer -> objects in a Labels layer (thin Qt layer over :mod:`._core`).

2D mode: every rectangle is an object; on a volume it is segmented on the slice it was drawn on. With "auto" on,
a drawn, moved or deleted rectangle is (re)segmented at once. 3D mode: a rectangle plus the "below" / "above"
slice counts, two rectangles on two slices, or a 3D box read from a challenge file (its ``z_min`` / ``z_max``
features) give one 3D box, segmented with :meth:`medsam_edge.Segmenter.segment_volume` on that z-range.

Model work (encoding, decoding, the 3D loop) runs in a napari thread worker; painting runs in the Qt thread when the
worker returns. Requests that arrive while a worker runs are merged into one follow-up run.
"""

from __future__ import annotations

import itertools
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels, Shapes
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..errors import MedsamEdgeError
from ._core import (
    DEFAULT_HALF_DEPTH,
    PRECISIONS,
    ImageSource,
    ObjectStack,
    Rectangle,
    Session,
    box3d,
    group_3d,
    rectangle_key,
    rectangles,
    to_image_coords,
)
from ._io import META_KEY

if TYPE_CHECKING:
    import napari

STRATEGIES = ("slicewise", "propagate")
_tokens = itertools.count(1)


@dataclass(frozen=True)
class _Job:
    """One model request: 2D boxes on one image/slice, or one 3D box."""

    keys: tuple[tuple[bytes, ...], ...]  # rectangle keys per object
    boxes: np.ndarray
    z: int | None = None
    volume: bool = False


@dataclass(frozen=True)
class _Painted:
    keys: tuple[bytes, ...]
    mask: np.ndarray
    offset: tuple[int, ...]


class SegmentWidget(QWidget):
    """Segment the rectangles of a Shapes layer with LiteMedSAM; one label id per object, undo, accept."""

    def __init__(self, napari_viewer: "napari.viewer.Viewer", session: Session | None = None) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session = session or Session()
        self._stacks: dict[int, tuple[Labels, ObjectStack]] = {}
        self._layer_tokens: "weakref.WeakKeyDictionary[Any, int]" = weakref.WeakKeyDictionary()
        self._sources: dict[int, ImageSource] = {}
        self._worker = None
        self._again = False
        self._watched: Shapes | None = None
        self._image: int | None = None  # token of the image the mode was last chosen for
        self._build()
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(150)
        self._debounce.timeout.connect(self._auto_segment)
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self._refresh_layers()

    # ------------------------------------------------------------------------------------------------ layout
    def _build(self) -> None:
        self.image_box = QComboBox()
        self.shapes_box = QComboBox()
        self.mode_box = QComboBox()
        self.mode_box.addItems(["2D", "3D"])
        self.precision_box = QComboBox()
        self.precision_box.addItems(list(PRECISIONS))
        self.strategy_box = QComboBox()
        self.strategy_box.addItems(list(STRATEGIES))
        self.below_spin, self.above_spin = QSpinBox(), QSpinBox()
        for spin in (self.below_spin, self.above_spin):
            spin.setRange(0, 4096)
            spin.setValue(DEFAULT_HALF_DEPTH)
        self.auto_check = QCheckBox("segment while drawing (2D)")
        self.auto_check.setChecked(True)
        self.segment_button = QPushButton("Segment")
        self.accept_button = QPushButton("Accept")
        self.undo_button = QPushButton("Undo")
        self.status = QLabel("draw rectangles in the boxes layer")
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("image", self.image_box)
        form.addRow("boxes", self.shapes_box)
        form.addRow("mode", self.mode_box)
        form.addRow("precision", self.precision_box)
        form.addRow("3D strategy", self.strategy_box)
        form.addRow("slices below box", self.below_spin)
        form.addRow("slices above box", self.above_spin)
        buttons = QHBoxLayout()
        for button in (self.segment_button, self.accept_button, self.undo_button):
            buttons.addWidget(button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.auto_check)
        layout.addLayout(buttons)
        layout.addWidget(self.status)
        layout.addStretch(1)

        self.segment_button.clicked.connect(self.segment)
        self.accept_button.clicked.connect(self.accept)
        self.undo_button.clicked.connect(self.undo)
        self.image_box.currentIndexChanged.connect(self._image_changed)
        self.shapes_box.currentIndexChanged.connect(self._watch_shapes)

    # ------------------------------------------------------------------------------------------------ layers
    def _layers(self, kind: type) -> list:
        return [layer for layer in self.viewer.layers if isinstance(layer, kind)]

    def _fill(self, box: QComboBox, layers: list) -> None:
        current = box.currentText()
        box.blockSignals(True)
        box.clear()
        box.addItems([layer.name for layer in layers])
        if current in [layer.name for layer in layers]:
            box.setCurrentText(current)
        box.blockSignals(False)

    def _refresh_layers(self, event: Any = None) -> None:
        self._fill(self.image_box, self._layers(Image))
        self._fill(self.shapes_box, self._layers(Shapes))
        live = {self._token(layer) for layer in self._layers(Image)}
        for token in [t for t in self._sources if t not in live]:
            self._forget(token)
        for token, (labels, _) in list(self._stacks.items()):
            if labels not in self.viewer.layers:
                del self._stacks[token]
        self._image_changed()

    def _image_changed(self, *_: Any) -> None:
        image = self.image_layer()
        token = self._token(image) if image is not None else None
        if token != self._image:  # a new image: 3D mode for volumes; other layer events keep the user's choice
            self._image = token
            self.mode_box.setCurrentText("3D" if image is not None and self._ndim(image) == 3 else "2D")
        if image is not None and self.shapes_box.findText(f"{image.name} boxes") >= 0:
            self.shapes_box.setCurrentText(f"{image.name} boxes")
        self._watch_shapes()

    def _watch_shapes(self, *_: Any) -> None:
        shapes = self.shapes_layer()
        if shapes is self._watched:
            return
        if self._watched is not None:
            self._watched.events.data.disconnect(self._shapes_edited)
        self._watched = shapes
        if shapes is not None:
            shapes.events.data.connect(self._shapes_edited)

    def image_layer(self) -> Image | None:
        name = self.image_box.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def shapes_layer(self) -> Shapes | None:
        name = self.shapes_box.currentText()
        layer = self.viewer.layers[name] if name in self.viewer.layers else None
        return layer if isinstance(layer, Shapes) else None

    def boxes_layer(self) -> Shapes:
        """The selected Shapes layer; one named "<image> boxes" is created (rectangle mode) when there is none."""
        shapes = self.shapes_layer()
        if shapes is None:
            image = self._require_image()
            shapes = self.viewer.add_shapes(
                ndim=self._ndim(image), name=f"{image.name} boxes", scale=image.scale[-self._ndim(image):],
                translate=image.translate[-self._ndim(image):], edge_color="yellow", face_color="transparent",
                edge_width=1,
            )
            shapes.mode = "add_rectangle"
            self.shapes_box.setCurrentText(shapes.name)
            self._watch_shapes()
        return shapes

    def labels_layer(self) -> Labels | None:
        image = self.image_layer()
        entry = self._stacks.get(self._token(image)) if image is not None else None
        return entry[0] if entry else None

    def stack(self) -> ObjectStack | None:
        image = self.image_layer()
        entry = self._stacks.get(self._token(image)) if image is not None else None
        return entry[1] if entry else None

    def _require_image(self) -> Image:
        image = self.image_layer()
        if image is None:
            raise MedsamEdgeError("open an image first (File > Open, or File > Open Sample > medsam_edge)")
        return image

    @staticmethod
    def _ndim(image: Image) -> int:
        return image.data.ndim - (1 if image.rgb else 0)

    def _token(self, layer: Any) -> int:
        if layer not in self._layer_tokens:
            self._layer_tokens[layer] = next(_tokens)
            if isinstance(layer, Image):
                token = self._layer_tokens[layer]
                layer.events.data.connect(lambda *_: self._forget(token))
        return self._layer_tokens[layer]

    def _forget(self, token: int) -> None:
        self._sources.pop(token, None)
        self.session.cache.drop_layer(token)

    def _source(self, image: Image) -> ImageSource:
        token = self._token(image)
        if token not in self._sources:
            meta = (image.metadata or {}).get(META_KEY, {})
            self._sources[token] = ImageSource(token, image.data, rgb=image.rgb, modality=meta.get("modality"))
        return self._sources[token]

    def _labels_for(self, image: Image) -> tuple[Labels, ObjectStack]:
        token = self._token(image)
        entry = self._stacks.get(token)
        if entry is None or entry[0] not in self.viewer.layers:
            shape = self._source(image).shape
            n = len(shape)
            labels = self.viewer.add_labels(
                np.zeros(shape, dtype=np.uint16), name=f"{image.name} labels", scale=image.scale[-n:],
                translate=image.translate[-n:], metadata={META_KEY: dict((image.metadata or {}).get(META_KEY, {}))},
                opacity=0.6,
            )
            entry = (labels, ObjectStack(labels.data))
            self._stacks[token] = entry
            self.viewer.layers.selection.active = self.boxes_layer()
        return entry

    # ----------------------------------------------------------------------------------------------- rectangles
    def _rectangles(self, image: Image, shapes: Shapes) -> list[Rectangle]:
        n = self._ndim(image)
        data = [to_image_coords(v, shapes.scale, shapes.translate, image.scale, image.translate) for v in shapes.data]
        features = {c: shapes.features[c].to_numpy() for c in shapes.features.columns}
        return rectangles(data, shapes.shape_type, n, features)

    def _jobs(self, image: Image, new: list[Rectangle]) -> list[_Job]:
        if self.mode_box.currentText() == "3D" and self._ndim(image) == 3:
            depth = self._source(image).shape[0]
            jobs = []
            for group in group_3d(new):
                z = group[0].z
                span = (z - self.below_spin.value(), z + self.above_spin.value())
                jobs.append(_Job((tuple(r.key for r in group),), box3d(group, depth, span), volume=True))
            return jobs
        by_slice: dict[int | None, list[Rectangle]] = {}
        for rect in new:
            by_slice.setdefault(rect.z, []).append(rect)
        return [_Job(tuple((r.key,) for r in rects), np.array([r.box for r in rects]), z)
                for z, rects in by_slice.items()]

    # ------------------------------------------------------------------------------------------------- actions
    @property
    def busy(self) -> bool:
        """True while a worker runs or a follow-up run is queued."""
        return self._worker is not None or self._again

    def segment(self) -> None:
        """Segment every rectangle that has no object yet (pending objects of moved/deleted rectangles are redone)."""
        if self._worker is not None:
            self._again = True
            return
        self._again = False
        try:
            image = self._require_image()
            shapes = self.boxes_layer()
            labels, stack = self._labels_for(image)
        except MedsamEdgeError as exc:
            self._report(exc)
            return
        rects = self._rectangles(image, shapes)
        if stack.drop_missing({r.key for r in rects}):
            labels.refresh()
        done = stack.done_keys()
        jobs = self._jobs(image, [r for r in rects if r.key not in done])
        if not jobs:
            self.status.setText(self._summary(stack))
            return
        source = self._source(image)
        precision, strategy = self.precision_box.currentText(), self.strategy_box.currentText()
        self.status.setText(f"segmenting {sum(len(j.keys) for j in jobs)} object(s) ...")
        worker = create_worker(self._run, source, jobs, precision, strategy, _start_thread=False)
        worker.returned.connect(lambda painted: self._paint(image, painted))
        worker.errored.connect(self._report)
        worker.finished.connect(self._finished)
        self._worker = worker
        worker.start()

    def _run(self, source: ImageSource, jobs: list[_Job], precision: str, strategy: str) -> list[_Painted]:
        """Worker thread: model calls only, no layer access."""
        out: list[_Painted] = []
        for job in jobs:
            if job.volume:
                z0, mask = self.session.segment_3d(source, job.boxes, precision, strategy)
                out.append(_Painted(job.keys[0], mask, (z0,)))
                continue
            result = self.session.segment_2d(source, job.z, job.boxes, precision)
            offset = () if job.z is None else (job.z,)
            out.extend(_Painted(keys, mask, offset) for keys, mask in zip(job.keys, result.masks))
        return out

    def _paint(self, image: Image, painted: list[_Painted]) -> None:
        labels, stack = self._labels_for(image)
        present = {r.key for r in self._rectangles(image, self.boxes_layer())}
        done = stack.done_keys()
        for item in painted:
            if set(item.keys) <= present and not set(item.keys) & done:  # a rectangle may have moved meanwhile
                stack.paint(item.mask, item.keys, item.offset)
        labels.refresh()
        self.status.setText(f"{self._summary(stack)}; last request: {self.session.timing.text()}")

    def _finished(self) -> None:
        self._worker = None
        if self._again:
            self.segment()

    def _report(self, exc: BaseException) -> None:
        self.status.setText(f"error: {exc}")
        show_error(str(exc))

    @staticmethod
    def _summary(stack: ObjectStack) -> str:
        pending = len(stack.pending())
        return f"{len(stack.objects)} object(s), {pending} pending"

    def accept(self) -> None:
        """Commit the pending objects: later edits of their rectangles no longer change them."""
        stack = self.stack()
        if stack is not None:
            accepted = stack.accept()
            self.status.setText(f"accepted {len(accepted)}; {self._summary(stack)}")

    def undo(self) -> None:
        """Remove the newest object and its rectangle(s)."""
        stack, labels, image = self.stack(), self.labels_layer(), self.image_layer()
        if stack is None or labels is None or image is None:
            return
        obj = stack.undo()
        if obj is None:
            return
        labels.refresh()
        shapes = self.shapes_layer()
        if shapes is not None:
            keys = set(obj.keys)
            drop = {i for i, v in enumerate(shapes.data) if self._key_of(v, shapes, image) in keys}
            if drop:
                shapes.selected_data = drop
                shapes.remove_selected()
        self.status.setText(f"undid object {obj.label}; {self._summary(stack)}")

    @staticmethod
    def _key_of(vertices: np.ndarray, shapes: Shapes, image: Image) -> bytes:
        return rectangle_key(to_image_coords(vertices, shapes.scale, shapes.translate, image.scale, image.translate))

    # ------------------------------------------------------------------------------------------------ auto mode
    def _shapes_edited(self, event: Any = None) -> None:
        action = getattr(event, "action", None)
        if action is not None and str(getattr(action, "value", action)).endswith("ing"):
            return  # "adding" / "changing" / "removing": wait for the finished edit
        if self.auto_check.isChecked() and self.mode_box.currentText() == "2D":
            self._debounce.start()

    def _auto_segment(self) -> None:
        if self.image_layer() is not None:
            self.segment()
