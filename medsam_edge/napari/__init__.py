"""napari plugin of medsam_edge (npe2 manifest ``napari.yaml``): reader, labels writer, sample data, dock widget.

Nothing here is imported by ``import medsam_edge``; this package itself imports neither napari nor Qt (the widget
module does, when napari asks for it). Install with ``pip install "medsam_edge[napari]" PySide6-Essentials``.

* :mod:`._core`: the logic (rectangles -> boxes, embedding cache, label composition, undo), Qt-free;
* :mod:`._io`: reader / writer / sample data as plain layer-data tuples;
* :mod:`._widget`: the dock widget (thin Qt layer over :mod:`._core`, encoding in a napari thread worker).
"""
