"""The job checks de-identification's model files before it plans or writes anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from curation import face_detector
from curation.detector_file_error import DetectorFileError
from curation.release_images import deidentifier
from pipelines import amg
from pipelines.amg_config import JobConfig


@pytest.fixture
def fresh_deidentifier():
    deidentifier.cache_clear()  # another test may have built one with the real model file
    yield
    deidentifier.cache_clear()


@pytest.mark.parametrize("content", [None, b"not an onnx file"], ids=["missing", "corrupt"])
def test_an_unusable_face_model_stops_the_job_before_it_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_image_paths: list[Path], fresh_deidentifier, content
) -> None:
    model = tmp_path / "centerface.onnx"
    if content is not None:
        model.write_bytes(content)
    monkeypatch.setattr(face_detector, "model_file", lambda: model)
    out = tmp_path / "release"
    config = JobConfig(input=str(shared_image_paths[0].parent), output=str(out))
    assert config.blur_faces_and_plates  # the sa1b preset blurs

    with pytest.raises(DetectorFileError, match=str(model)):
        amg.run(config)
    assert not out.exists() or not any(out.rglob("*")), "the job wrote before checking its models"
