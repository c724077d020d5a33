"""Typed errors of medsam_edge.

Every error the package raises on purpose derives from :class:`MedsamEdgeError`, so callers can catch one class.
Messages say what was wrong and what was expected.
"""

from __future__ import annotations


class MedsamEdgeError(Exception):
    """Base class of every error raised on purpose by medsam_edge."""


class InvalidImageError(MedsamEdgeError, ValueError):
    """The image (or volume) has a wrong shape, dtype, size or non-finite / constant values."""


class InvalidBoxError(MedsamEdgeError, ValueError):
    """Boxes have a wrong shape, non-finite values, are inverted, degenerate or fully outside the image."""


class NotReadyError(MedsamEdgeError, RuntimeError):
    """A method was called out of order, e.g. ``predict`` before ``set_image``."""


class ModelFileError(MedsamEdgeError, OSError):
    """A model file is missing, truncated or does not match its manifest checksum."""


class ModelCheckError(MedsamEdgeError, RuntimeError):
    """A compiled model failed its golden-input self-check (it would give wrong masks); see medsam_edge.selfcheck."""


class UnreadableFileError(MedsamEdgeError, OSError):
    """An input file does not exist, is a directory, is truncated, corrupt, or of an unsupported format."""


class UnwritableFileError(MedsamEdgeError, OSError):
    """An output file cannot be written (missing folder, a folder in the way, permissions, disk full, encoder error)."""


class ConfigurationError(MedsamEdgeError, ValueError):
    """An option has a value outside the documented set (precision, device, threads, ...)."""


class ExportError(MedsamEdgeError, RuntimeError):
    """Model export failed: missing torch, bad checkpoint, checksum mismatch or failed parity check."""
