"""Inputs for the job's tests: a folder of real photos, awkward files and broken files, with a
manifest; and one curated release made by the dedup jobs and the main job, which several test modules read."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pytest
import skimage.data
from PIL import Image

from benchmarks.deid_quality import coco_faces
from curation.semdedup import MEASURED_THRESHOLDS
from sam_core.checkpoints import bundled_checkpoint, file_sha256
from sam_core.pooled_embedding import POOLING
from tests.conftest import COCO_PEOPLE, REAL
from tests.image_zoo import BAD_FILES_AND_REASONS, awkward_files, bad_files, photo_files, write_files
from tests.pipelines.earlier_release import earlier_release

REPO = Path(__file__).resolve().parents[2]

FAST_GENERATOR = {"points_per_side": 8, "crop_n_layers": 1}
"""sa1b preset with an 8x8 grid and one layer of crops (5 crops, a 4x4 grid in each zoomed one): the
whole path at a fraction of the cost of the preset's 21 crops."""
UNCROPPED_GENERATOR = {"points_per_side": 8, "crop_n_layers": 0}
"""An 8x8 grid on the whole image only: one encoder pass per image, about 0.9 s per photo against
FAST_GENERATOR's 2.5 s on this CPU (2026-12-06). For the tests about the job's plumbing (faults,
resumes, storage), not its masks."""


def generator_flags(settings: dict[str, int]) -> list[str]:
    """Mask generator settings as the job's flags."""
    return [f"--{name.replace('_', '-')}={value}" for name, value in settings.items()]


FAST_FLAGS = generator_flags(FAST_GENERATOR)
UNCROPPED_FLAGS = generator_flags(UNCROPPED_GENERATOR)


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


def run_script(script: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python pipelines/<script> <args>` on an embedded Ray, `env` added to the environment, run to its end."""
    unset = ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    environment = {k: v for k, v in os.environ.items() if k not in unset} | (env or {})
    command = [sys.executable, str(REPO / "pipelines" / script), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=environment, check=False)


def run_pipeline(script: str, *args: str, env: dict[str, str] | None = None) -> str:
    """`run_script`'s stderr (the log), asserting success."""
    done = run_script(script, *args, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stderr


def jpeg_bytes(image: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


SEMANTIC_THRESHOLD = MEASURED_THRESHOLDS[file_sha256(bundled_checkpoint("sae_tiny")), POOLING]
"""The cosine at which the curated run's semantic table pairs images: the one measured for the shipped
`sae_tiny`, which `sa-engine semdedup` takes when no --threshold is given. Among the curated inputs the
astronaut lies at 0.9993 from its smaller copy and at 0.9990 from its mirror image, the closest distinct
photos (../shared's dog and the COCO people) at 0.9727 (measured 2026-12-06)."""


@pytest.fixture(scope="session")
def curated(shared_image_paths, tmp_path_factory) -> dict:
    """The inputs, the keep/drop tables and the release of one curated run: two photos, the
    astronaut, a near-duplicate of it and its mirror image (which the hash misses), a
    COCO photo of three people, an empty file (a failure), quality filters, blurring on. The tables:
    the hash's, and the semantic one of an earlier release of the same inputs (`earlier_release`:
    real embeddings), made by `pipelines/semdedup.py`."""
    root = tmp_path_factory.mktemp("curated")
    astronaut = skimage.data.astronaut()
    smaller = cv2.resize(astronaut, (300, 300), interpolation=cv2.INTER_AREA)
    people = next(truth for truth in coco_faces(REAL / "coco_train50") if truth.path == COCO_PEOPLE)
    files = {
        **dict(list(photo_files(shared_image_paths).items())[:2]),  # two photos of ../shared, 320 px
        "coco_people.jpg": people.path.read_bytes(),  # copied into the test's temporary folder only
        "astronaut.jpg": (original := jpeg_bytes(astronaut, 95)),
        "astronaut_copy.jpg": jpeg_bytes(smaller, 40),  # a near-duplicate: smaller and recompressed
        "astronaut_mirrored.jpg": jpeg_bytes(astronaut[:, ::-1].copy(), 90),  # 37 bits from its hash
        "empty.jpg": b"",
    }
    write_files(root / "in", files)
    table, semantic, out = root / "dedup.parquet", root / "semdedup.parquet", root / "release"
    dedup_log = run_pipeline("dedup.py", "--input", str(root / "in"), "--output", str(table))
    earlier = earlier_release(root / "earlier", str(root / "in"))
    semdedup_log = run_pipeline("semdedup.py", "--release", earlier, "--output", str(semantic))
    amg_log = run_pipeline("amg.py", "--input", str(root / "in"), "--output", str(out),
                   "--dedup-table", str(table), "--dedup-table", str(semantic), *FAST_FLAGS,
                   "--max-masks-per-image", "5", "--min-area-fraction", "0.001")  # fmt: skip
    return {"root": root, "table": table, "out": out, "dedup_log": dedup_log, "amg_log": amg_log,
            "semantic": semantic, "earlier": earlier, "semdedup_log": semdedup_log,
            "astronaut": astronaut, "input": original, "people": people}  # fmt: skip
