"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
from pathlib import Path

from tests.ray_cluster import LOOPBACK_ONLY

os.environ.update(LOOPBACK_ONLY)  # before any test module imports ray: every Ray the tests start stays on 127.0.0.1

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
SHARED_IMAGES = REPO.parent / "shared" / "data" / "images"
REAL = REPO.parent / "shared" / "data" / "real"
"""Real photos with real annotations (research use only: read in place, never copied into the repository)."""
COCO_PEOPLE = REAL / "coco_train50" / "images" / "000000515289.jpg"
"""A COCO photo (639x640) of three people whose faces are identifiable (nose and an eye visible)."""


@pytest.fixture(scope="session")
def shared_image_paths() -> list[Path]:
    """The real photos in ../shared/data/images (a missing folder fails the test, it never skips it)."""
    paths = sorted(SHARED_IMAGES.glob("*.jpg"))
    assert paths, f"no photos found in {SHARED_IMAGES}: the suite expects ../shared beside the checkout"
    return paths


@pytest.fixture(scope="session")
def dog_photo(shared_image_paths: list[Path]) -> np.ndarray:
    """HxWx3 uint8 RGB: ../shared/data/images/dog.jpg."""
    path = next(p for p in shared_image_paths if p.name == "dog.jpg")
    return np.asarray(Image.open(path).convert("RGB"))
