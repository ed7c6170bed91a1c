"""Inputs for the job's tests: a folder of real photos, awkward files and broken files, with a manifest."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pytest

from tests.image_zoo import BAD_FILES_AND_REASONS, awkward_files, bad_files, photo_files, write_files

FAST_GENERATOR = {"points_per_side": 8, "crop_n_layers": 1}
"""sa1b preset with an 8x8 grid and one layer of crops (5 crops, a 4x4 grid in each zoomed one): the
whole path at a fraction of the cost of the preset's 21 crops."""
FAST_FLAGS = [f"--{name.replace('_', '-')}={value}" for name, value in FAST_GENERATOR.items()]
"""FAST_GENERATOR as the job's flags."""


@pytest.fixture(scope="session")
def zoo(tmp_path_factory, shared_image_paths) -> dict:
    """A folder with photos, awkward files and bad files, and a CSV manifest of them all plus a
    missing URI, with a country column. Returns paths and the names expected in each outcome."""
    root = tmp_path_factory.mktemp("zoo")
    photos = photo_files(shared_image_paths)
    awkward = awkward_files()
    bad = bad_files(next(iter(photos.values())))
    files = write_files(root / "images", {**photos, **awkward, **bad})
    uris = [str(p) for p in files] + [str(root / "images" / "missing.jpg")]
    manifest = root / "inputs.csv"
    pa_csv.write_csv(pa.table({"uri": uris, "country": ["NZ"] * len(uris)}), manifest)
    return {
        "folder": root / "images",
        "manifest": manifest,
        "released": sorted([*photos, *awkward]),
        "failed": {**BAD_FILES_AND_REASONS, "missing.jpg": "read"},
        "photos": sorted(photos),
    }


def released_names(records: list[dict]) -> list[str]:
    return sorted(Path(r["image"]["source"]).name for r in records)
