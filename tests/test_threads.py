"""One Segmenter shared by threads gives the same answers as serial calls (calls are serialised by a lock)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from calibration.data import load_fixtures
from medsam_edge import Segmenter


@pytest.fixture(scope="module")
def seg():
    return Segmenter(precision="fp32", threads=2)


def _jobs():
    two_d = [s for s in load_fixtures("2d")][:5]
    vol = load_fixtures("3d")[0]
    jobs = [("2d", s.image, s.boxes) for s in two_d]
    b = vol.boxes.copy()
    jobs.append(("3d", vol.image, b[:2]))
    return jobs


def _run(seg, job):
    kind, image, boxes = job
    if kind == "2d":
        return seg(image, boxes).label_map
    return seg.segment_volume(image, boxes).label_map


def test_shared_segmenter_is_thread_safe(seg):
    jobs = _jobs()
    serial = [_run(seg, j) for j in jobs]
    work = [i % len(jobs) for i in range(4 * len(jobs))]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda i: (i, _run(seg, jobs[i])), work))
    for i, labels in results:
        assert np.array_equal(labels, serial[i]), f"job {i} differs when run from threads"


def test_set_image_predict_interleaved_from_threads(seg):
    """Two-step calls from several threads: each predict must use an explicit state, not another thread's image."""
    samples = [s for s in load_fixtures("2d")][:4]
    expected = [seg(s.image, s.boxes).label_map for s in samples]

    def two_step(k):
        state = seg.encode(samples[k].image)
        return k, seg.predict(samples[k].boxes, state=state).label_map

    with ThreadPoolExecutor(max_workers=4) as pool:
        for k, labels in pool.map(two_step, list(range(4)) * 3):
            assert np.array_equal(labels, expected[k])
