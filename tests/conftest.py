"""Shared pytest setup: make the repository root importable (``import calibration.data``); shared fixtures."""

import sys
from pathlib import Path

import cv2
import pytest

_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)


@pytest.fixture
def ipp_off():
    """OpenCV's own resize code instead of IPP (float32 INTER_LINEAR goes through IPP by default)."""
    before = cv2.ipp.useIPP()
    cv2.ipp.setUseIPP(False)
    try:
        yield
    finally:
        cv2.ipp.setUseIPP(before)
