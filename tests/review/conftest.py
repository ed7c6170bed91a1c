"""The review app's fixtures: a release of real photos, and the app served on 127.0.0.1 with the
shipped model, its corrections folder and embedding cache in the test's temporary folder."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from analysis.review.server import ReviewApp, ReviewServer
from tests.analysis.photo_release import PhotoRelease, photo_images, write_photo_release

REVIEWED = [1, 2]
"""The images under review: the first two of the release's three."""


def uncompressed_rle(mask: np.ndarray) -> dict[str, Any]:
    """An HxW bool mask as COCO's uncompressed RLE, as the page sends an edited mask: run lengths
    down the columns, alternately False and True, from a run of False (0 when the first pixel is True)."""
    pixels = mask.T.reshape(-1)
    bounds = np.concatenate([[0], np.flatnonzero(pixels[1:] != pixels[:-1]) + 1, [pixels.size]])
    return {"size": list(mask.shape), "counts": ([0] if pixels[0] else []) + np.diff(bounds).tolist()}


@dataclass(frozen=True)
class RunningReview:
    url: str
    """http://127.0.0.1:<port>/"""
    app: ReviewApp
    corrections: Path
    cache_dir: Path

    def call(self, method: str, path: str, body: Any = None, data: bytes | None = None) -> tuple[int, Any]:
        """(status, answer) of a request to `path` (after the first "/"): `body` sent as JSON, or
        `data` as it is; a JSON answer parsed, any other returned as bytes."""
        if body is not None:
            data = json.dumps(body).encode()
        request = urllib.request.Request(self.url + path.lstrip("/"), data=data, method=method)
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                status, content_type, payload = response.status, response.headers["Content-Type"], response.read()
        except urllib.error.HTTPError as error:
            status, content_type, payload = error.code, error.headers["Content-Type"], error.read()
        return status, json.loads(payload) if content_type == "application/json" else payload


@pytest.fixture(scope="session")
def review_release(tmp_path_factory: pytest.TempPathFactory) -> PhotoRelease:
    """Three real photos (../shared/data/images) with their image-segmentation regions as masks."""
    return write_photo_release(tmp_path_factory.mktemp("review_release"), photo_images(coco_ids=()), [])


@contextmanager
def running_review(release: str, corrections: Path, cache_dir: Path) -> Iterator[RunningReview]:
    """The app over REVIEWED of `release` with the shipped model, served on 127.0.0.1 (a free port)
    until the block ends."""
    app = ReviewApp.open(release, str(corrections), image_ids=REVIEWED, cache_dir=cache_dir, memory_images=2)
    with ReviewServer(app, "127.0.0.1", 0) as server:
        yield RunningReview(server.url, app, corrections, cache_dir)


@pytest.fixture
def review(review_release: PhotoRelease, tmp_path: Path) -> Iterator[RunningReview]:
    """The app with an empty corrections folder and an empty embedding cache."""
    with running_review(review_release.uri, tmp_path / "corrections", tmp_path / "embeddings") as running:
        yield running
