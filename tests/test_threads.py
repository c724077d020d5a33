"""One Segmenter shared by threads gives the same answers as serial calls (calls are serialised by a lock)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from calibration.data import load_fixtures
from medsam_edge import Segmenter

pytestmark = pytest.mark.model


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


def _small_jobs():
    """Six 2D images and four 2-slice volumes, tiny (the encoder cost is per call, not per pixel)."""
    rng = np.random.default_rng(8)
    jobs = []
    for k in range(6):
        h, w = 40 + 8 * k, 64 - 4 * k
        img = rng.integers(0, 60, (h, w)).astype((np.uint8, np.uint16, np.float32)[k % 3])
        img[h // 4 : h // 2, w // 4 : w // 2] += 150
        jobs.append(("2d", img, np.array([[w / 4 - 2, h / 4 - 2, w / 2 + 2, h / 2 + 2], [0, 0, w / 3, h / 3]])))
    for k in range(4):
        vol = rng.integers(0, 60, (2, 36 + 4 * k, 40)).astype(np.uint8)
        vol[:, 10:25, 12:30] += 150
        jobs.append(("3d", vol, np.array([[10, 8, 0, 32, 27, 1]], dtype=np.float64)))
    return jobs


def test_four_threads_fifty_mixed_calls_each(seg):
    """4 threads x 50 calls (2D and 3D mixed, each thread in its own order) equal the serial results."""
    jobs = _small_jobs()
    serial = [_run(seg, j) for j in jobs]

    def worker(t):
        order = np.random.default_rng(t).integers(0, len(jobs), 50)
        return [(int(i), _run(seg, jobs[int(i)])) for i in order]

    with ThreadPoolExecutor(max_workers=4) as pool:
        per_thread = list(pool.map(worker, range(4)))
    assert sum(len(r) for r in per_thread) == 200
    kinds = {jobs[i][0] for r in per_thread for i, _ in r}
    assert kinds == {"2d", "3d"}
    for results in per_thread:
        for i, labels in results:
            assert np.array_equal(labels, serial[i]), f"job {i} ({jobs[i][0]}) differs when run from threads"
