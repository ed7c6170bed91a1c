"""The one error de-identification's detectors raise for their model files."""

from __future__ import annotations


class DetectorFileError(RuntimeError):
    """A detector's model file is missing, altered or unreadable; the message names the file and the
    package that ships it. Raised when a detector is built, so a job meets it before it starts."""
