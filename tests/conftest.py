"""Shared pytest fixtures. The repository root, ``benchmarks/`` and ``fuzz/`` are importable through pytest's
``pythonpath`` setting (pyproject.toml), so ``import calibration.data`` and ``import bench_pipeline`` work."""

import cv2
import pytest


@pytest.fixture
def ipp_off():
    """OpenCV's own resize code instead of IPP (float32 INTER_LINEAR goes through IPP by default)."""
    before = cv2.ipp.useIPP()
    cv2.ipp.setUseIPP(False)
    try:
        yield
    finally:
        cv2.ipp.setUseIPP(before)
